//! `metricgate serve` as a real process over a real directory (#29): settled segments survive
//! `kill -9`, so a restart costs the appliance nothing it already answered; a data file that is
//! not a database is set aside and the gateway starts anyway.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use futures::StreamExt;

use metricgate::sim::Simulator;

use crate::helpers::{PRIVATE, PUBLIC, series_value, serve_process};

struct Gateway {
    child: Child,
    url: String,
}

impl Gateway {
    /// `serve` in front of `sim`, keeping its disk tier in `dir`; ready to answer.
    async fn start(sim: &Simulator, dir: &Path) -> Self {
        Self::spawn(sim, dir.as_os_str()).await
    }

    /// The same gateway with no disk tier.
    async fn start_without_disk(sim: &Simulator) -> Self {
        Self::spawn(sim, std::ffi::OsStr::new("")).await
    }

    async fn spawn(sim: &Simulator, dir: &std::ffi::OsStr) -> Self {
        let (child, port) = serve_process(sim, &[("METRICGATE__CACHE__DIR", dir)]);
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..250 {
            if reqwest::get(format!("{url}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, url }
    }

    fn kill_9(mut self) {
        let killed = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let _ = self.child.wait();
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.url)).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `/metricdata` requests the simulator has served.
fn asked(sim: &Simulator) -> Vec<String> {
    sim.stats
        .snapshot()
        .recent
        .into_iter()
        .filter(|q| q.starts_with("/metricdata"))
        .collect()
}

/// A rolling 3-hour window (its first two hours settled) asked before and after `kill -9`:
/// after the restart the settled hours come from disk, and the appliance is asked only for
/// the unsettled tail.
#[tokio::test]
async fn settled_segments_survive_kill_9() {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now().timestamp();
    let hour = now - now.rem_euclid(3_600);
    let (start, end) = ((hour - 3 * 3_600) * 1000, hour * 1000);
    // Settled: it ended hours ago. The same question after the restart must cost nothing.
    let settled = format!(
        "/v1/metricdata?metric=connections&did=3&starttime={start}&endtime={}&interval=60",
        end - 3_600_000
    );
    let first = Gateway::start(&sim, dir.path()).await;
    let (status, before) = first.get(&settled).await;
    assert_eq!(status, 200, "{before}");
    let (_, metrics) = first.get("/metrics").await;
    assert_eq!(
        series_value(&metrics, "metricgate_disk_cache_up"),
        1.0,
        "{metrics}"
    );
    assert!(series_value(&metrics, "metricgate_disk_cache_entries") >= 1.0);
    let asked_before = asked(&sim).len();
    assert!(asked_before >= 1);
    first.kill_9();

    let second = Gateway::start(&sim, dir.path()).await;
    let (status, after) = second.get(&settled).await;
    assert_eq!(status, 200, "{after}");
    let strip = |body: &str| {
        let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
        // What differs between two answers of the same data: nothing but when it was served.
        if let Some(o) = v.as_object_mut() {
            o.remove("retrieved_at");
        }
        v
    };
    assert_eq!(strip(&after), strip(&before), "the same answer, from disk");
    assert_eq!(
        asked(&sim).len(),
        asked_before,
        "the restart cost the appliance nothing: {:?}",
        asked(&sim)
    );
    let (_, metrics) = second.get("/metrics").await;
    assert!(
        series_value(&metrics, "metricgate_disk_cache_events{event=\"hit\"}") >= 1.0,
        "{metrics}"
    );
    // A rolling window over now: only what is not settled yet is asked for.
    let rolling = format!(
        "/v1/metricdata?metric=connections&did=3&starttime={start}&endtime={}&interval=60",
        now * 1000
    );
    let (status, _) = second.get(&rolling).await;
    assert_eq!(status, 200);
    let new: Vec<String> = asked(&sim).split_off(asked_before);
    assert!(!new.is_empty());
    for request in &new {
        let from: i64 = request
            .split('&')
            .find_map(|kv| kv.strip_prefix("starttime="))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(
            from >= end - 3_600_000,
            "only the hour not asked before: {request}"
        );
    }
}

/// A data file of garbage: the gateway starts, sets it aside and keeps a new one.
#[tokio::test]
async fn a_garbage_data_file_is_set_aside() {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("segments.redb"), b"not a database at all").unwrap();
    let gateway = Gateway::start(&sim, dir.path()).await;
    let (status, _) = gateway.get("/readyz").await;
    assert_eq!(status, 200);
    let (_, metrics) = gateway.get("/metrics").await;
    assert_eq!(
        series_value(&metrics, "metricgate_disk_cache_up"),
        1.0,
        "{metrics}"
    );
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("corrupt"))
        .collect();
    assert_eq!(aside.len(), 1, "the bad file kept for a post-mortem");
}

/// A cache directory that cannot be made (a file stands in its way): the gateway answers
/// from memory and says so on `/metrics`.
#[tokio::test]
async fn an_unusable_directory_leaves_the_gateway_on_memory() {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    let gateway = Gateway::start(&sim, &blocker.join("cache")).await;
    let (status, body) = gateway
        .get("/v1/metricdata?metric=connections&did=3&starttime=1705305600000&endtime=1705309200000&interval=60")
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = gateway.get("/metrics").await;
    assert_eq!(
        series_value(&metrics, "metricgate_disk_cache_up"),
        0.0,
        "{metrics}"
    );
}

/// `kill -9` while segments are being written, 100 times in a row: the gateway starts every
/// time, and afterwards every answer from its disk is the appliance's own (what a gateway
/// without a disk tier answers), never a torn or corrupt entry.
#[tokio::test]
async fn kill_9_during_writes_a_hundred_times_never_serves_a_bad_entry() {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now().timestamp();
    let hour = now - now.rem_euclid(3_600);
    let question = |did: u64| {
        format!(
            "/v1/metricdata?metric=connections&did={did}&starttime={}&endtime={}&interval=60",
            (hour - 5 * 3_600) * 1000,
            (hour - 3_600) * 1000
        )
    };
    for round in 0..100u64 {
        let gateway = Gateway::start(&sim, dir.path()).await;
        let (status, _) = gateway.get("/readyz").await;
        assert_eq!(status, 200, "round {round}: the gateway started");
        // Several cold questions at once; killed as soon as the first is answered, while the
        // others are being fetched and written.
        let url = gateway.url.clone();
        let asks: Vec<_> = (0..4)
            .map(|i| {
                let url = format!("{url}{}", question(1 + (round * 4 + i) % 40));
                tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) })
            })
            .collect();
        let mut asks = futures::stream::iter(asks).buffer_unordered(4);
        let _ = futures::StreamExt::next(&mut asks).await;
        gateway.kill_9();
    }
    let gateway = Gateway::start(&sim, dir.path()).await;
    let plain = Gateway::start_without_disk(&sim).await;
    let strip = |body: &str| {
        let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
        if let Some(o) = v.as_object_mut() {
            o.remove("retrieved_at");
        }
        v
    };
    for did in 1..=40 {
        let (status, from_disk) = gateway.get(&question(did)).await;
        assert_eq!(status, 200, "{from_disk}");
        let (_, direct) = plain.get(&question(did)).await;
        assert_eq!(strip(&from_disk), strip(&direct), "device {did}");
    }
    let (_, metrics) = gateway.get("/metrics").await;
    assert_eq!(series_value(&metrics, "metricgate_disk_cache_up"), 1.0);
    assert!(
        series_value(&metrics, "metricgate_disk_cache_events{event=\"hit\"}") >= 1.0,
        "answers came from disk: {metrics}"
    );
}

