//! The isolation measurement (#30): appliance A (the default, over TLS with a pin), B failing
//! every request and C taking 8 s, behind one gateway with three token pairs. A's answers on
//! every route are compared within one run, before and while B and C misbehave: the same
//! statuses and bodies, A's breaker, budget, queue and readiness untouched, and A answered
//! while C's request is still in flight. Nothing is decided by the wall clock but that last
//! bound, which only a gateway blocking A on C could miss.

use std::num::NonZero;
use std::time::{Duration, Instant};

use base64::Engine as _;
use metricgate::pin::parse_pins;
use metricgate::settings::ApplianceSettings;
use metricgate::sim::{Faults, Simulator};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, PublicKeyData as _};
use serde_json::Value;

use crate::fleet::named;
use crate::helpers::{
    ADMIN_TOKEN, PRIVATE, PUBLIC, TestApp, TestRedis, serve_process_logged, spawn_app_against,
    spawn_cluster, wait_for_mode,
};

const FROM_TO: &str = "from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";

/// Every route A answers on, by its default name and by `default`.
fn a_routes() -> Vec<String> {
    vec![
        format!("/v1/metricdata?metric=connections&did=7&{FROM_TO}"),
        format!("/v1/metricdata?metric=connections&did=8&{FROM_TO}&appliance=default"),
        "/v1/metrics".into(),
        "/v1/metrics?appliance=default".into(),
        format!("/darktrace/metricdata?metric=connections&did=9&{FROM_TO}"),
        format!("/darktrace/default/metricdata?metric=connections&did=10&{FROM_TO}"),
        "/darktrace/metrics".into(),
        "/darktrace/default/metrics".into(),
        "/appliance/metricdata?metric=connections&did=11&starttime=1705320000000&endtime=1705323600000".into(),
        "/appliance/default/metricdata?metric=connections&did=12&starttime=1705320000000&endtime=1705323600000".into(),
        "/appliance/metrics".into(),
        "/appliance/default/metrics".into(),
        "/prometheus/api/v1/query?query=connections%7Bdid%3D%227%22%7D&time=1705321800".into(),
        "/prometheus/api/v1/label/__name__/values".into(),
    ]
}

/// A self-signed certificate for A, and the SPKI pin the gateway trusts it by.
fn certificate() -> (String, String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "appliance-a.lab");
    let cert = params.self_signed(&key).unwrap();
    let spki = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
    let pin = format!(
        "sha256//{}",
        base64::engine::general_purpose::STANDARD.encode(spki.as_ref())
    );
    (cert.pem(), key.serialize_pem(), pin)
}

/// The gateway: A (the helpers' tokens, HTTPS, pinned) as `default`; `b` and `c` with tokens
/// of their own. B and C may fail and wait, not A.
async fn three() -> (TestApp, Simulator, Simulator) {
    let (cert, key, pin) = certificate();
    let a = Simulator::spawn_tls("127.0.0.1:0", PUBLIC, PRIVATE, &cert, &key).unwrap();
    assert!(a.url().starts_with("https://"));
    let b = Simulator::spawn("127.0.0.1:0", "b-public", "b-private").unwrap();
    let c = Simulator::spawn("127.0.0.1:0", "c-public", "c-private").unwrap();
    let mut b_settings: ApplianceSettings = named("b", &b, "b-public", "b-private");
    b_settings.upstream.breaker_failures = NonZero::new(2).unwrap();
    let c_settings = named("c", &c, "c-public", "c-private");
    let app = spawn_app_against(a, move |s| {
        s.upstream.pin_sha256 = parse_pins(&pin).unwrap();
        s.appliances.push(b_settings);
        s.appliances.push(c_settings);
    })
    .await;
    b.set_clock(app.clock.clone());
    c.set_clock(app.clock.clone());
    app.ready().await;
    (app, b, c)
}

/// A's answers on every route: status and body (headers such as `Age` may differ).
async fn a_answers(app: &TestApp) -> Vec<(String, u16, String)> {
    let mut answers = Vec::new();
    for route in a_routes() {
        let r = app
            .http
            .get(format!("{}{route}", app.url))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        answers.push((route, status, r.text().await.unwrap()));
    }
    answers
}

async fn limits(app: &TestApp, name: &str) -> Value {
    app.admin_get("/internal/limits").await.body["appliances"][name].clone()
}

