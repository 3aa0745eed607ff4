//! TLS to the appliance: the simulator serves HTTPS with certificates made here (rcgen), and
//! the gateway trusts what `upstream.ca_file` and `upstream.pin_sha256` say, and nothing else.

use base64::Engine as _;
use metricgate::pin::parse_pins;
use metricgate::settings::{CaFile, Settings};
use metricgate::sim::Simulator;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, Issuer, KeyPair,
    PublicKeyData as _,
};
use serde_json::Value;

use crate::helpers::{PRIVATE, PUBLIC, TestApp, spawn_app_against};

const Q: &str =
    "/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";

/// A certificate the simulator serves, with its key, and how the tests trust it.
struct Served {
    chain_pem: String,
    key_pem: String,
    /// The server's certificate alone.
    cert_pem: String,
    /// `sha256//` and the base64 SHA-256 of its SubjectPublicKeyInfo.
    spki_pin: String,
    /// Hex SHA-256 of the whole certificate (DER).
    cert_hex: String,
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

impl Served {
    fn new(cert: &Certificate, key: &KeyPair, chain: &[&Certificate]) -> Self {
        let mut chain_pem = cert.pem();
        for c in chain {
            chain_pem.push_str(&c.pem());
        }
        Served {
            chain_pem,
            key_pem: key.serialize_pem(),
            cert_pem: cert.pem(),
            spki_pin: format!(
                "sha256//{}",
                base64::engine::general_purpose::STANDARD
                    .encode(sha256(&key.subject_public_key_info()))
            ),
            cert_hex: hex::encode(sha256(cert.der())),
        }
    }
}

/// A CA, which signs leaves.
struct Ca {
    cert: Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "metricgate test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names`, signed by this CA, served with the CA after it.
    fn leaf(&self, names: &[&str], adjust: impl FnOnce(&mut CertificateParams)) -> Served {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Served::new(&cert, &key, &[&self.cert])
    }
}

/// What `openssl req -x509 -subj /CN=…` makes: self-signed, a CA, no subjectAltName.
fn self_signed_ca() -> Served {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "dt-appliance.lab");
    let cert = params.self_signed(&key).unwrap();
    Served::new(&cert, &key, &[])
}

/// A self-signed leaf (not a CA), named for another host than the one the gateway dials.
fn self_signed_leaf(adjust: impl FnOnce(&mut CertificateParams)) -> Served {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["dt-appliance.lab".to_owned()]).unwrap();
    adjust(&mut params);
    let cert = params.self_signed(&key).unwrap();
    Served::new(&cert, &key, &[])
}

fn expired(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
}

/// How the gateway dials the simulator.
#[derive(Clone, Copy)]
enum Host {
    Ip,
    Localhost,
}

/// Where the PEM files the gateway reads live while a test runs.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Files(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, pem: &str) -> String {
        let path = self.0.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

/// The simulator serving `served` over HTTPS, and a gateway in front of it, dialling `host`.
async fn gateway(served: &Served, host: Host, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let sim = Simulator::spawn_tls(
        "127.0.0.1:0",
        PUBLIC,
        PRIVATE,
        &served.chain_pem,
        &served.key_pem,
    )
    .expect("simulator binds");
    let url = match host {
        Host::Ip => sim.url(),
        Host::Localhost => format!("https://localhost:{}", sim.addr.port()),
    };
    assert!(url.starts_with("https://"), "{url}");
    spawn_app_against(sim, |s| {
        s.upstream.url = url.parse().unwrap();
        adjust(s);
    })
    .await
}

async fn assert_trusted(app: &TestApp) {
    app.ready().await;
    let answer = app.get(Q).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(app.upstream_metricdata(), 1);
}

