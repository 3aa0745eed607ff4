//! The segment cache: answers ranged queries from fixed, epoch-aligned segments of their
//! series, asking the appliance only for the segments missing from its tiers.
//!
//! A rolling window ("the last 24 h, every minute") thus costs the appliance only what is new.
//! Segment `i` of a query covers `[i·L, (i+1)·L)` with `L = points × interval`. The answer to
//! `[start, end)` is every bucket `t` with `floor(start, interval) ≤ t < end` (the gateway's
//! contract: epoch-aligned buckets, whatever the appliance's own rule) and every breach with
//! `start ≤ time < end`: exactly what the direct path answers for that range. Runs are asked
//! with bucket-aligned ends, like every request. The caller hands in how to fetch a range;
//! this module looks segments up in memory (`segment_memory.rs`), then Redis
//! (`segment_shared.rs`), plans the runs to fetch (`segment_plan.rs`) and runs each once
//! for all its concurrent askers (`segment_run.rs`), which stores what comes back (never an
//! answer that was only partly understood).
//!
//! A live segment whose freshness ran out is not fetched whole again: every segment records
//! up to where its buckets were settled when it was fetched, and only the buckets from there
//! on (the ones that can still change) are asked for and merged into it ("delta-only live
//! tail"). A segment whose settled part lacks data (the appliance may be behind) is fetched
//! whole, like a missing one.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;

use super::freshness::Freshness;
use super::purges::PurgeReach;
use super::segment::{Segment, stitch};
use super::segment_disk::DiskSegments;
use super::segment_memory::MemorySegments;
use super::segment_plan::{Slot, missing_runs};
use super::segment_run::{FetchedRun, Mode, RunContext, RunJob};
use super::segment_shared::SharedSegments;
use super::segment_store::{Question, SegmentStore};
use crate::clock::Clock;
use crate::coalesce::{Coalescer, TaskFailed};
use crate::normalize::{Device, MetricData};
use crate::query::{MetricQuery, PurgeFilter};
use crate::redis::SharedState;
use crate::settings::{CacheSettings, SegmentSettings};

pub use super::segment::PrefetchMark;
pub use super::segment_run::{Reuse, SegmentCounters};

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

/// A caller's answer from segments, and how it was made.
#[derive(Debug)]
pub struct Assembled {
    pub data: MetricData,
    /// Ranges `[start, end)` (epoch ms) the appliance was asked for this answer, including
    /// fetches it joined; empty when every segment was stored (here or in Redis).
    pub fetched: Vec<(i64, i64)>,
    /// Some segment of the answer was prefetched by this replica.
    pub prefetched: bool,
    /// Some segment of the answer came from the archive (stale, kept on disk).
    pub archived: bool,
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

/// What the segment cache holds, for `GET /internal/cache` and `/metrics`.
#[derive(Debug, Clone, Serialize, ToSchema)]
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
    /// The disk tier, when `cache.dir` names one.
    pub disk: Option<DiskReport>,
}

/// The disk tier: whether it is open, what it holds, and what it did.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct DiskReport {
    /// False when the directory or file could not be used: the gateway runs on memory alone.
    pub up: bool,
    /// Whether every entry of the file is indexed yet (it is read in the background at
    /// start; until then entries and bytes count what is known so far).
    pub indexed: bool,
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// Segments found on disk (after a memory miss), written, and dropped for a bad checksum.
    pub hits: u64,
    pub writes: u64,
    pub corrupt: u64,
    /// Reads and writes that failed (a full disk, a vanished directory).
    pub errors: u64,
    /// Segments evicted to keep `cache.disk_max_bytes`.
    pub evicted: u64,
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
    /// The disk: consulted after a memory miss, before Redis; `Err` when configured and
    /// unusable.
    disk: Option<Result<DiskSegments, ()>>,
    pub counters: Arc<SegmentCounters>,
}

