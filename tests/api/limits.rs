//! Callers' rate limits and the appliance's protection, asserted on statuses, headers and the
//! simulator's own counters.

use std::num::NonZero;

use futures::future::join_all;
use metricgate::settings::ClientQuota;
use metricgate::sim::Faults;

use crate::helpers::spawn_app_with;

const Q: &str =
    "/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";

#[tokio::test]
async fn a_burst_beyond_the_limit_gets_429s_while_others_get_200s() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_client_per_minute = NonZero::new(60).unwrap();
        s.rate_limit.burst = NonZero::new(5).unwrap();
        s.rate_limit.overrides.insert(
            "dashboards".into(),
            ClientQuota {
                per_minute: 600,
                burst: 20,
            },
        );
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let a = app.get_with(Q, &[("x-client-id", "greedy")]).await;
        statuses.push(a.status);
        if a.status == 200 {
            assert_eq!(a.header("ratelimit-policy"), "60;w=60;burst=5");
            assert!(
                a.header("ratelimit").starts_with("limit=5, remaining="),
                "{}",
                a.header("ratelimit")
            );
        } else {
            assert_eq!(a.status, 429);
            assert_eq!(a.header("content-type"), "application/problem+json");
            assert_eq!(a.body["type"], "urn:metricgate:problem:rate-limited");
            assert_eq!(a.header("retry-after"), "1");
            assert_eq!(a.header("ratelimit"), "limit=5, remaining=0, reset=5");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    // Another caller is unaffected; so are the callers identified by IP and by override.
    assert_eq!(
        app.get_with(Q, &[("x-client-id", "polite")]).await.status,
        200
    );
    assert_eq!(app.get(Q).await.status, 200);
    for _ in 0..10 {
        let a = app.get_with(Q, &[("x-client-id", "dashboards")]).await;
        assert_eq!(a.status, 200);
        assert!(a.header("ratelimit").starts_with("limit=20"));
    }
    // Health, readiness and the admin endpoints are exempt.
    for path in ["/healthz", "/readyz"] {
        let a = app.get_with(path, &[("x-client-id", "greedy")]).await;
        assert_ne!(a.status, 429, "{path}");
        assert!(a.header("ratelimit").is_empty(), "{path}");
    }
    for path in ["/internal/cache", "/internal/limits"] {
        let a = app.admin_get(path).await;
        assert_eq!(a.status, 200, "{path}");
        assert!(a.header("ratelimit").is_empty(), "{path}");
    }
    // Even a 400 counts and carries the headers.
    let a = app
        .get_with(
            "/v1/metricdata?metric=connections&foo=1",
            &[("x-client-id", "fresh")],
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.header("ratelimit"), "limit=5, remaining=4, reset=1");
}

#[tokio::test]
async fn the_client_ip_identifies_callers_and_forwarded_for_only_from_trusted_proxies() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_client_per_minute = NonZero::new(60).unwrap();
        s.rate_limit.burst = NonZero::new(2).unwrap();
        s.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    for ip in ["10.1.1.1", "10.1.1.2"] {
        for _ in 0..2 {
            assert_eq!(
                app.get_with(Q, &[("x-forwarded-for", ip)]).await.status,
                200
            );
        }
        assert_eq!(
            app.get_with(Q, &[("x-forwarded-for", ip)]).await.status,
            429,
            "{ip}"
        );
    }
    // The rightmost untrusted address counts; one a caller prepends does not.
    let a = app
        .get_with(Q, &[("x-forwarded-for", "1.2.3.4, 10.1.1.1")])
        .await;
    assert_eq!(a.status, 429);

    let untrusting = spawn_app_with(|s| {
        s.rate_limit.per_client_per_minute = NonZero::new(60).unwrap();
        s.rate_limit.burst = NonZero::new(2).unwrap();
    })
    .await;
    let mut statuses = Vec::new();
    for ip in ["10.1.1.1", "10.1.1.2", "10.1.1.3"] {
        statuses.push(
            untrusting
                .get_with(Q, &[("x-forwarded-for", ip)])
                .await
                .status,
        );
    }
    assert_eq!(
        statuses,
        [200, 200, 429],
        "an untrusted peer's X-Forwarded-For is ignored"
    );
}

