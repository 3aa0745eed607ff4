//! Three replicas, one simulator, one real Redis: one upstream request per question, one limit
//! per caller, and no failures when Redis dies.

use std::num::NonZero;

use futures::future::join_all;
use metricgate::sim::Faults;

use crate::helpers::{TestRedis, spawn_replicas, wait_for_mode};

const Q: &str = "/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=5min";

#[tokio::test]
async fn replicas_ask_the_appliance_once() {
    let redis = TestRedis::start();
    let (sim, urls) = spawn_replicas(3, &redis.url(), |_| {}).await;
    wait_for_mode(&urls, true).await;
    sim.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let http = reqwest::Client::new();
    let answers = join_all((0..300).map(|i| {
        let url = format!("{}{Q}", urls[i % 3]);
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    }))
    .await;
    assert!(answers.iter().all(|(s, _)| *s == 200));
    assert!(
        answers.iter().all(|(_, b)| *b == answers[0].1),
        "every replica gives the same answer"
    );
    assert_eq!(
        sim.stats.snapshot().metricdata,
        1,
        "one upstream request for 300 callers on 3 replicas"
    );
    // A fourth replica, started later, finds the answer in Redis.
    let (_, late) = spawn_replicas(1, &redis.url(), |_| {}).await;
    wait_for_mode(&late, true).await;
    let r = http.get(format!("{}{Q}", late[0])).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(sim.stats.snapshot().metricdata, 1);
}

