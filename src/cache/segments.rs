//! The segment cache: a ranged query is answered from fixed, epoch-aligned segments of its
//! series, and only the missing segments are fetched, so a rolling window ("the last 24 h,
//! every minute") costs the appliance only what is new.
//!
//! Segment `i` of a query covers `[i·L, (i+1)·L)` with `L = points × interval`. The answer to
//! `[start, end)` is every bucket `t` with `floor(start, interval) ≤ t < end` (buckets are
//! floored to the interval, as appliances do) and every breach with `start ≤ time < end`:
//! exactly what the appliance returns for that range directly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use moka::Expiry;
use moka::future::Cache;
use serde::Serialize;
use utoipa::ToSchema;

use super::coalesce::{Coalescer, Joined};
use super::freshness::{Deadlines, Freshness};
use crate::normalize::{Breach, MetricData, Series, TimeRange};
use crate::query::MetricQuery;
use crate::settings::{CacheSettings, SegmentSettings};
use crate::source::MetricSource;
use crate::upstream::UpstreamError;

/// One segment of one question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SegmentKey {
    identity: Arc<str>,
    /// The query without its times.
    query: Arc<MetricQuery>,
    start: i64,
}

/// A run of adjacent missing segments, fetched with one upstream request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RunKey {
    query: Arc<MetricQuery>,
    start: i64,
    end: i64,
}

#[derive(Debug)]
struct Segment {
    /// Every series the appliance returned for the run, with this segment's points.
    series: Vec<Series>,
    breaches: Vec<Breach>,
    deadlines: Deadlines,
    bytes: usize,
}

/// What the segment cache holds, for `GET /internal/cache` and `/metrics`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct SegmentReport {
    pub entries: u64,
    /// Estimated bytes, as the cache's budget counts them.
    pub bytes: u64,
    pub max_bytes: u64,
    /// Segments found, and segments fetched.
    pub hits: u64,
    pub misses: u64,
}

/// Whether stored segments may answer (a caller's `no-cache` says no).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    Cached,
    Refetch,
}

/// The segments one upstream request produced, by start.
type FetchedRun = Arc<Vec<(i64, Arc<Segment>)>>;

struct KeepSegment;

impl Expiry<SegmentKey, Arc<Segment>> for KeepSegment {
    fn expire_after_create(
        &self,
        _key: &SegmentKey,
        segment: &Arc<Segment>,
        _created_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(segment.deadlines.keep_for())
    }
}

/// What the segment cache did, for benchmarks and `/internal/cache`.
#[derive(Debug, Default)]
pub struct SegmentCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Upstream fetches (runs), and the points they returned.
    pub runs: AtomicU64,
    pub upstream_points: AtomicU64,
}

pub struct SegmentCache {
    store: Cache<SegmentKey, Arc<Segment>, super::Hasher>,
    runs: Coalescer<RunKey, FetchedRun>,
    freshness: Freshness,
    identity: Arc<str>,
    points: i64,
    concurrency: usize,
    max_bytes: u64,
    pub counters: Arc<SegmentCounters>,
}

impl SegmentCache {
    pub fn new(settings: &SegmentSettings, cache: &CacheSettings, identity: &str) -> Self {
        Self {
            store: Cache::builder()
                .max_capacity(settings.max_bytes)
                .weigher(|_key: &SegmentKey, s: &Arc<Segment>| {
                    u32::try_from(s.bytes).unwrap_or(u32::MAX)
                })
                .expire_after(KeepSegment)
                .build_with_hasher(super::Hasher::default()),
            runs: Coalescer::default(),
            freshness: Freshness::new(cache),
            identity: Arc::from(identity),
            points: settings.points.max(1) as i64,
            concurrency: settings.max_concurrent_fetches.max(1),
            max_bytes: settings.max_bytes,
            counters: Arc::default(),
        }
    }

