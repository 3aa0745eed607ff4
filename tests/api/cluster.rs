//! Three replicas, one simulator, one real Redis, as a cluster: a replica that dies holding a
//! fetch lock costs the others about one lock TTL, a purge on any replica reaches every
//! replica and Redis, and the appliance is probed once per period for the whole cluster.

use std::num::NonZero;
use std::time::{Duration, Instant};

use metricgate::clock::Clock;
use metricgate::settings::Settings;
use metricgate::sim::Faults;
use serde_json::Value;

use crate::helpers::{ADMIN_TOKEN, Replica, TestRedis, spawn_cluster, wait_for_mode};

const Q: &str = "/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=5min";
const BANDWIDTH: &str = "/v1/metricdata?metric=bandwidth&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=5min";

/// Redis calls given time on a loaded test machine (one that times out switches a replica to
/// embedded mode for a second, and these tests count what sharing saves).
fn patient(s: &mut Settings) {
    s.redis.timeout_ms = NonZero::new(2_000).unwrap();
}

fn urls(replicas: &[Replica]) -> Vec<String> {
    replicas.iter().map(|r| r.url.clone()).collect()
}

/// Status, `Cache-Status` and body of a GET.
async fn get(http: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = http.get(url).send().await.expect("the replica answers");
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, cache, r.text().await.expect("a body"))
}