#[tokio::test]
async fn one_callers_limit_holds_across_replicas() {
    let redis = TestRedis::start();
    let (_sim, urls) = spawn_replicas(3, &redis.url(), |s| {
        s.rate_limit.per_client_per_minute = NonZero::new(60).unwrap();
        s.rate_limit.burst = NonZero::new(5).unwrap();
    })
    .await;
    wait_for_mode(&urls, true).await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..9 {
        let r = http
            .get(format!("{}{Q}", urls[i % 3]))
            .header("x-client-id", "everywhere")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        4,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn killing_redis_mid_load_fails_nothing_and_shared_mode_resumes() {
    let mut redis = TestRedis::start();
    let (sim, urls) = spawn_replicas(3, &redis.url(), |s| {
        s.redis.timeout_ms = NonZero::new(1_000).unwrap();
    })
    .await;
    wait_for_mode(&urls, true).await;
    let http = reqwest::Client::new();
    let load = |round: usize| {
        let http = http.clone();
        let urls = urls.clone();
        async move {
            let answers = join_all((0..60).map(|i| {
                let url = format!("{}{Q}&did={}", urls[i % 3], round * 100 + i % 20 + 1);
                let http = http.clone();
                async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
            }))
            .await;
            answers
                .into_iter()
                .map(|r| r.expect("an answer"))
                .collect::<Vec<u16>>()
        }
    };
    let mut statuses = load(0).await;
    let before = sim.stats.snapshot().metricdata;
    let during = tokio::spawn(load(1));
    // Killed once the second round is being served: its first request reached the appliance.
    for _ in 0..500 {
        if sim.stats.snapshot().metricdata > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert!(
        sim.stats.snapshot().metricdata > before,
        "the second round began"
    );
    redis.kill();
    statuses.extend(during.await.unwrap());
    statuses.extend(load(2).await);
    wait_for_mode(&urls, false).await;
    statuses.extend(load(3).await);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    redis.restart();
    wait_for_mode(&urls, true).await;
    sim.stats.reset();
    sim.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let q = "/v1/metricdata?metric=bandwidth&from=2024-01-16T00:00:00Z&to=2024-01-16T01:00:00Z";
    let answers = join_all((0..30).map(|i| http.get(format!("{}{q}", urls[i % 3])).send())).await;
    assert!(answers.into_iter().all(|r| r.unwrap().status() == 200));
    assert_eq!(
        sim.stats.snapshot().metricdata,
        1,
        "shared again after Redis came back"
    );
}

#[tokio::test]
async fn each_representation_has_its_own_shared_entry() {
    let redis = TestRedis::start();
    let (_sim, urls) = spawn_replicas(3, &redis.url(), |s| s.segments.enabled = false).await;
    wait_for_mode(&urls, true).await;
    let http = reqwest::Client::new();
    let csv = http
        .get(format!("{}{Q}&format=csv", urls[0]))
        .send()
        .await
        .unwrap();
    assert!(csv.text().await.unwrap().starts_with("timestamp_iso,"));
    // The same question on other replicas, in other representations: never the CSV bytes.
    let json = http.get(format!("{}{Q}", urls[1])).send().await.unwrap();
    let json: serde_json::Value = json.json().await.expect("JSON, not CSV from Redis");
    assert!(json["series"].is_array(), "{json}");
    let sdk = Q.replace("/v1/", "/darktrace/");
    let sdk = http.get(format!("{}{sdk}", urls[2])).send().await.unwrap();
    let sdk: serde_json::Value = sdk.json().await.expect("JSON, not CSV from Redis");
    assert_eq!(sdk["metric"], "connections", "{sdk}");
}

#[tokio::test]
async fn a_lock_is_released_only_by_its_holder() {
    let redis = TestRedis::start();
    let mut settings = metricgate::settings::Settings::defaults().redis;
    settings.url = metricgate::settings::RedisUrl::parse(&redis.url()).ok();
    let metrics = std::sync::Arc::new(metricgate::telemetry::GatewayMetrics::new());
    let shared = metricgate::redis::SharedState::new(&settings, metrics)
        .unwrap()
        .unwrap();
    tokio::spawn(shared.clone().keep());
    for _ in 0..300 {
        if shared.is_up() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(shared.is_up());
    let key = shared.key("lock", "owner-test");
    let mine = shared.try_lock(&key, 60_000).await.unwrap().unwrap();
    assert_eq!(shared.try_lock(&key, 60_000).await, Some(None), "held");
    // As if this holder's lock expired and another replica took it with its own token.
    shared.set(&key, b"another-replica", 60_000).await;
    assert!(
        !shared.unlock(&key, &mine).await,
        "the old holder must not delete the new holder's lock"
    );
    assert_eq!(shared.exists(&key).await, Some(true));
    assert!(shared.unlock(&key, "another-replica").await);
    assert_eq!(shared.exists(&key).await, Some(false));
}

#[tokio::test]
async fn forced_refreshes_and_the_address_ceiling_hold_across_replicas() {
    let redis = TestRedis::start();
    let (sim, urls) = spawn_replicas(3, &redis.url(), |s| {
        s.rate_limit.no_cache_per_minute = 3; // a burst of 1
        s.rate_limit.per_ip_per_minute = NonZero::new(1).unwrap(); // no refill within the test
        s.rate_limit.per_ip_burst = NonZero::new(8).unwrap();
    })
    .await;
    wait_for_mode(&urls, true).await;
    let http = reqwest::Client::new();
    let ask = |i: usize, no_cache: bool| {
        let mut req = http
            .get(format!("{}{Q}", urls[i % 3]))
            .header("x-client-id", format!("rotating-{i}"));
        if no_cache {
            req = req.header("cache-control", "no-cache");
        }
        req.send()
    };
    assert_eq!(ask(0, false).await.unwrap().status(), 200);
    let before = sim.stats.snapshot().metricdata;
    let mut cache_status = Vec::new();
    for i in 1..=6 {
        let r = ask(i, true).await.unwrap();
        assert_eq!(r.status(), 200);
        let status = r.headers()["cache-status"].to_str().unwrap().to_owned();
        cache_status.push(status);
    }
    assert_eq!(
        sim.stats.snapshot().metricdata - before,
        1,
        "one forced refresh for this address on any replica: {cache_status:?}"
    );
    assert_eq!(
        cache_status
            .iter()
            .filter(|s| s.contains("no-cache-limited"))
            .count(),
        5
    );
    // 7 of the address's 8 are spent; rotating ids on any replica get one more, then 429s.
    let statuses = join_all((7..=10).map(|i| ask(i, false))).await;
    let limited = statuses
        .into_iter()
        .filter(|r| r.as_ref().unwrap().status() == 429)
        .count();
    assert_eq!(limited, 3);
}

/// Redis calls given time on a loaded test machine: one that times out switches a replica to
/// embedded mode for a second, and these tests count what sharing saves.
fn patient(s: &mut metricgate::settings::Settings) {
    s.redis.timeout_ms = NonZero::new(2_000).unwrap();
}

/// Asks `windows` (path and query) in order, each dashboard moving from replica to replica
/// (request `i` on replica `(i + i / 3) % urls.len()`); the
/// bodies, and the segments the replicas fetched.
async fn rolling(urls: &[String], windows: &[String]) -> (Vec<String>, u64) {
    let http = reqwest::Client::new();
    let mut bodies = Vec::new();
    for (i, window) in windows.iter().enumerate() {
        let r = http
            .get(format!("{}{window}", urls[(i + i / 3) % urls.len()]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        bodies.push(r.text().await.unwrap());
    }
    let mut fetched = 0;
    for url in urls {
        let report: serde_json::Value = http
            .get(format!("{url}/internal/cache"))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        fetched += report["segments"]["misses"].as_u64().unwrap();
    }
    (bodies, fetched)
}

#[tokio::test]
async fn a_rolling_window_on_three_replicas_costs_what_one_costs() {
    // Three dashboards' rolling windows (the last 6 h at 5 min, moved on 5 min each time),
    // asked round-robin over the replicas.
    let hour = 3_600_000i64;
    let t0 = 1_705_320_000_000i64; // 2024-01-15T12:00:00Z
    let windows: Vec<String> = (0..12)
        .flat_map(|step| {
            let end = t0 + step * 300_000;
            ["connections", "bandwidth", "connections&did=7"]
                .into_iter()
                .map(move |m| {
                    format!(
                        "/v1/metricdata?metric={m}&from={}&to={end}&interval=5min",
                        end - 6 * hour
                    )
                })
        })
        .collect();
    let one_redis = TestRedis::start();
    let (one_sim, one) = spawn_replicas(1, &one_redis.url(), patient).await;
    wait_for_mode(&one, true).await;
    let (one_bodies, one_segments) = rolling(&one, &windows).await;
    let one_requests = one_sim.stats.snapshot().metricdata;

    let redis = TestRedis::start();
    let (sim, three) = spawn_replicas(3, &redis.url(), patient).await;
    wait_for_mode(&three, true).await;
    let (bodies, segments) = rolling(&three, &windows).await;
    let requests = sim.stats.snapshot().metricdata;

    assert_eq!(
        bodies, one_bodies,
        "the same answers from one replica or three"
    );
    assert_eq!(
        requests, one_requests,
        "three replicas ask the appliance what one asks"
    );
    assert_eq!(segments, one_segments, "and fetch the same segments");
}

#[tokio::test]
async fn replicas_asking_the_same_segments_at_once_fetch_them_once() {
    let redis = TestRedis::start();
    let (sim, urls) = spawn_replicas(3, &redis.url(), patient).await;
    wait_for_mode(&urls, true).await;
    sim.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let http = reqwest::Client::new();
    // Each replica in its own representation: the answers tier cannot share them, the
    // segments below can.
    let asks = [
        format!("{}{Q}", urls[0]),
        format!("{}{Q}&format=csv", urls[1]),
        format!("{}{}", urls[2], Q.replace("/v1/", "/darktrace/")),
    ];
    let answers = join_all(asks.iter().map(|url| http.get(url).send())).await;
    assert!(answers.into_iter().all(|r| r.unwrap().status() == 200));
    assert_eq!(
        sim.stats.snapshot().metricdata,
        1,
        "one replica fetched the run, the others took its segments"
    );
}

#[tokio::test]
async fn a_lock_holder_that_stops_renewing_costs_the_others_about_one_lock_ttl() {
    let redis = TestRedis::start();
    let (sim, urls) = spawn_replicas(2, &redis.url(), |s| {
        patient(s);
        s.redis.lock_ttl_ms = 600;
    })
    .await;
    wait_for_mode(&urls, true).await;
    sim.set_faults(Faults {
        latency_ms: 20_000,
        ..Faults::default()
    });
    let http = reqwest::Client::new();
    let holder = tokio::spawn(http.get(format!("{}{Q}", urls[0])).send());
    // Its run lock appears; take it over as a holder that died: never renewed, never released.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut lock = None;
    for _ in 0..500 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*seglock*")
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(k) = keys.into_iter().next() {
            lock = Some(k);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let lock = lock.expect("the first replica holds the run's lock");
    let _: () = redis::cmd("SET")
        .arg(&lock)
        .arg("a-dead-holder")
        .arg("PX")
        .arg(600)
        .query_async(&mut conn)
        .await
        .unwrap();
    sim.set_faults(Faults::default());
    let started = std::time::Instant::now();
    let r = http
        .get(format!("{}{Q}&format=csv", urls[1]))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status(), 200);
    assert!(
        waited < std::time::Duration::from_millis(2_500),
        "about one lock TTL (600 ms), not the holder's 20 s fetch: {waited:?}"
    );
    holder.abort();
}

#[tokio::test]
async fn answers_found_in_redis_say_so() {
    let redis = TestRedis::start();
    let (sim, urls) = spawn_replicas(3, &redis.url(), patient).await;
    wait_for_mode(&urls, true).await;
    let http = reqwest::Client::new();
    let first = http.get(format!("{}{Q}", urls[0])).send().await.unwrap();
    let status = first.headers()["cache-status"].to_str().unwrap().to_owned();
    assert!(status.contains("fwd=miss"), "{status}");
    let body = first.text().await.unwrap();
    let second = http.get(format!("{}{Q}", urls[1])).send().await.unwrap();
    let status = second.headers()["cache-status"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        status.starts_with("metricgate; hit; ttl=") && status.ends_with("; detail=shared"),
        "{status}"
    );
    assert_eq!(second.text().await.unwrap(), body);
    // Then it is this replica's own: a plain hit.
    let third = http.get(format!("{}{Q}", urls[1])).send().await.unwrap();
    let status = third.headers()["cache-status"].to_str().unwrap().to_owned();
    assert!(!status.contains("shared"), "{status}");
    // The third replica finds it in Redis too: still one appliance request for the cluster.
    let fourth = http.get(format!("{}{Q}", urls[2])).send().await.unwrap();
    let status = fourth.headers()["cache-status"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(status.ends_with("; detail=shared"), "{status}");
    assert_eq!(fourth.text().await.unwrap(), body);
    assert_eq!(sim.stats.snapshot().metricdata, 1);

    let report: serde_json::Value = http
        .get(format!("{}/internal/cache", urls[1]))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["shared_hits"], 1, "{report}");
    assert_eq!(report["misses"], 0, "{report}");
    let metrics = http
        .get(format!("{}/metrics", urls[1]))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("metricgate_cache_events_total{event=\"shared_hit\"} 1"),
        "{metrics}"
    );
}
