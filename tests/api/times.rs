//! Time inputs: outside 1970 to 9999 is the caller's mistake, a 400 naming the parameter, never
//! a 502 from the appliance; epoch seconds taken for milliseconds get a hint however they are
//! written; `starttime=0` gets a sensible message.

use crate::helpers::spawn_app;

#[tokio::test]
async fn times_outside_1970_to_9999_are_400s_naming_the_parameter() {
    let app = spawn_app().await;
    for (query, parameter, says) in [
        (
            "starttime=1969-12-31T00:00:00Z&endtime=2024-01-15T00:00:00Z",
            "starttime",
            "before 1970",
        ),
        ("from=1900-01-01&to=2024-01-15", "from", "before 1970"),
        (
            "starttime=2024-01-15T00:00:00Z&endtime=%2B10000-01-01T00:00:00",
            "endtime",
            "after 9999",
        ),
        (
            "from=2024-01-15&to=10000-01-01T00:00:00Z",
            "to",
            "after 9999",
        ),
        (
            "starttime=2024-01-15T00:00:00Z&endtime=253402300800000",
            "endtime",
            "after 9999",
        ),
        ("starttime=0", "starttime", "the epoch itself"),
        (
            "starttime=1705320000&endtime=1705323600",
            "starttime",
            "epoch seconds",
        ),
        (
            "starttime=1970-01-20T17:42:00Z",
            "starttime",
            "epoch seconds",
        ),
        ("from=1970-01-20%2017:42:00", "from", "2024-01-15T12:00:00Z"),
    ] {
        let a = app
            .get(&format!("/v1/metricdata?metric=connections&{query}"))
            .await;
        assert_eq!(a.status, 400, "{query}: {}", a.body);
        assert!(
            a.bad_parameters().contains(&parameter.to_owned()),
            "{query}: {:?}",
            a.bad_parameters()
        );
        let messages = a.body["errors"].to_string();
        assert!(messages.contains(says), "{query}: {messages}");
    }
    assert_eq!(
        app.upstream_metricdata(),
        0,
        "nothing reached the appliance"
    );
}
