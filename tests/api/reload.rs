//! Live reload: the configuration file read again on `POST /internal/reload` or SIGHUP. Rate
//! limits, client overrides, the log level and the cache TTLs change in place; other changed
//! settings are named as needing a restart; no request is dropped while it happens.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metricgate::settings::Settings;
use metricgate::sim::Simulator;
use serde_json::{Value, json};

use crate::helpers::{PRIVATE, PUBLIC, spawn_app, spawn_app_from};

/// The parts of a configuration file these tests change.
struct Knobs<'a> {
    workers: usize,
    burst: u32,
    historic_ttl_secs: u64,
    log_level: &'a str,
    /// More `[rate_limit.overrides]` lines.
    overrides: &'a str,
    /// `[appliances.*]` tables, at the end.
    appliances: &'a str,
}

const KNOBS: Knobs<'static> = Knobs {
    workers: 2,
    burst: 100_000,
    historic_ttl_secs: 86_400,
    log_level: "info",
    overrides: "",
    appliances: "",
};

fn write_config(path: &Path, sim: &str, k: &Knobs) {
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
workers = {workers}
log_level = "{log_level}"

[upstream]
url = "{sim}"
public_token = "{PUBLIC}"
private_token = "{PRIVATE}"
per_minute = 100000
max_in_flight = 64

[rate_limit]
per_client_per_minute = 1000000
burst = {burst}
per_ip_per_minute = 100000000
per_ip_burst = 10000000

[rate_limit.overrides]
tight = {{ per_minute = 1, burst = 2 }}
{overrides}

[cache]
historic_ttl_secs = {ttl}

[admin]
listen = "127.0.0.1:0"

{appliances}
"#,
        workers = k.workers,
        log_level = k.log_level,
        burst = k.burst,
        overrides = k.overrides,
        ttl = k.historic_ttl_secs,
        appliances = k.appliances,
    );
    std::fs::write(path, text).unwrap();
}

const HISTORIC: &str = "/v1/metricdata?metric=connections&did=1&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=5min";

#[tokio::test]
async fn a_reload_puts_limits_and_ttls_in_force_and_names_what_needs_a_restart() {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let sim_url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metricgate.toml");
    write_config(&path, &sim_url, &KNOBS);
    let app = spawn_app_from(sim, Settings::load(Some(&path)).unwrap()).await;
    app.ready().await;
    let limits = app.admin_get("/internal/limits").await;
    assert_eq!(limits.body["per_client"]["burst"], 100_000);
    let tight = [("X-Client-Id", "tight")];
    for _ in 0..2 {
        assert_eq!(app.get_with("/v1/metrics", &tight).await.status, 200);
    }
    assert_eq!(app.get_with("/v1/metrics", &tight).await.status, 429);
    let before = app.get(HISTORIC).await;
    assert!(
        before.header("cache-status").ends_with("ttl=86400"),
        "{:?}",
        before.headers
    );

    write_config(
        &path,
        &sim_url,
        &Knobs {
            workers: 1,
            burst: 50_000,
            historic_ttl_secs: 120,
            overrides: "dash = { per_minute = 6000, burst = 500 }",
            ..KNOBS
        },
    );
    let reloaded = app.admin_post("/internal/reload").await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    assert_eq!(
        reloaded.body,
        json!({
            "applied": [
                "cache.historic_ttl_secs",
                "rate_limit.burst",
                "rate_limit.overrides.dash.burst",
                "rate_limit.overrides.dash.per_minute",
            ],
            "restart_needed": ["server.workers"],
            "notes": [],
        })
    );
    let limits = app.admin_get("/internal/limits").await;
    assert_eq!(limits.body["per_client"]["burst"], 50_000);
    assert_eq!(
        limits.body["overrides"]["dash"],
        json!({"per_minute": 6000, "burst": 500})
    );
    // A quota the reload did not touch keeps the budget its caller used.
    assert_eq!(app.get_with("/v1/metrics", &tight).await.status, 429);
    let dash = app
        .get_with("/v1/metrics", &[("X-Client-Id", "dash")])
        .await;
    assert_eq!(dash.header("ratelimit-policy"), "6000;w=60;burst=500");
    // New answers get the new TTL; stored ones keep theirs.
    let after = app.get(&HISTORIC.replace("did=1", "did=2")).await;
    assert!(
        after.header("cache-status").ends_with("ttl=120"),
        "{:?}",
        after.headers
    );
    let kept = app.get(HISTORIC).await;
    assert!(
        kept.header("cache-status").contains("hit; ttl=86400"),
        "{:?}",
        kept.headers
    );

    // An invalid file is refused whole: the running configuration stays.
    write_config(&path, &sim_url, &Knobs { burst: 0, ..KNOBS });
    let refused = app.admin_post("/internal/reload").await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.header("content-type"), "application/problem+json");
    assert_eq!(refused.body["type"], "urn:metricgate:problem:not-reloaded");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("rate_limit.burst must be greater than 0"),
        "{detail}"
    );
    let limits = app.admin_get("/internal/limits").await;
    assert_eq!(limits.body["per_client"]["burst"], 50_000);

    // What needs a restart is named again on every reload until it is in force.
    write_config(
        &path,
        &sim_url,
        &Knobs {
            workers: 1,
            burst: 50_000,
            historic_ttl_secs: 120,
            overrides: "dash = { per_minute = 6000, burst = 500 }",
            ..KNOBS
        },
    );
    let again = app.admin_post("/internal/reload").await;
    assert_eq!(again.body["applied"], json!([]));
    assert_eq!(again.body["restart_needed"], json!(["server.workers"]));
}

