//! Hostile input: refused with a 4xx, never a 5xx, and nothing reaches the appliance.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// Sends raw bytes and returns the status code, or 0 when the server closed the connection
/// without answering.
async fn raw(app: &TestApp, request: &[u8]) -> u16 {
    let addr = app.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .unwrap_or(Ok(0))
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn get(target: &[u8]) -> Vec<u8> {
    let mut r = b"GET ".to_vec();
    r.extend_from_slice(target);
    r.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    r
}

#[tokio::test]
async fn hostile_requests_get_a_4xx_and_never_reach_the_appliance() {
    let app = spawn_app().await;
    app.ready().await;
    let long_query = format!("/v1/metricdata?metric={}", "a".repeat(100_000));
    let many_params: String = (0..5000).map(|i| format!("&did={i}")).collect();
    let huge_list: String = (0..10_000).map(|i| format!("m{i},")).collect();
    let huge_devices: String = (1..10_000).map(|i| format!("{i},")).collect();
    let cases: Vec<Vec<u8>> = vec![
        get(long_query.as_bytes()),
        get(format!("/v1/metricdata?metric=connections{many_params}").as_bytes()),
        get(format!("/v1/metricdata?metrics={huge_list}").as_bytes()),
        get(format!("/v1/metricdata?metric=connections&devices={huge_devices}").as_bytes()),
        // invalid UTF-8 and NUL, raw and encoded
        get(b"/v1/metricdata?metric=\xff\xfe"),
        get(b"/v1/metricdata?metric=%ff%fe"),
        get(b"/v1/metricdata?metric=conn%00ections"),
        get(b"/v1/metricdata?metric=conn\x00ections"),
        // encoded & = CR LF trying to add parameters or headers upstream
        get(b"/v1/metricdata?metric=connections%26did%3D5"),
        get(b"/v1/metricdata?metric=connections&applicationprotocol=http%0D%0AX-Injected:%201"),
        get(b"/v1/metricdata?metric=connections%0d%0a"),
        get(b"/v1/metricdata?metric=connections&did=5%26metric2%3Dbandwidth"),
        // path tricks
        get(b"/v1/../v1/metricdata?metric=connections"),
        get(b"/v1/./metricdata?metric=connections"),
        get(b"//v1/metricdata?metric=connections"),
        get(b"/v1/%6detricdata?metric=connections"),
        get(b"/v1/metricdata%00?metric=connections"),
        get(b"/v1%2fmetricdata?metric=connections"),
        get(b"/v1/metricdata/..;/metrics?metric=connections"),
        get(b"/v1\\metricdata?metric=connections"),
        // an over-long header
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "b".repeat(100_000)
        )
        .into_bytes(),
    ];
    for (i, request) in cases.iter().enumerate() {
        let status = raw(&app, request).await;
        let shown = String::from_utf8_lossy(&request[..request.len().min(80)]).into_owned();
        assert!(
            (400..500).contains(&status),
            "case {i} ({shown}): status {status}"
        );
    }
    assert_eq!(
        app.upstream_metricdata(),
        0,
        "something hostile reached the appliance"
    );
    assert_eq!(
        app.get("/healthz").await.status,
        200,
        "the gateway is still up"
    );
}

#[tokio::test]
async fn slow_senders_are_cut_off() {
    let app = spawn_app_with(|s| s.server.client_request_timeout_ms = 500).await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the head: the gateway answers 408 or closes, well before 5 s.
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the slow sender was cut off")
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || head.starts_with("HTTP/1.1 408"), "{head}");
}
