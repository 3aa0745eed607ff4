//! One representation decision per request: the `format` parameter however it is encoded,
//! `Accept` and `Accept-Encoding` with their q-values. The body, its Content-Type and its
//! cache entry always agree, and a caller who refuses CSV or gzip never gets it.

use crate::helpers::spawn_app;

const Q: &str = "/v1/metricdata?metric=connections&did=7&from=2024-01-15T00:00:00Z&to=2024-01-15T12:00:00Z&interval=5min";

async fn raw(
    app: &crate::helpers::TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, Option<String>, Vec<u8>) {
    let http = reqwest::Client::builder().no_gzip().build().unwrap();
    let mut request = http.get(format!("{}{path}", app.url));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let resp = request.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{path}");
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let encoding = resp
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    (content_type, encoding, resp.bytes().await.unwrap().to_vec())
}

fn is_csv(body: &[u8]) -> bool {
    body.starts_with(b"timestamp_iso,")
}

#[tokio::test]
async fn an_encoded_format_parameter_is_csv_and_labelled_so() {
    let app = spawn_app().await;
    for spelling in [
        format!("{Q}&format=csv"),
        format!("{Q}&format=%63sv"),
        format!("{Q}&%66ormat=csv"),
    ] {
        // Twice: the second answer comes from the raw-query index.
        for _ in 0..2 {
            let (content_type, _, body) = raw(&app, &spelling, &[]).await;
            assert_eq!(content_type, "text/csv; charset=utf-8", "{spelling}");
            assert!(is_csv(&body), "{spelling}");
        }
    }
    let (content_type, _, body) = raw(&app, Q, &[]).await;
    assert_eq!(content_type, "application/json");
    assert!(body.starts_with(b"{"), "JSON stays JSON for everyone else");
}

#[tokio::test]
async fn accept_q_values_are_honoured() {
    let app = spawn_app().await;
    for (accept, csv) in [
        ("text/csv;q=0, application/json", false),
        ("text/csv;q=0", false),
        ("application/json, text/csv", false),
        ("application/json;q=0.4, text/csv;q=0.8", true),
        ("text/csv", true),
    ] {
        for _ in 0..2 {
            let (content_type, _, body) = raw(&app, Q, &[("accept", accept)]).await;
            assert_eq!(is_csv(&body), csv, "{accept}");
            assert_eq!(content_type.starts_with("text/csv"), csv, "{accept}");
        }
    }
    // The SDK route has one representation, whatever the caller accepts.
    let sdk = "/darktrace/metricdata?metric=connections&did=7&from=2024-01-15T00:00:00Z&to=2024-01-15T12:00:00Z";
    let (content_type, _, body) = raw(&app, sdk, &[("accept", "text/csv")]).await;
    assert_eq!(content_type, "application/json");
    assert!(body.starts_with(b"{"));
}

#[tokio::test]
async fn gzip_only_with_a_weight_above_zero() {
    let app = spawn_app().await;
    for (accept_encoding, gzip) in [
        ("gzip", true),
        ("gzip;q=0.5, br", true),
        ("gzip;q=0.000", false),
        ("gzip;q=0", false),
        ("identity", false),
        ("*", true),
        ("gzip;q=0, *", false),
    ] {
        let (_, encoding, _) = raw(&app, Q, &[("accept-encoding", accept_encoding)]).await;
        assert_eq!(
            encoding.as_deref() == Some("gzip"),
            gzip,
            "{accept_encoding}"
        );
    }
    let a = app.get(Q).await;
    assert_eq!(a.header("vary"), "accept, accept-encoding");
}
