//! Every timer of the proxy, and the queue they wait in.
//!
//! Cancelling is lazy: an entry whose transaction is gone (slot
//! generation mismatch), or whose machine has moved to a state the timer
//! does not apply to, is ignored when it fires. Cancelling therefore costs
//! nothing on the hot path. Such entries are dropped when they reach the
//! front of their queue ([`Timers::prune`], run by the core before it
//! reports its next deadline), so the driver does not wake for them.
//!
//! The queue is one FIFO per interval: almost every timer is armed a fixed
//! interval (T1, 64×T1, Timer C, …) after the core's clock, which only
//! moves forward, so each FIFO is already in deadline order. Arming and
//! popping cost O(number of intervals), a handful, where a binary heap of
//! the hundreds of thousands of entries a loaded proxy holds (Timer C runs
//! three minutes) cost a cache miss per level. Entries armed at an instant
//! of their own, or out of order, go to a small heap beside them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

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

    /// Whether the timer only ends a transaction that is absorbing
    /// retransmissions (and relaying 2xx ones): it sends nothing, so
    /// firing it later than due changes nothing on the wire, and it fires
    /// on the coarse [`LAZY_GRID`]. Timer H is not one: Timer G repeats
    /// the final response until H fires.
    pub fn only_ends(self) -> bool {
        matches!(
            self,
            Timer::D | Timer::I | Timer::J | Timer::K | Timer::L | Timer::M
        )
    }
}

/// The grid the timers that only end a transaction are rounded up to.
/// Thousands of transactions end per second under load; on a fine grid
/// each tick had some due, a driver wakeup every few milliseconds.
/// Rounded up to a second, they share one wakeup a second, and a
/// transaction lives at most this much longer than RFC 3261's minimum.
pub const LAZY_GRID: Duration = Duration::from_secs(1);

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
    /// (interval, on the lazy grid, entries armed that interval after the
    /// clock, in order). Lazy and exact entries of one interval (Timers D
    /// and H are both 64×T1) have queues of their own: mixed, the exact
    /// ones would fall before the rounded ones and go to the heap.
    queues: Vec<(Duration, bool, VecDeque<Entry>)>,
    /// Entries armed at an instant of their own, or out of order.
    spill: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    /// The instant [`LAZY_GRID`] counts from: the first one armed.
    base: Option<Instant>,
}

impl Timers {
    /// Arms `timer` to fire `after` the core's clock `now`.
    pub fn arm_after(
        &mut self,
        now: Instant,
        after: Duration,
        slot: usize,
        gen: u64,
        timer: Timer,
    ) {
        let lazy = timer.only_ends();
        let mut at = now + after;
        if lazy {
            at = self.on_lazy_grid(at);
        }
        let e = self.entry(at, slot, gen, timer);
        let i = match self
            .queues
            .iter()
            .position(|(d, l, _)| *d == after && *l == lazy)
        {
            Some(i) => i,
            None => {
                self.queues.push((after, lazy, VecDeque::new()));
                self.queues.len() - 1
            }
        };
        let q = &mut self.queues[i].2;
        if q.back().is_some_and(|b| b.at > e.at) {
            // The clock went back (a caller's instants out of order).
            self.spill.push(Reverse(e));
        } else {
            q.push_back(e);
        }
    }

    /// `at` rounded up to the lazy grid. Rounding keeps the order of the
    /// instants, so each queue stays sorted.
    fn on_lazy_grid(&mut self, at: Instant) -> Instant {
        let base = *self.base.get_or_insert(at);
        let Some(since) = at.checked_duration_since(base) else {
            return at;
        };
        let grid = LAZY_GRID.as_nanos();
        let ticks = since.as_nanos().div_ceil(grid);
        let rounded = u64::try_from(ticks * grid).unwrap_or(u64::MAX);
        base.checked_add(Duration::from_nanos(rounded))
            .unwrap_or(at)
    }

    /// Drops the entries at the front of each queue that `live` says would
    /// do nothing when they fire (cancelled by a state change), so that
    /// the next deadline is one that matters. Entries behind a live one
    /// wait for it.
    pub fn prune(&mut self, mut live: impl FnMut(&Fired) -> bool) {
        for (_, _, q) in &mut self.queues {
            while q.front().is_some_and(|e| !live(&e.fired)) {
                q.pop_front();
            }
        }
        while self.spill.peek().is_some_and(|e| !live(&e.0.fired)) {
            self.spill.pop();
        }
    }

    /// Arms `timer` to fire at `at`.
    pub fn arm(&mut self, at: Instant, slot: usize, gen: u64, timer: Timer) {
        let e = self.entry(at, slot, gen, timer);
        self.spill.push(Reverse(e));
    }

    fn entry(&mut self, at: Instant, slot: usize, gen: u64, timer: Timer) -> Entry {
        self.seq += 1;
        Entry {
            at,
            seq: self.seq,
            fired: Fired { slot, gen, timer },
        }
    }

    /// The earliest entry: `None` for the spill heap, else its queue.
    fn earliest(&self) -> Option<(Option<usize>, &Entry)> {
        let mut best = self.spill.peek().map(|e| (None, &e.0));
        for (i, (_, _, q)) in self.queues.iter().enumerate() {
            if let Some(f) = q.front() {
                if best.is_none_or(|(_, b)| f < b) {
                    best = Some((Some(i), f));
                }
            }
        }
        best
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.earliest().map(|(_, e)| e.at)
    }

