//! What was asked before: answers stored already serialized, by canonical key and time
//! bucket, with request coalescing and stale serving.
//!
//! A hit costs one lookup and one write of stored bytes.

pub mod coalesce;
mod freshness;
mod key;
mod l2;
pub mod segments;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use moka::Expiry;
use moka::future::Cache;
use prometheus::IntCounter;
use serde::Serialize;
use utoipa::ToSchema;

pub use coalesce::Coalescer;
use coalesce::Joined;
pub use freshness::{Deadlines, Freshness, Lifetime};
pub use key::CacheKey;

use crate::error::ApiError;
use crate::query::MetricQuery;
use crate::redis::SharedState;
use crate::settings::CacheSettings;
use crate::telemetry::GatewayMetrics;
use crate::upstream::UpstreamError;

/// A stored answer.
#[derive(Debug)]
pub struct Entry {
    /// The JSON body.
    pub body: Bytes,
    /// The same body gzip-compressed, when it is large enough to be worth it.
    pub gzip: Option<Bytes>,
    /// Strong validator of `body`, quoted.
    pub etag: String,
    pub deadlines: Deadlines,
    /// How long the appliance took to produce it.
    pub upstream_ms: u64,
}

/// How an answer was obtained, for `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Fresh from the store.
    Hit,
    /// Fetched: this request started the fetch, or (`collapsed`) joined one in flight.
    Miss { collapsed: bool },
    /// Fetched because the caller said `no-cache`.
    Forced { collapsed: bool },
    /// Served stale at once while one background request refreshes it.
    StaleWhileRevalidate,
    /// Served stale because the appliance failed with `status`.
    StaleIfError { status: u16 },
}

pub struct Answer {
    pub entry: Arc<Entry>,
    pub route: Route,
}

/// What the caller's `Cache-Control` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    pub no_cache: bool,
    pub only_if_cached: bool,
}

/// The cache's events, kept in the gateway's Prometheus series (resolved once, so counting
/// costs one atomic add).
struct Counters {
    hits: IntCounter,
    misses: IntCounter,
    collapsed: IntCounter,
    stale: IntCounter,
    fetches: AtomicU64,
}

impl Counters {
    fn new(metrics: &GatewayMetrics) -> Self {
        let event = |name: &str| metrics.cache_events.with_label_values(&[name]);
        Self {
            hits: event("hit"),
            misses: event("miss"),
            collapsed: event("collapsed"),
            stale: event("stale"),
            fetches: AtomicU64::new(0),
        }
    }
}

/// `GET /internal/cache`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheReport {
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    /// Requests that waited for another's fetch instead of starting their own.
    pub collapsed: u64,
    pub stale: u64,
    /// Fetches started (each one appliance round, or one per device).
    pub fetches: u64,
    /// hits ÷ (hits + misses + stale), 0 when nothing was asked.
    pub hit_ratio: f64,
    /// Bytes of the index from raw query strings to entries (its own budget of 16 MiB).
    pub index_bytes: u64,
    /// The segment cache below it, when enabled.
    pub segments: Option<segments::SegmentReport>,
}

/// What moka keeps per entry besides the key and value (its hash-table node, access and write
/// order nodes, expiry timer node, the `Arc`s around key and value) and the allocator's
/// rounding of the entry's allocations. Measured with `cargo bench --bench cache_memory`, which
/// sets the live heap against what the budgets count.
pub(crate) const ENTRY_OVERHEAD: usize = 256;

// What `DELETE /internal/cache` removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Purged {
    /// Answers removed.
    pub purged: u64,
    /// Segments removed from the segment cache below (whose points would otherwise answer
    /// the same questions again without asking the appliance).
    pub segments: u64,
}

/// Bytes the raw-query index may hold (it only points into the store).
const EXACT_MAX_BYTES: u64 = 16 << 20;

/// foldhash, seeded per process: hashing keys is a visible part of a cache hit, and SipHash's
/// extra strength buys nothing against randomly seeded buckets here.
pub(crate) type Hasher = foldhash::fast::RandomState;
type Store = Cache<CacheKey, Arc<Entry>, Hasher>;

struct KeepUntil;

impl Expiry<CacheKey, Arc<Entry>> for KeepUntil {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        entry: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(entry.deadlines.keep_for())
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        entry: &Arc<Entry>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<std::time::Duration>,
    ) -> Option<std::time::Duration> {
        Some(entry.deadlines.keep_for())
    }
}

pub struct ResponseCache {
    store: Store,
    /// Raw query string → key, for historic questions only: their key no longer depends on
    /// the clock, so a repeated identical request skips parsing and validation.
    exact: Cache<Arc<str>, CacheKey, Hasher>,
    inflight: Coalescer<CacheKey, Arc<Entry>>,
    freshness: Freshness,
    identity: Arc<str>,
    gzip_min: usize,
    max_bytes: u64,
    counters: Arc<Counters>,
    shared: Option<Arc<SharedState>>,
}

