//! The explorer page and Swagger UI in a real browser: Debian's `chromium` and
//! `chromium-driver`, driven by Selenium from PyPI (scripts/test.sh installs them), against a
//! running gateway. The screenshots go to `target/artifacts/` for CI to keep.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::spawn_app;

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&dir).expect("target/artifacts can be made");
    dir
}

/// Runs `tests/browser/<script> <url> <screenshot>`; its output.
async fn browse(script: &'static str, url: String, screenshot: PathBuf) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    tokio::task::spawn_blocking(move || {
        let out = Command::new("python3")
            .arg(root.join("tests/browser").join(script))
            .arg(&url)
            .arg(&screenshot)
            .current_dir(root.join("tests/browser"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{script} failed (scripts/test.sh installs chromium, chromium-driver and selenium):\n{text}"
        );
        text
    })
    .await
    .unwrap()
}

fn is_a_picture(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.len() > 20_000 && b.starts_with(b"\x89PNG"))
}

#[tokio::test]
async fn the_explorer_draws_the_gateways_answer_in_a_real_browser() {
    let app = spawn_app().await;
    app.ready().await;
    let shot = artifacts().join("explorer.png");
    let _ = std::fs::remove_file(&shot);
    let out = browse("explorer_check.py", app.url.clone(), shot.clone()).await;
    assert!(out.contains("explorer OK"), "{out}");
    assert!(is_a_picture(&shot), "a screenshot in {shot:?}");
    let stats = app.sim.stats.snapshot();
    assert!(stats.metricdata > 0);
    assert_eq!(stats.rejected, 0);
}

#[tokio::test]
async fn the_explorers_appliance_picker_asks_the_appliance_picked() {
    use metricgate::sim::{Estate, Simulator};
    // A second appliance with its own tokens, catalog and devices, as the demo's `lab`.
    let lab = Simulator::spawn_estate(
        "127.0.0.1:0",
        "lab-public",
        "lab-private",
        Estate::seeded(1),
    )
    .unwrap();
    let settings = crate::fleet::named("lab", &lab, "lab-public", "lab-private");
    let app = crate::helpers::spawn_app_with(move |s| s.appliances.push(settings)).await;
    lab.set_clock(app.clock.clone());
    app.ready().await;
    let shot = artifacts().join("explorer-fleet.png");
    let _ = std::fs::remove_file(&shot);
    let out = browse("explorer_fleet_check.py", app.url.clone(), shot.clone()).await;
    assert!(out.contains("explorer fleet OK"), "{out}");
    assert!(is_a_picture(&shot), "a screenshot in {shot:?}");
    let stats = lab.stats.snapshot();
    assert!(stats.metricdata > 0, "lab was asked");
    assert_eq!(stats.rejected, 0, "signed with lab's tokens");
    assert_eq!(app.sim.stats.snapshot().rejected, 0);
}

#[tokio::test]
async fn swagger_ui_executes_metricdata_with_its_shipped_examples() {
    let app = spawn_app().await;
    app.ready().await;
    let shot = artifacts().join("swagger.png");
    let _ = std::fs::remove_file(&shot);
    let out = browse("swagger_check.py", app.url.clone(), shot.clone()).await;
    assert!(out.contains("swagger OK"), "{out}");
    assert!(is_a_picture(&shot), "a screenshot in {shot:?}");
    assert_eq!(app.upstream_metricdata(), 1, "Execute asked once");
}
