//! `metricgate check-config` as an operator meets it: every bad setting named at once, and
//! environment values taken as the text they are.

use std::process::{Command, Output};

fn check_config(vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metricgate"));
    cmd.arg("check-config");
    // Only this test's variables: a METRICGATE__* of the machine running the tests must not
    // change what is checked.
    for (key, _) in std::env::vars() {
        if key.starts_with("METRICGATE") {
            cmd.env_remove(key);
        }
    }
    // No disk tier unless a test asks for one: nothing written outside its own directories.
    cmd.env("METRICGATE__CACHE__DIR", "")
        .envs(vars.iter().copied())
        .output()
        .expect("the binary runs")
}

#[test]
fn check_config_names_an_unusable_cache_directory_and_its_setting() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    let bad = blocker.join("cache");
    let out = check_config(&[
        ("METRICGATE__UPSTREAM__URL", "http://127.0.0.1:9"),
        ("METRICGATE__UPSTREAM__PUBLIC_TOKEN", "p"),
        ("METRICGATE__UPSTREAM__PRIVATE_TOKEN", "never-shown-4f1c"),
        ("METRICGATE__CACHE__DIR", bad.to_str().unwrap()),
    ]);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cache.dir"), "{text}");
    assert!(text.contains(bad.to_str().unwrap()), "{text}");
    let good = dir.path().join("state");
    let out = check_config(&[
        ("METRICGATE__UPSTREAM__URL", "http://127.0.0.1:9"),
        ("METRICGATE__UPSTREAM__PUBLIC_TOKEN", "p"),
        ("METRICGATE__UPSTREAM__PRIVATE_TOKEN", "never-shown-4f1c"),
        ("METRICGATE__CACHE__DIR", good.to_str().unwrap()),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("(cache.dir) is writable"), "{stdout}");
}

#[test]
fn check_config_names_every_bad_setting_at_once() {
    let out = check_config(&[
        ("METRICGATE__SERVER__LISTEN", "localhost:8080"),
        ("METRICGATE__UPSTREAM__URL", "https://dt.example/?x=1"),
        ("METRICGATE__UPSTREAM__PUBLIC_TOKEN", "p"),
        ("METRICGATE__UPSTREAM__PRIVATE_TOKEN", "never-shown-4f1c"),
        ("METRICGATE__RATE_LIMIT__CLIENT_HEADER", "x:client"),
        (
            "METRICGATE__RATE_LIMIT__TRUSTED_PROXIES",
            "10.0.0.0/8,10.0.0.0/33",
        ),
        ("METRICGATE__RATE_LIMIT__BURST", "0"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    for name in [
        "metricgate: server.listen: \"localhost:8080\" is not an address",
        "metricgate: upstream.url: it must not carry a query string",
        "metricgate: rate_limit.client_header: \"x:client\" is not a header name",
        "metricgate: rate_limit.trusted_proxies: \"10.0.0.0/33\" is not an IP address or CIDR",
        "metricgate: rate_limit.burst must be greater than 0",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(name)),
            "{name} missing:\n{stderr}"
        );
    }
    assert_eq!(lines.len(), 5, "{stderr}");
    assert!(!stderr.contains("never-shown"), "{stderr}");
}

#[test]
fn check_config_keeps_digit_strings_as_written() {
    // A hex pin of 64 zeros used to arrive as the number 0, then as the text "0".
    let zeros = "0".repeat(64);
    let out = check_config(&[
        ("METRICGATE__UPSTREAM__URL", "http://127.0.0.1:9"),
        ("METRICGATE__UPSTREAM__PUBLIC_TOKEN", "0012"),
        ("METRICGATE__UPSTREAM__PRIVATE_TOKEN", "0034"),
        ("METRICGATE__UPSTREAM__PIN_SHA256", &zeros),
        ("METRICGATE__UPSTREAM__MAX_IN_FLIGHT", "004"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("configuration OK"),
        "{stderr}"
    );
}
