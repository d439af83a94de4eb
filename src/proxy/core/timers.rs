//! Fired timers: the §17 machines' own, Timer C (§16.6 step 11/§16.8),
//! the wait for a CANCELled branch, and what a failed branch means.

use super::*;

/// Whether a queued timer would still act when it fires: its transaction
/// is the same one (generation) and in a state the timer applies to. The
/// same tests [`Core::handle_timeout`] and the machines' `on_timer` make.
pub(super) fn timer_live(
    servers: &slab::Slab<ServerEntry>,
    clients: &slab::Slab<ClientEntry>,
    f: &Fired,
) -> bool {
    if f.timer.on_server() {
        return servers
            .get(f.slot)
            .is_some_and(|s| s.gen == f.gen && s.machine.awaits(f.timer));
    }
    clients.get(f.slot).is_some_and(|c| {
        c.gen == f.gen
            && match f.timer {
                Timer::C => c.timer_c_due.is_some() && c.machine.waiting(),
                Timer::CancelWait => c.machine.waiting(),
                t => c.machine.awaits(t),
            }
    })
}

impl Core {
    pub(super) fn server_timer(&mut self, now: Instant, f: Fired) {
        let s = &mut self.servers[f.slot];
        let mut ctx = ctx!(self, now, f.slot, f.gen);
        let fate = match &mut s.machine {
            ServerMachine::Invite(m) => m.on_timer(f.timer, &mut ctx),
            ServerMachine::NonInvite(m) => m.on_timer(f.timer, &mut ctx),
        };
        if fate == Fate::Terminated {
            self.remove_server(f.slot);
        }
    }

    pub(super) fn client_timer(&mut self, now: Instant, f: Fired) {
        match f.timer {
            Timer::C => return self.timer_c(now, f.slot),
            Timer::CancelWait => return self.cancel_wait(now, f.slot),
            _ => {}
        }
        let c = &mut self.clients[f.slot];
        let mut ctx = ctx!(self, now, f.slot, f.gen);
        match c.machine.on_timer(f.timer, &mut ctx) {
            Fate::Alive => {}
            Fate::TimedOut => self.client_failed(now, f.slot, Failure::Timeout),
            Fate::Terminated => self.remove_client(f.slot),
        }
    }

    /// §16.8: Timer C fired on an INVITE branch still without a final.
    pub(super) fn timer_c(&mut self, now: Instant, cidx: usize) {
        let c = &mut self.clients[cidx];
        let Some(due) = c.timer_c_due.filter(|_| c.machine.waiting()) else {
            return;
        };
        if due > now {
            // Reset by a provisional since it was armed.
            self.timers.arm(due, cidx, c.gen, Timer::C);
            return;
        }
        c.timer_c_due = None;
        if !c.provisional {
            // No provisional: as if the branch had received a 408.
            return self.client_failed(now, cidx, Failure::Timeout);
        }
        // A provisional came: CANCEL the branch, and the caller gets its
        // final now rather than when (or if) the callee side answers.
        let server = c.server;
        self.send_cancel(now, cidx);
        if let Some(sidx) = self.live_server(server) {
            if let Some(carrier) = &self.clients[cidx].carrier {
                tracing::info!(carrier = %carrier, "no final response within timer C: CANCEL and 408");
            }
            self.gave_up(
                now,
                sidx,
                Failure::Timeout,
                "the carrier gave no final response within timer C: the call was cancelled",
            );
        }
    }

    /// §9.1: 64×T1 after its CANCEL, an INVITE branch still has no final
    /// response: it is given up.
    pub(super) fn cancel_wait(&mut self, now: Instant, cidx: usize) {
        let c = &self.clients[cidx];
        if !c.machine.waiting() {
            return;
        }
        let server = c.server;
        self.remove_client(cidx);
        if let Some(sidx) = self.live_server(server) {
            let cancelled = self.servers[sidx].fwd.as_ref().is_some_and(|f| f.cancelled);
            if cancelled {
                self.local_final(now, sidx, 487, "Request Terminated");
            } else {
                self.gave_up(
                    now,
                    sidx,
                    Failure::Timeout,
                    "the carrier gave no final response to the CANCEL either",
                );
            }
        }
    }

    pub(super) fn client_failed(&mut self, now: Instant, cidx: usize, why: Failure) {
        let c = &self.clients[cidx];
        match c.role {
            Role::Ping => {
                if let Some(name) = c.carrier.clone() {
                    self.ping_result(&name, false);
                }
                return self.remove_client(cidx);
            }
            Role::Cancel => return self.remove_client(cidx),
            Role::Branch => {}
        }
        let server = c.server;
        let carrier = c.carrier.clone();
        if let Some(name) = &carrier {
            tracing::warn!(carrier = %name, reason = ?why, "carrier did not answer");
            self.observer.carrier_failed(
                name,
                match why {
                    Failure::Timeout => "timeout",
                    Failure::Unreachable => "unreachable",
                },
            );
        }
        self.remove_client(cidx);
        let Some(sidx) = self.live_server(server) else {
            return;
        };
        let s = &self.servers[sidx];
        if !s.machine.proceeding() {
            return;
        }
        let Some(fwd) = s.fwd.as_deref() else { return };
        if !fwd.cancelled && !fwd.targets.is_empty() {
            if let Some(name) = &carrier {
                self.observer.failover(name);
            }
            return self.try_next_carrier(now, sidx);
        }
        match (fwd.cancelled, why) {
            (true, _) => self.local_final(now, sidx, 487, "Request Terminated"),
            (false, Failure::Timeout) => self.gave_up(
                now,
                sidx,
                why,
                "no carrier answered in time (each was tried in turn)",
            ),
            (false, Failure::Unreachable) => self.gave_up(
                now,
                sidx,
                why,
                "no carrier could be reached (each was tried in turn)",
            ),
        }
    }

    pub(super) fn ping_result(&self, carrier: &Arc<str>, answered: bool) {
        if let Some(up) = self.settings.status.report(carrier, answered) {
            self.observer.carrier_up(carrier, up);
            if up {
                tracing::warn!(carrier = %carrier, "carrier answers OPTIONS again: back in rotation");
            } else {
                tracing::error!(carrier = %carrier, "carrier does not answer OPTIONS: out of rotation");
            }
        }
    }
}