    pub fn pop_due(&mut self, now: Instant) -> Option<Fired> {
        let (from, e) = self.earliest()?;
        if e.at > now {
            return None;
        }
        let e = match from {
            Some(i) => self.queues[i].2.pop_front(),
            None => self.spill.pop().map(|e| e.0),
        };
        e.map(|e| e.fired)
    }

    pub fn len(&self) -> usize {
        self.spill.len() + self.queues.iter().map(|(_, _, q)| q.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Clock forward by ms, then arm after one of a few intervals.
        After(u64, usize),
        /// Clock forward by ms, then arm at an instant of its own (ms from
        /// the start, before or after the clock).
        At(u64, u64),
        /// Clock forward by ms, then pop everything due.
        Pop(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..50u64, 0..4usize).prop_map(|(d, i)| Op::After(d, i)),
            (0..50u64, 0..3000u64).prop_map(|(d, at)| Op::At(d, at)),
            (0..400u64).prop_map(Op::Pop),
        ]
    }

    proptest! {
        /// Timers fire in (deadline, arming order), exactly once, as a
        /// single sorted list of every armed entry would have them fire.
        #[test]
        fn fires_in_deadline_order_like_a_sorted_list(ops in proptest::collection::vec(op(), 1..200)) {
            const INTERVALS: [u64; 4] = [500, 1000, 32_000, 180_000];
            let start = Instant::now();
            let mut now = start;
            let mut t = Timers::default();
            let mut model: Vec<(Instant, u64, usize)> = Vec::new();
            for (seq, op) in (0u64..).zip(ops) {
                match op {
                    Op::After(d, i) => {
                        now += Duration::from_millis(d);
                        let after = Duration::from_millis(INTERVALS[i]);
                        t.arm_after(now, after, seq as usize, 0, Timer::A);
                        model.push((now + after, seq, seq as usize));
                    }
                    Op::At(d, at) => {
                        now += Duration::from_millis(d);
                        let at = start + Duration::from_millis(at);
                        t.arm(at, seq as usize, 0, Timer::C);
                        model.push((at, seq, seq as usize));
                    }
                    Op::Pop(d) => {
                        now += Duration::from_millis(d);
                        model.sort();
                        let due = model.iter().take_while(|e| e.0 <= now).count();
                        let want: Vec<usize> = model.drain(..due).map(|e| e.2).collect();
                        let mut got = Vec::new();
                        while let Some(f) = t.pop_due(now) {
                            got.push(f.slot);
                        }
                        prop_assert_eq!(got, want);
                    }
                }
                model.sort();
                prop_assert_eq!(t.len(), model.len());
                prop_assert_eq!(t.next_deadline(), model.first().map(|e| e.0));
            }
        }
    }

    /// A clock that went back does not break a queue's order: the entry
    /// fires at its own deadline, before later ones of the same interval.
    #[test]
    fn an_instant_out_of_order_still_fires_first() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let d = Duration::from_millis(500);
        t.arm_after(t0 + Duration::from_millis(10), d, 1, 0, Timer::E);
        t.arm_after(t0, d, 2, 0, Timer::E);
        assert_eq!(t.next_deadline(), Some(t0 + d));
        assert_eq!(t.pop_due(t0 + d).map(|f| f.slot), Some(2));
        assert_eq!(t.pop_due(t0 + d), None);
        assert_eq!(
            t.pop_due(t0 + d + Duration::from_millis(10))
                .map(|f| f.slot),
            Some(1)
        );
        assert!(t.is_empty());
    }

    /// Stale entries leave the queues' fronts at once; a live front keeps
    /// the stale ones behind it until it fires.
    #[test]
    fn prune_drops_stale_fronts_only() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let d = Duration::from_millis(500);
        for slot in 0..4 {
            t.arm_after(t0, d, slot, 0, Timer::G);
        }
        t.arm(t0 + Duration::from_secs(1), 9, 0, Timer::C);
        // Slots 0 and 1 were cancelled, 2 is live, 3 cancelled too.
        t.prune(|f| f.slot == 2);
        assert_eq!(t.len(), 2, "slot 2 and the stale slot 3 behind it");
        assert_eq!(t.pop_due(t0 + d).map(|f| f.slot), Some(2));
        t.prune(|f| f.slot == 2);
        assert!(t.is_empty());
    }

    /// Timers that only end a transaction fire on the lazy grid, never
    /// before they are due; the others exactly when due.
    #[test]
    fn timers_that_only_end_fire_on_the_lazy_grid() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let t4 = Duration::from_secs(5);
        t.arm_after(t0, t4, 1, 0, Timer::I);
        let later = t0 + Duration::from_millis(300);
        t.arm_after(later, t4, 2, 0, Timer::I);
        t.arm_after(later, Duration::from_millis(500), 3, 0, Timer::G);
        assert_eq!(t.next_deadline(), Some(later + Duration::from_millis(500)));
        assert_eq!(
            t.pop_due(later + Duration::from_millis(500))
                .map(|f| f.slot),
            Some(3)
        );
        // The first lazy entry sets the grid; the second is rounded up to
        // the next second of it, not fired at its own 5.3 s.
        assert_eq!(t.next_deadline(), Some(t0 + t4));
        assert_eq!(t.pop_due(t0 + t4).map(|f| f.slot), Some(1));
        assert_eq!(t.next_deadline(), Some(t0 + t4 + LAZY_GRID));
        assert!(t0 + t4 + LAZY_GRID >= later + t4);
        assert_eq!(t.pop_due(later + t4), None);
        assert_eq!(t.pop_due(t0 + t4 + LAZY_GRID).map(|f| f.slot), Some(2));
    }
}
