//! Every timer of the proxy, and the queue they wait in.
//!
//! The queue is a binary heap with lazy cancellation: an entry whose
//! transaction is gone (slot generation mismatch), or whose machine has
//! moved to a state the timer does not apply to, is ignored when it fires.
//! Cancelling therefore costs nothing on the hot path.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// The timers of RFC 3261 §17 (and RFC 6026), named as there, plus the two
/// the proxy core runs on its client branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// INVITE client, Calling: retransmit the INVITE (UDP), doubling from T1.
    A,
    /// INVITE client, Calling: no response at all; the branch has failed.
    /// Shortened to `carrier_timeout` for carriers (dialers give up far
    /// sooner than 64×T1).
    B,
    /// INVITE client, Completed: wait for final retransmissions, then end.
    D,
    /// Non-INVITE client: retransmit the request (UDP).
    E,
    /// Non-INVITE client, Trying/Proceeding: no final; the request failed.
    F,
    /// Non-INVITE client, Completed: wait for retransmissions, then end.
    K,
    /// INVITE client, Accepted (RFC 6026): relay 2xx retransmissions, then end.
    M,
    /// INVITE server, Completed: retransmit the final response (UDP).
    G,
    /// INVITE server, Completed: the ACK never came; end.
    H,
    /// INVITE server, Confirmed: absorb ACK retransmissions, then end.
    I,
    /// Non-INVITE server, Completed: answer retransmissions, then end.
    J,
    /// INVITE server, Accepted (RFC 6026): absorb INVITE retransmissions.
    L,
    /// Proxy (§16.6 step 11, §16.8): an INVITE branch gets no final response
    /// within `timer_c` of being forwarded or of its last provisional.
    C,
    /// Proxy (§9.1): 64×T1 after a CANCEL, the INVITE branch still has no
    /// final response; it is given up.
    CancelWait,
}

impl Timer {
    /// Whether the timer belongs to a server transaction (else a client).
    pub fn on_server(self) -> bool {
        matches!(self, Timer::G | Timer::H | Timer::I | Timer::J | Timer::L)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    pub slot: usize,
    pub gen: u64,
    pub timer: Timer,
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    at: Instant,
    seq: u64,
    fired: Fired,
}

impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

impl Timers {
    pub fn arm(&mut self, at: Instant, slot: usize, gen: u64, timer: Timer) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            fired: Fired { slot, gen, timer },
        }));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.0.at)
    }

    pub fn pop_due(&mut self, now: Instant) -> Option<Fired> {
        if self.heap.peek()?.0.at <= now {
            self.heap.pop().map(|e| e.0.fired)
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}