async fn admin(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("the replica answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls until `done` holds, for at most about 5 s of real time.
async fn eventually<F, Fut>(what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..250 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

/// The holder of the locks for `Q` dies mid-fetch (its appliance request hanging); the two
/// others, asking at once, answer after about one lock TTL with one appliance request more.
async fn a_dead_holder_costs_one_lock_ttl(segments: bool) {
    let redis = TestRedis::start();
    let (sim, replicas) = spawn_cluster(3, &redis.url(), None, |s| {
        patient(s);
        s.redis.lock_ttl_ms = 600;
        s.segments.enabled = segments;
    })
    .await;
    wait_for_mode(&urls(&replicas), true).await;
    sim.set_faults(Faults {
        latency_ms: 60_000,
        ..Faults::default()
    });
    let http = reqwest::Client::new();
    let holder = tokio::spawn(http.get(format!("{}{Q}", replicas[0].url)).send());
    eventually(
        "the first replica's request reaches the appliance",
        || async { sim.stats.snapshot().metricdata == 1 },
    )
    .await;
    replicas[0].kill();
    sim.set_faults(Faults::default());
    let started = Instant::now();
    let (on_b, on_c) = (
        format!("{}{Q}", replicas[1].url),
        format!("{}{Q}", replicas[2].url),
    );
    let (b, c) = tokio::join!(get(&http, &on_b), get(&http, &on_c));
    let waited = started.elapsed();
    assert_eq!((b.0, c.0), (200, 200), "{b:?} {c:?}");
    assert_eq!(b.2, c.2, "the same answer");
    assert!(
        waited < Duration::from_millis(2_000),
        "about one lock TTL (600 ms), not the dead holder's fetch nor redis.lock_ms (35 s): \
         {waited:?}"
    );
    assert_eq!(
        sim.stats.snapshot().metricdata,
        2,
        "the dead holder's request, then one for both others"
    );
    holder.abort();
}

#[tokio::test]
async fn a_replica_that_dies_holding_an_answers_lock_costs_the_others_one_lock_ttl() {
    a_dead_holder_costs_one_lock_ttl(false).await;
}

#[tokio::test]
async fn a_replica_that_dies_holding_answer_and_segment_locks_costs_one_lock_ttl() {
    a_dead_holder_costs_one_lock_ttl(true).await;
}

/// Purges `filter` (a query string, maybe empty) on `on`; waits until every replica in `all`
/// has applied it. The purge's answer.
async fn purge_everywhere(http: &reqwest::Client, on: &str, filter: &str, all: &[String]) -> Value {
    let (status, purged) = admin(http.delete(format!("{on}/internal/cache?{filter}"))).await;
    assert_eq!(status, 200, "{purged}");
    let generation = purged["generation"].as_u64().expect("announced: {purged}");
    for url in all {
        eventually("every replica applies the purge", || async {
            let (_, report) = admin(http.get(format!("{url}/internal/cache"))).await;
            report["purge_generation"]
                .as_u64()
                .is_some_and(|g| g >= generation)
        })
        .await;
    }
    purged
}

#[tokio::test]
async fn a_purge_on_one_replica_makes_every_replica_ask_the_appliance_again() {
    let redis = TestRedis::start();
    let (sim, replicas) = spawn_cluster(3, &redis.url(), None, patient).await;
    let all = urls(&replicas);
    wait_for_mode(&all, true).await;
    let (a, b, c) = (&all[0], &all[1], &all[2]);
    let http = reqwest::Client::new();
    let metricdata = || sim.stats.snapshot().metricdata;
    // B and C both hold the answer in memory.
    for url in [b, c, b, c] {
        assert_eq!(get(&http, &format!("{url}{Q}")).await.0, 200);
    }
    assert_eq!(metricdata(), 1);
    let before = get(&http, &format!("{c}{Q}")).await;
    assert!(before.1.starts_with("metricgate; hit;") && !before.1.contains("shared"));

    let purged = purge_everywhere(&http, a, "", &all).await;
    assert!(
        purged["purged"].as_u64().unwrap() >= 1,
        "Redis' copy: {purged}"
    );
    assert!(
        purged["segments"].as_u64().unwrap() >= 1,
        "Redis' segments: {purged}"
    );
    // B's copy is gone, and so are Redis' answer and segments: the appliance is asked.
    let again = get(&http, &format!("{b}{Q}")).await;
    assert!(again.1.contains("fwd=miss"), "{}", again.1);
    assert_eq!(metricdata(), 2);
    // C's copy is gone too: it takes B's new answer from Redis, not its own old one.
    let shared = get(&http, &format!("{c}{Q}")).await;
    assert!(shared.1.ends_with("detail=shared"), "{}", shared.1);
    assert_eq!(metricdata(), 2);

    // Purged on C this time, with C's copy gone first: B must ask again as well.
    purge_everywhere(&http, c, "", &all).await;
    let (_, status, _) = get(&http, &format!("{b}{Q}")).await;
    assert!(status.contains("fwd=miss"), "{status}");
    assert_eq!(metricdata(), 3);
}

#[tokio::test]
async fn a_purge_whose_message_was_lost_is_found_by_polling_the_generation() {
    let redis = TestRedis::start();
    let (sim, replicas) = spawn_cluster(2, &redis.url(), None, patient).await;
    let all = urls(&replicas);
    wait_for_mode(&all, true).await;
    let http = reqwest::Client::new();
    for url in [&all[0], &all[1], &all[1]] {
        assert_eq!(get(&http, &format!("{url}{Q}")).await.0, 200);
    }
    let (_, local, _) = get(&http, &format!("{}{Q}", all[1])).await;
    assert!(!local.contains("shared"), "{local}");
    // A purge of everything announced without its message (as if pub/sub had lost it).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let generation: u64 = redis::cmd("INCR")
        .arg("metricgate:purge:gen")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("metricgate:purge:{generation}"))
        .arg("")
        .query_async(&mut conn)
        .await
        .unwrap();
    for url in &all {
        eventually("every replica reads the counter", || async {
            let (_, report) = admin(http.get(format!("{url}/internal/cache"))).await;
            report["purge_generation"] == generation
        })
        .await;
    }
    // Its own copy is gone; Redis' (which this announcement left alone) answers.
    let (_, after, _) = get(&http, &format!("{}{Q}", all[1])).await;
    assert!(after.ends_with("detail=shared"), "{after}");
    assert_eq!(sim.stats.snapshot().metricdata, 1);
}

#[tokio::test]
async fn a_filtered_purge_reaches_every_replica_and_only_what_it_names() {
    let redis = TestRedis::start();
    let (sim, replicas) = spawn_cluster(3, &redis.url(), None, patient).await;
    let all = urls(&replicas);
    wait_for_mode(&all, true).await;
    let (a, b, c) = (&all[0], &all[1], &all[2]);
    let http = reqwest::Client::new();
    let metricdata = || sim.stats.snapshot().metricdata;
    let device = |did: u64| format!("{Q}&did={did}");
    let asked = [Q.to_owned(), BANDWIDTH.to_owned(), device(7), device(8)];
    for url in [b, c] {
        for q in &asked {
            assert_eq!(get(&http, &format!("{url}{q}")).await.0, 200);
        }
    }
    assert_eq!(metricdata(), 4);

    // One metric: its answers go everywhere (here, in Redis, on B and C), the others stay.
    let purged = purge_everywhere(&http, a, "metric=connections", &all).await;
    assert!(purged["purged"].as_u64().unwrap() >= 3, "{purged}");
    let kept = get(&http, &format!("{b}{BANDWIDTH}")).await;
    assert!(kept.1.starts_with("metricgate; hit;") && !kept.1.contains("shared"));
    let kept = get(&http, &format!("{c}{BANDWIDTH}")).await;
    assert!(kept.1.starts_with("metricgate; hit;") && !kept.1.contains("shared"));
    assert_eq!(metricdata(), 4, "bandwidth was not purged");
    let (_, on_b, _) = get(&http, &format!("{b}{Q}")).await;
    assert!(on_b.contains("fwd=miss"), "{on_b}");
    assert_eq!(metricdata(), 5);
    let (_, on_c, _) = get(&http, &format!("{c}{}", device(7))).await;
    assert!(on_c.contains("fwd=miss"), "{on_c}");
    assert_eq!(metricdata(), 6);

    // One metric on one device: only the answers naming both.
    let (_, on_b, _) = get(&http, &format!("{b}{}", device(8))).await;
    assert!(on_b.contains("fwd=miss"), "purged with its metric: {on_b}");
    assert_eq!(metricdata(), 7);
    let purged = purge_everywhere(&http, b, "metric=connections&did=7", &all).await;
    assert!(purged["purged"].as_u64().unwrap() >= 1, "{purged}");
    let (_, kept, _) = get(&http, &format!("{c}{Q}")).await;
    assert!(!kept.contains("fwd=miss"), "{kept}");
    let (_, kept, _) = get(&http, &format!("{b}{}", device(8))).await;
    assert!(!kept.contains("fwd=miss"), "{kept}");
    let before = metricdata();
    let (_, on_c, _) = get(&http, &format!("{c}{}", device(7))).await;
    assert!(on_c.contains("fwd=miss"), "{on_c}");
    assert_eq!(metricdata(), before + 1);
}

/// Each replica's view of the appliance: `/readyz`'s status and the probe's time.
async fn readiness(http: &reqwest::Client, url: &str) -> (u16, Option<i64>) {
    let (_, detail) = admin(http.get(format!("{url}/internal/readiness"))).await;
    let status = http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .expect("the replica answers")
        .status()
        .as_u16();
    (status, detail["appliance"]["at"].as_i64())
}

#[tokio::test]
async fn three_replicas_probe_the_appliance_once_per_period() {
    let redis = TestRedis::start();
    let clock = Clock::manual_from_now();
    let (sim, replicas) = spawn_cluster(3, &redis.url(), Some(&clock), |s| {
        patient(s);
        s.upstream.probe_secs = NonZero::new(1).unwrap();
        s.upstream.breaker_failures = NonZero::new(1_000).unwrap();
    })
    .await;
    let all = urls(&replicas);
    wait_for_mode(&all, true).await;
    let http = reqwest::Client::new();
    // Each replica asks `/enums` once after its first catalog, maybe after it reported ready:
    // once those are in, catalog requests are probes.
    eventually("every replica has its protocols", || async {
        sim.stats.snapshot().enums == 3
    })
    .await;
    let probes = || sim.stats.snapshot().metrics;
    let before = probes();
    // Each period, every replica's readiness shows the one probe made in it.
    let step = |expect: u16| {
        let (http, all, clock) = (&http, &all, &clock);
        async move {
            clock.advance(Duration::from_secs(1));
            let now = clock.now_ms();
            for url in all {
                eventually("every replica takes the period's probe", || async {
                    readiness(http, url).await == (expect, Some(now))
                })
                .await;
            }
        }
    };
    for period in 1..=4 {
        step(200).await;
        assert_eq!(probes() - before, period, "one probe per period, not three");
    }
    // A failing appliance: every replica is unready after the one probe that saw it.
    sim.set_faults(Faults {
        catalog_status: Some(503),
        ..Faults::default()
    });
    step(503).await;
    assert_eq!(probes() - before, 5);
    for url in &all {
        let (_, detail) = admin(http.get(format!("{url}/internal/readiness"))).await;
        assert_eq!(detail["appliance"]["status"], "unreachable", "{detail}");
    }
    sim.set_faults(Faults::default());
    step(200).await;
    assert_eq!(probes() - before, 6);
}

#[tokio::test]
async fn redis_indexes_name_only_live_entries_and_purges_take_what_both_name() {
    use metricgate::redis::{IndexedEntry, SharedState};
    let redis = TestRedis::start();
    let mut settings = Settings::defaults().redis;
    settings.url = Some(metricgate::settings::RedisUrl::parse(&redis.url()).unwrap());
    let metrics = std::sync::Arc::new(metricgate::telemetry::GatewayMetrics::new());
    let shared = SharedState::new(&settings, metrics).unwrap().unwrap();
    tokio::spawn(shared.clone().keep());
    eventually("Redis is reached", || async { shared.is_up() }).await;
    let (metric, device) = (shared.key("idx", "t:m:x"), shared.key("idx", "t:d:1"));
    let entry = |name: &str, ttl_ms: u64, index: Vec<String>| IndexedEntry {
        key: shared.key("t", name),
        value: name.as_bytes().to_vec(),
        ttl_ms,
        index,
    };
    shared
        .set_indexed_many(&[entry("short", 50, vec![metric.clone()])])
        .await;
    eventually("the short-lived entry expires", || async {
        shared.exists(&shared.key("t", "short")).await == Some(false)
    })
    .await;
    shared
        .set_indexed_many(&[
            entry("both", 60_000, vec![metric.clone(), device.clone()]),
            entry("metric-only", 60_000, vec![metric.clone()]),
        ])
        .await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let named: Vec<String> = redis::cmd("ZRANGE")
        .arg(&metric)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(named.len(), 2, "the expired entry was pruned: {named:?}");
    // A metric on a device: only the entry both name.
    assert_eq!(shared.purge_indexed(&[metric.clone(), device]).await, 1);
    assert_eq!(shared.exists(&shared.key("t", "both")).await, Some(false));
    assert_eq!(
        shared.exists(&shared.key("t", "metric-only")).await,
        Some(true)
    );
    assert_eq!(shared.purge_indexed(&[metric]).await, 1);
    assert_eq!(
        shared.exists(&shared.key("t", "metric-only")).await,
        Some(false)
    );
}
