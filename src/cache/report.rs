//! What the cache reports about itself: `GET /internal/cache` and `DELETE /internal/cache`.

use serde::Serialize;
use utoipa::ToSchema;

use super::segments::SegmentReport;

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
    pub segments: Option<SegmentReport>,
    /// With Redis: the last cluster-wide purge (its `generation`) this replica has applied to
    /// its own copies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purge_generation: Option<u64>,
}

/// `GET /internal/cache`: the default appliance's caches (as before fleets), and each
/// appliance's by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetCacheReport {
    #[serde(flatten)]
    pub default: Option<CacheReport>,
    pub appliances: std::collections::BTreeMap<String, CacheReport>,
}

// What `DELETE /internal/cache` removed.
#[derive(Debug, Default, Serialize, ToSchema)]
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
