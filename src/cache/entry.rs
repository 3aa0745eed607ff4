//! A stored answer and the words around it: how it was obtained, what the caller's
//! `Cache-Control` asks, and why there is none.

use std::sync::Arc;

use bytes::Bytes;

use super::freshness::{Completeness, Deadlines};

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
    /// Some of the answer came from the archive (`cache.archive`): history the appliance
    /// may no longer hold.
    pub archived: bool,
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
            // Only the response of the fetch that made it reads how it was sourced.
            sourcing: Sourcing::default(),
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

/// The compressed copy kept beside a body (and sent to Redis): the fast level, since it is
/// made on the request path.
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
