//! The RFC 3261 §17 transaction layer: one state machine per file, each
//! with its own timers, and the typed key messages are matched by.
//!
//! The machines know nothing of proxying: they send what they are given,
//! retransmit it, absorb retransmissions and tell the proxy core (their
//! transaction user, §16) what happened. They run inside the sans-IO core:
//! the instant comes in through [`Ctx`], messages go out through
//! [`Outbox`], and wake-ups are entries in [`Timers`].

mod client;
mod client_inv;
mod key;
mod server;
mod server_inv;
mod timer;

pub use client::{ClientNonInvite, NonInviteEvent};
pub use client_inv::{ClientInvite, InviteEvent, State as ClientInviteState};
pub use key::{KeyMethod, TxnIndex, TxnKey};
pub use server::ServerNonInvite;
pub use server_inv::{AckFor, ServerInvite};
pub use timer::{Fired, Timer, Timers};

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Observer, Peer, Transmit};

/// RFC 3261's timer base values (§17.1.1.1, table 4).
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    /// RTT estimate: first retransmission interval.
    pub t1: Duration,
    /// Cap on the retransmission interval of non-INVITE requests and
    /// INVITE responses.
    pub t2: Duration,
    /// How long a message may stay in the network.
    pub t4: Duration,
}

impl Intervals {
    pub fn t1_64(&self) -> Duration {
        self.t1 * 64
    }
}

/// Messages to send, in order, counted as they are queued.
pub struct Outbox {
    queue: VecDeque<Transmit>,
    observer: Arc<dyn Observer>,
}

impl Outbox {
    pub fn new(observer: Arc<dyn Observer>) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            observer,
        }
    }

    pub fn send(&mut self, to: Peer, payload: Bytes) {
        if payload.starts_with(b"SIP/2.0 ") {
            let code = std::str::from_utf8(&payload[8..11])
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            self.observer.response_out(code);
        } else {
            let sp = memchr::memchr(b' ', &payload).unwrap_or(0);
            self.observer.message_out(&payload[..sp]);
        }
        self.queue.push_back(Transmit {
            to,
            payload,
            urgent: false,
        });
    }

    /// Marks what is queued as [`Transmit::urgent`].
    pub fn urge(&mut self) {
        for t in &mut self.queue {
            t.urgent = true;
        }
    }

    pub fn pop(&mut self) -> Option<Transmit> {
        self.queue.pop_front()
    }
}

/// What a machine acts with: the instant, the outbox, the timer queue and
/// the slot and generation its timers are armed for.
pub struct Ctx<'a> {
    pub now: Instant,
    pub out: &'a mut Outbox,
    pub timers: &'a mut Timers,
    pub t: Intervals,
    pub slot: usize,
    pub gen: u64,
}

impl Ctx<'_> {
    pub fn arm(&mut self, after: Duration, timer: Timer) {
        self.timers
            .arm_after(self.now, after, self.slot, self.gen, timer);
    }

    pub fn send(&mut self, to: Peer, payload: Bytes) {
        self.out.send(to, payload);
    }
}

/// What a timer did to its machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Still alive (a retransmission, or a stale timer).
    Alive,
    /// No response in time (Timer B, F): the transaction user must act.
    TimedOut,
    /// The transaction is over and can be removed.
    Terminated,
}
