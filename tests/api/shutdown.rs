//! `metricgate serve` as a real process: SIGTERM lets the request in flight finish.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use metricgate::sim::{Faults, Simulator};

use crate::helpers::{PRIVATE, PUBLIC};

// actix-server before 2.9.1 let a worker exit as soon as its accept thread stopped, before the
// graceful stop reached it, dropping the request in flight about one run in four on a busy
// machine (actix/actix-net#945). This test caught it; keep it un-ignored.
#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish() {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_metricgate"))
        .arg("serve")
        .env("METRICGATE__CACHE__DIR", "")
        .env("METRICGATE__SERVER__LISTEN", "127.0.0.1:0")
        .env("METRICGATE__ADMIN__LISTEN", "127.0.0.1:0")
        .env("METRICGATE__SERVER__WORKERS", "1")
        .env("METRICGATE__SERVER__SHUTDOWN_GRACE_SECS", "10")
        .env("METRICGATE__UPSTREAM__URL", sim.url())
        .env("METRICGATE__UPSTREAM__PUBLIC_TOKEN", PUBLIC)
        .env("METRICGATE__UPSTREAM__PRIVATE_TOKEN", PRIVATE)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "metricgate listening" {
                let _ = port_tx.send(v["port"].as_u64().unwrap());
            }
        }
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the gateway logs its port");
    let url = format!("http://127.0.0.1:{port}/v1/metricdata?metric=connections&did=3");
    for _ in 0..100 {
        if reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.set_faults(Faults {
        latency_ms: 1500,
        ..Faults::default()
    });
    let in_flight =
        tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    // SIGTERM only once the request is being served: the appliance has received it.
    for _ in 0..500 {
        if sim.stats.snapshot().metricdata >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        sim.stats.snapshot().metricdata,
        1,
        "the request reached the appliance"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the request in flight finished"
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err(),
        "the gateway stopped listening"
    );
}
