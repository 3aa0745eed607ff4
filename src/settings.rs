//! Typed settings: `config/default.toml`, then an optional file, then `METRICGATE__*` variables.
//!
//! The sources are read into a private raw layer (text and numbers, as written), which is then
//! converted field by field into [`Settings`]: addresses, URLs, networks, header names, pins and
//! digests arrive parsed, so the code that uses them never parses again. Every problem is
//! reported at once, each with its setting's name. What a type cannot say (ranges, relations
//! between settings) is [`Settings::check`], run by every load.

mod appliances;
mod load;
mod raw;

pub use appliances::{ApplianceName, ApplianceSettings, DEFAULT_NAME, setting_prefix};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use crate::pin::Pin;

/// The defaults, compiled in so `config/default.toml` is the single place they live.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub server: ServerSettings,
    /// The short form's appliance (named `default`) when `upstream_is_appliance`, and what
    /// every `[appliances.*]` table leaves out.
    pub upstream: UpstreamSettings,
    /// Whether `[upstream]` is an appliance (it has a URL), or only lends its keys.
    pub upstream_is_appliance: bool,
    /// `[appliances.<name>]`, by name, each with every key resolved.
    pub appliances: Vec<ApplianceSettings>,
    /// The one marked `default = true`; see [`Settings::default_appliance`].
    pub default_appliance: Option<ApplianceName>,
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
#[derive(Debug, Clone, Serialize)]
pub struct AdminSettings {
    /// Address of the admin listener (loopback by default). `None` (configured as ""): the
    /// admin endpoints are served on `server.listen` instead, and a token is required.
    pub listen: Option<SocketAddr>,
    /// Bearer token the admin endpoints require (wherever they are served), read from
    /// `admin.token` or `admin.token_file`; compared in constant time. Never serialized.
    #[serde(skip_serializing)]
    pub token: SecretString,
    /// The file the token was read from, if any (a reload names it when it changes).
    pub token_file: Option<PathBuf>,
}

