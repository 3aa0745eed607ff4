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
//!
//! A live segment whose freshness ran out is not fetched whole again: every segment records
//! up to where its buckets were settled when it was fetched, and only the buckets from there
//! on (the ones that can still change) are asked for and merged into it ("delta-only live
//! tail"). A segment whose settled part lacks data (the appliance may be behind) is fetched
//! whole, like a missing one.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;

use super::freshness::{Completeness, Deadlines, Freshness};
use super::lock::Turn;
use super::memory::{ENTRY_OVERHEAD, MemoryKey, MemoryStore, MemoryValue};
use super::purges::PurgeReach;
use super::shared_segments::SharedSegments;
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

/// A run of adjacent missing segments, fetched with one upstream request from `start` (a
/// segment's start, or inside its first segment for a delta) to `end`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RunKey {
    query: Arc<MetricQuery>,
    start: i64,
    end: i64,
    /// Callers never join a prefetch's run: a prefetch may be refused leave by the guard.
    prefetch: bool,
}

/// What to fetch for a run: segments `[start, end)`, asked for from `fetch_from`; the buckets
/// of the first segment before `fetch_from` come from `base`, its stored, settled prefix.
#[derive(Debug, Clone)]
struct RunPlan {
    start: i64,
    end: i64,
    fetch_from: i64,
    base: Option<Arc<Segment>>,
}

/// A segment position, as the lookup found it.
#[derive(Debug, Clone)]
enum Slot {
    Fresh(Arc<Segment>),
    /// Expired, with settled buckets a delta refresh keeps.
    Stale(Arc<Segment>),
    Missing,
}

#[derive(Debug)]
pub(super) struct Segment {
    /// Every series the appliance returned for the run, with this segment's points.
    pub(super) series: Vec<Series>,
    pub(super) breaches: Vec<Breach>,
    pub(super) deadlines: Deadlines,
    /// Buckets before this were final when the segment was fetched (the segment's start when
    /// none were, or its settled part lacked data): a delta refresh asks from here on.
    pub(super) settled_until: i64,
    pub(super) bytes: usize,
    /// Set on the segments a prefetch stored (shared by that prefetch's segments).
    pub(super) prefetch: Option<Arc<PrefetchMark>>,
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
}

/// A caller's answer from segments, and how it was made.
#[derive(Debug)]
pub struct Assembled {
    pub data: MetricData,
    /// Ranges `[start, end)` (epoch ms) the appliance was asked for this answer, including
    /// fetches it joined; empty when every segment was stored (here or in Redis).
    pub fetched: Vec<(i64, i64)>,
    /// Some segment of the answer was prefetched by this replica.
    pub prefetched: bool,
}

/// What one prefetch did.
#[derive(Debug)]
pub enum PrefetchOutcome {
    /// Every segment will be fresh at the target already (here, or found in Redis).
    Fresh,
    /// Another replica holds the lock of a run: it is fetching it.
    Skipped,
    /// The appliance was asked; the stored segments carry `mark`.
    Fetched(Arc<PrefetchMark>),
}

/// Who asks the segment cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A caller, answered at `now`.
    Caller(Reuse),
    /// The prefetcher: segments must be fresh at `fresh_at` (a hot window's next refresh);
    /// it never waits for another replica's run.
    Prefetch { fresh_at: i64 },
}

impl Mode {
    fn reuse(self) -> Reuse {
        match self {
            Mode::Caller(reuse) => reuse,
            Mode::Prefetch { .. } => Reuse::Cached,
        }
    }

    fn fresh_at(self, now: i64) -> i64 {
        match self {
            Mode::Caller(_) => now,
            Mode::Prefetch { fresh_at } => fresh_at.max(now),
        }
    }
}

/// How one run is fetched: when, for whom, and what its segments must be fresh for.
#[derive(Clone)]
struct RunContext {
    now: i64,
    mode: Mode,
    mark: Option<Arc<PrefetchMark>>,
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
    /// The range asked of the appliance, when it was asked.
    asked: Option<(i64, i64)>,
    /// A prefetch left the run to the replica holding its lock.
    skipped: bool,
}

impl Run {
    fn found(segments: Vec<(i64, Arc<Segment>)>) -> Arc<Self> {
        Arc::new(Run {
            segments,
            warnings: Vec::new(),
            asked: None,
            skipped: false,
        })
    }
}

type FetchedRun = Arc<Run>;

