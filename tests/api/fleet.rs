//! Several appliances behind one gateway (#30): each question reaches the appliance it names
//! (signed with that appliance's tokens), the default answers questions that name none, and
//! one appliance's faults stay its own.

use metricgate::settings::{ApplianceName, ApplianceSettings, Settings};
use metricgate::sim::{Faults, Simulator};

use crate::helpers::{TestApp, spawn_app_with};

const Q: &str =
    "/v1/metricdata?metric=connections&did=7&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";

/// An appliance named `name` in front of `sim`, with its own tokens.
pub fn named(name: &str, sim: &Simulator, public: &str, private: &str) -> ApplianceSettings {
    ApplianceSettings {
        name: ApplianceName::parse(name).unwrap(),
        label: Some(format!("{name} master")),
        upstream: Settings::for_upstream(&sim.url(), public, private)
            .unwrap()
            .upstream,
    }
}

/// The helpers' gateway (its simulator is `default`), plus `emea` behind a second simulator
/// with other tokens.
async fn two() -> (TestApp, Simulator) {
    let emea = Simulator::spawn("127.0.0.1:0", "emea-public", "emea-private").unwrap();
    let settings = named("emea", &emea, "emea-public", "emea-private");
    let app = spawn_app_with(move |s| s.appliances.push(settings)).await;
    emea.set_clock(app.clock.clone());
    (app, emea)
}

#[tokio::test]
async fn each_question_reaches_the_appliance_it_names() {
    let (app, emea) = two().await;
    let plain = app.get(Q).await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert_eq!(
        (app.upstream_metricdata(), emea.stats.snapshot().metricdata),
        (1, 0)
    );
    let named = app.get(&format!("{Q}&appliance=emea")).await;
    assert_eq!(named.status, 200, "{}", named.body);
    assert_eq!(
        emea.stats.snapshot().metricdata,
        1,
        "signed with emea's tokens"
    );
    assert_eq!(app.upstream_metricdata(), 1);
    // Each appliance's cache is its own: the same question to `default` is a hit there.
    let again = app.get(&format!("{Q}&appliance=default")).await;
    assert_eq!(again.status, 200);
    assert_eq!(app.upstream_metricdata(), 1);
    // The drop-in paths name it too.
    let sdk = app
        .get("/darktrace/emea/metricdata?metric=connections&did=8&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z")
        .await;
    assert_eq!(sdk.status, 200, "{}", sdk.body);
    assert_eq!(emea.stats.snapshot().metricdata, 2);
    let catalog = app.get("/appliance/emea/metrics").await;
    assert_eq!(catalog.status, 200, "{}", catalog.body);
}

#[tokio::test]
async fn an_unknown_appliance_is_a_400_naming_the_choices_and_nothing_is_asked() {
    let (app, emea) = two().await;
    let a = app.get(&format!("{Q}&appliance=apac")).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.bad_parameters(), ["appliance"]);
    let message = a.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("default, emea"), "{message}");
    let a = app.get("/darktrace/apac/metrics").await;
    assert_eq!(a.status, 400);
    assert_eq!(
        (app.upstream_metricdata(), emea.stats.snapshot().metricdata),
        (0, 0)
    );
}

#[tokio::test]
async fn the_listing_names_each_appliance_and_never_its_address_or_tokens() {
    let (app, emea) = two().await;
    let list = app.get("/v1/appliances").await;
    assert_eq!(list.status, 200);
    let text = list.body.to_string();
    assert!(
        !text.contains(&emea.url()) && !text.contains("emea-private"),
        "{text}"
    );
    assert!(!text.contains("emea-public"), "{text}");
    let names: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "emea"]);
    assert_eq!(list.body[0]["default"], true);
    assert_eq!(list.body[1]["label"], "emea master");
    // Each appliance's version, from its own `/status`, read once the listing wanted it.
    let mut versions = serde_json::Value::Null;
    for _ in 0..500 {
        let list = app.get("/v1/appliances").await;
        versions = serde_json::json!([list.body[0]["version"], list.body[1]["version"]]);
        if versions[0].is_string() && versions[1].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let v = metricgate::sim::SIMULATED_VERSION;
    assert_eq!(versions, serde_json::json!([v, v]));
    let asked = |sim: &Simulator| {
        sim.stats
            .snapshot()
            .recent
            .iter()
            .filter(|q| q.starts_with("/status"))
            .count()
    };
    assert_eq!(
        (asked(&app.sim), asked(&emea)),
        (1, 1),
        "once each, not per listing"
    );
}

#[tokio::test]
async fn one_appliance_down_leaves_the_others_answers_and_readiness_alone() {
    let (app, emea) = two().await;
    emea.set_faults(Faults {
        error_rate: 1.0,
        error_status: Some(503),
        ..Faults::default()
    });
    let failing = app.get(&format!("{Q}&appliance=emea")).await;
    assert!(failing.status >= 500, "{}", failing.body);
    let fine = app.get(Q).await;
    assert_eq!(fine.status, 200, "{}", fine.body);
    assert_eq!(app.get("/readyz").await.status, 200);
    // Each appliance's own series on /metrics.
    let text = app.get_text("/metrics").await;
    for line in [
        r#"metricgate_appliance_ready{appliance="default"} 1"#,
        r#"metricgate_appliance_breaker_state{appliance="default"} 0"#,
        r#"metricgate_appliance_in_flight{appliance="default"} 0"#,
        r#"metricgate_appliance_in_flight{appliance="emea"} 0"#,
        r#"metricgate_appliance_queue_waiting{appliance="emea"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }
}

#[tokio::test]
async fn without_a_default_a_question_must_name_its_appliance() {
    let emea = Simulator::spawn("127.0.0.1:0", "emea-public", "emea-private").unwrap();
    let amer = Simulator::spawn("127.0.0.1:0", "amer-public", "amer-private").unwrap();
    let fleet = [
        named("emea", &emea, "emea-public", "emea-private"),
        named("amer", &amer, "amer-public", "amer-private"),
    ];
    let app = crate::helpers::spawn_app_with(move |s| {
        // No short form: only the two tables, neither marked the default.
        s.upstream_is_appliance = false;
        s.appliances.extend(fleet);
    })
    .await;
    emea.set_clock(app.clock.clone());
    amer.set_clock(app.clock.clone());
    let a = app.get(Q).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.bad_parameters(), ["appliance"]);
    let message = a.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("amer, emea"), "{message}");
    assert_eq!(
        (
            emea.stats.snapshot().metricdata,
            amer.stats.snapshot().metricdata
        ),
        (0, 0)
    );
    let named_one = app.get(&format!("{Q}&appliance=amer")).await;
    assert_eq!(named_one.status, 200, "{}", named_one.body);
    assert_eq!(amer.stats.snapshot().metricdata, 1);
    let listed = app.get("/v1/appliances").await;
    assert!(
        listed
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["default"] == false),
        "{}",
        listed.body
    );
}
