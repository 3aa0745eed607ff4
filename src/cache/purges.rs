//! Purges that reach the whole cluster.
//!
//! **Redis entries.** Answers and segments are named by hashes, so each is also named in an
//! index per metric and per device it answers (`{prefix}:idx:{kind}:m:{metric}`, `…:d:{did}`:
//! sorted sets scored by expiry, pruned on insert, so they hold only live entries). A
//! filtered purge deletes the members of one index, or of the intersection of a metric's and
//! a device's (what [`PurgeFilter::matches`] names locally); a full purge deletes every key of
//! the kind.
//!
//! **Other replicas' local copies.** A purge is announced with a generation counter
//! (`{prefix}:purge:gen`, `INCR`), its filter kept an hour under its generation, and a pub/sub
//! message, in one script. Every replica follows: at once on the message, and by reading the
//! counter every [`POLL`] (a missed message or a broken subscription costs at most that). It
//! applies each filter between the generation it applied last and the counter's, and purges
//! everything when a filter is gone (it fell too far behind). So another replica serves a
//! purged answer from its own memory for milliseconds after the purge, at most about one
//! [`POLL`] (plus a Redis timeout) when pub/sub fails; its `/internal/cache` shows the
//! generation it has applied.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use crate::query::{self, MetricQuery, PurgeFilter};
use crate::redis::SharedState;

/// How often a follower reads the generation counter, whatever pub/sub says.
pub const POLL: Duration = Duration::from_secs(1);

/// How long an announced filter is kept for followers that missed it.
const KEEP_FILTERS_MS: u64 = 3_600_000;

/// More generations behind than this: purge everything instead of reading each filter.
const MAX_BEHIND: u64 = 1_000;

/// No generation applied yet (the counter not read yet).
const UNKNOWN: u64 = u64::MAX;

/// How far a purge reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeReach {
    /// This process's memory: answers made before the metric catalog arrived (its disk holds
    /// only what was made with a catalog).
    Memory,
    /// This replica's own copies, disk included (another replica announced it).
    Local,
    /// This replica, Redis, and (announced) every other replica.
    Cluster,
}

/// The index sets naming an entry of `kind` that answers `q`.
pub(super) fn index_keys(shared: &SharedState, kind: &str, q: &MetricQuery) -> Vec<String> {
    let metrics = q
        .metrics()
        .iter()
        .map(|m| shared.key("idx", &format!("{kind}:m:{m}")));
    let devices = q
        .devices()
        .iter()
        .map(|d| shared.key("idx", &format!("{kind}:d:{d}")));
    metrics.chain(devices).collect()
}

/// Removes the entries of `kind` that `filter` names from Redis; how many went.
pub(super) async fn purge_shared(shared: &SharedState, kind: &str, filter: &PurgeFilter) -> u64 {
    if filter.is_everything() {
        let deleted = shared.delete_kind(kind).await;
        shared.delete_kind(&format!("idx:{kind}")).await;
        return deleted;
    }
    let mut sets = Vec::with_capacity(2);
    if let Some(m) = &filter.metric {
        sets.push(shared.key("idx", &format!("{kind}:m:{m}")));
    }
    if let Some(d) = filter.did {
        sets.push(shared.key("idx", &format!("{kind}:d:{d}")));
    }
    shared.purge_indexed(&sets).await
}

/// A filter as text (the purge endpoint's own query string), and back.
fn encode(filter: &PurgeFilter) -> String {
    let mut text = form_urlencoded::Serializer::new(String::new());
    if let Some(m) = &filter.metric {
        text.append_pair("metric", m);
    }
    if let Some(d) = filter.did {
        text.append_pair("did", &d.to_string());
    }
    text.finish()
}

/// Purges announced to every replica through Redis, and followed here.
pub struct ClusterPurges {
    shared: Arc<SharedState>,
    /// The last generation applied here ([`UNKNOWN`] before the counter was read).
    applied: AtomicU64,
    /// Generations this replica announced (and applied as it did).
    own: Mutex<BTreeSet<u64>>,
}

impl ClusterPurges {
    pub fn new(shared: Arc<SharedState>) -> Self {
        Self {
            shared,
            applied: AtomicU64::new(UNKNOWN),
            own: Mutex::default(),
        }
    }

    fn counter(&self) -> String {
        self.shared.key("purge", "gen")
    }

