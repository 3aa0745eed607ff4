//! The one trait every segment tier implements (memory, Redis, and the disk tier to come),
//! and the name of a question's segments that every tier derives its keys from.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use super::segment::Segment;
use super::store::StoreReport;
use crate::query::{MetricQuery, PurgeFilter};

/// The segments of one question: whose (the upstream identity), which query (without its
/// times), and how long each is. A segment is named by this and its start.
#[derive(Debug)]
pub(super) struct Question {
    pub(super) identity: Arc<str>,
    pub(super) query: Arc<MetricQuery>,
    /// Milliseconds each segment covers (`points × interval`).
    pub(super) length: i64,
    stable_id: OnceLock<Arc<str>>,
}

impl Question {
    pub(super) fn new(identity: Arc<str>, query: Arc<MetricQuery>, length: i64) -> Self {
        Self {
            identity,
            query,
            length,
            stable_id: OnceLock::new(),
        }
    }

    /// A name for these segments that holds across replicas, restarts and releases (a hash
    /// of identity, question and length), for tiers outside the process. Computed on first
    /// use: a question answered from memory alone never pays for the hash.
    pub(super) fn stable_id(&self) -> &Arc<str> {
        self.stable_id.get_or_init(|| {
            use sha1::{Digest, Sha1};
            let mut h = Sha1::new();
            h.update(self.identity.as_bytes());
            h.update(b"\n");
            h.update(serde_json::to_vec(&*self.query).unwrap_or_default());
            h.update(format!("\n{}", self.length).as_bytes());
            Arc::from(hex::encode(h.finalize()))
        })
    }

    /// The starts of the segments in `[start, end)` (`start` a segment's start).
    pub(super) fn starts(&self, start: i64, end: i64) -> impl Iterator<Item = i64> + use<> {
        let length = self.length.max(1);
        (0..)
            .map(move |i| start + i * length)
            .take_while(move |at| *at < end)
    }
}

/// A tier of segments. Lookups and publishing come in batches of one question's segments:
/// the runs of one answer are what is asked and stored together, and a remote or disk tier
/// does each batch in one round (`MGET`, a pipeline, a transaction).
pub(super) trait SegmentStore: Send + Sync {
    /// The segments of `question` at `starts`, in their order: `None` for each one the tier
    /// does not hold (or cannot read, or cannot reach).
    fn lookup_many(
        &self,
        question: &Question,
        starts: &[i64],
    ) -> impl Future<Output = Vec<Option<Arc<Segment>>>> + Send;

    /// Keeps `segments` of `question`, each as long as its own deadlines say.
    fn publish(
        &self,
        question: &Question,
        segments: &[(i64, Arc<Segment>)],
    ) -> impl Future<Output = ()> + Send;

    /// Removes the segments of the questions `filter` names (everything for the empty
    /// filter); how many went.
    fn purge(&self, filter: &PurgeFilter) -> impl Future<Output = u64> + Send;

    fn report(&self) -> impl Future<Output = StoreReport> + Send;
}
