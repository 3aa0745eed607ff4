//! Caller limits on three replicas sharing one real Redis, decided on leases (docs/limits.md):
//! a caller spreading its requests over the replicas gets at most its limit plus three
//! leases, a caller within its limit is never refused, and the hot path does not ask Redis
//! per request. Time is the replicas' shared manual clock.

use std::num::NonZero;
use std::sync::Arc;
use std::time::Duration;

use metricgate::clock::Clock;
use metricgate::limits::{Caller, CallerLimits, Decision, Identity, Proof};
use metricgate::redis::SharedState;
use metricgate::settings::{ClientQuota, Settings};

use crate::helpers::{TestRedis, spawn_replicas_on_clock, wait_for_mode};

const Q: &str = "/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=5min";

/// A caller's limit of `burst` that refills a cell every `period_secs` (none while the
/// clock stands still), leases of `lease`, and an address ceiling out of the way.
fn quota(burst: u32, per_minute: u32, lease: u32) -> impl Fn(&mut Settings) {
    move |s: &mut Settings| {
        s.rate_limit.per_client_per_minute = NonZero::new(per_minute).unwrap();
        s.rate_limit.burst = NonZero::new(burst).unwrap();
        s.rate_limit.lease = NonZero::new(lease).unwrap();
        s.rate_limit.per_ip_per_minute = NonZero::new(1_000_000).unwrap();
        s.rate_limit.per_ip_burst = NonZero::new(1_000_000).unwrap();
        // A loaded test machine must not push a replica into embedded mode.
        s.redis.timeout_ms = NonZero::new(2_000).unwrap();
    }
}

/// Asks `Q` as `caller` on replica `i % 3`; the status.
async fn ask(http: &reqwest::Client, urls: &[String], i: usize, caller: &str) -> u16 {
    let r = http
        .get(format!("{}{Q}", urls[i % urls.len()]))
        .header("x-client-id", caller)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert!(
        r.headers().contains_key("ratelimit"),
        "every answer says the budget"
    );
    if status == 429 {
        assert!(r.headers().contains_key("retry-after"));
    }
    status
}