/// The Prometheus-compatible API (`/prometheus`, for Grafana).
#[derive(Debug, Clone, Serialize)]
pub struct PrometheusSettings {
    /// Device ids that `label_values(did)` lists even before an answer has named them
    /// (Grafana's device variables); devices seen in cached answers are listed anyway.
    pub devices: Vec<u64>,
    /// The most samples one PromQL query may hold at once (Prometheus'
    /// `--query.max-samples`); past it the query is refused with an `execution` error.
    pub max_samples: NonZeroUsize,
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

#[derive(Debug, Clone, Serialize)]
pub struct RedisSettings {
    /// `None` (empty in the file): embedded mode.
    pub url: Option<RedisUrl>,
    pub timeout_ms: NonZeroU64,
    /// Longest a replica waits for another replica's fetch (a live holder, still renewing its
    /// lock) before fetching itself.
    pub lock_ms: NonZeroU64,
    /// TTL of a cross-replica fetch lock (answers, runs of segments), renewed every
    /// third of it while the fetch runs: a holder that dies costs the others about this long.
    pub lock_ttl_ms: u64,
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentSettings {
    pub enabled: bool,
    pub points: NonZeroU64,
    pub max_bytes: NonZeroU64,
    pub max_concurrent_fetches: NonZeroUsize,
    /// Most points per series one upstream request for missing segments may ask for: a long
    /// cold range is split, at segment boundaries, into requests of at most this many points.
    pub max_points_per_request: NonZeroU64,
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
    pub prefetch_idle_periods: NonZeroU32,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateLimitSettings {
    pub per_client_per_minute: NonZeroU32,
    pub burst: NonZeroU32,
    /// Header by which callers identify themselves.
    pub client_header: ClientHeader,
    /// Proxies whose `X-Forwarded-For` is believed (a single address is its /32 or /128).
    #[serde(serialize_with = "as_strings")]
    pub trusted_proxies: Vec<IpNet>,
    pub max_tracked_clients: NonZeroUsize,
    pub sweep_secs: NonZeroU64,
    pub overrides: BTreeMap<String, ClientQuota>,
    /// Requests per minute from one client address, whatever client ids it sends (callers
    /// proven by a key are exempt): rotating ids gains nothing beyond it.
    pub per_ip_per_minute: NonZeroU32,
    /// Requests one address may make at once, before `per_ip_per_minute` applies.
    pub per_ip_burst: NonZeroU32,
    /// `Cache-Control: no-cache` refetches each caller may force per minute; beyond it the
    /// cached answer is served. Callers without a proven id are counted by address.
    pub no_cache_per_minute: u32,
    /// With Redis: requests a replica may serve for one caller (or one address's ceiling)
    /// before it settles them with Redis, at most a tenth of the burst. N replicas let a caller
    /// past its limit by at most N x that many requests; 1 decides every request in Redis.
    pub lease: NonZeroU32,
    /// Client ids that must prove themselves with a key to use their own quota (and, when
    /// they name some, to ask only their appliances).
    pub clients: BTreeMap<String, ClientKey>,
    /// The appliances callers without a proven key (anonymous callers, ids without keys, keyed
    /// ids sent without their key) may ask; `None` (`"*"`): every one, as before fleets.
    pub anonymous_appliances: Option<Vec<ApplianceName>>,
}

/// A client id's key: callers sending this id must send `Authorization: Bearer <key>`.
#[derive(Debug, Clone, Serialize)]
pub struct ClientKey {
    /// SHA-256 of the key (the key itself is never configured).
    pub key_sha256: KeyDigest,
    /// The appliances this client may ask, once proven by its key; `None`: every one. Kept
    /// here, beside the key, and not on `[rate_limit.overrides]`: an override applies to any
    /// caller that merely claims the id, while access must follow an identity the gateway has
    /// verified.
    pub appliances: Option<Vec<ApplianceName>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientQuota {
    pub per_minute: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheSettings {
    pub max_bytes: NonZeroU64,
    pub historic_ttl_secs: NonZeroU64,
    pub live_ttl_secs: NonZeroU64,
    pub settle_secs: u64,
    pub stale_while_revalidate_secs: u64,
    pub stale_if_error_secs: u64,
    pub gzip_min_bytes: usize,
    /// Where the disk tier keeps settled segments across restarts; `None`: memory only.
    pub dir: Option<std::path::PathBuf>,
    /// Most bytes the disk tier holds; the first to expire are evicted past it.
    pub disk_max_bytes: NonZeroU64,
    /// Keep settled segments on disk past `historic_ttl_secs` (within `disk_max_bytes`, the
    /// oldest stored evicted first) and answer from them once they are stale: history the
    /// appliance no longer holds.
    pub archive: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub workers: usize,
    pub log_level: String,
    pub log_format: LogFormat,
    pub shutdown_grace_secs: u64,
    pub client_request_timeout_ms: u64,
    /// Which requests get an access line: `all`, `errors` (status 400 and above) or
    /// `sampled` (every error, and one success in `access_log_sample`).
    pub access_log: AccessLogMode,
    /// In `sampled` mode, one success in this many gets an access line.
    pub access_log_sample: NonZeroU64,
    /// Most access lines written per second, whatever the mode; the rest are counted.
    pub access_log_max_per_second: NonZeroU32,
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

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamSettings {
    pub url: UpstreamUrl,
    pub public_token: String,
    /// Read from `upstream.private_token` or `upstream.private_token_file`. `SecretString`
    /// redacts itself in `Debug`, so settings can be logged whole. Never serialized.
    #[serde(skip_serializing)]
    pub private_token: SecretString,
    /// The file the private token was read from, if any.
    pub private_token_file: Option<PathBuf>,
    /// PEM certificates to trust: CAs, or the appliance's own certificate (self-signed or not),
    /// which is then trusted whatever host name or IP the URL uses.
    pub ca_file: Option<CaFile>,
    /// SHA-256 pins of the appliance's certificate or of its public key. When any is set, a
    /// matching certificate is trusted without a CA and any other is refused.
    #[serde(serialize_with = "as_joined")]
    pub pin_sha256: Vec<Pin>,
    pub insecure_skip_verify: bool,
    pub connect_timeout_ms: NonZeroU64,
    pub timeout_ms: NonZeroU64,
    pub max_response_bytes: NonZeroUsize,
    pub catalog_refresh_secs: NonZeroU64,
    pub probe_secs: NonZeroU64,
    pub probe_timeout_ms: NonZeroU64,
    pub max_in_flight: NonZeroUsize,
    /// At least 2 (a tenth, at least one, is kept for readiness probes).
    pub per_minute: u32,
    /// How long a caller's request may wait its turn for the per-minute budget.
    pub queue_wait_secs: NonZeroU64,
    pub queue_timeout_ms: NonZeroU64,
    pub retries: u32,
    pub retry_backoff_ms: u64,
    pub retry_budget_percent: u32,
    pub breaker_failures: NonZeroU32,
    pub breaker_open_secs: NonZeroU64,
}

/// What one question may ask for. Every count is at least 1, and the default interval lies
/// within the allowed ones (see [`Settings::check`]).
#[derive(Debug, Clone, Serialize)]
pub struct QueryLimits {
    pub max_metrics: NonZeroUsize,
    pub max_devices: NonZeroUsize,
    pub max_range_days: NonZeroU64,
    pub max_points: NonZeroU64,
    pub min_interval_seconds: NonZeroU64,
    pub max_interval_seconds: NonZeroU64,
    pub default_interval_seconds: NonZeroU64,
}

/// A URL the Redis client opens (`redis://host:port/db`, `rediss://…`, `unix://…`), checked
/// at load. It may hold a password, so `Debug` and errors never show it whole.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        redis::Client::open(text)
            .map(|_| Self(text.to_owned()))
            .map_err(|_| {
                "not a Redis URL the client opens (redis://host:port/db, rediss://…, unix://…)"
                    .to_owned()
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A user and password stand before the last `@`, or in the query (`?pass=` on
        // `unix://` URLs): only the scheme, host and path are shown.
        match self.0.split_once("://") {
            Some((scheme, rest)) => {
                let rest = rest.split('?').next().unwrap_or_default();
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                write!(f, "RedisUrl({scheme}://…@{host})")
            }
            None => f.write_str("RedisUrl(…)"),
        }
    }
}

/// The appliance's base URL: http or https, with a host, without a query string.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// As configured: it names the appliance's shared budget in Redis, which replicas
    /// configured alike must agree on.
    text: String,
    /// Parsed, trailing slashes dropped: request paths are joined onto it.
    base: reqwest::Url,
}

impl UpstreamUrl {
    /// The URL as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed base URL (without trailing slashes).
    pub fn base(&self) -> &reqwest::Url {
        &self.base
    }

    pub fn is_https(&self) -> bool {
        self.base.scheme() == "https"
    }
}

impl FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an http(s) URL with a host");
        let base = reqwest::Url::parse(text.trim_end_matches('/')).map_err(|_| bad())?;
        if !matches!(base.scheme(), "http" | "https") || !base.has_host() {
            return Err(bad());
        }
        if base.query().is_some() {
            return Err("it must not carry a query string".into());
        }
        Ok(Self {
            text: text.to_owned(),
            base,
        })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// `upstream.ca_file`: its path, and the certificates it held when the settings were loaded
/// (read once, so the TLS configuration trusts exactly what was checked).
#[derive(Clone)]
pub struct CaFile {
    pub path: PathBuf,
    pub certificates: Vec<CertificateDer<'static>>,
}

impl CaFile {
    /// Reads the PEM certificates in `path`; a file that holds none is refused.
    pub fn read(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let shown = path.display();
        let pem = std::fs::read(&path)
            .map_err(|e| format!("upstream.ca_file: cannot read {shown}: {e}"))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("upstream.ca_file: {shown}: {e}"))?;
        if certificates.is_empty() {
            return Err(format!(
                "upstream.ca_file: {shown} holds no PEM certificate"
            ));
        }
        Ok(Self { path, certificates })
    }
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} ({} certificates)",
            self.path,
            self.certificates.len()
        )
    }
}

impl Serialize for CaFile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.path.serialize(s)
    }
}

