//! One question to several appliances at once (#30): `/v1/metricdata?appliances=…` asks each
//! through its own caches and budget, labels every series with its appliance, and an
//! appliance that fails leaves the others' answer, marked partial and never kept as whole.

use std::num::NonZero;

use metricgate::sim::{Faults, Simulator};
use serde_json::Value;

use crate::fleet::named;
use crate::helpers::{TestApp, spawn_app_with};

const Q: &str =
    "/v1/metricdata?metric=connections&did=7&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";

/// The helpers' gateway (its simulator is `default`), plus `emea` and `amer` behind two more
/// simulators with tokens of their own; every appliance ready (its catalog in), so no answer
/// cached here is dropped under the test when a catalog arrives.
async fn three() -> (TestApp, Simulator, Simulator) {
    let emea = Simulator::spawn("127.0.0.1:0", "emea-public", "emea-private").unwrap();
    let amer = Simulator::spawn("127.0.0.1:0", "amer-public", "amer-private").unwrap();
    let mut emea_settings = named("emea", &emea, "emea-public", "emea-private");
    let mut amer_settings = named("amer", &amer, "amer-public", "amer-private");
    // A failing appliance is asked exactly once per question and never shut off by its
    // breaker within a test: the tests count what reaches it.
    for s in [&mut emea_settings, &mut amer_settings] {
        s.upstream.retries = 0;
        s.upstream.breaker_failures = NonZero::new(1_000).unwrap();
    }
    let app = spawn_app_with(move |s| {
        s.appliances.push(emea_settings);
        s.appliances.push(amer_settings);
    })
    .await;
    emea.set_clock(app.clock.clone());
    amer.set_clock(app.clock.clone());
    all_ready(&app).await;
    (app, emea, amer)
}

