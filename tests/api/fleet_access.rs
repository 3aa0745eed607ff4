//! Access per caller (#30): a client proven by its key may be limited to some appliances
//! (`[rate_limit.clients.<id>] appliances`). Outside them every route answers 403 and asks
//! nothing upstream, listings never name the others, and callers without a key keep open
//! access unless `rate_limit.anonymous_appliances` narrows it.

use metricgate::limits::sha256;
use metricgate::settings::{ApplianceName, ClientKey, Settings};
use metricgate::sim::Simulator;

use crate::fleet::named;
use crate::helpers::{PRIVATE, PUBLIC, TestApp, spawn_app_from, spawn_app_with};

const Q: &str =
    "/v1/metricdata?metric=connections&did=7&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";
const CUSTOMER: [(&str, &str); 2] = [
    ("X-Client-Id", "customer-a"),
    ("Authorization", "Bearer customer-a-key"),
];

fn name(n: &str) -> ApplianceName {
    ApplianceName::parse(n).unwrap()
}

/// `default` (the helpers' simulator) and `emea`; `customer-a` may ask `emea` only.
async fn fleet_with_a_customer(adjust: impl FnOnce(&mut Settings)) -> (TestApp, Simulator) {
    let emea = Simulator::spawn("127.0.0.1:0", "emea-public", "emea-private").unwrap();
    let settings = named("emea", &emea, "emea-public", "emea-private");
    let app = spawn_app_with(move |s| {
        s.appliances.push(settings);
        s.rate_limit.clients.insert(
            "customer-a".into(),
            ClientKey {
                key_sha256: hex::encode(sha256(b"customer-a-key")).parse().unwrap(),
                appliances: Some(vec![name("emea")]),
            },
        );
        adjust(s);
    })
    .await;
    emea.set_clock(app.clock.clone());
    (app, emea)
}

fn assert_forbidden(a: &crate::helpers::Answer, route: &str) {
    assert_eq!(a.status, 403, "{route}: {}", a.body);
    assert_eq!(
        a.header("content-type"),
        "application/problem+json",
        "{route}"
    );
    assert_eq!(
        a.body["type"], "urn:metricgate:problem:forbidden-appliance",
        "{route}"
    );
    let detail = a.body["detail"].as_str().unwrap();
    assert_eq!(detail, "this caller may ask only: emea", "{route}");
}

#[tokio::test]
async fn a_limited_client_is_refused_every_other_appliance_on_every_route() {
    let (app, emea) = fleet_with_a_customer(|_| {}).await;
    let routes = [
        format!("{Q}&appliance=default"),
        "/v1/metrics?appliance=default".to_owned(),
        "/darktrace/default/metrics".to_owned(),
        "/darktrace/default/metricdata?metric=connections&did=7&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z".to_owned(),
        "/appliance/default/metrics".to_owned(),
        "/appliance/default/metricdata?metric=connections&did=7&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z".to_owned(),
        // A name that does not exist is refused alike: the answer reveals nothing.
        format!("{Q}&appliance=apac"),
        "/darktrace/apac/metrics".to_owned(),
    ];
    for route in &routes {
        assert_forbidden(&app.get_with(route, &CUSTOMER).await, route);
    }
    assert_eq!(
        (app.upstream_metricdata(), emea.stats.snapshot().metricdata),
        (0, 0),
        "nothing was asked of any appliance"
    );
    // Its own appliance, by name and without one (its only appliance is its default).
    for route in [
        format!("{Q}&appliance=emea"),
        Q.to_owned(),
        "/v1/metrics".to_owned(),
        "/darktrace/emea/metrics".to_owned(),
        "/appliance/emea/metrics".to_owned(),
        "/darktrace/metrics".to_owned(),
    ] {
        let a = app.get_with(&route, &CUSTOMER).await;
        assert_eq!(a.status, 200, "{route}: {}", a.body);
    }
    assert_eq!(emea.stats.snapshot().metricdata, 1, "one fetch, then a hit");
    assert_eq!(app.upstream_metricdata(), 0);
}

