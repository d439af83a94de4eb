//! What a stranger may cost us. A source that is no tenant's dialer and no
//! carrier has nothing to gain from callguard but a `403`; under a flood it
//! must not take the CPU, memory or audit trail the tenants' calls need.
//! Each stranger address gets a token bucket (Kamailio's `pike` does the
//! same for its users): within it, its messages are handled (an INVITE is
//! answered `403` statelessly); past it, they are dropped before they are
//! parsed. The counts become one audit line per source and interval
//! instead of one per message.
//!
//! Pure: addresses and instants in, verdicts and summaries out. The table
//! is bounded: past `max_sources` addresses in one interval, the rest share
//! one bucket, so a flood from forged addresses costs a fixed amount of
//! memory and is limited as a whole.

use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What to do with a stranger's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Handle it (answer it).
    Answer,
    /// Within the bucket of its source no more: drop it unparsed.
    Drop,
}

/// How much a stranger may send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Messages a second, sustained, per source.
    pub per_second: f64,
    /// Messages at once after a quiet spell.
    pub burst: f64,
    /// Sources tracked one by one per interval; the others share a bucket.
    pub max_sources: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    answered: u64,
    dropped: u64,
}

impl Bucket {
    fn new(budget: &Budget, now: Instant) -> Bucket {
        Bucket {
            tokens: budget.burst,
            last: now,
            answered: 0,
            dropped: 0,
        }
    }

    fn take(&mut self, budget: &Budget, now: Instant) -> Admit {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * budget.per_second).min(budget.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.answered += 1;
            Admit::Answer
        } else {
            self.dropped += 1;
            Admit::Drop
        }
    }
}

/// One line of the interval's account: a source (`None`: the sources past
/// the table's bound, together) and what became of its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCount {
    pub source: Option<IpAddr>,
    pub answered: u64,
    pub dropped: u64,
}

#[derive(Debug)]
pub struct Strangers {
    budget: Budget,
    sources: FxHashMap<IpAddr, Bucket>,
    others: Bucket,
}

impl Strangers {
    pub fn new(budget: Budget, now: Instant) -> Strangers {
        Strangers {
            budget,
            sources: FxHashMap::default(),
            others: Bucket::new(&budget, now),
        }
    }

    /// A new budget for the sources to come (reload); buckets are kept.
    pub fn set_budget(&mut self, budget: Budget) {
        self.budget = budget;
    }

    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Admit {
        let budget = self.budget;
        let room = self.sources.len() < budget.max_sources;
        match self.sources.get_mut(&ip) {
            Some(b) => b.take(&budget, now),
            None if room => self
                .sources
                .entry(ip)
                .or_insert_with(|| Bucket::new(&budget, now))
                .take(&budget, now),
            None => self.others.take(&budget, now),
        }
    }

    /// Sources tracked one by one now.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// The interval's account, largest first, and a new interval begins:
    /// sources whose bucket has refilled are forgotten and the memory they
    /// held returned.
    pub fn take_account(&mut self, now: Instant) -> Vec<SourceCount> {
        let count = |source, b: &Bucket| SourceCount {
            source,
            answered: b.answered,
            dropped: b.dropped,
        };
        let mut out: Vec<SourceCount> = self
            .sources
            .iter()
            .map(|(ip, b)| count(Some(*ip), b))
            .chain(std::iter::once(count(None, &self.others)))
            .filter(|c| c.answered + c.dropped > 0)
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.answered + c.dropped));
        let budget = self.budget;
        let full_after = Duration::from_secs_f64(budget.burst / budget.per_second.max(1e-9));
        self.sources.retain(|_, b| {
            b.answered = 0;
            b.dropped = 0;
            now.saturating_duration_since(b.last) < full_after
        });
        if self.sources.capacity() > 4 * self.sources.len().max(64) {
            self.sources.shrink_to_fit();
        }
        self.others.answered = 0;
        self.others.dropped = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget {
            per_second: 10.0,
            burst: 20.0,
            max_sources: 3,
        }
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut s = Strangers::new(budget(), t0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let answered = (0..100)
            .filter(|_| s.admit(ip, t0) == Admit::Answer)
            .count();
        assert_eq!(answered, 20);
        // One second later: ten more, not twenty.
        let t1 = t0 + Duration::from_secs(1);
        let answered = (0..100)
            .filter(|_| s.admit(ip, t1) == Admit::Answer)
            .count();
        assert_eq!(answered, 10);
        // Another source is not affected.
        assert_eq!(s.admit("192.0.2.2".parse().unwrap(), t1), Admit::Answer);
        let account = s.take_account(t1);
        assert_eq!(
            account[0],
            SourceCount {
                source: Some(ip),
                answered: 30,
                dropped: 170
            }
        );
        assert_eq!(account.len(), 2);
    }

    /// Forged addresses past the bound share one bucket: the table stays
    /// at its bound and the flood as a whole gets one source's budget.
    #[test]
    fn many_sources_share_one_bucket_past_the_bound() {
        let t0 = Instant::now();
        let mut s = Strangers::new(budget(), t0);
        let answered = (0..10_000u32)
            .filter(|i| s.admit(IpAddr::from(i.to_be_bytes()), t0) == Admit::Answer)
            .count();
        assert_eq!(s.tracked(), 3);
        // One message from each of the first three, answered; then the
        // shared bucket's burst for all the others.
        assert_eq!(answered, 3 + 20);
        let account = s.take_account(t0);
        let others = account.iter().find(|c| c.source.is_none()).unwrap();
        assert_eq!((others.answered, others.dropped), (20, 10_000 - 3 - 20));
    }

    /// Quiet sources are forgotten at the end of an interval; a source
    /// still paying off its burst is kept (forgetting it would refill it).
    #[test]
    fn the_table_empties_when_the_flood_stops() {
        let t0 = Instant::now();
        let mut s = Strangers::new(budget(), t0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..50 {
            s.admit(a, t0);
        }
        s.take_account(t0 + Duration::from_secs(1));
        assert_eq!(s.tracked(), 1);
        assert!(s.take_account(t0 + Duration::from_secs(3)).is_empty());
        assert_eq!(s.tracked(), 0);
    }
}
