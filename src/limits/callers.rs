//! Callers' budgets (GCRA, `governor`, on the gateway's clock): each caller's quota, a ceiling
//! per client address across every id it sends, and how many forced refreshes (`no-cache`) a
//! caller may make. The budgets live in this replica or, with Redis, across every replica
//! ([`Budget`]); [`CallerLimits::check`] decides through whichever is in force, so the HTTP
//! layer only renders the [`Verdict`] (its `RateLimit` headers).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use governor::clock::Clock as _;
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::HeaderName;

use super::access::{Access, AllowedAppliances};
use super::identity::{Asking, Caller, Identifier, Identity};
use super::leases::{Bucket, BucketKey, Leases};
use crate::clock::Clock;
use crate::redis::{Gcra, SharedState};
use crate::settings::{ClientQuota, RateLimitSettings};

/// Keyed by caller with a randomly seeded `foldhash` (std's SipHash showed in the hit path's
/// profile); the seed keeps callers who choose their ids from choosing collisions.
type Keyed<K> = RateLimiter<
    K,
    DashMapStateStore<K, foldhash::fast::RandomState>,
    Clock,
    StateInformationMiddleware,
>;
type Direct = RateLimiter<NotKeyed, InMemoryState, Clock, StateInformationMiddleware>;

fn keyed<K: Clone + std::hash::Hash + Eq>(quota: Quota, clock: &Clock) -> Keyed<K> {
    RateLimiter::<K, _, _, StateInformationMiddleware>::new(
        quota,
        DashMapStateStore::with_hasher(foldhash::fast::RandomState::default()),
        clock.clone(),
    )
}

/// A caller's budget after this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    /// Requests the caller may make at once (the burst).
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the whole burst is available again.
    pub reset_secs: u64,
}

pub enum Decision {
    Allowed(RateState),
    Limited {
        state: RateState,
        retry_after_secs: u64,
    },
}

/// A decision, and the policy it was made under.
pub struct Verdict {
    pub decision: Decision,
    pub policy: PolicyText,
}

/// A quota as `RateLimit-Policy` states it (`600;w=60;burst=100`): digits and `;w=burst`
/// only, so always a valid header value. Interned: copying it copies a pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyText(&'static str);

impl PolicyText {
    /// The policy text of `quota`.
    pub fn of(quota: &ClientQuota) -> Self {
        PolicyText(interned(format!(
            "{};w=60;burst={}",
            quota.per_minute, quota.burst
        )))
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// A [`Verdict`] now, or one that waits on Redis.
pub enum Check {
    Now(Verdict),
    Later(BoxFuture<'static, Verdict>),
}

/// Where callers' budgets are kept: this replica's memory, or Redis shared by every replica.
trait Budget: Send + Sync {
    fn check(&self, rules: &Arc<Rules>, leases: &Arc<Leases>, who: &Identity) -> Check;
}

/// Budgets in this replica.
struct Local;

impl Budget for Local {
    fn check(&self, rules: &Arc<Rules>, _: &Arc<Leases>, who: &Identity) -> Check {
        Check::Now(rules.check(who))
    }
}

/// Budgets in Redis, on this replica's leases; the local budgets while Redis is out of reach.
struct Shared(Arc<SharedState>);

impl Budget for Shared {
    fn check(&self, rules: &Arc<Rules>, leases: &Arc<Leases>, who: &Identity) -> Check {
        if !self.0.is_up() {
            return Check::Now(rules.check(who));
        }
        // Most requests are decided on this replica's leases at once.
        if let Some(verdict) = rules.check_shared_now(&self.0, leases, who) {
            return Check::Now(verdict);
        }
        let (rules, leases, shared, who) =
            (rules.clone(), leases.clone(), self.0.clone(), who.clone());
        Check::Later(Box::pin(async move {
            match rules.check_shared(&shared, &leases, &who).await {
                Some(verdict) => verdict,
                None => rules.check(&who),
            }
        }))
    }
}

/// A quota, and its `RateLimit-Policy` text, rendered once.
struct Policy {
    quota: ClientQuota,
    header: PolicyText,
}

/// Every policy header text rendered so far, kept for the life of the process: a static
/// header value is handed to each response without an allocation or a reference count that
/// every worker's core writes. Interned, so reloads add only policies never seen before.
static POLICY_TEXTS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

fn interned(text: String) -> &'static str {
    let mut texts = POLICY_TEXTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = texts.iter().find(|t| **t == text) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.into_boxed_str());
    texts.push(leaked);
    leaked
}

impl Policy {
    fn new(quota: ClientQuota) -> Self {
        Self {
            header: PolicyText::of(&quota),
            quota,
        }
    }

