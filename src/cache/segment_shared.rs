//! The segments' Redis tier, shared by replicas so they fill each other's misses: one `MGET`
//! per lookup, one pipeline of `SET … PX` per publish, segments in their compact encoding.
//!
//! Each segment is also named in index sets per metric and per device (`purges.rs`), so a
//! filtered purge finds it. Redis out of reach: lookups find nothing, publishing drops.

use std::sync::Arc;

use super::freshness::Deadlines;
use super::lock::FetchLocks;
use super::purges;
use super::segment::Segment;
use super::segment_codec::{decode, encode};
use super::segment_store::{Question, SegmentStore};
use super::store::StoreReport;
use crate::clock::Clock;
use crate::query::PurgeFilter;
use crate::redis::{IndexedEntry, SharedState};

/// Which kind of key segments are stored under.
const KIND: &str = "seg";

#[derive(Clone)]
pub(super) struct SharedSegments {
    shared: Arc<SharedState>,
    locks: FetchLocks,
}

impl SharedSegments {
    pub(super) fn new(shared: Arc<SharedState>, clock: Clock) -> Self {
        Self {
            locks: FetchLocks::new(shared.clone(), clock),
            shared,
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.shared.is_up()
    }

    /// The cross-replica fetch locks (`lock.rs`), for taking turns at runs.
    pub(super) fn locks(&self) -> &FetchLocks {
        &self.locks
    }

    /// The lock guarding the fetch of `question`'s run `[start, end)`.
    pub(super) fn run_lock_key(&self, question: &Question, start: i64, end: i64) -> String {
        let series = question.stable_id();
        self.shared
            .key("seglock", &format!("{series}:{start}:{end}"))
    }

    fn redis_key(&self, series: &str, start: i64) -> String {
        self.shared.key(KIND, &format!("{series}:{start}"))
    }
}

impl SegmentStore for SharedSegments {
    /// `None` also for each segment undecodable, and for every one when Redis is out of
    /// reach.
    async fn lookup_many(&self, question: &Question, starts: &[i64]) -> Vec<Option<Arc<Segment>>> {
        let series = question.stable_id();
        let keys: Vec<String> = starts
            .iter()
            .map(|&start| self.redis_key(series, start))
            .collect();
        match self.shared.mget(&keys).await {
            Some(values) if values.len() == starts.len() => values
                .into_iter()
                .map(|v| v.and_then(|bytes| decode(&bytes)).map(Arc::new))
                .collect(),
            _ => vec![None; starts.len()],
        }
    }

    /// Named in the index sets of the question's metrics and devices.
    async fn publish(&self, question: &Question, segments: &[(i64, Arc<Segment>)]) {
        let series = question.stable_id();
        let index = purges::index_keys(&self.shared, KIND, &question.query);
        let entries: Vec<IndexedEntry> = segments
            .iter()
            .map(|(start, segment)| IndexedEntry {
                key: self.redis_key(series, *start),
                value: encode(segment),
                ttl_ms: ttl_ms(&segment.deadlines),
                index: index.clone(),
            })
            .collect();
        self.shared.set_indexed_many(&entries).await;
    }

    /// Everything, or (through the index sets) the segments of a metric and/or a device.
    async fn purge(&self, filter: &PurgeFilter) -> u64 {
        purges::purge_shared(&self.shared, KIND, filter).await
    }

    /// Redis holds other replicas' segments too, under its own budget: nothing to count here.
    async fn report(&self) -> StoreReport {
        StoreReport::default()
    }
}

fn ttl_ms(d: &Deadlines) -> u64 {
    d.keep_for().as_millis().max(1) as u64
}