#[tokio::test]
async fn the_appliance_never_sees_more_than_max_in_flight() {
    let app = spawn_app_with(|s| {
        s.upstream.max_in_flight = NonZero::new(3).unwrap();
        s.upstream.queue_timeout_ms = NonZero::new(30_000).unwrap();
    })
    .await;
    app.ready().await;
    app.sim.set_faults(Faults {
        latency_ms: 100,
        ..Faults::default()
    });
    let queries: Vec<String> = (1..=40).map(|did| format!("{Q}&did={did}")).collect();
    let answers = join_all(queries.iter().map(|q| app.get(q))).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let stats = app.sim.stats.snapshot();
    assert_eq!(stats.metricdata, 40);
    assert_eq!(stats.peak_in_flight, 3, "the simulator's own peak");
}

#[tokio::test]
async fn without_a_slot_in_time_the_answer_is_503_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.upstream.max_in_flight = NonZero::new(1).unwrap();
        s.upstream.queue_timeout_ms = NonZero::new(100).unwrap();
    })
    .await;
    app.ready().await;
    app.sim.set_faults(Faults {
        latency_ms: 600,
        ..Faults::default()
    });
    let queries: Vec<String> = (1..=3).map(|did| format!("{Q}&did={did}")).collect();
    let asked = join_all(queries.iter().map(|q| app.get(q)));
    let expire = async {
        // One request holds the slot; once the other two wait for it, their time runs out.
        app.wait_for_guard(|g| g["in_flight"] == 1 && g["queued"] == 2)
            .await;
        app.advance(std::time::Duration::from_millis(100));
    };
    let (answers, ()) = tokio::join!(asked, expire);
    let busy: Vec<_> = answers.iter().filter(|a| a.status == 503).collect();
    assert_eq!(busy.len(), 2);
    assert_eq!(answers.iter().filter(|a| a.status == 200).count(), 1);
    for a in busy {
        assert_eq!(a.body["type"], "urn:metricgate:problem:appliance-busy");
        assert!(a.header("retry-after").parse::<u64>().unwrap() >= 1);
    }
    // A cache hit is never held back.
    app.sim.set_faults(Faults {
        latency_ms: 2000,
        ..Faults::default()
    });
    let slow_query = format!("{Q}&did=99");
    let slow = app.get(&slow_query);
    let hit = async {
        app.wait_for_guard(|g| g["in_flight"] == 1).await;
        app.get(&queries[answers.iter().position(|a| a.status == 200).unwrap()])
            .await
    };
    let (_, hit) = tokio::join!(slow, hit);
    assert_eq!(hit.status, 200);
    assert!(hit.header("cache-status").contains("hit"));
}

