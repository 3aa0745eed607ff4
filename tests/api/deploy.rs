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
