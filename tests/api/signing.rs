use metricgate::upstream::sign;
use secrecy::SecretString;

use crate::helpers::{PRIVATE, PUBLIC, spawn_app, spawn_app_with};

async fn sim_get(
    app: &crate::helpers::TestApp,
    path: &str,
    token: &str,
    private: &str,
    date: &str,
) -> (u16, String) {
    let sig = sign::signature(&SecretString::from(private.to_owned()), token, path, date);
    let resp = app
        .http
        .get(format!("{}{}", app.sim.url(), path))
        .header("DTAPI-Token", token)
        .header("DTAPI-Date", date)
        .header("DTAPI-Signature", sig)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn now_date() -> String {
    chrono::Utc::now().format(sign::DATE_FORMAT).to_string()
}

#[tokio::test]
async fn the_simulator_checks_token_date_and_signature() {
    let app = spawn_app().await;
    let path = "/metricdata?metric=connections&interval=60";
    assert_eq!(
        sim_get(&app, path, PUBLIC, PRIVATE, &now_date()).await.0,
        200
    );

    let (status, body) = sim_get(&app, path, PUBLIC, "wrong", &now_date()).await;
    assert_eq!(status, 400);
    assert_eq!(body, "{\n  \"metricdata\": \"API SIGNATURE ERROR\"\n}");

    let stale = (chrono::Utc::now() - chrono::Duration::minutes(45))
        .format(sign::DATE_FORMAT)
        .to_string();
    let (status, body) = sim_get(&app, path, PUBLIC, PRIVATE, &stale).await;
    assert_eq!(status, 400);
    assert!(body.contains("API DATE ERROR"), "{body}");

    let compact = chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string();
    assert!(
        sim_get(&app, path, PUBLIC, PRIVATE, &compact)
            .await
            .1
            .contains("API DATE ERROR")
    );

    let (status, body) = sim_get(&app, path, "unknown-token", PRIVATE, &now_date()).await;
    assert_eq!(status, 302);
    assert_eq!(body, "Found. Redirecting to /login");

    // Signed one way, sent another: refused.
    let sig = sign::signature(&SecretString::from(PRIVATE), PUBLIC, path, &now_date());
    let resp = app
        .http
        .get(format!(
            "{}/metricdata?interval=60&metric=connections",
            app.sim.url()
        ))
        .header("DTAPI-Token", PUBLIC)
        .header("DTAPI-Date", now_date())
        .header("DTAPI-Signature", sig)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

#[tokio::test]
async fn a_signed_gateway_request_is_accepted() {
    let app = spawn_app().await;
    let a = app
        .get("/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z")
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(app.upstream_metricdata(), 1);
    assert_eq!(a.body["series"][0]["points"].as_array().unwrap().len(), 60);
}

#[tokio::test]
async fn wrong_credentials_become_a_502_that_points_at_the_tokens() {
    let app =
        spawn_app_with(|s| s.upstream.private_token = SecretString::from("not-the-key")).await;
    let a = app.get("/v1/metricdata?metric=connections").await;
    assert_eq!(a.status, 502);
    assert_eq!(a.header("content-type"), "application/problem+json");
    assert_eq!(
        a.body["type"],
        "urn:metricgate:problem:appliance-credentials"
    );
    assert!(!a.body.to_string().contains("not-the-key"));
    assert_eq!(app.upstream_metricdata(), 0);

    let app = spawn_app_with(|s| s.upstream.public_token = "someone-else".into()).await;
    let a = app.get("/v1/metricdata?metric=connections").await;
    assert_eq!(a.status, 502);
    assert_eq!(a.body["type"], "urn:metricgate:problem:appliance-refused");
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("credentials or permissions")
    );
}
