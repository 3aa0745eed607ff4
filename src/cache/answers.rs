//! The response cache: whole answers by [`CacheKey`], with a raw-query index for repeated
//! identical questions, coalescing, stale serving, and (with Redis) a tier shared by replicas.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use moka::sync::Cache;
use prometheus::IntCounter;

use super::entry::{Answer, CacheError, Directives, Entry, Fetched, Route, gzip};
use super::freshness::{Freshness, Lifetime};
use super::key::CacheKey;
use super::lock::Turn;
use super::memory::{ENTRY_OVERHEAD, Hasher, MemoryStore, MemoryValue};
use super::purges::PurgeReach;
use super::redis::{Accept, RedisAnswers};
use super::report::CacheReport;
use super::store::Store;
use crate::clock::Clock;
use crate::coalesce::{Coalescer, Joined, TaskFailed};
use crate::query::{Format, MetricQuery, PurgeFilter};
use crate::redis::SharedState;
use crate::settings::CacheSettings;
use crate::telemetry::GatewayMetrics;
use crate::telemetry::sharded::ShardedCounter;

/// The cache's events, kept in the gateway's Prometheus series (resolved once, so counting
/// costs one atomic add).
struct Counters {
    /// Every hit, on every worker: sharded, so counting it costs no shared cache line.
    hits: Arc<ShardedCounter>,
    misses: IntCounter,
    shared_hits: IntCounter,
    collapsed: IntCounter,
    stale: IntCounter,
    fetches: AtomicU64,
}

impl Counters {
    fn new(metrics: &GatewayMetrics) -> Self {
        let event = |name: &str| metrics.cache_events.vec().with_label_values(&[name]);
        Self {
            hits: metrics.cache_events.sharded(&["hit"]),
            misses: event("miss"),
            shared_hits: event("shared_hit"),
            collapsed: event("collapsed"),
            stale: event("stale"),
            fetches: AtomicU64::new(0),
        }
    }
}

impl MemoryValue for Arc<Entry> {
    fn bytes(&self) -> usize {
        ENTRY_OVERHEAD
            + self.body.len()
            + self.gzip.as_ref().map_or(0, Bytes::len)
            + self.etag.capacity()
            + std::mem::size_of::<Entry>()
    }

    fn keep_for(&self) -> std::time::Duration {
        self.deadlines.keep_for()
    }
}

/// Bytes the raw-query index may hold (it only points into the store).
const EXACT_MAX_BYTES: u64 = 16 << 20;

/// Raw query string → the stored entry, one index per representation, so a lookup borrows
/// the caller's text instead of building a key, and takes one lookup instead of two.
type ExactIndex = Cache<Arc<str>, Indexed, Hasher>;

/// What the raw-query index points at. Weak, so the store alone decides how long an entry
/// lives (its byte budget, its deadlines): an entry the store dropped or replaced can no
/// longer be reached here. The purge generation makes a purge reach entries a response in
/// flight still holds.
#[derive(Clone)]
struct Indexed {
    entry: std::sync::Weak<Entry>,
    generation: u64,
}

/// How many raw-query hits each thread keeps in front of the shared index.
const RECENT_HITS: usize = 8;

/// One of this thread's recent raw-query hits: which cache and representation it was for,
/// the index's write count when it was taken (any write since retires it), where it led, and
/// this thread's own copy of that answer.
struct RecentHit {
    cache: u64,
    slot: usize,
    writes: u64,
    raw: Box<str>,
    indexed: Indexed,
    /// Made when the question comes back to this thread.
    copy: Option<Arc<Entry>>,
}

/// This thread's recent raw-query hits. A hot question is answered from here without writing
/// memory other workers write: the shared index records every read (a clock read and shared
/// writes), and taking the stored entry bumps a reference count every worker's core bumps.
/// So a thread answers a question it sees again with its own copy, as long as the stored
/// entry lives (checked with a plain load). The store's byte budget does not count the
/// copies: at most [`RECENT_HITS`] answers per worker thread.
#[derive(Default)]
struct RecentHits {
    hits: Vec<RecentHit>,
    next: usize,
}

