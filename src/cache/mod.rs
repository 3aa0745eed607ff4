//! What was asked before: answers stored already serialized, by canonical key and time
//! bucket, and the segments below them. Storage and policy only: the caller hands in the
//! fetch, and gets the fetch's own error back.
//!
//! A hit costs one lookup and one write of stored bytes.

mod answers;
mod freshness;
mod key;
mod lock;
mod memory;
mod purges;
mod redis;
pub mod segments;
mod shared_segments;
mod store;

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

pub use answers::ResponseCache;
pub use freshness::{Completeness, Deadlines, Freshness, Lifetime};
pub use key::CacheKey;
pub use purges::{ClusterPurges, PurgeReach};
pub use store::{Store, StoreReport};

/// A stored answer.
#[derive(Debug)]
pub struct Entry {
    /// The body, in the representation its key names.
    pub body: Bytes,
    /// The same body gzip-compressed, when it is large enough to be worth it.
    pub gzip: Option<Bytes>,
    /// Strong validator of `body`, quoted.
    pub etag: String,
    pub deadlines: Deadlines,
    /// How long the appliance took to produce it.
    pub upstream_ms: u64,
    /// Parts of the appliance's answer left out because they had no known shape (0 for a
    /// whole answer). An entry with any is served to the callers waiting for it, never kept.
    pub left_out: usize,
    /// Found in Redis: another replica (or an earlier life of this one) fetched it.
    pub shared: bool,
    /// How the fetch that made it got its data.
    pub sourcing: Sourcing,
}

/// Where a fetched answer's data came from, for `Cache-Status` and `Metricgate-Fetched`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sourcing {
    /// Ranges `[start, end)` (epoch ms) the appliance was asked for this answer, oldest first.
    pub fetched: Vec<(i64, i64)>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    /// The appliance was asked.
    #[default]
    Appliance,
    /// Assembled from stored segments without asking the appliance.
    Assembled,
    /// Assembled from stored segments, some of them prefetched in the background.
    Prefetched,
}

impl Entry {
    /// The same answer in memory of its own (the body copied too), for one thread to hand
    /// out without sharing reference counts with the others.
    pub fn thread_copy(&self) -> Entry {
        Entry {
            body: Bytes::copy_from_slice(&self.body),
            gzip: self.gzip.as_deref().map(Bytes::copy_from_slice),
            etag: self.etag.clone(),
            deadlines: self.deadlines,
            upstream_ms: self.upstream_ms,
            left_out: self.left_out,
            shared: self.shared,
            sourcing: self.sourcing.clone(),
        }
    }
}

/// What a fetch gives the response cache: the rendered body and what its data says about
/// keeping it.
pub struct Fetched {
    pub body: Bytes,
    pub completeness: Completeness,
    /// Parts of the appliance's answer left out (see [`Entry::left_out`]).
    pub left_out: usize,
    pub sourcing: Sourcing,
}

/// How an answer was obtained, for `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Fresh from the store.
    Hit,
    /// Not in this replica's store, but fresh in Redis: another replica fetched it.
    SharedHit,
    /// Fetched: this request started the fetch, or (`collapsed`) joined one in flight.
    Miss { collapsed: bool },
    /// Fetched because the caller said `no-cache`.
    Forced { collapsed: bool },
    /// Served stale at once while one background request refreshes it.
    StaleWhileRevalidate,
    /// Served stale because the fetch failed (the answer carries the error).
    StaleIfError,
}

/// A stored or fetched answer. `failure` is the fetch's error when the answer is served stale
/// because of it.
pub struct Answer<E> {
    pub entry: Arc<Entry>,
    pub route: Route,
    pub failure: Option<E>,
}

/// Why the cache has no answer to give.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError<E> {
    /// The caller said `only-if-cached`, and nothing is stored.
    #[error("not in the cache (only-if-cached)")]
    NotCached,
    #[error(transparent)]
    Fetch(E),
}

/// What the caller's `Cache-Control` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    pub no_cache: bool,
    pub only_if_cached: bool,
}

/// `GET /internal/cache`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheReport {
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    /// Answers found in Redis after a local miss (fetched by another replica).
    pub shared_hits: u64,
    /// Requests that waited for another's fetch instead of starting their own.
    pub collapsed: u64,
    pub stale: u64,
    /// Fetches started (each one appliance round, or one per device).
    pub fetches: u64,
    /// (hits + shared_hits) ÷ (hits + shared_hits + misses + stale), 0 when nothing was asked.
    pub hit_ratio: f64,
    /// Bytes of the index from raw query strings to entries (its own budget of 16 MiB).
    pub index_bytes: u64,
    /// The segment cache below it, when enabled.
    pub segments: Option<segments::SegmentReport>,
    /// With Redis: the last cluster-wide purge (its `generation`) this replica has applied to
    /// its own copies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purge_generation: Option<u64>,
}

// What `DELETE /internal/cache` removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Purged {
    /// Answers removed: this replica's copies, and (with Redis) the shared ones.
    pub purged: u64,
    /// Segments removed from the segment cache below (whose points would otherwise answer
    /// the same questions again without asking the appliance).
    pub segments: u64,
    /// With Redis: this purge's generation, announced to every replica. Each drops its own
    /// copies at once (pub/sub), within a second if the message is lost; its
    /// `GET /internal/cache` shows `purge_generation` reaching this number once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

/// What moka keeps per entry besides the key and value (its hash-table node, access and write
/// order nodes, expiry timer node, the `Arc`s around key and value) and the allocator's
/// rounding of the entry's allocations. Measured with `cargo bench --bench cache_memory`, which
/// sets the live heap against what the budgets count.
pub(crate) const ENTRY_OVERHEAD: usize = 256;

/// foldhash, seeded per process: hashing keys is a visible part of a cache hit, and SipHash's
/// extra strength buys nothing against randomly seeded buckets here.
pub(crate) type Hasher = foldhash::fast::RandomState;

pub(crate) fn gzip(body: &[u8]) -> Option<Bytes> {
    use std::io::Write;
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