#[tokio::test]
async fn the_listing_shows_a_limited_client_only_its_appliances() {
    let (app, _emea) = fleet_with_a_customer(|_| {}).await;
    let mine = app.get_with("/v1/appliances", &CUSTOMER).await;
    assert_eq!(mine.status, 200);
    assert_eq!(mine.body.as_array().unwrap().len(), 1, "{}", mine.body);
    assert_eq!(mine.body[0]["name"], "emea");
    assert_eq!(mine.body[0]["default"], true, "its questions go there");
    // Every other caller sees both.
    let all = app.get("/v1/appliances").await;
    assert_eq!(all.body.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn callers_without_the_key_keep_open_access_unless_the_operator_narrows_it() {
    let (app, _emea) = fleet_with_a_customer(|_| {}).await;
    // Anonymous, a claimed id, and the keyed id without its key: every appliance.
    for headers in [
        &[][..],
        &[("X-Client-Id", "someone")][..],
        &[("X-Client-Id", "customer-a")][..],
    ] {
        let a = app
            .get_with(&format!("{Q}&appliance=default"), headers)
            .await;
        assert_eq!(a.status, 200, "{headers:?}: {}", a.body);
    }

    let (app, _emea) = fleet_with_a_customer(|s| {
        s.rate_limit.anonymous_appliances = Some(vec![name("default")]);
    })
    .await;
    let a = app.get(&format!("{Q}&appliance=emea")).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.body["detail"], "this caller may ask only: default");
    let listed = app.get("/v1/appliances").await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    // The keyed client's own access is its list, not the anonymous one.
    let a = app.get_with(Q, &CUSTOMER).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn the_prometheus_api_refuses_in_its_own_envelope() {
    let (app, _emea) = fleet_with_a_customer(|s| {
        s.rate_limit.clients.insert(
            "nobody".into(),
            ClientKey {
                key_sha256: hex::encode(sha256(b"nobody-key")).parse().unwrap(),
                appliances: Some(Vec::new()),
            },
        );
    })
    .await;
    let own = app
        .get_with("/prometheus/api/v1/label/__name__/values", &CUSTOMER)
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    let none = app
        .get_with(
            "/prometheus/api/v1/query?query=up",
            &[
                ("X-Client-Id", "nobody"),
                ("Authorization", "Bearer nobody-key"),
            ],
        )
        .await;
    assert_eq!(none.status, 403, "{}", none.body);
    assert_eq!(none.body["status"], "error");
    assert_eq!(none.body["errorType"], "forbidden");
    // The problem route refuses the same client in its own form.
    let problem = app
        .get_with(
            Q,
            &[
                ("X-Client-Id", "nobody"),
                ("Authorization", "Bearer nobody-key"),
            ],
        )
        .await;
    assert_eq!(problem.status, 403);
    assert_eq!(problem.body["detail"], "this caller may ask no appliance");
}

#[test]
fn access_names_only_appliances_the_gateway_fronts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metricgate.toml");
    std::fs::write(
        &path,
        format!(
            r#"[upstream]
url = "http://127.0.0.1:1"
public_token = "{PUBLIC}"
private_token = "{PRIVATE}"

[appliances.emea]
url = "http://127.0.0.1:2"

[rate_limit]
anonymous_appliances = ["default", "amer"]

[rate_limit.clients]
customer-a = {{ key_sha256 = "{}", appliances = ["emea", "apac"] }}
"#,
            hex::encode(sha256(b"k"))
        ),
    )
    .unwrap();
    let e = Settings::load(Some(&path)).unwrap_err().to_string();
    assert!(
        e.contains(
            r#"rate_limit.clients.customer-a.appliances: no appliance is named "apac"; the choices: default, emea"#
        ),
        "{e}"
    );
    assert!(
        e.contains(r#"rate_limit.anonymous_appliances: no appliance is named "amer""#),
        "{e}"
    );
}

/// A configuration with `default` and `emea`, and `customer-a` limited to `access`.
fn write_config(path: &std::path::Path, sim: &str, emea: &str, access: &str) {
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
workers = 2

[upstream]
url = "{sim}"
public_token = "{PUBLIC}"
private_token = "{PRIVATE}"
per_minute = 100000
max_in_flight = 64

[appliances.emea]
url = "{emea}"
public_token = "emea-public"
private_token = "emea-private"

[rate_limit]
per_client_per_minute = 1000000
burst = 100000
per_ip_per_minute = 100000000
per_ip_burst = 10000000

[rate_limit.clients]
customer-a = {{ key_sha256 = "{key}", appliances = [{access}] }}

[admin]
listen = "127.0.0.1:0"
"#,
        key = hex::encode(sha256(b"customer-a-key")),
    );
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn access_reloads_with_the_rest_of_the_rate_limits() {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let emea = Simulator::spawn("127.0.0.1:0", "emea-public", "emea-private").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metricgate.toml");
    write_config(&path, &sim.url(), &emea.url(), r#""emea""#);
    let app = spawn_app_from(sim, Settings::load(Some(&path)).unwrap()).await;
    emea.set_clock(app.clock.clone());
    app.ready().await;
    let before = app
        .get_with("/v1/metrics?appliance=default", &CUSTOMER)
        .await;
    assert_eq!(before.status, 403, "{}", before.body);

    write_config(&path, &app.sim.url(), &emea.url(), r#""default""#);
    let reloaded = app.admin_post("/internal/reload").await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    assert_eq!(reloaded.body["restart_needed"], serde_json::json!([]));
    let after = app
        .get_with("/v1/metrics?appliance=default", &CUSTOMER)
        .await;
    assert_eq!(after.status, 200, "{}", after.body);
    let emea_now = app.get_with("/v1/metrics?appliance=emea", &CUSTOMER).await;
    assert_eq!(emea_now.status, 403);
}

#[tokio::test]
async fn a_limited_client_neither_fans_out_to_nor_reads_through_promql_the_others() {
    let (app, emea) = fleet_with_a_customer(|_| {}).await;
    let fanout = app
        .get_with(&format!("{Q}&appliances=emea,default"), &CUSTOMER)
        .await;
    assert_forbidden(&fanout, "appliances=");
    assert_eq!(
        (app.upstream_metricdata(), emea.stats.snapshot().metricdata),
        (0, 0),
        "nothing asked"
    );
    let own = app
        .get_with(&format!("{Q}&appliances=emea"), &CUSTOMER)
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    // PromQL: the other appliance is invisible, its simulator never asked.
    let query = "/prometheus/api/v1/query?query=connections%7Bdid%3D%227%22%7D&time=1705320000";
    let read = app.get_with(query, &CUSTOMER).await;
    assert_eq!(read.status, 200, "{}", read.body);
    let appliances: Vec<&str> = read.body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"]["appliance"].as_str().unwrap())
        .collect();
    assert!(
        !appliances.is_empty() && appliances.iter().all(|a| *a == "emea"),
        "{appliances:?}"
    );
    assert_eq!(app.upstream_metricdata(), 0, "default never asked");
    let values = app
        .get_with("/prometheus/api/v1/label/appliance/values", &CUSTOMER)
        .await;
    assert_eq!(values.body["data"], serde_json::json!(["emea"]));
    // An open caller sees both.
    let values = app.get("/prometheus/api/v1/label/appliance/values").await;
    assert_eq!(values.body["data"], serde_json::json!(["default", "emea"]));
}
