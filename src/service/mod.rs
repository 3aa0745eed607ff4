//! The use case: a metric-data question in, an answer out. Owns the order of the steps (the
//! raw-query index, parsing, the caches, the fetch, rendering) and knows nothing of HTTP:
//! handlers extract a [`MetricRequest`] and write the [`Served`] answer.

pub mod fanout;
pub mod promql;

pub use promql::{Evaluated, PromqlError};

use std::sync::Arc;

use crate::cache::segments::{Assembled, Reuse, SegmentCache};
use crate::cache::{
    CacheError, CacheReport, ClusterPurges, Completeness, Directives, Entry, Fetched, PurgeReach,
    Purged, ResponseCache, Route,
};
pub use crate::cache::{Origin, Sourcing};
use crate::catalog::Catalog;
use crate::clock::Clock;
pub use crate::fetch::Lane;
use crate::fetch::{FetchError, MetricSource};
use crate::normalize::{Device, MetricData};
use crate::prefetch::Prefetcher;
use crate::query::{self, Dialect, FieldError, MetricQuery, PurgeFilter, Representation};
use crate::render;
use crate::settings::Settings;
use crate::telemetry::{GatewayMetrics, trace};

/// One caller's question, as the HTTP layer extracted it.
pub struct MetricRequest<'a> {
    pub dialect: Dialect,
    pub raw_query: &'a str,
    pub representation: Representation,
    pub directives: Directives,
    /// The caller's `traceparent`, continued towards the appliance on a miss.
    pub traceparent: Option<&'a str>,
}

/// The answer, and how it was obtained.
pub struct Served {
    pub entry: Arc<Entry>,
    pub route: Route,
    /// The fetch's error, when a stale answer is served because of it.
    pub failure: Option<FetchError>,
    /// When the answer was ready (for `Age` and freshness left).
    pub now_ms: i64,
    /// How this request's own fetch got its data (`None` when it ran none: a hit, or it
    /// waited for another request's fetch).
    pub sourcing: Option<Sourcing>,
}

/// A fetch's sourcing, from what the segment cache did for it.
fn sourcing_of(assembled: &Assembled) -> Sourcing {
    let origin = match (assembled.fetched.is_empty(), assembled.prefetched) {
        (false, _) => Origin::Appliance,
        (true, false) => Origin::Assembled,
        (true, true) => Origin::Prefetched,
    };
    Sourcing {
        fetched: assembled.fetched.clone(),
        origin,
        archived: assembled.archived,
    }
}

