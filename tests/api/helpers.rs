//! Starts the real gateway on port 0 against the real simulator on port 0, on loopback.

use metricgate::settings::Settings;
use metricgate::sim::Simulator;
use metricgate::startup::Application;
use serde_json::Value;

pub const PUBLIC: &str = "test-public-token";
pub const PRIVATE: &str = "test-PRIVATE-token-9f8e7d6c";

pub struct TestApp {
    pub url: String,
    pub sim: Simulator,
    pub http: reqwest::Client,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// `adjust` may change the settings before the gateway is built.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).expect("simulator binds");
    let mut settings = Settings::for_upstream(&sim.url(), PUBLIC, PRIVATE);
    settings.server.listen = "127.0.0.1:0".into();
    settings.server.workers = 2;
    // Tests share one loopback address: callers' limits only where a test sets them.
    settings.rate_limit.per_client_per_minute = 1_000_000;
    settings.rate_limit.burst = 100_000;
    settings.upstream.per_minute = 100_000;
    settings.upstream.max_in_flight = 64;
    adjust(&mut settings);
    settings.validate().expect("test settings are valid");
    let app = Application::build(settings).await.expect("gateway builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        url,
        sim,
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
    pub async fn get(&self, path_and_query: &str) -> Answer {
        self.get_with(path_and_query, &[]).await
    }

    pub async fn get_with(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.http.get(format!("{}{}", self.url, path_and_query));
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

    /// Waits until the gateway has fetched the metric catalog.
    pub async fn ready(&self) {
        for _ in 0..100 {
            if self.get("/readyz").await.status == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("gateway never became ready");
    }
}
