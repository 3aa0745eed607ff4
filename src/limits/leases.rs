//! Global caller limits without a Redis round trip per request: each replica holds a lease on
//! each active caller's shared GCRA bucket and decides locally, settling with Redis in the
//! background.
//!
//! A lease is this replica's view of the bucket: its theoretical arrival time (TAT) as Redis
//! last reported it, plus the requests this replica served since. A request is decided on the
//! view alone (no network), and counted in it. After half a lease of requests (or when the view
//! is older than [`REFRESH_MS`]) one background `EVALSHA` charges them to Redis and brings back
//! the bucket's TAT, which now includes every other replica's settled requests. Only a replica
//! that has served a whole lease unsettled (its background settlement not back yet), or that
//! has no view of the caller yet, waits for Redis; and while a whole lease is in flight, the
//! requests arriving wait for its answer instead of each asking Redis again.
//!
//! The bound: at any moment a replica has served at most `lease` requests that Redis (and so
//! the other replicas) do not know of, and it serves at most that many on a view before it is
//! refreshed. So across N replicas a caller gets at most N x lease requests beyond what its
//! GCRA allows in any window, and what it got beyond is charged to its bucket, so it is paid
//! back by later refusals. A view never counts requests that did not happen, so it never
//! refuses a caller that the bucket would allow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::identity::Caller;
use crate::redis::{Gcra, SharedState};

/// A view older than this (ms) is refreshed in the background when next used, so a replica
/// that serves a caller now and then does not decide on what Redis said minutes ago.
pub const REFRESH_MS: i64 = 1_000;

/// Longest a request waits for a settlement in flight (Redis' own timeout normally ends it
/// sooner); past it the local limits decide.
const WAIT_LIMIT: Duration = Duration::from_secs(2);

/// Whose shared bucket: a caller's, or an address's ceiling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketKey {
    Caller(Caller),
    Ceiling(IpAddr),
}

impl BucketKey {
    /// The bucket's key in Redis, spelled only when Redis is asked (not on every request).
    pub fn redis_key(&self, shared: &SharedState) -> String {
        match self {
            BucketKey::Caller(caller) => shared.key("caller", &caller.to_string()),
            BucketKey::Ceiling(ip) => shared.key("ceiling", &ip.to_string()),
        }
    }
}

/// A shared GCRA bucket: whose, ms between cells, and burst.
pub struct Bucket {
    pub key: BucketKey,
    pub period_ms: u64,
    pub burst: u32,
}

struct Lease {
    /// The bucket's TAT as this replica knows it (ms, the gateway's clock).
    tat_ms: i64,
    /// Requests served here and not yet sent to Redis.
    unsettled: u32,
    /// Requests sent to Redis whose settlement has not answered yet.
    in_flight: u32,
    /// Requests served here since this lease was created (settlements replay those served
    /// after they were sent).
    served: u64,
    /// A background settlement is under way.
    settling: bool,
    /// When Redis last answered for this lease.
    settled_at_ms: i64,
    /// Counts settlements answered (or failed), so a waiter knows whether it missed one.
    generation: u64,
    /// Wakes the requests waiting for a settlement in flight.
    done: Arc<Notify>,
    /// Redis has answered once: until then the view is unknown, and the requests arriving
    /// wait for the first answer instead of each asking.
    open: bool,
}

impl Lease {
    /// A lease whose first read is in flight.
    fn opening(now_ms: i64) -> Self {
        Self {
            tat_ms: i64::MIN,
            unsettled: 0,
            in_flight: 0,
            served: 0,
            settling: false,
            settled_at_ms: now_ms,
            generation: 0,
            done: Arc::default(),
            open: false,
        }
    }
}

