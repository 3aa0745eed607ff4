//! One run of segments, as the coalesced task every concurrent asker awaits: stored here
//! meanwhile, found in Redis, left to another replica, or fetched, cut and stored.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::freshness::{Completeness, Freshness};
use super::segment::{PrefetchMark, Segment, cut, merge, settled_prefix};
use super::segment_disk::DiskSegments;
use super::segment_memory::MemorySegments;
use super::segment_plan::RunPlan;
use super::segment_shared::SharedSegments;
use super::segment_store::{Question, SegmentStore};
use super::segment_turn::{Asker, RunTurn, take_turn};
use crate::normalize::MetricData;
use crate::query::MetricQuery;

/// Whether stored segments may answer (a caller's `no-cache` says no).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    Cached,
    Refetch,
}

/// Who asks the segment cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A caller, answered at `now`.
    Caller(Reuse),
    /// The prefetcher: segments must be fresh at `fresh_at` (a hot window's next refresh);
    /// it never waits for another replica's run.
    Prefetch { fresh_at: i64 },
}

impl Mode {
    pub(super) fn reuse(self) -> Reuse {
        match self {
            Mode::Caller(reuse) => reuse,
            Mode::Prefetch { .. } => Reuse::Cached,
        }
    }

    pub(super) fn fresh_at(self, now: i64) -> i64 {
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
pub(super) struct RunContext {
    pub(super) now: i64,
    pub(super) mode: Mode,
    pub(super) mark: Option<Arc<PrefetchMark>>,
}

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

/// The segments one upstream request produced, by start, and what the answer left out.
pub(super) struct Run {
    pub(super) segments: Vec<(i64, Arc<Segment>)>,
    /// The fetched answer's warnings; a run with any is never stored.
    pub(super) warnings: Vec<String>,
    /// The range asked of the appliance, when it was asked.
    pub(super) asked: Option<(i64, i64)>,
    /// A prefetch left the run to the replica holding its lock.
    pub(super) skipped: bool,
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

pub(super) type FetchedRun = Arc<Run>;

/// One run to fetch, with what it needs from the cache, owned: it runs as the coalesced
/// task that every concurrent asker of the run awaits.
pub(super) struct RunJob {
    pub(super) memory: Arc<MemorySegments>,
    /// Redis, when it was up at the lookup: take turns with other replicas, publish there.
    pub(super) shared: Option<SharedSegments>,
    /// The disk tier, if open: settled segments fetched are kept there too.
    pub(super) disk: Option<DiskSegments>,
    pub(super) freshness: Freshness,
    pub(super) counters: Arc<SegmentCounters>,
    pub(super) question: Arc<Question>,
    pub(super) plan: RunPlan,
    pub(super) context: RunContext,
}

impl RunJob {
    /// Stored meanwhile, found in Redis, left to another replica, or fetched and stored
    /// (closed at `now` if the run reaches beyond).
    pub(super) async fn run<E, F, Fut>(self, fetch: F) -> Result<FetchedRun, E>
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
            if let Some(disk) = &self.disk {
                disk.publish(&self.question, &segments).await;
            }
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
