//! The appliance's protection never locks callers out: probes feed readiness and never the
//! breaker, the half-open trial goes to a caller and is given back when it cannot go, probes
//! keep to their share, and `Retry-After` says what the budget really needs. Against the
//! simulator's faults, on the gateway's manual clock.

use std::num::NonZero;
use std::time::Duration;

use futures::future::join_all;
use metricgate::sim::Faults;

use crate::helpers::{TestApp, spawn_app_with};

const Q: &str =
    "/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";

async fn breaker(app: &TestApp) -> String {
    app.admin_get("/internal/limits").await.body["appliance"]["breaker"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn failing() -> Faults {
    Faults {
        error_rate: 1.0,
        ..Faults::default()
    }
}

/// The first case: an appliance that answers slower than the probe's timeout but well
/// inside the request timeout.
#[tokio::test]
async fn a_slow_but_healthy_appliance_is_never_locked_out() {
    let app = spawn_app_with(|s| {
        s.upstream.probe_secs = NonZero::new(1).unwrap();
        s.upstream.probe_timeout_ms = NonZero::new(150).unwrap();
        s.upstream.timeout_ms = NonZero::new(10_000).unwrap();
        s.upstream.breaker_failures = NonZero::new(2).unwrap();
        s.upstream.breaker_open_secs = NonZero::new(3).unwrap();
        s.upstream.retries = 0;
    })
    .await;
    app.ready().await;
    app.sim.set_faults(Faults {
        latency_ms: 600,
        ..Faults::default()
    });
    // Probes time out, again and again, while callers ask.
    for did in 1..=6 {
        app.advance(Duration::from_secs(1));
        let a = app.get(&format!("{Q}&did={did}")).await;
        assert_eq!(a.status, 200, "request {did}: {}", a.body);
    }
    assert_eq!(
        app.upstream_metricdata(),
        6,
        "every cold request reached the appliance"
    );
    assert_eq!(
        breaker(&app).await,
        "closed",
        "probe timeouts never open the breaker"
    );
    let r = app.admin_get("/internal/readiness").await;
    assert_eq!(r.body["appliance"]["status"], "unreachable", "{}", r.body);
    assert!(
        r.body["appliance"]["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within 150ms"),
        "{}",
        r.body
    );
    assert_eq!(r.status, 200, "callers are answered: ready ({})", r.body);
    // With no caller answered lately, the slow probes make it unready, nothing more.
    assert!(
        app.advance_until("/readyz", Duration::from_secs(1), 6, |r| r.status == 503)
            .await,
        "probe timeouts feed readiness"
    );
    let a = app.get(&format!("{Q}&did=7")).await;
    assert_eq!(a.status, 200, "and callers still get through: {}", a.body);
    assert_eq!(breaker(&app).await, "closed");
}

/// The second case: `PER_MINUTE=6`, `BREAKER_FAILURES=2`, `BREAKER_OPEN_SECS=2`.
#[tokio::test]
async fn a_half_open_trial_without_a_token_is_given_back_and_the_breaker_recovers() {
    let app = spawn_app_with(|s| {
        s.upstream.per_minute = 6; // callers: a burst of 1, then one every 15 s
        s.upstream.breaker_failures = NonZero::new(2).unwrap();
        s.upstream.breaker_open_secs = NonZero::new(2).unwrap();
        s.upstream.queue_wait_secs = NonZero::new(1).unwrap();
        s.upstream.retries = 0;
    })
    .await;
    app.ready().await;
    app.sim.set_faults(failing());
    assert_eq!(app.get(&format!("{Q}&did=1")).await.status, 502);
    app.advance(Duration::from_secs(15));
    assert_eq!(app.get(&format!("{Q}&did=2")).await.status, 502);
    assert_eq!(breaker(&app).await, "open");
    app.sim.set_faults(Faults::default());
    app.advance(Duration::from_secs(2));
    // Half-open, but the next token is 13 s away, past the 1 s wait: the trial cannot go, and
    // is given back.
    let busy = app.get(&format!("{Q}&did=3")).await;
    assert_eq!(busy.status, 503);
    assert_eq!(busy.body["type"], "urn:metricgate:problem:appliance-busy");
    assert_eq!(busy.header("retry-after"), "13");
    assert_eq!(
        breaker(&app).await,
        "half_open",
        "not stuck with a trial nobody runs"
    );
    app.advance(Duration::from_secs(13));
    let trial = app.get(&format!("{Q}&did=3")).await;
    assert_eq!(
        trial.status, 200,
        "the next caller is the trial: {}",
        trial.body
    );
    assert_eq!(breaker(&app).await, "closed");
    assert_eq!(app.upstream_metricdata(), 3);
}

#[tokio::test]
async fn failing_probes_feed_readiness_and_only_callers_requests_open_the_breaker() {
    let app = spawn_app_with(|s| {
        s.upstream.probe_secs = NonZero::new(1).unwrap();
        s.upstream.breaker_failures = NonZero::new(1).unwrap();
        s.upstream.breaker_open_secs = NonZero::new(10).unwrap();
        s.upstream.retries = 0;
    })
    .await;
    app.ready().await;
    app.sim.set_faults(failing());
    assert!(
        app.advance_until("/readyz", Duration::from_secs(1), 5, |r| r.status == 503)
            .await,
        "readiness did not notice the failing probes"
    );
    for _ in 0..3 {
        app.advance_and_settle(Duration::from_secs(1)).await;
    }
    assert_eq!(breaker(&app).await, "closed", "probes never open it");
    assert_eq!(app.get(Q).await.status, 502);
    assert_eq!(breaker(&app).await, "open", "a caller's failure does");

    // The appliance recovers: probes see it, but they do not close the breaker; the trial,
    // a caller's request, does.
    app.sim.set_faults(Faults::default());
    app.advance(Duration::from_secs(10));
    assert!(
        app.advance_until("/internal/readiness", Duration::from_secs(1), 5, |r| {
            r.body["appliance"]["status"] == "reachable"
        })
        .await
    );
    assert_eq!(breaker(&app).await, "half_open");
    let trial = app.get(&format!("{Q}&did=9")).await;
    assert_eq!(trial.status, 200);
    assert_eq!(breaker(&app).await, "closed");
    assert!(
        app.advance_until("/readyz", Duration::from_secs(1), 5, |r| r.status == 200)
            .await,
        "ready again"
    );
}

/// The third case: an appliance that answers the probe with 404 is reachable.
#[tokio::test]
async fn a_404_to_the_probe_is_reachable() {
    let app = spawn_app_with(|s| s.upstream.probe_secs = NonZero::new(1).unwrap()).await;
    app.ready().await;
    app.sim.set_faults(Faults {
        catalog_status: Some(404),
        ..Faults::default()
    });
    let seen = app.sim.stats.snapshot().metrics;
    for _ in 0..4 {
        app.advance_and_settle(Duration::from_secs(1)).await;
    }
    assert!(app.sim.stats.snapshot().metrics > seen, "the probes ran");
    let r = app.admin_get("/internal/readiness").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["appliance"]["status"], "reachable");
    assert_eq!(app.get("/readyz").await.status, 200);
    assert_eq!(app.get(Q).await.status, 200, "data requests work");
    // The probe asks for what every appliance serves: the catalog, never one metric by id.
    let recent = app.sim.stats.snapshot().recent;
    assert!(
        recent.iter().all(|p| !p.starts_with("/metrics/")),
        "{recent:?}"
    );
}

#[tokio::test]
async fn probes_keep_to_their_share_of_the_budget() {
    let app = spawn_app_with(|s| {
        s.upstream.per_minute = 60; // probes: 6 a minute, whatever probe_secs says
        s.upstream.probe_secs = NonZero::new(1).unwrap();
    })
    .await;
    app.ready().await;
    let before = app.sim.stats.snapshot().metrics;
    for _ in 0..60 {
        app.advance_and_settle(Duration::from_secs(1)).await;
    }
    let probes = app.sim.stats.snapshot().metrics - before;
    assert!((5..=7).contains(&probes), "{probes} probes in a minute");
    // And the callers' budget is the rest: 54, a burst of 9.
    let limits = app.admin_get("/internal/limits").await;
    assert_eq!(limits.body["appliance"]["probe_per_minute"], 6);
}

/// The sixth case: many concurrent cold queries against the budget. Those the budget
/// can serve within their wait wait their turn; each 503 says when the budget could serve
/// it, after everyone waiting or told a time before it.
#[tokio::test]
async fn retry_after_under_overload_is_what_the_budget_needs() {
    let app = spawn_app_with(|s| {
        s.upstream.per_minute = 60; // callers: a burst of 9, then one every 4/3 s
        s.upstream.queue_wait_secs = NonZero::new(5).unwrap();
    })
    .await;
    app.ready().await;
    let queries: Vec<String> = (1..=40).map(|did| format!("{Q}&did={did}")).collect();
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let asked = join_all(queries.iter().map(|q| async {
        let a = app.get(q).await;
        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        a
    }));
    let expire = async {
        // Three wait for the tokens of the next 4 s; the other 28 are told at once.
        app.wait_for_guard(|g| g["waiting_for_budget"] == 3).await;
        while answered.load(std::sync::atomic::Ordering::SeqCst) < 37 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        app.advance(Duration::from_secs(5));
    };
    let (answers, ()) = tokio::join!(asked, expire);
    let served = answers.iter().filter(|a| a.status == 200).count();
    let busy: Vec<u64> = answers
        .iter()
        .filter(|a| a.status == 503)
        .map(|a| {
            assert_eq!(a.body["type"], "urn:metricgate:problem:appliance-busy");
            a.header("retry-after").parse().unwrap()
        })
        .collect();
    assert_eq!(served + busy.len(), 40);
    assert_eq!(served, 12, "the burst, then 3 tokens in 5 s");
    assert_eq!(app.upstream_metricdata(), 12);
    // The first refused needs the 4th token (5.3 s), each next one a token more: the last,
    // the 31st token, 41.3 s.
    let mut told = busy.clone();
    told.sort_unstable();
    told.dedup();
    assert_eq!(told.len(), 28, "spread out, not a retry storm: {busy:?}");
    assert_eq!((told[0], told[27]), (6, 42), "{busy:?}");
}
