//! Starts the real gateway on port 0 against the real simulator on port 0, on loopback.

use std::num::NonZero;

use metricgate::clock::Clock;
use metricgate::settings::Settings;
use metricgate::sim::Simulator;
use metricgate::startup::Application;
use serde_json::Value;

pub const PUBLIC: &str = "test-public-token";
pub const PRIVATE: &str = "test-PRIVATE-token-9f8e7d6c";

pub struct TestApp {
    pub url: String,
    /// The admin listener (`/internal/*`, readiness with reasons).
    pub admin_url: String,
    pub sim: Simulator,
    pub http: reqwest::Client,
    /// The gateway's clock: manual, so a test moves time instead of sleeping through it.
    pub clock: Clock,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A gateway's settings for the tests, in front of `sim`.
fn test_settings(sim: &Simulator) -> Settings {
    let mut settings = Settings::for_upstream(&sim.url(), PUBLIC, PRIVATE).expect("valid settings");
    settings.server.listen = ([127, 0, 0, 1], 0).into();
    settings.server.workers = 2;
    // Tests share one loopback address: callers' limits only where a test sets them.
    settings.rate_limit.per_client_per_minute = NonZero::new(1_000_000).unwrap();
    settings.rate_limit.burst = NonZero::new(100_000).unwrap();
    settings.rate_limit.per_ip_per_minute = NonZero::new(1_000_000).unwrap();
    settings.rate_limit.per_ip_burst = NonZero::new(100_000).unwrap();
    settings.rate_limit.no_cache_per_minute = 1_000_000;
    settings.upstream.per_minute = 100_000;
    settings.upstream.max_in_flight = NonZero::new(64).unwrap();
    settings.admin.listen = Some(([127, 0, 0, 1], 0).into());
    settings
}

/// The admin token of gateways whose admin endpoints share the main port.
pub const ADMIN_TOKEN: &str = "test-admin-token-3c1d";

/// `adjust` may change the settings before the gateway is built.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).expect("simulator binds");
    let app = spawn_app_against(sim, adjust).await;
    // Start tests from a ready gateway, as a balancer would, when it can be: answers cached
    // before the catalog arrives are dropped when it does, and upstream counts would jump.
    // (Tests of an unreachable or refusing appliance go on after the wait.)
    wait_ready(&app.http, &app.url, 150).await;
    app
}