#[tokio::test]
async fn a_answers_alike_while_b_fails_and_c_hangs() {
    let (app, b, c) = three().await;
    let a_limits_calm = limits(&app, "default").await;

    // Calm: every appliance healthy.
    let started = Instant::now();
    let calm = a_answers(&app).await;
    let calm_took = started.elapsed();
    for (route, status, body) in &calm {
        assert_eq!(*status, 200, "{route}: {body}");
    }
    let fetched_calm = app.upstream_metricdata();
    assert!(fetched_calm >= 6, "A was asked ({fetched_calm})");

    // A's answers go, so the next pass asks A again.
    let purged = app.admin_delete("/internal/cache?appliance=default").await;
    assert_eq!(purged.status, 200, "{}", purged.body);

    // The storm: B fails every request, C takes 8 s.
    b.set_faults(Faults {
        error_rate: 1.0,
        error_status: Some(503),
        ..Faults::default()
    });
    c.set_faults(Faults {
        latency_ms: 8_000,
        ..Faults::default()
    });
    let slow = tokio::spawn({
        let (http, url) = (app.http.clone(), app.url.clone());
        async move {
            http.get(format!(
                "{url}/v1/metricdata?metric=connections&did=7&{FROM_TO}&appliance=c"
            ))
            .send()
            .await
            .map(|r| r.status().as_u16())
        }
    });
    // C has the question (and sleeps on it) before A is asked anything.
    for _ in 0..500 {
        if c.stats.snapshot().metricdata > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.stats.snapshot().metricdata, 1, "C is answering slowly");
    // B's breaker opens.
    let mut b_statuses = Vec::new();
    for did in 1..=6 {
        let r = app
            .get(&format!(
                "/v1/metricdata?metric=connections&did={did}&{FROM_TO}&appliance=b"
            ))
            .await;
        b_statuses.push(r.status);
        if limits(&app, "b").await["breaker"] == "open" {
            break;
        }
    }
    assert!(b_statuses.iter().all(|s| *s >= 500), "{b_statuses:?}");
    assert_eq!(limits(&app, "b").await["breaker"], "open", "{b_statuses:?}");

    let started = Instant::now();
    let storm = a_answers(&app).await;
    let storm_took = started.elapsed();
    assert!(
        !slow.is_finished(),
        "A answered every route while C's 8 s request was still in flight"
    );
    println!("A's answers: calm {calm_took:?}, with B failing and C hanging {storm_took:?}");

    // The same answers, fetched from A again (not served from the cache).
    assert_eq!(calm.len(), storm.len());
    for (before, after) in calm.iter().zip(&storm) {
        assert_eq!(before, after, "A's answer changed with B and C misbehaving");
    }
    assert_eq!(
        app.upstream_metricdata(),
        2 * fetched_calm,
        "the storm pass asked A as often as the calm one"
    );

    // A's breaker, budget and queue are as they were; B's alone opened.
    let a_limits = limits(&app, "default").await;
    for key in [
        "breaker",
        "breaker_opened",
        "in_flight",
        "queued",
        "waiting_for_budget",
    ] {
        assert_eq!(a_limits[key], a_limits_calm[key], "A's {key}: {a_limits}");
    }
    assert_eq!(a_limits["breaker"], "closed");
    assert_eq!(
        limits(&app, "c").await["in_flight"],
        1,
        "C holds its own slot"
    );

    // Ready while A (the default) is; the admin readiness lists each with its reasons.
    assert_eq!(app.get("/readyz").await.status, 200);
    let readiness = app.admin_get("/internal/readiness").await;
    let each = &readiness.body["appliances"];
    assert_eq!(
        each["default"]["appliance_reasons"],
        serde_json::json!([]),
        "{}",
        readiness.body
    );
    assert_eq!(each["default"]["breaker"], "closed");
    let b_reasons = each["b"]["appliance_reasons"].to_string();
    assert!(b_reasons.contains("breaker open"), "{b_reasons}");
    assert!(each["c"].is_object(), "{}", readiness.body);
    // The listing says the same to callers.
    let listed = app.get("/v1/appliances").await;
    let ready: Vec<(String, bool)> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_owned(),
                a["ready"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(ready.contains(&("default".into(), true)), "{ready:?}");
    assert!(ready.contains(&("b".into(), false)), "{ready:?}");
    slow.abort();
}

#[tokio::test]
async fn metrics_and_access_lines_name_the_appliance() {
    let a = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let emea = Simulator::spawn("127.0.0.1:0", "emea-public", "emea-private").unwrap();
    let emea_url = emea.url();
    let (mut child, port, logs) = serve_process_logged(
        &a,
        &[
            ("METRICGATE__SERVER__ACCESS_LOG", "all".as_ref()),
            ("METRICGATE__CACHE__DIR", "".as_ref()),
            ("METRICGATE__APPLIANCES__EMEA__URL", emea_url.as_ref()),
            (
                "METRICGATE__APPLIANCES__EMEA__PUBLIC_TOKEN",
                "emea-public".as_ref(),
            ),
            (
                "METRICGATE__APPLIANCES__EMEA__PRIVATE_TOKEN",
                "emea-private".as_ref(),
            ),
        ],
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut answered = false;
    for _ in 0..200 {
        let r = http
            .get(format!("{base}/v1/metrics?appliance=emea"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "emea's catalog is served");
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The lines reach the test through a pipe and a reader thread: wait for the access line
    // of the answered request (and of the scrape) before stopping the process.
    let written = |path: &str| {
        let logs = logs.lock().unwrap();
        logs.iter()
            .any(|l| l["message"] == "request" && l["path"] == path && l["status"] == 200)
    };
    for _ in 0..500 {
        if written("/v1/metrics") && written("/metrics") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains(r#"metricgate_upstream_requests_total{appliance="emea",outcome="ok"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"metricgate_upstream_requests_total{appliance="default",outcome="ok"}"#),
        "{text}"
    );
    assert!(text.contains(
        r#"metricgate_upstream_request_duration_seconds_count{appliance="emea",outcome="ok"}"#
    ));
    let logs = logs.lock().unwrap();
    let line = logs
        .iter()
        .find(|l| l["message"] == "request" && l["path"] == "/v1/metrics" && l["status"] == 200)
        .unwrap_or_else(|| panic!("an access line for /v1/metrics: {logs:?}"));
    assert_eq!(line["appliance"], "emea", "{line}");
    // Routes that read no appliance have no appliance in their line.
    assert!(
        logs.iter()
            .filter(|l| l["message"] == "request" && l["path"] == "/metrics")
            .all(|l| l.get("appliance").is_none()),
    );
}

/// Status, `Cache-Status` and body of a GET on a replica.
async fn on(http: &reqwest::Client, url: &str) -> (u16, String, String) {
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

#[tokio::test]
async fn replicas_share_each_appliances_answers_apart_and_purge_one_alone() {
    let redis = TestRedis::start();
    let emea = Simulator::spawn("127.0.0.1:0", "emea-public", "emea-private").unwrap();
    let emea_settings = named("emea", &emea, "emea-public", "emea-private");
    let (sim, replicas) = spawn_cluster(2, &redis.url(), None, |s| {
        // Redis calls given time on a loaded test machine (see cluster.rs).
        s.redis.timeout_ms = NonZero::new(2_000).unwrap();
        s.appliances.push(emea_settings.clone());
    })
    .await;
    let all: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    wait_for_mode(&all, true).await;
    let (one, two) = (&all[0], &all[1]);
    let http = reqwest::Client::new();
    let q = format!("/v1/metricdata?metric=connections&did=7&{FROM_TO}");
    let asked = || {
        (
            sim.stats.snapshot().metricdata,
            emea.stats.snapshot().metricdata,
        )
    };

    // The same question to each appliance: each asked once, the other replica served from
    // Redis, and never one appliance's answer for the other's.
    let (status, _, default_body) = on(&http, &format!("{one}{q}")).await;
    assert_eq!(status, 200, "{default_body}");
    let (_, shared, body) = on(&http, &format!("{two}{q}")).await;
    assert!(shared.ends_with("detail=shared"), "{shared}");
    assert_eq!(body, default_body);
    assert_eq!(asked(), (1, 0));
    let (status, cache, emea_body) = on(&http, &format!("{one}{q}&appliance=emea")).await;
    assert_eq!(status, 200, "{emea_body}");
    assert!(cache.contains("fwd=miss"), "not default's answer: {cache}");
    assert_eq!(asked(), (1, 1));
    let (_, shared, body) = on(&http, &format!("{two}{q}&appliance=emea")).await;
    assert!(shared.ends_with("detail=shared"), "{shared}");
    assert_eq!(body, emea_body);
    assert_eq!(asked(), (1, 1));

    // A purge of emea on replica one reaches replica two, and leaves default's answers.
    let purged = http
        .delete(format!("{one}/internal/cache?appliance=emea"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    let purged: Value = purged.json().await.unwrap();
    let generation = purged["generation"].as_u64().expect("announced");
    let mut applied = false;
    for _ in 0..250 {
        let report: Value = http
            .get(format!("{two}/internal/cache"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if report["appliances"]["emea"]["purge_generation"]
            .as_u64()
            .is_some_and(|g| g >= generation)
        {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(applied, "replica two applies emea's purge");
    for url in [one, two] {
        let (_, cache, _) = on(&http, &format!("{url}{q}")).await;
        assert!(
            cache.contains("hit"),
            "default's answer stays cached: {cache}"
        );
    }
    assert_eq!(asked().0, 1, "default was not asked again");
    let (_, cache, body) = on(&http, &format!("{two}{q}&appliance=emea")).await;
    assert!(
        cache.contains("fwd=miss"),
        "emea's answers are gone: {cache}"
    );
    assert_eq!(body, emea_body);
    assert_eq!(asked(), (1, 2));
}