/// What the segment cache did, for benchmarks and `/internal/cache`.
#[derive(Debug, Default)]
pub struct SegmentCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Segments found in Redis after a local miss.
    pub shared_hits: AtomicU64,
    /// Upstream fetches (runs), and the points they returned.
    pub runs: AtomicU64,
    pub upstream_points: AtomicU64,
    /// Expired live segments refreshed by asking only for their unsettled buckets.
    pub deltas: AtomicU64,
}

pub struct SegmentCache<E> {
    store: Arc<MemoryStore<SegmentKey, Arc<Segment>>>,
    runs: Coalescer<RunKey, FetchedRun, E>,
    freshness: Freshness,
    identity: Arc<str>,
    points: i64,
    concurrency: usize,
    /// Most segments one upstream request covers.
    segments_per_request: i64,
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
            segments_per_request: (settings.max_points_per_request / settings.points.max(1)).max(1)
                as i64,
            shared: None,
            counters: Arc::default(),
        }
    }

    /// Shares segments with the other replicas through Redis.
    pub fn with_shared(mut self, shared: Option<Arc<SharedState>>, clock: Clock) -> Self {
        self.shared = shared.map(|s| SharedSegments::new(s, clock));
        self
    }

    /// Drops the segments of questions `filter` names (all for the empty filter) here, and
    /// (for [`PurgeReach::Cluster`]) in Redis.
    pub async fn purge(&self, filter: &PurgeFilter, reach: PurgeReach) -> u64 {
        let local = self.store.purge(filter).await;
        match (&self.shared, reach) {
            (Some(shared), PurgeReach::Cluster) => local + shared.purge(filter).await,
            _ => local,
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
        self.assemble(query, now, reuse, fetch)
            .await
            .map(|answer| answer.map(|a| a.data))
    }

    /// [`SegmentCache::answer`], saying also what the appliance was asked for this answer and
    /// whether prefetched segments served it.
    pub async fn assemble<F, Fut>(
        &self,
        query: &MetricQuery,
        now: i64,
        reuse: Reuse,
        fetch: F,
    ) -> Option<Result<Assembled, E>>
    where
        F: Fn(MetricQuery) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<MetricData, E>> + Send + 'static,
    {
        let start = query.starttime()?;
        let end = query.endtime().unwrap_or(now);
        let first_bucket = query.bucket_of(start);
        let context = RunContext {
            now,
            mode: Mode::Caller(reuse),
            mark: None,
        };
        let (found, fetched) = match self.lookup_and_fetch(query, context, fetch).await {
            Ok(done) => done,
            Err(e) => return Some(Err(e)),
        };
        let mut by_start: BTreeMap<i64, Arc<Segment>> = found
            .into_iter()
            .filter_map(|(at, s)| match s {
                Slot::Fresh(s) => Some((at, s)),
                Slot::Stale(_) | Slot::Missing => None,
            })
            .collect();
        let mut prefetched = false;
        for segment in by_start.values() {
            if let Some(mark) = &segment.prefetch {
                prefetched = true;
                mark.used.store(true, Ordering::Relaxed);
            }
        }
        let mut warnings = Vec::new();
        let mut asked = Vec::new();
        for run in fetched {
            for (at, segment) in run.segments.iter() {
                by_start.insert(*at, segment.clone());
            }
            warnings.extend(run.warnings.iter().cloned());
            asked.extend(run.asked);
        }
        asked.sort_unstable();
        let mut data = stitch(query, start, end, first_bucket, by_start.values());
        data.warnings = warnings;
        Some(Ok(Assembled {
            data,
            fetched: asked,
            prefetched,
        }))
    }

    /// Refreshes, in the background, the segments of ranged `query` (a hot window as asked at
    /// `now`) that will not be fresh at `fresh_at` (its next expected refresh): only their
    /// unsettled buckets, like a caller's delta. `fetch` must never queue ahead of callers.
    /// With Redis, segments another replica published are taken, and a run whose lock another
    /// replica holds is left to it.
    pub async fn prefetch<F, Fut>(
        &self,
        query: &MetricQuery,
        now: i64,
        fresh_at: i64,
        fetch: F,
    ) -> Result<PrefetchOutcome, E>
    where
        F: Fn(MetricQuery) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<MetricData, E>> + Send + 'static,
    {
        let mark = Arc::new(PrefetchMark::default());
        let context = RunContext {
            now,
            mode: Mode::Prefetch { fresh_at },
            mark: Some(mark.clone()),
        };
        let (_, runs) = self.lookup_and_fetch(query, context, fetch).await?;
        Ok(if runs.iter().any(|r| r.asked.is_some()) {
            PrefetchOutcome::Fetched(mark)
        } else if runs.iter().any(|r| r.skipped) {
            PrefetchOutcome::Skipped
        } else {
            PrefetchOutcome::Fresh
        })
    }

    /// Looks up every segment of `query` (locally, then in Redis) and fetches the runs of
    /// those missing or not fresh when `context` needs them.
    async fn lookup_and_fetch<F, Fut>(
        &self,
        query: &MetricQuery,
        context: RunContext,
        fetch: F,
    ) -> Result<(Vec<(i64, Slot)>, Vec<FetchedRun>), E>
    where
        F: Fn(MetricQuery) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<MetricData, E>> + Send + 'static,
    {
        let now = context.now;
        let reuse = context.mode.reuse();
        let fresh_at = context.mode.fresh_at(now);
        let Some(start) = query.starttime() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let end = query.endtime().unwrap_or(now);
        let interval = query.interval_ms();
        let length = interval.saturating_mul(self.points);
        let first_bucket = query.bucket_of(start);
        let first = first_bucket.div_euclid(length) * length;
        let last = (end - 1).div_euclid(length) * length;
        let base = Arc::new(query.without_range());

        let mut found: Vec<(i64, Slot)> = Vec::new();
        let mut at = first;
        while at <= last {
            let key = self.key(&base, at);
            let slot = match reuse {
                Reuse::Cached => match self.store.lookup(&key).await {
                    Some(s) if s.deadlines.is_fresh(fresh_at) => Slot::Fresh(s),
                    Some(s) if s.settled_until > at && s.settled_until < at + length => {
                        Slot::Stale(s)
                    }
                    _ => Slot::Missing,
                },
                Reuse::Refetch => Slot::Missing,
            };
            found.push((at, slot));
            at += length;
        }

        let series = self
            .shared
            .as_ref()
            .filter(|s| s.is_up())
            .map(|_| SharedSegments::series_id(&self.identity, &base, length));
        if let (Some(series), Reuse::Cached) = (&series, reuse) {
            self.fill_from_shared(&base, series, &mut found, fresh_at)
                .await;
        }
        // Counted once Redis had its say: a segment another replica fetched is a hit. Only
        // callers' lookups count.
        if let Mode::Caller(_) = context.mode {
            for (_, slot) in &found {
                let counter = if matches!(slot, Slot::Fresh(_)) {
                    &self.counters.hits
                } else {
                    &self.counters.misses
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }

        let runs = missing_runs(&found, length, self.segments_per_request);
        let fetched: Result<Vec<FetchedRun>, E> = futures::stream::iter(runs)
            .map(|plan| {
                let turn = series
                    .clone()
                    .zip(self.shared.clone())
                    .map(|(series, shared)| (shared, series, reuse == Reuse::Cached));
                self.fetch_run(&base, plan, context.clone(), turn, fetch.clone())
            })
            .buffer_unordered(self.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect();
        Ok((found, fetched?))
    }

    /// Looks up every locally missing (or expired) segment in Redis with one `MGET`, keeping
    /// what is found fresh (at `fresh_at`) locally too.
    async fn fill_from_shared(
        &self,
        base: &Arc<MetricQuery>,
        series: &Arc<str>,
        found: &mut [(i64, Slot)],
        fresh_at: i64,
    ) {
        let Some(shared) = &self.shared else { return };
        let wanted = |slot: &Slot| !matches!(slot, Slot::Fresh(_));
        let missing: Vec<i64> = found
            .iter()
            .filter(|(_, s)| wanted(s))
            .map(|(at, _)| *at)
            .collect();
        if missing.is_empty() {
            return;
        }
        let mut from_shared = shared.lookup_many(series, &missing).await.into_iter();
        for (at, slot) in found.iter_mut().filter(|(_, s)| wanted(s)) {
            let Some(segment) = from_shared.next().flatten() else {
                continue;
            };
            if !segment.deadlines.is_fresh(fresh_at) {
                continue;
            }
            self.counters.shared_hits.fetch_add(1, Ordering::Relaxed);
            self.store
                .insert(self.key(base, *at), segment.clone())
                .await;
            *slot = Slot::Fresh(segment);
        }
    }

    fn key(&self, base: &Arc<MetricQuery>, start: i64) -> SegmentKey {
        SegmentKey {
            identity: self.identity.clone(),
            query: base.clone(),
            start,
        }
    }

    /// Fetches the run `plan` describes (closed at `now` if it reaches beyond) in one
    /// request, shared with concurrent askers, and stores it as segments.
    async fn fetch_run<F, Fut>(
        &self,
        base: &Arc<MetricQuery>,
        plan: RunPlan,
        context: RunContext,
        // Redis, this question's shared name there, and whether another replica's segments
        // may answer (not for `no-cache`).
        turn: Option<(SharedSegments, Arc<str>, bool)>,
        fetch: F,
    ) -> Result<FetchedRun, E>
    where
        F: Fn(MetricQuery) -> Fut + Send + 'static,
        Fut: Future<Output = Result<MetricData, E>> + Send + 'static,
    {
        let RunPlan {
            start: run_start,
            end: run_end,
            fetch_from,
            base: prefix,
        } = plan;
        let RunContext { now, mode, mark } = context;
        let reuse = mode.reuse();
        let fresh_at = mode.fresh_at(now);
        let prefetching = matches!(mode, Mode::Prefetch { .. });
        let key = RunKey {
            query: base.clone(),
            start: fetch_from,
            end: run_end,
            prefetch: prefetching,
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
                        Some(s) if s.deadlines.is_fresh(fresh_at) => stored.push((at, s)),
                        _ => break,
                    }
                    at += length;
                }
                if at >= run_end {
                    return Ok(Run::found(stored));
                }
            }
            let mut lock = None;
            match &turn {
                Some((shared, series, true)) if prefetching => {
                    match shared.try_take(series, run_start, run_end).await {
                        Some(held) => {
                            lock = held;
                            // Another replica may have published the run before we locked.
                            let starts: Vec<i64> =
                                (run_start..run_end).step_by(length as usize).collect();
                            let found = shared.lookup_many(series, &starts).await;
                            if lock.is_some()
                                && found.iter().all(|s| {
                                    s.as_ref().is_some_and(|s| s.deadlines.is_fresh(fresh_at))
                                })
                            {
                                if let Some(lock) = lock {
                                    lock.release().await;
                                }
                                let mut segments = Vec::new();
                                for (at, segment) in
                                    starts.into_iter().zip(found.into_iter().flatten())
                                {
                                    let key = SegmentKey {
                                        identity: identity.clone(),
                                        query: base.clone(),
                                        start: at,
                                    };
                                    store.insert(key, segment.clone()).await;
                                    segments.push((at, segment));
                                }
                                return Ok(Run::found(segments));
                            }
                        }
                        None => {
                            return Ok(Arc::new(Run {
                                segments: Vec::new(),
                                warnings: Vec::new(),
                                asked: None,
                                skipped: true,
                            }));
                        }
                    }
                }
                Some((shared, series, true)) => {
                    match shared
                        .take_turn(series, run_start, run_end, length, now)
                        .await
                    {
                        Turn::Found(segments) => {
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
                            return Ok(Run::found(segments));
                        }
                        Turn::Fetch(held) => lock = held,
                    }
                }
                _ => {}
            }
            // Not beyond the bucket holding now, and a bucket boundary, like every request.
            let upstream_end =
                run_end.min(base.boundary_at_or_after(now).max(fetch_from + interval));
            counters.runs.fetch_add(1, Ordering::Relaxed);
            if prefix.is_some() {
                counters.deltas.fetch_add(1, Ordering::Relaxed);
            }
            let data = match fetch(base.with_range(fetch_from, upstream_end)).await {
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
            let settled = freshness.settled_before(now, interval);
            let mut segments = Vec::new();
            let mut at = run_start;
            while at < run_end {
                let from = at.max(fetch_from);
                let (mut series, mut breaches) = cut(&data, from, at + length);
                if let (Some(prefix), true) = (&prefix, at == run_start) {
                    (series, breaches) = merge(prefix, series, breaches, from);
                }
                let seg_end = at + length;
                let completeness = Completeness::of_series(&series, seg_end, interval);
                let deadlines = if prefetching {
                    freshness.prefetched_segment_deadlines(seg_end, interval, completeness, now)
                } else {
                    freshness.segment_deadlines(seg_end, interval, completeness, now)
                };
                let settled_until = settled_prefix(&series, at, seg_end, settled, interval);
                let bytes = weight(&series, &breaches);
                let segment = Arc::new(Segment {
                    series,
                    breaches,
                    deadlines,
                    settled_until,
                    bytes,
                    prefetch: mark.clone(),
                });
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
                shared.publish(series, &base, &segments).await;
            }
            if let Some(lock) = lock {
                lock.release().await;
            }
            Ok(Arc::new(Run {
                segments,
                warnings: data.warnings,
                asked: Some((fetch_from, upstream_end)),
                skipped: false,
            }))
        });
        joined.into_fetch().await
    }
}

