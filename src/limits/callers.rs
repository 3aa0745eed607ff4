//! Per-caller rate limits (GCRA, `governor`), who a caller is, and the `RateLimit` headers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header::{HeaderName, HeaderValue};
use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use ipnet::IpNet;

use crate::redis::SharedState;
use crate::settings::{ClientQuota, RateLimitSettings, parse_proxy};

type Keyed = RateLimiter<
    Caller,
    DefaultKeyedStateStore<Caller>,
    governor::clock::DefaultClock,
    StateInformationMiddleware,
>;
type Direct =
    RateLimiter<NotKeyed, InMemoryState, governor::clock::DefaultClock, StateInformationMiddleware>;

/// Who is asking: a client id from the header, or an IP address. Stored in the request's
/// extensions for logging.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    Id(Box<str>),
    Ip(IpAddr),
    Unknown,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Id(id) => write!(f, "id:{id}"),
            Caller::Ip(ip) => write!(f, "ip:{ip}"),
            Caller::Unknown => f.write_str("unknown"),
        }
    }
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

/// A quota, and its `RateLimit-Policy` header, rendered once.
struct Policy {
    quota: ClientQuota,
    header: HeaderValue,
}

impl Policy {
    fn new(quota: ClientQuota) -> Self {
        let text = format!("{};w=60;burst={}", quota.per_minute, quota.burst);
        Self {
            header: HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("")),
            quota,
        }
    }
}

/// The limits in force, replaced whole when the configuration is reloaded.
struct Rules {
    settings: Arc<RateLimitSettings>,
    default: Arc<Keyed>,
    default_policy: Policy,
    overrides: HashMap<Box<str>, (Arc<Direct>, Policy)>,
    header: HeaderName,
    trusted: Vec<IpNet>,
}

