//! Caching: keys, buckets, coalescing, stale serving and HTTP semantics, asserted on the
//! simulator's request counter.

use std::io::Read;
use std::num::NonZero;
use std::time::Duration;

use futures::future::join_all;
use metricgate::sim::{Faults, Simulator};
use serde_json::Value;

use crate::helpers::{PRIVATE, PUBLIC, TestApp, spawn_app, spawn_app_against, spawn_app_with};

const HISTORIC: &str = "/v1/metricdata?metric=connections&did=7&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=5min";

fn slow(app: &TestApp, ms: u64) {
    app.sim.set_faults(Faults {
        latency_ms: ms,
        ..Faults::default()
    });
}

#[tokio::test]
async fn a_repeated_request_is_a_hit() {
    let app = spawn_app().await;
    let first = app.get(HISTORIC).await;
    assert_eq!(first.status, 200);
    assert!(
        first.header("cache-status").contains("fwd=miss"),
        "{}",
        first.header("cache-status")
    );
    let second = app.get(HISTORIC).await;
    assert_eq!(second.status, 200);
    assert!(
        second
            .header("cache-status")
            .starts_with("metricgate; hit; ttl="),
        "{}",
        second.header("cache-status")
    );
    assert_eq!(second.body, first.body);
    assert_eq!(app.upstream_metricdata(), 1);
    let max_age: i64 = second
        .header("cache-control")
        .trim_start_matches("max-age=")
        .parse()
        .unwrap();
    assert!(
        max_age > 86_000 && max_age <= 86_400,
        "historic answers live a day: {max_age}"
    );
    assert!(second.header("age").parse::<u64>().is_ok());
    assert!(second.header("etag").starts_with('"'));
}

/// A worker reuses a hot answer's rendered headers while its age stays the same: each hit
/// still carries its own answer's validator, and its age and freshness as of the clock.
#[tokio::test]
async fn hits_carry_their_own_answers_headers_as_the_clock_moves() {
    let app = spawn_app().await;
    let other = HISTORIC.replace("did=7", "did=8");
    let (a, b) = (app.get(HISTORIC).await, app.get(&other).await);
    assert_ne!(a.header("etag"), b.header("etag"));
    let headers = |r: &crate::helpers::Answer| {
        ["etag", "age", "cache-control", "cache-status"].map(|h| r.header(h).to_owned())
    };
    let ttl = |r: &crate::helpers::Answer| {
        r.header("cache-control")
            .trim_start_matches("max-age=")
            .parse::<i64>()
            .unwrap()
    };
    // Alternating between two hot answers, many times at the same age.
    let mut seen = Vec::new();
    for _ in 0..6 {
        for (q, first) in [(HISTORIC, &a), (other.as_str(), &b)] {
            let hit = app.get(q).await;
            assert_eq!(hit.header("etag"), first.header("etag"), "{q}");
            assert_eq!(hit.header("age"), "0");
            assert_eq!(
                hit.header("cache-status"),
                format!("metricgate; hit; ttl={}", ttl(&hit))
            );
            seen.push((q.to_owned(), headers(&hit)));
        }
    }
    for q in [HISTORIC, other.as_str()] {
        let distinct: std::collections::HashSet<_> = seen
            .iter()
            .filter(|(s, _)| s == q)
            .map(|(_, h)| h)
            .collect();
        assert_eq!(distinct.len(), 1, "the clock did not move: {distinct:?}");
    }
    app.advance(Duration::from_secs(61));
    let aged = app.get(HISTORIC).await;
    assert_eq!(aged.header("etag"), a.header("etag"));
    assert_eq!(aged.header("age"), "61");
    assert_eq!(ttl(&aged), ttl(&a) - 61);
    assert_eq!(
        aged.header("cache-status"),
        format!("metricgate; hit; ttl={}", ttl(&a) - 61)
    );
    assert_eq!(app.upstream_metricdata(), 2);
}