/// Adjacent segments to fetch, merged into runs. A run may start with an expired segment,
/// asked for only from its settled point; expired segments further into a run are fetched
/// whole with it (one request is cheaper than two). A run covers at most `most` segments: a
/// long cold range reaches the appliance as several bounded requests.
fn missing_runs(found: &[(i64, Slot)], length: i64, most: i64) -> Vec<RunPlan> {
    let mut runs: Vec<RunPlan> = Vec::new();
    for (at, slot) in found {
        let at = *at;
        match (slot, runs.last_mut()) {
            (Slot::Fresh(_), _) => {}
            (_, Some(run)) if run.end == at && (run.end - run.start) / length < most => {
                run.end += length
            }
            (Slot::Stale(base), _) => runs.push(RunPlan {
                start: at,
                end: at + length,
                fetch_from: base.settled_until,
                base: Some(base.clone()),
            }),
            (Slot::Missing, _) => runs.push(RunPlan {
                start: at,
                end: at + length,
                fetch_from: at,
                base: None,
            }),
        }
    }
    runs
}

/// Where a segment's settled part ends: the settled boundary within `[start, end)` if every
/// series has data in the last settled bucket, else `start` (nothing is taken as final).
fn settled_prefix(series: &[Series], start: i64, end: i64, settled: i64, interval: i64) -> i64 {
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

/// `prefix`'s settled buckets and breaches (before `from`), followed by what was fetched
/// from `from` on: a segment refreshed by its delta.
fn merge(
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

/// The part of `data` in `[start, end)`: its series and breaches.
fn cut(data: &MetricData, start: i64, end: i64) -> (Vec<Series>, Vec<Breach>) {
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
    (series, breaches)
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
    ENTRY_OVERHEAD + size_of::<SegmentKey>() + size_of::<Segment>() + series_bytes + breach_bytes
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

    fn segment(settled_until: i64) -> Arc<Segment> {
        Arc::new(Segment {
            series: Vec::new(),
            breaches: Vec::new(),
            deadlines: Deadlines {
                stored_at: 0,
                fresh_until: 0,
                stale_while_revalidate_until: 0,
                stale_if_error_until: 0,
            },
            settled_until,
            bytes: 0,
            prefetch: None,
        })
    }

    fn spans(runs: &[RunPlan]) -> Vec<(i64, i64, i64)> {
        runs.iter()
            .map(|r| (r.start, r.end, r.fetch_from))
            .collect()
    }

    #[test]
    fn adjacent_missing_segments_merge_into_runs() {
        let found = vec![
            (0, Slot::Missing),
            (10, Slot::Missing),
            (20, Slot::Fresh(segment(30))),
            (30, Slot::Missing),
            (40, Slot::Fresh(segment(50))),
            (50, Slot::Missing),
        ];
        assert_eq!(
            spans(&missing_runs(&found, 10, 100)),
            [(0, 20, 0), (30, 40, 30), (50, 60, 50)]
        );
    }

    #[test]
    fn an_expired_segment_is_asked_for_from_its_settled_point() {
        let found = vec![
            (0, Slot::Fresh(segment(10))),
            (10, Slot::Stale(segment(17))),
            (20, Slot::Missing),
            (30, Slot::Fresh(segment(30))),
            (40, Slot::Missing),
            (50, Slot::Stale(segment(55))),
        ];
        let runs = missing_runs(&found, 10, 100);
        // The delta opens a run and the new segment joins it; an expired segment further
        // into a run is fetched whole with it.
        assert_eq!(spans(&runs), [(10, 30, 17), (40, 60, 40)]);
        assert!(runs[0].base.is_some() && runs[1].base.is_none());
    }

    #[test]
    fn long_runs_are_split_into_bounded_requests() {
        let found: Vec<_> = (0..7).map(|i| (i * 10, Slot::Missing)).collect();
        assert_eq!(
            spans(&missing_runs(&found, 10, 3)),
            [(0, 30, 0), (30, 60, 30), (60, 70, 60)]
        );
    }
}
