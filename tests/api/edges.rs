//! A newcomer's first hour: the addresses people type lead somewhere, lists are accepted as
//! people write them (and a repeated scalar says where the list goes), the demo's output is
//! readable, and the Prometheus series say nothing about a Redis that is not there.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn docs_without_a_slash_and_the_root_lead_somewhere() {
    let app = spawn_app().await;
    let docs = app.get("/docs").await;
    assert_eq!(docs.status, 308);
    assert_eq!(docs.header("location"), "/docs/");
    assert_eq!(app.get("/docs/").await.status, 200);

    let page = app.http.get(format!("{}/", app.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let csp = header("content-security-policy");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>metricgate explorer</title>"));
    // Every asset the page names is served from the binary: nothing from elsewhere.
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with("/explorer/"))
        .collect();
    assert_eq!(assets.len(), 4, "{assets:?}");
    assert!(!html.contains("http://") && !html.contains("https://"));
    for asset in assets {
        let a = app
            .http
            .get(format!("{}{asset}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(a.status(), 200, "{asset}");
        let kind = a.headers()["content-type"].to_str().unwrap().to_owned();
        let expected = if asset.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else {
            "text/css; charset=utf-8"
        };
        assert_eq!(kind, expected, "{asset}");
        assert!(!a.text().await.unwrap().is_empty());
    }
    let missing = app.get("/explorer/nosuch.js").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), "application/problem+json");
    let post = app.http.post(format!("{}/", app.url)).send().await.unwrap();
    assert_eq!(post.status(), 405);
}

#[test]
fn the_vendored_chart_library_is_the_pinned_npm_release() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/web/vendor/uplot/README.md")).unwrap();
    assert!(readme.contains("uplot@1.6.32"), "{readme}");
    for file in ["uPlot.iife.min.js", "uPlot.min.css"] {
        let bytes = std::fs::read(format!("{root}/web/vendor/uplot/{file}")).unwrap();
        let digest = hex::encode(sha2_256(&bytes));
        assert!(
            readme.contains(&format!("{digest}  {file}")),
            "{file}'s sha256 {digest} is not the one web/vendor/uplot/README.md records"
        );
    }
    assert!(std::path::Path::new(&format!("{root}/web/vendor/uplot/LICENSE")).exists());
}

fn sha2_256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

const RANGE: &str = "from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=5min";

#[tokio::test]
async fn lists_are_accepted_as_people_write_them_and_repeats_point_at_the_list() {
    let app = spawn_app().await;
    let bracketed = app
        .get(&format!(
            "/v1/metricdata?metric=connections&devices=[456,%20123]&{RANGE}"
        ))
        .await;
    assert_eq!(bracketed.status, 200, "{}", bracketed.body);
    assert_eq!(
        bracketed.body["query"]["devices"],
        serde_json::json!([123, 456])
    );
    let plain = app
        .get(&format!(
            "/v1/metricdata?metric=connections&devices=123,456&{RANGE}"
        ))
        .await;
    assert!(
        plain.header("cache-status").contains("hit"),
        "{:?}",
        plain.headers
    );
    assert_eq!(plain.body, bracketed.body);
    assert_eq!(app.upstream_metricdata(), 2, "one request per device, once");

    // Python `requests` sends a list as a repeated parameter.
    let repeated = app
        .get(&format!(
            "/v1/metricdata?metric=connections&did=123&did=456&{RANGE}"
        ))
        .await;
    assert_eq!(repeated.status, 400);
    assert_eq!(repeated.bad_parameters(), ["did"]);
    let message = repeated.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("use `devices=123,456`"), "{message}");
    let metrics = app
        .get(&format!(
            "/v1/metricdata?metric=connections&metric=bandwidth&{RANGE}"
        ))
        .await;
    assert_eq!(metrics.bad_parameters(), ["metric"]);
    let message = metrics.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("use `metrics=a,b`"), "{message}");
    let listed = app
        .get(&format!(
            "/v1/metricdata?metric=connections&did=[123,456]&{RANGE}"
        ))
        .await;
    assert_eq!(listed.bad_parameters(), ["did"]);
    assert_eq!(
        app.upstream_metricdata(),
        2,
        "no refused question reached the appliance"
    );
}

#[tokio::test]
async fn redis_up_is_reported_only_where_redis_is_configured() {
    let embedded = spawn_app().await;
    let series = embedded
        .http
        .get(format!("{}/metrics", embedded.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(series.contains("metricgate_http_requests_total"));
    assert!(!series.contains("metricgate_redis_up"), "{series}");

    // Redis configured but out of reach: the series says so.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let replica = spawn_app_with(|s| {
        s.redis.url = Some(
            metricgate::settings::RedisUrl::parse(&format!("redis://127.0.0.1:{port}/0")).unwrap(),
        )
    })
    .await;
    let series = replica
        .http
        .get(format!("{}/metrics", replica.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(series.contains("\nmetricgate_redis_up 0\n"), "{series}");
}

/// A line of output and when it arrived.
type Line = (Instant, String);

fn collect(stream: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<Line> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test]
async fn the_demo_prints_its_banner_after_startup_and_plain_logs_to_stderr() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_metricgate"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("METRICGATE__CACHE__DIR", "")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let mut banner: Vec<Line> = Vec::new();
    while !banner.last().is_some_and(|(_, l)| l.starts_with("Ctrl-C")) {
        let line = stdout
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo prints its banner");
        banner.push(line);
    }
    let text: Vec<&str> = banner
        .iter()
        .map(|(_, l)| l.as_str())
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(text[0], "metricgate demo ready. Open the explorer:");
    let url = text[1].trim();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "the explorer's address comes first: {text:?}"
    );
    assert!(text.iter().any(|l| l.contains("/docs/")));
    let page = reqwest::get(url).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("metricgate explorer"));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let logs: Vec<Line> = stderr.try_iter().collect();
    let listening = logs
        .iter()
        .find(|(_, l)| l.contains("metricgate listening"))
        .unwrap_or_else(|| panic!("startup logs on stderr: {logs:?}"));
    assert!(
        listening.0 <= banner[0].0,
        "the banner comes after the startup logs"
    );
    assert!(
        logs.iter().all(|(_, l)| !l.contains('\u{1b}')),
        "no colour codes when stderr is not a terminal"
    );
    assert!(
        banner.iter().all(|(_, l)| !l.contains(" INFO ")),
        "no log lines among the banner's"
    );
}
