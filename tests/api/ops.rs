//! Operations: Prometheus series, readiness, request ids and trace propagation.

use std::num::NonZero;
use std::time::Duration;

use metricgate::sim::Faults;
use secrecy::SecretString;

use crate::helpers::{spawn_app, spawn_app_with};

const Q: &str =
    "/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn prometheus_series_count_what_happened() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_client_per_minute = NonZero::new(60).unwrap();
        s.rate_limit.burst = NonZero::new(3).unwrap();
    })
    .await;
    app.ready().await;
    assert_eq!(app.get(Q).await.status, 200); // miss
    assert_eq!(app.get(Q).await.status, 200); // hit
    assert_eq!(
        app.get("/v1/metricdata?metric=connections&bogus=1")
            .await
            .status,
        400
    );
    assert_eq!(app.get(Q).await.status, 429);
    let resp = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    assert_eq!(
        value(
            &text,
            r#"metricgate_http_requests_total{route="/v1/metricdata",status="200"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"metricgate_http_requests_total{route="/v1/metricdata",status="400"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"metricgate_http_requests_total{route="/v1/metricdata",status="429"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"metricgate_http_request_duration_seconds_count{route="/v1/metricdata"}"#
        ),
        4.0
    );
    assert_eq!(
        value(&text, r#"metricgate_cache_events_total{event="hit"}"#),
        1.0
    );
    assert_eq!(
        value(&text, r#"metricgate_cache_events_total{event="miss"}"#),
        1.0
    );
    assert_eq!(value(&text, "metricgate_cache_entries"), 1.0);
    assert!(value(&text, "metricgate_cache_bytes") > 1000.0);
    assert!(value(&text, "metricgate_segment_cache_bytes") > 0.0);
    assert!(value(&text, "metricgate_segment_cache_entries") >= 1.0);
    assert!(
        value(
            &text,
            r#"metricgate_upstream_requests_total{appliance="default",outcome="ok"}"#
        ) >= 2.0
    ); // catalog + data
    assert!(
        value(
            &text,
            r#"metricgate_upstream_request_duration_seconds_count{appliance="default",outcome="ok"}"#
        ) >= 2.0
    );
    assert_eq!(value(&text, "metricgate_rate_limited_total"), 1.0);
    assert_eq!(value(&text, "metricgate_upstream_breaker_state"), 0.0);
    assert_eq!(value(&text, "metricgate_upstream_in_flight"), 0.0);
    assert!(text.contains("process_resident_memory_bytes"));
    // The scrape itself is not rate-limited and is counted under its own route.
    let again = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        value(
            &again,
            r#"metricgate_http_requests_total{route="/metrics",status="200"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn readiness_follows_the_appliance() {
    let app = spawn_app_with(|s| {
        s.upstream.probe_secs = NonZero::new(1).unwrap();
        s.upstream.probe_timeout_ms = NonZero::new(300).unwrap();
        s.upstream.breaker_failures = NonZero::new(1000).unwrap();
    })
    .await;
    app.ready().await;
    let r = app.admin_get("/internal/readiness").await;
    assert_eq!(r.body["ready"], true);
    assert_eq!(r.body["appliance"]["ok"], true);
    assert_eq!(r.body["appliance"]["status"], "reachable");

    app.sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    // Probes run every second of the gateway's clock.
    let second = Duration::from_secs(1);
    assert!(
        app.advance_until("/readyz", second, 3, |r| r.status == 503)
            .await,
        "readiness did not notice the appliance failing"
    );
    let r = app.admin_get("/internal/readiness").await;
    assert_eq!(r.status, 503);
    assert_eq!(app.get("/readyz").await.status, 503);
    assert!(
        r.body["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("appliance: "),
        "{}",
        r.body
    );

    app.sim.set_faults(Faults::default());
    assert!(
        app.advance_until("/readyz", second, 3, |r| r.status == 200)
            .await,
        "readiness did not notice the appliance recover"
    );
}

#[tokio::test]
async fn readiness_reports_refused_credentials_and_a_vanished_appliance() {
    let app = spawn_app_with(|s| {
        s.upstream.private_token = SecretString::from("wrong");
        s.upstream.probe_secs = NonZero::new(1).unwrap();
    })
    .await;
    // The first probe runs at start.
    assert!(
        app.advance_until("/internal/readiness", Duration::ZERO, 1, |r| {
            r.body["reasons"]
                .to_string()
                .contains("API SIGNATURE ERROR")
        })
        .await,
        "readiness did not report the refused signature: {}",
        app.admin_get("/internal/readiness").await.body
    );
    assert_eq!(app.get("/readyz").await.status, 503);

    let app = spawn_app_with(|s| {
        s.upstream.probe_secs = NonZero::new(1).unwrap();
        s.upstream.probe_timeout_ms = NonZero::new(300).unwrap();
        s.upstream.connect_timeout_ms = NonZero::new(300).unwrap();
    })
    .await;
    app.ready().await;
    app.sim.stop().await;
    assert!(
        app.advance_until("/readyz", Duration::from_secs(1), 3, |r| r.status == 503)
            .await,
        "readiness did not notice the appliance going away"
    );
}

#[tokio::test]
async fn request_ids_are_returned_and_traceparent_reaches_the_appliance() {
    let app = spawn_app().await;
    let a = app.get(Q).await;
    let id = a.header("x-request-id");
    assert_eq!(id.len(), 36, "a generated UUID: {id}");
    let b = app
        .get_with(Q, &[("x-request-id", "caller-chosen-42")])
        .await;
    assert_eq!(b.header("x-request-id"), "caller-chosen-42");
    let bad = app
        .get_with("/healthz", &[("x-request-id", "has spaces\tand tabs")])
        .await;
    assert_eq!(bad.header("x-request-id").len(), 36, "a bad id is replaced");

    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let c = app
        .get_with(&format!("{Q}&did=5"), &[("traceparent", trace)])
        .await;
    assert_eq!(c.status, 200);
    let sent = app
        .sim
        .stats
        .snapshot()
        .last_traceparent
        .expect("a traceparent reached the appliance");
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert_ne!(sent, trace, "the gateway is a new hop");
}

/// HEAD answers every GET route (liveness and readiness included): GET's status and headers,
/// no body, and the connection stays usable.
#[tokio::test]
async fn head_answers_every_get_route() {
    let app = spawn_app().await;
    app.ready().await;
    let routes = [
        "/healthz".to_owned(),
        "/readyz".to_owned(),
        "/metrics".to_owned(),
        "/openapi.json".to_owned(),
        "/v1/metrics".to_owned(),
        Q.to_owned(),
        format!("{Q}&format=csv"),
        "/darktrace/metricdata?metric=connections&did=1".to_owned(),
        "/darktrace/metrics".to_owned(),
        "/darktrace/metrics/1".to_owned(),
        "/docs/".to_owned(),
    ];
    for path in &routes {
        let get = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        let get_status = get.status();
        let get_type = get.headers().get("content-type").cloned();
        let head = app
            .http
            .head(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), get_status, "{path}");
        assert_eq!(
            head.headers().get("content-type").cloned(),
            get_type,
            "{path}"
        );
        assert!(head.bytes().await.unwrap().is_empty(), "{path}: a body");
    }
    let admin = app
        .http
        .head(format!("{}/internal/cache", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status().as_u16(), 200);
    // A cached answer's validators work for HEAD too.
    let etag = app.get(Q).await.header("etag").to_owned();
    let revalidated = app
        .http
        .head(format!("{}{Q}", app.url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status().as_u16(), 304);

    // On one kept-alive connection: HEAD, then GET, both answered whole.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text))
        .await
        .expect("both answered")
        .unwrap();
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert_eq!(text.matches(r#"{"status":"ok"}"#).count(), 1, "{text}");
}

/// The issue's eighth case: any caller could drive the access log. Lines over the cap are
/// dropped and counted.
#[tokio::test]
async fn access_lines_are_capped_and_what_is_dropped_is_counted() {
    let app = spawn_app_with(|s| {
        s.server.access_log = metricgate::settings::AccessLogMode::Errors;
        s.server.access_log_max_per_second = NonZero::new(5).unwrap();
    })
    .await;
    app.ready().await;
    let lines = |text: &str, outcome: &str| {
        value(
            text,
            &format!(r#"metricgate_access_log_lines_total{{outcome="{outcome}"}}"#),
        )
    };
    let scrape = || async { app.get_text("/metrics").await };
    app.advance(Duration::from_secs(1)); // a full cap
    let before = scrape().await;
    for _ in 0..20 {
        assert_eq!(app.get("/nowhere").await.status, 404);
    }
    for _ in 0..10 {
        assert_eq!(app.get("/healthz").await.status, 200);
    }
    let after = scrape().await;
    assert_eq!(lines(&after, "kept") - lines(&before, "kept"), 5.0);
    assert_eq!(lines(&after, "over_cap") - lines(&before, "over_cap"), 15.0);
    assert_eq!(
        lines(&after, "sampled_out") - lines(&before, "sampled_out"),
        11.0,
        "successes (the first scrape's too) are left out in `errors` mode"
    );
    app.advance(Duration::from_secs(1));
    app.get("/nowhere").await;
    let later = scrape().await;
    assert_eq!(lines(&later, "kept") - lines(&after, "kept"), 1.0);
}
