//! The cache key: the canonical query, its representation, the upstream identity, and the
//! live bucket.

use std::sync::Arc;

use super::freshness::Lifetime;
use super::memory::MemoryKey;
use crate::query::{Format, MetricQuery, PurgeFilter};

/// Two requests that mean the same thing have equal keys: [`MetricQuery`] is canonical.
/// The identity (appliance URL and public token, never the private token) keeps answers
/// given under different permissions apart; the format keeps representations apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    identity: Arc<str>,
    query: Arc<MetricQuery>,
    format: Format,
    /// `None` for historic answers; the bucket number for live ones.
    bucket: Option<i64>,
}

impl CacheKey {
    pub fn new(
        identity: Arc<str>,
        query: Arc<MetricQuery>,
        format: Format,
        lifetime: Lifetime,
    ) -> Self {
        let bucket = match lifetime {
            Lifetime::Historic => None,
            Lifetime::Live { bucket, .. } => Some(bucket),
        };
        Self {
            identity,
            query,
            format,
            bucket,
        }
    }

    /// The same question's key in the previous live bucket, where a stale answer may wait.
    pub fn previous_bucket(&self) -> Option<Self> {
        let bucket = self.bucket?;
        let mut previous = self.clone();
        previous.bucket = Some(bucket - 1);
        Some(previous)
    }

    pub fn query(&self) -> &MetricQuery {
        &self.query
    }

    /// A stable name for this key across replicas and restarts (for Redis).
    pub fn shared_id(&self) -> String {
        use sha1::{Digest, Sha1};
        let mut h = Sha1::new();
        h.update(self.identity.as_bytes());
        h.update(b"\n");
        h.update(serde_json::to_vec(&*self.query).unwrap_or_default());
        // The representation is not in the query's JSON, and each has its own bytes.
        h.update(format!("\n{}\n", self.format.tag()).as_bytes());
        h.update(format!("{:?}", self.bucket).as_bytes());
        hex::encode(h.finalize())
    }
}

impl MemoryKey for CacheKey {
    /// Approximate bytes the key occupies, for the byte-bounded store.
    fn bytes(&self) -> usize {
        let q = &self.query;
        std::mem::size_of::<Self>()
            + std::mem::size_of::<MetricQuery>()
            + q.metrics().iter().map(|m| m.len() + 24).sum::<usize>()
            + q.devices().len() * 8
    }

    fn matches(&self, filter: &PurgeFilter) -> bool {
        filter.matches(&self.query)
    }
}