impl Lease {
    /// GCRA on the view; an allowed request is counted in it.
    fn decide(&mut self, now_ms: i64, bucket: &Bucket) -> Gcra {
        let period = i64::try_from(bucket.period_ms.max(1)).unwrap_or(i64::MAX);
        let burst = i64::from(bucket.burst.max(1));
        let tat = self.tat_ms.max(now_ms);
        let new_tat = tat.saturating_add(period);
        let allow_at = new_tat.saturating_sub(period.saturating_mul(burst));
        if allow_at > now_ms {
            return Gcra {
                allowed: false,
                remaining: 0,
                retry_after_ms: (allow_at - now_ms) as u64,
                reset_ms: (tat - now_ms) as u64,
            };
        }
        self.tat_ms = new_tat;
        self.unsettled += 1;
        self.served += 1;
        let room = now_ms
            .saturating_add(period.saturating_mul(burst))
            .saturating_sub(new_tat);
        Gcra {
            allowed: true,
            remaining: u32::try_from(room / period).unwrap_or(0),
            retry_after_ms: 0,
            reset_ms: (new_tat - now_ms) as u64,
        }
    }

    /// Takes the unsettled requests for a settlement: how many, and the mark to replay from.
    fn send(&mut self) -> (u32, u64) {
        let charge = std::mem::take(&mut self.unsettled);
        self.in_flight += charge;
        (charge, self.served)
    }
}

/// This replica's leases, by bucket.
#[derive(Default)]
pub struct Leases {
    held: Mutex<HashMap<BucketKey, Lease, foldhash::fast::RandomState>>,
}

enum Next {
    Decided(Gcra),
    /// Ask Redis: no view yet, or a whole lease served and not all of it sent.
    Settle {
        charge: u32,
        mark: u64,
    },
    /// A whole lease is in flight: wait for its answer, asking Redis nothing more.
    Wait {
        done: Arc<Notify>,
        generation: u64,
    },
}

impl Leases {
    /// Decides one request on `bucket` with leases of `lease` requests; `None` when Redis is
    /// out of reach (the caller then applies the local limits).
    pub async fn check(
        self: &Arc<Self>,
        shared: &Arc<SharedState>,
        bucket: Bucket,
        lease: u32,
        now_ms: i64,
    ) -> Option<Gcra> {
        loop {
            let next = {
                let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
                match held.get_mut(&bucket.key) {
                    None => {
                        held.insert(bucket.key.clone(), Lease::opening(now_ms));
                        Next::Settle { charge: 0, mark: 0 }
                    }
                    Some(l) if !l.open => Next::Wait {
                        done: l.done.clone(),
                        generation: l.generation,
                    },
                    Some(l) if l.unsettled + l.in_flight >= lease => {
                        if l.unsettled > 0 {
                            let (charge, mark) = l.send();
                            Next::Settle { charge, mark }
                        } else {
                            Next::Wait {
                                done: l.done.clone(),
                                generation: l.generation,
                            }
                        }
                    }
                    Some(l) => Next::Decided(self.decide_on(l, shared, &bucket, lease, now_ms)),
                }
            };
            match next {
                Next::Decided(decision) => return Some(decision),
                Next::Settle { charge, mark } => {
                    return self.settle(shared, &bucket, charge, mark, now_ms).await;
                }
                Next::Wait { done, generation } => {
                    let answered = done.notified();
                    tokio::pin!(answered);
                    answered.as_mut().enable();
                    if self.generation(&bucket.key) == Some(generation)
                        && tokio::time::timeout(WAIT_LIMIT, answered).await.is_err()
                    {
                        return None;
                    }
                }
            }
        }
    }

