//! Typed settings: `config/default.toml`, then an optional file, then `METRICGATE__*` variables.
//!
//! Everything is checked once, at startup, so the rest of the code can trust it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The defaults, compiled in so `config/default.toml` is the single place they live.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub query: QueryLimits,
    pub cache: CacheSettings,
    pub rate_limit: RateLimitSettings,
    pub segments: SegmentSettings,
    pub redis: RedisSettings,
    pub prometheus: PrometheusSettings,
    /// Where these settings came from, so a reload reads the same sources again.
    #[serde(skip)]
    pub source: ConfigSource,
    pub admin: AdminSettings,
}

/// Where the operator's endpoints (`/internal/*`, detailed readiness) are served, and the
/// token that guards them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Address of the admin listener (loopback by default). Empty: the admin endpoints are
    /// served on `server.listen` instead, and `token` or `token_file` is required.
    pub listen: String,
    /// Bearer token the admin endpoints require (wherever they are served); compared in
    /// constant time. Never serialized.
    #[serde(skip_serializing)]
    pub token: SecretString,
    /// A file holding the admin token (trailing whitespace is trimmed). Set this or `token`.
    pub token_file: String,
}

/// The Prometheus-compatible API (`/prometheus`, for Grafana).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSettings {
    /// Device ids that `label_values(did)` lists even before an answer has named them
    /// (Grafana's device variables); devices seen in cached answers are listed anyway.
    pub devices: Vec<u64>,
}

/// Where a gateway's settings came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigSource {
    /// Built in code (`demo`, tests): there is nothing to read again.
    #[default]
    Built,
    /// `config/default.toml`, this file if any, then the environment.
    Loaded { file: Option<PathBuf> },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    pub timeout_ms: u64,
    /// Longest a replica waits for another replica's fetch (a live holder, still renewing its
    /// lock) before fetching itself.
    pub lock_ms: u64,
    /// TTL of a cross-replica fetch lock (answers, runs of segments), renewed every
    /// third of it while the fetch runs: a holder that dies costs the others about this long.
    pub lock_ttl_ms: u64,
    pub prefix: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSettings {
    pub enabled: bool,
    pub points: u64,
    pub max_bytes: u64,
    pub max_concurrent_fetches: usize,
    /// Most points per series one upstream request for missing segments may ask for: a long
    /// cold range is split, at segment boundaries, into requests of at most this many points.
    pub max_points_per_request: u64,
    /// Refresh the live tail of hot rolling windows (asked again and again, moving with now)
    /// in the background shortly before their next refresh, so that refresh is a hit.
    pub prefetch: bool,
    /// Most of the callers' appliance budget (`upstream.per_minute`, less the probes' share)
    /// prefetching may spend, in percent; it never queues ahead of a caller's miss.
    pub prefetch_budget_percent: u32,
    /// How long before a hot window's expected next refresh its live tail is fetched, in
    /// seconds (at most half the window's live period is used).
    pub prefetch_lead_secs: u64,
    /// A window nobody asked for during this many of its refresh periods is no longer
    /// prefetched.
    pub prefetch_idle_periods: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub per_client_per_minute: u32,
    pub burst: u32,
    pub client_header: String,
    pub trusted_proxies: Vec<String>,
    pub max_tracked_clients: usize,
    pub sweep_secs: u64,
    #[serde(default)]
    pub overrides: BTreeMap<String, ClientQuota>,
    /// Requests per minute from one client address, whatever client ids it sends (callers
    /// proven by a key are exempt): rotating ids gains nothing beyond it.
    pub per_ip_per_minute: u32,
    /// Requests one address may make at once, before `per_ip_per_minute` applies.
    pub per_ip_burst: u32,
    /// `Cache-Control: no-cache` refetches each caller may force per minute; beyond it the
    /// cached answer is served. Callers without a proven id are counted by address.
    pub no_cache_per_minute: u32,
    /// With Redis: requests a replica may serve for one caller (or one address's ceiling)
    /// before it settles them with Redis, at most a tenth of the burst. N replicas let a caller
    /// past its limit by at most N x that many requests; 1 decides every request in Redis.
    pub lease: u32,
    /// Client ids that must prove themselves with a key to use their own quota.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientKey>,
}

