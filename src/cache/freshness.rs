//! How long an answer stays fresh, and how long it may be served stale: the one place TTLs
//! are decided.
//!
//! - **Historic**: the range ended before `now - settle`. The appliance's data no longer
//!   changes, so the answer lives `historic_ttl`.
//! - **Live**: the range reaches into the settle window, is open ("until now") or absent. Its
//!   key carries the bucket `floor(now / step)` and it is fresh until the bucket ends, where
//!   `step = min(live_ttl, interval)`: a caller asking for 1-minute points never gets an
//!   answer older than a minute, and no caller gets one older than `live_ttl`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::query::MetricQuery;
use crate::settings::CacheSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifetime {
    Historic,
    /// `bucket` counts `step_ms` periods since the epoch.
    Live {
        bucket: i64,
        step_ms: i64,
    },
}

/// When an entry stops being fresh, and until when it may be served stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub stored_at: i64,
    pub fresh_until: i64,
    pub stale_while_revalidate_until: i64,
    pub stale_if_error_until: i64,
}

impl Deadlines {
    /// How long the store must keep the entry after storing it. Measured from `stored_at`,
    /// not the wall clock, so entries made for another clock (the benchmarks') behave alike.
    pub fn keep_for(&self) -> Duration {
        let last = self
            .stale_while_revalidate_until
            .max(self.stale_if_error_until);
        Duration::from_millis((last - self.stored_at).max(1) as u64)
    }

    pub fn is_fresh(&self, now: i64) -> bool {
        now < self.fresh_until
    }

    /// Whole seconds of freshness left (0 once stale).
    pub fn ttl_secs(&self, now: i64) -> i64 {
        (self.fresh_until - now).div_euclid(1000)
    }

    pub fn age_secs(&self, now: i64) -> i64 {
        ((now - self.stored_at) / 1000).max(0)
    }
}

/// The TTLs in force. Cheap to clone: clones share them, and [`Freshness::reload`] replaces
/// them for every clone at once (a configuration reload); answers already stored keep the
/// deadlines they were given.
#[derive(Debug, Clone)]
pub struct Freshness {
    ttls: Arc<ArcSwap<Ttls>>,
}

#[derive(Debug)]
struct Ttls {
    historic_ttl_ms: i64,
    live_ttl_ms: i64,
    settle_ms: i64,
    swr_ms: i64,
    sie_ms: i64,
}

impl Ttls {
    fn new(s: &CacheSettings) -> Self {
        let ms = |secs: u64| (secs as i64).saturating_mul(1000);
        Self {
            historic_ttl_ms: ms(s.historic_ttl_secs),
            live_ttl_ms: ms(s.live_ttl_secs).max(1),
            settle_ms: ms(s.settle_secs),
            swr_ms: ms(s.stale_while_revalidate_secs),
            sie_ms: ms(s.stale_if_error_secs),
        }
    }
}

impl Freshness {
    pub fn new(s: &CacheSettings) -> Self {
        Self {
            ttls: Arc::new(ArcSwap::from_pointee(Ttls::new(s))),
        }
    }

    /// Puts the TTLs of `s` in force for every clone.
    pub fn reload(&self, s: &CacheSettings) {
        self.ttls.store(Arc::new(Ttls::new(s)));
    }

    pub fn lifetime(&self, q: &MetricQuery, now: i64) -> Lifetime {
        let t = self.ttls.load();
        match q.endtime() {
            Some(end) if end <= now - t.settle_ms => Lifetime::Historic,
            _ => {
                let step_ms = t.live_ttl_ms.min(q.interval_ms()).max(1);
                Lifetime::Live {
                    bucket: now.div_euclid(step_ms),
                    step_ms,
                }
            }
        }
    }

    /// A segment `[start, end)` of a series: historic once it ended before `now - settle`,
    /// else live for `min(live_ttl, interval)`. Stale segments are never served.
    pub fn segment_deadlines(&self, end: i64, interval_ms: i64, now: i64) -> Deadlines {
        let t = self.ttls.load();
        let ttl = if end <= now - t.settle_ms {
            t.historic_ttl_ms
        } else {
            t.live_ttl_ms.min(interval_ms).max(1)
        };
        Deadlines {
            stored_at: now,
            fresh_until: now + ttl,
            stale_while_revalidate_until: now + ttl,
            stale_if_error_until: now + ttl,
        }
    }

    pub fn deadlines(&self, lifetime: Lifetime, now: i64) -> Deadlines {
        let t = self.ttls.load();
        let fresh_until = match lifetime {
            Lifetime::Historic => now + t.historic_ttl_ms,
            Lifetime::Live { bucket, step_ms } => (bucket + 1) * step_ms,
        };
        Deadlines {
            stored_at: now,
            fresh_until,
            stale_while_revalidate_until: fresh_until + t.swr_ms,
            stale_if_error_until: fresh_until + t.sie_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{AnyMetric, parse};
    use crate::settings::Settings;

    const NOW: i64 = 1_705_330_000_000;

    fn lifetime(raw: &str) -> Lifetime {
        let s = Settings::defaults();
        let q = parse(raw, &s.query, &AnyMetric, NOW).unwrap();
        Freshness::new(&s.cache).lifetime(&q, NOW)
    }

    #[test]
    fn old_ranges_are_historic_and_recent_ones_live() {
        assert_eq!(
            lifetime("metric=a&starttime=1705300000000&endtime=1705320000000"),
            Lifetime::Historic
        );
        let live = Lifetime::Live {
            bucket: NOW / 60_000,
            step_ms: 60_000,
        };
        assert_eq!(
            lifetime("metric=a&starttime=1705300000000&endtime=1705329900000"),
            live
        );
        assert_eq!(lifetime("metric=a&starttime=1705300000000"), live);
        assert_eq!(lifetime("metric=a"), live);
        assert_eq!(
            lifetime("metric=a&interval=1day"),
            live,
            "live_ttl caps the step"
        );
    }

    #[test]
    fn live_answers_are_fresh_until_their_bucket_ends() {
        let s = Settings::defaults();
        let f = Freshness::new(&s.cache);
        let d = f.deadlines(
            Lifetime::Live {
                bucket: 10,
                step_ms: 60_000,
            },
            610_000,
        );
        assert_eq!(d.fresh_until, 660_000);
        assert_eq!(d.ttl_secs(610_000), 50);
        assert!(!d.is_fresh(660_000));
        assert_eq!(d.stale_while_revalidate_until, 690_000);
    }

    #[test]
    fn a_reload_reaches_every_clone() {
        let mut s = Settings::defaults();
        let f = Freshness::new(&s.cache);
        let shared = f.clone();
        s.cache.historic_ttl_secs = 5;
        f.reload(&s.cache);
        assert_eq!(shared.deadlines(Lifetime::Historic, 0).fresh_until, 5_000);
    }
}
