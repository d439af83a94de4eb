//! The INVITE server transaction (RFC 3261 §17.2.1, with the Accepted state
//! of RFC 6026): faces the sender of an INVITE, repeats the last response
//! to its retransmissions, retransmits a non-2xx final until the ACK.

use bytes::Bytes;
use std::time::Duration;

use super::{Ctx, Fate, Timer};
use crate::proxy::Peer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Proceeding,
    /// A non-2xx final was sent; waiting for its ACK (Timers G, H).
    Completed,
    /// The ACK came; absorbing its retransmissions (Timer I).
    Confirmed,
    /// A 2xx was sent; INVITE retransmissions are absorbed and further 2xx
    /// relayed (Timer L).
    Accepted,
}

/// What an ACK matched to this transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckFor {
    /// The ACK of our non-2xx final: hop by hop, absorbed here.
    NonSuccess,
    /// An ACK for a 2xx that reuses the INVITE's branch: a request of its
    /// own, routed by the core.
    Success,
    /// A retransmitted or early ACK: nothing to do.
    Nothing,
}

pub struct ServerInvite {
    state: State,
    reply_to: Peer,
    /// The last response sent, repeated to retransmitted INVITEs.
    last: Option<Bytes>,
    /// Timer G's current interval.
    interval: Duration,
}

impl ServerInvite {
    /// A transaction in Proceeding; `trying` (100) is sent at once, which
    /// stops the sender's retransmissions.
    pub fn new(reply_to: Peer, trying: Option<Bytes>, ctx: &mut Ctx<'_>) -> ServerInvite {
        if let Some(t) = &trying {
            ctx.send(reply_to, t.clone());
        }
        ServerInvite {
            state: State::Proceeding,
            reply_to,
            last: trying,
            interval: ctx.t.t1,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn reply_to(&self) -> Peer {
        self.reply_to
    }

    /// Whether a final response is still to be sent.
    pub fn proceeding(&self) -> bool {
        self.state == State::Proceeding
    }

    /// A retransmission of the INVITE: the last response again (§17.2.1).
    pub fn on_retransmission(&self, ctx: &mut Ctx<'_>) {
        if matches!(self.state, State::Proceeding | State::Completed) {
            if let Some(last) = &self.last {
                ctx.send(self.reply_to, last.clone());
            }
        }
    }

    pub fn provisional(&mut self, response: Bytes, ctx: &mut Ctx<'_>) {
        if self.state == State::Proceeding {
            ctx.send(self.reply_to, response.clone());
            self.last = Some(response);
        }
    }

    /// Sends the final response: a 2xx moves to Accepted, any other to
    /// Completed, where it is retransmitted until the ACK.
    pub fn final_response(&mut self, code: u16, response: Bytes, ctx: &mut Ctx<'_>) {
        if self.state != State::Proceeding {
            return;
        }
        ctx.send(self.reply_to, response.clone());
        if (200..300).contains(&code) {
            self.state = State::Accepted;
            self.last = None;
            ctx.arm(ctx.t.t1_64(), Timer::L);
        } else {
            self.state = State::Completed;
            self.last = Some(response);
            self.interval = ctx.t.t1;
            if !self.reply_to.transport.is_reliable() {
                ctx.arm(ctx.t.t1, Timer::G);
            }
            ctx.arm(ctx.t.t1_64(), Timer::H);
        }
    }

    /// A 2xx retransmitted by the UAS while we are Accepted: relayed, the
    /// UAS repeats it until the caller's ACK arrives (RFC 6026).
    pub fn relay_success(&self, response: Bytes, ctx: &mut Ctx<'_>) {
        if self.state == State::Accepted {
            ctx.send(self.reply_to, response);
        }
    }

    pub fn on_ack(&mut self, ctx: &mut Ctx<'_>) -> AckFor {
        match self.state {
            State::Completed => {
                self.state = State::Confirmed;
                // Nothing is repeated from here on (§17.2.1). Kept to Timer
                // I's end, 5 s of a dialer's rejects held 20 MiB at 4,000/s
                // (a 1 KiB buffer each).
                self.last = None;
                let wait = if self.reply_to.transport.is_reliable() {
                    Duration::ZERO
                } else {
                    ctx.t.t4
                };
                ctx.arm(wait, Timer::I);
                AckFor::NonSuccess
            }
            State::Accepted => AckFor::Success,
            State::Proceeding | State::Confirmed => AckFor::Nothing,
        }
    }

    /// Whether `timer` does anything in the current state (else it was
    /// cancelled by a state change).
    pub fn awaits(&self, timer: Timer) -> bool {
        matches!(
            (timer, self.state),
            (Timer::G | Timer::H, State::Completed)
                | (Timer::I, State::Confirmed)
                | (Timer::L, State::Accepted)
        )
    }

    pub fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx<'_>) -> Fate {
        if !self.awaits(timer) {
            return Fate::Alive;
        }
        if timer != Timer::G {
            return Fate::Terminated;
        }
        if let Some(last) = &self.last {
            ctx.send(self.reply_to, last.clone());
        }
        self.interval = (self.interval * 2).min(ctx.t.t2);
        ctx.arm(self.interval, Timer::G);
        Fate::Alive
    }
}
