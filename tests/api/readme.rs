//! Every command the README shows is run: the demo, each curl line against it, `serve` with the
//! README's variables (made real: the simulator and its tokens) and the curl line that goes
//! with it; the test command is CI's own (`.ci/run`). A command added to the README that this
//! file does not know how to run fails the test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use metricgate::sim::Simulator;

use crate::helpers::{PRIVATE, PUBLIC, spawn_app};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The commands of the README's `sh` blocks, continuation lines joined.
fn commands(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = line.trim() == "```sh";
            continue;
        }
        if !in_block || line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(line.trim());
                out.push(std::mem::take(&mut pending).trim().to_owned());
            }
        }
    }
    out
}

/// Shell words: whitespace-separated, single quotes kept together and removed.
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in command.chars() {
        match c {
            '\'' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Runs a README curl line against `base` instead of `http://127.0.0.1:8080`; its body.
fn curl(command: &str, base: &str) -> String {
    let args: Vec<String> = words(command)
        .into_iter()
        .skip(1)
        .map(|w| w.replace("http://127.0.0.1:8080", base))
        .collect();
    let out = Command::new("curl")
        .arg("--fail-with-body")
        .args(&args)
        .output()
        .expect("curl is installed");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{command} failed: {body}");
    body
}

fn lines_of(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[tokio::test]
async fn every_command_in_the_readme_runs() {
    let readme = read("README.md");
    let mut demo = false;
    let mut test_command = false;
    let mut serve = None;
    let mut with_demo = Vec::new();
    let mut with_serve = Vec::new();
    for command in commands(&readme) {
        match command.as_str() {
            "cargo run --release -- demo" => demo = true,
            "bash scripts/test.sh" => test_command = true,
            c if c.starts_with("curl ") && c.contains("/internal/reload") => {
                with_serve.push(command)
            }
            c if c.starts_with("curl ") => with_demo.push(command),
            c if c.ends_with("cargo run --release -- serve") => serve = Some(command),
            c => panic!(
                "README command `{c}` is run by no test: teach tests/api/readme.rs to run it"
            ),
        }
    }
    assert!(demo && test_command, "the two commands are in the README");
    assert!(with_demo.len() >= 3 && !with_serve.is_empty());
    assert!(
        read(".ci/run")
            .lines()
            .any(|l| l.trim() == "bash scripts/test.sh"),
        "CI runs the README's test command"
    );

    // `cargo run --release -- demo` is this binary's `demo` (on a free port here).
    let mut child = Command::new(env!("CARGO_BIN_EXE_metricgate"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("METRICGATE__CACHE__DIR", "")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = lines_of(&mut child);
    let explorer = loop {
        let line = banner
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo prints where to go");
        let line = line.trim();
        if line.starts_with("http://127.0.0.1:") {
            break line.trim_end_matches('/').to_owned();
        }
    };
    let base = explorer.clone();
    let bodies = tokio::task::spawn_blocking(move || {
        with_demo
            .iter()
            .map(|c| (c.clone(), curl(c, &base)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    stop(child);
    let mut first_points = None;
    let mut lab_points = None;
    for (command, body) in &bodies {
        if command.contains("format=csv") {
            assert!(body.starts_with("timestamp_iso,"), "{command}: {body}");
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        if command.contains("/v1/appliances") {
            // The demo's fleet: the default, and `lab` with its label.
            let names: Vec<(&str, bool)> = json
                .as_array()
                .unwrap_or_else(|| panic!("{command}: {body}"))
                .iter()
                .map(|a| (a["name"].as_str().unwrap(), a["default"] == true))
                .collect();
            assert_eq!(names, [("default", true), ("lab", false)], "{body}");
            continue;
        }
        assert!(json.is_object(), "{command}: {body}");
        if command.contains("/v1/metricdata?metric=connections&did=123") {
            first_points = Some(json["series"][0]["points"].clone());
        } else if command.contains("appliance=lab&metric=connections&did=123") {
            lab_points = Some(json["series"][0]["points"].clone());
        }
    }
    // The README's first question, asked of `lab`: another device behind the same id.
    let (first_points, lab_points) = (first_points.unwrap(), lab_points.unwrap());
    assert_eq!(first_points.as_array().map(Vec::len), Some(12));
    assert_eq!(lab_points.as_array().map(Vec::len), Some(12));
    assert_ne!(first_points, lab_points);

    // `serve` with the README's variables, their values made real.
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("dt_private");
    std::fs::write(&token_file, format!("{PRIVATE}\n")).unwrap();
    let serve = serve.unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metricgate"));
    cmd.arg("serve")
        .env("METRICGATE__CACHE__DIR", "")
        .env_remove("RUST_LOG")
        .env("METRICGATE__SERVER__LISTEN", "127.0.0.1:0")
        .env("METRICGATE__ADMIN__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for assignment in words(&serve).iter().take_while(|w| w.contains('=')) {
        let (name, _) = assignment.split_once('=').unwrap();
        let value = match name {
            "METRICGATE__UPSTREAM__URL" => sim.url(),
            "METRICGATE__UPSTREAM__PUBLIC_TOKEN" => PUBLIC.to_owned(),
            "METRICGATE__UPSTREAM__PRIVATE_TOKEN_FILE" => token_file.display().to_string(),
            other => panic!("the README sets {other}: teach tests/api/readme.rs its value"),
        };
        cmd.env(name, value);
    }
    let mut child = cmd.spawn().unwrap();
    let logs = lines_of(&mut child);
    let (mut port, mut admin_port) = (None, None);
    while port.is_none() || admin_port.is_none() {
        let line = logs
            .recv_timeout(Duration::from_secs(30))
            .expect("serve logs its ports");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["message"] == "metricgate listening" {
            port = v["port"].as_u64();
        } else if v["message"] == "metricgate admin listening" {
            admin_port = v["port"].as_u64();
        }
    }
    let base = format!("http://127.0.0.1:{}", port.unwrap());
    let admin = format!("http://127.0.0.1:{}", admin_port.unwrap());
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..250 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "serve with the README's variables becomes ready");
    let bodies = tokio::task::spawn_blocking(move || {
        with_serve
            .iter()
            .map(|c| curl(&c.replace("http://127.0.0.1:8081", &admin), &base))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    stop(child);
    for body in bodies {
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["restart_needed"], serde_json::json!([]), "{body}");
    }
    assert_eq!(sim.stats.snapshot().rejected, 0);
}

#[tokio::test]
async fn the_caching_guides_two_spellings_share_one_answer() {
    let app = spawn_app().await;
    let guide = read("docs/caching.md");
    let spellings: Vec<&str> = guide
        .split('`')
        .filter(|s| s.starts_with("metrics="))
        .collect();
    assert_eq!(spellings.len(), 2, "{spellings:?}");
    let first = app.get(&format!("/v1/metricdata?{}", spellings[0])).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = app.get(&format!("/v1/metricdata?{}", spellings[1])).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert!(
        second.header("cache-status").contains("hit"),
        "{:?}",
        second.headers
    );
    assert_eq!(first.body, second.body);
    assert_eq!(app.upstream_metricdata(), 1);
}

/// `demo` on a free port with `args` and `env`: its explorer URL (from the banner).
fn demo_with(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metricgate"));
    cmd.args(["demo", "--listen", "127.0.0.1:0"])
        .env("METRICGATE__CACHE__DIR", "")
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let banner = lines_of(&mut child);
    loop {
        let line = banner
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo prints where to go");
        let line = line.trim();
        if line.starts_with("http://127.0.0.1:") {
            return (child, line.trim_end_matches('/').to_owned());
        }
    }
}

#[tokio::test]
async fn the_demo_reads_the_file_and_the_environment_but_keeps_its_appliance() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.toml");
    std::fs::write(
        &file,
        "[rate_limit]\nburst = 500\nper_client_per_minute = 3000\n",
    )
    .unwrap();
    let first = "/v1/metricdata?metric=connections&did=123&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=5min";
    let http = reqwest::Client::new();
    for (args, env, policy) in [
        (vec![], vec![], "600;w=60;burst=100"),
        (
            vec!["--config", file.to_str().unwrap()],
            vec![],
            "3000;w=60;burst=500",
        ),
        (
            vec!["--config", file.to_str().unwrap()],
            vec![
                ("METRICGATE__RATE_LIMIT__BURST", "1000"),
                // The appliance stays the simulator, whatever is asked.
                ("METRICGATE__UPSTREAM__URL", "http://192.0.2.1:9"),
                ("METRICGATE__UPSTREAM__PRIVATE_TOKEN_FILE", "/nonexistent"),
            ],
            "3000;w=60;burst=1000",
        ),
    ] {
        let (child, base) = demo_with(&args, &env);
        let response = http.get(format!("{base}{first}")).send().await.unwrap();
        let status = response.status();
        let got = response
            .headers()
            .get("ratelimit-policy")
            .map(|v| v.to_str().unwrap().to_owned());
        stop(child);
        assert_eq!(status, 200, "{args:?} {env:?}");
        assert_eq!(got.as_deref(), Some(policy), "{args:?} {env:?}");
    }
    // A bad value is named, as `serve` names it, and the demo does not start.
    let out = Command::new(env!("CARGO_BIN_EXE_metricgate"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("METRICGATE__CACHE__DIR", "")
        .env("METRICGATE__RATE_LIMIT__BURST", "many")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("rate_limit.burst"), "{said}");
    // An explicit --listen wins over the environment's.
    let (child, base) = demo_with(&[], &[("METRICGATE__SERVER__LISTEN", "256.0.0.1:1")]);
    let ok = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    stop(child);
    assert_eq!(ok, 200);
}
