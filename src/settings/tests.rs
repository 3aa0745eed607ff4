//! Loading, converting and checking settings.

use super::*;
use config::Environment;
use std::collections::HashMap;

fn env(vars: &[(&str, &str)]) -> Environment {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Environment::with_prefix("METRICGATE").source(Some(map))
}

#[test]
fn defaults_parse() {
    let s = Settings::defaults();
    assert_eq!(s.query.default_interval_seconds.get(), 60);
}

#[test]
fn env_names_from_the_issue_work() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("priv");
    std::fs::write(&token_file, "s3cret-from-file\n").unwrap();
    let s = Settings::load_from(
        None,
        env(&[
            ("METRICGATE__SERVER__LISTEN", "127.0.0.1:9999"),
            ("METRICGATE__UPSTREAM__URL", "https://dt.example"),
            ("METRICGATE__UPSTREAM__PUBLIC_TOKEN", "12345"),
            (
                "METRICGATE__UPSTREAM__PRIVATE_TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
            ("METRICGATE__UPSTREAM__INSECURE_SKIP_VERIFY", "true"),
            ("METRICGATE__UPSTREAM__MAX_IN_FLIGHT", "3"),
            ("METRICGATE__UPSTREAM__PER_MINUTE", "30"),
            ("METRICGATE__RATE_LIMIT__PER_CLIENT_PER_MINUTE", "90"),
            ("METRICGATE__RATE_LIMIT__BURST", "7"),
            ("METRICGATE__PROMETHEUS__DEVICES", "123,456"),
            (
                "METRICGATE__RATE_LIMIT__TRUSTED_PROXIES",
                "10.0.0.0/8,192.168.1.1",
            ),
        ]),
    )
    .unwrap();
    assert_eq!(s.upstream.max_in_flight.get(), 3);
    assert_eq!(s.upstream.per_minute, 30);
    assert_eq!(s.rate_limit.per_client_per_minute.get(), 90);
    assert_eq!(s.rate_limit.burst.get(), 7);
    assert_eq!(s.prometheus.devices, [123, 456]);
    let proxies: Vec<String> = s
        .rate_limit
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "192.168.1.1/32"]);
    assert_eq!(s.server.listen, SocketAddr::from(([127, 0, 0, 1], 9999)));
    assert_eq!(s.upstream.url.as_str(), "https://dt.example");
    assert_eq!(s.upstream.public_token, "12345");
    assert_eq!(s.upstream.private_token.expose_secret(), "s3cret-from-file");
    assert!(s.upstream.insecure_skip_verify);
    assert!(!format!("{s:?}").contains("s3cret"));
}

