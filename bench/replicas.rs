//! Scale-out cost for the appliance: three dashboards' rolling windows (the last 24 h at 5 min,
//! each refreshed every minute) on one gateway, then on three replicas sharing one Redis and
//! one simulator, one dashboard per replica and round-robin per request. Counts what the
//! simulator served (metric data requests and data points) and checks that every scenario
//! gives byte-identical answers at every refresh. Target (#18): three replicas cost at most
//! 1.1x the requests and points of one.
//!
//!     cargo bench --bench replicas
//!
//! Gateways are the real application in process (port 0), each scenario with its own
//! simulator and its own `redis-server` (started here; it must be installed), all on one manual
//! clock that the bench moves a minute per refresh: an hour of refreshes replays in seconds, and
//! the simulator (whose data follows the same clock) answers the same in every scenario. The
//! three dashboards of a refresh are asked at once, as dashboards refresh.

use std::num::NonZero;
use std::time::Duration;

use futures::future::join_all;
use metricgate::clock::Clock;
use metricgate::settings::Settings;
use metricgate::sim::Simulator;
use metricgate::startup::Application;

const PUBLIC: &str = "bench-public";
const PRIVATE: &str = "bench-private";
const ADMIN_TOKEN: &str = "bench-admin-token";
const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;
const REFRESHES: i64 = 60;
/// The three dashboards: one metric each, as a dashboard panel asks it.
const DASHBOARDS: [&str; 3] = ["connections", "bandwidth", "connections&did=7"];

/// A `redis-server` on a free loopback port, killed on drop.
struct Redis {
    port: u16,
    child: std::process::Child,
}

impl Redis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        // Killed on drop, even if it never answers.
        let redis = Self { port, child };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy)]
enum Spread {
    /// Dashboard `d` always on replica `d % n`.
    DashboardPerReplica,
    /// Request `i` (in the order sent) on replica `(i + i / 3) % n`: each dashboard moves
    /// from replica to replica at every refresh.
    RoundRobin,
}

struct Outcome {
    /// Every answer, by refresh then dashboard.
    bodies: Vec<String>,
    requests: u64,
    points: u64,
}

async fn scenario(replicas: usize, spread: Spread, start_ms: i64) -> Outcome {
    let redis = Redis::start();
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).expect("simulator");
    let clock = Clock::manual(start_ms);
    sim.set_clock(clock.clone());
    let mut urls = Vec::new();
    for _ in 0..replicas {
        let mut s = Settings::for_upstream(&sim.url(), PUBLIC, PRIVATE).expect("valid settings");
        s.server.listen = ([127, 0, 0, 1], 0).into();
        s.server.workers = 1;
        s.server.log_level = "warn".into();
        s.rate_limit.per_client_per_minute = NonZero::new(1_000_000).unwrap();
        s.rate_limit.burst = NonZero::new(100_000).unwrap();
        s.rate_limit.per_ip_per_minute = NonZero::new(1_000_000).unwrap();
        s.rate_limit.per_ip_burst = NonZero::new(100_000).unwrap();
        s.upstream.per_minute = 100_000;
        s.upstream.max_in_flight = NonZero::new(64).unwrap();
        s.redis.url =
            metricgate::settings::RedisUrl::parse(&format!("redis://127.0.0.1:{}/0", redis.port))
                .ok();
        // Patient: a slow call on a busy machine must not push a replica into embedded mode.
        s.redis.timeout_ms = NonZero::new(2_000).unwrap();
        s.admin.listen = None;
        s.admin.token = ADMIN_TOKEN.to_owned().into();
        let app = Application::build_with_clock(s, clock.clone())
            .await
            .expect("gateway builds");
        urls.push(format!("http://127.0.0.1:{}", app.port()));
        tokio::spawn(app.run_until_stopped());
    }
    let http = reqwest::Client::new();
    for url in &urls {
        ready_and_shared(&http, url).await;
    }
    sim.stats.reset();
    let mut bodies = Vec::new();
    let mut sent = 0;
    for k in 0..REFRESHES {
        clock.set(start_ms + k * MINUTE);
        let now = clock.now_ms();
        let first = sent;
        let asks = DASHBOARDS.iter().enumerate().map(|(d, m)| {
            let i = first + d;
            let replica = match spread {
                Spread::DashboardPerReplica => d % replicas,
                // Shifted by one every round, so each dashboard moves from replica to replica.
                Spread::RoundRobin => (i + i / DASHBOARDS.len()) % replicas,
            };
            let url = format!(
                "{}/v1/metricdata?metric={m}&from={}&to={now}&interval=5min",
                urls[replica],
                now - DAY
            );
            let http = http.clone();
            async move {
                let r = http.get(url).send().await.expect("an answer");
                assert_eq!(r.status(), 200, "refresh {k}, {m}");
                r.text().await.expect("a body")
            }
        });
        sent += DASHBOARDS.len();
        bodies.extend(join_all(asks).await);
    }
    let stats = sim.stats.snapshot();
    Outcome {
        bodies,
        requests: stats.metricdata,
        points: stats.points,
    }
}

/// Waits until the gateway at `url` is ready and shares state through Redis.
async fn ready_and_shared(http: &reqwest::Client, url: &str) {
    for _ in 0..500 {
        let ready = http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        let shared = match http
            .get(format!("{url}/internal/limits"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
        {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["redis"] == "shared"),
            Err(_) => false,
        };
        if ready && shared {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never became ready in shared mode");
}

#[tokio::main]
async fn main() {
    // Three hours ago, off a segment boundary: the simulator's data is all there and the same
    // in every scenario.
    let now = Clock::system().now_ms();
    let start_ms = (now - 3 * 3_600_000).div_euclid(3_600_000) * 3_600_000 + 450_000;
    println!(
        "three dashboards ({}), the last 24 h at 5 min, refreshed every minute for {REFRESHES} min",
        DASHBOARDS.join(", ")
    );
    let one = scenario(1, Spread::DashboardPerReplica, start_ms).await;
    let per_replica = scenario(3, Spread::DashboardPerReplica, start_ms).await;
    let round_robin = scenario(3, Spread::RoundRobin, start_ms).await;
    println!(
        "{:<34} {:>18} {:>16} {:>16} {:>14}",
        "replicas", "appliance requests", "appliance points", "requests vs one", "points vs one"
    );
    let mut missed = Vec::new();
    for (name, o) in [
        ("1", &one),
        ("3, one dashboard per replica", &per_replica),
        ("3, round-robin per request", &round_robin),
    ] {
        let requests = o.requests as f64 / one.requests.max(1) as f64;
        let points = o.points as f64 / one.points.max(1) as f64;
        println!(
            "{name:<34} {:>18} {:>16} {:>15.2}x {:>13.2}x",
            o.requests, o.points, requests, points
        );
        assert_eq!(
            o.bodies, one.bodies,
            "{name}: the answers differ from one replica's"
        );
        if requests > 1.1 || points > 1.1 {
            missed.push(name);
        }
    }
    println!("answers byte-identical in every scenario at every refresh");
    if missed.is_empty() {
        println!(
            "target met: three replicas cost at most 1.1x the appliance requests and points of one"
        );
    } else {
        println!("target (<= 1.1x) missed by: {}", missed.join("; "));
    }
}