/// Refused: a 502 to the caller, nothing reached the simulator, and `/readyz` says why, with
/// the presented certificate's pin and the way to trust it.
async fn assert_refused(app: &TestApp, served: &Served, reason: &str) -> String {
    let answer = app.get(Q).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert_eq!(
        answer.body["type"], "urn:metricgate:problem:appliance-untrusted",
        "{}",
        answer.body
    );
    assert_eq!(app.sim.stats.snapshot().requests, 0);
    assert_eq!(app.upstream_metricdata(), 0);
    let reasons = readiness_reasons(app).await;
    let appliance = reasons
        .iter()
        .find(|r| r.starts_with("appliance: "))
        .unwrap_or_else(|| panic!("no appliance reason in {reasons:?}"))
        .clone();
    for needle in [
        "TLS certificate is refused",
        reason,
        served.spki_pin.as_str(),
    ] {
        assert!(
            appliance.contains(needle),
            "{needle:?} missing from {appliance:?}"
        );
    }
    assert!(
        !appliance.contains(PRIVATE),
        "the private token leaked: {appliance}"
    );
    appliance
}

/// `/readyz`'s reasons once the appliance has been probed.
async fn readiness_reasons(app: &TestApp) -> Vec<String> {
    for _ in 0..150 {
        let body: Value = app
            .http
            .get(format!("{}/readyz", app.admin_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !body["appliance"].is_null() {
            assert_eq!(body["ready"], false, "{body}");
            return body["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the appliance was never probed");
}

#[tokio::test]
async fn a_ca_signed_certificate_is_trusted_with_its_ca_in_ca_file() {
    let ca = Ca::new();
    let served = ca.leaf(&["localhost", "127.0.0.1"], |_| {});
    let files = Files::new();
    let ca_file = files.write("ca.pem", &ca.cert.pem());
    for host in [Host::Ip, Host::Localhost] {
        let app = gateway(&served, host, |s| {
            s.upstream.ca_file = Some(CaFile::read(&ca_file).unwrap())
        })
        .await;
        assert_trusted(&app).await;
    }
}

#[tokio::test]
async fn a_ca_signed_certificate_without_its_ca_is_an_unknown_issuer() {
    let served = Ca::new().leaf(&["localhost", "127.0.0.1"], |_| {});
    let app = gateway(&served, Host::Ip, |_| {}).await;
    let reason = assert_refused(&app, &served, "unknown issuer").await;
    assert!(
        reason.contains(&format!(
            "set upstream.pin_sha256 = \"{}\"",
            served.spki_pin
        )),
        "{reason}"
    );
    assert!(reason.contains("upstream.ca_file"), "{reason}");
}

#[tokio::test]
async fn a_self_signed_ca_certificate_is_trusted_as_its_own_ca_file_by_ip_and_name() {
    let served = self_signed_ca();
    let files = Files::new();
    let ca_file = files.write("appliance.pem", &served.cert_pem);
    for host in [Host::Ip, Host::Localhost] {
        let app = gateway(&served, host, |s| {
            s.upstream.ca_file = Some(CaFile::read(&ca_file).unwrap())
        })
        .await;
        assert_trusted(&app).await;
    }
}

#[tokio::test]
async fn a_self_signed_ca_certificate_not_in_ca_file_is_refused_with_its_pin() {
    let served = self_signed_ca();
    let app = gateway(&served, Host::Ip, |_| {}).await;
    assert_refused(&app, &served, "CA certificate").await;
}

#[tokio::test]
async fn a_self_signed_leaf_is_trusted_as_its_own_ca_file_by_ip_and_name() {
    let served = self_signed_leaf(|_| {});
    let files = Files::new();
    let ca_file = files.write("appliance.pem", &served.cert_pem);
    for host in [Host::Ip, Host::Localhost] {
        let app = gateway(&served, host, |s| {
            s.upstream.ca_file = Some(CaFile::read(&ca_file).unwrap())
        })
        .await;
        assert_trusted(&app).await;
    }
}

#[tokio::test]
async fn a_ca_signed_certificate_for_another_host_name_is_refused() {
    let ca = Ca::new();
    let served = ca.leaf(&["dt-appliance.lab"], |_| {});
    let files = Files::new();
    let ca_file = files.write("ca.pem", &ca.cert.pem());
    for host in [Host::Ip, Host::Localhost] {
        let app = gateway(&served, host, |s| {
            s.upstream.ca_file = Some(CaFile::read(&ca_file).unwrap())
        })
        .await;
        let reason = assert_refused(&app, &served, "host name mismatch").await;
        assert!(reason.contains("dt-appliance.lab"), "{reason}");
    }
}

#[tokio::test]
async fn an_expired_certificate_is_refused_even_when_trusted_explicitly() {
    let ca = Ca::new();
    let files = Files::new();
    let ca_signed = ca.leaf(&["localhost", "127.0.0.1"], expired);
    let ca_file = files.write("ca.pem", &ca.cert.pem());
    let app = gateway(&ca_signed, Host::Ip, |s| {
        s.upstream.ca_file = Some(CaFile::read(&ca_file).unwrap())
    })
    .await;
    let reason = assert_refused(&app, &ca_signed, "expired").await;
    assert!(reason.contains("renew"), "{reason}");

    let self_signed = self_signed_leaf(expired);
    let own = files.write("appliance.pem", &self_signed.cert_pem);
    let app = gateway(&self_signed, Host::Ip, |s| {
        s.upstream.ca_file = Some(CaFile::read(&own).unwrap())
    })
    .await;
    assert_refused(&app, &self_signed, "expired (2021-01-01 00:00:00 UTC)").await;

    let pin = self_signed.spki_pin.clone();
    let app = gateway(&self_signed, Host::Ip, |s| {
        s.upstream.pin_sha256 = parse_pins(&pin).unwrap()
    })
    .await;
    assert_refused(&app, &self_signed, "expired").await;
}

#[tokio::test]
async fn a_pinned_certificate_is_trusted_without_a_ca_by_key_or_whole_certificate() {
    let served = self_signed_ca();
    let other = format!("sha256//{}", "A".repeat(43) + "=");
    for pin in [
        served.spki_pin.clone(),
        served.cert_hex.clone(),
        format!("{other}, {}", served.spki_pin),
    ] {
        for host in [Host::Ip, Host::Localhost] {
            let pin = pin.clone();
            let app = gateway(&served, host, |s| {
                s.upstream.pin_sha256 = parse_pins(&pin).unwrap()
            })
            .await;
            assert_trusted(&app).await;
        }
    }
}

#[tokio::test]
async fn a_certificate_other_than_the_pinned_one_is_refused_even_if_a_ca_vouches_for_it() {
    let ca = Ca::new();
    let served = ca.leaf(&["localhost", "127.0.0.1"], |_| {});
    let pinned = self_signed_leaf(|_| {});
    let files = Files::new();
    let ca_file = files.write("ca.pem", &ca.cert.pem());
    let app = gateway(&served, Host::Ip, |s| {
        s.upstream.ca_file = Some(CaFile::read(&ca_file).unwrap());
        s.upstream.pin_sha256 = parse_pins(&pinned.spki_pin).unwrap();
    })
    .await;
    let reason = assert_refused(&app, &served, "pin mismatch").await;
    assert!(!reason.contains(&pinned.spki_pin), "{reason}");
    // A setting to fix, not a sick appliance: no retries, and the breaker stays closed.
    for _ in 0..8 {
        let answer = app.get(Q).await;
        assert_eq!(answer.status, 502, "{}", answer.body);
    }
    let readiness: Value = app
        .http
        .get(format!("{}/readyz", app.admin_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(readiness["breaker"], "closed", "{readiness}");
}

#[tokio::test]
async fn insecure_skip_verify_still_accepts_anything() {
    let served = self_signed_leaf(expired);
    let app = gateway(&served, Host::Ip, |s| {
        s.upstream.insecure_skip_verify = true
    })
    .await;
    assert_trusted(&app).await;
}

#[tokio::test]
async fn check_config_prints_the_refusal_and_the_pin() {
    let served = self_signed_ca();
    let sim = Simulator::spawn_tls(
        "127.0.0.1:0",
        PUBLIC,
        PRIVATE,
        &served.chain_pem,
        &served.key_pem,
    )
    .unwrap();
    let files = Files::new();
    let token = files.write("private", PRIVATE);
    let check = |vars: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_metricgate"));
        cmd.arg("check-config")
            .env("METRICGATE__CACHE__DIR", "")
            .env("METRICGATE__UPSTREAM__URL", sim.url())
            .env("METRICGATE__UPSTREAM__PUBLIC_TOKEN", PUBLIC)
            .env("METRICGATE__UPSTREAM__PRIVATE_TOKEN_FILE", &token);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd
    };
    let refused = tokio::task::spawn_blocking({
        let mut cmd = check(&[]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("CA certificate"), "{stderr}");
    assert!(
        stderr.contains(&format!("upstream.pin_sha256 = \"{}\"", served.spki_pin)),
        "{stderr}"
    );

    let trusted = tokio::task::spawn_blocking({
        let mut cmd = check(&[("METRICGATE__UPSTREAM__PIN_SHA256", &served.spki_pin)]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&trusted.stdout);
    assert!(
        trusted.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(stdout.contains(&served.spki_pin), "{stdout}");
    assert!(stdout.contains("configuration OK"), "{stdout}");

    let bad_pin = check(&[("METRICGATE__UPSTREAM__PIN_SHA256", "sha256//short")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad_pin.stderr);
    assert!(!bad_pin.status.success());
    assert_eq!(
        stderr.lines().filter(|l| l.contains("pin_sha256")).count(),
        1,
        "{stderr}"
    );
}

#[tokio::test]
async fn check_config_checks_each_appliance_and_names_its_own_settings() {
    let served = self_signed_ca();
    let emea = Simulator::spawn_tls(
        "127.0.0.1:0",
        "emea-public",
        "emea-private",
        &served.chain_pem,
        &served.key_pem,
    )
    .unwrap();
    let plain = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).unwrap();
    let check = |vars: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_metricgate"));
        cmd.arg("check-config")
            .env("METRICGATE__CACHE__DIR", "")
            .env("METRICGATE__UPSTREAM__URL", plain.url())
            .env("METRICGATE__UPSTREAM__PUBLIC_TOKEN", PUBLIC)
            .env("METRICGATE__UPSTREAM__PRIVATE_TOKEN", PRIVATE)
            .env("METRICGATE__APPLIANCES__EMEA__URL", emea.url())
            .env("METRICGATE__APPLIANCES__EMEA__PUBLIC_TOKEN", "emea-public")
            .env(
                "METRICGATE__APPLIANCES__EMEA__PRIVATE_TOKEN",
                "emea-private",
            );
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd
    };
    let refused = tokio::task::spawn_blocking({
        let mut cmd = check(&[]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stdout.contains("appliance default (upstream)"), "{stdout}");
    assert!(stderr.contains("appliance emea:"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "appliances.emea.pin_sha256 = \"{}\"",
            served.spki_pin
        )),
        "the fix names emea's own setting: {stderr}"
    );
    assert!(!stderr.contains("emea-private"), "{stderr}");

    let trusted = tokio::task::spawn_blocking({
        let mut cmd = check(&[("METRICGATE__APPLIANCES__EMEA__PIN_SHA256", &served.spki_pin)]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&trusted.stdout);
    assert!(
        trusted.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "appliance emea (appliances.emea): TLS OK: the appliance's certificate is trusted; its pin is {}",
            served.spki_pin
        )),
        "{stdout}"
    );
    assert!(stdout.contains("configuration OK"), "{stdout}");
}