impl ResponseCache {
    pub fn new(
        settings: &CacheSettings,
        identity: &str,
        metrics: &GatewayMetrics,
        shared: Option<Arc<SharedState>>,
    ) -> Self {
        let store = Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|key: &CacheKey, entry: &Arc<Entry>| {
                let bytes = ENTRY_OVERHEAD
                    + key.weight()
                    + entry.body.len()
                    + entry.gzip.as_ref().map_or(0, Bytes::len)
                    + entry.etag.capacity()
                    + std::mem::size_of::<Entry>();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .expire_after(KeepUntil)
            .build_with_hasher(foldhash::fast::RandomState::default());
        let exact = Cache::builder()
            .max_capacity(EXACT_MAX_BYTES)
            .weigher(|raw: &Arc<str>, key: &CacheKey| {
                u32::try_from(ENTRY_OVERHEAD + raw.len() + key.weight()).unwrap_or(u32::MAX)
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            store,
            exact,
            inflight: Coalescer::default(),
            freshness: Freshness::new(settings),
            identity: Arc::from(identity),
            gzip_min: settings.gzip_min_bytes,
            max_bytes: settings.max_bytes,
            counters: Arc::new(Counters::new(metrics)),
            shared,
        }
    }

    /// A fresh answer for exactly this query string, if one was given before: the fast path,
    /// taken before parsing. Only historic questions are indexed this way.
    pub async fn exact_hit(
        &self,
        raw_query: &str,
        now: i64,
        directives: Directives,
    ) -> Option<Answer> {
        if directives.no_cache {
            return None;
        }
        let key = self.exact.get(raw_query).await?;
        let entry = self.store.get(&key).await?;
        if !entry.deadlines.is_fresh(now) {
            return None;
        }
        self.counters.hits.inc();
        Some(Answer {
            entry,
            route: Route::Hit,
        })
    }

    /// Answers `query` (which `raw_query` spelled) from the store, or by running `fetch`
    /// (coalesced), which returns the serialized JSON body.
    pub async fn answer<F, Fut>(
        &self,
        raw_query: &str,
        query: MetricQuery,
        now: i64,
        directives: Directives,
        fetch: F,
    ) -> Result<Answer, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes, UpstreamError>> + Send + 'static,
    {
        let lifetime = self.freshness.lifetime(&query, now);
        let key = CacheKey::new(self.identity.clone(), Arc::new(query), lifetime);
        let answer = self
            .lookup_or_fetch(key.clone(), lifetime, now, directives, fetch)
            .await?;
        if lifetime == Lifetime::Historic && answer.entry.deadlines.is_fresh(now) {
            self.exact.insert(raw_query.into(), key).await;
        }
        Ok(answer)
    }

    async fn lookup_or_fetch<F, Fut>(
        &self,
        key: CacheKey,
        lifetime: Lifetime,
        now: i64,
        directives: Directives,
        fetch: F,
    ) -> Result<Answer, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes, UpstreamError>> + Send + 'static,
    {
        let c = &self.counters;

        let stored = match self.store.get(&key).await {
            Some(e) => Some(e),
            None => match key.previous_bucket() {
                Some(previous) => self.store.get(&previous).await,
                None => None,
            },
        };
        if !directives.no_cache {
            if let Some(entry) = &stored {
                if entry.deadlines.is_fresh(now) {
                    c.hits.inc();
                    return Ok(Answer {
                        entry: entry.clone(),
                        route: Route::Hit,
                    });
                }
                if now < entry.deadlines.stale_while_revalidate_until {
                    c.stale.inc();
                    // Refresh once in the background; a refresh already running is joined.
                    let _ = self.start(key, now, lifetime, directives, fetch);
                    return Ok(Answer {
                        entry: entry.clone(),
                        route: Route::StaleWhileRevalidate,
                    });
                }
            }
            if directives.only_if_cached {
                return Err(ApiError::NotCached);
            }
        }
        let (shared, collapsed) = match self.start(key, now, lifetime, directives, fetch) {
            Joined::Started(s) => (s, false),
            Joined::Collapsed(s) => (s, true),
        };
        if collapsed {
            c.collapsed.inc();
        } else {
            c.misses.inc();
        }
        match shared.await {
            Ok(entry) => Ok(Answer {
                entry,
                route: if directives.no_cache {
                    Route::Forced { collapsed }
                } else {
                    Route::Miss { collapsed }
                },
            }),
            Err(error) => match stored {
                Some(entry) if now < entry.deadlines.stale_if_error_until => {
                    c.stale.inc();
                    let status = ApiError::Upstream(error).problem().status;
                    Ok(Answer {
                        entry,
                        route: Route::StaleIfError { status },
                    })
                }
                _ => Err(ApiError::Upstream(error)),
            },
        }
    }

    /// Starts (or joins) the fetch for `key`. The fetched body is stored before the fetch
    /// leaves the in-flight map, so later askers find it in the store.
    fn start<F, Fut>(
        &self,
        key: CacheKey,
        asked_at: i64,
        lifetime: Lifetime,
        directives: Directives,
        fetch: F,
    ) -> Joined<Arc<Entry>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes, UpstreamError>> + Send + 'static,
    {
        let store = self.store.clone();
        let freshness = self.freshness.clone();
        let gzip_min = self.gzip_min;
        let counters = self.counters.clone();
        let shared = self.shared.clone();
        let body = fetch();
        let task_key = key.clone();
        self.inflight.join_or_start(key, async move {
            let accept = l2::Accept {
                asked_at,
                only_newer: directives.no_cache,
            };
            // A fetch that finished between our lookup and our turn here already answered.
            if let Some(entry) = store.get(&task_key).await
                && accept.accepts(&entry.deadlines)
            {
                return Ok(entry);
            }
            // With Redis, another replica may have the answer, or be fetching it.
            let shared = shared.filter(|s| s.is_up());
            let shared_id = shared.as_ref().map(|_| task_key.shared_id());
            let mut lock = None;
            if let (Some(s), Some(id)) = (&shared, &shared_id) {
                match l2::take_turn(s, id, accept, gzip_min).await {
                    l2::Turn::Answered(entry) => {
                        store.insert(task_key, entry.clone()).await;
                        return Ok(entry);
                    }
                    l2::Turn::Fetch { lock: held } => lock = held,
                }
            }
            counters.fetches.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let body = match body.await {
                Ok(body) => body,
                Err(e) => {
                    if let (Some(s), Some(l)) = (&shared, &lock) {
                        l2::release(s, l).await;
                    }
                    return Err(e);
                }
            };
            let upstream_ms = started.elapsed().as_millis() as u64;
            let entry = Arc::new(Entry {
                gzip: (body.len() >= gzip_min).then(|| gzip(&body)).flatten(),
                etag: etag(&body),
                deadlines: freshness.deadlines(lifetime, crate::query::now_ms()),
                upstream_ms,
                // Serializers grow their buffers by doubling; an entry keeps exactly its bytes.
                body: Bytes::copy_from_slice(&body),
            });
            store.insert(task_key, entry.clone()).await;
            if let (Some(s), Some(id)) = (&shared, &shared_id) {
                l2::publish(s, id, &entry).await;
                if let Some(l) = &lock {
                    l2::release(s, l).await;
                }
            }
            Ok(entry)
        })
    }

    pub async fn purge(&self, metric: Option<&str>, did: Option<u64>) -> u64 {
        self.store.run_pending_tasks().await;
        if metric.is_none() && did.is_none() {
            let n = self.store.entry_count();
            self.store.invalidate_all();
            self.exact.invalidate_all();
            self.store.run_pending_tasks().await;
            return n;
        }
        let mut purged = 0;
        for (key, _) in self.store.iter() {
            let q = key.query();
            let metric_matches = metric.is_none_or(|m| q.metrics.iter().any(|x| x == m));
            let did_matches = did.is_none_or(|d| q.devices.contains(&d));
            if metric_matches && did_matches {
                self.store.invalidate(&*key).await;
                purged += 1;
            }
        }
        self.store.run_pending_tasks().await;
        purged
    }

    pub async fn report(&self) -> CacheReport {
        self.store.run_pending_tasks().await;
        self.exact.run_pending_tasks().await;
        let c = &self.counters;
        let hits = c.hits.get();
        let misses = c.misses.get();
        let stale = c.stale.get();
        let asked = hits + misses + stale;
        CacheReport {
            entries: self.store.entry_count(),
            bytes: self.store.weighted_size(),
            max_bytes: self.max_bytes,
            hits,
            misses,
            collapsed: c.collapsed.get(),
            stale,
            fetches: c.fetches.load(Ordering::Relaxed),
            hit_ratio: if asked == 0 {
                0.0
            } else {
                hits as f64 / asked as f64
            },
            index_bytes: self.exact.weighted_size(),
            segments: None,
        }
    }
}

fn etag(body: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(body);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

pub(crate) fn gzip(body: &[u8]) -> Option<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(body).ok()?;
    encoder.finish().ok().map(|mut v| {
        v.shrink_to_fit();
        Bytes::from(v)
    })
}
