//! Runs the gateway's code paths with every log at TRACE level, as JSON lines like `serve`
//! writes them, then checks the access lines and searches all the output for the private
//! token. Its own binary, so it owns the global subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};

use metricgate::settings::{AccessLogMode, Settings};
use metricgate::sim::{Faults, Simulator};
use metricgate::startup::Application;
use secrecy::SecretString;

const PUBLIC: &str = "secrets-public";
const PRIVATE: &str = "PRIVATE-needle-5b1f0c9e";

#[derive(Clone)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The gateway's URL and its admin listener's.
async fn gateway(settings: Settings) -> (String, String) {
    let app = Application::build(settings).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    let admin = format!("http://127.0.0.1:{}", app.admin_port().unwrap());
    tokio::spawn(app.run_until_stopped());
    (url, admin)
}

#[tokio::test]
async fn the_private_token_never_reaches_the_logs() {
    let logs = Captured(Arc::new(Mutex::new(Vec::new())));
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true)
        .init();

    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let mut settings = Settings::for_upstream(&sim.url(), PUBLIC, PRIVATE).expect("valid settings");
    settings.server.listen = ([127, 0, 0, 1], 0).into();
    settings.server.workers = 1;
    settings.server.access_log = AccessLogMode::All;
    settings.admin.listen = Some(([127, 0, 0, 1], 0).into());
    tracing::info!(?settings, "settings (Debug)");
    let (good, good_admin) = gateway(settings.clone()).await;
    let mut wrong = settings.clone();
    wrong.upstream.private_token = SecretString::from(format!("{PRIVATE}-but-wrong"));
    let (wrong, _) = gateway(wrong).await;

    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let mut bodies = Vec::new();
    for path in [
        "/v1/metricdata?metric=connections&did=1&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&breachtimes=1&fulldevicedetails=1",
        "/v1/metricdata?metrics=connections,bandwidth&devices=1,2,3",
        "/v1/metricdata?metric=bad%20name&foo=1",
        "/v1/metrics",
        "/readyz",
        "/openapi.json",
        "/nowhere",
    ] {
        bodies.push(get(format!("{good}{path}")).await);
        bodies.push(get(format!("{wrong}{path}")).await);
    }
    for faults in [
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        Faults {
            redirect: true,
            ..Faults::default()
        },
        Faults {
            malformed_body: true,
            ..Faults::default()
        },
        Faults {
            error_body: true,
            ..Faults::default()
        },
        // An element of no known shape: logged by its keys, never its values.
        Faults {
            unknown_element: true,
            ..Faults::default()
        },
    ] {
        sim.set_faults(faults);
        bodies.push(get(format!("{good}/v1/metricdata?metric=connections")).await);
    }
    sim.set_faults(Faults::default());

    let resp = http
        .get(format!("{good}/v1/metricdata?metric=connections&did=77"))
        .header("x-client-id", "log-test-client")
        .header("x-request-id", "log-test-request")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let purge = http
        .delete(format!("{good_admin}/internal/cache?did=77"))
        .header("x-client-id", "ops-team")
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status().as_u16(), 200);
    // The last access lines are written as their answers leave; wait for them, boundedly.
    for _ in 0..200 {
        let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
        if text.contains("log-test-request") && text.contains("cache purged") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    // One access line per request, with the request id, client, cache status and upstream time.
    let access: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "request")
        .collect();
    assert!(
        access.len() >= bodies.len(),
        "{} access lines for {} requests",
        access.len(),
        bodies.len()
    );
    let line = access
        .iter()
        .find(|v| v["span"]["request_id"] == "log-test-request")
        .expect("the access line carries the caller's request id");
    assert_eq!(line["client"], "id:log-test-client");
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "/v1/metricdata");
    assert!(line["cache"].as_str().unwrap().contains("fwd=miss"));
    assert!(line["upstream_ms"].is_u64());
    assert!(line["duration_ms"].is_f64());
    // A purge is logged with who asked.
    let purged = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "cache purged")
        .expect("the purge is logged");
    assert_eq!(purged["caller"], "id:ops-team");
    assert_eq!(purged["peer"], "127.0.0.1");
    assert_eq!(purged["answers"], 1);
    // The appliance request's own log lines carry the same request id.
    assert!(
        text.lines()
            .any(|l| l.contains("log-test-request") && l.contains("attempt")),
        "the upstream span is not tied to the request"
    );
    // The capture works: it holds trace-level lines from the request path.
    assert!(
        text.contains("\"level\":\"TRACE\""),
        "no trace lines captured"
    );
    assert!(text.contains("appliance"), "no appliance span captured");
    assert!(
        text.contains("[REDACTED]") || text.contains("SecretBox"),
        "settings were not logged"
    );
    assert!(
        !text.contains(PRIVATE),
        "the private token appears in the logs"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("\"level\":\"WARN\"") && l.contains("novelty, weight")),
        "no warning names the unknown element's keys"
    );
    assert!(
        !text.contains("value-not-to-log"),
        "an unknown element's value reached the logs"
    );
    for body in bodies {
        assert!(
            !body.contains(PRIVATE),
            "the private token appears in a response"
        );
    }
}
