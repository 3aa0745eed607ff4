//! No Docker engine runs here, so the container files are checked against the code instead:
//! same binary, same subcommands, same configuration names, same ports as the README.

use std::collections::HashSet;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Every `section.key` in config/default.toml.
fn setting_names() -> HashSet<String> {
    let mut section = String::new();
    let mut keys = HashSet::new();
    for line in read("config/default.toml").lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if !line.starts_with('#')
            && let Some((key, _)) = line.split_once(" = ")
        {
            keys.insert(format!("{section}.{}", key.trim()));
        }
    }
    keys
}

#[test]
fn compose_uses_real_settings_commands_and_ports() {
    let compose = read("docker-compose.yml");
    let settings = setting_names();
    let mut seen = 0;
    for line in compose.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("METRICGATE__") {
            let name = rest
                .split(':')
                .next()
                .unwrap()
                .to_ascii_lowercase()
                .replacen("__", ".", 1);
            assert!(
                settings.contains(&name),
                "docker-compose.yml sets unknown setting {name}"
            );
            seen += 1;
        }
    }
    // Services built from this repository run one of the binary's subcommands.
    let mut services: Vec<Vec<&str>> = Vec::new();
    for line in compose.lines() {
        let is_service = line.starts_with("  ") && !line.starts_with("   ") && line.ends_with(':');
        if is_service {
            services.push(Vec::new());
        } else if let Some(service) = services.last_mut() {
            service.push(line.trim());
        }
    }
    for service in services.iter().filter(|s| s.contains(&"build: .")) {
        let command = service
            .iter()
            .find_map(|l| l.strip_prefix("command: [\""))
            .expect("a command");
        let sub = command.split('"').next().unwrap();
        assert!(
            ["serve", "simulate", "demo", "check-config", "openapi"].contains(&sub),
            "unknown subcommand {sub}"
        );
    }
    assert!(compose.contains("METRICGATE__REDIS__URL: redis://redis:6379/0"));
    assert!(compose.contains("replicas: 2"));
    let balancer = read("config/balancer.conf");
    assert!(
        balancer.contains("server gateway:8080;"),
        "the balancer targets the gateways' port"
    );
    assert!(compose.contains("./config/balancer.conf:"));
    assert!(seen >= 3);
    assert!(
        compose.contains("\"127.0.0.1:8080:8080\""),
        "the gateway's port, as in the README"
    );
    let readme = read("README.md");
    assert!(readme.contains("http://127.0.0.1:8080/v1/metricdata"));
}

#[test]
fn the_dockerfile_builds_this_binary_and_runs_it_unprivileged() {
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.contains("target/release/metricgate"));
    assert!(
        dockerfile.contains("FROM debian:bookworm-slim"),
        "a small runtime stage"
    );
    assert!(dockerfile.contains("USER 10001"), "non-root");
    assert!(dockerfile.contains("EXPOSE 8080"));
    assert!(dockerfile.contains("METRICGATE__SERVER__LISTEN=0.0.0.0:8080"));
    assert!(dockerfile.contains("CMD [\"serve\"]"));
    for copied in ["Cargo.toml", "Cargo.lock", "src", "config", "openapi"] {
        assert!(std::path::Path::new(&format!("{}/{copied}", env!("CARGO_MANIFEST_DIR"))).exists());
    }
}

/// The provisioned dashboard's queries: every panel target and annotation, as Grafana sends
/// them once `$did` is a multi-value selection (`(101|102|103)`) and `$appliance` is "All"
/// (the variable's `allValue`, `.*`).
pub fn dashboard_queries(devices: &str) -> Vec<(String, String)> {
    dashboard_queries_for(devices, ".*")
}

/// [`dashboard_queries`] with `$appliance` as `appliances` (`(default|lab)` for two picked).
pub fn dashboard_queries_for(devices: &str, appliances: &str) -> Vec<(String, String)> {
    raw_dashboard_queries()
        .into_iter()
        .map(|(name, expr)| {
            let expr = expr
                .replace("$did", devices)
                .replace("$appliance", appliances);
            (name, expr)
        })
        .collect()
}

/// The dashboard's queries as written, variables and all.
fn raw_dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/darktrace.json")).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().to_owned();
            queries.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = annotation["expr"].as_str() {
            let name = format!("annotation {}", annotation["name"].as_str().unwrap());
            queries.push((name, expr.to_owned()));
        }
    }
    queries
}

