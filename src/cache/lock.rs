//! Cross-replica fetch locks, one protocol for both shared tiers (whole answers and runs of
//! segments), in the spirit of pingora-cache's `lock.rs`: one replica fetches, the others
//! wait with a timeout.
//!
//! A lock is `SET key token NX PX ttl` with a token of the holder's own. The holder renews it
//! every third of its TTL while the fetch runs (a heartbeat) and releases it only while it
//! still holds its token. Waiters poll for the result and for the lock itself: the result
//! lands (done), the lock disappears without one (the holder failed, or died and its lock
//! lapsed: try for the lock again), or a live holder outlasts the waiter's patience (fetch
//! without the lock). A dead holder therefore costs the others at most about one lock TTL.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::redis::SharedState;

/// What a replica should do about something another replica may be fetching.
pub(super) enum Turn<T> {
    /// Another replica fetched it.
    Found(T),
    /// Fetch it; release the lock (when this replica holds one) afterwards.
    Fetch(Option<HeldLock>),
}

/// A lock this replica holds, renewed in the background until released or dropped.
pub(super) struct HeldLock {
    shared: Arc<SharedState>,
    key: String,
    token: String,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl HeldLock {
    /// Stops the heartbeat and deletes the lock if it is still this holder's: the others
    /// take their turn at once instead of when it lapses.
    pub(super) async fn release(self) {
        self.heartbeat.abort();
        self.shared.unlock(&self.key, &self.token).await;
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        // A fetch cancelled (or a replica stopped) before release: stop renewing, and the
        // lock lapses within its TTL.
        self.heartbeat.abort();
    }
}

/// Longest pause between two looks of a waiter.
const MAX_POLL: Duration = Duration::from_millis(50);

/// Takes turns for fetches shared by replicas.
#[derive(Clone)]
pub(super) struct FetchLocks {
    shared: Arc<SharedState>,
    clock: Clock,
}

impl FetchLocks {
    pub(super) fn new(shared: Arc<SharedState>, clock: Clock) -> Self {
        Self { shared, clock }
    }

    /// Waits its turn for what `lock_key` guards: `look` finds what another replica fetched
    /// (it is asked after each pause), or this replica gets the lock to fetch it.
    pub(super) async fn take_turn<T, F, Fut>(&self, lock_key: &str, look: F) -> Turn<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let shared = &self.shared;
        let ttl = shared.lock_ttl_ms;
        // A few turns: each lock that disappears without a result gives another try.
        for _turn in 0..3 {
            match shared.try_lock(lock_key, ttl).await {
                Some(Some(token)) => {
                    return Turn::Fetch(Some(self.hold(lock_key.to_owned(), token)));
                }
                None => return Turn::Fetch(None),
                Some(None) => {}
            }
            // A live holder (renewing its lock) is waited for this long at most: past the
            // gateway's patience (`redis.lock_ms`) the waiter fetches for itself.
            let patience_until = self.clock.now_ms() + shared.lock_ms as i64;
            let mut delay = Duration::from_millis(5);
            loop {
                // Real time: the poll paces Redis round trips; the result and the lock decide.
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_POLL);
                if let Some(found) = look().await {
                    return Turn::Found(found);
                }
                match shared.exists(lock_key).await {
                    Some(true) if self.clock.now_ms() < patience_until => continue,
                    Some(true) => return Turn::Fetch(None),
                    // Released without a result (a failed or partly understood fetch), or
                    // lapsed (a dead holder): take a turn.
                    Some(false) => break,
                    None => return Turn::Fetch(None),
                }
            }
        }
        Turn::Fetch(None)
    }

    /// The lock at once, or not at all: `Some(Some(lock))` when this replica got it,
    /// `Some(None)` when Redis is out of reach (go alone), `None` when another replica holds
    /// it (for work that never waits, such as prefetching).
    pub(super) async fn try_hold(&self, lock_key: &str) -> Option<Option<HeldLock>> {
        match self
            .shared
            .try_lock(lock_key, self.shared.lock_ttl_ms)
            .await
        {
            Some(Some(token)) => Some(Some(self.hold(lock_key.to_owned(), token))),
            Some(None) => None,
            None => Some(None),
        }
    }

    /// Holds `key` with `token`, renewing it every third of its TTL until released. A renewal
    /// that finds the lock gone or taken stops the heartbeat (never extends another's lock).
    fn hold(&self, key: String, token: String) -> HeldLock {
        let shared = self.shared.clone();
        let ttl = shared.lock_ttl_ms;
        let (renew_key, renew_token) = (key.clone(), token.clone());
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis((ttl / 3).max(1))).await;
                if !shared.renew(&renew_key, &renew_token, ttl).await {
                    return;
                }
            }
        });
        HeldLock {
            shared: self.shared.clone(),
            key,
            token,
            heartbeat,
        }
    }
}