impl RecentHits {
    fn find(&mut self, cache: u64, slot: usize, writes: u64, raw: &str) -> Option<&mut RecentHit> {
        self.hits
            .iter_mut()
            .find(|h| h.cache == cache && h.slot == slot && h.writes == writes && *h.raw == *raw)
    }

    fn remember(&mut self, hit: RecentHit) {
        if self.hits.len() < RECENT_HITS {
            self.hits.push(hit);
        } else {
            self.hits[self.next] = hit;
            self.next = (self.next + 1) % RECENT_HITS;
        }
    }
}

thread_local! {
    static RECENT: std::cell::RefCell<RecentHits> = std::cell::RefCell::default();
}

/// Tells response caches apart in [`RECENT`] (tests run several gateways in one process).
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(0);

fn format_slot(format: Format) -> usize {
    match format {
        Format::Json => 0,
        Format::Csv => 1,
        Format::Sdk => 2,
        Format::Appliance => 3,
    }
}

pub struct ResponseCache<E> {
    store: Arc<MemoryStore<CacheKey, Arc<Entry>>>,
    /// For historic questions only: their key no longer depends on the clock, so a repeated
    /// identical request skips parsing and validation.
    exact: [ExactIndex; 4],
    /// Bumped by every purge: index entries from before it are ignored.
    purges: AtomicU64,
    /// Writes to the raw-query index: each retires every thread's recent hits.
    index_writes: AtomicU64,
    /// This cache's name in every thread's recent hits.
    id: u64,
    inflight: Coalescer<CacheKey, Arc<Entry>, E>,
    freshness: Freshness,
    clock: Clock,
    identity: Arc<str>,
    gzip_min: usize,
    counters: Arc<Counters>,
    shared: Option<RedisAnswers>,
}

