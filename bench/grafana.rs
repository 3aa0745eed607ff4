//! Grafana's refresh pattern against the Prometheus-compatible API: the provisioned dashboard
//! (`deploy/grafana/dashboards/darktrace.json`, 18 panels and its breach annotations) showing
//! "the last 6 hours" for three devices, refreshed every 30 s for one hour. Each refresh sends
//! what Grafana sends: one `query_range` per panel and one for the annotations, start and end
//! aligned down to the step, the step the data source's one minute.
//!
//!     cargo bench --bench grafana
//!
//! Two strategies, each against its own simulator, counted by the simulator itself (requests
//! and data points served):
//! - **exact URL**: a cache keyed on the exact request (a generic HTTP cache in front of a
//!   naive adapter): a hit is free, a miss asks the appliance for the panel's whole window. Its
//!   entries never expire within the hour, which favours it.
//! - **metricgate**: every request planned and answered through the use case's segment cache.
//!
//! The answers are asserted identical at every request. The clock is virtual (the hour is
//! replayed at once) and set in the simulator's past, whose data is deterministic; requests are
//! still signed with the real time, as the simulator checks.

use std::collections::HashMap;
use std::num::NonZero;
use std::sync::Arc;

use metricgate::catalog::Catalog;
use metricgate::clock::Clock;
use metricgate::fetch::MetricSource;
use metricgate::promql::At;
use metricgate::service::{Lane, MetricService};
use metricgate::settings::Settings;
use metricgate::sim::Simulator;
use metricgate::telemetry::GatewayMetrics;
use metricgate::upstream::ApplianceClient;

const PUBLIC: &str = "bench-public";
const PRIVATE: &str = "bench-private";
/// 2024-01-15T12:07:30Z: the first refresh, mid-minute and off a segment boundary.
const T0: i64 = 1_705_320_450_000;
const SECOND: i64 = 1_000;
const STEP: i64 = 60 * SECOND;
const WINDOW: i64 = 6 * 3_600 * SECOND;
const REFRESHES: i64 = 120;
/// Grafana's value for the device variable set to "All" (`label_values(did)`).
const DEVICES: &str = "(101|102|103)";

/// The dashboard's queries (panels, then annotations), with `$did` as Grafana interpolates it.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/dashboards/darktrace.json"
    );
    let text = std::fs::read_to_string(path).expect("the provisioned dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let (Some(title), Some(expr)) = (panel["title"].as_str(), target["expr"].as_str()) {
                queries.push((title.to_owned(), expr.replace("$did", DEVICES)));
            }
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let (Some(name), Some(expr)) = (annotation["name"].as_str(), annotation["expr"].as_str())
        {
            queries.push((format!("annotation: {name}"), expr.replace("$did", DEVICES)));
        }
    }
    queries
}

/// One way of answering Grafana: a use case (with or without segments) on its own simulator.
struct Strategy {
    sim: Simulator,
    service: MetricService,
    clock: Clock,
}

impl Strategy {
    async fn new(segments: bool) -> Self {
        let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).expect("simulator");
        let mut settings =
            Settings::for_upstream(&sim.url(), PUBLIC, PRIVATE).expect("valid settings");
        settings.upstream.per_minute = 1_000_000;
        settings.upstream.max_in_flight = NonZero::new(64).unwrap();
        settings.segments.enabled = segments;
        let metrics = GatewayMetrics::new();
        let client = ApplianceClient::new(
            "default",
            &settings.upstream,
            Arc::new(GatewayMetrics::new()),
            None,
            Clock::system(),
        )
        .expect("client");
        let catalog = Arc::new(Catalog::new(Clock::system()));
        catalog.refresh(&client).await.expect("the catalog");
        let clock = Clock::manual(T0);
        let service = MetricService::new(
            &settings,
            MetricSource::new(client, catalog.clone()),
            catalog.clone(),
            &metrics,
            None,
            clock.clone(),
        );
        Self {
            sim,
            service,
            clock,
        }
    }

    /// What `/prometheus/api/v1/query_range` answers (its `data`), as JSON.
    async fn query_range(&self, expr: &str, start: i64, end: i64) -> String {
        let at = At::Range {
            start,
            end,
            step: STEP,
        };
        let members = [("default", &self.service)];
        let data =
            metricgate::service::promql::evaluate(&members, expr, at, 0, None, &Lane::new("bench"))
                .await
                .unwrap_or_else(|e| panic!("{expr}: {e}"))
                .data;
        serde_json::to_string(&data).expect("JSON")
    }

    fn counts(&self) -> (u64, u64) {
        let stats = self.sim.stats.snapshot();
        (stats.metricdata, stats.points)
    }
}

/// Replays the hour for `queries`; the (requests, points) of each strategy.
async fn replay(queries: &[(String, String)]) -> ((u64, u64), (u64, u64)) {
    let exact = Strategy::new(false).await;
    let gateway = Strategy::new(true).await;
    let mut by_url: HashMap<String, String> = HashMap::new();
    for k in 0..REFRESHES {
        let now = T0 + k * 30 * SECOND;
        exact.clock.set(now);
        gateway.clock.set(now);
        // Grafana aligns both ends down to the step.
        let end = now.div_euclid(STEP) * STEP;
        let start = (now - WINDOW).div_euclid(STEP) * STEP;
        for (name, expr) in queries {
            let url = form_urlencoded::Serializer::new(String::new())
                .append_pair("query", expr)
                .append_pair("start", &(start / SECOND).to_string())
                .append_pair("end", &(end / SECOND).to_string())
                .append_pair("step", "60")
                .finish();
            let cached = match by_url.get(&url) {
                Some(hit) => hit.clone(),
                None => {
                    let answer = exact.query_range(expr, start, end).await;
                    by_url.insert(url, answer.clone());
                    answer
                }
            };
            let answered = gateway.query_range(expr, start, end).await;
            assert_eq!(cached, answered, "refresh {k}, {name}: the answers differ");
        }
    }
    (exact.counts(), gateway.counts())
}

fn report(title: &str, (exact, gateway): ((u64, u64), (u64, u64))) {
    println!("{title}");
    println!(
        "  {:<12} {:>20} {:>18}",
        "strategy", "appliance requests", "appliance points"
    );
    println!("  {:<12} {:>20} {:>18}", "exact URL", exact.0, exact.1);
    println!("  {:<12} {:>20} {:>18}", "metricgate", gateway.0, gateway.1);
    println!(
        "  ratio: requests {:.1}x, points {:.1}x fewer; answers identical at every request",
        exact.0 as f64 / gateway.0.max(1) as f64,
        exact.1 as f64 / gateway.1.max(1) as f64
    );
}

#[tokio::main]
async fn main() {
    let queries = dashboard_queries();
    println!(
        "Grafana, last 6 h at a 1 min step, devices {DEVICES}, refreshed every 30 s for 1 h \
         ({REFRESHES} refreshes)\n"
    );
    let dashboard = replay(&queries).await;
    report(
        &format!(
            "the provisioned dashboard: {} queries per refresh ({} panels and the breach annotations)",
            queries.len(),
            queries.len() - 1
        ),
        dashboard,
    );
    println!();
    // One panel alone: no sharing between panels, only segments against the exact URL.
    let one = [queries
        .iter()
        .find(|(name, _)| name == "Connections by device")
        .cloned()
        .expect("the panel")];
    report(
        "one panel alone (Connections by device)",
        replay(&one).await,
    );
    let (exact, gateway) = dashboard;
    assert!(
        exact.1 >= 20 * gateway.1,
        "target missed: {} / {} appliance points is under 20x",
        exact.1,
        gateway.1
    );
}