#[tokio::test]
async fn the_same_question_spelled_differently_is_a_hit() {
    let app = spawn_app().await;
    assert_eq!(app.get("/v1/metricdata?metrics=connections,bandwidth&did=7&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=5min&protocol=tcp&breachtimes=false").await.status, 200);
    for spelling in [
        "/v1/metricdata?metrics=bandwidth&metrics=connections&did=7&starttime=1705320000000&endtime=1705323600000&interval=300&protocol=6",
        "/v1/metricdata?metrics=bandwidth,connections,bandwidth&devices=7&starttime=2024-01-15%2012:00:00&to=2024-01-15T14:00:00%2B01:00&interval=5MIN&protocol=TCP&breachtimes=0",
    ] {
        let a = app.get(spelling).await;
        assert!(
            a.header("cache-status").contains("hit"),
            "{spelling}: {}",
            a.header("cache-status")
        );
    }
    assert_eq!(app.upstream_metricdata(), 1);
}

#[tokio::test]
async fn concurrent_cold_identical_requests_make_one_upstream_request() {
    let app = spawn_app().await;
    slow(&app, 300);
    let answers = join_all((0..200).map(|_| app.get(HISTORIC))).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(app.upstream_metricdata(), 1);
    let collapsed = answers
        .iter()
        .filter(|a| a.header("cache-status").contains("collapsed"))
        .count();
    assert!(collapsed > 0, "no request waited for another's fetch");
    let first = &answers[0].body;
    assert!(answers.iter().all(|a| &a.body == first));
}

#[tokio::test]
async fn concurrent_requests_share_an_error_and_errors_are_not_cached() {
    let app = spawn_app_with(|s| s.upstream.retries = 0).await;
    app.sim.set_faults(Faults {
        latency_ms: 200,
        error_rate: 1.0,
        ..Faults::default()
    });
    let answers = join_all((0..20).map(|_| app.get(HISTORIC))).await;
    assert!(answers.iter().all(|a| a.status == 502));
    assert_eq!(
        app.sim.stats.snapshot().requests,
        1 + app.sim.stats.snapshot().metrics
    );
    app.sim.set_faults(Faults::default());
    assert_eq!(app.get(HISTORIC).await.status, 200);
    assert_eq!(app.upstream_metricdata(), 2);
}

#[tokio::test]
async fn fanned_out_device_requests_coalesce_per_device() {
    let app = spawn_app().await;
    slow(&app, 300);
    let range = "metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";
    let (qa, qb) = (
        format!("/v1/metricdata?{range}&devices=1,2"),
        format!("/v1/metricdata?{range}&devices=2,3"),
    );
    let (a, b) = tokio::join!(app.get(&qa), app.get(&qb));
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(app.upstream_metricdata(), 3, "{:?}", app.upstream_queries());
}

#[tokio::test]
async fn live_answers_expire_with_their_bucket() {
    let app = spawn_app_with(|s| {
        s.cache.live_ttl_secs = NonZero::new(2).unwrap();
        s.cache.stale_while_revalidate_secs = 0;
        s.cache.stale_if_error_secs = 0;
    })
    .await;
    // Start just after a bucket boundary, so both requests land in the same bucket.
    let now = app.clock.now_ms();
    app.clock.set(now - now % 2000 + 2020);
    let q = "/v1/metricdata?metric=connections&did=1";
    let a = app.get(q).await;
    assert!(a.header("cache-status").contains("fwd=miss"));
    let max_age: i64 = a
        .header("cache-control")
        .trim_start_matches("max-age=")
        .parse()
        .unwrap();
    assert!(
        max_age <= 2,
        "a live answer lives at most its bucket: {max_age}"
    );
    app.advance(Duration::from_millis(1970));
    assert!(app.get(q).await.header("cache-status").contains("hit"));
    assert_eq!(app.upstream_metricdata(), 1);
    app.advance(Duration::from_millis(10));
    let c = app.get(q).await;
    assert!(
        c.header("cache-status").contains("fwd=miss"),
        "{}",
        c.header("cache-status")
    );
    assert_eq!(app.upstream_metricdata(), 2);
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let app = spawn_app_with(|s| {
        s.cache.historic_ttl_secs = NonZero::new(1).unwrap();
        s.cache.stale_while_revalidate_secs = 60;
    })
    .await;
    assert_eq!(app.get(HISTORIC).await.status, 200);
    app.advance(Duration::from_millis(1000));
    slow(&app, 300);
    let stale = join_all((0..10).map(|_| app.get(HISTORIC))).await;
    for a in &stale {
        assert_eq!(a.status, 200);
        assert!(
            a.header("cache-status")
                .contains("detail=stale-while-revalidate"),
            "{}",
            a.header("cache-status")
        );
        assert_eq!(a.header("cache-control"), "max-age=0");
    }
    // Every stale answer above was given before the refresh stored its answer (each says
    // so), so all of them joined the one refresh in flight.
    let mut fresh = app.get(HISTORIC).await;
    for _ in 0..200 {
        if !fresh.header("cache-status").contains("stale") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        fresh = app.get(HISTORIC).await;
    }
    assert!(
        fresh
            .header("cache-status")
            .starts_with("metricgate; hit; ttl="),
        "{}",
        fresh.header("cache-status")
    );
    assert_eq!(
        app.upstream_metricdata(),
        2,
        "exactly one background refresh"
    );
}