/// `rate_limit.client_header`: a valid header name, lowercase.
///
/// Held as the `http` 0.2 type actix-web uses for requests, so the caller's header is looked
/// up with it directly (settings know nothing of actix itself).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientHeader(http::HeaderName);

impl ClientHeader {
    pub fn name(&self) -> &http::HeaderName {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for ClientHeader {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        http::HeaderName::from_bytes(text.as_bytes())
            .map(Self)
            .map_err(|_| format!("rate_limit.client_header: {text:?} is not a header name"))
    }
}

impl fmt::Debug for ClientHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for ClientHeader {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A SHA-256 digest, configured as 64 hex digits (either case).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyDigest(pub [u8; 32]);

impl FromStr for KeyDigest {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let hex_text = text.trim();
        let mut digest = [0; 32];
        match hex::decode_to_slice(hex_text, &mut digest) {
            Ok(()) => Ok(Self(digest)),
            Err(_) => Err(
                "not 64 hex digits (the SHA-256 of the key, e.g. from `printf %s KEY | sha256sum`)"
                    .into(),
            ),
        }
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for KeyDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

/// Serializes each item with `Display` (the form it is configured in).
fn as_strings<T: fmt::Display, S: Serializer>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(ToString::to_string))
}

/// Serializes items with `Display`, comma-separated (as `upstream.pin_sha256` is written).
fn as_joined<T: fmt::Display, S: Serializer>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
    let texts: Vec<String> = items.iter().map(ToString::to_string).collect();
    s.serialize_str(&texts.join(","))
}