/// Polls `/readyz` every 20 ms, at most `tries` times; whether it answered 200.
async fn wait_ready(http: &reqwest::Client, url: &str, tries: u32) -> bool {
    for _ in 0..tries {
        let ready = http.get(format!("{url}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// A gateway in front of `sim`, which the test may have prepared (faults set before start);
/// unlike [`spawn_app_with`], it does not wait for readiness.
pub async fn spawn_app_against(sim: Simulator, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings(&sim);
    adjust(&mut settings);
    settings.check().expect("test settings are valid");
    spawn_app_from(sim, settings).await
}

/// A gateway built from `settings` as they are (e.g. loaded from a file), in front of `sim`.
pub async fn spawn_app_from(sim: Simulator, settings: Settings) -> TestApp {
    let clock = Clock::manual_from_now();
    // The appliance's clock is the gateway's: a test moves both, and the appliance's data
    // (which minutes exist yet) follows.
    sim.set_clock(clock.clone());
    let app = Application::build_with_clock(settings, clock.clone())
        .await
        .expect("gateway builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    let admin_url = match app.admin_port() {
        Some(port) => format!("http://127.0.0.1:{port}"),
        None => url.clone(),
    };
    tokio::spawn(app.run_until_stopped());
    TestApp {
        url,
        admin_url,
        sim,
        clock,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    }
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The parameters named in a problem's `errors` list.
    pub fn bad_parameters(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["parameter"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl TestApp {
    /// Moves the gateway's clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.clock.advance(by);
    }

    /// Waits until the gateway's background loops (probes, prefetching) have done what the
    /// clock made due and parked again: see [`settle`].
    pub async fn settle(&self) {
        settle(&self.clock).await;
    }

    /// Moves the gateway's clock forward, then waits for its background loops to catch up.
    pub async fn advance_and_settle(&self, by: std::time::Duration) {
        self.advance(by);
        self.settle().await;
    }

    /// Advances the clock by `step` until `done` holds for the gateway's answer to `path`
    /// (`/internal/*` is asked of the admin listener), at most `steps` times; whether it did.
    /// (Each step waits for the background loops, such as probes, to catch up with the clock,
    /// then polls a little for what follows from them.)
    pub async fn advance_until(
        &self,
        path: &str,
        step: std::time::Duration,
        steps: u32,
        done: impl Fn(&Answer) -> bool,
    ) -> bool {
        for _ in 0..steps {
            self.advance_and_settle(step).await;
            for _ in 0..20 {
                let answer = if path.starts_with("/internal/") {
                    self.admin_get(path).await
                } else {
                    self.get(path).await
                };
                if done(&answer) {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        false
    }

    /// Polls the gateway's appliance guard until `done` holds for its report (real time,
    /// bounded): for tests that must know requests are queued before moving the clock.
    pub async fn wait_for_guard(&self, done: impl Fn(&Value) -> bool) {
        for _ in 0..500 {
            let limits = self.admin_get("/internal/limits").await;
            if done(&limits.body["appliance"]) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the appliance guard never reached the expected state");
    }

    pub async fn get(&self, path_and_query: &str) -> Answer {
        self.get_with(path_and_query, &[]).await
    }

    pub async fn get_with(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(
            self.http.get(format!("{}{}", self.url, path_and_query)),
            headers,
        )
        .await
    }

    /// The body of a GET, as text.
    pub async fn get_text(&self, path_and_query: &str) -> String {
        self.http
            .get(format!("{}{}", self.url, path_and_query))
            .send()
            .await
            .expect("gateway answers")
            .text()
            .await
            .expect("body")
    }

    /// GETs from the admin listener.
    pub async fn admin_get(&self, path_and_query: &str) -> Answer {
        self.send(
            self.http
                .get(format!("{}{}", self.admin_url, path_and_query)),
            &[],
        )
        .await
    }

    /// POSTs to the admin listener.
    pub async fn admin_post(&self, path_and_query: &str) -> Answer {
        self.send(
            self.http
                .post(format!("{}{}", self.admin_url, path_and_query)),
            &[],
        )
        .await
    }

    /// DELETEs on the admin listener.
    pub async fn admin_delete(&self, path_and_query: &str) -> Answer {
        self.send(
            self.http
                .delete(format!("{}{}", self.admin_url, path_and_query)),
            &[],
        )
        .await
    }

    pub async fn send_with(
        &self,
        req: reqwest::RequestBuilder,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.send(req, headers).await
    }

    async fn send(&self, mut req: reqwest::RequestBuilder, headers: &[(&str, &str)]) -> Answer {
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("gateway answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `/metricdata` requests the simulator served (catalog fetches excluded).
    pub fn upstream_metricdata(&self) -> u64 {
        self.sim.stats.snapshot().metricdata
    }

    /// The `/metricdata` path-and-query strings the simulator received, oldest first.
    pub fn upstream_queries(&self) -> Vec<String> {
        self.sim
            .stats
            .snapshot()
            .recent
            .into_iter()
            .filter(|q| q.starts_with("/metricdata"))
            .collect()
    }

    /// Waits (real time, bounded) until the gateway is ready: its first probe, which has a
    /// request's timeout however short the probes' is, fetched the catalog. The clock stays
    /// where it is.
    pub async fn ready(&self) {
        if wait_ready(&self.http, &self.url, 1_500).await {
            return;
        }
        let why = self.admin_get("/internal/readiness").await;
        panic!("gateway never became ready: {}", why.body);
    }
}

/// Waits until every background loop on `clock` (each gateway's probes and prefetching) has
/// done what the clock made due and parked again ([`Clock::is_idle`]). Polls in real time, for
/// at most 30 s, then fails the test: a loop that never catches up is a finding, not a pass.
pub async fn settle(clock: &Clock) {
    for _ in 0..15_000 {
        if clock.is_idle() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("the gateway's background loops did not catch up with its clock in 30 s");
}

/// A real `redis-server` on a free loopback port, killed on drop.
pub struct TestRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl TestRedis {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut redis = Self { port, child: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again), on the same port, and waits until it answers.
    pub fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("redis-server did not start");
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` gateways sharing one simulator and one Redis.
pub async fn spawn_replicas(
    n: usize,
    redis_url: &str,
    adjust: impl Fn(&mut Settings),
) -> (Simulator, Vec<String>) {
    spawn_replicas_with(n, redis_url, None, adjust).await
}

/// [`spawn_replicas`] on one manual clock (the simulator's too), which the test moves.
pub async fn spawn_replicas_on_clock(
    n: usize,
    redis_url: &str,
    adjust: impl Fn(&mut Settings),
) -> (Simulator, Vec<String>, Clock) {
    let clock = Clock::manual_from_now();
    let (sim, urls) = spawn_replicas_with(n, redis_url, Some(clock.clone()), adjust).await;
    (sim, urls, clock)
}

async fn spawn_replicas_with(
    n: usize,
    redis_url: &str,
    clock: Option<Clock>,
    adjust: impl Fn(&mut Settings),
) -> (Simulator, Vec<String>) {
    let (sim, replicas) = start_replicas(n, redis_url, clock.as_ref(), adjust).await;
    let urls: Vec<String> = replicas.into_iter().map(|r| r.url).collect();
    let http = reqwest::Client::new();
    for url in &urls {
        wait_ready(&http, url, 150).await;
    }
    (sim, urls)
}

/// `n` replicas in front of one simulator, sharing the Redis at `redis_url` (admin endpoints
/// on the main port, behind the token), each on `clock` (the simulator too) when one is
/// given, else on the system clock; started, not yet ready.
async fn start_replicas(
    n: usize,
    redis_url: &str,
    clock: Option<&Clock>,
    adjust: impl Fn(&mut Settings),
) -> (Simulator, Vec<Replica>) {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).expect("simulator binds");
    if let Some(clock) = clock {
        sim.set_clock(clock.clone());
    }
    let mut replicas = Vec::new();
    for _ in 0..n {
        let mut settings = test_settings(&sim);
        settings.server.workers = 1;
        settings.redis.url =
            Some(metricgate::settings::RedisUrl::parse(redis_url).expect("a Redis URL"));
        settings.admin.listen = None;
        settings.admin.token = ADMIN_TOKEN.to_owned().into();
        adjust(&mut settings);
        let app = Application::build_with_clock(settings, clock.cloned().unwrap_or_default())
            .await
            .expect("gateway builds");
        let url = format!("http://127.0.0.1:{}", app.port());
        replicas.push(Replica {
            url,
            server: tokio::spawn(app.run_until_stopped()),
        });
    }
    (sim, replicas)
}

/// A replica of [`spawn_cluster`], which a test may stop as if its process died.
pub struct Replica {
    pub url: String,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Replica {
    /// Stops the replica's server at once (no grace): its workers' tasks, fetches in flight
    /// and their lock heartbeats with them, end as in a killed process.
    pub fn kill(&self) {
        self.server.abort();
    }
}

/// `n` replicas in front of one simulator, sharing the Redis at `redis_url`, each on `clock`
/// (the simulator too) when one is given, else on the system clock; ready when returned.
pub async fn spawn_cluster(
    n: usize,
    redis_url: &str,
    clock: Option<&Clock>,
    adjust: impl Fn(&mut Settings),
) -> (Simulator, Vec<Replica>) {
    let (sim, replicas) = start_replicas(n, redis_url, clock, adjust).await;
    let http = reqwest::Client::new();
    for r in &replicas {
        assert!(
            wait_ready(&http, &r.url, 250).await,
            "a replica never became ready"
        );
    }
    (sim, replicas)
}

/// Waits until every replica reports shared (Redis) mode, or embedded mode when `shared` is false.
pub async fn wait_for_mode(urls: &[String], shared: bool) {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        let mut all = true;
        for url in urls {
            let body: Value = match http
                .get(format!("{url}/internal/limits"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            all &= body["redis"] == if shared { "shared" } else { "embedded" };
        }
        if all {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "the replicas did not reach {} mode",
        if shared { "shared" } else { "embedded" }
    );
}

/// [`spawn_replicas`] on one manual clock, which the simulator follows too: for background
/// work that runs on the gateway's clock (prefetching).
pub async fn spawn_replicas_on(
    clock: &Clock,
    n: usize,
    redis_url: &str,
    adjust: impl Fn(&mut Settings),
) -> (Simulator, Vec<String>) {
    spawn_replicas_with(n, redis_url, Some(clock.clone()), adjust).await
}

/// The value of the Prometheus series `series` (name and labels, as `/metrics` writes them) in
/// `text`; 0 when absent.
pub fn series_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `metricgate serve` as a real process in front of `sim` (one worker, the admin listener on a
/// free port, logs as JSON on stdout), with `vars` on top; the process, and the port it logs
/// that it listens on.
pub fn serve_process(
    sim: &Simulator,
    vars: &[(&str, &std::ffi::OsStr)],
) -> (std::process::Child, u16) {
    let (child, port, _) = serve_process_logged(sim, vars);
    (child, port)
}

/// [`serve_process`], and every JSON line it logs (kept as they come).
pub fn serve_process_logged(
    sim: &Simulator,
    vars: &[(&str, &std::ffi::OsStr)],
) -> (
    std::process::Child,
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_metricgate"))
        .arg("serve")
        .env("METRICGATE__SERVER__LISTEN", "127.0.0.1:0")
        .env("METRICGATE__ADMIN__LISTEN", "127.0.0.1:0")
        .env("METRICGATE__SERVER__WORKERS", "1")
        .env("METRICGATE__UPSTREAM__URL", sim.url())
        .env("METRICGATE__UPSTREAM__PUBLIC_TOKEN", PUBLIC)
        .env("METRICGATE__UPSTREAM__PRIVATE_TOKEN", PRIVATE)
        .envs(vars.iter().copied())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "metricgate listening" {
                let _ = port_tx.send(v["port"].as_u64().unwrap());
            }
            if let Ok(mut logs) = kept.lock() {
                logs.push(v);
            }
        }
    });
    let port = port_rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the gateway logs its port");
    (child, u16::try_from(port).unwrap(), logs)
}
