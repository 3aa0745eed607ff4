//! One stored segment of one question, and the pure operations on segments: cut from an
//! answer, merge with a delta, stitch into an answer, weigh. No storage, no I/O.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::freshness::Deadlines;
use crate::normalize::{Breach, MetricData, Point, Series, TimeRange};
use crate::query::MetricQuery;

#[derive(Debug)]
pub(super) struct Segment {
    /// Every series the appliance returned for the run, with this segment's points.
    pub(super) series: Vec<Series>,
    pub(super) breaches: Vec<Breach>,
    pub(super) deadlines: Deadlines,
    /// Buckets before this were final when the segment was fetched (the segment's start when
    /// none were, or its settled part lacked data): a delta refresh asks from here on.
    pub(super) settled_until: i64,
    /// What the segment itself occupies ([`weight`]); a store adds its own bookkeeping.
    pub(super) bytes: usize,
    /// Set on the segments a prefetch stored (shared by that prefetch's segments).
    pub(super) prefetch: Option<Arc<PrefetchMark>>,
}

impl Segment {
    /// A segment of `series` and `breaches`, weighed once here so that every store counts the
    /// same bytes.
    pub(super) fn new(
        series: Vec<Series>,
        breaches: Vec<Breach>,
        deadlines: Deadlines,
        settled_until: i64,
        prefetch: Option<Arc<PrefetchMark>>,
    ) -> Self {
        let bytes = weight(&series, &breaches);
        Self {
            series,
            breaches,
            deadlines,
            settled_until,
            bytes,
            prefetch,
        }
    }
}

/// Marks the segments one prefetch stored: whether any caller's answer has used them yet
/// (one no caller used is a wasted prefetch).
#[derive(Debug, Default)]
pub struct PrefetchMark {
    used: AtomicBool,
}

impl PrefetchMark {
    pub fn was_used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    pub(super) fn mark_used(&self) {
        self.used.store(true, Ordering::Relaxed);
    }
}

/// The part of `data` in `[start, end)`: its series and breaches.
pub(super) fn cut(data: &MetricData, start: i64, end: i64) -> (Vec<Series>, Vec<Breach>) {
    let series: Vec<Series> = data
        .series
        .iter()
        .map(|s| Series {
            appliance: None,
            metric: s.metric.clone(),
            unit: s.unit.clone(),
            device: s.device.clone(),
            points: {
                let mut points: Vec<_> = s
                    .points
                    .iter()
                    .filter(|p| (start..end).contains(&p.timestamp))
                    .cloned()
                    .collect();
                // A filtered collect grows by doubling; segments live long, so keep them tight.
                points.shrink_to_fit();
                points
            },
        })
        .collect();
    let breaches: Vec<Breach> = data
        .breaches
        .iter()
        .filter(|b| (start..end).contains(&b.time))
        .cloned()
        .collect();
    (series, breaches)
}

/// `prefix`'s settled buckets and breaches (before `from`), followed by what was fetched
/// from `from` on: a segment refreshed by its delta.
pub(super) fn merge(
    prefix: &Segment,
    fresh: Vec<Series>,
    fresh_breaches: Vec<Breach>,
    from: i64,
) -> (Vec<Series>, Vec<Breach>) {
    let mut fresh: Vec<Option<Series>> = fresh.into_iter().map(Some).collect();
    let mut series: Vec<Series> = Vec::with_capacity(prefix.series.len());
    for old in &prefix.series {
        let did = old.device.as_ref().map(|d| d.did);
        let newer = fresh.iter_mut().find(|f| {
            f.as_ref()
                .is_some_and(|f| f.metric == old.metric && f.device.as_ref().map(|d| d.did) == did)
        });
        let mut points: Vec<_> = old
            .points
            .iter()
            .filter(|p| p.timestamp < from)
            .cloned()
            .collect();
        let (unit, device) = match newer.and_then(Option::take) {
            Some(f) => {
                points.extend(f.points);
                (f.unit, f.device)
            }
            None => (old.unit.clone(), old.device.clone()),
        };
        points.shrink_to_fit();
        series.push(Series {
            appliance: None,
            metric: old.metric.clone(),
            unit,
            device,
            points,
        });
    }
    series.extend(fresh.into_iter().flatten());
    let mut breaches: Vec<Breach> = prefix
        .breaches
        .iter()
        .filter(|b| b.time < from)
        .cloned()
        .collect();
    breaches.extend(fresh_breaches);
    (series, breaches)
}