    /// Drops every segment, or those of questions naming `metric` and/or `did`.
    pub async fn purge(&self, metric: Option<&str>, did: Option<u64>) -> u64 {
        self.store.run_pending_tasks().await;
        let mut purged = 0;
        for (key, _) in self.store.iter() {
            let q = &key.query;
            if metric.is_none_or(|m| q.metrics.iter().any(|x| x == m))
                && did.is_none_or(|d| q.devices.contains(&d))
            {
                self.store.invalidate(&*key).await;
                purged += 1;
            }
        }
        self.store.run_pending_tasks().await;
        purged
    }

    pub async fn report(&self) -> SegmentReport {
        self.store.run_pending_tasks().await;
        SegmentReport {
            entries: self.store.entry_count(),
            bytes: self.store.weighted_size(),
            max_bytes: self.max_bytes,
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
        }
    }

    /// Answers `query` from segments, fetching the missing ones (all of them for
    /// [`Reuse::Refetch`]); queries without a range go straight to the appliance.
    pub async fn fetch(
        &self,
        source: &MetricSource,
        query: &MetricQuery,
        now: i64,
        reuse: Reuse,
        traceparent: Option<String>,
    ) -> Result<MetricData, UpstreamError> {
        let Some(start) = query.starttime else {
            return source.fetch(query, now, traceparent).await;
        };
        let end = query.endtime.unwrap_or(now);
        let interval = (query.interval_seconds as i64).saturating_mul(1000).max(1);
        let length = interval.saturating_mul(self.points);
        let first_bucket = start.div_euclid(interval) * interval;
        let first = first_bucket.div_euclid(length) * length;
        let last = (end - 1).div_euclid(length) * length;
        let base = Arc::new(MetricQuery {
            starttime: None,
            endtime: None,
            // Segments hold data, not its representation.
            format: crate::query::Format::Json,
            ..query.clone()
        });

        let mut found: Vec<(i64, Option<Arc<Segment>>)> = Vec::new();
        let mut at = first;
        while at <= last {
            let key = self.key(&base, at);
            let segment = match reuse {
                Reuse::Cached => self
                    .store
                    .get(&key)
                    .await
                    .filter(|s| s.deadlines.is_fresh(now)),
                Reuse::Refetch => None,
            };
            let counter = if segment.is_some() {
                &self.counters.hits
            } else {
                &self.counters.misses
            };
            counter.fetch_add(1, Ordering::Relaxed);
            found.push((at, segment));
            at += length;
        }

        let runs = missing_runs(&found, length);
        let fetched: Vec<FetchedRun> = futures::stream::iter(runs)
            .map(|(run_start, run_end)| {
                self.fetch_run(source, &base, run_start, run_end, length, now, &traceparent)
            })
            .buffer_unordered(self.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let mut by_start: BTreeMap<i64, Arc<Segment>> = found
            .into_iter()
            .filter_map(|(at, s)| s.map(|s| (at, s)))
            .collect();
        for run in fetched {
            for (at, segment) in run.iter() {
                by_start.insert(*at, segment.clone());
            }
        }
        Ok(stitch(query, start, end, first_bucket, by_start.values()))
    }

    fn key(&self, base: &Arc<MetricQuery>, start: i64) -> SegmentKey {
        SegmentKey {
            identity: self.identity.clone(),
            query: base.clone(),
            start,
        }
    }

    /// Fetches `[run_start, run_end)` (closed at `now` if it reaches beyond) in one request,
    /// shared with concurrent askers, and stores it as segments.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_run(
        &self,
        source: &MetricSource,
        base: &Arc<MetricQuery>,
        run_start: i64,
        run_end: i64,
        length: i64,
        now: i64,
        traceparent: &Option<String>,
    ) -> Result<FetchedRun, UpstreamError> {
        let key = RunKey {
            query: base.clone(),
            start: run_start,
            end: run_end,
        };
        let source = source.clone();
        let store = self.store.clone();
        let freshness = self.freshness.clone();
        let counters = self.counters.clone();
        let identity = self.identity.clone();
        let base = base.clone();
        let traceparent = traceparent.clone();
        let interval = (base.interval_seconds as i64).saturating_mul(1000).max(1);
        let joined = self.runs.join_or_start(key, async move {
            let upstream_end = run_end.min(now.max(run_start + 1));
            let ranged = MetricQuery {
                starttime: Some(run_start),
                endtime: Some(upstream_end),
                ..(*base).clone()
            };
            counters.runs.fetch_add(1, Ordering::Relaxed);
            let data = source.fetch(&ranged, now, traceparent).await?;
            let points: usize = data.series.iter().map(|s| s.points.len()).sum();
            counters
                .upstream_points
                .fetch_add(points as u64, Ordering::Relaxed);
            let mut segments = Vec::new();
            let mut at = run_start;
            while at < run_end {
                let segment = Arc::new(cut(&data, at, at + length, |seg_end| {
                    freshness.segment_deadlines(seg_end, interval, now)
                }));
                store
                    .insert(
                        SegmentKey {
                            identity: identity.clone(),
                            query: base.clone(),
                            start: at,
                        },
                        segment.clone(),
                    )
                    .await;
                segments.push((at, segment));
                at += length;
            }
            Ok(Arc::new(segments))
        });
        match joined {
            Joined::Started(f) | Joined::Collapsed(f) => f.await,
        }
    }
}