impl<E> SegmentCache<E>
where
    E: From<TaskFailed> + Clone + Send + Sync + 'static,
{
    pub fn new(settings: &SegmentSettings, cache: &CacheSettings, identity: &str) -> Self {
        Self {
            memory: Arc::new(MemorySegments::new(settings.max_bytes.get())),
            runs: Coalescer::default(),
            freshness: Freshness::new(cache),
            identity: Arc::from(identity),
            points: i64::try_from(settings.points.get()).unwrap_or(i64::MAX),
            concurrency: settings.max_concurrent_fetches.get(),
            segments_per_request: i64::try_from(
                (settings.max_points_per_request.get() / settings.points.get()).max(1),
            )
            .unwrap_or(i64::MAX),
            shared: None,
            disk: None,
            counters: Arc::default(),
        }
    }

    /// Keeps settled segments in `dir` too, so a restart costs the appliance nothing it
    /// already answered. A directory or file that cannot be used is logged, and the gateway
    /// carries on from memory.
    pub fn with_disk(
        mut self,
        dir: Option<&std::path::Path>,
        max_bytes: u64,
        archive: bool,
        now: i64,
    ) -> Self {
        self.disk = dir.map(
            |dir| match DiskSegments::open(dir, max_bytes, archive, now) {
                Ok(disk) => {
                    tracing::info!(path = %disk.path().display(), "disk cache open");
                    Ok(disk)
                }
                Err(e) => {
                    tracing::error!(error = %e, "the disk cache is off: carrying on from memory");
                    Err(())
                }
            },
        );
        self
    }

    fn disk(&self) -> Option<&DiskSegments> {
        self.disk.as_ref().and_then(|d| d.as_ref().ok())
    }

    /// Shares segments with the other replicas through Redis.
    pub fn with_shared(mut self, shared: Option<Arc<SharedState>>, clock: Clock) -> Self {
        self.shared = shared.map(|s| SharedSegments::new(s, clock));
        self
    }

    /// Drops the segments of questions `filter` names (all for the empty filter) here, and
    /// (for [`PurgeReach::Cluster`]) in Redis.
    pub async fn purge(&self, filter: &PurgeFilter, reach: PurgeReach) -> u64 {
        let mut local = self.memory.purge(filter).await;
        if let (Some(disk), PurgeReach::Local | PurgeReach::Cluster) = (self.disk(), reach) {
            local += disk.purge(filter).await;
        }
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
            disk: match &self.disk {
                None => None,
                Some(Err(())) => Some(DiskReport::default()),
                Some(Ok(disk)) => {
                    let store = disk.report().await;
                    let c = &disk.counters;
                    Some(DiskReport {
                        up: true,
                        indexed: disk.loaded(),
                        entries: store.entries,
                        bytes: store.bytes,
                        max_bytes: store.max_bytes,
                        hits: c.hits.load(Ordering::Relaxed),
                        writes: c.writes.load(Ordering::Relaxed),
                        corrupt: c.corrupt.load(Ordering::Relaxed),
                        errors: c.errors.load(Ordering::Relaxed),
                        evicted: c.evicted.load(Ordering::Relaxed),
                    })
                }
            },
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
        // Only the archive hands out a segment past its freshness.
        let archived = by_start.values().any(|s| !s.deadlines.is_fresh(now));
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
            archived,
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

        if let (Some(disk), Reuse::Cached) = (self.disk(), reuse) {
            // Settled data is final: the archive answers once the appliance may have let it go.
            self.fill_from(disk, &question, &mut found, fresh_at, disk.archive())
                .await;
        }
        // Redis as it was when the lookup began decides for every run of this answer.
        let shared = self.shared.as_ref().filter(|s| s.is_up());
        if let (Some(shared), Reuse::Cached) = (shared, reuse) {
            let hits = self
                .fill_from(shared, &question, &mut found, fresh_at, false)
                .await;
            self.counters.shared_hits.fetch_add(hits, Ordering::Relaxed);
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
                    disk: self.disk().cloned(),
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

    /// Looks up every segment missing from memory (or expired there) in a lower `tier`, in
    /// one batch, keeping what it finds in memory too: those fresh at `fresh_at`, or (for
    /// the archive, `stale_too`) every one. How many it found.
    async fn fill_from<S: SegmentStore>(
        &self,
        tier: &S,
        question: &Question,
        found: &mut [(i64, Slot)],
        fresh_at: i64,
        stale_too: bool,
    ) -> u64 {
        let wanted = |slot: &Slot| !matches!(slot, Slot::Fresh(_));
        let missing: Vec<i64> = found
            .iter()
            .filter(|(_, s)| wanted(s))
            .map(|(at, _)| *at)
            .collect();
        if missing.is_empty() {
            return 0;
        }
        let mut from_tier = tier.lookup_many(question, &missing).await.into_iter();
        let mut kept = Vec::new();
        for (at, slot) in found.iter_mut().filter(|(_, s)| wanted(s)) {
            let Some(segment) = from_tier.next().flatten() else {
                continue;
            };
            if !stale_too && !segment.deadlines.is_fresh(fresh_at) {
                continue;
            }
            kept.push((*at, segment.clone()));
            *slot = Slot::Fresh(segment);
        }
        self.memory.publish(question, &kept).await;
        kept.len() as u64
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