#[test]
fn grafana_is_provisioned_against_the_prometheus_api() {
    let compose = read("docker-compose.yml");
    assert!(compose.contains("  grafana:\n    image: grafana/grafana-oss:11."));
    assert!(compose.contains("./deploy/grafana/provisioning:/etc/grafana/provisioning:ro"));
    assert!(
        compose.contains("./deploy/grafana/dashboards:/var/lib/grafana/dashboards/metricgate:ro")
    );
    assert!(compose.contains("\"127.0.0.1:3000:3000\""));

    // The data source is Grafana's own Prometheus type, at the gateway's prefix, behind the
    // balancer, with the appliance's one-minute resolution as its smallest step.
    let datasource = read("deploy/grafana/provisioning/datasources/metricgate.yml");
    let prefix = metricgate::api::prometheus::PREFIX
        .strip_suffix("/api/v1")
        .unwrap();
    assert!(datasource.contains(&format!("url: http://balancer:8080{prefix}\n")));
    assert!(datasource.contains("type: prometheus\n"));
    assert!(datasource.contains("uid: metricgate\n"));
    assert!(datasource.contains("timeInterval: 1m\n"));
    assert!(datasource.contains("httpMethod: POST\n"));
    let provider = read("deploy/grafana/provisioning/dashboards/metricgate.yml");
    assert!(provider.contains("path: /var/lib/grafana/dashboards/metricgate\n"));

    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/darktrace.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert_eq!(panels.len(), 18);
    // Grafana's layout: unique panel ids, and grid cells (24 columns) no two panels share.
    let mut ids = HashSet::new();
    let mut cells = HashSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{}",
            panel["title"]
        );
        let at = |k: &str| panel["gridPos"][k].as_u64().unwrap();
        assert!(at("x") + at("w") <= 24, "{}", panel["title"]);
        for x in at("x")..at("x") + at("w") {
            for y in at("y")..at("y") + at("h") {
                assert!(
                    cells.insert((x, y)),
                    "{} overlaps another panel",
                    panel["title"]
                );
            }
        }
    }
    for panel in panels {
        assert_eq!(
            panel["datasource"]["uid"], "metricgate",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "metricgate");
        }
    }
    // The fleet first (appliance), then its devices (did); "All" appliances is `.*`.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let names: Vec<&str> = variables
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["appliance", "did"]);
    let (appliance, variable) = (&variables[0], &variables[1]);
    assert_eq!(appliance["query"]["query"], "label_values(appliance)");
    assert_eq!(appliance["datasource"]["uid"], "metricgate");
    assert_eq!(appliance["multi"], true);
    assert_eq!(appliance["includeAll"], true);
    assert_eq!(appliance["allValue"], ".*");
    assert_eq!(variable["query"]["query"], "label_values(did)");
    // Every selector of every query keeps to the picked appliances.
    for (name, expr) in raw_dashboard_queries() {
        let selectors = expr.matches('{').count();
        assert!(selectors > 0, "{name}: {expr} has no selector");
        assert_eq!(
            expr.matches("appliance=~\"$appliance\"").count(),
            selectors,
            "{name}: {expr}"
        );
    }
    let breaches = &dashboard["annotations"]["list"][1];
    assert_eq!(breaches["datasource"]["uid"], "metricgate");
    assert!(
        breaches["expr"]
            .as_str()
            .unwrap()
            .starts_with("darktrace_model_breach{")
    );
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    // The seed's analyses: bytes per connection, each device's share, minutes above a
    // threshold, the top consumers, volatility and the range over the hour.
    for needed in [
        "Connections",
        "Bandwidth",
        "Model breaches",
        "Bytes per connection",
        "Share of connections",
        "Minutes above",
        "Top 3 bandwidth consumers",
        "volatility",
        "range (max - min)",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(needed)),
            "{needed}: {titles:?}"
        );
    }
    // Each query plans (the client test runs them all through promtool).
    let settings = metricgate::settings::Settings::defaults();
    let devices = metricgate::promql::KnownDevices::new(Vec::new);
    let ctx = metricgate::promql::Context {
        limits: &settings.query,
        names: &metricgate::query::AnyMetric,
        metrics: &[],
        devices: &devices,
        now_ms: 1_705_320_000_000,
        max_samples: settings.prometheus.max_samples.get(),
    };
    let at = metricgate::promql::At::Range {
        start: 1_705_298_400_000,
        end: 1_705_320_000_000,
        step: 60_000,
    };
    // All appliances, and two picked.
    for appliances in [".*", "(default|lab)"] {
        for (name, expr) in dashboard_queries_for("(101|102|103)", appliances) {
            let plan =
                metricgate::promql::Plan::new(&expr, at, &[("default", &ctx), ("lab", &ctx)]);
            assert!(plan.is_ok(), "{name}: {expr}: {:?}", plan.err());
        }
    }
}
