//! Responses in (§16.7): matching to a client transaction, relaying
//! provisionals, choosing and forwarding the final response, 2xx
//! retransmissions and stateless forwarding.

use super::*;

impl Core {
    pub(super) fn on_response(&mut self, now: Instant, from: Peer, msg: Message) {
        let code = msg.status().unwrap_or(0);
        self.observer.response_in(code);
        let Some(via) = msg.top_via() else {
            self.observer.malformed();
            return;
        };
        let Some(branch) = via.branch.filter(|b| b.starts_with(OUR_BRANCH)) else {
            tracing::debug!(%from, "dropping response whose top Via is not ours");
            return;
        };
        let Some((_, cseq_method)) = msg.cseq() else {
            self.observer.malformed();
            return;
        };
        let key = TxnKey::client(branch, cseq_method);
        let Some(cidx) = self.client_txn(&key) else {
            // §16.7: no transaction matches; relay statelessly by Via.
            return self.forward_stateless_response(&msg, code);
        };
        let c = &self.clients[cidx];
        if c.role == Role::Branch {
            if let Some(name) = &c.carrier {
                self.observer.carrier_response(name, code);
            }
        }
        if matches!(code, 401 | 407) {
            // A challenge gives the call's counted attempt back (the
            // gatekeeper's ticket): only from where the INVITE went, on top
            // of the branch (whose tail is keyed), as the take-back lowers a
            // legal count.
            let elsewhere = match &c.machine {
                ClientMachine::Invite(m) => {
                    routing::canonical(m.dest().addr.ip()) != routing::canonical(from.addr.ip())
                }
                ClientMachine::NonInvite(_) => false,
            };
            if let (true, Some(s)) = (elsewhere, self.live_server(c.server)) {
                if let Some(f) = self.servers[s].fwd.as_mut() {
                    f.ticket = None;
                }
            }
        }
        if matches!(c.machine, ClientMachine::Invite(_)) {
            self.invite_response(now, cidx, msg, code)
        } else {
            self.non_invite_response(now, cidx, msg, code)
        }
    }

    pub(super) fn invite_response(&mut self, now: Instant, cidx: usize, msg: Message, code: u16) {
        let timer_c = self.settings.timer_c;
        let c = &mut self.clients[cidx];
        let (gen, server) = (c.gen, c.server);
        let ClientMachine::Invite(m) = &mut c.machine else {
            return;
        };
        let mut ctx = ctx!(self, now, cidx, gen);
        match m.on_response(code, &msg, &mut ctx) {
            InviteEvent::Provisional => {
                c.provisional = true;
                if code > 100 {
                    // §16.7 step 2: a provisional other than 100 resets C.
                    let reset = now + timer_c;
                    c.timer_c_due = Some(c.ring_limit.map_or(reset, |l| reset.min(l)));
                }
                if c.cancel == CancelState::Held {
                    self.send_cancel(now, cidx);
                }
                if code > 100 {
                    self.relay_provisional(now, server, &msg);
                }
            }
            InviteEvent::Success => self.forward_final(now, server, &msg, code),
            InviteEvent::SuccessAgain => self.relay_success_again(now, server, &msg),
            InviteEvent::Failure => {
                let carrier = c.carrier.clone();
                if let Some(sidx) = self.live_server(server) {
                    let fwd = self.servers[sidx].fwd.as_deref();
                    let retry = matches!(code, 503 | 408)
                        && self.servers[sidx].machine.proceeding()
                        && fwd.is_some_and(|f| !f.cancelled && !f.targets.is_empty());
                    if retry {
                        if let Some(name) = carrier {
                            self.observer.failover(&name);
                            tracing::info!(carrier = %name, code, "carrier refused the call, trying the next one");
                        }
                        return self.try_next_carrier(now, sidx);
                    }
                }
                self.forward_final(now, server, &msg, code);
            }
            InviteEvent::Absorbed => {}
        }
    }