/// Where a segment's settled part ends: the settled boundary within `[start, end)` if every
/// series has data in the last settled bucket, else `start` (nothing is taken as final).
pub(super) fn settled_prefix(
    series: &[Series],
    start: i64,
    end: i64,
    settled: i64,
    interval: i64,
) -> i64 {
    let until = settled.clamp(start, end);
    if until == start {
        return start;
    }
    let last = until - interval;
    let filled = !series.is_empty()
        && series.iter().all(|s| {
            s.points
                .iter()
                .rev()
                .find(|p| p.timestamp < until)
                .is_some_and(|p| p.timestamp == last && p.value.is_some())
        });
    if filled { until } else { start }
}

/// What a segment's data occupies: the segment itself, its series and breaches with their
/// heap. A store adds its key and per-entry bookkeeping.
pub(super) fn weight(series: &[Series], breaches: &[Breach]) -> usize {
    use std::mem::size_of;
    let series_bytes: usize = series
        .iter()
        .map(|s| {
            size_of::<Series>()
                + s.metric.capacity()
                + s.unit.as_ref().map_or(0, String::capacity)
                + s.device.as_ref().map_or(0, |d| d.heap_bytes())
                + s.points.capacity() * size_of::<Point>()
        })
        .sum();
    let breach_bytes: usize = breaches
        .iter()
        .map(|b| {
            size_of::<Breach>()
                + b.model.as_ref().map_or(0, String::capacity)
                + b.id.as_ref().map_or(0, String::capacity)
        })
        .sum();
    size_of::<Segment>() + series_bytes + breach_bytes
}