/// Startup problems, one line each, all reported together.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct SettingsError(pub Vec<String>);

impl Settings {
    /// What the types cannot say: required values, ranges, and relations between settings.
    /// Every load runs it; code that changes settings it built (`demo`, tests) runs it again.
    pub fn check(&self) -> Result<(), SettingsError> {
        let mut problems = Vec::new();
        self.check_into(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SettingsError(problems))
        }
    }

    fn check_into(&self, problems: &mut Vec<String>) {
        if tracing_subscriber::EnvFilter::try_new(&self.server.log_level).is_err() {
            problems.push(format!(
                "server.log_level: {:?} is not a level or filter (e.g. info, debug, metricgate=debug)",
                self.server.log_level
            ));
        }
        self.check_fleet(problems);
        let q = &self.query;
        let seg = &self.segments;
        let r = &self.rate_limit;
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
        if !q.default_interval_seconds.get().is_multiple_of(60) {
            problems.push(
                "query.default_interval_seconds must be a whole number of minutes (appliances keep one value per minute)"
                    .into(),
            );
        }
        if self.redis.lock_ttl_ms < 30 {
            problems.push("redis.lock_ttl_ms: at least 30 (it is renewed every third)".into());
        }
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
        if seg.prefetch_budget_percent > 100 {
            problems.push("segments.prefetch_budget_percent must be 0 to 100".into());
        }
        for (client, quota) in &r.overrides {
            if quota.per_minute == 0 || quota.burst == 0 {
                problems.push(format!(
                    "rate_limit.overrides.{client}: per_minute and burst must be greater than 0"
                ));
            }
        }
        let a = &self.admin;
        match a.listen {
            None if a.token.expose_secret().is_empty() => problems.push(
                "admin.listen is empty, so the admin endpoints are on server.listen: set admin.token or admin.token_file"
                    .into(),
            ),
            Some(addr) if addr.port() != 0 && addr == self.server.listen => problems.push(
                "admin.listen equals server.listen; to serve the admin endpoints on the main port, set admin.listen = \"\" and admin.token"
                    .into(),
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