/// Waits (real time, bounded) until every appliance's readiness has no reasons.
async fn all_ready(app: &TestApp) {
    for _ in 0..500 {
        let r = app.admin_get("/internal/readiness").await;
        let appliances = r.body["appliances"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let ready = appliances.len() == 3
            && appliances
                .values()
                .all(|a| a["appliance_reasons"].as_array().is_some_and(Vec::is_empty));
        if ready {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the appliances never all became ready");
}

/// `/metricdata` requests each simulator served: `default`'s, `emea`'s, `amer`'s.
fn asked(app: &TestApp, emea: &Simulator, amer: &Simulator) -> (u64, u64, u64) {
    (
        app.upstream_metricdata(),
        emea.stats.snapshot().metricdata,
        amer.stats.snapshot().metricdata,
    )
}

/// The series of a fan-out answer that came from `appliance`, without their label.
fn series_of(body: &Value, appliance: &str) -> Vec<Value> {
    body["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["appliance"] == appliance)
        .map(|s| {
            let mut s = s.clone();
            s.as_object_mut().unwrap().remove("appliance");
            s
        })
        .collect()
}

fn labels(body: &Value) -> Vec<String> {
    body["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["appliance"].as_str().unwrap_or("(none)").to_owned())
        .collect()
}

#[tokio::test]
async fn each_series_says_its_appliance_and_holds_what_that_appliance_answers_alone() {
    let (app, emea, amer) = three().await;
    let fanned = app.get(&format!("{Q}&appliances=emea,default,amer")).await;
    assert_eq!(fanned.status, 200, "{}", fanned.body);
    assert_eq!(
        labels(&fanned.body),
        ["emea", "default", "amer"],
        "in the order asked"
    );
    assert_eq!(asked(&app, &emea, &amer), (1, 1, 1), "each asked once");
    assert!(fanned.header("warning").is_empty());
    assert!(
        fanned
            .header("cache-status")
            .starts_with("metricgate; fwd=miss; ttl=")
    );
    assert!(fanned.header("cache-control").starts_with("max-age="));
    assert!(fanned.body.get("warnings").is_none());

    // Each appliance alone: the same values, and from the cache the fan-out filled (each
    // appliance's own), so nothing more reaches any simulator.
    for name in ["default", "emea", "amer"] {
        let alone = app.get(&format!("{Q}&appliance={name}")).await;
        assert_eq!(alone.status, 200, "{}", alone.body);
        let text = alone.body.to_string();
        assert!(
            !text.contains("\"appliance\""),
            "one appliance's answer is unchanged: {text}"
        );
        assert_eq!(
            series_of(&fanned.body, name),
            alone.body["series"].as_array().unwrap().clone()
        );
        assert!(!series_of(&fanned.body, name).is_empty());
        assert_eq!(fanned.body["query"], alone.body["query"]);
        assert_eq!(fanned.body["timerange"], alone.body["timerange"]);
        assert_eq!(
            fanned.body["interval_seconds"],
            alone.body["interval_seconds"]
        );
    }
    assert_eq!(asked(&app, &emea, &amer), (1, 1, 1));

    // Asked again (a name twice, the parameter repeated): the same answer, a hit everywhere.
    let again = app
        .get(&format!("{Q}&appliances=emea,default&appliances=amer,emea"))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        labels(&again.body),
        ["emea", "default", "amer"],
        "a name twice counts once"
    );
    assert_eq!(again.body, fanned.body);
    assert_eq!(again.header("etag"), fanned.header("etag"));
    assert!(
        again
            .header("cache-status")
            .starts_with("metricgate; hit; ttl="),
        "{}",
        again.header("cache-status")
    );
    assert_eq!(asked(&app, &emea, &amer), (1, 1, 1));
    let etag = fanned.header("etag").to_owned();
    let unchanged = app
        .get_with(
            &format!("{Q}&appliances=emea,default,amer"),
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(unchanged.status, 304);
}

#[tokio::test]
async fn csv_gets_an_appliance_column_only_for_several_appliances() {
    let (app, _emea, _amer) = three().await;
    let csv = app
        .get_text(&format!("{Q}&appliances=emea,amer&format=csv"))
        .await;
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("timestamp_iso,timestamp_ms,appliance,metric,did,value,in,out")
    );
    let rows: Vec<&str> = lines.collect();
    assert!(
        rows.iter().any(|r| r.split(',').nth(2) == Some("emea")),
        "{csv}"
    );
    assert!(
        rows.iter().any(|r| r.split(',').nth(2) == Some("amer")),
        "{csv}"
    );
    let alone = app
        .get_text(&format!("{Q}&appliance=emea&format=csv"))
        .await;
    assert!(alone.starts_with("timestamp_iso,timestamp_ms,metric,did,value,in,out\n"));
    // emea's rows, less their appliance cell, are exactly emea's own CSV rows.
    let emea_rows: Vec<String> = rows
        .iter()
        .filter(|r| r.split(',').nth(2) == Some("emea"))
        .map(|r| r.replacen(",emea,", ",", 1))
        .collect();
    assert_eq!(emea_rows, alone.lines().skip(1).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_failing_appliance_leaves_the_others_with_a_warning_and_is_asked_again() {
    let (app, emea, amer) = three().await;
    amer.set_faults(Faults {
        error_rate: 1.0,
        error_status: Some(503),
        ..Faults::default()
    });
    let partial = app.get(&format!("{Q}&appliances=default,emea,amer")).await;
    assert_eq!(partial.status, 200, "{}", partial.body);
    assert_eq!(labels(&partial.body), ["default", "emea"]);
    let warning = partial.header("warning");
    assert!(
        warning.starts_with("199 metricgate \"appliance amer: "),
        "{warning}"
    );
    assert_eq!(partial.header("cache-control"), "no-store");
    assert!(partial.header("cache-status").contains("detail=partial"));
    let warnings = partial.body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("appliance amer: ")
    );
    assert_eq!(asked(&app, &emea, &amer), (1, 1, 1));

    // Not kept as a whole answer anywhere: asked again, amer is asked again (the others'
    // parts, whole, come from their caches).
    let again = app.get(&format!("{Q}&appliances=default,emea,amer")).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.header("warning").contains("appliance amer: "));
    assert_eq!(again.header("cache-control"), "no-store");
    assert_eq!(asked(&app, &emea, &amer), (1, 1, 2));

    // Every appliance failing: the first failure, as if it had been asked alone (another
    // device, so that no part is in a cache).
    emea.set_faults(Faults {
        error_rate: 1.0,
        error_status: Some(503),
        ..Faults::default()
    });
    let other = Q.replace("did=7", "did=8");
    let alone = app.get(&format!("{other}&appliance=amer")).await;
    assert!(alone.status >= 500, "{}", alone.body);
    let failed = app.get(&format!("{other}&appliances=amer,emea")).await;
    assert_eq!(failed.status, alone.status, "{}", failed.body);
    assert_eq!(failed.body["type"], alone.body["type"]);
    assert_eq!(failed.body["detail"], alone.body["detail"]);
    assert_eq!(failed.header("cache-control"), "no-store");
}

#[tokio::test]
async fn bad_combinations_are_400s_naming_the_parameters_and_reach_no_appliance() {
    let (app, emea, amer) = three().await;
    let both = app
        .get(&format!("{Q}&appliance=emea&appliances=amer"))
        .await;
    assert_eq!(both.status, 400);
    assert_eq!(both.bad_parameters(), ["appliance", "appliances"]);

    let unknown = app.get(&format!("{Q}&appliances=emea,apac")).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.bad_parameters(), ["appliances"]);
    let message = unknown.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("apac") && message.contains("amer, default, emea"),
        "{message}"
    );

    let bad_question = app
        .get("/v1/metricdata?metric=connections&interval=90&appliances=emea,amer")
        .await;
    assert_eq!(bad_question.status, 400);
    assert_eq!(bad_question.bad_parameters(), ["interval"]);

    let sdk = app
        .get("/darktrace/metricdata?metric=connections&did=7&appliances=emea,amer")
        .await;
    assert_eq!(sdk.status, 400);
    assert_eq!(sdk.bad_parameters(), ["appliances"]);
    let path_and_list = app
        .get("/darktrace/emea/metricdata?metric=connections&did=7&appliances=amer")
        .await;
    assert_eq!(path_and_list.status, 400);
    assert_eq!(path_and_list.bad_parameters(), ["appliance", "appliances"]);

    assert_eq!(asked(&app, &emea, &amer), (0, 0, 0));
}