#[tokio::test]
async fn the_per_minute_budget_holds() {
    let app = spawn_app_with(|s| {
        // 5 for callers (a burst of 1, then one every 15 s) and 1 for probes.
        s.upstream.per_minute = 6;
        s.upstream.queue_wait_secs = NonZero::new(1).unwrap();
    })
    .await;
    app.ready().await; // the catalog came with the probe, from the probes' share
    assert_eq!(app.get(&format!("{Q}&did=1")).await.status, 200);
    let a = app.get(&format!("{Q}&did=2")).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.body["type"], "urn:metricgate:problem:appliance-busy");
    assert_eq!(a.header("retry-after"), "15", "the next token, not a guess");
    assert_eq!(app.upstream_metricdata(), 1);
    app.advance(std::time::Duration::from_secs(15));
    assert_eq!(app.get(&format!("{Q}&did=2")).await.status, 200);
    assert_eq!(app.upstream_metricdata(), 2);
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let app = spawn_app_with(|s| {
        s.upstream.retries = 2;
        s.upstream.retry_backoff_ms = 10;
        s.upstream.breaker_failures = NonZero::new(100).unwrap();
    })
    .await;
    app.ready().await;
    let before = app.sim.stats.snapshot().requests;
    app.sim.set_faults(Faults {
        error_rate: 1.0,
        error_status: Some(503),
        ..Faults::default()
    });
    assert_eq!(app.get(Q).await.status, 502);
    assert_eq!(
        app.sim.stats.snapshot().requests - before,
        3,
        "one try and two retries"
    );
    // A 500 is not transient: no retry.
    app.sim.set_faults(Faults {
        error_rate: 1.0,
        error_status: Some(500),
        ..Faults::default()
    });
    assert_eq!(app.get(&format!("{Q}&did=2")).await.status, 502);
    assert_eq!(app.sim.stats.snapshot().requests - before, 4);
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_and_recovers() {
    let app = spawn_app_with(|s| {
        s.upstream.retries = 0;
        s.upstream.breaker_failures = NonZero::new(3).unwrap();
        s.upstream.breaker_open_secs = NonZero::new(1).unwrap();
    })
    .await;
    app.ready().await;
    app.sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    for did in 1..=3 {
        assert_eq!(app.get(&format!("{Q}&did={did}")).await.status, 502);
    }
    let limits = app.admin_get("/internal/limits").await;
    assert_eq!(limits.body["appliance"]["breaker"], "open");
    let seen = app.sim.stats.snapshot().requests;
    let a = app.get(&format!("{Q}&did=4")).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.body["type"], "urn:metricgate:problem:appliance-failing");
    assert!(!a.header("retry-after").is_empty());
    assert_eq!(
        app.sim.stats.snapshot().requests,
        seen,
        "an open breaker fails fast"
    );

    app.sim.set_faults(Faults::default());
    app.advance(std::time::Duration::from_millis(1000));
    assert_eq!(
        app.get(&format!("{Q}&did=5")).await.status,
        200,
        "the half-open probe"
    );
    assert_eq!(
        app.admin_get("/internal/limits").await.body["appliance"]["breaker"],
        "closed"
    );
    assert_eq!(app.get(&format!("{Q}&did=6")).await.status, 200);
}

#[tokio::test]
async fn an_open_breaker_serves_stale_where_it_can() {
    let app = spawn_app_with(|s| {
        s.upstream.retries = 0;
        s.upstream.breaker_failures = NonZero::new(1).unwrap();
        s.upstream.breaker_open_secs = NonZero::new(60).unwrap();
        s.cache.historic_ttl_secs = NonZero::new(1).unwrap();
        s.cache.stale_while_revalidate_secs = 0;
        s.cache.stale_if_error_secs = 600;
    })
    .await;
    app.ready().await;
    assert_eq!(app.get(Q).await.status, 200);
    app.sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    assert_eq!(app.get(&format!("{Q}&did=1")).await.status, 502); // opens the breaker
    app.advance(std::time::Duration::from_millis(1000));
    let seen = app.sim.stats.snapshot().requests;
    let a = app.get(Q).await;
    assert_eq!(a.status, 200);
    assert!(
        a.header("cache-status").contains("fwd-status=503; "),
        "{}",
        a.header("cache-status")
    );
    assert!(a.header("cache-status").contains("stale-if-error"));
    assert_eq!(app.sim.stats.snapshot().requests, seen);
}

#[tokio::test]
async fn internal_limits_shows_the_effective_limits() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_client_per_minute = NonZero::new(120).unwrap();
        s.rate_limit.burst = NonZero::new(30).unwrap();
        s.rate_limit.overrides.insert(
            "dash".into(),
            ClientQuota {
                per_minute: 600,
                burst: 100,
            },
        );
        s.upstream.max_in_flight = NonZero::new(4).unwrap();
        s.upstream.per_minute = 90;
    })
    .await;
    let a = app.admin_get("/internal/limits").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["client_header"], "x-client-id");
    assert_eq!(a.body["per_client"]["per_minute"], 120);
    assert_eq!(a.body["per_client"]["burst"], 30);
    assert_eq!(a.body["overrides"]["dash"]["burst"], 100);
    assert_eq!(a.body["appliance"]["max_in_flight"], 4);
    assert_eq!(a.body["appliance"]["per_minute"], 90);
    assert_eq!(a.body["appliance"]["breaker"], "closed");
}
