//! The segments' memory tier: this replica's own, in the byte-bounded moka store, each kept
//! as long as its deadlines say.

use std::sync::Arc;

use super::memory::{ENTRY_OVERHEAD, MemoryKey, MemoryStore, MemoryValue};
use super::segment::Segment;
use super::segment_store::{Question, SegmentStore};
use super::store::{Store, StoreReport};
use crate::query::{MetricQuery, PurgeFilter};

/// One segment of one question, as moka holds it: the question's parts, not the
/// [`Question`], whose lazily hashed name memory never needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SegmentKey {
    identity: Arc<str>,
    /// The query without its times.
    query: Arc<MetricQuery>,
    start: i64,
}

impl MemoryKey for SegmentKey {
    /// The query is shared with the run's other segments; the segment's weight counts the rest.
    fn bytes(&self) -> usize {
        0
    }

    fn matches(&self, filter: &PurgeFilter) -> bool {
        filter.matches(&self.query)
    }
}

impl MemoryValue for Arc<Segment> {
    /// The segment, its key (the query it shares with its run's other segments left out),
    /// and moka's own per-entry bookkeeping.
    fn bytes(&self) -> usize {
        ENTRY_OVERHEAD + std::mem::size_of::<SegmentKey>() + self.bytes
    }

    fn keep_for(&self) -> std::time::Duration {
        self.deadlines.keep_for()
    }
}

pub(super) struct MemorySegments {
    store: MemoryStore<SegmentKey, Arc<Segment>>,
}

impl MemorySegments {
    pub(super) fn new(max_bytes: u64) -> Self {
        Self {
            store: MemoryStore::new(max_bytes),
        }
    }

    /// Calls `f` with every stored segment (a snapshot as of now; no order).
    pub(super) fn for_each_segment(&self, f: impl FnMut(&Arc<Segment>)) {
        self.store.for_each_value(f);
    }

    fn key(question: &Question, start: i64) -> SegmentKey {
        SegmentKey {
            identity: question.identity.clone(),
            query: question.query.clone(),
            start,
        }
    }
}

impl SegmentStore for MemorySegments {
    async fn lookup_many(&self, question: &Question, starts: &[i64]) -> Vec<Option<Arc<Segment>>> {
        let mut found = Vec::with_capacity(starts.len());
        for &start in starts {
            found.push(self.store.lookup(&Self::key(question, start)).await);
        }
        found
    }

    async fn publish(&self, question: &Question, segments: &[(i64, Arc<Segment>)]) {
        for (start, segment) in segments {
            self.store
                .insert(Self::key(question, *start), segment.clone())
                .await;
        }
    }

    async fn purge(&self, filter: &PurgeFilter) -> u64 {
        self.store.purge(filter).await
    }

    async fn report(&self) -> StoreReport {
        self.store.report().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::freshness::Deadlines;
    use crate::query::{AnyMetric, parse};
    use crate::settings::Settings;

    fn question(raw: &str) -> Question {
        let s = Settings::defaults();
        let query = parse(raw, &s.query, &AnyMetric, 0).unwrap();
        Question::new(Arc::from("appliance"), Arc::new(query), 60_000)
    }

    fn segment() -> Arc<Segment> {
        let deadlines = Deadlines {
            stored_at: 0,
            fresh_until: 60_000,
            stale_while_revalidate_until: 60_000,
            stale_if_error_until: 3_600_000,
        };
        Arc::new(Segment::new(Vec::new(), Vec::new(), deadlines, 0, None))
    }

    #[tokio::test]
    async fn batches_keep_their_order_and_the_budget_counts_key_and_bookkeeping() {
        let memory = MemorySegments::new(1 << 20);
        let (a, b) = (question("metric=a"), question("metric=b"));
        let stored = segment();
        memory.publish(&a, &[(60_000, stored.clone())]).await;
        let found = memory.lookup_many(&a, &[0, 60_000]).await;
        assert!(found[0].is_none());
        assert!(found[1].as_ref().is_some_and(|s| Arc::ptr_eq(s, &stored)));
        assert!(memory.lookup_many(&b, &[60_000]).await[0].is_none());
        let report = memory.report().await;
        assert_eq!(report.entries, 1);
        assert_eq!(
            report.bytes as usize,
            ENTRY_OVERHEAD + std::mem::size_of::<SegmentKey>() + stored.bytes
        );
        let filter = crate::query::parse_purge("metric=b").unwrap();
        assert_eq!(memory.purge(&filter).await, 0);
        assert_eq!(memory.purge(&PurgeFilter::default()).await, 1);
    }
}
