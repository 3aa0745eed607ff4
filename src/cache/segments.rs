//! The segment cache: a ranged query is answered from fixed, epoch-aligned segments of its
//! series, and only the missing segments are fetched, so a rolling window ("the last 24 h,
//! every minute") costs the appliance only what is new.
//!
//! Segment `i` of a query covers `[i·L, (i+1)·L)` with `L = points × interval`. The answer to
//! `[start, end)` is every bucket `t` with `floor(start, interval) ≤ t < end` (the gateway's
//! contract: epoch-aligned buckets, whatever the appliance's own rule) and every breach with
//! `start ≤ time < end`: exactly what the direct path answers for that range. Runs are asked
//! with bucket-aligned ends, like every request. The caller hands in how to fetch a range;
//! this module only decides which ranges, and stores what comes back (never an answer that
//! was only partly understood).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;

use super::freshness::{Completeness, Deadlines, Freshness};
use super::memory::{MemoryKey, MemoryStore, MemoryValue};
use super::shared_segments::{RunTurn, SharedSegments};
use super::store::Store;
use crate::clock::Clock;
use crate::coalesce::{Coalescer, TaskFailed};
use crate::normalize::{Breach, Device, MetricData, Series, TimeRange};
use crate::query::{MetricQuery, PurgeFilter};
use crate::redis::SharedState;
use crate::settings::{CacheSettings, SegmentSettings};

/// One segment of one question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SegmentKey {
    identity: Arc<str>,
    /// The query without its times.
    query: Arc<MetricQuery>,
    start: i64,
}

impl MemoryKey for SegmentKey {
    /// The query is shared with the run's other segments; the segment's weight counts the rest.
    fn bytes(&self) -> usize {
        0
    }

    fn matches(&self, filter: &PurgeFilter) -> bool {
        filter.matches(&self.query)
    }
}

/// A run of adjacent missing segments, fetched with one upstream request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RunKey {
    query: Arc<MetricQuery>,
    start: i64,
    end: i64,
}

#[derive(Debug)]
pub(super) struct Segment {
    /// Every series the appliance returned for the run, with this segment's points.
    pub(super) series: Vec<Series>,
    pub(super) breaches: Vec<Breach>,
    pub(super) deadlines: Deadlines,
    pub(super) bytes: usize,
}

impl MemoryValue for Arc<Segment> {
    fn bytes(&self) -> usize {
        self.bytes
    }

    fn keep_for(&self) -> std::time::Duration {
        self.deadlines.keep_for()
    }
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
    /// Of the segments found, those another replica had fetched (from Redis).
    pub shared_hits: u64,
}

/// Whether stored segments may answer (a caller's `no-cache` says no).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    Cached,
    Refetch,
}

/// The segments one upstream request produced, by start, and what the answer left out.
struct Run {
    segments: Vec<(i64, Arc<Segment>)>,
    /// The fetched answer's warnings; a run with any is never stored.
    warnings: Vec<String>,
}

type FetchedRun = Arc<Run>;

/// What the segment cache did, for benchmarks and `/internal/cache`.
#[derive(Debug, Default)]
pub struct SegmentCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Segments found in Redis after a local miss (counted in `hits` too).
    pub shared_hits: AtomicU64,
    /// Upstream fetches (runs), and the points they returned.
    pub runs: AtomicU64,
    pub upstream_points: AtomicU64,
}

pub struct SegmentCache<E> {
    store: Arc<MemoryStore<SegmentKey, Arc<Segment>>>,
    runs: Coalescer<RunKey, FetchedRun, E>,
    freshness: Freshness,
    identity: Arc<str>,
    points: i64,
    concurrency: usize,
    /// Redis, shared with the other replicas: consulted after a local miss.
    shared: Option<SharedSegments>,
    pub counters: Arc<SegmentCounters>,
}