/// A direct fetch of `query` at `now`.
fn direct(query: &MetricQuery, now: i64) -> Sourcing {
    Sourcing {
        fetched: query
            .starttime()
            .map(|start| (start, query.endtime().unwrap_or(now)))
            .into_iter()
            .collect(),
        origin: Origin::Appliance,
        archived: false,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the query is invalid")]
    InvalidQuery(Vec<FieldError>),
    #[error("not in the cache (only-if-cached)")]
    NotCached,
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

pub struct MetricService {
    clock: Clock,
    catalog: Arc<Catalog>,
    limits: crate::settings::QueryLimits,
    source: MetricSource,
    cache: ResponseCache<FetchError>,
    segments: Option<Arc<SegmentCache<FetchError>>>,
    prefetcher: Option<Arc<Prefetcher>>,
    /// With Redis: purges announced to, and followed from, the other replicas.
    purges: Option<Arc<ClusterPurges>>,
    /// Devices PromQL listings name before any answer has (`prometheus.devices`).
    configured_devices: Vec<u64>,
    max_samples: usize,
}

impl MetricService {
    pub fn new(
        settings: &Settings,
        source: MetricSource,
        catalog: Arc<Catalog>,
        metrics: &GatewayMetrics,
        shared: Option<Arc<crate::redis::SharedState>>,
        clock: Clock,
    ) -> Self {
        let identity = source.client().identity();
        let segments = settings.segments.enabled.then(|| {
            Arc::new(
                SegmentCache::new(&settings.segments, &settings.cache, &identity)
                    .with_shared(shared.clone(), clock.clone())
                    .with_disk(
                        settings.cache.dir.as_deref(),
                        settings.cache.disk_max_bytes.get(),
                        settings.cache.archive,
                        clock.now_ms(),
                    ),
            )
        });
        let prefetcher = segments
            .clone()
            .filter(|_| settings.segments.prefetch)
            .map(|segments| {
                Arc::new(Prefetcher::new(
                    settings,
                    segments,
                    source.clone(),
                    metrics,
                    clock.clone(),
                ))
            });
        Self {
            cache: ResponseCache::new(
                &settings.cache,
                &identity,
                metrics,
                shared.clone(),
                clock.clone(),
            ),
            segments,
            prefetcher,
            purges: shared.map(|s| Arc::new(ClusterPurges::new(s))),
            limits: settings.query.clone(),
            configured_devices: settings.prometheus.devices.clone(),
            max_samples: settings.prometheus.max_samples.get(),
            source,
            catalog,
            clock,
        }
    }

    /// The purges other replicas announce, for the task that follows them (`None` without
    /// Redis).
    pub fn cluster_purges(&self) -> Option<Arc<ClusterPurges>> {
        self.purges.clone()
    }

    /// A fresh answer given before to exactly this question (the same query string, in the
    /// same representation), from memory and without waiting: the first step of
    /// [`MetricService::answer`], which handlers take on their own so that a hit needs no
    /// future (most requests are hits).
    pub fn hit(&self, req: &MetricRequest<'_>) -> Option<Served> {
        let now = self.clock.now_ms();
        let entry = self.cache.exact_hit(
            req.representation.format,
            req.raw_query,
            now,
            req.directives,
        )?;
        Some(Served {
            entry,
            route: Route::Hit,
            failure: None,
            now_ms: now,
            sourcing: None,
        })
    }

    /// Whether `req` is a valid question for this appliance (its limits, its catalog), without
    /// asking anything: a fan-out checks every appliance before asking any.
    pub fn check(&self, req: &MetricRequest<'_>) -> Result<(), ServiceError> {
        let names = self.catalog.names();
        query::parse_in(
            req.dialect,
            req.raw_query,
            &self.limits,
            &names,
            self.clock.now_ms(),
        )
        .map(drop)
        .map_err(ServiceError::InvalidQuery)
    }

    /// The answer to `req`, asked by the caller in `lane` (whose turn its appliance requests
    /// take when callers queue for the appliance's budget).
    pub async fn answer(
        &self,
        req: MetricRequest<'_>,
        lane: &Lane,
    ) -> Result<Served, ServiceError> {
        if let Some(served) = self.hit(&req) {
            return Ok(served);
        }
        let now = self.clock.now_ms();
        let format = req.representation.format;
        let names = self.catalog.names();
        let query = query::parse_in(req.dialect, req.raw_query, &self.limits, &names, now)
            .map_err(ServiceError::InvalidQuery)?;
        if let Some(prefetcher) = &self.prefetcher {
            prefetcher.note(&query, now);
        }
        let reuse = if req.directives.no_cache {
            Reuse::Refetch
        } else {
            Reuse::Cached
        };
        let asked = query.clone();
        let fetch = move || {
            // A new hop of the caller's trace, made only when the appliance is asked.
            let traceparent = trace::upstream_traceparent(req.traceparent);
            let sourced = self.sourced(asked, reuse, now, traceparent, lane.clone());
            async move {
                let (data, sourcing) = sourced.await?;
                Ok(Fetched {
                    body: render::render(format, &data)?,
                    completeness: Completeness::of(&data),
                    left_out: data.warnings.len(),
                    sourcing,
                })
            }
        };
        let answer = self
            .cache
            .answer(format, req.raw_query, query, now, req.directives, fetch)
            .await
            .map_err(|e| match e {
                CacheError::NotCached => ServiceError::NotCached,
                CacheError::Fetch(e) => ServiceError::Fetch(e),
            })?;
        // Only this request's own fetch says how it sourced its data.
        let sourcing = matches!(
            answer.route,
            Route::Miss { collapsed: false } | Route::Forced { collapsed: false }
        )
        .then(|| answer.entry.sourcing.clone());
        Ok(Served {
            entry: answer.entry,
            route: answer.route,
            failure: answer.failure,
            now_ms: self.clock.now_ms(),
            sourcing,
        })
    }

    /// The data for `query` and how it was got: from the segment cache, which fetches only
    /// what it lacks (coalesced, within the appliance's budget), or straight from the
    /// appliance when segments are off or the query has no range. Owns no borrow of `self`,
    /// so a fetch can outlive the request that started it.
    fn sourced(
        &self,
        query: MetricQuery,
        reuse: Reuse,
        now: i64,
        traceparent: String,
        lane: Lane,
    ) -> impl Future<Output = Result<(MetricData, Sourcing), FetchError>> + Send + 'static {
        let source = self.source.clone();
        let segments = self.segments.clone();
        let prefetcher = self.prefetcher.clone();
        async move {
            if let Some(segments) = segments {
                let by_range = {
                    let source = source.clone();
                    let traceparent = traceparent.clone();
                    let lane = lane.clone();
                    move |ranged: MetricQuery| {
                        let source = source.clone();
                        let traceparent = Some(traceparent.clone());
                        let lane = lane.clone();
                        async move { source.fetch(&ranged, now, traceparent, &lane).await }
                    }
                };
                if let Some(assembled) = segments.assemble(&query, now, reuse, by_range).await {
                    let assembled = assembled?;
                    let sourcing = sourcing_of(&assembled);
                    if let (Origin::Prefetched, Some(p)) = (sourcing.origin, &prefetcher) {
                        p.count_hit();
                    }
                    return Ok((assembled.data, sourcing));
                }
            }
            let data = source.fetch(&query, now, Some(traceparent), &lane).await?;
            Ok((data, direct(&query, now)))
        }
    }

    /// When the prefetcher last had nothing left to do (`None` when prefetching is off), after
    /// waking it to look at the clock: a benchmark on a manual clock waits for this to reach
    /// the time it set.
    pub fn prefetch_settled_at(&self) -> Option<i64> {
        self.prefetcher.as_ref().map(|p| {
            p.nudge();
            p.settled_at()
        })
    }

    /// Prefetches hot rolling windows until the gateway stops (returns at once when
    /// prefetching is off).
    pub async fn run_prefetch(&self) {
        if let Some(prefetcher) = self.prefetcher.clone() {
            prefetcher.run().await;
        }
    }

    /// The normalized answer to `query`, for callers that shape it themselves (the PromQL
    /// use case), asked by the caller in `lane`: see [`MetricService::sourced`].
    pub async fn data(
        &self,
        query: &MetricQuery,
        traceparent: Option<&str>,
        lane: &Lane,
    ) -> Result<MetricData, FetchError> {
        let now = self.clock.now_ms();
        if let Some(prefetcher) = &self.prefetcher {
            prefetcher.note(query, now);
        }
        let traceparent = trace::upstream_traceparent(traceparent);
        let (data, _) = self
            .sourced(query.clone(), Reuse::Cached, now, traceparent, lane.clone())
            .await?;
        Ok(data)
    }

    /// The devices the segment cache's answers name, as described there.
    pub fn seen_devices(&self) -> Vec<Device> {
        self.segments
            .as_ref()
            .map_or_else(Vec::new, |segments| segments.devices())
    }

    /// Puts the TTLs of `cache` in force in both caches (a configuration reload).
    pub fn reload_ttls(&self, cache: &crate::settings::CacheSettings) {
        self.cache.reload_ttls(cache);
        if let Some(segments) = &self.segments {
            segments.reload_ttls(cache);
        }
    }

    /// Both caches' statistics.
    pub async fn cache_report(&self) -> CacheReport {
        let mut report = self.cache.report().await;
        if let Some(segments) = &self.segments {
            report.segments = Some(segments.report().await);
        }
        report.purge_generation = self.purges.as_ref().and_then(|p| p.applied());
        report
    }

    /// Both caches, purged alike: everything, or what `filter` names; here only, or (for
    /// [`PurgeReach::Cluster`]) in Redis too, announced to every other replica.
    pub async fn purge(&self, filter: &PurgeFilter, reach: PurgeReach) -> Purged {
        let segments = match &self.segments {
            Some(s) => s.purge(filter, reach).await,
            None => 0,
        };
        let purged = self.cache.purge(filter, reach).await;
        let generation = match (&self.purges, reach) {
            (Some(p), PurgeReach::Cluster) => p.announce(filter).await,
            _ => None,
        };
        Purged {
            purged,
            segments,
            generation,
        }
    }
}
