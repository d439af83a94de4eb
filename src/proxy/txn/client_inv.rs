//! The INVITE client transaction (RFC 3261 §17.1.1, with the Accepted state
//! of RFC 6026): faces the next hop of an INVITE, retransmits it until a
//! response, ACKs a non-2xx final itself (hop by hop).

use bytes::Bytes;
use std::time::Duration;

use super::{Ctx, Fate, Timer};
use crate::proxy::build;
use crate::proxy::Peer;
use crate::sip::message::HeaderName;
use crate::sip::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Sent; nothing received (Timers A, B).
    Calling,
    /// A provisional came; waiting for a final.
    Proceeding,
    /// A non-2xx final came and was ACKed; repeating the ACK to its
    /// retransmissions (Timer D).
    Completed,
    /// A 2xx came; its retransmissions are relayed (Timer M).
    Accepted,
}

/// What a response did, for the transaction user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteEvent {
    /// A 1xx (100 included).
    Provisional,
    /// The first 2xx.
    Success,
    /// A retransmitted 2xx: to be relayed too.
    SuccessAgain,
    /// The first 3xx–6xx: already ACKed here.
    Failure,
    /// Nothing for the user (a retransmission, a late provisional).
    Absorbed,
}

pub struct ClientInvite {
    state: State,
    dest: Peer,
    /// The INVITE as sent: retransmitted, and the base of ACK and CANCEL.
    sent: Option<Box<Message>>,
    interval: Duration,
    ack: Option<Bytes>,
}

impl ClientInvite {
    /// Sends `invite` to `dest`; Timer B fires after `timeout` without any
    /// response.
    pub fn start(dest: Peer, invite: Bytes, timeout: Duration, ctx: &mut Ctx<'_>) -> ClientInvite {
        let sent = Message::parse(invite.clone()).ok().map(Box::new);
        ctx.send(dest, invite);
        if !dest.transport.is_reliable() {
            ctx.arm(ctx.t.t1, Timer::A);
        }
        ctx.arm(timeout, Timer::B);
        ClientInvite {
            state: State::Calling,
            dest,
            sent,
            interval: ctx.t.t1,
            ack: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn dest(&self) -> Peer {
        self.dest
    }

    /// Waiting for a final response.
    pub fn waiting(&self) -> bool {
        matches!(self.state, State::Calling | State::Proceeding)
    }

    /// The CANCEL of this INVITE (§9.1): same Request-URI, Call-ID, From,
    /// To, CSeq number, top Via and Route set.
    pub fn cancel(&self) -> Option<Bytes> {
        let sent = self.sent.as_ref().filter(|_| self.waiting())?;
        Some(build::ack_or_cancel(sent, "CANCEL", None))
    }

    /// The branch of the INVITE as sent (CANCEL shares it).
    pub fn branch(&self) -> Option<Vec<u8>> {
        self.sent
            .as_ref()
            .and_then(|m| m.top_via().and_then(|v| v.branch.map(<[u8]>::to_vec)))
    }

    pub fn on_response(&mut self, code: u16, response: &Message, ctx: &mut Ctx<'_>) -> InviteEvent {
        match (self.state, code) {
            (State::Calling | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                InviteEvent::Provisional
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                self.sent = None;
                ctx.arm(ctx.t.t1_64(), Timer::M);
                InviteEvent::Success
            }
            (State::Accepted, 200..=299) => InviteEvent::SuccessAgain,
            (State::Calling | State::Proceeding, 300..) => {
                // §17.1.1.3: the ACK of a non-2xx is ours to send.
                self.ack = self
                    .sent
                    .as_ref()
                    .map(|sent| build::ack_or_cancel(sent, "ACK", response.header(HeaderName::To)));
                if let Some(ack) = &self.ack {
                    ctx.send(self.dest, ack.clone());
                }
                self.state = State::Completed;
                self.sent = None;
                let wait = if self.dest.transport.is_reliable() {
                    Duration::ZERO
                } else {
                    ctx.t.t1_64().max(Duration::from_secs(32))
                };
                ctx.arm(wait, Timer::D);
                InviteEvent::Failure
            }
            (State::Completed, 300..) => {
                // A retransmitted final: our ACK again (§17.1.1.2).
                if let Some(ack) = &self.ack {
                    ctx.send(self.dest, ack.clone());
                }
                InviteEvent::Absorbed
            }
            _ => InviteEvent::Absorbed,
        }
    }

    /// Whether `timer` does anything in the current state.
    pub fn awaits(&self, timer: Timer) -> bool {
        matches!(
            (timer, self.state),
            (Timer::A | Timer::B, State::Calling)
                | (Timer::D, State::Completed)
                | (Timer::M, State::Accepted)
        )
    }

    pub fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx<'_>) -> Fate {
        if !self.awaits(timer) {
            return Fate::Alive;
        }
        match timer {
            Timer::A => {
                if let Some(sent) = &self.sent {
                    ctx.send(self.dest, sent.buf().clone());
                }
                self.interval *= 2;
                ctx.arm(self.interval, Timer::A);
                Fate::Alive
            }
            Timer::B => Fate::TimedOut,
            _ => Fate::Terminated,
        }
    }
}
