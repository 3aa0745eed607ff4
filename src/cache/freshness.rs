//! How long an answer stays fresh, and how long it may be served stale: the one place TTLs
//! are decided.
//!
//! - **Historic**: the range ended before `now - settle`. The appliance's data no longer
//!   changes, so the answer lives `historic_ttl`.
//! - **Live**: the range reaches into the settle window, is open ("until now") or absent. Its
//!   key carries the bucket `floor(now / step)` and it is fresh until the bucket ends, where
//!   `step = min(live_ttl, interval)`: a caller asking for 1-minute points never gets an
//!   answer older than a minute, and no caller gets one older than `live_ttl`.
//!
//! What came back counts too ([`Completeness`]): an answer or segment with a series without
//! points, or whose newest bucket is empty, may come from an appliance that is behind or
//! restarting, so it lives only as long as a live answer however old its range; an answer
//! the gateway only partly understood is not kept at all.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::normalize::{MetricData, Series};
use crate::query::MetricQuery;
use crate::settings::CacheSettings;

/// What an answer's data says about keeping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// Every series has a value in its newest bucket: kept as long as its lifetime says.
    Complete,
    /// A series has no points, or its newest bucket is empty: the appliance may not have the
    /// data yet, so it is kept only as long as a live answer.
    Late,
    /// Part of the appliance's answer was not understood: served once, never kept.
    Partial,
}

impl Completeness {
    /// Of a whole answer, from its range, series and warnings.
    pub fn of(data: &MetricData) -> Self {
        if !data.warnings.is_empty() {
            return Completeness::Partial;
        }
        match data.timerange.end {
            Some(end) => Self::of_series(&data.series, end, data.query.interval_ms()),
            // The appliance chose the window: the answer is live anyway.
            None => Completeness::Complete,
        }
    }