impl<E> SegmentCache<E>
where
    E: From<TaskFailed> + Clone + Send + Sync + 'static,
{
    pub fn new(settings: &SegmentSettings, cache: &CacheSettings, identity: &str) -> Self {
        Self {
            store: Arc::new(MemoryStore::new(settings.max_bytes)),
            runs: Coalescer::default(),
            freshness: Freshness::new(cache),
            identity: Arc::from(identity),
            points: settings.points.max(1) as i64,
            concurrency: settings.max_concurrent_fetches.max(1),
            shared: None,
            counters: Arc::default(),
        }
    }

    /// Shares segments with the other replicas through Redis.
    pub fn with_shared(mut self, shared: Option<Arc<SharedState>>, clock: Clock) -> Self {
        self.shared = shared.map(|s| SharedSegments::new(s, clock));
        self
    }

    /// Drops the segments of questions `filter` names (all for the empty filter).
    pub async fn purge(&self, filter: &PurgeFilter) -> u64 {
        let local = self.store.purge(filter).await;
        match &self.shared {
            Some(shared) => local + shared.purge(filter).await,
            None => local,
        }
    }

    /// Every device the stored segments name, once each (a description with details
    /// preferred): what callers have asked about, for listings such as Grafana's variables.
    pub fn devices(&self) -> Vec<Device> {
        let mut by_id: BTreeMap<u64, Device> = BTreeMap::new();
        self.store.for_each_value(|segment| {
            for device in segment.series.iter().filter_map(|s| s.device.as_ref()) {
                let better = by_id
                    .get(&device.did)
                    .is_none_or(|known| known.hostname.is_none() && device.hostname.is_some());
                if better {
                    by_id.insert(device.did, device.clone());
                }
            }
        });
        by_id.into_values().collect()
    }

    /// Puts new TTLs in force for segments stored from now on (a configuration reload).
    pub fn reload_ttls(&self, cache: &CacheSettings) {
        self.freshness.reload(cache);
    }

    pub async fn report(&self) -> SegmentReport {
        let store = self.store.report().await;
        SegmentReport {
            entries: store.entries,
            bytes: store.bytes,
            max_bytes: store.max_bytes,
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            shared_hits: self.counters.shared_hits.load(Ordering::Relaxed),
        }
    }

    /// Answers ranged `query` from segments, calling `fetch` for each run of missing ones (all
    /// of them for [`Reuse::Refetch`]). `fetch` gets the run as a query over `[start, end)`.
    /// `None` for a query without a range: it has no segments.
    pub async fn answer<F, Fut>(
        &self,
        query: &MetricQuery,
        now: i64,
        reuse: Reuse,
        fetch: F,
    ) -> Option<Result<MetricData, E>>
    where
        F: Fn(MetricQuery) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<MetricData, E>> + Send + 'static,
    {
        let start = query.starttime()?;
        let end = query.endtime().unwrap_or(now);
        let interval = query.interval_ms();
        let length = interval.saturating_mul(self.points);
        let first_bucket = query.bucket_of(start);
        let first = first_bucket.div_euclid(length) * length;
        let last = (end - 1).div_euclid(length) * length;
        let base = Arc::new(query.without_range());

        let mut found: Vec<(i64, Option<Arc<Segment>>)> = Vec::new();
        let mut at = first;
        while at <= last {
            let key = self.key(&base, at);
            let segment = match reuse {
                Reuse::Cached => self
                    .store
                    .lookup(&key)
                    .await
                    .filter(|s| s.deadlines.is_fresh(now)),
                Reuse::Refetch => None,
            };
            found.push((at, segment));
            at += length;
        }
        let series = self
            .shared
            .as_ref()
            .filter(|s| s.is_up())
            .map(|_| SharedSegments::series_id(&self.identity, &base, length));
        if let (Some(series), Reuse::Cached) = (&series, reuse) {
            self.fill_from_shared(&base, series, &mut found, now).await;
        }
        for (_, segment) in &found {
            let counter = if segment.is_some() {
                &self.counters.hits
            } else {
                &self.counters.misses
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }

        let runs = missing_runs(&found, length);
        let fetched: Result<Vec<FetchedRun>, E> = futures::stream::iter(runs)
            .map(|(run_start, run_end)| {
                let turn = series
                    .clone()
                    .zip(self.shared.clone())
                    .map(|(series, shared)| (shared, series, reuse == Reuse::Cached));
                self.fetch_run(&base, (run_start, run_end), now, reuse, turn, fetch.clone())
            })
            .buffer_unordered(self.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect();
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => return Some(Err(e)),
        };
        let mut by_start: BTreeMap<i64, Arc<Segment>> = found
            .into_iter()
            .filter_map(|(at, s)| s.map(|s| (at, s)))
            .collect();
        let mut warnings = Vec::new();
        for run in fetched {
            for (at, segment) in run.segments.iter() {
                by_start.insert(*at, segment.clone());
            }
            warnings.extend(run.warnings.iter().cloned());
        }
        let mut data = stitch(query, start, end, first_bucket, by_start.values());
        data.warnings = warnings;
        Some(Ok(data))
    }

    /// Looks up every locally missing segment in Redis with one `MGET`, keeping what is
    /// found (and fresh) locally too.
    async fn fill_from_shared(
        &self,
        base: &Arc<MetricQuery>,
        series: &Arc<str>,
        found: &mut [(i64, Option<Arc<Segment>>)],
        now: i64,
    ) {
        let Some(shared) = &self.shared else { return };
        let missing: Vec<i64> = found
            .iter()
            .filter(|(_, s)| s.is_none())
            .map(|(at, _)| *at)
            .collect();
        if missing.is_empty() {
            return;
        }
        let mut from_shared = shared.lookup_many(series, &missing).await.into_iter();
        for (at, slot) in found.iter_mut().filter(|(_, s)| s.is_none()) {
            let Some(segment) = from_shared.next().flatten() else {
                continue;
            };
            if !segment.deadlines.is_fresh(now) {
                continue;
            }
            self.counters.shared_hits.fetch_add(1, Ordering::Relaxed);
            self.store
                .insert(self.key(base, *at), segment.clone())
                .await;
            *slot = Some(segment);
        }
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
    async fn fetch_run<F, Fut>(
        &self,
        base: &Arc<MetricQuery>,
        (run_start, run_end): (i64, i64),
        now: i64,
        reuse: Reuse,
        // Redis, this question's shared name there, and whether another replica's segments
        // may answer (not for `no-cache`).
        turn: Option<(SharedSegments, Arc<str>, bool)>,
        fetch: F,
    ) -> Result<FetchedRun, E>
    where
        F: Fn(MetricQuery) -> Fut + Send + 'static,
        Fut: Future<Output = Result<MetricData, E>> + Send + 'static,
    {
        let key = RunKey {
            query: base.clone(),
            start: run_start,
            end: run_end,
        };
        let store = self.store.clone();
        let freshness = self.freshness.clone();
        let counters = self.counters.clone();
        let identity = self.identity.clone();
        let base = base.clone();
        let interval = base.interval_ms();
        let length = interval.saturating_mul(self.points);
        let joined = self.runs.join_or_start(key, async move {
            // A run that finished between our lookup and our turn here already answered.
            if reuse == Reuse::Cached {
                let mut stored = Vec::new();
                let mut at = run_start;
                while at < run_end {
                    let key = SegmentKey {
                        identity: identity.clone(),
                        query: base.clone(),
                        start: at,
                    };
                    match store.lookup(&key).await {
                        Some(s) if s.deadlines.is_fresh(now) => stored.push((at, s)),
                        _ => break,
                    }
                    at += length;
                }
                if at >= run_end {
                    return Ok(Arc::new(Run {
                        segments: stored,
                        warnings: Vec::new(),
                    }));
                }
            }
            let mut lock = None;
            if let Some((shared, series, true)) = &turn {
                match shared
                    .take_turn(series, run_start, run_end, length, now)
                    .await
                {
                    RunTurn::Found(segments) => {
                        counters
                            .shared_hits
                            .fetch_add(segments.len() as u64, Ordering::Relaxed);
                        for (at, segment) in &segments {
                            let key = SegmentKey {
                                identity: identity.clone(),
                                query: base.clone(),
                                start: *at,
                            };
                            store.insert(key, segment.clone()).await;
                        }
                        return Ok(Arc::new(Run {
                            segments,
                            warnings: Vec::new(),
                        }));
                    }
                    RunTurn::Fetch(held) => lock = held,
                }
            }
            // Not beyond the bucket holding now, and a bucket boundary, like every request.
            let upstream_end =
                run_end.min(base.boundary_at_or_after(now).max(run_start + interval));
            counters.runs.fetch_add(1, Ordering::Relaxed);
            let data = match fetch(base.with_range(run_start, upstream_end)).await {
                Ok(data) => data,
                Err(e) => {
                    // The others take their turn now, not when the lock lapses.
                    if let Some(lock) = lock {
                        lock.release().await;
                    }
                    return Err(e);
                }
            };
            let points: usize = data.series.iter().map(|s| s.points.len()).sum();
            counters
                .upstream_points
                .fetch_add(points as u64, Ordering::Relaxed);
            let mut segments = Vec::new();
            let mut at = run_start;
            while at < run_end {
                let segment = Arc::new(cut(&data, at, at + length, |series, seg_end| {
                    let completeness = Completeness::of_series(series, seg_end, interval);
                    freshness.segment_deadlines(seg_end, interval, completeness, now)
                }));
                // An answer the gateway only partly understood is used once, never kept.
                if data.warnings.is_empty() {
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
                }
                segments.push((at, segment));
                at += length;
            }
            if let Some((shared, series, _)) = &turn
                && data.warnings.is_empty()
            {
                shared.publish(series, &segments).await;
            }
            if let Some(lock) = lock {
                lock.release().await;
            }
            Ok(Arc::new(Run {
                segments,
                warnings: data.warnings,
            }))
        });
        joined.into_fetch().await
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
fn cut(
    data: &MetricData,
    start: i64,
    end: i64,
    deadlines: impl Fn(&[Series], i64) -> Deadlines,
) -> Segment {
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
        deadlines: deadlines(&series, end),
        series,
        breaches,
        bytes,
    }
}

/// What one stored segment occupies: its key (the query it shares with its run's other
/// segments is left out), its series and breaches with their heap, and the cache's own
/// per-entry bookkeeping.
pub(super) fn weight(series: &[Series], breaches: &[Breach]) -> usize {
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
