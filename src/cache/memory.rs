//! The in-process store: moka, bounded in bytes, each entry kept as long as its own
//! deadlines say. moka's synchronous cache: a lookup never awaits, and costs less than the
//! future cache's on the hit path.

use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use moka::Expiry;
use moka::sync::Cache;

use super::store::{Store, StoreReport};
use crate::query::PurgeFilter;

/// What moka keeps per entry besides the key and value (its hash-table node, access and write
/// order nodes, expiry timer node, the `Arc`s around key and value) and the allocator's
/// rounding of the entry's allocations. Measured with `cargo bench --bench cache_memory`, which
/// sets the live heap against what the budgets count.
pub(crate) const ENTRY_OVERHEAD: usize = 256;

/// foldhash, seeded per process: hashing keys is a visible part of a cache hit, and SipHash's
/// extra strength buys nothing against randomly seeded buckets here.
pub(crate) type Hasher = foldhash::fast::RandomState;

/// A key the memory store can weigh and match against a purge.
pub trait MemoryKey: Hash + Eq + Clone + Send + Sync + 'static {
    /// Bytes the key holds beyond what the value counts.
    fn bytes(&self) -> usize;
    fn matches(&self, filter: &PurgeFilter) -> bool;
}

/// A value the memory store can weigh and expire.
pub trait MemoryValue: Clone + Send + Sync + 'static {
    /// Bytes the value holds, the store's bookkeeping included.
    fn bytes(&self) -> usize;
    /// How long to keep it after it is stored (fresh and stale time together).
    fn keep_for(&self) -> Duration;
}

struct KeepFor<K, V>(PhantomData<fn(K, V)>);

impl<K: MemoryKey, V: MemoryValue> Expiry<K, V> for KeepFor<K, V> {
    fn expire_after_create(&self, _: &K, value: &V, _: std::time::Instant) -> Option<Duration> {
        Some(value.keep_for())
    }

    fn expire_after_update(
        &self,
        _: &K,
        value: &V,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.keep_for())
    }
}

pub struct MemoryStore<K: MemoryKey, V: MemoryValue> {
    cache: Cache<K, V, Hasher>,
    max_bytes: u64,
}

impl<K: MemoryKey, V: MemoryValue> MemoryStore<K, V> {
    pub fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &K, v: &V| u32::try_from(k.bytes() + v.bytes()).unwrap_or(u32::MAX))
            .expire_after(KeepFor(PhantomData))
            .build_with_hasher(Hasher::default());
        Self { cache, max_bytes }
    }
}

impl<K: MemoryKey, V: MemoryValue> MemoryStore<K, V> {
    /// Calls `f` with every stored value (a snapshot as of now; no order).
    pub fn for_each_value(&self, mut f: impl FnMut(&V)) {
        for (_, value) in self.cache.iter() {
            f(&value);
        }
    }
}

impl<K: MemoryKey, V: MemoryValue> Store<K, V> for MemoryStore<K, V> {
    async fn lookup(&self, key: &K) -> Option<V> {
        self.cache.get(key)
    }

    async fn insert(&self, key: K, value: V) {
        self.cache.insert(key, value);
    }

    async fn purge(&self, filter: &PurgeFilter) -> u64 {
        self.cache.run_pending_tasks();
        if filter.is_everything() {
            let n = self.cache.entry_count();
            self.cache.invalidate_all();
            self.cache.run_pending_tasks();
            return n;
        }
        let mut purged = 0;
        for (key, _) in self.cache.iter() {
            if key.matches(filter) {
                self.cache.invalidate(&*key);
                purged += 1;
            }
        }
        self.cache.run_pending_tasks();
        purged
    }

    async fn report(&self) -> StoreReport {
        self.cache.run_pending_tasks();
        StoreReport {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
            max_bytes: self.max_bytes,
        }
    }
}
