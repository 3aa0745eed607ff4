//! `metricgate serve` as a real process: SIGTERM lets the request in flight finish.

use std::process::Command;
use std::time::Duration;

use metricgate::sim::{Faults, Simulator};

use crate::helpers::{PRIVATE, PUBLIC, serve_process};

// actix-server before 2.9.1 let a worker exit as soon as its accept thread stopped, before the
// graceful stop reached it, dropping the request in flight about one run in four on a busy
// machine (actix/actix-net#945). This test caught it; keep it un-ignored.
#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish() {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let empty = std::ffi::OsStr::new("");
    let (mut child, port) = serve_process(
        &sim,
        &[
            (
                "METRICGATE__SERVER__SHUTDOWN_GRACE_SECS",
                std::ffi::OsStr::new("10"),
            ),
            ("METRICGATE__CACHE__DIR", empty),
        ],
    );
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
