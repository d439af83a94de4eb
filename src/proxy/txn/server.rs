//! The non-INVITE server transaction (RFC 3261 §17.2.2): faces the sender
//! of an in-dialog BYE, INFO, UPDATE…, and answers its retransmissions
//! with the last response.

use bytes::Bytes;
use std::time::Duration;

use super::{Ctx, Fate, Timer};
use crate::proxy::Peer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Trying,
    Proceeding,
    /// The final was sent; retransmissions get it again (Timer J).
    Completed,
}

pub struct ServerNonInvite {
    state: State,
    reply_to: Peer,
    last: Option<Bytes>,
}

impl ServerNonInvite {
    pub fn new(reply_to: Peer) -> ServerNonInvite {
        ServerNonInvite {
            state: State::Trying,
            reply_to,
            last: None,
        }
    }

    pub fn reply_to(&self) -> Peer {
        self.reply_to
    }

    pub fn proceeding(&self) -> bool {
        self.state != State::Completed
    }

    pub fn on_retransmission(&self, ctx: &mut Ctx<'_>) {
        if let Some(last) = &self.last {
            ctx.send(self.reply_to, last.clone());
        }
    }

    pub fn provisional(&mut self, response: Bytes, ctx: &mut Ctx<'_>) {
        if self.state != State::Completed {
            self.state = State::Proceeding;
            ctx.send(self.reply_to, response.clone());
            self.last = Some(response);
        }
    }

    pub fn final_response(&mut self, response: Bytes, ctx: &mut Ctx<'_>) {
        if self.state == State::Completed {
            return;
        }
        self.state = State::Completed;
        ctx.send(self.reply_to, response.clone());
        self.last = Some(response);
        let wait = if self.reply_to.transport.is_reliable() {
            Duration::ZERO
        } else {
            ctx.t.t1_64()
        };
        ctx.arm(wait, Timer::J);
    }

    /// Whether `timer` does anything in the current state.
    pub fn awaits(&self, timer: Timer) -> bool {
        matches!((timer, self.state), (Timer::J, State::Completed))
    }

    pub fn on_timer(&mut self, timer: Timer, _ctx: &mut Ctx<'_>) -> Fate {
        if self.awaits(timer) {
            Fate::Terminated
        } else {
            Fate::Alive
        }
    }
}
