//! The admin endpoints are off the public surface: on their own listener, or on the main port
//! behind a bearer token. Public readiness says ready or not, and nothing else.

use std::num::NonZero;

use crate::helpers::{ADMIN_TOKEN, spawn_app_with};

const Q: &str =
    "/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";

#[tokio::test]
async fn the_admin_endpoints_are_only_on_the_admin_listener() {
    let app = spawn_app_with(|_| {}).await;
    app.ready().await;
    assert_ne!(app.admin_url, app.url);
    assert_eq!(app.get(Q).await.status, 200);
    for path in ["/internal/cache", "/internal/limits", "/internal/readiness"] {
        let public = app.get(path).await;
        assert_eq!(public.status, 404, "{path}");
        assert_eq!(public.body["type"], "urn:metricgate:problem:not-found");
        assert_eq!(app.admin_get(path).await.status, 200, "{path}");
    }
    let purge = app
        .send_with(app.http.delete(format!("{}/internal/cache", app.url)), &[])
        .await;
    assert_eq!(purge.status, 404, "nobody purges through the public port");
    assert!(
        app.get(Q).await.header("cache-status").contains("hit"),
        "the cache is intact"
    );
    // The admin listener has readiness with its reasons, liveness, the series and its own
    // OpenAPI document; nothing of the public API.
    let detail = app.admin_get("/readyz").await;
    assert_eq!(detail.body["ready"], true);
    assert!(detail.body["reasons"].is_array() && detail.body["appliance"].is_object());
    assert_eq!(app.admin_get("/healthz").await.status, 200);
    let doc = app.admin_get("/openapi.json").await;
    assert!(doc.body["paths"]["/internal/cache"]["delete"].is_object());
    assert!(doc.body["paths"]["/v1/metricdata"].is_null());
    assert_eq!(app.admin_get(Q).await.status, 404);
    let public_doc = app.get("/openapi.json").await;
    assert!(public_doc.body["paths"]["/internal/cache"].is_null());
}

#[tokio::test]
async fn public_readiness_says_ready_or_not_and_nothing_else() {
    let app = spawn_app_with(|s| {
        s.upstream.url = "http://127.0.0.1:9".parse().unwrap();
        s.upstream.connect_timeout_ms = NonZero::new(300).unwrap();
    })
    .await;
    let public = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status().as_u16(), 503);
    assert_eq!(public.text().await.unwrap(), r#"{"ready":false}"#);
    let ready = app.admin_get("/readyz").await;
    assert_eq!(ready.status, 503);
    let reasons = ready.body["reasons"].to_string();
    assert!(reasons.contains("appliance"), "{reasons}");
    assert!(
        !reasons.contains("127.0.0.1:9"),
        "the appliance's address is in the settings, not the reasons: {reasons}"
    );
    let spawned = spawn_app_with(|_| {}).await;
    spawned.ready().await;
    let public = spawned.get("/readyz").await;
    assert_eq!(public.body, serde_json::json!({"ready": true}));
}

#[tokio::test]
async fn on_the_main_port_the_admin_endpoints_need_the_token() {
    let app = spawn_app_with(|s| {
        s.admin.listen = None;
        s.admin.token = ADMIN_TOKEN.to_owned().into();
    })
    .await;
    app.ready().await;
    assert_eq!(app.admin_url, app.url);
    assert_eq!(app.get(Q).await.status, 200);
    let cache = format!("{}/internal/cache", app.url);
    for auth in [None, Some("Bearer wrong-token"), Some(ADMIN_TOKEN)] {
        let mut req = app.http.get(&cache);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let a = app.send_with(req, &[]).await;
        assert_eq!(a.status, 401, "{auth:?}");
        assert_eq!(a.body["type"], "urn:metricgate:problem:unauthorized");
        assert_eq!(a.header("www-authenticate"), "Bearer");
    }
    let ok = app
        .send_with(app.http.get(&cache).bearer_auth(ADMIN_TOKEN), &[])
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["entries"], 1);
    let refused = app.send_with(app.http.delete(&cache), &[]).await;
    assert_eq!(refused.status, 401);
    let purged = app
        .send_with(
            app.http.delete(&cache).bearer_auth(ADMIN_TOKEN),
            &[("x-client-id", "ops")],
        )
        .await;
    assert_eq!(purged.status, 200);
    assert_eq!(purged.body["purged"], 1);
    let detail = app
        .send_with(
            app.http
                .get(format!("{}/internal/readiness", app.url))
                .bearer_auth(ADMIN_TOKEN),
            &[],
        )
        .await;
    assert!(detail.body["reasons"].is_array());
    // Public readiness stays bare; purges are counted.
    assert_eq!(
        app.get("/readyz").await.body,
        serde_json::json!({"ready": true})
    );
    let metrics = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("metricgate_cache_purges_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_token_guards_the_admin_listener_too_when_set() {
    let app = spawn_app_with(|s| s.admin.token = ADMIN_TOKEN.to_owned().into()).await;
    app.ready().await;
    assert_ne!(app.admin_url, app.url);
    assert_eq!(app.admin_get("/internal/limits").await.status, 401);
    assert_eq!(app.admin_get("/readyz").await.status, 401);
    assert_eq!(app.admin_get("/healthz").await.status, 200);
    let limits = app
        .send_with(
            app.http
                .get(format!("{}/internal/limits", app.admin_url))
                .bearer_auth(ADMIN_TOKEN),
            &[],
        )
        .await;
    assert_eq!(limits.status, 200);
    // The limits report shows the new ceilings, never a key.
    assert!(limits.body["per_ip"]["per_minute"].is_u64());
    assert!(limits.body["no_cache_per_minute"].is_u64());
}

#[tokio::test]
async fn a_wrong_method_is_told_the_methods_the_route_answers() {
    let app = spawn_app_with(|_| {}).await;
    app.ready().await;
    // Each method the Allow header lists is answered; one it does not list gets the 405.
    assert_eq!(app.admin_get("/internal/cache").await.status, 200);
    assert_eq!(app.admin_delete("/internal/cache").await.status, 200);
    let post = app.admin_post("/internal/cache").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), "GET, HEAD, DELETE");
    assert_eq!(post.header("content-type"), "application/problem+json");
    let delete = app.admin_delete("/internal/reload").await;
    assert_eq!(delete.status, 405);
    assert_eq!(delete.header("allow"), "POST");
    let post = app.admin_post("/healthz").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), "GET, HEAD");
    assert_eq!(app.admin_get("/healthz").await.status, 200);
}
