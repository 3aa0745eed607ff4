//! Appliance replies the gateway does not expect map to clear problems: a 429 is a 503 with
//! `Retry-After`, and a 400 refusing the query is a 502 quoting the first line of the
//! appliance's reason (at most 200 characters), never the appliance's address.

use std::num::NonZero;

use metricgate::sim::Faults;

use crate::helpers::spawn_app_with;

const Q: &str =
    "/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";

#[tokio::test]
async fn an_appliance_429_is_a_503_with_retry_after() {
    let app = spawn_app_with(|s| s.upstream.breaker_failures = NonZero::new(100).unwrap()).await;
    for (sent, expected) in [(Some(7), "7"), (None, "30")] {
        app.sim.set_faults(Faults {
            error_rate: 1.0,
            error_status: Some(429),
            retry_after_secs: sent,
            ..Faults::default()
        });
        let before = app.upstream_metricdata();
        let a = app.get_with(Q, &[("cache-control", "no-cache")]).await;
        assert_eq!(a.status, 503, "{}", a.body);
        assert_eq!(a.header("retry-after"), expected);
        assert_eq!(a.body["type"], "urn:metricgate:problem:appliance-throttled");
        assert_eq!(a.header("content-type"), "application/problem+json");
        assert_eq!(
            app.upstream_metricdata(),
            before + 1,
            "a throttling appliance is not retried at once"
        );
    }
}

#[tokio::test]
async fn an_appliance_400_is_a_502_quoting_its_first_line_without_its_address() {
    let app = spawn_app_with(|_| {}).await;
    let address = app.sim.addr.to_string();
    let reason = format!(
        "Invalid filter combination for https://{address}/metricdata: {}\nTraceback (most recent call last): secret internals",
        "x".repeat(300)
    );
    app.sim.set_faults(Faults {
        refuse: Some(reason),
        ..Faults::default()
    });
    let a = app.get(Q).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(
        a.body["type"],
        "urn:metricgate:problem:appliance-refused-query"
    );
    let detail = a.body["detail"].as_str().unwrap();
    let quoted = detail
        .strip_prefix("the appliance refused the query: ")
        .expect(detail);
    assert!(
        quoted.starts_with("Invalid filter combination for https://<appliance>/metricdata"),
        "{detail}"
    );
    assert_eq!(quoted.chars().count(), 200, "{detail}");
    let body = a.body.to_string();
    for hidden in [
        address.as_str(),
        "127.0.0.1",
        "Traceback",
        "secret internals",
    ] {
        assert!(!body.contains(hidden), "{hidden} in {body}");
    }
    // A refusal is about this query: it is not cached, and the next one is asked again.
    app.sim.set_faults(Faults::default());
    assert_eq!(app.get(Q).await.status, 200);
}