impl Rules {
    /// The rules of `s`. A limiter whose quota is the same as in `previous` is kept, with the
    /// budgets callers have used: a reload that does not touch a quota resets nobody.
    fn new(s: &RateLimitSettings, previous: Option<&Rules>) -> Self {
        let default_quota = ClientQuota {
            per_minute: s.per_client_per_minute,
            burst: s.burst,
        };
        let default = match previous {
            Some(p) if p.default_policy.quota == default_quota => p.default.clone(),
            _ => Arc::new(
                RateLimiter::keyed(quota(&default_quota))
                    .with_middleware::<StateInformationMiddleware>(),
            ),
        };
        let overrides = s
            .overrides
            .iter()
            .map(|(id, q)| {
                let kept = previous
                    .and_then(|p| p.overrides.get(id.as_str()))
                    .filter(|(_, policy)| policy.quota == *q)
                    .map(|(limiter, _)| limiter.clone());
                let limiter = kept.unwrap_or_else(|| {
                    Arc::new(
                        RateLimiter::direct(quota(q))
                            .with_middleware::<StateInformationMiddleware>(),
                    )
                });
                (Box::from(id.as_str()), (limiter, Policy::new(q.clone())))
            })
            .collect();
        Self {
            settings: Arc::new(s.clone()),
            default,
            overrides,
            default_policy: Policy::new(default_quota),
            header: HeaderName::try_from(s.client_header.as_str())
                .unwrap_or(HeaderName::from_static("x-client-id")),
            trusted: s
                .trusted_proxies
                .iter()
                .filter_map(|p| parse_proxy(p))
                .collect(),
        }
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

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

pub struct CallerLimits {
    /// One atomic load per request; a reload stores new rules without stopping anyone.
    rules: ArcSwap<Rules>,
    /// When the last over-the-cap sweep ran (ms since the limiter started), so a flood of new
    /// callers sweeps at most a few times a second instead of on every request.
    last_sweep_ms: AtomicU64,
    started: Instant,
}

/// Least time between two sweeps forced by too many tracked callers.
const SWEEP_GAP_MS: u64 = 250;

fn quota(q: &ClientQuota) -> Quota {
    let per_minute = NonZeroU32::new(q.per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(q.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl CallerLimits {
    pub fn new(s: &RateLimitSettings) -> Self {
        Self {
            rules: ArcSwap::from_pointee(Rules::new(s, None)),
            last_sweep_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Puts `s` in force (a configuration reload). Requests being checked finish on the
    /// rules they started with; callers whose quota is unchanged keep their budgets.
    pub fn reconfigure(&self, s: &RateLimitSettings) {
        let next = Rules::new(s, Some(&self.rules.load()));
        self.rules.store(Arc::new(next));
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<RateLimitSettings> {
        self.rules.load().settings.clone()
    }

    /// The caller's identity: the client header when it holds a sensible id, else the
    /// client IP (from `X-Forwarded-For` only when the peer is a trusted proxy).
    pub fn identify(&self, req: &HttpRequest) -> Caller {
        let rules = self.rules.load();
        if let Some(id) = req
            .headers()
            .get(&rules.header)
            .and_then(|v| v.to_str().ok())
            .filter(|id| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Caller::Id(Box::from(id));
        }
        match req.peer_addr().map(|a| a.ip()) {
            Some(ip) if rules.is_trusted(ip) => {
                Caller::Ip(forwarded_client(&rules, req).unwrap_or(ip))
            }
            Some(ip) => Caller::Ip(ip),
            None => Caller::Unknown,
        }
    }

    /// The caller's limit across every replica, through Redis; `None` when Redis is out of
    /// reach (then the local limit applies).
    pub async fn check_shared(
        &self,
        shared: &SharedState,
        caller: &Caller,
    ) -> Option<(Decision, HeaderValue)> {
        let rules = self.rules.load_full();
        let policy = rules.policy(caller);
        let q = &policy.quota;
        let period_ms = 60_000 / u64::from(q.per_minute.max(1));
        let g = shared
            .gcra(
                &shared.key("caller", &caller.to_string()),
                period_ms,
                q.burst,
            )
            .await?;
        let state = RateState {
            limit: q.burst,
            remaining: g.remaining,
            reset_secs: g.reset_ms.div_ceil(1000),
        };
        let decision = if g.allowed {
            Decision::Allowed(state)
        } else {
            Decision::Limited {
                state,
                retry_after_secs: g.retry_after_ms.div_ceil(1000).max(1),
            }
        };
        Some((decision, policy.header.clone()))
    }

    /// The caller's limit on this replica, and the `RateLimit-Policy` header that goes with it.
    pub fn check(&self, caller: &Caller) -> (Decision, HeaderValue) {
        let rules = self.rules.load();
        if let Caller::Id(id) = caller
            && let Some((limiter, policy)) = rules.overrides.get(id)
        {
            let now = limiter.clock().now();
            let outcome = limiter.check().map_err(|e| e.wait_time_from(now));
            return (decide(outcome, &policy.quota), policy.header.clone());
        }
        if rules.default.len() > rules.settings.max_tracked_clients {
            let now_ms = self.started.elapsed().as_millis() as u64;
            let last = self.last_sweep_ms.load(Ordering::Relaxed);
            if now_ms >= last + SWEEP_GAP_MS
                && self
                    .last_sweep_ms
                    .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.sweep();
            }
        }
        let now = rules.default.clock().now();
        let outcome = rules
            .default
            .check_key(caller)
            .map_err(|e| e.wait_time_from(now));
        (
            decide(outcome, &rules.default_policy.quota),
            rules.default_policy.header.clone(),
        )
    }

    /// Forgets callers whose budget is full again: they are indistinguishable from new ones.
    pub fn sweep(&self) {
        let rules = self.rules.load();
        rules.default.retain_recent();
        rules.default.shrink_to_fit();
    }

    pub fn tracked(&self) -> usize {
        self.rules.load().default.len()
    }

    pub fn default_quota(&self) -> ClientQuota {
        self.rules.load().default_policy.quota.clone()
    }

    pub fn header(&self) -> HeaderName {
        self.rules.load().header.clone()
    }
}

/// The rightmost address in `X-Forwarded-For` that is not a trusted proxy.
fn forwarded_client(rules: &Rules, req: &HttpRequest) -> Option<IpAddr> {
    let chain: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    chain
        .iter()
        .rev()
        .find(|ip| !rules.is_trusted(**ip))
        .or(chain.first())
        .copied()
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
    use crate::settings::Settings;

    fn limits(per_minute: u32, burst: u32) -> CallerLimits {
        let mut s = Settings::defaults().rate_limit;
        s.per_client_per_minute = per_minute;
        s.burst = burst;
        s.overrides.insert(
            "dash".into(),
            ClientQuota {
                per_minute: 600,
                burst: 50,
            },
        );
        CallerLimits::new(&s)
    }

    #[test]
    fn a_burst_then_limited_with_retry_after() {
        let l = limits(60, 3);
        let c = Caller::Id("a".into());
        for expected in [2, 1, 0] {
            match l.check(&c).0 {
                Decision::Allowed(s) => assert_eq!(s.remaining, expected),
                Decision::Limited { .. } => panic!("limited too early"),
            }
        }
        match l.check(&c).0 {
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
        assert!(matches!(
            l.check(&Caller::Id("b".into())).0,
            Decision::Allowed(_)
        ));
        match l.check(&Caller::Id("dash".into())).0 {
            Decision::Allowed(s) => assert_eq!((s.limit, s.remaining), (50, 49)),
            Decision::Limited { .. } => panic!("override not applied"),
        }
    }

    #[test]
    fn a_reload_keeps_the_budgets_of_unchanged_quotas() {
        let l = limits(60, 2);
        let c = Caller::Id("a".into());
        for _ in 0..2 {
            assert!(matches!(l.check(&c).0, Decision::Allowed(_)));
        }
        assert!(matches!(l.check(&c).0, Decision::Limited { .. }));
        let mut s = (*l.settings()).clone();
        s.sweep_secs = 99;
        l.reconfigure(&s);
        assert!(
            matches!(l.check(&c).0, Decision::Limited { .. }),
            "an unchanged quota keeps the budget used"
        );
        s.burst = 5;
        l.reconfigure(&s);
        match l.check(&c) {
            (Decision::Allowed(state), policy) => {
                assert_eq!((state.limit, state.remaining), (5, 4));
                assert_eq!(policy, "60;w=60;burst=5");
            }
            (Decision::Limited { .. }, _) => panic!("the new quota is not in force"),
        }
    }

    #[test]
    fn a_million_callers_do_not_stay_in_memory() {
        // 60 000 per minute: a caller's state is fresh again 1 ms after its last request.
        let l = limits(60_000, 1);
        let mut peak = 0;
        for i in 0..1_000_000u32 {
            let _ = l.check(&Caller::Ip(std::net::Ipv4Addr::from(i).into()));
            if i % 1000 == 0 {
                peak = peak.max(l.tracked());
            }
        }
        assert!(
            peak < 1_000_000,
            "over-the-cap sweeps dropped idle callers (peak {peak})"
        );
        std::thread::sleep(Duration::from_millis(5));
        l.sweep();
        assert_eq!(l.tracked(), 0);
    }
}
