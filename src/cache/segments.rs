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
//! was only partly understood) in its tiers: memory (`segment_memory.rs`), then Redis
//! (`segment_shared.rs`), taking turns with the other replicas (`segment_turn.rs`).
//!
//! A live segment whose freshness ran out is not fetched whole again: every segment records
//! up to where its buckets were settled when it was fetched, and only the buckets from there
//! on (the ones that can still change) are asked for and merged into it ("delta-only live
//! tail"). A segment whose settled part lacks data (the appliance may be behind) is fetched
//! whole, like a missing one.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;

use super::freshness::{Completeness, Freshness};
use super::purges::PurgeReach;
use super::segment::{Segment, cut, merge, settled_prefix, stitch};
use super::segment_memory::MemorySegments;
use super::segment_shared::SharedSegments;
use super::segment_store::{Question, SegmentStore};
use super::segment_turn::{Asker, RunTurn, take_turn};
use crate::clock::Clock;
use crate::coalesce::{Coalescer, TaskFailed};
use crate::normalize::{Device, MetricData};
use crate::query::{MetricQuery, PurgeFilter};
use crate::redis::SharedState;
use crate::settings::{CacheSettings, SegmentSettings};

pub use super::segment::PrefetchMark;

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

impl Slot {
    /// What a stored segment (or none) at `start` is worth for an answer fresh at `fresh_at`.
    fn of(stored: Option<Arc<Segment>>, start: i64, length: i64, fresh_at: i64) -> Self {
        match stored {
            Some(s) if s.deadlines.is_fresh(fresh_at) => Slot::Fresh(s),
            Some(s) if s.settled_until > start && s.settled_until < start + length => {
                Slot::Stale(s)
            }
            _ => Slot::Missing,
        }
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

    fn asker(self) -> Asker {
        match self {
            Mode::Caller(_) => Asker::Caller,
            Mode::Prefetch { .. } => Asker::Prefetch,
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

    fn left_to_other() -> Arc<Self> {
        Arc::new(Run {
            segments: Vec::new(),
            warnings: Vec::new(),
            asked: None,
            skipped: true,
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
    memory: Arc<MemorySegments>,
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
            memory: Arc::new(MemorySegments::new(settings.max_bytes)),
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
        let local = self.memory.purge(filter).await;
        match (&self.shared, reach) {
            (Some(shared), PurgeReach::Cluster) => local + shared.purge(filter).await,
            _ => local,
        }
    }

    /// Every device the stored segments name, once each (a description with details
    /// preferred): what callers have asked about, for listings such as Grafana's variables.
    pub fn devices(&self) -> Vec<Device> {
        let mut by_id: BTreeMap<u64, Device> = BTreeMap::new();
        self.memory.for_each_segment(|segment| {
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
        let store = self.memory.report().await;
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
                mark.mark_used();
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
        let length = query.interval_ms().saturating_mul(self.points);
        let first = query.bucket_of(start).div_euclid(length) * length;
        let question = Arc::new(Question::new(
            self.identity.clone(),
            Arc::new(query.without_range()),
            length,
        ));
        let starts: Vec<i64> = question.starts(first, end).collect();

        let stored = match reuse {
            Reuse::Cached => self.memory.lookup_many(&question, &starts).await,
            Reuse::Refetch => vec![None; starts.len()],
        };
        let mut found: Vec<(i64, Slot)> = starts
            .iter()
            .zip(stored)
            .map(|(&at, stored)| (at, Slot::of(stored, at, length, fresh_at)))
            .collect();

        // Redis as it was when the lookup began decides for every run of this answer.
        let shared = self.shared.as_ref().filter(|s| s.is_up());
        if let (Some(shared), Reuse::Cached) = (shared, reuse) {
            self.fill_from_shared(shared, &question, &mut found, fresh_at)
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
                let job = RunJob {
                    memory: self.memory.clone(),
                    shared: shared.cloned(),
                    freshness: self.freshness.clone(),
                    counters: self.counters.clone(),
                    question: question.clone(),
                    plan,
                    context: context.clone(),
                };
                self.fetch_run(job, fetch.clone())
            })
            .buffer_unordered(self.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect();
        Ok((found, fetched?))
    }

    /// Looks up every locally missing (or expired) segment in Redis in one batch, keeping
    /// what is found fresh (at `fresh_at`) locally too.
    async fn fill_from_shared(
        &self,
        shared: &SharedSegments,
        question: &Question,
        found: &mut [(i64, Slot)],
        fresh_at: i64,
    ) {
        let wanted = |slot: &Slot| !matches!(slot, Slot::Fresh(_));
        let missing: Vec<i64> = found
            .iter()
            .filter(|(_, s)| wanted(s))
            .map(|(at, _)| *at)
            .collect();
        if missing.is_empty() {
            return;
        }
        let mut from_shared = shared.lookup_many(question, &missing).await.into_iter();
        let mut kept = Vec::new();
        for (at, slot) in found.iter_mut().filter(|(_, s)| wanted(s)) {
            let Some(segment) = from_shared.next().flatten() else {
                continue;
            };
            if !segment.deadlines.is_fresh(fresh_at) {
                continue;
            }
            self.counters.shared_hits.fetch_add(1, Ordering::Relaxed);
            kept.push((*at, segment.clone()));
            *slot = Slot::Fresh(segment);
        }
        self.memory.publish(question, &kept).await;
    }

    /// Runs `job` once for every concurrent asker of the same run (a caller never joins a
    /// prefetch's run, see [`RunKey::prefetch`]).
    async fn fetch_run<F, Fut>(&self, job: RunJob, fetch: F) -> Result<FetchedRun, E>
    where
        F: Fn(MetricQuery) -> Fut + Send + 'static,
        Fut: Future<Output = Result<MetricData, E>> + Send + 'static,
    {
        let key = RunKey {
            query: job.question.query.clone(),
            start: job.plan.fetch_from,
            end: job.plan.end,
            prefetch: matches!(job.context.mode, Mode::Prefetch { .. }),
        };
        self.runs
            .join_or_start(key, job.run(fetch))
            .into_fetch()
            .await
    }
}

/// One run to fetch, with what it needs from the cache, owned: it runs as the coalesced
/// task that every concurrent asker of the run awaits.
struct RunJob {
    memory: Arc<MemorySegments>,
    /// Redis, when it was up at the lookup: take turns with other replicas, publish there.
    shared: Option<SharedSegments>,
    freshness: Freshness,
    counters: Arc<SegmentCounters>,
    question: Arc<Question>,
    plan: RunPlan,
    context: RunContext,
}

impl RunJob {
    /// Stored meanwhile, found in Redis, left to another replica, or fetched and stored
    /// (closed at `now` if the run reaches beyond).
    async fn run<E, F, Fut>(self, fetch: F) -> Result<FetchedRun, E>
    where
        F: Fn(MetricQuery) -> Fut,
        Fut: Future<Output = Result<MetricData, E>>,
    {
        let mode = self.context.mode;
        let reuse = mode.reuse();
        if reuse == Reuse::Cached
            && let Some(stored) = self.stored_meanwhile().await
        {
            return Ok(Run::found(stored));
        }
        // With `no-cache` no other replica's segments may answer: no turn to take.
        let lock = match (&self.shared, reuse) {
            (Some(shared), Reuse::Cached) => {
                let run = (self.plan.start, self.plan.end);
                let fresh_at = mode.fresh_at(self.context.now);
                match take_turn(shared, &self.question, run, fresh_at, mode.asker()).await {
                    RunTurn::Found(segments) => return Ok(self.keep_found(segments).await),
                    RunTurn::LeaveToOther => return Ok(Run::left_to_other()),
                    RunTurn::Fetch(lock) => lock,
                }
            }
            _ => None,
        };
        let fetched = self.fetch_and_store(fetch).await;
        // Also after a failure: the others take their turn now, not when the lock lapses.
        if let Some(lock) = lock {
            lock.release().await;
        }
        fetched
    }

    /// The run's segments, when a run that finished between the lookup and this task's start
    /// stored every one of them fresh here.
    async fn stored_meanwhile(&self) -> Option<Vec<(i64, Arc<Segment>)>> {
        let fresh_at = self.context.mode.fresh_at(self.context.now);
        let mut stored = Vec::new();
        // One at a time, stopping at the first gap, as a hit on the memory tier counts for
        // its eviction policy.
        for at in self.question.starts(self.plan.start, self.plan.end) {
            let segment = self
                .memory
                .lookup_many(&self.question, &[at])
                .await
                .pop()
                .flatten()
                .filter(|s| s.deadlines.is_fresh(fresh_at))?;
            stored.push((at, segment));
        }
        Some(stored)
    }

    /// Keeps here the run another replica fetched.
    async fn keep_found(&self, segments: Vec<(i64, Arc<Segment>)>) -> FetchedRun {
        // A prefetch's finds are not a caller's hits.
        if let Mode::Caller(_) = self.context.mode {
            self.counters
                .shared_hits
                .fetch_add(segments.len() as u64, Ordering::Relaxed);
        }
        self.memory.publish(&self.question, &segments).await;
        Run::found(segments)
    }

    /// Asks the appliance for the run and stores its segments, here and in Redis.
    async fn fetch_and_store<E, F, Fut>(&self, fetch: F) -> Result<FetchedRun, E>
    where
        F: Fn(MetricQuery) -> Fut,
        Fut: Future<Output = Result<MetricData, E>>,
    {
        let query = &self.question.query;
        let fetch_from = self.plan.fetch_from;
        // Not beyond the bucket holding now, and a bucket boundary, like every request.
        let upstream_end = self.plan.end.min(
            query
                .boundary_at_or_after(self.context.now)
                .max(fetch_from + query.interval_ms()),
        );
        self.counters.runs.fetch_add(1, Ordering::Relaxed);
        if self.plan.base.is_some() {
            self.counters.deltas.fetch_add(1, Ordering::Relaxed);
        }
        let data = fetch(query.with_range(fetch_from, upstream_end)).await?;
        let points: usize = data.series.iter().map(|s| s.points.len()).sum();
        self.counters
            .upstream_points
            .fetch_add(points as u64, Ordering::Relaxed);
        let segments = self.segments_of(&data);
        // An answer the gateway only partly understood is used once, never kept.
        if data.warnings.is_empty() {
            self.memory.publish(&self.question, &segments).await;
            if let Some(shared) = &self.shared {
                shared.publish(&self.question, &segments).await;
            }
        }
        Ok(Arc::new(Run {
            segments,
            warnings: data.warnings,
            asked: Some((fetch_from, upstream_end)),
            skipped: false,
        }))
    }

    /// `data`, the appliance's answer for the run, cut into the run's segments (the first
    /// one merged with its settled prefix for a delta), each with its deadlines.
    fn segments_of(&self, data: &MetricData) -> Vec<(i64, Arc<Segment>)> {
        let RunContext { now, mode, mark } = &self.context;
        let interval = self.question.query.interval_ms();
        let length = self.question.length;
        let settled = self.freshness.settled_before(*now, interval);
        let mut segments = Vec::new();
        for at in self.question.starts(self.plan.start, self.plan.end) {
            let seg_end = at + length;
            let from = at.max(self.plan.fetch_from);
            let (mut series, mut breaches) = cut(data, from, seg_end);
            if let (Some(prefix), true) = (&self.plan.base, at == self.plan.start) {
                (series, breaches) = merge(prefix, series, breaches, from);
            }
            let completeness = Completeness::of_series(&series, seg_end, interval);
            let deadlines = match mode {
                Mode::Prefetch { .. } => self.freshness.prefetched_segment_deadlines(
                    seg_end,
                    interval,
                    completeness,
                    *now,
                ),
                Mode::Caller(_) => {
                    self.freshness
                        .segment_deadlines(seg_end, interval, completeness, *now)
                }
            };
            let settled_until = settled_prefix(&series, at, seg_end, settled, interval);
            let segment = Segment::new(series, breaches, deadlines, settled_until, mark.clone());
            segments.push((at, Arc::new(segment)));
        }
        segments
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::freshness::Deadlines;

    fn segment(settled_until: i64) -> Arc<Segment> {
        let deadlines = Deadlines {
            stored_at: 0,
            fresh_until: 0,
            stale_while_revalidate_until: 0,
            stale_if_error_until: 0,
        };
        Arc::new(Segment::new(
            Vec::new(),
            Vec::new(),
            deadlines,
            settled_until,
            None,
        ))
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
