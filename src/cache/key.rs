//! The cache key: the canonical query, the upstream identity, and the live bucket.

use std::sync::Arc;

use super::freshness::Lifetime;
use crate::query::MetricQuery;

/// Two requests that mean the same thing have equal keys: [`MetricQuery`] is canonical.
/// The identity (appliance URL and public token, never the private token) keeps answers
/// given under different permissions apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    identity: Arc<str>,
    query: Arc<MetricQuery>,
    /// `None` for historic answers; the bucket number for live ones.
    bucket: Option<i64>,
}

impl CacheKey {
    pub fn new(identity: Arc<str>, query: Arc<MetricQuery>, lifetime: Lifetime) -> Self {
        let bucket = match lifetime {
            Lifetime::Historic => None,
            Lifetime::Live { bucket, .. } => Some(bucket),
        };
        Self {
            identity,
            query,
            bucket,
        }
    }

    /// The same question's key in the previous live bucket, where a stale answer may wait.
    pub fn previous_bucket(&self) -> Option<Self> {
        let bucket = self.bucket?;
        Some(Self {
            bucket: Some(bucket - 1),
            ..self.clone()
        })
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
        h.update(format!("\n{:?}\n", self.query.format).as_bytes());
        h.update(format!("{:?}", self.bucket).as_bytes());
        hex::encode(h.finalize())
    }

    /// Approximate bytes the key occupies, for the byte-bounded store.
    pub fn weight(&self) -> usize {
        let q = &self.query;
        std::mem::size_of::<Self>()
            + std::mem::size_of::<MetricQuery>()
            + q.metrics.iter().map(|m| m.len() + 24).sum::<usize>()
            + q.devices.len() * 8
            + q.applicationprotocol.as_ref().map_or(0, String::len)
    }
}