impl<E> ResponseCache<E>
where
    E: From<TaskFailed> + Clone + Send + Sync + 'static,
{
    pub fn new(
        settings: &CacheSettings,
        identity: &str,
        metrics: &GatewayMetrics,
        shared: Option<Arc<SharedState>>,
        clock: Clock,
    ) -> Self {
        let exact = || {
            Cache::builder()
                .max_capacity(EXACT_MAX_BYTES / 4)
                .weigher(|raw: &Arc<str>, _: &Indexed| {
                    u32::try_from(ENTRY_OVERHEAD + raw.len()).unwrap_or(u32::MAX)
                })
                .build_with_hasher(Hasher::default())
        };
        Self {
            store: Arc::new(MemoryStore::new(settings.max_bytes.get())),
            exact: [exact(), exact(), exact(), exact()],
            purges: AtomicU64::new(0),
            index_writes: AtomicU64::new(0),
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            inflight: Coalescer::default(),
            freshness: Freshness::new(settings),
            identity: Arc::from(identity),
            gzip_min: settings.gzip_min_bytes,
            counters: Arc::new(Counters::new(metrics)),
            shared: shared.map(|s| RedisAnswers::new(s, settings.gzip_min_bytes, clock.clone())),
            clock,
        }
    }

    /// A fresh answer for exactly this query string in this representation, if one was given
    /// before: the fast path, taken before parsing. Only historic questions are indexed.
    /// Synchronous (memory only), so a hit is answered without a future of its own.
    pub fn exact_hit(
        &self,
        format: Format,
        raw_query: &str,
        now: i64,
        directives: Directives,
    ) -> Option<Arc<Entry>> {
        if directives.no_cache {
            return None;
        }
        let slot = format_slot(format);
        let generation = self.purges.load(Ordering::Acquire);
        let writes = self.index_writes.load(Ordering::Acquire);
        let usable = |indexed: &Indexed| {
            if indexed.generation != generation {
                return None;
            }
            indexed
                .entry
                .upgrade()
                .filter(|entry| entry.deadlines.is_fresh(now))
        };
        // A question this thread answered recently: from its own copy once it was asked
        // twice (a copy costs a body's worth of memory and copying, worth it for hot ones).
        let recent = RECENT.with_borrow_mut(|r| {
            let hit = r.find(self.id, slot, writes, raw_query)?;
            if hit.indexed.generation != generation {
                return None;
            }
            match &hit.copy {
                Some(copy) => (hit.indexed.entry.strong_count() > 0
                    && copy.deadlines.is_fresh(now))
                .then(|| copy.clone()),
                None => {
                    let copy = Arc::new(usable(&hit.indexed)?.thread_copy());
                    hit.copy = Some(copy.clone());
                    Some(copy)
                }
            }
        });
        let entry = match recent {
            Some(entry) => entry,
            None => {
                let indexed = self.exact[slot].get(raw_query)?;
                let entry = usable(&indexed)?;
                RECENT.with_borrow_mut(|r| {
                    r.remember(RecentHit {
                        cache: self.id,
                        slot,
                        writes,
                        raw: raw_query.into(),
                        indexed,
                        copy: None,
                    })
                });
                entry
            }
        };
        self.counters.hits.inc();
        Some(entry)
    }

    /// Answers `query` in `format` (which `raw_query` spelled) from the store, or by running
    /// `fetch` (coalesced), which returns the rendered body and its completeness.
    pub async fn answer<F, Fut>(
        &self,
        format: Format,
        raw_query: &str,
        query: MetricQuery,
        now: i64,
        directives: Directives,
        fetch: F,
    ) -> Result<Answer<E>, CacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Fetched, E>> + Send + 'static,
    {
        let lifetime = self.freshness.lifetime(&query, now);
        let key = CacheKey::new(self.identity.clone(), Arc::new(query), format, lifetime);
        // Read before the lookup: a purge while it runs leaves this index entry outdated.
        let generation = self.purges.load(Ordering::Acquire);
        let answer = self
            .lookup_or_fetch(key, lifetime, now, directives, fetch)
            .await?;
        if lifetime == Lifetime::Historic
            && answer.entry.deadlines.is_fresh(now)
            && answer.failure.is_none()
        {
            let indexed = Indexed {
                entry: Arc::downgrade(&answer.entry),
                generation,
            };
            self.exact[format_slot(format)].insert(raw_query.into(), indexed);
            self.index_writes.fetch_add(1, Ordering::AcqRel);
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
    ) -> Result<Answer<E>, CacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Fetched, E>> + Send + 'static,
    {
        let c = &self.counters;
        let stored = match self.store.lookup(&key).await {
            Some(e) => Some(e),
            None => match key.previous_bucket() {
                Some(previous) => self.store.lookup(&previous).await,
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
                        failure: None,
                    });
                }
                if now < entry.deadlines.stale_while_revalidate_until {
                    c.stale.inc();
                    // Refresh once in the background; a refresh already running is joined.
                    let _ = self.start(key, now, lifetime, directives, fetch);
                    return Ok(Answer {
                        entry: entry.clone(),
                        route: Route::StaleWhileRevalidate,
                        failure: None,
                    });
                }
            }
            if directives.only_if_cached {
                return Err(CacheError::NotCached);
            }
        }
        let joined = self.start(key, now, lifetime, directives, fetch);
        let collapsed = joined.is_collapsed();
        let result = joined.into_fetch().await;
        // Counted once the answer is in: one found in Redis is a (shared) hit, not a miss.
        if result.as_ref().is_ok_and(|e| e.shared) {
            c.shared_hits.inc();
        } else if collapsed {
            c.collapsed.inc();
        } else {
            c.misses.inc();
        }
        match result {
            Ok(entry) => Ok(Answer {
                route: if entry.shared {
                    Route::SharedHit
                } else if directives.no_cache {
                    Route::Forced { collapsed }
                } else {
                    Route::Miss { collapsed }
                },
                entry,
                failure: None,
            }),
            Err(error) => match stored {
                Some(entry) if now < entry.deadlines.stale_if_error_until => {
                    c.stale.inc();
                    Ok(Answer {
                        entry,
                        route: Route::StaleIfError,
                        failure: Some(error),
                    })
                }
                _ => Err(CacheError::Fetch(error)),
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
    ) -> Joined<Arc<Entry>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Fetched, E>> + Send + 'static,
    {
        let store = self.store.clone();
        let freshness = self.freshness.clone();
        let clock = self.clock.clone();
        let gzip_min = self.gzip_min;
        let counters = self.counters.clone();
        let shared = self.shared.clone().filter(RedisAnswers::is_up);
        let body = fetch();
        let task_key = key.clone();
        self.inflight.join_or_start(key, async move {
            let accept = Accept {
                asked_at,
                only_newer: directives.no_cache,
            };
            // A fetch that finished between our lookup and our turn here already answered.
            if let Some(entry) = store.lookup(&task_key).await
                && accept.accepts(&entry.deadlines)
            {
                return Ok(entry);
            }
            // With Redis, another replica may have the answer, or be fetching it.
            let mut lock = None;
            if let Some(s) = &shared {
                match s.take_turn(&task_key, accept).await {
                    Turn::Found(entry) => {
                        store.insert(task_key, entry.clone()).await;
                        return Ok(entry);
                    }
                    Turn::Fetch(held) => lock = held,
                }
            }
            counters.fetches.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let result = body.await;
            let entry = result.map(|fetched| {
                let body = fetched.body;
                Arc::new(Entry {
                    gzip: (body.len() >= gzip_min).then(|| gzip(&body)).flatten(),
                    etag: etag(&body),
                    deadlines: freshness.deadlines(lifetime, fetched.completeness, clock.now_ms()),
                    upstream_ms: started.elapsed().as_millis() as u64,
                    // Serializers grow their buffers by doubling; an entry keeps exactly its
                    // bytes.
                    body: Bytes::copy_from_slice(&body),
                    left_out: fetched.left_out,
                    shared: false,
                    sourcing: fetched.sourcing,
                })
            });
            // A partly understood answer goes to those waiting for it, and nowhere else.
            let keep = result_kept(&entry);
            if let (Ok(entry), true) = (&entry, keep) {
                if let Some(s) = &shared {
                    s.insert(task_key.clone(), entry.clone()).await;
                }
                store.insert(task_key, entry.clone()).await;
            }
            if let Some(lock) = lock {
                lock.release().await;
            }
            entry
        })
    }

    /// Puts new TTLs in force for answers stored from now on (a configuration reload).
    pub fn reload_ttls(&self, settings: &CacheSettings) {
        self.freshness.reload(settings);
    }

    /// Removes what `filter` names here, and (for [`PurgeReach::Cluster`]) in Redis; how
    /// many entries went from both.
    pub async fn purge(&self, filter: &PurgeFilter, reach: PurgeReach) -> u64 {
        self.purges.fetch_add(1, Ordering::AcqRel);
        if filter.is_everything() {
            for index in &self.exact {
                index.invalidate_all();
            }
        }
        let mut purged = self.store.purge(filter).await;
        if let (Some(s), PurgeReach::Cluster) = (&self.shared, reach) {
            purged += s.purge(filter).await;
        }
        purged
    }

    pub async fn report(&self) -> CacheReport {
        let store = self.store.report().await;
        let mut index_bytes = 0;
        for index in &self.exact {
            index.run_pending_tasks();
            index_bytes += index.weighted_size();
        }
        let c = &self.counters;
        let hits = c.hits.get();
        let shared_hits = c.shared_hits.get();
        let misses = c.misses.get();
        let stale = c.stale.get();
        let asked = hits + shared_hits + misses + stale;
        CacheReport {
            entries: store.entries,
            bytes: store.bytes,
            max_bytes: store.max_bytes,
            hits,
            misses,
            shared_hits,
            collapsed: c.collapsed.get(),
            stale,
            fetches: c.fetches.load(Ordering::Relaxed),
            hit_ratio: if asked == 0 {
                0.0
            } else {
                (hits + shared_hits) as f64 / asked as f64
            },
            index_bytes,
            segments: None,
            purge_generation: None,
        }
    }
}