    pub(super) fn non_invite_response(
        &mut self,
        now: Instant,
        cidx: usize,
        msg: Message,
        code: u16,
    ) {
        let c = &mut self.clients[cidx];
        let (gen, server, role) = (c.gen, c.server, c.role);
        let ClientMachine::NonInvite(m) = &mut c.machine else {
            return;
        };
        let mut ctx = ctx!(self, now, cidx, gen);
        let event = m.on_response(code, &mut ctx);
        match (role, event) {
            (Role::Ping, NonInviteEvent::Final) => {
                if let Some(name) = c.carrier.clone() {
                    self.ping_result(&name, !matches!(code, 503 | 408));
                }
            }
            (Role::Branch, NonInviteEvent::Provisional) if code > 100 => {
                self.relay_provisional(now, server, &msg)
            }
            (Role::Branch, NonInviteEvent::Final) => self.forward_final(now, server, &msg, code),
            _ => {}
        }
    }

    pub(super) fn relay_provisional(&mut self, now: Instant, server: Option<Link>, msg: &Message) {
        let Some(sidx) = self.live_server(server) else {
            return;
        };
        let s = &mut self.servers[sidx];
        let gen = s.gen;
        let bytes = build::forward_response(msg, None, s.fwd.as_deref().map(Forwarding::upstream));
        let mut ctx = ctx!(self, now, sidx, gen);
        s.machine.provisional(bytes, &mut ctx);
    }

    /// Relays a final response to the server transaction it answers.
    pub(super) fn forward_final(
        &mut self,
        now: Instant,
        server: Option<Link>,
        msg: &Message,
        code: u16,
    ) {
        let Some(sidx) = self.live_server(server) else {
            if (200..300).contains(&code) {
                self.forward_stateless_response(msg, code);
            }
            return;
        };
        if !self.servers[sidx].machine.proceeding() {
            return;
        }
        let fwd = self.servers[sidx].fwd.take();
        if let Some(f) = &fwd {
            self.settle(f, code);
        }
        // §16.7 step 6: a 503 from downstream must not make upstream think
        // *this* proxy is overloaded.
        let (status, sent_code) = if code == 503 {
            (Some((500, "Server Internal Error")), 500)
        } else {
            (None, code)
        };
        let bytes = build::forward_response(msg, status, fwd.as_deref().map(Forwarding::upstream));
        let s = &mut self.servers[sidx];
        let gen = s.gen;
        let mut ctx = ctx!(self, now, sidx, gen);
        s.machine.final_response(sent_code, bytes, &mut ctx);
    }

    /// A 2xx retransmitted by the UAS: relayed too (RFC 6026).
    pub(super) fn relay_success_again(
        &mut self,
        now: Instant,
        server: Option<Link>,
        msg: &Message,
    ) {
        let Some(sidx) = self.live_server(server) else {
            return self.forward_stateless_response(msg, 200);
        };
        let s = &mut self.servers[sidx];
        let gen = s.gen;
        let bytes = build::forward_response(msg, None, None);
        let mut ctx = ctx!(self, now, sidx, gen);
        if let ServerMachine::Invite(m) = &s.machine {
            m.relay_success(bytes, &mut ctx);
        }
    }

    /// Only for a branch we made for this call and this next hop: anyone
    /// can write our mark and any Via below it, and relaying what they
    /// write would deliver a forged final to a dialer's call, or anything
    /// to any address from ours.
    pub(super) fn forward_stateless_response(&mut self, msg: &Message, code: u16) {
        let branch = msg.top_via().and_then(|v| v.branch).unwrap_or_default();
        let next = msg
            .values(HeaderName::Via)
            .nth(1)
            .and_then(Via::parse)
            .and_then(|v| routing::via_reply_peer(&v));
        let bound = Bound {
            call_id: msg.call_id().unwrap_or_default(),
            reply_to: next,
        };
        let ours = branch_is_ours(branch, &self.settings.route_key, bound);
        let next = match next {
            Some(next) if ours => next,
            None if ours => {
                // A late answer to a request of our own (an OPTIONS ping
                // past its timeout): nothing to relay, and nothing forged.
                tracing::debug!(code, "dropping a late answer to a request of ours");
                return;
            }
            _ => {
                self.observer.forged_response();
                tracing::debug!(
                    code,
                    branch = %String::from_utf8_lossy(branch),
                    "dropping a response that no transaction or branch of ours answers for"
                );
                return;
            }
        };
        let bytes = build::forward_response(msg, None, None);
        self.out.send(next, bytes);
    }
}
