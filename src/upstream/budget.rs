//! The appliance's per-minute budget: a token bucket (GCRA) on the gateway's clock that never
//! lets more than `n` requests through in any 60 s, and that can say how long `k` more
//! requests would wait (for an honest `Retry-After`).

use std::sync::Mutex;
use std::time::Duration;

/// Readiness probes' fixed share of `upstream.per_minute`: a tenth, at least one. The callers'
/// budget is the rest, so probes never take more, whatever the callers do.
pub fn probe_share(per_minute: u32) -> u32 {
    (per_minute / 10).max(1)
}

/// The callers' part of `upstream.per_minute` (settings keep it at least 2, so this is at
/// least 1).
pub fn caller_share(per_minute: u32) -> u32 {
    per_minute.saturating_sub(probe_share(per_minute)).max(1)
}

/// At most `n` requests in any 60 s: a burst of a sixth, refilled at the rest.
pub struct MinuteBudget {
    /// Time between two refills, in µs.
    period_us: i64,
    burst: u32,
    /// Theoretical arrival time of the next request, µs on the gateway's clock.
    tat_us: Mutex<i64>,
}

impl MinuteBudget {
    pub fn per_minute(n: u32) -> Self {
        let burst = (n / 6).max(1);
        let refill = n.saturating_sub(burst).max(1);
        Self {
            period_us: 60_000_000_u64.div_ceil(u64::from(refill)) as i64,
            burst,
            tat_us: Mutex::new(i64::MIN),
        }
    }

    pub fn period(&self) -> Duration {
        Duration::from_micros(self.period_us.unsigned_abs())
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// How far ahead of the refill the bucket may run: the burst.
    fn tolerance_us(&self) -> i64 {
        i64::from(self.burst - 1) * self.period_us
    }

    /// Takes one token, or says how long until one is there.
    pub fn try_take(&self, now_ms: i64) -> Result<(), Duration> {
        let now = now_ms.saturating_mul(1000);
        let Ok(mut tat) = self.tat_us.lock() else {
            return Ok(());
        };
        let from = (*tat).max(now);
        let allowed_at = from - self.tolerance_us();
        if allowed_at <= now {
            *tat = from + self.period_us;
            Ok(())
        } else {
            Err(Duration::from_micros((allowed_at - now).unsigned_abs()))
        }
    }

    /// How long until `k` more requests could all have gone, if nobody else asks first.
    pub fn wait_for(&self, k: u32, now_ms: i64) -> Duration {
        let now = now_ms.saturating_mul(1000);
        let tat = self.tat_us.lock().map_or(now, |t| (*t).max(now));
        let last = tat + i64::from(k.saturating_sub(1)) * self.period_us - self.tolerance_us();
        Duration::from_micros((last - now).max(0).unsigned_abs())
    }
}

/// The most of `times` (epoch ms) that fall in any 60 s window starting at one of them.
#[cfg(test)]
pub(crate) fn most_in_any_minute(times: &[i64]) -> usize {
    times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| (*start..start + 60_000).contains(*t))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_n_in_any_minute() {
        for n in [2, 6, 60, 108, 120, 1000] {
            let b = MinuteBudget::per_minute(n);
            // Take greedily every 10 ms for three minutes; count the best 60 s window.
            let mut taken = Vec::new();
            for t in (0..180_000).step_by(10) {
                if b.try_take(t).is_ok() {
                    taken.push(t);
                }
            }
            let most = most_in_any_minute(&taken);
            assert!(most <= n as usize, "{n}: {most} in one minute");
            assert!(most + 2 >= n as usize, "{n}: only {most} in one minute");
        }
    }

    #[test]
    fn says_how_long_k_more_would_wait() {
        let b = MinuteBudget::per_minute(60); // burst 10, then one every 1.2 s
        assert_eq!(b.wait_for(10, 0), Duration::ZERO, "the burst is there");
        assert_eq!(b.wait_for(11, 0), Duration::from_millis(1200));
        for _ in 0..10 {
            b.try_take(0).unwrap();
        }
        assert_eq!(b.try_take(0), Err(Duration::from_millis(1200)));
        assert_eq!(b.wait_for(1, 0), Duration::from_millis(1200));
        assert_eq!(b.wait_for(5, 0), Duration::from_millis(6000));
        assert_eq!(b.wait_for(5, 6000), Duration::ZERO, "refilled meanwhile");
    }

    #[test]
    fn probes_keep_a_small_fixed_share() {
        assert_eq!((probe_share(120), caller_share(120)), (12, 108));
        assert_eq!((probe_share(6), caller_share(6)), (1, 5));
        assert_eq!((probe_share(2), caller_share(2)), (1, 1));
    }
}
