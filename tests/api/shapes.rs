//! Shapes the gateway does not know are never silently dropped: `fulldevicedetails=true`
//! answers in each shape appliances use elsewhere give the same series with their devices;
//! anything else unknown is left out with a `Warning`, counted, and never cached; a requested
//! metric missing from the answer is an error.

use metricgate::sim::{DeviceDetails, Faults, Profile};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const RANGED: &str = "/v1/metricdata?metrics=connections,bandwidth&devices=1,2&from=2024-01-15T12:00:00Z&to=2024-01-15T14:00:00Z&interval=15min&fulldevicedetails=true";

async fn both_paths() -> [TestApp; 2] {
    [
        spawn_app().await,
        spawn_app_with(|s| s.segments.enabled = false).await,
    ]
}

#[tokio::test]
async fn every_fulldevicedetails_shape_gives_the_series_their_devices() {
    let mut bodies = Vec::new();
    for app in both_paths().await {
        for shape in [
            DeviceDetails::Inline,
            DeviceDetails::DevicesList,
            DeviceDetails::Wrapped,
        ] {
            app.sim.set_profile(Profile {
                device_details: shape,
                ..Profile::default()
            });
            let a = app.get_with(RANGED, &[("cache-control", "no-cache")]).await;
            assert_eq!(a.status, 200, "{shape:?}: {}", a.body);
            assert!(a.header("warning").is_empty(), "{shape:?}");
            let series = a.body["series"].as_array().unwrap();
            assert_eq!(series.len(), 4, "{shape:?}");
            for s in series {
                let did = s["device"]["did"].as_u64().unwrap();
                assert_eq!(s["device"]["hostname"], format!("host-{did}"), "{shape:?}");
                assert_eq!(s["device"]["tags"][0], "corporate", "{shape:?}");
                assert_eq!(s["points"].as_array().unwrap().len(), 8, "{shape:?}");
            }
            bodies.push(a.body);
        }
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "the shapes and paths give different answers"
    );
}

#[tokio::test]
async fn an_unknown_element_is_left_out_with_a_warning_and_never_cached() {
    for app in both_paths().await {
        let q = "/v1/metricdata?metric=connections&did=3&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=5min";
        let whole = app.get(q).await;
        assert_eq!(whole.status, 200);
        assert_eq!(app.admin_delete("/internal/cache").await.status, 200);
        app.sim.set_faults(Faults {
            unknown_element: true,
            ..Faults::default()
        });
        let before = app.upstream_metricdata();
        let a = app.get(q).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(
            a.body["series"], whole.body["series"],
            "what was understood"
        );
        assert!(
            a.header("warning").starts_with("199 metricgate \"1 part"),
            "{}",
            a.header("warning")
        );
        assert_eq!(a.header("cache-control"), "no-store");
        assert!(a.header("cache-status").contains("detail=partial"));
        let warnings = a.body["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1);
        let text = warnings[0].as_str().unwrap();
        assert!(text.contains("[novelty, weight]"), "{text}");
        assert!(!a.body.to_string().contains("value-not-to-log"));
        // Not cached, at either level: the next asker fetches again.
        let again = app.get(q).await;
        assert_eq!(again.status, 200);
        assert!(!again.header("warning").is_empty());
        assert_eq!(app.upstream_metricdata(), before + 2);
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
            metrics.contains("metricgate_appliance_unknown_shapes_total 2"),
            "{metrics}"
        );
        // The appliance mends its ways: a whole answer is cached again.
        app.sim.set_faults(Faults::default());
        let fixed = app.get(q).await;
        assert!(fixed.header("warning").is_empty());
        assert!(fixed.body.get("warnings").is_none());
        assert!(
            app.get(q)
                .await
                .header("cache-status")
                .starts_with("metricgate; hit")
        );
    }
}

#[tokio::test]
async fn csv_and_sdk_answers_carry_the_warning_header_too() {
    let app = spawn_app().await;
    app.sim.set_faults(Faults {
        unknown_element: true,
        ..Faults::default()
    });
    for path in [
        "/v1/metricdata?metric=connections&format=csv",
        "/darktrace/metricdata?metric=connections",
    ] {
        let a = app.get(path).await;
        assert_eq!(a.status, 200, "{path}");
        assert!(a.header("warning").starts_with("199 "), "{path}");
    }
}

#[tokio::test]
async fn nothing_understood_is_a_502_and_a_missing_metric_an_error() {
    for app in both_paths().await {
        let ranged = "&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";
        // One metric asked, and left out: only the unknown element remains.
        app.sim.set_faults(Faults {
            unknown_element: true,
            omit_metric: true,
            ..Faults::default()
        });
        let a = app
            .get(&format!("/v1/metricdata?metric=connections{ranged}"))
            .await;
        assert_eq!(a.status, 502);
        assert_eq!(
            a.body["type"],
            "urn:metricgate:problem:appliance-unknown-shape"
        );
        assert!(!a.body.to_string().contains("value-not-to-log"));
        // Two asked, one left out: an error naming it, never an empty series.
        app.sim.set_faults(Faults {
            omit_metric: true,
            ..Faults::default()
        });
        let a = app
            .get(&format!(
                "/v1/metricdata?metrics=bandwidth,connections{ranged}"
            ))
            .await;
        assert_eq!(a.status, 502, "{}", a.body);
        assert_eq!(
            a.body["type"],
            "urn:metricgate:problem:appliance-missing-metric"
        );
        assert!(
            a.body["detail"].as_str().unwrap().contains("`connections`"),
            "{}",
            a.body
        );
        app.sim.set_faults(Faults::default());
        assert_eq!(
            app.get(&format!(
                "/v1/metricdata?metrics=bandwidth,connections{ranged}"
            ))
            .await
            .status,
            200,
            "errors are not cached"
        );
    }
}