    /// Of the series of a range ending at `end` (exclusive), in buckets of `interval_ms`.
    pub fn of_series(series: &[Series], end: i64, interval_ms: i64) -> Self {
        let newest = (end - 1).div_euclid(interval_ms) * interval_ms;
        let filled = !series.is_empty()
            && series.iter().all(|s| {
                s.points
                    .last()
                    .is_some_and(|p| p.timestamp == newest && p.value.is_some())
            });
        if filled {
            Completeness::Complete
        } else {
            Completeness::Late
        }
    }
}

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
        let ms = |secs: u64| i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000);
        Self {
            historic_ttl_ms: ms(s.historic_ttl_secs.get()),
            live_ttl_ms: ms(s.live_ttl_secs.get()),
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

    /// The bucket boundary before which every bucket of `interval_ms` is final at `now`: its
    /// buckets ended before `now - settle`. A delta refresh of a segment starts here.
    pub fn settled_before(&self, now: i64, interval_ms: i64) -> i64 {
        let t = self.ttls.load();
        let interval_ms = interval_ms.max(1);
        (now - t.settle_ms).div_euclid(interval_ms) * interval_ms
    }

    /// A segment `[start, end)` of a series: historic once it ended before `now - settle` and
    /// is complete, else live until the end of the current `min(live_ttl, interval)` bucket,
    /// like a live answer. Live segments fetched in one bucket expire together, so a
    /// dashboard's refreshes refetch them once per bucket, in one request, instead of drifting
    /// out of phase (the newest segment expiring at one refresh, the older live ones at the
    /// out of phase (the newest segment expiring at one refresh, the older live ones at the
    /// next). Stale segments are never served; a live one is kept past its freshness for the
    /// settle window (plus a bucket), as the base a delta refresh extends: its settled buckets
    /// are never fetched again.
    pub fn segment_deadlines(
        &self,
        end: i64,
        interval_ms: i64,
        completeness: Completeness,
        now: i64,
    ) -> Deadlines {
        let t = self.ttls.load();
        let historic = end <= now - t.settle_ms && completeness == Completeness::Complete;
        let (fresh_until, kept_until) = if historic {
            let until = now + t.historic_ttl_ms;
            (until, until)
        } else {
            let step = t.live_ttl_ms.min(interval_ms).max(1);
            let until = (now.div_euclid(step) + 1) * step;
            (until, until + t.settle_ms + interval_ms.max(1))
        };
        Deadlines {
            stored_at: now,
            fresh_until,
            stale_while_revalidate_until: kept_until,
            stale_if_error_until: kept_until,
        }
    }

    /// A segment fetched ahead of its callers by the prefetcher: like
    /// [`Freshness::segment_deadlines`], except that a live segment is fresh for one live
    /// period from `now` (not until the end of the current period), and never past the next
    /// interval boundary, where a bucket it lacks begins. So a tail prefetched shortly before
    /// a dashboard's refresh is still fresh at the refresh, and no answer is older than
    /// `live_ttl` or misses a bucket.
    pub fn prefetched_segment_deadlines(
        &self,
        end: i64,
        interval_ms: i64,
        completeness: Completeness,
        now: i64,
    ) -> Deadlines {
        let aligned = self.segment_deadlines(end, interval_ms, completeness, now);
        if aligned.fresh_until > now + self.live_period_ms(interval_ms) {
            return aligned; // historic
        }
        let interval_ms = interval_ms.max(1);
        let next_bucket = (now.div_euclid(interval_ms) + 1) * interval_ms;
        let fresh_until = (now + self.live_period_ms(interval_ms)).min(next_bucket);
        Deadlines {
            fresh_until,
            stale_while_revalidate_until: aligned.stale_while_revalidate_until.max(fresh_until),
            stale_if_error_until: aligned.stale_if_error_until.max(fresh_until),
            ..aligned
        }
    }

    /// How long a live answer or segment of `interval_ms` stays fresh at most:
    /// `min(live_ttl, interval)`.
    pub fn live_period_ms(&self, interval_ms: i64) -> i64 {
        self.ttls.load().live_ttl_ms.min(interval_ms).max(1)
    }

    /// When an answer of `lifetime` and `completeness`, made at `now`, stops being fresh and
    /// may no longer be served stale. A partial answer is stale at once (it is never kept).
    pub fn deadlines(&self, lifetime: Lifetime, completeness: Completeness, now: i64) -> Deadlines {
        let t = self.ttls.load();
        let fresh_until = match (lifetime, completeness) {
            (_, Completeness::Partial) => {
                return Deadlines {
                    stored_at: now,
                    fresh_until: now,
                    stale_while_revalidate_until: now,
                    stale_if_error_until: now,
                };
            }
            (Lifetime::Historic, Completeness::Complete) => now + t.historic_ttl_ms,
            (Lifetime::Historic, Completeness::Late) => now + t.live_ttl_ms,
            (Lifetime::Live { bucket, step_ms }, _) => (bucket + 1) * step_ms,
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
    fn live_segments_expire_together_at_their_buckets_end() {
        let f = Freshness::new(&Settings::defaults().cache);
        let end = NOW + 60_000;
        let c = Completeness::Complete;
        let early = f.segment_deadlines(end, 60_000, c, 1_705_329_960_000);
        let late = f.segment_deadlines(end - 360_000, 60_000, c, 1_705_329_999_000);
        assert_eq!(early.fresh_until, 1_705_330_020_000);
        assert_eq!(late.fresh_until, early.fresh_until, "in phase");
        let historic = f.segment_deadlines(NOW - 3_600_000, 60_000, c, NOW);
        assert_eq!(historic.fresh_until, NOW + 86_400_000);
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
            Completeness::Complete,
            610_000,
        );
        assert_eq!(d.fresh_until, 660_000);
        assert_eq!(d.ttl_secs(610_000), 50);
        assert!(!d.is_fresh(660_000));
        assert_eq!(d.stale_while_revalidate_until, 690_000);
    }

    #[test]
    fn late_or_partial_answers_are_not_pinned() {
        let s = Settings::defaults();
        let f = Freshness::new(&s.cache);
        let historic = |c| f.deadlines(Lifetime::Historic, c, NOW);
        assert_eq!(
            historic(Completeness::Complete).ttl_secs(NOW),
            s.cache.historic_ttl_secs.get() as i64
        );
        assert_eq!(
            historic(Completeness::Late).ttl_secs(NOW),
            s.cache.live_ttl_secs.get() as i64
        );
        assert_eq!(historic(Completeness::Partial).ttl_secs(NOW), 0);
        let old_end = NOW - 3_600_000;
        let segment = |c| f.segment_deadlines(old_end, 60_000, c, NOW).ttl_secs(NOW);
        assert_eq!(
            segment(Completeness::Complete),
            s.cache.historic_ttl_secs.get() as i64
        );
        // Live, like a late one: until the end of the current minute (NOW is 40 s into it).
        assert_eq!(segment(Completeness::Late), 20);
    }

    #[test]
    fn an_answer_is_late_when_a_series_lacks_its_newest_bucket() {
        use crate::normalize::Point;
        let point = |t: i64, v: Option<i64>| Point {
            timestamp: t,
            value: v.map(Into::into),
            in_: None,
            out: None,
        };
        let series = |points| Series {
            appliance: None,
            metric: "a".into(),
            unit: None,
            device: None,
            points,
        };
        let end = 600_000;
        let full = series(vec![point(480_000, Some(1)), point(540_000, Some(2))]);
        let behind = series(vec![point(480_000, Some(1))]);
        let null = series(vec![point(540_000, None)]);
        let empty = series(vec![]);
        let of = |s: Vec<Series>| Completeness::of_series(&s, end, 60_000);
        assert_eq!(of(vec![full.clone()]), Completeness::Complete);
        assert_eq!(of(vec![full.clone(), behind]), Completeness::Late);
        assert_eq!(of(vec![null]), Completeness::Late);
        assert_eq!(of(vec![full, empty]), Completeness::Late);
        assert_eq!(of(vec![]), Completeness::Late);
    }
}
