//! Debit ids: UUIDv7 (the admission millisecond, then 74 random bits), so that the ledger's
//! indexes on debit ids grow at their right edge instead of at random places.
//!
//! The random bits come from a generator in the worker (xoshiro256**), seeded from WASI's
//! `random_get` when the worker starts and stirred with fresh entropy on every tick: a host call
//! per request cost more than the rest of the id. The ids must be unique, not secret (a caller
//! sees its own in `x-claudestore-request-id`, and only the control plane's internal API, behind
//! its token, accepts debits): 256 bits of state from the OS give that.

use uuid::Uuid;

pub struct DebitIds {
    state: [u64; 4],
}

fn words(seed: [u8; 32]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (word, chunk) in out.iter_mut().zip(seed.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *word = u64::from_le_bytes(b);
    }
    out
}

impl DebitIds {
    pub fn new(seed: [u8; 32]) -> Self {
        let mut ids = Self { state: [0; 4] };
        ids.stir(seed);
        ids
    }

    /// Mixes fresh entropy into the state (never to all zeros, the one state it cannot leave).
    pub fn stir(&mut self, entropy: [u8; 32]) {
        for (s, e) in self.state.iter_mut().zip(words(entropy)) {
            *s ^= e;
        }
        if self.state == [0; 4] {
            self.state = [
                0x9e37_79b9_7f4a_7c15,
                0xbf58_476d_1ce4_e5b9,
                0x94d0_49bb_1331_11eb,
                1,
            ];
        }
        // Let the new bits spread through the whole state before they are used.
        for _ in 0..8 {
            self.next_u64();
        }
    }

    fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = self.state;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s1 << 17;
        let s2 = s2 ^ s0;
        let s3 = s3 ^ s1;
        let s1 = s1 ^ s2;
        let s0 = s0 ^ s3;
        let s2 = s2 ^ t;
        let s3 = s3.rotate_left(45);
        self.state = [s0, s1, s2, s3];
        result
    }

    /// A new debit id for a request admitted at `unix_ms`.
    pub fn next(&mut self, unix_ms: u64) -> Uuid {
        let mut random = [0u8; 10];
        let (a, b) = (self.next_u64().to_le_bytes(), self.next_u64().to_le_bytes());
        random[..8].copy_from_slice(&a);
        random[8..].copy_from_slice(&b[..2]);
        uuid::Builder::from_unix_timestamp_millis(unix_ms, &random).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_version_7_time_ordered_and_distinct() {
        let mut ids = DebitIds::new([3; 32]);
        let mut seen = HashSet::new();
        let mut last = Uuid::nil();
        for i in 0..100_000u64 {
            let id = ids.next(1_800_000_000_000 + i / 10);
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            assert_eq!(
                secs * 1000 + u64::from(nanos) / 1_000_000,
                1_800_000_000_000 + i / 10
            );
            assert!(seen.insert(id));
            if i % 10 == 0 {
                assert!(id > last, "a later millisecond sorts later");
            }
            last = id;
        }
    }

    #[test]
    fn stirring_changes_what_follows_and_a_zero_state_recovers() {
        let (mut a, mut b) = (DebitIds::new([7; 32]), DebitIds::new([7; 32]));
        assert_eq!(a.next(1), b.next(1));
        b.stir([9; 32]);
        assert_ne!(a.next(1), b.next(1));
        let mut z = DebitIds::new([0; 32]);
        assert_ne!(z.next(1), z.next(1));
    }
}