#[tokio::test]
async fn a_gateway_built_in_code_has_nothing_to_reload() {
    let app = spawn_app().await;
    let refused = app.admin_post("/internal/reload").await;
    assert_eq!(refused.status, 409);
    assert_eq!(refused.body["type"], "urn:metricgate:problem:not-reloaded");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("not started from configuration files"),
        "{}",
        refused.body
    );
    let wrong_method = app.admin_get("/internal/reload").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), "POST");
}

/// Log lines of a child process, as they arrive.
fn collect_lines(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<Value>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                sink.lock().unwrap().push(v);
            }
        }
    });
    lines
}

async fn poll<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not happen in time");
}

#[tokio::test]
async fn sighup_reloads_the_running_binary_under_load_without_dropping_a_request() {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metricgate.toml");
    write_config(&path, &sim.url(), &KNOBS);
    let mut child = Command::new(env!("CARGO_BIN_EXE_metricgate"))
        .arg("serve")
        .env("METRICGATE__CACHE__DIR", "")
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let logs = collect_lines(child.stdout.take().unwrap());
    let port = poll("the gateway logs its port", async || {
        let logs = logs.lock().unwrap();
        logs.iter()
            .find(|l| l["message"] == "metricgate listening")
            .and_then(|l| l["port"].as_u64())
    })
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let admin_port = poll("the gateway logs its admin port", async || {
        let logs = logs.lock().unwrap();
        logs.iter()
            .find(|l| l["message"] == "metricgate admin listening")
            .and_then(|l| l["port"].as_u64())
    })
    .await;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let http = reqwest::Client::new();
    poll("readiness", async || {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    // Load: cache hits and cold misses from 8 callers at once, bounded in count.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for caller in 0..8u64 {
        let (http, base, stop, sent) = (http.clone(), base.clone(), stop.clone(), sent.clone());
        callers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..1500u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let path = if i % 4 == 0 {
                    HISTORIC.replace("did=1", &format!("did={}", 1000 + caller * 10_000 + i))
                } else {
                    HISTORIC.to_owned()
                };
                let status = http
                    .get(format!("{base}{path}"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.to_string());
                outcomes.push(status);
                sent.fetch_add(1, Ordering::Relaxed);
            }
            outcomes
        }));
    }
    poll("load to start", async || {
        (sent.load(Ordering::Relaxed) > 100).then_some(())
    })
    .await;
    for round in 0..10u32 {
        let burst = 90_000 + round;
        let log_level = if round % 2 == 0 {
            "info,metricgate::reload=debug"
        } else {
            "info"
        };
        write_config(
            &path,
            &sim.url(),
            &Knobs {
                burst,
                historic_ttl_secs: 3_600 + u64::from(round),
                log_level,
                ..KNOBS
            },
        );
        let hup = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(hup.success());
        poll("the new burst in force", async || {
            let r = http
                .get(format!("{admin}/internal/limits"))
                .send()
                .await
                .ok()?;
            let body: Value = r.json().await.ok()?;
            (body["per_client"]["burst"] == burst).then_some(())
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut statuses = std::collections::BTreeMap::new();
    for caller in callers {
        for outcome in caller.await.unwrap() {
            *statuses.entry(outcome).or_insert(0u64) += 1;
        }
    }
    let total: u64 = statuses.values().sum();
    assert_eq!(
        statuses.keys().collect::<Vec<_>>(),
        [&Ok(200)],
        "every request answered 200 through 10 reloads: {statuses:?}"
    );
    assert!(total > 200, "{total} requests");

    // The last reload: a log level of warn, and a setting that needs a restart.
    write_config(
        &path,
        &sim.url(),
        &Knobs {
            workers: 1,
            log_level: "warn",
            ..KNOBS
        },
    );
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let warned = poll("a warning naming server.workers", async || {
        let logs = logs.lock().unwrap();
        logs.iter().position(|l| {
            l["level"] == "WARN"
                && l["settings"]
                    .as_str()
                    .is_some_and(|s| s.contains("server.workers"))
        })
    })
    .await;
    let reloads = logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l["message"] == "configuration reloaded")
        .count();
    assert_eq!(
        reloads, 10,
        "each SIGHUP reloaded once (the last one logs at warn)"
    );
    let answered = http.get(format!("{base}{HISTORIC}")).send().await.unwrap();
    assert_eq!(answered.status(), 200);
    assert!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200,
        "SIGHUP does not stop the gateway"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let logs = logs.lock().unwrap();
    assert!(
        logs[warned..].iter().all(|l| l["message"] != "request"),
        "at warn, no access lines are written"
    );
}

/// An `[appliances.emea]` table in front of `sim` with these tokens.
fn emea(sim: &str, public: &str, private: &str) -> String {
    format!(
        "[appliances.emea]\nurl = \"{sim}\"\npublic_token = \"{public}\"\nprivate_token = \"{private}\"\nlabel = \"EMEA\"\n"
    )
}

#[tokio::test]
async fn a_reload_adds_retokens_and_removes_appliances_without_dropping_a_request() {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let sim_url = sim.url();
    let other = Simulator::spawn("127.0.0.1:0", "emea-public", "emea-private").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metricgate.toml");
    write_config(&path, &sim_url, &KNOBS);
    let app = spawn_app_from(sim, Settings::load(Some(&path)).unwrap()).await;
    other.set_clock(app.clock.clone());
    app.ready().await;
    let to_emea = format!("{HISTORIC}&appliance=emea");
    assert_eq!(app.get(&to_emea).await.status, 400, "no emea yet");

    // Added.
    let table = emea(&other.url(), "emea-public", "emea-private");
    write_config(
        &path,
        &sim_url,
        &Knobs {
            appliances: &table,
            ..KNOBS
        },
    );
    let reloaded = app.admin_post("/internal/reload").await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    assert_eq!(
        reloaded.body["appliances"],
        json!({"added": ["emea"], "removed": [], "changed": []})
    );
    assert!(!reloaded.body.to_string().contains("emea-private"));
    let a = app.get(&to_emea).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(other.stats.snapshot().metricdata, 1);
    let listed = app.get("/v1/appliances").await;
    assert_eq!(listed.body[1]["name"], "emea");

    // Re-tokened with a wrong private token: emea refuses, the default is untouched.
    let wrong = emea(&other.url(), "emea-public", "not-the-token");
    write_config(
        &path,
        &sim_url,
        &Knobs {
            appliances: &wrong,
            ..KNOBS
        },
    );
    let reloaded = app.admin_post("/internal/reload").await;
    assert_eq!(
        reloaded.body["appliances"]["changed"],
        json!(["emea"]),
        "{}",
        reloaded.body
    );
    let refused = app.get(&to_emea.replace("did=1", "did=2")).await;
    assert!(refused.status >= 500, "{}", refused.body);
    assert_eq!(app.get(HISTORIC).await.status, 200);
    // And back, with a request to emea in flight while it is started anew.
    write_config(
        &path,
        &sim_url,
        &Knobs {
            appliances: &table,
            ..KNOBS
        },
    );
    app.admin_post("/internal/reload").await;
    other.set_faults(metricgate::sim::Faults {
        latency_ms: 300,
        ..Default::default()
    });
    let in_flight = {
        let (http, url) = (
            app.http.clone(),
            format!("{}{}", app.url, to_emea.replace("did=1", "did=3")),
        );
        tokio::spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    let asked = other.stats.snapshot().metricdata;
    for _ in 0..500 {
        if other.stats.snapshot().metricdata > asked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        other.stats.snapshot().metricdata > asked,
        "the request reached the appliance"
    );
    // Removed while the request is at the appliance: it is answered all the same.
    write_config(&path, &sim_url, &KNOBS);
    let reloaded = app.admin_post("/internal/reload").await;
    assert_eq!(
        reloaded.body["appliances"]["removed"],
        json!(["emea"]),
        "{}",
        reloaded.body
    );
    assert_eq!(in_flight.await.unwrap().unwrap(), 200);
    assert_eq!(app.get(&to_emea).await.status, 400);
    assert_eq!(app.get(HISTORIC).await.status, 200);
}
