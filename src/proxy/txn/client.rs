//! The non-INVITE client transaction (RFC 3261 §17.1.2): faces the next hop
//! of an in-dialog request, a CANCEL or an OPTIONS health check, and
//! retransmits it until a final response.

use bytes::Bytes;
use std::time::Duration;

use super::{Ctx, Fate, Timer};
use crate::proxy::Peer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Trying,
    Proceeding,
    /// The final came; absorbing its retransmissions (Timer K).
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteEvent {
    Provisional,
    Final,
    Absorbed,
}

pub struct ClientNonInvite {
    state: State,
    dest: Peer,
    sent: Option<Bytes>,
    interval: Duration,
}

impl ClientNonInvite {
    /// Sends `request` to `dest`; Timer F fires after `timeout` without a
    /// final response.
    pub fn start(
        dest: Peer,
        request: Bytes,
        timeout: Duration,
        ctx: &mut Ctx<'_>,
    ) -> ClientNonInvite {
        ctx.send(dest, request.clone());
        if !dest.transport.is_reliable() {
            ctx.arm(ctx.t.t1, Timer::E);
        }
        ctx.arm(timeout, Timer::F);
        ClientNonInvite {
            state: State::Trying,
            dest,
            sent: Some(request),
            interval: ctx.t.t1,
        }
    }

    pub fn dest(&self) -> Peer {
        self.dest
    }

    pub fn waiting(&self) -> bool {
        self.state != State::Completed
    }

    pub fn on_response(&mut self, code: u16, ctx: &mut Ctx<'_>) -> NonInviteEvent {
        match (self.state, code) {
            (State::Trying | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                NonInviteEvent::Provisional
            }
            (State::Trying | State::Proceeding, 200..) => {
                self.state = State::Completed;
                self.sent = None;
                let wait = if self.dest.transport.is_reliable() {
                    Duration::ZERO
                } else {
                    ctx.t.t4
                };
                ctx.arm(wait, Timer::K);
                NonInviteEvent::Final
            }
            _ => NonInviteEvent::Absorbed,
        }
    }

    /// Whether `timer` does anything in the current state.
    pub fn awaits(&self, timer: Timer) -> bool {
        matches!(
            (timer, self.state),
            (Timer::E | Timer::F, State::Trying | State::Proceeding) | (Timer::K, State::Completed)
        )
    }

    pub fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx<'_>) -> Fate {
        if !self.awaits(timer) {
            return Fate::Alive;
        }
        match timer {
            Timer::E => {
                if let Some(sent) = &self.sent {
                    ctx.send(self.dest, sent.clone());
                }
                // §17.1.2.2: doubling up to T2 while Trying, T2 once Proceeding.
                self.interval = if self.state == State::Proceeding {
                    ctx.t.t2
                } else {
                    (self.interval * 2).min(ctx.t.t2)
                };
                ctx.arm(self.interval, Timer::E);
                Fate::Alive
            }
            Timer::F => Fate::TimedOut,
            _ => Fate::Terminated,
        }
    }
}