/// A client id's key: callers sending this id must send `Authorization: Bearer <key>`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKey {
    /// Lowercase or uppercase hex SHA-256 of the key (the key itself is never configured).
    pub key_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientQuota {
    pub per_minute: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    pub max_bytes: u64,
    pub historic_ttl_secs: u64,
    pub live_ttl_secs: u64,
    pub settle_secs: u64,
    pub stale_while_revalidate_secs: u64,
    pub stale_if_error_secs: u64,
    pub gzip_min_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    pub workers: usize,
    pub log_level: String,
    pub log_format: LogFormat,
    pub shutdown_grace_secs: u64,
    pub client_request_timeout_ms: u64,
    /// Which requests get an access line: `all`, `errors` (status 400 and above) or
    /// `sampled` (every error, and one success in `access_log_sample`).
    pub access_log: AccessLogMode,
    /// In `sampled` mode, one success in this many gets an access line.
    pub access_log_sample: u64,
    /// Most access lines written per second, whatever the mode; the rest are counted.
    pub access_log_max_per_second: u32,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogMode {
    All,
    Errors,
    Sampled,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    pub url: String,
    pub public_token: String,
    /// `SecretString` redacts itself in `Debug`, so settings can be logged whole. Never
    /// serialized.
    #[serde(skip_serializing)]
    pub private_token: SecretString,
    pub private_token_file: String,
    /// PEM certificates to trust: CAs, or the appliance's own certificate (self-signed or not),
    /// which is then trusted whatever host name or IP the URL uses.
    pub ca_file: String,
    /// SHA-256 pins, comma-separated (`sha256//<base64>`, base64 or hex), of the appliance's
    /// certificate or of its public key. When set, a matching certificate is trusted without a
    /// CA and any other is refused.
    pub pin_sha256: String,
    pub insecure_skip_verify: bool,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    pub max_response_bytes: usize,
    pub catalog_refresh_secs: u64,
    pub probe_secs: u64,
    pub probe_timeout_ms: u64,
    pub max_in_flight: usize,
    pub per_minute: u32,
    pub queue_timeout_ms: u64,
    pub retries: u32,
    pub retry_backoff_ms: u64,
    pub retry_budget_percent: u32,
    pub breaker_failures: u32,
    pub breaker_open_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueryLimits {
    pub max_metrics: usize,
    pub max_devices: usize,
    pub max_range_days: u64,
    pub max_points: u64,
    pub min_interval_seconds: u64,
    pub max_interval_seconds: u64,
    pub default_interval_seconds: u64,
}

/// Startup problems, one line each, all reported together.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct SettingsError(pub Vec<String>);

impl Settings {
    /// Layers the defaults, `file` (if any) and the environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, Environment::with_prefix("METRICGATE"))
    }

    fn load_from(file: Option<&Path>, env: Environment) -> Result<Self, SettingsError> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            if !path.exists() {
                return Err(SettingsError(vec![format!(
                    "config file {} does not exist",
                    path.display()
                )]));
            }
            builder = builder.add_source(File::from(path.to_path_buf()));
        }
        let env = env
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("rate_limit.trusted_proxies")
            .with_list_parse_key("prometheus.devices");
        let raw = builder
            .add_source(env)
            .build()
            .map_err(|e| SettingsError(vec![format!("configuration: {e}")]))?;
        let mut settings: Settings = raw
            .try_deserialize()
            .map_err(|e| SettingsError(vec![format!("configuration: {e}")]))?;
        settings.resolve_private_token()?;
        settings.resolve_admin_token()?;
        settings.validate()?;
        settings.source = ConfigSource::Loaded {
            file: file.map(Path::to_path_buf),
        };
        Ok(settings)
    }

    /// The same sources read again (the configuration file may have changed); `None` for
    /// settings built in code.
    pub fn reread(&self) -> Option<Result<Self, SettingsError>> {
        match &self.source {
            ConfigSource::Built => None,
            ConfigSource::Loaded { file } => Some(Self::load(file.as_deref())),
        }
    }

    fn resolve_private_token(&mut self) -> Result<(), SettingsError> {
        let inline = !self.upstream.private_token.expose_secret().is_empty();
        let file = &self.upstream.private_token_file;
        match (inline, file.is_empty()) {
            (true, false) => Err(SettingsError(vec![
                "upstream.private_token and upstream.private_token_file are both set; set one"
                    .into(),
            ])),
            (false, false) => match std::fs::read_to_string(file) {
                Ok(text) => {
                    self.upstream.private_token = SecretString::from(text.trim_end().to_owned());
                    Ok(())
                }
                Err(e) => Err(SettingsError(vec![format!(
                    "upstream.private_token_file: cannot read {file}: {e}"
                )])),
            },
            _ => Ok(()),
        }
    }

    fn resolve_admin_token(&mut self) -> Result<(), SettingsError> {
        let inline = !self.admin.token.expose_secret().is_empty();
        let file = &self.admin.token_file;
        match (inline, file.is_empty()) {
            (true, false) => Err(SettingsError(vec![
                "admin.token and admin.token_file are both set; set one".into(),
            ])),
            (false, false) => match std::fs::read_to_string(file) {
                Ok(text) => {
                    self.admin.token = SecretString::from(text.trim_end().to_owned());
                    Ok(())
                }
                Err(e) => Err(SettingsError(vec![format!(
                    "admin.token_file: cannot read {file}: {e}"
                )])),
            },
            _ => Ok(()),
        }
    }

    /// Checks every setting and reports every problem, not just the first.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let mut problems = Vec::new();
        if self.server.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.listen: {:?} is not an address such as 127.0.0.1:8080",
                self.server.listen
            ));
        }
        let up = &self.upstream;
        if up.url.is_empty() {
            problems.push("upstream.url is required (METRICGATE__UPSTREAM__URL)".into());
        } else {
            match reqwest::Url::parse(&up.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                    if url.query().is_some() {
                        problems.push("upstream.url must not carry a query string".into());
                    }
                }
                _ => problems.push(format!(
                    "upstream.url: {:?} is not an http(s) URL with a host",
                    up.url
                )),
            }
        }
        if up.public_token.is_empty() {
            problems.push(
                "upstream.public_token is required (METRICGATE__UPSTREAM__PUBLIC_TOKEN)".into(),
            );
        }
        if up.private_token.expose_secret().is_empty() {
            problems
                .push("upstream.private_token or upstream.private_token_file is required".into());
        }
        if !up.ca_file.is_empty() {
            match std::fs::read(&up.ca_file) {
                Ok(pem) => {
                    if reqwest::Certificate::from_pem_bundle(&pem).map_or(true, |c| c.is_empty()) {
                        problems.push(format!(
                            "upstream.ca_file: {} holds no PEM certificate",
                            up.ca_file
                        ));
                    }
                }
                Err(e) => {
                    problems.push(format!("upstream.ca_file: cannot read {}: {e}", up.ca_file))
                }
            }
        }
        if let Err(e) = crate::pin::parse_pins(&up.pin_sha256) {
            problems.push(format!("upstream.pin_sha256: {e}"));
        } else if up.insecure_skip_verify && !up.pin_sha256.trim().is_empty() {
            problems.push(
                "upstream.pin_sha256 and upstream.insecure_skip_verify are both set; a pin needs verification on"
                    .into(),
            );
        }
        positive(
            &mut problems,
            "upstream.connect_timeout_ms",
            up.connect_timeout_ms,
        );
        positive(&mut problems, "upstream.timeout_ms", up.timeout_ms);
        positive(
            &mut problems,
            "upstream.max_response_bytes",
            up.max_response_bytes as u64,
        );
        positive(
            &mut problems,
            "upstream.catalog_refresh_secs",
            up.catalog_refresh_secs,
        );
        let q = &self.query;
        positive(&mut problems, "query.max_metrics", q.max_metrics as u64);
        positive(&mut problems, "query.max_devices", q.max_devices as u64);
        positive(&mut problems, "query.max_range_days", q.max_range_days);
        positive(&mut problems, "query.max_points", q.max_points);
        positive(
            &mut problems,
            "query.min_interval_seconds",
            q.min_interval_seconds,
        );
        if q.min_interval_seconds > q.max_interval_seconds {
            problems.push("query.min_interval_seconds is above query.max_interval_seconds".into());
        }
        if !(q.min_interval_seconds..=q.max_interval_seconds).contains(&q.default_interval_seconds)
        {
            problems.push(
                "query.default_interval_seconds is outside min_interval_seconds..=max_interval_seconds"
                    .into(),
            );
        }
        if !q.default_interval_seconds.is_multiple_of(60) {
            problems.push(
                "query.default_interval_seconds must be a whole number of minutes (appliances keep one value per minute)"
                    .into(),
            );
        }
        let c = &self.cache;
        positive(&mut problems, "cache.max_bytes", c.max_bytes);
        positive(
            &mut problems,
            "cache.historic_ttl_secs",
            c.historic_ttl_secs,
        );
        positive(&mut problems, "cache.live_ttl_secs", c.live_ttl_secs);
        positive(&mut problems, "upstream.probe_secs", up.probe_secs);
        positive(&mut problems, "segments.points", self.segments.points);
        positive(&mut problems, "redis.timeout_ms", self.redis.timeout_ms);
        positive(&mut problems, "redis.lock_ms", self.redis.lock_ms);
        if self.redis.lock_ttl_ms < 30 {
            problems.push("redis.lock_ttl_ms: at least 30 (it is renewed every third)".into());
        }
        if !self.redis.url.is_empty() && redis::Client::open(self.redis.url.as_str()).is_err() {
            problems.push(format!(
                "redis.url: {:?} is not a redis:// URL",
                self.redis.url
            ));
        }
        positive(&mut problems, "segments.max_bytes", self.segments.max_bytes);
        if let Some(bad) = self
            .prometheus
            .devices
            .iter()
            .find(|d| !(1..=(1u64 << 53) - 1).contains(*d))
        {
            problems.push(format!(
                "prometheus.devices: {bad} is not a device id (1 to 2^53 - 1)"
            ));
        }
        positive(
            &mut problems,
            "segments.max_points_per_request",
            self.segments.max_points_per_request,
        );
        positive(
            &mut problems,
            "segments.max_concurrent_fetches",
            self.segments.max_concurrent_fetches as u64,
        );
        if self.segments.prefetch_budget_percent > 100 {
            problems.push("segments.prefetch_budget_percent must be 0 to 100".into());
        }
        positive(
            &mut problems,
            "segments.prefetch_idle_periods",
            u64::from(self.segments.prefetch_idle_periods),
        );
        positive(
            &mut problems,
            "upstream.probe_timeout_ms",
            up.probe_timeout_ms,
        );
        positive(
            &mut problems,
            "upstream.max_in_flight",
            up.max_in_flight as u64,
        );
        if up.per_minute < 2 {
            problems.push(
                "upstream.per_minute must be at least 2 (a tenth, at least one, is kept for readiness probes)"
                    .into(),
            );
        }
        positive(
            &mut problems,
            "upstream.queue_timeout_ms",
            up.queue_timeout_ms,
        );
        positive(
            &mut problems,
            "upstream.breaker_failures",
            up.breaker_failures.into(),
        );
        positive(
            &mut problems,
            "upstream.breaker_open_secs",
            up.breaker_open_secs,
        );
        let r = &self.rate_limit;
        positive(
            &mut problems,
            "rate_limit.per_client_per_minute",
            r.per_client_per_minute.into(),
        );
        positive(&mut problems, "rate_limit.burst", r.burst.into());
        positive(
            &mut problems,
            "rate_limit.max_tracked_clients",
            r.max_tracked_clients as u64,
        );
        positive(&mut problems, "rate_limit.sweep_secs", r.sweep_secs);
        positive(&mut problems, "rate_limit.lease", u64::from(r.lease));
        if actix_web::http::header::HeaderName::try_from(r.client_header.as_str()).is_err() {
            problems.push(format!(
                "rate_limit.client_header: {:?} is not a header name",
                r.client_header
            ));
        }
        for proxy in &r.trusted_proxies {
            if parse_proxy(proxy).is_none() {
                problems.push(format!(
                    "rate_limit.trusted_proxies: {proxy:?} is not an IP address or CIDR"
                ));
            }
        }
        positive(
            &mut problems,
            "rate_limit.per_ip_per_minute",
            r.per_ip_per_minute.into(),
        );
        positive(
            &mut problems,
            "rate_limit.per_ip_burst",
            r.per_ip_burst.into(),
        );
        for (client, key) in &r.clients {
            let hex = key.key_sha256.trim();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!(
                    "rate_limit.clients.{client}.key_sha256: not 64 hex digits (the SHA-256 of the key, e.g. from `printf %s KEY | sha256sum`)"
                ));
            }
        }
        self.validate_admin(&mut problems);
        if self.server.access_log_sample == 0 {
            problems.push("server.access_log_sample must be greater than 0".into());
        }
        positive(
            &mut problems,
            "server.access_log_max_per_second",
            self.server.access_log_max_per_second.into(),
        );
        for (client, quota) in &r.overrides {
            if quota.per_minute == 0 || quota.burst == 0 {
                problems.push(format!(
                    "rate_limit.overrides.{client}: per_minute and burst must be greater than 0"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SettingsError(problems))
        }
    }

    fn validate_admin(&self, problems: &mut Vec<String>) {
        let a = &self.admin;
        if a.listen.is_empty() {
            if a.token.expose_secret().is_empty() {
                problems.push(
                    "admin.listen is empty, so the admin endpoints are on server.listen: set admin.token or admin.token_file"
                        .into(),
                );
            }
            return;
        }
        match a.listen.parse::<SocketAddr>() {
            Err(_) => problems.push(format!(
                "admin.listen: {:?} is not an address such as 127.0.0.1:8081 (or empty)",
                a.listen
            )),
            Ok(addr) if addr.port() != 0 && Some(addr) == self.server.listen.parse().ok() => {
                problems.push(
                    "admin.listen equals server.listen; to serve the admin endpoints on the main port, set admin.listen = \"\" and admin.token"
                        .into(),
                )
            }
            Ok(_) => {}
        }
    }

    /// The admin listener's address; `None` when the admin endpoints share the main port.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.listen.parse().ok()
    }

    pub fn listen_addr(&self) -> SocketAddr {
        // validate() has checked it; fall back to loopback rather than panic.
        self.server
            .listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    /// Settings for a gateway in front of `upstream_url`, used by `demo` and the tests.
    pub fn for_upstream(upstream_url: &str, public: &str, private: &str) -> Self {
        let mut settings = Self::defaults();
        settings.upstream.url = upstream_url.to_owned();
        settings.upstream.public_token = public.to_owned();
        settings.upstream.private_token = SecretString::from(private.to_owned());
        settings
    }

    /// The compiled-in defaults, unvalidated (the upstream is still empty).
    pub fn defaults() -> Self {
        Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize)
            .unwrap_or_else(|e| panic!("config/default.toml is invalid: {e}"))
    }

    pub fn ca_path(&self) -> Option<PathBuf> {
        (!self.upstream.ca_file.is_empty()).then(|| PathBuf::from(&self.upstream.ca_file))
    }
}