/// What `redis-cli INFO` says of `field` (e.g. `total_commands_processed`, or
/// `cmdstat_evalsha` for its `calls=`).
fn redis_info(redis: &TestRedis, field: &str) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "INFO", "all"])
        .output()
        .expect("redis-cli is installed with redis-server");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|v| {
            let v = v.trim();
            let v = v.strip_prefix("calls=").unwrap_or(v);
            v.split(',').next().unwrap_or("0").parse().unwrap_or(0)
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn round_robin_over_three_replicas_gets_at_most_the_limit_plus_three_leases() {
    let redis = TestRedis::start();
    // 100 at once, then a cell a second; leases of 10: the documented bound is 3 x 10.
    let (_sim, urls, clock) = spawn_replicas_on_clock(3, &redis.url(), quota(100, 60, 10)).await;
    wait_for_mode(&urls, true).await;
    let http = reqwest::Client::new();
    for i in 0..100 {
        assert_eq!(
            ask(&http, &urls, i, "everywhere").await,
            200,
            "request {i} is within the limit"
        );
    }
    let mut beyond = 0;
    for i in 100..300 {
        beyond += usize::from(ask(&http, &urls, i, "everywhere").await == 200);
    }
    assert!(
        beyond <= 30,
        "{beyond} beyond a burst of 100: at most 3 replicas x a lease of 10"
    );
    // Whatever got through beyond the limit was charged to the caller's bucket: once the clock
    // has refilled the burst and the excess, the whole burst is there again, on any replica.
    clock.advance(Duration::from_secs(100 + 30));
    for i in 0..100 {
        assert_eq!(ask(&http, &urls, i, "everywhere").await, 200, "request {i}");
    }
    let mut beyond = 0;
    for i in 100..200 {
        beyond += usize::from(ask(&http, &urls, i, "everywhere").await == 200);
    }
    assert!(beyond <= 30, "{beyond} beyond the refilled burst");
}

#[tokio::test]
async fn a_caller_within_its_limit_is_never_refused_on_any_replica() {
    let redis = TestRedis::start();
    // A burst of 100, then one every 100 ms.
    let (_sim, urls, clock) = spawn_replicas_on_clock(3, &redis.url(), quota(100, 600, 10)).await;
    wait_for_mode(&urls, true).await;
    let http = reqwest::Client::new();
    // The whole burst at once, round robin.
    for i in 0..100 {
        assert_eq!(
            ask(&http, &urls, i, "steady").await,
            200,
            "burst request {i}"
        );
    }
    // Then exactly its rate, for 200 more: every one is within the limit.
    for i in 0..200 {
        clock.advance(Duration::from_millis(100));
        assert_eq!(
            ask(&http, &urls, i, "steady").await,
            200,
            "paced request {i}"
        );
    }
    // A second caller is not charged for the first.
    assert_eq!(ask(&http, &urls, 0, "other").await, 200);
}

#[tokio::test]
async fn limits_cost_redis_a_settlement_per_half_lease_not_a_command_per_request() {
    let redis = TestRedis::start();
    let (_sim, urls, _clock) =
        spawn_replicas_on_clock(3, &redis.url(), quota(1_000, 60_000, 50)).await;
    wait_for_mode(&urls, true).await;
    let http = reqwest::Client::new();
    // The answer cached on every replica, and each replica holding a lease on the caller.
    for i in 0..3 {
        assert_eq!(ask(&http, &urls, i, "busy").await, 200);
    }
    let scripts_before = redis_info(&redis, "cmdstat_evalsha") + redis_info(&redis, "cmdstat_eval");
    let commands_before = redis_info(&redis, "total_commands_processed");
    for i in 0..200 {
        assert_eq!(ask(&http, &urls, i, "busy").await, 200);
    }
    let scripts =
        redis_info(&redis, "cmdstat_evalsha") + redis_info(&redis, "cmdstat_eval") - scripts_before;
    // The total counts the scripts' own GET and SET, the INFO calls, and the replicas' pings
    // (one a second each).
    let commands = redis_info(&redis, "total_commands_processed") - commands_before;
    // 200 requests on three replicas: a settlement each 25 requests for the caller's bucket
    // and the address ceiling's (leases of 50). One script a request per bucket without
    // leases: 400 scripts.
    assert!(scripts <= 16, "{scripts} scripts for 200 requests");
    assert!(commands < 100, "{commands} Redis commands for 200 requests");
}

#[tokio::test]
async fn concurrent_requests_wait_for_a_settlement_instead_of_each_asking_redis() {
    use futures::StreamExt;
    let redis = TestRedis::start();
    // A burst of 500, leases of 50: at most 650 of 800 get through, whatever the interleaving.
    let (_sim, urls, _clock) = spawn_replicas_on_clock(3, &redis.url(), quota(500, 60, 50)).await;
    wait_for_mode(&urls, true).await;
    let http = reqwest::Client::new();
    for i in 0..3 {
        assert_eq!(ask(&http, &urls, i, "warm").await, 200);
    }
    let scripts_before = redis_info(&redis, "cmdstat_evalsha") + redis_info(&redis, "cmdstat_eval");
    let statuses: Vec<u16> = futures::stream::iter(0..800)
        .map(|i| {
            let http = http.clone();
            let urls = urls.clone();
            async move { ask(&http, &urls, i, "crowd").await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let scripts =
        redis_info(&redis, "cmdstat_evalsha") + redis_info(&redis, "cmdstat_eval") - scripts_before;
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (500..=650).contains(&allowed),
        "{allowed} of 800: the burst of 500 plus at most 3 leases of 50"
    );
    // A settlement per half lease on each replica while the burst lasts, then none: refusals
    // are decided on the view. Requests arriving while a whole lease is in flight wait for it
    // instead of each asking Redis.
    assert!(
        scripts <= 60,
        "{scripts} scripts for 800 concurrent requests"
    );
}

#[tokio::test]
async fn the_address_ceiling_holds_across_replicas_on_leases() {
    let redis = TestRedis::start();
    let (_sim, urls, _clock) = spawn_replicas_on_clock(3, &redis.url(), |s| {
        quota(100, 60, 10)(s);
        // Rotating ids from one address: 100 at once across every id, leases of 10.
        s.rate_limit.per_ip_per_minute = NonZero::new(60).unwrap();
        s.rate_limit.per_ip_burst = NonZero::new(100).unwrap();
    })
    .await;
    wait_for_mode(&urls, true).await;
    let http = reqwest::Client::new();
    let mut allowed = 0;
    for i in 0..200 {
        allowed += usize::from(ask(&http, &urls, i, &format!("rotating-{i}")).await == 200);
    }
    assert!(
        (100..=130).contains(&allowed),
        "{allowed}: the address's 100, plus at most 3 leases of 10"
    );
}

#[tokio::test]
async fn without_redis_each_replica_applies_the_limits_locally() {
    let mut redis = TestRedis::start();
    let (_sim, urls, _clock) = spawn_replicas_on_clock(3, &redis.url(), |s| {
        quota(20, 60, 10)(s);
        s.redis.timeout_ms = NonZero::new(100).unwrap();
    })
    .await;
    wait_for_mode(&urls, true).await;
    let http = reqwest::Client::new();
    for i in 0..20 {
        assert_eq!(ask(&http, &urls, i, "alone").await, 200);
    }
    redis.kill();
    wait_for_mode(&urls, false).await;
    // Embedded mode, as before leases: each replica's own burst of 20, and no failure.
    let statuses: Vec<u16> =
        futures::future::join_all((0..21).map(|_| ask(&http, &urls, 0, "alone"))).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        20,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );
}

/// Three replicas' limits as the library builds them, each with its own connection to one
/// Redis, on one manual clock.
async fn three_limits(
    redis: &TestRedis,
    s: &Settings,
    clock: &Clock,
) -> Vec<(CallerLimits, Arc<SharedState>)> {
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let mut settings = s.redis.clone();
        settings.url = metricgate::settings::RedisUrl::parse(&redis.url()).ok();
        let metrics = Arc::new(metricgate::telemetry::GatewayMetrics::new());
        let shared = SharedState::new(&settings, metrics).unwrap().unwrap();
        tokio::spawn(shared.clone().keep());
        for _ in 0..300 {
            if shared.is_up() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(shared.is_up());
        replicas.push((CallerLimits::new(&s.rate_limit, clock.clone()), shared));
    }
    replicas
}

async fn allowed(replica: &(CallerLimits, Arc<SharedState>), who: &Identity) -> bool {
    let verdict = replica
        .0
        .check_shared(&replica.1, who)
        .await
        .expect("Redis is up");
    matches!(verdict.decision, Decision::Allowed(_))
}

#[tokio::test]
async fn a_reloaded_quota_applies_to_leases_on_every_replica() {
    let redis = TestRedis::start();
    let mut s = Settings::defaults();
    s.rate_limit.lease = NonZero::new(10).unwrap();
    s.rate_limit.overrides.insert(
        "dash".into(),
        ClientQuota {
            per_minute: 60,
            burst: 100,
        },
    );
    let clock = Clock::manual_from_now();
    let replicas = three_limits(&redis, &s, &clock).await;
    let dash = Identity {
        caller: Caller::Id("dash".into()),
        address: Some("192.0.2.7".parse().unwrap()),
        proof: Proof::Proven,
    };
    let mut through = 0;
    for i in 0..150 {
        through += usize::from(allowed(&replicas[i % 3], &dash).await);
    }
    assert!((100..=130).contains(&through), "{through}");
    // The override is raised to 300 at once on every replica: the budget used is kept
    // (same bucket), the new burst applies.
    s.rate_limit.overrides.insert(
        "dash".into(),
        ClientQuota {
            per_minute: 60,
            burst: 300,
        },
    );
    for (limits, _) in &replicas {
        limits.reconfigure(&s.rate_limit);
    }
    let spent = through;
    let mut more = 0;
    for i in 0..300 {
        more += usize::from(allowed(&replicas[i % 3], &dash).await);
    }
    assert!(
        (300 - spent..=300 - spent + 30).contains(&more),
        "{more} more after {spent} of the new 300"
    );
}