/// Adjacent missing segments, merged into `[start, end)` runs.
fn missing_runs(found: &[(i64, Option<Arc<Segment>>)], length: i64) -> Vec<(i64, i64)> {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for (at, segment) in found {
        if segment.is_some() {
            continue;
        }
        match runs.last_mut() {
            Some((_, end)) if *end == *at => *end += length,
            _ => runs.push((*at, *at + length)),
        }
    }
    runs
}

/// The part of `data` in `[start, end)`, as a segment.
fn cut(data: &MetricData, start: i64, end: i64, deadlines: impl Fn(i64) -> Deadlines) -> Segment {
    let series: Vec<Series> = data
        .series
        .iter()
        .map(|s| Series {
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
    let bytes = weight(&series, &breaches);
    Segment {
        series,
        breaches,
        deadlines: deadlines(end),
        bytes,
    }
}

/// What one stored segment occupies: its key (the query it shares with its run's other
/// segments is left out), its series and breaches with their heap, and the cache's own
/// per-entry bookkeeping.
fn weight(series: &[Series], breaches: &[Breach]) -> usize {
    use std::mem::size_of;
    let series_bytes: usize = series
        .iter()
        .map(|s| {
            size_of::<Series>()
                + s.metric.capacity()
                + s.unit.as_ref().map_or(0, String::capacity)
                + s.device.as_ref().map_or(0, |d| d.heap_bytes())
                + s.points.capacity() * size_of::<crate::normalize::Point>()
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
    super::ENTRY_OVERHEAD
        + size_of::<SegmentKey>()
        + size_of::<Segment>()
        + series_bytes
        + breach_bytes
}

/// Segments in time order → the answer to `[start, end)`.
fn stitch<'a>(
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
        interval_seconds: query.interval_seconds,
        timerange: TimeRange {
            start: Some(start),
            end: Some(end),
        },
        series: series.into_values().collect(),
        breaches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_missing_segments_merge_into_runs() {
        let seg = || {
            Some(Arc::new(Segment {
                series: Vec::new(),
                breaches: Vec::new(),
                deadlines: Deadlines {
                    stored_at: 0,
                    fresh_until: 0,
                    stale_while_revalidate_until: 0,
                    stale_if_error_until: 0,
                },
                bytes: 0,
            }))
        };
        let found = vec![
            (0, None),
            (10, None),
            (20, seg()),
            (30, None),
            (40, seg()),
            (50, None),
        ];
        assert_eq!(missing_runs(&found, 10), [(0, 20), (30, 40), (50, 60)]);
    }
}