/// A 1 MiB tmpfs mounted on `dir`, unmounted on drop; `None` where `mount` is refused (not
/// root: CI runs as root).
fn tmpfs(dir: &Path) -> Option<Unmount> {
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    mounted.then(|| Unmount(dir.to_owned()))
}

struct Unmount(std::path::PathBuf);

impl Unmount {
    fn read_only(&self) {
        let done = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(done.success());
    }
}

impl Drop for Unmount {
    fn drop(&mut self) {
        // Lazily: the gateway's threads may still hold its file for a moment.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full disk (a 1 MiB tmpfs): writes fail, are logged and counted, and every question is
/// still answered from memory and the appliance.
#[tokio::test]
async fn a_full_disk_leaves_answers_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_unmount) = tmpfs(dir.path()) else {
        eprintln!("a_full_disk_leaves_answers_untouched: cannot mount a tmpfs here (not root)");
        return;
    };
    let cache = dir.path().to_owned();
    let app = crate::helpers::spawn_app_with(move |s| {
        s.cache.dir = Some(cache);
        s.cache.disk_max_bytes = std::num::NonZero::new(1 << 30).unwrap();
    })
    .await;
    let now = app.clock.now_ms() / 1000;
    let day = now - now.rem_euclid(86_400) - 86_400;
    for did in 1..=60 {
        let a = app
            .get(&format!(
                "/v1/metricdata?metric=connections&did={did}&starttime={}&endtime={}&interval=60",
                day * 1000,
                (day + 86_400) * 1000
            ))
            .await;
        assert_eq!(a.status, 200, "device {did}: {}", a.body);
    }
    let metrics = app.get_text("/metrics").await;
    assert!(
        series_value(&metrics, "metricgate_disk_cache_events{event=\"error\"}") >= 1.0,
        "the full disk was noticed: {metrics}"
    );
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 200);
}

/// A directory that became read-only (a remounted filesystem) under a data file written
/// before: the gateway starts, answers from memory and the appliance, says so on `/metrics`,
/// and `check-config` names the path and the setting.
#[tokio::test]
async fn a_read_only_directory_leaves_the_gateway_on_memory() {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = tmpfs(dir.path()) else {
        eprintln!("a_read_only_directory_leaves_the_gateway_on_memory: cannot mount (not root)");
        return;
    };
    let question = "/v1/metricdata?metric=connections&did=3&starttime=1705305600000&endtime=1705309200000&interval=60";
    let gateway = Gateway::start(&sim, dir.path()).await;
    assert_eq!(gateway.get(question).await.0, 200);
    gateway.kill_9();
    assert!(dir.path().join("segments.redb").exists());
    mount.read_only();
    let gateway = Gateway::start(&sim, dir.path()).await;
    assert_eq!(gateway.get("/readyz").await.0, 200);
    let (status, body) = gateway.get(question).await;
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = gateway.get("/metrics").await;
    assert_eq!(
        series_value(&metrics, "metricgate_disk_cache_up"),
        0.0,
        "{metrics}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_metricgate"))
        .arg("check-config")
        .env("METRICGATE__UPSTREAM__URL", sim.url())
        .env("METRICGATE__UPSTREAM__PUBLIC_TOKEN", PUBLIC)
        .env("METRICGATE__UPSTREAM__PRIVATE_TOKEN", PRIVATE)
        .env("METRICGATE__CACHE__DIR", dir.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cache.dir"), "{text}");
    assert!(text.contains(dir.path().to_str().unwrap()), "{text}");
}
