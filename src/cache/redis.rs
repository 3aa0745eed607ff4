//! The Redis tier, shared by replicas: answers stored compressed with their deadlines, and
//! cross-replica coalescing. One replica fetches under a short lock (`SET NX PX` with a token
//! of its own, released only while it still holds that token); the others poll with backoff
//! until the answer lands, the lock disappears (the holder died or failed: they try for the
//! lock again), or the lock's time runs out (they fetch themselves). Nobody waits forever.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::freshness::Deadlines;
use super::store::{Store, StoreReport};
use super::{Entry, gzip};
use crate::clock::Clock;
use crate::query::PurgeFilter;
use crate::redis::SharedState;

/// What a replica should do about a missing answer.
pub(super) enum Turn {
    /// Another replica (or an earlier fetch) stored it.
    Answered(Arc<Entry>),
    /// Fetch it; release `lock` afterwards when this replica holds it.
    Fetch { lock: Option<Lock> },
}

/// A held cross-replica lock: its key and this holder's token.
pub(super) struct Lock {
    key: String,
    token: String,
}

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

/// Answers in Redis, by [`super::CacheKey::shared_id`].
#[derive(Clone)]
pub(super) struct RedisAnswers {
    shared: Arc<SharedState>,
    gzip_min: usize,
    clock: Clock,
}

impl RedisAnswers {
    pub(super) fn new(shared: Arc<SharedState>, gzip_min: usize, clock: Clock) -> Self {
        Self {
            shared,
            gzip_min,
            clock,
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.shared.is_up()
    }

    pub(super) async fn take_turn(&self, id: &str, accept: Accept) -> Turn {
        let shared = &self.shared;
        let lock_key = shared.key("lock", id);
        let read = || async {
            self.lookup(&id.to_owned())
                .await
                .filter(|e| accept.accepts(&e.deadlines))
        };
        if let Some(entry) = read().await {
            return Turn::Answered(entry);
        }
        for _attempt in 0..3 {
            match shared.try_lock(&lock_key, shared.lock_ms).await {
                Some(Some(token)) => {
                    return Turn::Fetch {
                        lock: Some(Lock {
                            key: lock_key,
                            token,
                        }),
                    };
                }
                None => return Turn::Fetch { lock: None },
                Some(None) => {}
            }
            let deadline = self.clock.now_ms() + shared.lock_ms as i64;
            let mut delay = Duration::from_millis(5);
            loop {
                // Real time: the poll paces Redis round trips, it decides nothing.
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(100));
                if let Some(entry) = read().await {
                    return Turn::Answered(entry);
                }
                match shared.exists(&lock_key).await {
                    // The holder is still at it.
                    Some(true) if self.clock.now_ms() < deadline => continue,
                    // The holder ran out of time: fetch without waiting further.
                    Some(true) => return Turn::Fetch { lock: None },
                    // The lock is gone and no answer came: try for the lock again.
                    Some(false) => break,
                    None => return Turn::Fetch { lock: None },
                }
            }
        }
        Turn::Fetch { lock: None }
    }

    /// Releases `lock` if this holder still has it (never another replica's).
    pub(super) async fn release(&self, lock: &Lock) {
        self.shared.unlock(&lock.key, &lock.token).await;
    }
}

impl Store<String, Arc<Entry>> for RedisAnswers {
    async fn lookup(&self, id: &String) -> Option<Arc<Entry>> {
        let bytes = self.shared.get(&self.shared.key("resp", id)).await?;
        decode(&bytes, self.gzip_min).map(Arc::new)
    }

    /// Stores `entry` for the other replicas (gzip-compressed) for as long as it may be served.
    async fn insert(&self, id: String, entry: Arc<Entry>) {
        let d = &entry.deadlines;
        let until = d.stale_while_revalidate_until.max(d.stale_if_error_until);
        let ttl = (until - self.clock.now_ms()).max(1) as u64;
        if let Some(bytes) = encode(&entry) {
            self.shared
                .set(&self.shared.key("resp", &id), &bytes, ttl)
                .await;
        }
    }

    /// Everything: every shared answer goes. Keys are hashes of the question, so a filtered
    /// purge cannot pick answers out here; those expire with their deadlines.
    async fn purge(&self, filter: &PurgeFilter) -> u64 {
        if !filter.is_everything() {
            return 0;
        }
        self.shared.delete_kind("resp").await
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
