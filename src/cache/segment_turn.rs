//! Whose turn it is to fetch a run of segments, across replicas: found in Redis already,
//! this replica's to fetch, or left to the replica that holds the run's lock.
//!
//! The protocol is `lock.rs`'s (short locks, renewed while the fetch runs, owner-checked): a
//! caller waits for the holder's segments and, when the lock disappears without them (the
//! holder failed, or died and its lock lapsed within one lock TTL), takes its turn. A prefetch
//! never waits. Redis out of reach: every replica fetches for itself.

use std::sync::Arc;

use super::lock::{HeldLock, Turn};
use super::segment::Segment;
use super::segment_shared::SharedSegments;
use super::segment_store::{Question, SegmentStore};

/// What to do about one run.
pub(super) enum RunTurn {
    /// Another replica fetched it: its segments, by start, fresh when asked.
    Found(Vec<(i64, Arc<Segment>)>),
    /// Fetch it; release the lock (when this replica holds one) afterwards.
    Fetch(Option<HeldLock>),
    /// A prefetch's run whose lock another replica holds: that replica is fetching it.
    LeaveToOther,
}

/// Who is asking for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Asker {
    /// A caller waits for another replica's fetch rather than fetch the same run twice.
    Caller,
    /// A prefetch never waits: a run another replica holds is left to it.
    Prefetch,
}

/// Takes this replica's turn at `question`'s run `[start, end)`, whose segments must be fresh
/// at `fresh_at` to be taken from another replica.
pub(super) async fn take_turn(
    shared: &SharedSegments,
    question: &Question,
    (start, end): (i64, i64),
    fresh_at: i64,
    asker: Asker,
) -> RunTurn {
    let lock_key = shared.run_lock_key(question, start, end);
    let starts: Vec<i64> = question.starts(start, end).collect();
    let look = || published(shared, question, &starts, fresh_at);
    match asker {
        Asker::Caller => match shared.locks().take_turn(&lock_key, look).await {
            Turn::Found(segments) => RunTurn::Found(segments),
            Turn::Fetch(lock) => RunTurn::Fetch(lock),
        },
        Asker::Prefetch => match shared.locks().try_hold(&lock_key).await {
            None => RunTurn::LeaveToOther,
            // Redis out of reach: nothing to look up either.
            Some(None) => RunTurn::Fetch(None),
            // Another replica may have published the run before this one locked it.
            Some(Some(lock)) => match look().await {
                Some(segments) => {
                    lock.release().await;
                    RunTurn::Found(segments)
                }
                None => RunTurn::Fetch(Some(lock)),
            },
        },
    }
}

/// The run's segments at `starts` when Redis holds every one of them fresh at `fresh_at`.
async fn published(
    shared: &SharedSegments,
    question: &Question,
    starts: &[i64],
    fresh_at: i64,
) -> Option<Vec<(i64, Arc<Segment>)>> {
    let found = shared.lookup_many(question, starts).await;
    found
        .iter()
        .all(|s| s.as_ref().is_some_and(|s| s.deadlines.is_fresh(fresh_at)))
        .then(|| {
            starts
                .iter()
                .copied()
                .zip(found.into_iter().flatten())
                .collect()
        })
}