    /// Decides one request on each of `buckets` in turn, stopping at the first refusal,
    /// without waiting: only when every one has an open lease with room, else `None`, having
    /// counted nothing (then [`Leases::check`] each). The decision that stands (the refusal, or
    /// the last bucket's) comes back with its bucket's place in `buckets`.
    pub fn decide_now(
        self: &Arc<Self>,
        shared: &Arc<SharedState>,
        buckets: &[(&Bucket, u32)],
        now_ms: i64,
    ) -> Option<(usize, Gcra)> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let ready = buckets.iter().all(|(bucket, lease)| {
            held.get(&bucket.key)
                .is_some_and(|l| l.open && l.unsettled + l.in_flight < *lease)
        });
        if !ready {
            return None;
        }
        let mut decided = None;
        for (at, (bucket, lease)) in buckets.iter().enumerate() {
            let lease_held = held.get_mut(&bucket.key)?;
            let decision = self.decide_on(lease_held, shared, bucket, *lease, now_ms);
            let refused = !decision.allowed;
            decided = Some((at, decision));
            if refused {
                break;
            }
        }
        decided
    }

    /// Decides one request on an open lease with room, and starts a settlement in the
    /// background once half a lease is unsettled or the view is old.
    fn decide_on(
        self: &Arc<Self>,
        l: &mut Lease,
        shared: &Arc<SharedState>,
        bucket: &Bucket,
        lease: u32,
        now_ms: i64,
    ) -> Gcra {
        let decision = l.decide(now_ms, bucket);
        let stale = now_ms.saturating_sub(l.settled_at_ms) >= REFRESH_MS;
        if !l.settling && (l.unsettled * 2 >= lease || stale) {
            l.settling = true;
            let (charge, mark) = l.send();
            self.settle_in_background(shared, bucket, charge, mark, now_ms);
        }
        decision
    }

    fn generation(&self, key: &BucketKey) -> Option<u64> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(key).map(|l| l.generation)
    }

    /// Settles `charge` requests and waits for the answer, then decides on the new view.
    async fn settle(
        &self,
        shared: &Arc<SharedState>,
        bucket: &Bucket,
        charge: u32,
        mark: u64,
        now_ms: i64,
    ) -> Option<Gcra> {
        let tat = shared
            .settle(
                &bucket.key.redis_key(shared),
                now_ms,
                bucket.period_ms,
                charge,
            )
            .await;
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tat) = tat else {
            match held.get_mut(&bucket.key) {
                Some(lease) if !lease.open => {
                    // Never opened: the next request tries again.
                    answered(lease);
                    held.remove(&bucket.key);
                }
                Some(lease) => unsent(lease, charge),
                None => {}
            }
            return None;
        };
        let lease = held
            .entry(bucket.key.clone())
            .or_insert_with(|| Lease::opening(now_ms));
        lease.open = true;
        merge(lease, tat, charge, mark, now_ms, bucket);
        Some(lease.decide(now_ms, bucket))
    }

    fn settle_in_background(
        self: &Arc<Self>,
        shared: &Arc<SharedState>,
        bucket: &Bucket,
        charge: u32,
        mark: u64,
        now_ms: i64,
    ) {
        let leases = self.clone();
        let shared = shared.clone();
        let bucket = Bucket {
            key: bucket.key.clone(),
            period_ms: bucket.period_ms,
            burst: bucket.burst,
        };
        tokio::spawn(async move {
            let tat = shared
                .settle(
                    &bucket.key.redis_key(&shared),
                    now_ms,
                    bucket.period_ms,
                    charge,
                )
                .await;
            let mut held = leases.held.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(lease) = held.get_mut(&bucket.key) {
                lease.settling = false;
                match tat {
                    Some(tat) => merge(lease, tat, charge, mark, now_ms, &bucket),
                    None => unsent(lease, charge),
                }
            }
        });
    }

    /// Drops leases with nothing to settle whose bucket is full again: a new view is as good.
    pub fn sweep(&self, now_ms: i64) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|_, l| {
            !l.open || l.unsettled > 0 || l.in_flight > 0 || l.settling || l.tat_ms > now_ms
        });
        held.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Folds a settlement's answer into the lease: Redis' TAT (which includes the `charge` just
/// sent and every replica's settled requests) plus what this replica served since `mark`. The
/// view only moves forward: both are lower bounds of the bucket's true TAT.
fn merge(lease: &mut Lease, tat: i64, charge: u32, mark: u64, now_ms: i64, b: &Bucket) {
    lease.in_flight = lease.in_flight.saturating_sub(charge);
    let since = i64::try_from(lease.served.saturating_sub(mark)).unwrap_or(i64::MAX);
    let period = i64::try_from(b.period_ms.max(1)).unwrap_or(i64::MAX);
    lease.tat_ms = lease
        .tat_ms
        .max(tat.saturating_add(since.saturating_mul(period)));
    lease.settled_at_ms = lease.settled_at_ms.max(now_ms);
    answered(lease);
}

/// Wakes the requests waiting for a settlement: one has come back.
fn answered(lease: &mut Lease) {
    lease.generation += 1;
    lease.done.notify_waiters();
}

/// A settlement that failed: its requests wait for the next one (Redis is back).
fn unsent(lease: &mut Lease, charge: u32) {
    lease.in_flight = lease.in_flight.saturating_sub(charge);
    lease.unsettled += charge;
    answered(lease);
}