#[test]
fn every_problem_is_reported() {
    let err = Settings::load_from(
        None,
        env(&[
            ("METRICGATE__SERVER__LISTEN", "nonsense"),
            ("METRICGATE__UPSTREAM__CA_FILE", "/nonexistent/ca.pem"),
            ("METRICGATE__UPSTREAM__PIN_SHA256", "sha256//tooshort"),
            ("METRICGATE__QUERY__MAX_POINTS", "0"),
            ("METRICGATE__RATE_LIMIT__TRUSTED_PROXIES", "10.0.0.0/33"),
        ]),
    )
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "server.listen",
        "upstream.url",
        "upstream.public_token",
        "upstream.private_token",
        "upstream.ca_file",
        "upstream.pin_sha256",
        "query.max_points",
        "rate_limit.trusted_proxies",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn a_pin_needs_verification_on() {
    let err = Settings::load_from(
        None,
        env(&[
            ("METRICGATE__UPSTREAM__URL", "https://dt.example"),
            ("METRICGATE__UPSTREAM__PUBLIC_TOKEN", "12345"),
            ("METRICGATE__UPSTREAM__PRIVATE_TOKEN", "s3cret"),
            ("METRICGATE__UPSTREAM__INSECURE_SKIP_VERIFY", "true"),
            (
                "METRICGATE__UPSTREAM__PIN_SHA256",
                "sha256//7svNiXd7VHL0AUMOV4Lc4Ozl82xktVnfbNf0Dt2byds=",
            ),
        ]),
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.to_string().contains("upstream.pin_sha256"), "{err}");
}

#[test]
fn the_admin_endpoints_are_never_left_open_on_the_main_port() {
    let base = [
        ("METRICGATE__UPSTREAM__URL", "https://dt.example"),
        ("METRICGATE__UPSTREAM__PUBLIC_TOKEN", "12345"),
        ("METRICGATE__UPSTREAM__PRIVATE_TOKEN", "s3cret"),
    ];
    let load = |extra: &[(&str, &str)]| {
        let mut vars = base.to_vec();
        vars.extend_from_slice(extra);
        Settings::load_from(None, env(&vars))
    };
    let s = load(&[]).unwrap();
    assert_eq!(
        s.admin.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 8081)))
    );
    let err = load(&[("METRICGATE__ADMIN__LISTEN", "")]).unwrap_err();
    assert!(err.to_string().contains("admin.token"), "{err}");
    let err = load(&[("METRICGATE__ADMIN__LISTEN", "127.0.0.1:8080")]).unwrap_err();
    assert!(err.to_string().contains("equals server.listen"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin");
    std::fs::write(&token_file, "admin-secret\n").unwrap();
    let s = load(&[
        ("METRICGATE__ADMIN__LISTEN", ""),
        (
            "METRICGATE__ADMIN__TOKEN_FILE",
            token_file.to_str().unwrap(),
        ),
    ])
    .unwrap();
    assert_eq!(s.admin.listen, None);
    assert_eq!(s.admin.token.expose_secret(), "admin-secret");
    assert!(!format!("{s:?}").contains("admin-secret"));
    let err = load(&[
        ("METRICGATE__ADMIN__TOKEN", "x"),
        (
            "METRICGATE__ADMIN__TOKEN_FILE",
            token_file.to_str().unwrap(),
        ),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("both set"), "{err}");
    let err = load(&[
        ("METRICGATE__UPSTREAM__PER_MINUTE", "1"),
        ("METRICGATE__RATE_LIMIT__PER_IP_BURST", "0"),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("upstream.per_minute"), "{err}");
    assert!(err.to_string().contains("rate_limit.per_ip_burst"), "{err}");
}

/// The variables every valid load needs.
const REQUIRED: [(&str, &str); 3] = [
    ("METRICGATE__UPSTREAM__URL", "https://dt.example"),
    ("METRICGATE__UPSTREAM__PUBLIC_TOKEN", "12345"),
    ("METRICGATE__UPSTREAM__PRIVATE_TOKEN", "s3cret"),
];

fn load(extra: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let mut vars = REQUIRED.to_vec();
    vars.extend_from_slice(extra);
    Settings::load_from(None, env(&vars))
}

#[test]
fn client_keys_are_sha256_digests() {
    let err = load(&[(
        "METRICGATE__RATE_LIMIT__CLIENTS__DASH__KEY_SHA256",
        "not-hex",
    )])
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("rate_limit.clients.dash.key_sha256: not 64 hex digits"),
        "{err}"
    );
    const UPPER: &str = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
    let s = load(&[("METRICGATE__RATE_LIMIT__CLIENTS__DASH__KEY_SHA256", UPPER)]).unwrap();
    let digest = s.rate_limit.clients["dash"].key_sha256;
    assert_eq!(hex::encode(digest.0), UPPER.to_lowercase());
}

#[test]
fn string_settings_keep_their_digits() {
    // Environment values are text: a pin or token made only of digits is not a number.
    let zeros = "0".repeat(64);
    let s = load(&[
        ("METRICGATE__UPSTREAM__PIN_SHA256", &zeros),
        ("METRICGATE__UPSTREAM__PUBLIC_TOKEN", "000123"),
        ("METRICGATE__REDIS__PREFIX", "007"),
        ("METRICGATE__ADMIN__TOKEN", "0042"),
    ])
    .unwrap();
    assert_eq!(
        s.upstream.pin_sha256,
        [crate::pin::Pin::parse(&zeros).unwrap()]
    );
    assert_eq!(s.upstream.public_token, "000123");
    assert_eq!(s.redis.prefix, "007");
    assert_eq!(s.admin.token.expose_secret(), "0042");
    // Numbers, booleans, enums, lists and maps still come from text.
    let s = load(&[
        ("METRICGATE__SERVER__WORKERS", "3"),
        ("METRICGATE__SERVER__ACCESS_LOG", "errors"),
        ("METRICGATE__UPSTREAM__MAX_RESPONSE_BYTES", "0001024"),
        ("METRICGATE__SEGMENTS__PREFETCH", "false"),
        ("METRICGATE__CACHE__MAX_BYTES", "18446744073709551615"),
        ("METRICGATE__PROMETHEUS__DEVICES", " 7, 0042 "),
        ("METRICGATE__RATE_LIMIT__TRUSTED_PROXIES", ""),
        ("METRICGATE__RATE_LIMIT__OVERRIDES__DASH__PER_MINUTE", "60"),
        ("METRICGATE__RATE_LIMIT__OVERRIDES__DASH__BURST", "5"),
    ])
    .unwrap();
    assert_eq!(s.server.workers, 3);
    assert_eq!(s.server.access_log, AccessLogMode::Errors);
    assert_eq!(s.upstream.max_response_bytes.get(), 1024);
    assert!(!s.segments.prefetch);
    assert_eq!(s.cache.max_bytes.get(), u64::MAX);
    assert_eq!(s.prometheus.devices, [7, 42]);
    assert!(s.rate_limit.trusted_proxies.is_empty());
    assert_eq!(
        s.rate_limit.overrides["dash"],
        ClientQuota {
            per_minute: 60,
            burst: 5
        }
    );
    let err = load(&[("METRICGATE__SERVER__WORKERS", "three")]).unwrap_err();
    assert!(err.to_string().contains("workers"), "{err}");
}

#[test]
fn a_file_sets_typed_values_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metricgate.toml");
    std::fs::write(
        &file,
        r#"
[upstream]
url = "https://dt.example/base/"
public_token = "p"
private_token = "q"
pin_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[rate_limit]
client_header = "X-Team"
trusted_proxies = ["10.0.0.0/8", "::1"]
[prometheus]
devices = [1, 2]
"#,
    )
    .unwrap();
    let s = Settings::load_from(Some(&file), env(&[])).unwrap();
    assert_eq!(s.upstream.url.as_str(), "https://dt.example/base/");
    assert_eq!(s.upstream.url.base().as_str(), "https://dt.example/base");
    assert_eq!(s.upstream.pin_sha256.len(), 1);
    assert_eq!(s.rate_limit.client_header.as_str(), "x-team");
    assert_eq!(s.rate_limit.trusted_proxies.len(), 2);
    assert_eq!(s.prometheus.devices, [1, 2]);
}

#[test]
fn bad_values_are_refused_all_at_once_by_name_never_replaced() {
    let err = load(&[
        ("METRICGATE__SERVER__LISTEN", "localhost"),
        ("METRICGATE__ADMIN__LISTEN", "127.0.0.1"),
        ("METRICGATE__UPSTREAM__URL", "ftp://dt.example"),
        (
            "METRICGATE__UPSTREAM__PRIVATE_TOKEN_FILE",
            "/nonexistent/token",
        ),
        ("METRICGATE__RATE_LIMIT__CLIENT_HEADER", "x client id"),
        (
            "METRICGATE__RATE_LIMIT__TRUSTED_PROXIES",
            "10.0.0.1,proxy.example",
        ),
        ("METRICGATE__RATE_LIMIT__CLIENTS__DASH__KEY_SHA256", "abc"),
        ("METRICGATE__PROMETHEUS__DEVICES", "12,x"),
        ("METRICGATE__CACHE__LIVE_TTL_SECS", "0"),
        ("METRICGATE__RATE_LIMIT__BURST", "0"),
        ("METRICGATE__UPSTREAM__TIMEOUT_MS", "0"),
        ("METRICGATE__ADMIN__TOKEN_FILE", "/nonexistent/admin"),
    ])
    .unwrap_err();
    let expected = [
        "server.listen: \"localhost\" is not an address",
        "admin.listen: \"127.0.0.1\" is not an address",
        "upstream.url: \"ftp://dt.example\" is not an http(s) URL",
        "upstream.private_token and upstream.private_token_file are both set",
        "rate_limit.client_header: \"x client id\" is not a header name",
        "rate_limit.trusted_proxies: \"proxy.example\" is not an IP address or CIDR",
        "rate_limit.clients.dash.key_sha256: not 64 hex digits",
        "prometheus.devices: \"x\" is not a device id",
        "cache.live_ttl_secs must be greater than 0",
        "rate_limit.burst must be greater than 0",
        "upstream.timeout_ms must be greater than 0",
        "admin.token_file: cannot read /nonexistent/admin",
    ];
    for needle in expected {
        assert!(
            err.0.iter().any(|line| line.contains(needle)),
            "{needle} missing from:\n{err}"
        );
    }
    assert_eq!(err.0.len(), expected.len(), "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");

    let err = load(&[("METRICGATE__UPSTREAM__URL", "https://dt.example/?a=1")]).unwrap_err();
    assert_eq!(err.0, ["upstream.url: it must not carry a query string"]);
}

#[test]
fn a_ca_file_is_read_once_and_must_hold_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let err = load(&[("METRICGATE__UPSTREAM__CA_FILE", empty.to_str().unwrap())]).unwrap_err();
    assert!(
        err.to_string().contains("holds no PEM certificate"),
        "{err}"
    );

    let cert = rcgen::generate_simple_self_signed(vec!["dt.example".into()]).unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, cert.cert.pem()).unwrap();
    let s = load(&[("METRICGATE__UPSTREAM__CA_FILE", pem.to_str().unwrap())]).unwrap();
    let ca = s.upstream.ca_file.unwrap();
    assert_eq!(ca.path, pem);
    assert_eq!(ca.certificates.len(), 1);
}

