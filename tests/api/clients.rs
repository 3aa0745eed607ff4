//! Clients generated from `openapi/openapi.json` by the real generators, calling a running
//! gateway. The README's test command installs the generators.

use std::path::Path;
use std::process::Command;

use metricgate::sim::{Estate, Simulator};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (run scripts/test.sh, which installs it)")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The helpers' gateway (its simulator is `default`) plus `lab`: a second simulator with its
/// own tokens, catalog and devices (a seeded [`Estate`], as the demo's).
async fn with_lab() -> (TestApp, Simulator) {
    let lab = Simulator::spawn_estate(
        "127.0.0.1:0",
        "lab-public",
        "lab-private",
        Estate::seeded(1),
    )
    .unwrap();
    let settings = crate::fleet::named("lab", &lab, "lab-public", "lab-private");
    let app = spawn_app_with(move |s| s.appliances.push(settings)).await;
    lab.set_clock(app.clock.clone());
    app.ready().await;
    (app, lab)
}

#[tokio::test]
async fn a_generated_python_client_calls_the_gateway() {
    // In front of a fleet: the client names `lab` with `appliance=` (python_check.py).
    let (app, lab) = with_lab().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let package = dir.path().join("metricgate_client");
    run(Command::new("openapi-python-client")
        .args(["generate", "--meta", "none", "--path"])
        .arg(root.join("openapi/openapi.json"))
        .arg("--output-path")
        .arg(&package));
    let url = app.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new("python3")
            .arg(root.join("tests/clients/python_check.py"))
            .arg(url)
            .env("PYTHONPATH", dir.path()))
    })
    .await
    .unwrap();
    assert!(out.contains("python client OK"), "{out}");
    let stats = lab.stats.snapshot();
    assert_eq!((stats.metricdata, stats.rejected), (1, 0), "lab asked once");
}

/// Schemathesis with all its checks: no 5xx, answers as documented (statuses, content types,
/// headers, bodies), what the schema allows accepted and what it forbids refused, undeclared
/// methods answered 405 with `Allow`. `tests/schemathesis.toml` names the few operations where
/// a request the schema allows may still be refused, and why. Bounded and repeatable: a fixed
/// seed, 50 examples an operation (about 2,600 requests, some 20 s on 2 cores).
#[tokio::test]
async fn schemathesis_with_all_checks_finds_no_failure() {
    let app = spawn_app().await;
    app.ready().await;
    let url = format!("{}/openapi.json", app.url);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new("st").arg("--config-file").arg(config).args([
            "run",
            &url,
            "--checks",
            "all",
            "--max-examples",
            "50",
            "--seed",
            "42",
            // One worker: the same seed then generates the same cases on every run.
            "--workers",
            "1",
        ]))
    })
    .await
    .unwrap();
    let tested = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .unwrap_or_else(|| panic!("no operation count:\n{out}"));
    let documented = metricgate::api::openapi::document();
    let doc: serde_json::Value = serde_json::from_str(&documented).unwrap();
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        tested,
        operations.to_string(),
        "every operation is tested:\n{out}"
    );
    let (generated, passed) = out
        .lines()
        .find_map(|l| {
            let (generated, rest) = l.trim().split_once(" generated, ")?;
            Some((
                generated.to_owned(),
                rest.strip_suffix(" passed")?.to_owned(),
            ))
        })
        .unwrap_or_else(|| panic!("some test cases failed:\n{out}"));
    assert_eq!(generated, passed, "{out}");
    assert!(!out.contains("failure"), "{out}");
}

#[tokio::test]
async fn a_generated_typescript_client_calls_the_gateway() {
    // In front of a fleet: the client names `lab` with `appliance=` (check.ts).
    let (app, lab) = with_lab().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/ts");
    let url = app.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new("npm")
            .args(["run", "--silent", "generate"])
            .current_dir(&dir));
        run(Command::new("npm")
            .args(["run", "--silent", "build"])
            .current_dir(&dir));
        run(Command::new("node")
            .arg("check.js")
            .arg(url)
            .current_dir(&dir))
    })
    .await
    .unwrap();
    assert!(out.contains("typescript client OK"), "{out}");
    let stats = lab.stats.snapshot();
    assert_eq!((stats.metricdata, stats.rejected), (1, 0), "lab asked once");
}

/// The darktrace-sdk versions the README's test command installs under `target/sdk/`: the one
/// the seed documents, and the newest, which spells several metrics as `metric1=`, `metric2=`.
const SDK_VERSIONS: &[&str] = &["0.9.0", "0.10.1"];

#[tokio::test]
async fn the_seeds_examples_run_unchanged_on_the_real_sdk() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for version in SDK_VERSIONS {
        let app = spawn_app().await;
        app.ready().await;
        let sdk = root.join("target/sdk").join(version);
        assert!(
            sdk.join("darktrace").is_dir(),
            "darktrace-sdk {version} is not in {sdk:?}; run scripts/test.sh, which installs it"
        );
        let url = app.url.clone();
        let out = tokio::task::spawn_blocking(move || {
            run(Command::new("python3")
                .arg(root.join("tests/clients/sdk/run_seed_examples.py"))
                .arg(url)
                .env("PYTHONPATH", sdk))
        })
        .await
        .unwrap();
        assert!(
            out.contains(&format!(
                "seed examples OK: 9 scripts, darktrace-sdk {version}"
            )),
            "{out}"
        );
        let stats = app.sim.stats.snapshot();
        assert!(stats.metricdata > 0);
        assert_eq!(
            stats.rejected, 0,
            "every appliance request was signed right"
        );
    }
}

/// darktrace-sdk pointed at `http://<gateway>/darktrace/lab`, in front of a second simulator:
/// lab's devices and catalog, signed with lab's tokens; the same script at `/darktrace` gets
/// the default's.
#[tokio::test]
async fn darktrace_sdk_pointed_at_a_named_appliance_asks_that_appliance() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for version in SDK_VERSIONS {
        let (app, lab) = with_lab().await;
        let sdk = root.join("target/sdk").join(version);
        assert!(
            sdk.join("darktrace").is_dir(),
            "darktrace-sdk {version} is not in {sdk:?}; run scripts/test.sh, which installs it"
        );
        let url = app.url.clone();
        let out = tokio::task::spawn_blocking(move || {
            run(Command::new("python3")
                .arg(root.join("tests/clients/sdk/named_appliance.py"))
                .arg(url)
                .arg("lab")
                .env("PYTHONPATH", sdk))
        })
        .await
        .unwrap();
        assert!(
            out.contains(&format!("named appliance OK: darktrace-sdk {version}")),
            "{out}"
        );
        let (home, lab) = (app.sim.stats.snapshot(), lab.stats.snapshot());
        assert_eq!((lab.metricdata, lab.rejected), (1, 0), "lab, signed right");
        assert_eq!(
            (home.metricdata, home.rejected),
            (1, 0),
            "the default, once"
        );
    }
}