fn positive(problems: &mut Vec<String>, name: &str, value: u64) {
    if value == 0 {
        problems.push(format!("{name} must be greater than 0"));
    }
}

/// An IP address or CIDR, as `rate_limit.trusted_proxies` holds them.
pub fn parse_proxy(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(s.query.default_interval_seconds, 60);
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
        assert_eq!(s.upstream.max_in_flight, 3);
        assert_eq!(s.upstream.per_minute, 30);
        assert_eq!(s.rate_limit.per_client_per_minute, 90);
        assert_eq!(s.rate_limit.burst, 7);
        assert_eq!(s.prometheus.devices, [123, 456]);
        assert_eq!(s.rate_limit.trusted_proxies, ["10.0.0.0/8", "192.168.1.1"]);
        assert_eq!(s.server.listen, "127.0.0.1:9999");
        assert_eq!(s.upstream.url, "https://dt.example");
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
            s.admin_addr(),
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
        assert_eq!(s.admin_addr(), None);
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

    #[test]
    fn client_keys_are_sha256_digests() {
        let mut s = Settings::for_upstream("https://dt.example", "p", "q");
        s.rate_limit.clients.insert(
            "dash".into(),
            ClientKey {
                key_sha256: "not-hex".into(),
            },
        );
        let err = s.validate().unwrap_err();
        assert!(
            err.to_string()
                .contains("rate_limit.clients.dash.key_sha256"),
            "{err}"
        );
        s.rate_limit.clients.insert(
            "dash".into(),
            ClientKey {
                key_sha256: "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
                    .into(),
            },
        );
        s.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err =
            Settings::load_from(None, env(&[("METRICGATE__UPSTREAM__URLL", "x")])).unwrap_err();
        assert!(err.to_string().contains("urll"), "{err}");
    }
}
