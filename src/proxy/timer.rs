//! Timer queue: a binary heap with lazy cancellation. A fired entry whose
//! transaction is gone (generation mismatch) or whose state moved on is
//! ignored by the handler, so cancelling costs nothing on the hot path.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    // client transactions (RFC 3261 §17.1, RFC 6026 Timer M)
    A,
    B,
    C,
    D,
    E,
    F,
    K,
    M,
    // server transactions (§17.2, Timer L)
    G,
    H,
    I,
    J,
    L,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    pub slot: usize,
    pub gen: u64,
    pub kind: Kind,
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
    pub fn arm(&mut self, at: Instant, slot: usize, gen: u64, kind: Kind) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            fired: Fired { slot, gen, kind },
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
}
