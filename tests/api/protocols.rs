//! `applicationprotocol` is a code from the appliance's `/enums`: names are translated, codes
//! accepted, unknown names refused with suggestions, and only codes reach the appliance, which
//! (like the simulator) refuses anything else.

use std::num::NonZero;
use std::time::Duration;

use metricgate::sim::{Faults, Simulator};

use crate::helpers::{PRIVATE, PUBLIC, spawn_app, spawn_app_against};

const Q: &str =
    "/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";

#[tokio::test]
async fn names_become_the_appliances_codes_and_share_one_answer() {
    let app = spawn_app().await;
    assert!(app.sim.stats.snapshot().enums >= 1, "/enums was read");
    let ready = app.admin_get("/internal/readiness").await;
    assert_eq!(
        ready.body["application_protocols"],
        metricgate::sim::APPLICATION_PROTOCOLS.len()
    );
    let by_name = app.get(&format!("{Q}&applicationprotocol=http")).await;
    assert_eq!(by_name.status, 200, "{}", by_name.body);
    assert_eq!(by_name.body["query"]["applicationprotocol"], 1001);
    for spelling in ["HTTP", "Http", "1001"] {
        let a = app
            .get(&format!("{Q}&applicationprotocol={spelling}"))
            .await;
        assert_eq!(a.status, 200, "{spelling}: {}", a.body);
        assert_eq!(a.body, by_name.body, "{spelling}");
        assert!(
            a.header("cache-status").starts_with("metricgate; hit"),
            "{spelling}: one question, however spelled"
        );
    }
    // A name with other separators than the appliance's.
    let a = app.get(&format!("{Q}&applicationprotocol=ssl-tls")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let sent = app.upstream_queries();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[0].contains("&applicationprotocol=1001&"), "{sent:?}");
    assert!(sent[1].contains("&applicationprotocol=1009&"), "{sent:?}");
}

#[tokio::test]
async fn unknown_names_and_codes_are_refused_with_suggestions() {
    let app = spawn_app().await;
    let a = app.get(&format!("{Q}&applicationprotocol=htps")).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.bad_parameters(), ["applicationprotocol"]);
    let message = a.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("`HTTPS`"), "{message}");
    let a = app.get(&format!("{Q}&applicationprotocol=gopher")).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.bad_parameters(), ["applicationprotocol"]);
    let a = app.get(&format!("{Q}&applicationprotocol=4242")).await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("/enums"),
        "{}",
        a.body
    );
    assert_eq!(
        app.upstream_metricdata(),
        0,
        "nothing invalid reaches the appliance"
    );
}

#[tokio::test]
async fn before_enums_are_known_codes_work_and_names_are_refused_clearly() {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).expect("simulator binds");
    sim.set_faults(Faults {
        enums_status: Some(503),
        ..Faults::default()
    });
    let app = spawn_app_against(sim, |s| {
        s.upstream.catalog_refresh_secs = NonZero::new(60).unwrap()
    })
    .await;
    app.ready().await;
    let ready = app.admin_get("/internal/readiness").await;
    assert_eq!(ready.status, 200, "/enums is not a readiness condition");
    assert_eq!(ready.body["application_protocols"], 0);
    let a = app.get(&format!("{Q}&applicationprotocol=http")).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.bad_parameters(), ["applicationprotocol"]);
    let message = a.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("/enums"), "{message}");
    assert!(message.contains("numeric code"), "{message}");
    let a = app.get(&format!("{Q}&applicationprotocol=1053")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(app.upstream_queries()[0].contains("&applicationprotocol=1053&"));

    // The appliance's /enums comes back: the next catalog refresh reads it, and names work.
    app.sim.set_faults(Faults::default());
    let named = format!("{Q}&applicationprotocol=bittorrent");
    assert!(
        app.advance_until(&named, Duration::from_secs(20), 10, |a| a.status == 200)
            .await,
        "names never became usable"
    );
    let a = app.get(&named).await;
    assert_eq!(a.body["query"]["applicationprotocol"], 1053);
}

#[tokio::test]
async fn the_simulated_appliance_refuses_protocol_names() {
    // What a real appliance does with a name: a refusal, which the gateway never provokes.
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    let path = "/metricdata?metric=connections&applicationprotocol=http";
    let private = secrecy::SecretString::from(PRIVATE.to_owned());
    let signed = metricgate::upstream::sign::sign_at(&private, PUBLIC, path, app.clock.now_ms());
    let r = http
        .get(format!("{}{path}", app.sim.url()))
        .header("DTAPI-Token", signed.token)
        .header("DTAPI-Date", signed.date)
        .header("DTAPI-Signature", signed.signature)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("applicationprotocol"));
}