#[test]
fn settings_built_in_code_are_checked_like_loaded_ones() {
    let mut s = Settings::for_upstream("https://dt.example", "p", "q").unwrap();
    s.check().unwrap();
    s.upstream.per_minute = 1;
    s.admin.listen = Some(s.server.listen);
    let err = s.check().unwrap_err();
    assert!(err.to_string().contains("upstream.per_minute"), "{err}");
    assert!(err.to_string().contains("equals server.listen"), "{err}");
    let err = Settings::for_upstream("not a url", "", "").unwrap_err();
    assert_eq!(err.0.len(), 3, "{err}");
}

#[test]
fn unknown_keys_are_refused() {
    let err = Settings::load_from(None, env(&[("METRICGATE__UPSTREAM__URLL", "x")])).unwrap_err();
    assert!(err.to_string().contains("urll"), "{err}");
}

#[test]
fn a_count_of_zero_is_refused_by_name() {
    let err = load(&[
        ("METRICGATE__QUERY__MAX_METRICS", "0"),
        ("METRICGATE__QUERY__MAX_POINTS", "0"),
        ("METRICGATE__QUERY__MIN_INTERVAL_SECONDS", "0"),
        ("METRICGATE__CACHE__MAX_BYTES", "0"),
        ("METRICGATE__CACHE__LIVE_TTL_SECS", "0"),
        ("METRICGATE__SEGMENTS__POINTS", "0"),
        ("METRICGATE__SEGMENTS__MAX_CONCURRENT_FETCHES", "0"),
        ("METRICGATE__UPSTREAM__QUEUE_WAIT_SECS", "0"),
    ])
    .unwrap_err()
    .to_string();
    for name in [
        "query.max_metrics",
        "query.max_points",
        "query.min_interval_seconds",
        "cache.max_bytes",
        "cache.live_ttl_secs",
        "segments.points",
        "segments.max_concurrent_fetches",
        "upstream.queue_wait_secs",
    ] {
        assert!(
            err.contains(&format!("{name} must be greater than 0")),
            "{err}"
        );
    }
}

