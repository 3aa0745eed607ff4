//! Callers cannot defeat the cache or escape their limits without authentication: forced
//! refreshes are few per caller, rotating client ids meets the per-address ceiling, and a
//! client id with a key can only be used with the key.

use std::num::NonZero;
use std::time::Duration;

use metricgate::limits::sha256;
use metricgate::settings::{ClientKey, ClientQuota};

use crate::helpers::spawn_app_with;

const Q: &str =
    "/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";
const NO_CACHE: (&str, &str) = ("cache-control", "no-cache");

#[tokio::test]
async fn no_cache_forces_a_refetch_only_a_few_times_a_minute() {
    let app = spawn_app_with(|s| s.rate_limit.no_cache_per_minute = 6).await;
    app.ready().await;
    assert!(app.get(Q).await.header("cache-status").contains("fwd=miss"));
    // 6 a minute: a burst of 2, then one every 15 s.
    for _ in 0..2 {
        let a = app.get_with(Q, &[NO_CACHE]).await;
        assert!(
            a.header("cache-status").contains("fwd=request"),
            "{}",
            a.header("cache-status")
        );
    }
    assert_eq!(app.upstream_metricdata(), 3);
    // Beyond that, from the cache, and Cache-Status says so; rotating ids changes nothing.
    for i in 0..20 {
        let id = format!("rotating-{i}");
        let a = app
            .get_with(Q, &[NO_CACHE, ("x-client-id", id.as_str())])
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(
            a.header("cache-status"),
            format!(
                "metricgate; hit; ttl={}; detail=no-cache-limited",
                a.header("cache-control").trim_start_matches("max-age=")
            )
        );
    }
    let pragma = app.get_with(Q, &[("pragma", "no-cache")]).await;
    assert!(pragma.header("cache-status").contains("no-cache-limited"));
    assert_eq!(
        app.upstream_metricdata(),
        3,
        "the flood never reached the appliance"
    );
    app.advance(Duration::from_secs(15));
    let a = app.get_with(Q, &[NO_CACHE]).await;
    assert!(a.header("cache-status").contains("fwd=request"));
    assert_eq!(app.upstream_metricdata(), 4);
}

#[tokio::test]
async fn a_proven_client_has_its_own_forced_refreshes() {
    let app = spawn_app_with(|s| {
        s.rate_limit.no_cache_per_minute = 3; // a burst of 1
        s.rate_limit.clients.insert(
            "dash".into(),
            ClientKey {
                key_sha256: hex::encode(sha256(b"dash-key")).parse().unwrap(),
                appliances: None,
            },
        );
    })
    .await;
    app.ready().await;
    app.get(Q).await;
    let anonymous = app.get_with(Q, &[NO_CACHE]).await;
    assert!(anonymous.header("cache-status").contains("fwd=request"));
    let spent = app.get_with(Q, &[NO_CACHE, ("x-client-id", "dash")]).await;
    assert!(
        spent.header("cache-status").contains("no-cache-limited"),
        "without its key, dash is this address"
    );
    let proven = app
        .get_with(
            Q,
            &[
                NO_CACHE,
                ("x-client-id", "dash"),
                ("authorization", "Bearer dash-key"),
            ],
        )
        .await;
    assert!(proven.header("cache-status").contains("fwd=request"));
}

/// The fifth case: 40 of 40 got through with a burst of 10 by rotating ids.
#[tokio::test]
async fn rotating_client_ids_gain_nothing_beyond_the_address_ceiling() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_client_per_minute = NonZero::new(60).unwrap();
        s.rate_limit.burst = NonZero::new(10).unwrap();
        s.rate_limit.per_ip_per_minute = NonZero::new(120).unwrap();
        s.rate_limit.per_ip_burst = NonZero::new(10).unwrap();
        s.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let mut through = 0;
    for i in 0..40 {
        let id = format!("rotating-{i}");
        let a = app.get_with(Q, &[("x-client-id", id.as_str())]).await;
        if a.status == 200 {
            through += 1;
        } else {
            assert_eq!(a.status, 429);
            assert_eq!(a.header("ratelimit-policy"), "120;w=60;burst=10");
            assert!(a.header("retry-after").parse::<u64>().unwrap() >= 1);
        }
    }
    assert_eq!(through, 10, "the address's burst, whatever the ids");
    // Another address (through a trusted proxy) has its own ceiling.
    let other = app
        .get_with(
            Q,
            &[
                ("x-client-id", "elsewhere"),
                ("x-forwarded-for", "10.9.9.9"),
            ],
        )
        .await;
    assert_eq!(other.status, 200);
    // The ceiling refills at its rate: 2 a second.
    app.advance(Duration::from_secs(1));
    let mut later = 0;
    for i in 0..5 {
        let id = format!("later-{i}");
        later += usize::from(
            app.get_with(Q, &[("x-client-id", id.as_str())])
                .await
                .status
                == 200,
        );
    }
    assert_eq!(later, 2);
}

#[tokio::test]
async fn a_keyed_client_id_is_only_usable_with_its_key() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_client_per_minute = NonZero::new(60).unwrap();
        s.rate_limit.burst = NonZero::new(3).unwrap();
        s.rate_limit.overrides.insert(
            "dash".into(),
            ClientQuota {
                per_minute: 60,
                burst: 5,
            },
        );
        s.rate_limit.clients.insert(
            "dash".into(),
            ClientKey {
                key_sha256: hex::encode(sha256(b"dash-key"))
                    .to_uppercase()
                    .parse()
                    .unwrap(),
                appliances: None,
            },
        );
    })
    .await;
    // Someone else sends dash's id without the key: the anonymous quota (this address's).
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let a = app.get_with(Q, &[("x-client-id", "dash")]).await;
        if a.status == 200 {
            assert_eq!(a.header("ratelimit-policy"), "60;w=60;burst=3");
        }
        statuses.push(a.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // dash, with its key, still has all of its own budget.
    for expected in (0..5).rev() {
        let a = app
            .get_with(
                Q,
                &[
                    ("x-client-id", "dash"),
                    ("authorization", "Bearer dash-key"),
                ],
            )
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("ratelimit-policy"), "60;w=60;burst=5");
        assert_eq!(
            a.header("ratelimit"),
            format!("limit=5, remaining={expected}, reset={}", 5 - expected)
        );
    }
    let wrong = app
        .get_with(
            Q,
            &[("x-client-id", "dash"), ("authorization", "Bearer guessed")],
        )
        .await;
    assert_eq!(wrong.status, 429, "a wrong key is no key");
    let limits = app.admin_get("/internal/limits").await;
    assert_eq!(limits.body["keyed_clients"], serde_json::json!(["dash"]));
    assert!(
        !limits
            .body
            .to_string()
            .contains(&hex::encode(sha256(b"dash-key")))
    );
}
