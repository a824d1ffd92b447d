//! Jittered exponential backoff and the small random source behind its jitter.
//!
//! The random source is injected (the glue seeds it from WASI `random_get`
//! and the clock), so tests choose their seeds and the core stays pure.

use std::time::Duration;

use super::config::BackoffConfig;
use super::millis;

/// SplitMix64: tiny, fast, and good enough to spread retries apart. Not for secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..=bound`.
    pub fn up_to(&mut self, bound: u64) -> u64 {
        match bound.checked_add(1) {
            Some(span) => self.next_u64() % span,
            None => self.next_u64(),
        }
    }
}

/// The delay after `failures` consecutive failures (1 for the first): `initial` doubled per further
/// failure, capped at `max`, then drawn uniformly from its upper half so VMs and proxies that failed
/// together do not retry together.
pub fn delay(config: &BackoffConfig, failures: u32, rng: &mut Rng) -> Duration {
    let doublings = failures.saturating_sub(1).min(40);
    let initial = millis(config.initial);
    let ceiling = initial
        .saturating_mul(1u64 << doublings)
        .min(millis(config.max));
    let half = ceiling / 2;
    Duration::from_millis(half.saturating_add(rng.up_to(ceiling.saturating_sub(half))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_double_within_jitter_and_stop_at_the_cap() {
        let mut rng = Rng::new(7);
        for failures in 1..=12u32 {
            let ceiling = (1000u64 << (failures - 1)).min(60_000);
            for _ in 0..200 {
                let delay = delay(&config(), failures, &mut rng).as_millis() as u64;
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{failures}: {delay}"
                );
            }
        }
        // Huge failure counts neither overflow nor exceed the cap.
        assert!(delay(&config(), u32::MAX, &mut rng) <= Duration::from_secs(60));
    }

    #[test]
    fn jitter_spreads_values() {
        let mut rng = Rng::new(1);
        let draws: std::collections::BTreeSet<u128> = (0..50)
            .map(|_| delay(&config(), 6, &mut rng).as_millis())
            .collect();
        assert!(draws.len() > 40, "{}", draws.len());
        assert_eq!(Rng::new(3).up_to(u64::MAX), Rng::new(3).next_u64());
        assert_eq!(Rng::new(3).up_to(0), 0);
    }
}