#[tokio::test]
async fn stale_if_error_answers_stale_when_the_appliance_fails() {
    let app = spawn_app_with(|s| {
        // The breaker would open on the retried failures below; this test is about the cache.
        s.upstream.breaker_failures = NonZero::new(100).unwrap();
        s.cache.historic_ttl_secs = NonZero::new(1).unwrap();
        s.cache.stale_while_revalidate_secs = 0;
        s.cache.stale_if_error_secs = 60;
    })
    .await;
    let original = app.get(HISTORIC).await;
    app.advance(Duration::from_millis(1000));
    app.sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let a = app.get(HISTORIC).await;
    assert_eq!(a.status, 200);
    assert!(
        a.header("cache-status").contains("detail=stale-if-error"),
        "{}",
        a.header("cache-status")
    );
    assert!(a.header("cache-status").contains("fwd-status=502"));
    assert_eq!(a.body, original.body);
    // Without a stored answer, the error goes through.
    let other = app.get("/v1/metricdata?metric=bandwidth").await;
    assert_eq!(other.status, 502);
}

#[tokio::test]
async fn no_cache_forces_a_fetch_and_only_if_cached_never_waits() {
    let app = spawn_app().await;
    let a = app
        .get_with(HISTORIC, &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(a.status, 504);
    assert_eq!(a.header("content-type"), "application/problem+json");
    assert_eq!(app.upstream_metricdata(), 0);
    app.get(HISTORIC).await;
    let b = app
        .get_with(HISTORIC, &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(b.status, 200);
    let c = app
        .get_with(HISTORIC, &[("cache-control", "no-cache")])
        .await;
    assert_eq!(c.status, 200);
    assert!(
        c.header("cache-status").contains("fwd=request"),
        "{}",
        c.header("cache-status")
    );
    assert_eq!(app.upstream_metricdata(), 2);
    // Forced fetches are still coalesced.
    slow(&app, 300);
    join_all((0..20).map(|_| app.get_with(HISTORIC, &[("cache-control", "no-cache")]))).await;
    assert_eq!(app.upstream_metricdata(), 3);
}

#[tokio::test]
async fn if_none_match_gets_a_304() {
    let app = spawn_app().await;
    let a = app.get(HISTORIC).await;
    let etag = a.header("etag").to_owned();
    let resp = app
        .http
        .get(format!("{}{HISTORIC}", app.url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 304);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    let resp = app
        .http
        .get(format!("{}{HISTORIC}", app.url))
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn credential_failures_are_never_cached() {
    let app = spawn_app().await;
    app.sim.set_faults(Faults {
        redirect: true,
        ..Faults::default()
    });
    assert_eq!(app.get(HISTORIC).await.status, 502);
    app.sim.set_faults(Faults::default());
    assert_eq!(app.get(HISTORIC).await.status, 200);
    assert_eq!(app.upstream_metricdata(), 2);
}

#[tokio::test]
async fn gzip_is_served_from_the_stored_compressed_copy() {
    let app = spawn_app().await;
    let q = "/v1/metricdata?metric=connections&from=2024-01-15T00:00:00Z&to=2024-01-16T00:00:00Z&interval=5min";
    let http = reqwest::Client::builder().no_gzip().build().unwrap();
    let plain = http
        .get(format!("{}{q}", app.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let resp = http
        .get(format!("{}{q}", app.url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let gz = resp.bytes().await.unwrap();
    assert!(gz.len() < plain.len());
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
}

#[tokio::test]
async fn the_cache_reports_and_purges() {
    let app = spawn_app().await;
    app.get(HISTORIC).await;
    app.get(HISTORIC).await;
    app.get(
        "/v1/metricdata?metric=bandwidth&did=9&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z",
    )
    .await;
    let r = app.admin_get("/internal/cache").await;
    assert_eq!(r.body["entries"], 2);
    assert_eq!(r.body["hits"], 1);
    assert!(r.body["bytes"].as_u64().unwrap() > 1000);
    assert!((r.body["hit_ratio"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    // Below it, 6-point segments: one hour at 5 min is 2, one hour at 1 min (the default) 10.
    let segments = &r.body["segments"];
    assert_eq!(
        (segments["entries"].as_u64(), segments["misses"].as_u64()),
        (Some(12), Some(12))
    );
    assert!(segments["bytes"].as_u64().unwrap() > 0);

    let purge = app.admin_delete("/internal/cache?did=9").await;
    assert_eq!(purge.status, 200);
    assert_eq!(purge.body["purged"], 1);
    assert!(
        app.get(HISTORIC)
            .await
            .header("cache-status")
            .contains("hit")
    );
    let purge = app.admin_delete("/internal/cache?metric=connections").await;
    assert_eq!(
        (
            purge.body["purged"].as_u64(),
            purge.body["segments"].as_u64()
        ),
        (Some(1), Some(2))
    );
    // Gone from the segment cache too: the appliance is asked again.
    let asked = app.upstream_metricdata();
    assert!(
        app.get(HISTORIC)
            .await
            .header("cache-status")
            .contains("miss")
    );
    assert_eq!(app.upstream_metricdata(), asked + 1);
    let purge = app.admin_delete("/internal/cache").await;
    assert_eq!(purge.body["purged"], 1);
    let bad = app.admin_delete("/internal/cache?did=x&foo=1").await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn the_cache_never_exceeds_max_bytes() {
    let max = 200_000;
    let app = spawn_app_with(|s| s.cache.max_bytes = NonZero::new(max).unwrap()).await;
    for chunk in (0..300).collect::<Vec<u64>>().chunks(30) {
        let queries: Vec<String> = chunk
            .iter()
            .map(|did| format!("/v1/metricdata?metric=connections&did={}&from=2024-01-15T00:00:00Z&to=2024-01-15T12:00:00Z&interval=5min", did + 1))
            .collect();
        join_all(queries.iter().map(|q| app.get(q))).await;
    }
    let r = app.admin_get("/internal/cache").await;
    let bytes = r.body["bytes"].as_u64().unwrap();
    assert!(bytes <= max, "{bytes} > {max}");
    assert!(bytes > max / 4, "the cache holds something: {bytes}");
    let entries = r.body["entries"].as_u64().unwrap();
    assert!(entries < 300, "entries were evicted: {entries}");
}

#[tokio::test]
async fn answers_made_before_the_catalog_are_dropped_when_it_arrives() {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    sim.set_faults(Faults {
        catalog_status: Some(503),
        ..Faults::default()
    });
    let app = spawn_app_against(sim, |s| s.upstream.probe_secs = NonZero::new(1).unwrap()).await;
    let early = app.get(HISTORIC).await;
    assert_eq!(early.status, 200, "{}", early.body);
    assert_eq!(
        early.body["series"][0]["unit"],
        Value::Null,
        "no catalog, no unit"
    );
    assert!(
        app.get(HISTORIC)
            .await
            .header("cache-status")
            .contains("hit")
    );
    app.sim.set_faults(Faults::default());
    // The next probe, a period later on the gateway's clock, fetches the catalog.
    let arrived = app
        .advance_until(HISTORIC, Duration::from_secs(1), 10, |a| {
            a.body["series"][0]["unit"] != Value::Null
        })
        .await;
    assert!(arrived, "the catalog arrived");
    let unit = app.get(HISTORIC).await.body["series"][0]["unit"].clone();
    assert_eq!(unit, "connections", "the catalog's unit, once it arrived");
    assert_eq!(
        app.upstream_metricdata(),
        2,
        "fetched again once, after the purge"
    );
}