/// Segments in time order → the answer to `[start, end)`: buckets from `first_bucket`
/// (the bucket holding `start`), breaches from `start`.
pub(super) fn stitch<'a>(
    query: &MetricQuery,
    start: i64,
    end: i64,
    first_bucket: i64,
    segments: impl Iterator<Item = &'a Arc<Segment>>,
) -> MetricData {
    let mut series: BTreeMap<(String, Option<u64>), Series> = BTreeMap::new();
    let mut breaches = Vec::new();
    for segment in segments {
        for s in &segment.series {
            let key = (s.metric.clone(), s.device.as_ref().map(|d| d.did));
            let out = series.entry(key).or_insert_with(|| Series {
                appliance: None,
                metric: s.metric.clone(),
                unit: s.unit.clone(),
                device: s.device.clone(),
                points: Vec::new(),
            });
            out.points.extend(
                s.points
                    .iter()
                    .filter(|p| (first_bucket..end).contains(&p.timestamp))
                    .cloned(),
            );
        }
        breaches.extend(
            segment
                .breaches
                .iter()
                .filter(|b| (start..end).contains(&b.time))
                .cloned(),
        );
    }
    MetricData {
        query: query.clone(),
        interval_seconds: query.interval_seconds(),
        timerange: TimeRange {
            start: Some(start),
            end: Some(end),
        },
        series: series.into_values().collect(),
        breaches,
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Number;

    use super::*;
    use crate::query::{AnyMetric, parse};
    use crate::settings::Settings;

    fn query() -> MetricQuery {
        let s = Settings::defaults();
        parse("metric=a", &s.query, &AnyMetric, 0).unwrap()
    }

    fn point(timestamp: i64, value: Option<i64>) -> Point {
        Point {
            timestamp,
            value: value.map(Number::from),
            in_: None,
            out: None,
        }
    }

    fn series(metric: &str, points: Vec<Point>) -> Series {
        Series {
            appliance: None,
            metric: metric.into(),
            unit: None,
            device: None,
            points,
        }
    }

    fn breach(time: i64) -> Breach {
        Breach {
            appliance: None,
            time,
            model: None,
            score: None,
            pbid: None,
            pid: None,
            did: None,
            id: None,
        }
    }

    fn times(series: &Series) -> Vec<i64> {
        series.points.iter().map(|p| p.timestamp).collect()
    }

    const NEVER: Deadlines = Deadlines {
        stored_at: 0,
        fresh_until: 0,
        stale_while_revalidate_until: 0,
        stale_if_error_until: 0,
    };

    #[test]
    fn a_cut_keeps_what_falls_in_its_half_open_range() {
        let data = MetricData {
            query: query(),
            interval_seconds: 60,
            timerange: TimeRange {
                start: None,
                end: None,
            },
            series: vec![series(
                "a",
                (0..5).map(|i| point(i * 10, Some(i))).collect(),
            )],
            breaches: vec![breach(9), breach(10), breach(30)],
            warnings: Vec::new(),
        };
        let (series, breaches) = cut(&data, 10, 30);
        assert_eq!(times(&series[0]), [10, 20]);
        assert_eq!(series[0].points.capacity(), 2, "kept tight");
        assert_eq!(breaches, [breach(10)]);
    }

    #[test]
    fn a_delta_replaces_the_unsettled_tail_and_keeps_new_series() {
        let prefix = Segment::new(
            vec![series("a", vec![point(0, Some(1)), point(10, Some(2))])],
            vec![breach(5), breach(15)],
            NEVER,
            10,
            None,
        );
        let fresh = vec![
            series("a", vec![point(10, Some(3)), point(20, Some(4))]),
            series("b", vec![point(10, Some(5))]),
        ];
        let (merged, breaches) = merge(&prefix, fresh, vec![breach(12)], 10);
        assert_eq!(times(&merged[0]), [0, 10, 20]);
        assert_eq!(merged[0].points[1].value, Some(Number::from(3)));
        assert_eq!(merged[1].metric, "b");
        assert_eq!(breaches, [breach(5), breach(12)]);
    }

    #[test]
    fn only_a_filled_last_settled_bucket_settles_a_prefix() {
        let filled = [series("a", vec![point(0, Some(1)), point(10, Some(2))])];
        assert_eq!(settled_prefix(&filled, 0, 40, 20, 10), 20);
        let gap = [series("a", vec![point(0, Some(1)), point(10, None)])];
        assert_eq!(settled_prefix(&gap, 0, 40, 20, 10), 0);
        assert_eq!(settled_prefix(&[], 0, 40, 20, 10), 0);
        assert_eq!(settled_prefix(&filled, 0, 40, -5, 10), 0);
    }

    #[test]
    fn stitching_joins_series_across_segments_within_the_range() {
        let first = Arc::new(Segment::new(
            vec![series("a", vec![point(0, Some(1)), point(10, Some(2))])],
            vec![breach(3), breach(12)],
            NEVER,
            0,
            None,
        ));
        let second = Arc::new(Segment::new(
            vec![series("a", vec![point(20, Some(3)), point(30, Some(4))])],
            vec![breach(25)],
            NEVER,
            0,
            None,
        ));
        let data = stitch(&query(), 5, 30, 0, [&first, &second].into_iter());
        assert_eq!(data.series.len(), 1);
        assert_eq!(times(&data.series[0]), [0, 10, 20]);
        assert_eq!(data.breaches, [breach(12), breach(25)]);
        assert_eq!(data.timerange.start, Some(5));
    }

    #[test]
    fn weight_counts_the_heap_a_segment_holds() {
        let empty = weight(&[], &[]);
        let one = weight(&[series("abc", vec![point(0, Some(1))])], &[breach(0)]);
        assert_eq!(empty, std::mem::size_of::<Segment>());
        assert!(one > empty + std::mem::size_of::<Series>() + std::mem::size_of::<Breach>());
    }
}