#[test]
fn a_redis_url_is_parsed_at_load_and_never_shows_its_password() {
    let err = load(&[("METRICGATE__REDIS__URL", "http://not-redis")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("redis.url: not a Redis URL"), "{err}");
    let s = load(&[(
        "METRICGATE__REDIS__URL",
        "redis://:hunter2@cache.internal:6379/0",
    )])
    .unwrap();
    let url = s.redis.url.clone().expect("a Redis URL");
    assert_eq!(url.as_str(), "redis://:hunter2@cache.internal:6379/0");
    let shown = format!("{s:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("cache.internal:6379/0"), "{shown}");
    assert!(
        load(&[]).unwrap().redis.url.is_none(),
        "empty: embedded mode"
    );
    let unix = load(&[(
        "METRICGATE__REDIS__URL",
        "unix:///run/redis.sock?pass=hunter3",
    )])
    .unwrap();
    let shown = format!("{:?}", unix.redis);
    assert!(!shown.contains("hunter3"), "{shown}");
}

#[test]
fn a_log_level_that_is_no_filter_is_refused_by_name() {
    let err = load(&[("METRICGATE__SERVER__LOG_LEVEL", "loud[")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.log_level"), "{err}");
    assert!(load(&[("METRICGATE__SERVER__LOG_LEVEL", "metricgate=debug,info")]).is_ok());
}

#[test]
fn appliances_by_name_take_what_they_leave_out_from_upstream() {
    let s = Settings::load_from(
        None,
        env(&[
            ("METRICGATE__UPSTREAM__PER_MINUTE", "60"),
            ("METRICGATE__APPLIANCES__EMEA__URL", "https://emea.example"),
            ("METRICGATE__APPLIANCES__EMEA__PUBLIC_TOKEN", "pe"),
            ("METRICGATE__APPLIANCES__EMEA__PRIVATE_TOKEN", "se"),
            ("METRICGATE__APPLIANCES__EMEA__LABEL", "EMEA master"),
            ("METRICGATE__APPLIANCES__EMEA__DEFAULT", "true"),
            ("METRICGATE__APPLIANCES__AMER__URL", "https://amer.example"),
            ("METRICGATE__APPLIANCES__AMER__PUBLIC_TOKEN", "pa"),
            ("METRICGATE__APPLIANCES__AMER__PRIVATE_TOKEN", "sa"),
            ("METRICGATE__APPLIANCES__AMER__PER_MINUTE", "30"),
        ]),
    )
    .unwrap();
    let fleet = s.fleet();
    let names: Vec<&str> = fleet.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["amer", "emea"],
        "no short form without upstream.url"
    );
    assert_eq!(fleet[0].upstream.per_minute, 30, "its own");
    assert_eq!(fleet[1].upstream.per_minute, 60, "upstream's");
    assert_eq!(fleet[1].label.as_deref(), Some("EMEA master"));
    assert_eq!(fleet[1].upstream.url.as_str(), "https://emea.example");
    assert_eq!(s.default_appliance().unwrap().as_str(), "emea");
}

#[test]
fn the_short_form_is_the_default_appliance_and_problems_name_each_table() {
    let s = Settings::load_from(
        None,
        env(&[
            ("METRICGATE__UPSTREAM__URL", "https://dt.example"),
            ("METRICGATE__UPSTREAM__PUBLIC_TOKEN", "p"),
            ("METRICGATE__UPSTREAM__PRIVATE_TOKEN", "s"),
            ("METRICGATE__APPLIANCES__LAB__URL", "https://lab.example"),
            ("METRICGATE__APPLIANCES__LAB__PUBLIC_TOKEN", "pl"),
            ("METRICGATE__APPLIANCES__LAB__PRIVATE_TOKEN", "sl"),
        ]),
    )
    .unwrap();
    let names: Vec<String> = s.fleet().iter().map(|a| a.name.to_string()).collect();
    assert_eq!(names, ["default", "lab"]);
    assert_eq!(s.default_appliance().unwrap().as_str(), "default");

    let err = Settings::load_from(
        None,
        env(&[
            ("METRICGATE__APPLIANCES__EMEA__URL", "ftp://emea.example"),
            ("METRICGATE__APPLIANCES__EMEA__DEFAULT", "true"),
            ("METRICGATE__APPLIANCES__AMER__PUBLIC_TOKEN", "pa"),
            ("METRICGATE__APPLIANCES__AMER__DEFAULT", "true"),
            ("METRICGATE__APPLIANCES__AMER__PER_MINUTE", "1"),
        ]),
    )
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "appliances.emea.url: \"ftp://emea.example\"",
        "appliances.emea.public_token is required (METRICGATE__APPLIANCES__EMEA__PUBLIC_TOKEN)",
        "appliances.amer.url is required",
        "is the default already",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(!text.contains("upstream.url"), "{text}");
}