    fn header(&self) -> PolicyText {
        self.header
    }

    fn gcra(&self) -> Quota {
        quota(&self.quota)
    }
}

/// The limits in force, replaced whole when the configuration is reloaded (limiters whose
/// quota did not change are carried over, with the budgets callers have used).
struct Rules {
    settings: Arc<RateLimitSettings>,
    identifier: Identifier,
    /// Which appliances each caller may ask (reloaded with the rest).
    access: Access,
    default: Arc<Keyed<Caller>>,
    default_policy: Policy,
    overrides: HashMap<Box<str>, (Arc<Direct>, Policy)>,
    /// Every caller from one address but proven ids, whatever ids they send.
    per_ip: Arc<Keyed<IpAddr>>,
    per_ip_policy: Policy,
    /// Whether the ceiling can bind before an anonymous caller's own quota does (else it
    /// is not checked for them: their quota is per address already).
    ceiling_binds_anonymous: bool,
    /// Forced refreshes, by principal; `None` when `no-cache` never forces one.
    refetches: Option<Arc<Keyed<Caller>>>,
    no_cache_per_minute: u32,
    max_tracked: usize,
    /// When the last over-the-cap sweep ran (ms, the gateway's clock), so a flood of new
    /// callers sweeps at most a few times a second instead of on every request.
    last_sweep_ms: AtomicI64,
    clock: Clock,
}

/// Least time between two sweeps forced by too many tracked callers.
const SWEEP_GAP_MS: i64 = 250;

/// Requests a thread lets pass between two counts of the tracked callers.
const CROWD_CHECK_EVERY: u32 = 64;

thread_local! {
    /// Requests this thread may still pass before counting the tracked callers again.
    static CROWD_CHECK: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn quota(q: &ClientQuota) -> Quota {
    let per_minute = NonZeroU32::new(q.per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(q.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

/// At most `n` in any 60 s: a burst of a third, refilled at the rest.
fn minute_window(n: NonZeroU32) -> Quota {
    let burst = (n.get() / 3).max(1);
    let refill = n.get().saturating_sub(burst).max(1);
    let period = Duration::from_micros(60_000_000_u64.div_ceil(u64::from(refill)));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_minute(n))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

impl Rules {
    fn new(s: &RateLimitSettings, clock: Clock, previous: Option<&Rules>) -> Self {
        let default_quota = ClientQuota {
            per_minute: s.per_client_per_minute.get(),
            burst: s.burst.get(),
        };
        let per_ip_quota = ClientQuota {
            per_minute: s.per_ip_per_minute.get(),
            burst: s.per_ip_burst.get(),
        };
        let default_policy = Policy::new(default_quota);
        let per_ip_policy = Policy::new(per_ip_quota);
        let default = match previous {
            Some(p) if p.default_policy.quota == default_policy.quota => p.default.clone(),
            _ => Arc::new(keyed(default_policy.gcra(), &clock)),
        };
        let per_ip = match previous {
            Some(p) if p.per_ip_policy.quota == per_ip_policy.quota => p.per_ip.clone(),
            _ => Arc::new(keyed(per_ip_policy.gcra(), &clock)),
        };
        let refetches = match previous {
            Some(p) if p.no_cache_per_minute == s.no_cache_per_minute => p.refetches.clone(),
            _ => NonZeroU32::new(s.no_cache_per_minute)
                .map(|n| Arc::new(keyed(minute_window(n), &clock))),
        };
        Self {
            settings: Arc::new(s.clone()),
            identifier: Identifier::new(s),
            access: Access::new(s),
            default,
            overrides: s
                .overrides
                .iter()
                .map(|(id, q)| {
                    let kept = previous
                        .and_then(|p| p.overrides.get(id.as_str()))
                        .filter(|(_, policy)| policy.quota == *q)
                        .map(|(limiter, _)| limiter.clone());
                    let limiter = kept.unwrap_or_else(|| {
                        Arc::new(
                            RateLimiter::direct_with_clock(quota(q), clock.clone())
                                .with_middleware::<StateInformationMiddleware>(),
                        )
                    });
                    (Box::from(id.as_str()), (limiter, Policy::new(q.clone())))
                })
                .collect(),
            per_ip,
            ceiling_binds_anonymous: s.per_ip_per_minute < s.per_client_per_minute
                || s.per_ip_burst < s.burst,
            default_policy,
            per_ip_policy,
            refetches,
            no_cache_per_minute: s.no_cache_per_minute,
            max_tracked: s.max_tracked_clients.get(),
            last_sweep_ms: AtomicI64::new(i64::MIN),
            clock,
        }
    }

    pub fn identify<R: Asking + ?Sized>(&self, req: &R) -> Identity {
        self.identifier.identify(req)
    }

    /// The quota that applies to `caller`, and its policy header.
    fn policy(&self, caller: &Caller) -> &Policy {
        match caller {
            Caller::Id(id) => self
                .overrides
                .get(id)
                .map_or(&self.default_policy, |(_, p)| p),
            _ => &self.default_policy,
        }
    }

    /// Whether the per-address ceiling is checked for `who`.
    fn ceiling_applies(&self, who: &Identity) -> bool {
        !who.is_proven()
            && who.address.is_some()
            && (self.ceiling_binds_anonymous || matches!(who.caller, Caller::Id(_)))
    }

    /// The caller's limit, and the per-address ceiling, across every replica through Redis
    /// (on this replica's leases, see `limits::leases`); `None` when Redis is out of reach
    /// (then the local limits apply).
    async fn check_shared(
        &self,
        shared: &Arc<SharedState>,
        leases: &Arc<Leases>,
        who: &Identity,
    ) -> Option<Verdict> {
        let now_ms = self.clock.now_ms();
        let lease = self.settings.lease.get();
        if let Some(ceiling) = self.ceiling_bucket(who) {
            let decision = ceiling.decide(shared, leases, lease, now_ms).await?;
            if let Decision::Limited { .. } = decision {
                return Some(Verdict {
                    decision,
                    policy: self.per_ip_policy.header(),
                });
            }
        }
        let policy = self.policy(&who.caller);
        let bucket = SharedBucket {
            key: BucketKey::Caller(who.caller.clone()),
            quota: &policy.quota,
        };
        let decision = bucket.decide(shared, leases, lease, now_ms).await?;
        Some(Verdict {
            decision,
            policy: policy.header(),
        })
    }

    /// [`Rules::check_shared`] without waiting, as most requests can be: `None`, having
    /// counted nothing, when the decision waits on Redis (a bucket decided there on every
    /// request, a caller this replica holds no lease for yet, a whole lease unsettled).
    fn check_shared_now(
        &self,
        shared: &Arc<SharedState>,
        leases: &Arc<Leases>,
        who: &Identity,
    ) -> Option<Verdict> {
        let lease = self.settings.lease.get();
        let policy = self.policy(&who.caller);
        let caller = SharedBucket {
            key: BucketKey::Caller(who.caller.clone()),
            quota: &policy.quota,
        };
        // A lease of 1 means every request is decided in Redis.
        let caller = caller.leased(lease)?;
        let ceiling = match self.ceiling_bucket(who) {
            Some(ceiling) => Some(ceiling.leased(lease)?),
            None => None,
        };
        let (both, one);
        let buckets: &[(&Bucket, u32)] = match &ceiling {
            Some(ip) => {
                both = [(&ip.0, ip.1), (&caller.0, caller.1)];
                &both
            }
            None => {
                one = [(&caller.0, caller.1)];
                &one
            }
        };
        let (at, g) = leases.decide_now(shared, buckets, self.clock.now_ms())?;
        // The ceiling comes first: a refusal there is the ceiling's.
        let policy = if ceiling.is_some() && at == 0 {
            &self.per_ip_policy
        } else {
            policy
        };
        Some(Verdict {
            decision: shared_decision(&g, &policy.quota),
            policy: policy.header(),
        })
    }

    /// The per-address ceiling's shared bucket, when it applies to `who`.
    fn ceiling_bucket(&self, who: &Identity) -> Option<SharedBucket<'_>> {
        let ip = who.address.filter(|_| self.ceiling_applies(who))?;
        Some(SharedBucket {
            key: BucketKey::Ceiling(ip),
            quota: &self.per_ip_policy.quota,
        })
    }

    /// The caller's limit and the per-address ceiling, in this replica.
    fn check(&self, who: &Identity) -> Verdict {
        self.sweep_if_crowded();
        if self.ceiling_applies(who)
            && let Some(ip) = who.address
        {
            // The clock is read again only when refused: a read per request showed in profiles.
            let outcome = self
                .per_ip
                .check_key(&ip)
                .map_err(|e| e.wait_time_from(self.per_ip.clock().now()));
            if outcome.is_err() {
                return Verdict {
                    decision: decide(outcome, &self.per_ip_policy.quota),
                    policy: self.per_ip_policy.header(),
                };
            }
        }
        if let Caller::Id(id) = &who.caller
            && let Some((limiter, policy)) = self.overrides.get(id)
        {
            let outcome = limiter
                .check()
                .map_err(|e| e.wait_time_from(limiter.clock().now()));
            return Verdict {
                decision: decide(outcome, &policy.quota),
                policy: policy.header(),
            };
        }
        let outcome = self
            .default
            .check_key(&who.caller)
            .map_err(|e| e.wait_time_from(self.default.clock().now()));
        Verdict {
            decision: decide(outcome, &self.default_policy.quota),
            policy: self.default_policy.header(),
        }
    }

    /// Whether `who` may force a refresh (`Cache-Control: no-cache`) now: at most
    /// `no_cache_per_minute` in any minute, charged to a proven id or else the address.
    fn may_refetch(&self, who: &Identity) -> bool {
        self.refetches
            .as_ref()
            .is_some_and(|r| r.check_key(&who.principal()).is_ok())
    }

    /// [`Rules::may_refetch`] across every replica; `None` when Redis is out of reach.
    async fn may_refetch_shared(&self, shared: &SharedState, who: &Identity) -> Option<bool> {
        let n = NonZeroU32::new(self.no_cache_per_minute)?;
        let window = minute_window(n);
        let period_ms = window.replenish_interval().as_millis().max(1) as u64;
        let g = shared
            .gcra(
                &shared.key("refetch", &who.principal().to_string()),
                period_ms,
                window.burst_size().get(),
            )
            .await?;
        Some(g.allowed)
    }

    fn sweep_if_crowded(&self) {
        // Counting the tracked callers locks every shard of both maps, which showed in the
        // hit path's profile: each thread counts once every `CROWD_CHECK_EVERY` requests, so
        // the cap may be exceeded by at most that many callers per thread between checks.
        let due = CROWD_CHECK.with(|left| {
            let n = left.get();
            left.set(if n == 0 { CROWD_CHECK_EVERY - 1 } else { n - 1 });
            n == 0
        });
        if !due || self.default.len() + self.per_ip.len() <= self.max_tracked {
            return;
        }
        let now_ms = self.clock.now_ms();
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now_ms >= last.saturating_add(SWEEP_GAP_MS)
            && self
                .last_sweep_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep();
        }
    }

    /// Forgets callers whose budget is full again: they are indistinguishable from new ones.
    pub fn sweep(&self) {
        self.default.retain_recent();
        self.default.shrink_to_fit();
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
        if let Some(r) = &self.refetches {
            r.retain_recent();
            r.shrink_to_fit();
        }
    }

    pub fn tracked(&self) -> usize {
        self.default.len()
    }

    pub fn default_quota(&self) -> &ClientQuota {
        &self.default_policy.quota
    }

    pub fn per_ip_quota(&self) -> &ClientQuota {
        &self.per_ip_policy.quota
    }

    pub fn no_cache_per_minute(&self) -> u32 {
        self.no_cache_per_minute
    }

    pub fn keyed_ids(&self) -> Vec<String> {
        self.identifier.keyed_ids()
    }

    pub fn header(&self) -> &HeaderName {
        self.identifier.header()
    }
}

/// Every caller's limits. One atomic load per request; a reload stores new rules without
/// stopping anyone, and callers whose quota is unchanged keep their used budgets.
pub struct CallerLimits {
    rules: ArcSwap<Rules>,
    budget: Box<dyn Budget>,
    shared: Option<Arc<SharedState>>,
    /// Leases on the shared buckets (Redis mode); kept across reloads like the budgets.
    leases: Arc<Leases>,
    /// When leases were last swept because there were too many (ms, the gateway's clock).
    last_lease_sweep_ms: AtomicI64,
    clock: Clock,
}

impl CallerLimits {
    pub fn new(s: &RateLimitSettings, clock: Clock) -> Self {
        Self {
            rules: ArcSwap::from_pointee(Rules::new(s, clock.clone(), None)),
            budget: Box::new(Local),
            shared: None,
            leases: Arc::default(),
            last_lease_sweep_ms: AtomicI64::new(i64::MIN),
            clock,
        }
    }

    /// The budgets kept in Redis across every replica (while it is reachable) when `shared`
    /// is given, else in this replica.
    pub fn with_shared(mut self, shared: Option<Arc<SharedState>>) -> Self {
        self.budget = match &shared {
            Some(s) => Box::new(Shared(s.clone())),
            None => Box::new(Local),
        };
        self.shared = shared;
        self
    }

    /// Puts `s` in force (a configuration reload). Requests being checked finish on the
    /// rules they started with.
    pub fn reconfigure(&self, s: &RateLimitSettings) {
        let next = Rules::new(s, self.clock.clone(), Some(&self.rules.load()));
        self.rules.store(Arc::new(next));
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<RateLimitSettings> {
        self.rules.load().settings.clone()
    }

    /// Who is asking: a client id (proven by its key where it has one) and the address.
    pub fn identify<R: Asking + ?Sized>(&self, req: &R) -> Identity {
        self.rules.load().identify(req)
    }

    /// The appliances the caller of `req` may ask. The caller is identified (its key
    /// checked) only when some caller is limited: an open fleet costs requests nothing.
    pub fn allowed<R: Asking + ?Sized>(&self, req: &R) -> AllowedAppliances {
        let rules = self.rules.load();
        if !rules.access.limits_anyone() {
            return AllowedAppliances::All;
        }
        rules.access.of(&rules.identify(req))
    }

    /// Whether `who` may make this request: the caller's limit and the per-address ceiling,
    /// in the budgets in force.
    pub fn check(&self, who: &Identity) -> Check {
        // A guard, not a clone of the Arc: a reference count every worker's core writes on
        // every request showed in the hit path's profile.
        let rules = self.rules.load();
        let check = self.budget.check(&rules, &self.leases, who);
        self.after(&check, &rules);
        check
    }

    /// Who is asking and whether they may: [`CallerLimits::identify`] and
    /// [`CallerLimits::check`] on one load of the rules.
    pub fn identify_and_check<R: Asking + ?Sized>(&self, req: &R) -> (Identity, Check) {
        let rules = self.rules.load();
        let who = rules.identify(req);
        let check = self.budget.check(&rules, &self.leases, &who);
        self.after(&check, &rules);
        (who, check)
    }

    /// Sweeps leases when there are too many, on the path that waits on Redis anyway (counting
    /// them takes their lock).
    fn after(&self, check: &Check, rules: &Rules) {
        if let Check::Later(_) = check {
            self.sweep_leases_if_crowded(rules.max_tracked);
        }
    }

    /// [`CallerLimits::check`] in Redis alone, waiting for it; `None` when it is out of reach
    /// (tests of the shared budgets).
    pub async fn check_shared(&self, shared: &Arc<SharedState>, who: &Identity) -> Option<Verdict> {
        let rules = self.rules.load_full();
        self.sweep_leases_if_crowded(rules.max_tracked);
        rules.check_shared(shared, &self.leases, who).await
    }

    fn sweep_leases_if_crowded(&self, max_tracked: usize) {
        if self.leases.len() <= max_tracked {
            return;
        }
        let now_ms = self.clock.now_ms();
        let last = self.last_lease_sweep_ms.load(Ordering::Relaxed);
        if now_ms >= last.saturating_add(SWEEP_GAP_MS)
            && self
                .last_lease_sweep_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.leases.sweep(now_ms);
        }
    }

    /// Leases this replica holds on shared buckets (Redis mode).
    pub fn leases(&self) -> usize {
        self.leases.len()
    }

    /// Whether `who` may force a refresh (`Cache-Control: no-cache`) now: counted in Redis
    /// across every replica while it is reachable, else here.
    pub async fn may_refetch(&self, who: &Identity) -> bool {
        let rules = self.rules.load_full();
        if let Some(shared) = self.shared.as_ref().filter(|s| s.is_up())
            && let Some(allowed) = rules.may_refetch_shared(shared, who).await
        {
            return allowed;
        }
        rules.may_refetch(who)
    }

    /// Forgets callers whose budget is full again.
    pub fn sweep(&self) {
        self.rules.load().sweep();
        self.leases.sweep(self.clock.now_ms());
    }

    pub fn tracked(&self) -> usize {
        self.rules.load().tracked()
    }

    pub fn default_quota(&self) -> ClientQuota {
        self.rules.load().default_quota().clone()
    }

    pub fn per_ip_quota(&self) -> ClientQuota {
        self.rules.load().per_ip_quota().clone()
    }

    pub fn no_cache_per_minute(&self) -> u32 {
        self.rules.load().no_cache_per_minute()
    }

    pub fn keyed_ids(&self) -> Vec<String> {
        self.rules.load().keyed_ids()
    }

    pub fn header(&self) -> HeaderName {
        self.rules.load().header().clone()
    }

    /// The local count of forced refreshes, whatever the budget in force (unit tests).
    #[cfg(test)]
    fn may_refetch_here(&self, who: &Identity) -> bool {
        self.rules.load().may_refetch(who)
    }

    /// The local budgets' verdict, whatever the budget in force (unit tests).
    #[cfg(test)]
    fn check_here(&self, who: &Identity) -> (Decision, PolicyText) {
        let verdict = self.rules.load().check(who);
        (verdict.decision, verdict.policy)
    }
}

/// The requests a replica serves on one lease for a bucket of `burst`: the configured lease,
/// at most a tenth of the burst, so N replicas add at most N tenths of a burst. At 1 (bursts
/// under 20, or `rate_limit.lease = 1`) every request is decided in Redis, exactly.
pub fn effective_lease(configured: u32, burst: u32) -> u32 {
    configured.min(burst / 10).max(1)
}

/// One of a caller's shared GCRA buckets in Redis.
struct SharedBucket<'a> {
    key: BucketKey,
    quota: &'a ClientQuota,
}

impl SharedBucket<'_> {
    fn period_ms(&self) -> u64 {
        60_000 / u64::from(self.quota.per_minute.max(1))
    }

    /// The bucket as leases hold it, with its lease size; `None` when every request is
    /// decided in Redis (a lease of 1).
    fn leased(self, configured: u32) -> Option<(Bucket, u32)> {
        let lease = effective_lease(configured, self.quota.burst);
        (lease > 1).then(|| {
            let bucket = Bucket {
                period_ms: self.period_ms(),
                burst: self.quota.burst,
                key: self.key,
            };
            (bucket, lease)
        })
    }

    async fn decide(
        self,
        shared: &Arc<SharedState>,
        leases: &Arc<Leases>,
        lease: u32,
        now_ms: i64,
    ) -> Option<Decision> {
        let q = self.quota;
        if effective_lease(lease, q.burst) <= 1 {
            let key = self.key.redis_key(shared);
            let g = shared.gcra(&key, self.period_ms(), q.burst).await?;
            return Some(shared_decision(&g, q));
        }
        let (bucket, lease) = self.leased(lease)?;
        let g = leases.check(shared, bucket, lease, now_ms).await?;
        Some(shared_decision(&g, q))
    }
}

/// What a shared bucket's answer means for the caller.
fn shared_decision(g: &Gcra, q: &ClientQuota) -> Decision {
    let state = RateState {
        limit: q.burst,
        remaining: g.remaining,
        reset_secs: g.reset_ms.div_ceil(1000),
    };
    if g.allowed {
        Decision::Allowed(state)
    } else {
        Decision::Limited {
            state,
            retry_after_secs: g.retry_after_ms.div_ceil(1000).max(1),
        }
    }
}

fn decide(
    outcome: Result<governor::middleware::StateSnapshot, Duration>,
    q: &ClientQuota,
) -> Decision {
    let cell_ms = 60_000 / u64::from(q.per_minute.max(1));
    let state = |remaining: u32| RateState {
        limit: q.burst,
        remaining,
        reset_secs: (u64::from(q.burst - remaining.min(q.burst)) * cell_ms).div_ceil(1000),
    };
    match outcome {
        Ok(snapshot) => Decision::Allowed(state(snapshot.remaining_burst_capacity())),
        Err(wait) => Decision::Limited {
            state: state(0),
            retry_after_secs: wait.as_millis().div_ceil(1000).max(1) as u64,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::identity::Proof;
    use crate::settings::Settings;
    use std::num::NonZero;

    fn limits(per_minute: u32, burst: u32) -> (CallerLimits, Clock) {
        let mut s = Settings::defaults().rate_limit;
        s.per_client_per_minute = NonZero::new(per_minute).unwrap();
        s.burst = NonZero::new(burst).unwrap();
        s.overrides.insert(
            "dash".into(),
            ClientQuota {
                per_minute: 600,
                burst: 50,
            },
        );
        s.per_ip_per_minute = NonZero::new(120).unwrap();
        s.per_ip_burst = NonZero::new(10).unwrap();
        s.no_cache_per_minute = 6;
        let clock = Clock::manual(1_000_000);
        (CallerLimits::new(&s, clock.clone()), clock)
    }

    fn who(caller: Caller, ip: &str, proof: Proof) -> Identity {
        Identity {
            caller,
            address: Some(ip.parse().unwrap()),
            proof,
        }
    }

    fn id(name: &str) -> Identity {
        who(Caller::Id(name.into()), "192.0.2.1", Proof::Claimed)
    }

    fn allowed(d: &Decision) -> bool {
        matches!(d, Decision::Allowed(_))
    }

    #[test]
    fn a_flood_of_new_callers_is_forgotten_once_their_budgets_refill() {
        let mut s = Settings::defaults().rate_limit;
        s.max_tracked_clients = NonZero::new(100).unwrap();
        let clock = Clock::manual(1_000_000);
        let limits = CallerLimits::new(&s, clock.clone());
        let caller = |name: String, i: u32| {
            let ip = format!("10.0.{}.{}", i / 250, i % 250);
            who(Caller::Id(name.into()), &ip, Proof::Claimed)
        };
        for i in 0..1000 {
            let (d, _) = limits.check_here(&caller(format!("flood-{i}"), i));
            assert!(allowed(&d));
        }
        assert_eq!(limits.tracked(), 1000, "nobody's budget has refilled yet");
        // A minute later every budget is full again: the next crowd check sweeps them.
        clock.advance(std::time::Duration::from_secs(60));
        for i in 0..(2 * CROWD_CHECK_EVERY) {
            let (d, _) = limits.check_here(&caller(format!("late-{i}"), 1000 + i));
            assert!(allowed(&d));
        }
        let tracked = limits.tracked();
        assert!(
            tracked <= 2 * CROWD_CHECK_EVERY as usize,
            "{tracked} callers still tracked after the sweep"
        );
    }

    #[test]
    fn a_burst_then_limited_with_retry_after() {
        let (l, _) = limits(60, 3);
        let a = who(Caller::Id("a".into()), "192.0.2.50", Proof::Claimed);
        for expected in [2, 1, 0] {
            match l.check_here(&a).0 {
                Decision::Allowed(s) => assert_eq!(s.remaining, expected),
                Decision::Limited { .. } => panic!("limited too early"),
            }
        }
        match l.check_here(&a).0 {
            Decision::Limited {
                retry_after_secs,
                state,
            } => {
                assert_eq!(retry_after_secs, 1);
                assert_eq!(state.remaining, 0);
                assert_eq!(state.reset_secs, 3);
            }
            Decision::Allowed(_) => panic!("not limited"),
        }
        assert!(allowed(
            &l.check_here(&who(Caller::Id("b".into()), "192.0.2.51", Proof::Claimed))
                .0
        ));
        match l
            .check_here(&who(
                Caller::Id("dash".into()),
                "192.0.2.52",
                Proof::Claimed,
            ))
            .0
        {
            Decision::Allowed(s) => assert_eq!((s.limit, s.remaining), (50, 49)),
            Decision::Limited { .. } => panic!("override not applied"),
        }
    }

    #[test]
    fn rotating_ids_from_one_address_meet_the_ceiling() {
        let (l, clock) = limits(60, 3);
        let through = (0..40)
            .filter(|i| allowed(&l.check_here(&id(&format!("rotating-{i}"))).0))
            .count();
        assert_eq!(through, 10, "the address's burst, whatever the ids");
        let (decision, policy) = l.check_here(&id("yet-another"));
        assert!(!allowed(&decision));
        assert_eq!(policy.as_str(), "120;w=60;burst=10");
        // Another address is unaffected; a proven id is exempt.
        assert!(allowed(
            &l.check_here(&who(Caller::Id("x".into()), "192.0.2.2", Proof::Claimed))
                .0
        ));
        assert!(allowed(
            &l.check_here(&who(Caller::Id("dash".into()), "192.0.2.1", Proof::Proven))
                .0
        ));
        // The ceiling refills at its rate: 2 a second.
        clock.advance(Duration::from_secs(1));
        let through = (0..5)
            .filter(|i| allowed(&l.check_here(&id(&format!("later-{i}"))).0))
            .count();
        assert_eq!(through, 2);
    }

    #[test]
    fn forced_refreshes_are_counted_per_principal() {
        let (l, clock) = limits(6000, 1000);
        // 6 a minute: a burst of 2, then one every 15 s; rotating ids change nothing.
        let granted = (0..10)
            .filter(|i| l.may_refetch_here(&id(&format!("rotating-{i}"))))
            .count();
        assert_eq!(granted, 2);
        let elsewhere = who(
            Caller::Ip("192.0.2.9".parse().unwrap()),
            "192.0.2.9",
            Proof::Anonymous,
        );
        assert!(l.may_refetch_here(&elsewhere));
        clock.advance(Duration::from_secs(15));
        assert!(l.may_refetch_here(&id("any")));
        assert!(!l.may_refetch_here(&id("any")));
        // In any minute, at most 6.
        let mut total = 0;
        for _ in 0..60 {
            clock.advance(Duration::from_secs(1));
            total += usize::from(l.may_refetch_here(&id("any")));
        }
        assert!(total <= 6, "{total}");
    }

    #[test]
    fn a_million_callers_do_not_stay_in_memory() {
        // 60 000 per minute: a caller's state is fresh again 1 ms after its last request.
        let mut s = Settings::defaults().rate_limit;
        s.per_client_per_minute = NonZero::new(60_000).unwrap();
        s.burst = NonZero::new(1).unwrap();
        s.per_ip_per_minute = NonZero::new(60_000).unwrap();
        s.per_ip_burst = NonZero::new(1).unwrap();
        let clock = Clock::manual(1_000_000);
        let l = CallerLimits::new(&s, clock.clone());
        let mut peak = 0;
        for i in 0..1_000_000u32 {
            let ip = std::net::IpAddr::from(std::net::Ipv4Addr::from(i));
            let _ = l.check_here(&who(Caller::Ip(ip), &ip.to_string(), Proof::Anonymous));
            if i % 1000 == 0 {
                clock.advance(Duration::from_millis(5));
                peak = peak.max(l.tracked());
            }
        }
        assert!(
            peak < 1_000_000,
            "over-the-cap sweeps dropped idle callers (peak {peak})"
        );
        clock.advance(Duration::from_millis(5));
        l.sweep();
        assert_eq!(l.tracked(), 0);
    }
}
