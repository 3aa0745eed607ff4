//! The storage a cache sits on, as a small trait in the spirit of pingora-cache's `Storage`:
//! a backend is a new file (moka in `memory.rs`; Redis, shared by replicas, in `redis.rs`).

use std::future::Future;

use crate::query::PurgeFilter;

/// Entries, bytes and budget of one store.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreReport {
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

pub trait Store<K, V>: Send + Sync {
    fn lookup(&self, key: &K) -> impl Future<Output = Option<V>> + Send;
    fn insert(&self, key: K, value: V) -> impl Future<Output = ()> + Send;
    /// Removes what `filter` names (everything for the empty filter); how many entries went.
    fn purge(&self, filter: &PurgeFilter) -> impl Future<Output = u64> + Send;
    fn report(&self) -> impl Future<Output = StoreReport> + Send;
}
