//! The Redis tier, shared by replicas: answers stored compressed with their deadlines, and
//! cross-replica coalescing under the fetch locks of `lock.rs` (short, renewed while the fetch
//! runs, owner-checked): one replica fetches, the others poll until the answer lands or the
//! lock disappears (they try for it again). A dead holder costs them about one lock TTL.
//!
//! Answers are named by hashes; each is also named in index sets per metric and per device
//! (`purges.rs`), so a filtered purge finds them.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;

use super::entry::{Entry, gzip};
use super::freshness::Deadlines;
use super::key::CacheKey;
use super::lock::{FetchLocks, Turn};
use super::purges;
use super::store::{Store, StoreReport};
use crate::clock::Clock;
use crate::query::PurgeFilter;
use crate::redis::{IndexedEntry, SharedState};

/// Which kind of key answers are stored under.
const KIND: &str = "resp";

/// Which stored answers a request accepts.
#[derive(Clone, Copy)]
pub(super) struct Accept {
    pub asked_at: i64,
    /// A caller's `no-cache`: only answers stored after it asked.
    pub only_newer: bool,
}

impl Accept {
    /// An answer stored after the request asked, or (without `no-cache`) one still fresh
    /// then. Stored in the same millisecond is not "after": a frozen test clock must not let
    /// `no-cache` take the answer it wanted replaced.
    pub(super) fn accepts(&self, d: &Deadlines) -> bool {
        d.stored_at > self.asked_at || (!self.only_newer && d.is_fresh(self.asked_at))
    }
}

/// Answers in Redis, by [`CacheKey::shared_id`].
#[derive(Clone)]
pub(super) struct RedisAnswers {
    shared: Arc<SharedState>,
    locks: FetchLocks,
    gzip_min: usize,
    clock: Clock,
}

impl RedisAnswers {
    pub(super) fn new(shared: Arc<SharedState>, gzip_min: usize, clock: Clock) -> Self {
        Self {
            locks: FetchLocks::new(shared.clone(), clock.clone()),
            shared,
            gzip_min,
            clock,
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.shared.is_up()
    }

    /// Waits its turn for the answer to `key`: found (stored by another replica, acceptable
    /// to this request), or this replica's turn to fetch it.
    pub(super) async fn take_turn(&self, key: &CacheKey, accept: Accept) -> Turn<Arc<Entry>> {
        let id = key.shared_id();
        let read = || async {
            self.lookup_id(&id)
                .await
                .filter(|e| accept.accepts(&e.deadlines))
        };
        if let Some(entry) = read().await {
            return Turn::Found(entry);
        }
        self.locks
            .take_turn(&self.shared.key("lock", &id), read)
            .await
    }

    async fn lookup_id(&self, id: &str) -> Option<Arc<Entry>> {
        let bytes = self.shared.get(&self.shared.key(KIND, id)).await?;
        decode(&bytes, self.gzip_min).map(Arc::new)
    }
}

impl Store<CacheKey, Arc<Entry>> for RedisAnswers {
    async fn lookup(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.lookup_id(&key.shared_id()).await
    }

    /// Stores `entry` for the other replicas (gzip-compressed) for as long as it may be
    /// served, named in the index sets of its question's metrics and devices.
    async fn insert(&self, key: CacheKey, entry: Arc<Entry>) {
        let d = &entry.deadlines;
        let until = d.stale_while_revalidate_until.max(d.stale_if_error_until);
        let ttl_ms = (until - self.clock.now_ms()).max(1) as u64;
        if let Some(value) = encode(&entry) {
            let stored = IndexedEntry {
                key: self.shared.key(KIND, &key.shared_id()),
                value,
                ttl_ms,
                index: purges::index_keys(&self.shared, KIND, key.query()),
            };
            self.shared.set_indexed_many(&[stored]).await;
        }
    }

    /// What `filter` names: everything, or (through the index sets) the answers of a metric
    /// and/or a device.
    async fn purge(&self, filter: &PurgeFilter) -> u64 {
        purges::purge_shared(&self.shared, KIND, filter).await
    }

    async fn report(&self) -> StoreReport {
        StoreReport::default()
    }
}

const HEADER: usize = 5 * 8 + 2;

fn encode(entry: &Entry) -> Option<Vec<u8>> {
    let compressed = match &entry.gzip {
        Some(gz) => gz.clone(),
        None => gzip(&entry.body)?,
    };
    let d = &entry.deadlines;
    let etag = entry.etag.as_bytes();
    let mut out = Vec::with_capacity(HEADER + etag.len() + compressed.len());
    for n in [
        d.stored_at,
        d.fresh_until,
        d.stale_while_revalidate_until,
        d.stale_if_error_until,
        entry.upstream_ms as i64,
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&u16::try_from(etag.len()).ok()?.to_le_bytes());
    out.extend_from_slice(etag);
    out.write_all(&compressed).ok()?;
    Some(out)
}

fn decode(bytes: &[u8], gzip_min: usize) -> Option<Entry> {
    let number = |i: usize| -> Option<i64> {
        Some(i64::from_le_bytes(
            bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    let etag_len = u16::from_le_bytes(bytes.get(40..42)?.try_into().ok()?) as usize;
    let etag = std::str::from_utf8(bytes.get(HEADER..HEADER + etag_len)?).ok()?;
    let compressed = bytes.get(HEADER + etag_len..)?;
    let mut body = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .read_to_end(&mut body)
        .ok()?;
    // `read_to_end` grows by doubling; an entry keeps exactly its bytes.
    body.shrink_to_fit();
    Some(Entry {
        gzip: (body.len() >= gzip_min).then(|| Bytes::copy_from_slice(compressed)),
        body: Bytes::from(body),
        etag: etag.to_owned(),
        deadlines: Deadlines {
            stored_at: number(0)?,
            fresh_until: number(1)?,
            stale_while_revalidate_until: number(2)?,
            stale_if_error_until: number(3)?,
        },
        upstream_ms: number(4)?.max(0) as u64,
        // Only whole answers are ever stored.
        left_out: 0,
        shared: true,
        // Not this request's fetch.
        sourcing: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_the_round_trip() {
        let body = Bytes::from(r#"{"series":[]}"#.repeat(100));
        let entry = Entry {
            gzip: gzip(&body),
            body: body.clone(),
            etag: "\"abc\"".into(),
            deadlines: Deadlines {
                stored_at: 1,
                fresh_until: 2,
                stale_while_revalidate_until: 3,
                stale_if_error_until: 4,
            },
            upstream_ms: 5,
            left_out: 0,
            shared: false,
            sourcing: Default::default(),
        };
        let back = decode(&encode(&entry).unwrap(), 1024).unwrap();
        assert_eq!(back.body, body);
        assert_eq!(back.etag, "\"abc\"");
        assert_eq!(back.deadlines, entry.deadlines);
        assert_eq!(back.upstream_ms, 5);
        assert!(back.gzip.is_some());
        assert!(back.shared, "what Redis gives back says where it came from");
        assert!(decode(b"short", 1024).is_none());
    }
}
