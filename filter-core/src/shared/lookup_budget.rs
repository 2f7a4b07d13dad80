//! The per-worker budget of key lookups: a token bucket. Anyone can mint well-formed keys (the
//! checksum is public), and each new one costs a control-plane call; the negative cache only
//! catches repeats. The bucket caps what callers with unknown keys can make this worker ask, while
//! known keys never touch it.
//!
//! Integer arithmetic in thousandths of a token, so refills at any rate and tick are exact enough
//! and never float.

const MILLI: u64 = 1_000;

#[derive(Debug, Clone)]
pub struct LookupBudget {
    /// Tokens added per second.
    rate_per_s: u64,
    /// The most tokens held (the burst), in thousandths.
    capacity_milli: u64,
    tokens_milli: u64,
    last_ms: Option<u64>,
}

impl LookupBudget {
    /// Starts full: a freshly started worker can serve a burst of new keys at once.
    pub fn new(rate_per_s: u32, burst: u32) -> Self {
        let capacity_milli = u64::from(burst).saturating_mul(MILLI);
        Self {
            rate_per_s: u64::from(rate_per_s),
            capacity_milli,
            tokens_milli: capacity_milli,
            last_ms: None,
        }
    }

    /// Takes one lookup if the budget allows it at `now_ms`.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.tokens_milli >= MILLI {
            self.tokens_milli -= MILLI;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, now_ms: u64) {
        // rate tokens/s = rate thousandths per ms. A clock going backwards adds nothing.
        let elapsed = self.last_ms.map_or(0, |last| now_ms.saturating_sub(last));
        self.tokens_milli = self
            .tokens_milli
            .saturating_add(elapsed.saturating_mul(self.rate_per_s))
            .min(self.capacity_milli);
        self.last_ms = Some(self.last_ms.map_or(now_ms, |last| last.max(now_ms)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_bucket_allows_the_burst_then_refuses() {
        let mut b = LookupBudget::new(50, 100);
        assert!((0..100).all(|_| b.try_take(1_000)));
        assert!(!b.try_take(1_000));
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let mut b = LookupBudget::new(50, 100);
        (0..100).for_each(|_| {
            b.try_take(1_000);
        });
        // 50 per second: one every 20 ms.
        assert!(!b.try_take(1_019));
        assert!(b.try_take(1_020));
        assert!(!b.try_take(1_020));
        // One second later: 50 more, not more.
        assert_eq!((0..80).filter(|_| b.try_take(2_020)).count(), 50);
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let mut b = LookupBudget::new(50, 10);
        assert!(b.try_take(0));
        assert_eq!((0..50).filter(|_| b.try_take(3_600_000)).count(), 10);
    }

    #[test]
    fn clock_going_backwards_adds_nothing() {
        let mut b = LookupBudget::new(1_000, 2);
        assert!(b.try_take(10_000) && b.try_take(10_000));
        assert!(!b.try_take(5_000));
        assert!(!b.try_take(10_000), "the earlier time did not become a refill");
        assert!(b.try_take(10_001));
    }

    #[test]
    fn slow_rate_accumulates_fractions() {
        let mut b = LookupBudget::new(1, 1);
        assert!(b.try_take(0));
        assert!(!b.try_take(999));
        assert!(b.try_take(1_000));
    }
}
