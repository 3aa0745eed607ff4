//! What was asked before: answers stored already serialized, by canonical key and time
//! bucket, and the segments below them. Storage and policy only: the caller hands in the
//! fetch, and gets the fetch's own error back.
//!
//! A hit costs one lookup and one write of stored bytes.

mod answers;
mod entry;
mod freshness;
mod key;
mod lock;
mod memory;
mod purges;
mod redis;
mod report;
mod segment;
mod segment_codec;
mod segment_disk;
mod segment_memory;
mod segment_plan;
mod segment_run;
mod segment_shared;
mod segment_store;
mod segment_turn;
pub mod segments;
mod store;

pub use answers::ResponseCache;
pub(crate) use answers::etag;
pub(crate) use entry::gzip;
pub use entry::{Answer, CacheError, Directives, Entry, Fetched, Origin, Route, Sourcing};
pub use freshness::{Completeness, Deadlines, Freshness, Lifetime};
pub use key::CacheKey;
pub use purges::{ClusterPurges, PurgeReach};
pub use report::{CacheReport, FleetCacheReport, Purged};
pub use segment_disk::check_dir;
pub use store::{Store, StoreReport};