/// Whether a fetched entry may be stored: only what the gateway understood whole.
fn result_kept<E>(entry: &Result<Arc<Entry>, E>) -> bool {
    entry.as_ref().is_ok_and(|e| e.left_out == 0)
}

/// A strong validator of `body`, quoted (also for answers merged from several appliances).
pub(crate) fn etag(body: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(body);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::freshness::Deadlines;
    use crate::settings::Settings;

    fn entry(etag: &str, fresh_until: i64) -> Arc<Entry> {
        Arc::new(Entry {
            body: Bytes::new(),
            gzip: None,
            etag: etag.into(),
            deadlines: Deadlines {
                stored_at: 0,
                fresh_until,
                stale_while_revalidate_until: fresh_until,
                stale_if_error_until: fresh_until,
            },
            upstream_ms: 0,
            left_out: 0,
            shared: false,
            sourcing: Default::default(),
        })
    }

    fn cache() -> ResponseCache<TaskFailed> {
        let settings = Settings::defaults().cache;
        ResponseCache::new(
            &settings,
            "test",
            &GatewayMetrics::new(),
            None,
            Clock::manual(0),
        )
    }

    /// What `answer` does when it stores a historic answer.
    fn index(cache: &ResponseCache<TaskFailed>, raw: &str, entry: &Arc<Entry>) {
        let indexed = Indexed {
            entry: Arc::downgrade(entry),
            generation: cache.purges.load(Ordering::Acquire),
        };
        cache.exact[0].insert(raw.into(), indexed);
        cache.index_writes.fetch_add(1, Ordering::AcqRel);
    }

    fn hit(cache: &ResponseCache<TaskFailed>, raw: &str, now: i64) -> Option<String> {
        let entry = cache.exact_hit(Format::Json, raw, now, Directives::default());
        entry.map(|e| e.etag.clone())
    }

    #[tokio::test]
    async fn a_threads_recent_hits_never_outlive_a_newer_answer_or_a_purge() {
        let a = cache();
        let (old, new) = (entry("old", 10_000), entry("new", 10_000));
        index(&a, "q", &old);
        for _ in 0..3 {
            assert_eq!(hit(&a, "q", 1_000).as_deref(), Some("old"));
        }
        // A newer answer for the same question, while the old one is still held.
        index(&a, "q", &new);
        assert_eq!(hit(&a, "q", 1_000).as_deref(), Some("new"));
        assert_eq!(hit(&a, "q", 1_000).as_deref(), Some("new"));
        // Another cache on the same thread, at the same count of index writes, answers with
        // its own.
        let b = cache();
        assert_eq!(hit(&b, "q", 1_000), None);
        let other = entry("other", 10_000);
        index(&b, "q", &other);
        assert_eq!(hit(&b, "q", 1_000).as_deref(), Some("other"));
        // Past its freshness, and after a purge, nothing is served.
        assert_eq!(hit(&a, "q", 10_000), None);
        assert_eq!(hit(&a, "q", 1_000).as_deref(), Some("new"));
        a.purge(&PurgeFilter::default(), PurgeReach::Local).await;
        assert_eq!(hit(&a, "q", 1_000), None);
        drop((old, new, other));
    }

    #[test]
    fn a_threads_copy_lives_no_longer_than_the_stored_answer() {
        let a = cache();
        let stored = entry("stored", 10_000);
        index(&a, "q", &stored);
        let first = a.exact_hit(Format::Json, "q", 1_000, Directives::default());
        assert!(
            first.is_some_and(|e| Arc::ptr_eq(&e, &stored)),
            "the stored answer"
        );
        let again = a.exact_hit(Format::Json, "q", 1_000, Directives::default());
        let copy = again.expect("answered again");
        assert!(!Arc::ptr_eq(&copy, &stored), "this thread's own copy");
        assert_eq!((copy.etag.as_str(), &copy.body), ("stored", &stored.body));
        // The store lets the answer go: the copy goes with it, even while a response holds it.
        drop(stored);
        assert_eq!(hit(&a, "q", 1_000), None);
        drop(copy);
    }

    #[test]
    fn more_questions_than_a_thread_remembers_are_all_answered() {
        let a = cache();
        let entries: Vec<_> = (0..3 * RECENT_HITS)
            .map(|i| entry(&format!("e{i}"), 10_000))
            .collect();
        for (i, e) in entries.iter().enumerate() {
            index(&a, &format!("q{i}"), e);
        }
        for round in 0..2 {
            for i in 0..entries.len() {
                let etag = hit(&a, &format!("q{i}"), 1_000);
                assert_eq!(etag, Some(format!("e{i}")), "round {round}");
            }
        }
    }
}
