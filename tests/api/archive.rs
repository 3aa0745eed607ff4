//! History beyond the appliance's retention (#29): with `cache.archive`, settled segments are
//! kept on disk past their TTL and answer what the appliance no longer holds, saying so.

use std::time::Duration;

use metricgate::sim::Profile;

use crate::helpers::{TestApp, spawn_app_with};

async fn app(dir: &std::path::Path, archive: bool) -> TestApp {
    let dir = dir.to_owned();
    spawn_app_with(move |s| {
        s.cache.dir = Some(dir);
        s.cache.archive = archive;
    })
    .await
}

/// A day three days back, asked once; then the appliance's retention drops it (1 day) and
/// the gateway's clock moves past the historic TTL.
async fn asked_then_forgotten(app: &TestApp) -> (String, serde_json::Value) {
    let now = app.clock.now_ms() / 1000;
    let day = now - now.rem_euclid(86_400) - 3 * 86_400;
    let question = format!(
        "/v1/metricdata?metric=connections&did=7&starttime={}&endtime={}&interval=3600",
        day * 1000,
        (day + 86_400) * 1000
    );
    let first = app.get(&question).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(
        !first.body["series"][0]["points"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    app.sim.set_profile(Profile {
        retention_days: 1,
        ..Profile::default()
    });
    app.advance_and_settle(Duration::from_secs(2 * 86_400))
        .await;
    (question, first.body)
}

#[tokio::test]
async fn the_archive_answers_what_the_appliance_no_longer_holds() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), true).await;
    let (question, first) = asked_then_forgotten(&app).await;
    let asked = app.upstream_metricdata();
    let again = app.get(&question).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["series"], first["series"], "the archived day");
    assert!(
        again.header("cache-status").contains("detail=archive"),
        "{}",
        again.header("cache-status")
    );
    assert_eq!(
        app.upstream_metricdata(),
        asked,
        "the appliance was not asked"
    );
    // The archived day and the days after it, which the appliance is asked for: a mix, and
    // the answer says so.
    let end = app.clock.now_ms() / 3_600_000 * 3_600_000;
    let start = question
        .split('&')
        .find_map(|kv| kv.strip_prefix("starttime="))
        .unwrap()
        .to_owned();
    let mixed = app
        .get(&format!(
            "/v1/metricdata?metric=connections&did=7&starttime={start}&endtime={end}&interval=3600"
        ))
        .await;
    assert_eq!(mixed.status, 200, "{}", mixed.body);
    let status = mixed.header("cache-status");
    assert!(
        status.contains("fwd=miss") && status.contains("detail=archive"),
        "{status}"
    );
    assert!(app.upstream_metricdata() > asked);

    // Without the archive the same day is asked again, and the appliance has let it go.
    let dir = tempfile::tempdir().unwrap();
    let plain = self::app(dir.path(), false).await;
    let (question, _) = asked_then_forgotten(&plain).await;
    let again = plain.get(&question).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(
        again.body["series"][0]["points"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{}",
        again.body
    );
    assert!(!again.header("cache-status").contains("archive"));
}