    fn channel(&self) -> String {
        self.shared.key("purges", "announced")
    }

    /// Tells the other replicas to drop what `filter` names (this one already did): the
    /// purge's generation, `None` when Redis is out of reach.
    pub async fn announce(&self, filter: &PurgeFilter) -> Option<u64> {
        let (generation, told) = self
            .shared
            .announce(
                &self.counter(),
                &self.shared.key("purge", ""),
                &encode(filter),
                KEEP_FILTERS_MS,
                &self.channel(),
            )
            .await?;
        if let Ok(mut own) = self.own.lock() {
            own.insert(generation);
        }
        tracing::debug!(generation, told, "purge announced to the other replicas");
        Some(generation)
    }

    /// The last cluster purge applied here, once known.
    pub fn applied(&self) -> Option<u64> {
        Some(self.applied.load(Ordering::Relaxed)).filter(|g| *g != UNKNOWN)
    }

    /// Follows the purges other replicas announce, calling `apply` with each filter (in
    /// order), for as long as the gateway runs.
    pub async fn follow<F, Fut>(self: Arc<Self>, apply: F)
    where
        F: Fn(PurgeFilter) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut subscription = None;
        loop {
            if subscription.is_none() {
                subscription = self.shared.subscribe(&self.channel()).await;
            }
            self.catch_up(&apply).await;
            let closed = match subscription.as_mut() {
                Some(pubsub) => {
                    let mut messages = pubsub.on_message();
                    tokio::select! {
                        message = messages.next() => message.is_none(),
                        () = tokio::time::sleep(POLL) => false,
                    }
                }
                None => {
                    // Redis out of reach (or not yet reached at startup): subscribe as soon
                    // as it is back, without waiting out a whole poll.
                    let was_up = self.shared.is_up();
                    for _ in 0..POLL.as_millis() / 50 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if self.shared.is_up() != was_up {
                            break;
                        }
                    }
                    false
                }
            };
            if closed {
                subscription = None;
            }
        }
    }

    /// Applies every purge announced since the last one applied here.
    async fn catch_up<F, Fut>(&self, apply: &F)
    where
        F: Fn(PurgeFilter) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Some(latest) = self.shared.get_checked(&self.counter()).await else {
            return;
        };
        let latest = latest
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let seen = self.applied.load(Ordering::Relaxed);
        // The first look: purges announced while this replica ran without reading the counter
        // cannot be told from older ones, so (unless there never was one) it drops all it
        // holds, which at startup is nothing.
        if seen == UNKNOWN {
            if latest > 0 {
                apply(PurgeFilter::default()).await;
            }
            self.applied.store(latest, Ordering::Relaxed);
            return;
        }
        // A Redis that lost its data (and its purges with it): start from its counter.
        if latest < seen {
            self.applied.store(latest, Ordering::Relaxed);
            return;
        }
        if latest == seen {
            return;
        }
        let own: BTreeSet<u64> = match self.own.lock() {
            Ok(mut own) => {
                let later = own.split_off(&(latest + 1));
                std::mem::replace(&mut *own, later)
            }
            Err(_) => BTreeSet::new(),
        };
        if latest - seen > MAX_BEHIND {
            apply(PurgeFilter::default()).await;
            self.applied.store(latest, Ordering::Relaxed);
            return;
        }
        let generations: Vec<u64> = (seen + 1..=latest).collect();
        let keys: Vec<String> = generations
            .iter()
            .map(|g| self.shared.key("purge", &g.to_string()))
            .collect();
        let Some(filters) = self.shared.mget(&keys).await else {
            return;
        };
        for (generation, filter) in generations.into_iter().zip(filters) {
            if own.contains(&generation) {
                continue;
            }
            // A filter gone (or unreadable) purges everything: never less than was asked.
            let filter = filter
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|text| query::parse_purge(&text).ok())
                .unwrap_or_default();
            tracing::info!(generation, ?filter, "cache purged by another replica");
            apply(filter).await;
        }
        self.applied.store(latest, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_travel_as_the_purge_endpoints_query() {
        for filter in [
            PurgeFilter::default(),
            PurgeFilter {
                metric: Some("connections".into()),
                did: None,
            },
            PurgeFilter {
                metric: Some("bandwidth".into()),
                did: Some(7),
            },
        ] {
            assert_eq!(query::parse_purge(&encode(&filter)).ok(), Some(filter));
        }
    }
}
