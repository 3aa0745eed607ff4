//! The settings as the sources write them (text where the typed settings hold a parsed value),
//! and their conversion into [`Settings`], which reports every problem at once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use config::{Config, File, FileFormat};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::{
    AccessLogMode, AdminSettings, ApplianceName, ApplianceSettings, CaFile, CacheSettings,
    ClientHeader, ClientKey, ClientQuota, ConfigSource, DEFAULT_NAME, DEFAULT_TOML, KeyDigest,
    LogFormat, PrometheusSettings, QueryLimits, RateLimitSettings, RedisSettings, RedisUrl,
    SegmentSettings, ServerSettings, Settings, SettingsError, UpstreamSettings, UpstreamUrl,
};
use crate::pin::parse_pins;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    server: RawServer,
    pub(super) upstream: RawUpstream,
    query: RawQuery,
    pub(super) cache: RawCache,
    rate_limit: RawRateLimit,
    segments: RawSegments,
    redis: RawRedis,
    prometheus: RawPrometheus,
    admin: RawAdmin,
    #[serde(default)]
    appliances: BTreeMap<String, RawAppliance>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    max_bytes: u64,
    historic_ttl_secs: u64,
    live_ttl_secs: u64,
    settle_secs: u64,
    stale_while_revalidate_secs: u64,
    stale_if_error_secs: u64,
    gzip_min_bytes: usize,
    pub(super) dir: String,
    disk_max_bytes: u64,
    archive: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSegments {
    enabled: bool,
    points: u64,
    max_bytes: u64,
    max_concurrent_fetches: usize,
    max_points_per_request: u64,
    prefetch: bool,
    prefetch_budget_percent: u32,
    prefetch_lead_secs: u64,
    prefetch_idle_periods: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    max_metrics: usize,
    max_devices: usize,
    max_range_days: u64,
    max_points: u64,
    min_interval_seconds: u64,
    max_interval_seconds: u64,
    default_interval_seconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    workers: usize,
    log_level: String,
    log_format: LogFormat,
    shutdown_grace_secs: u64,
    client_request_timeout_ms: u64,
    access_log: AccessLogMode,
    access_log_sample: u64,
    access_log_max_per_second: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
    token: SecretString,
    token_file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) url: String,
    pub(super) public_token: String,
    pub(super) private_token: SecretString,
    private_token_file: String,
    ca_file: String,
    pin_sha256: String,
    insecure_skip_verify: bool,
    connect_timeout_ms: u64,
    timeout_ms: u64,
    max_response_bytes: usize,
    catalog_refresh_secs: u64,
    probe_secs: u64,
    probe_timeout_ms: u64,
    max_in_flight: usize,
    per_minute: u32,
    queue_wait_secs: u64,
    queue_timeout_ms: u64,
    retries: u32,
    retry_backoff_ms: u64,
    retry_budget_percent: u32,
    breaker_failures: u32,
    breaker_open_secs: u64,
}

/// An `[appliances.<name>]` table: its own address, tokens and TLS; whatever else it leaves
/// out is `[upstream]`'s.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppliance {
    #[serde(default)]
    label: String,
    #[serde(default)]
    default: bool,
    #[serde(default)]
    url: String,
    #[serde(default)]
    public_token: String,
    #[serde(default = "no_secret")]
    private_token: SecretString,
    #[serde(default)]
    private_token_file: String,
    #[serde(default)]
    ca_file: String,
    #[serde(default)]
    pin_sha256: String,
    #[serde(default)]
    insecure_skip_verify: bool,
    connect_timeout_ms: Option<u64>,
    timeout_ms: Option<u64>,
    max_response_bytes: Option<usize>,
    catalog_refresh_secs: Option<u64>,
    probe_secs: Option<u64>,
    probe_timeout_ms: Option<u64>,
    max_in_flight: Option<usize>,
    per_minute: Option<u32>,
    queue_wait_secs: Option<u64>,
    queue_timeout_ms: Option<u64>,
    retries: Option<u32>,
    retry_backoff_ms: Option<u64>,
    retry_budget_percent: Option<u32>,
    breaker_failures: Option<u32>,
    breaker_open_secs: Option<u64>,
}

fn no_secret() -> SecretString {
    SecretString::from(String::new())
}

impl RawAppliance {
    /// Its own keys over `[upstream]`'s budget, timeouts and breaker.
    fn over(self, template: &RawUpstream) -> RawUpstream {
        let t = template.clone();
        RawUpstream {
            url: self.url,
            public_token: self.public_token,
            private_token: self.private_token,
            private_token_file: self.private_token_file,
            ca_file: self.ca_file,
            pin_sha256: self.pin_sha256,
            insecure_skip_verify: self.insecure_skip_verify,
            connect_timeout_ms: self.connect_timeout_ms.unwrap_or(t.connect_timeout_ms),
            timeout_ms: self.timeout_ms.unwrap_or(t.timeout_ms),
            max_response_bytes: self.max_response_bytes.unwrap_or(t.max_response_bytes),
            catalog_refresh_secs: self.catalog_refresh_secs.unwrap_or(t.catalog_refresh_secs),
            probe_secs: self.probe_secs.unwrap_or(t.probe_secs),
            probe_timeout_ms: self.probe_timeout_ms.unwrap_or(t.probe_timeout_ms),
            max_in_flight: self.max_in_flight.unwrap_or(t.max_in_flight),
            per_minute: self.per_minute.unwrap_or(t.per_minute),
            queue_wait_secs: self.queue_wait_secs.unwrap_or(t.queue_wait_secs),
            queue_timeout_ms: self.queue_timeout_ms.unwrap_or(t.queue_timeout_ms),
            retries: self.retries.unwrap_or(t.retries),
            retry_backoff_ms: self.retry_backoff_ms.unwrap_or(t.retry_backoff_ms),
            retry_budget_percent: self.retry_budget_percent.unwrap_or(t.retry_budget_percent),
            breaker_failures: self.breaker_failures.unwrap_or(t.breaker_failures),
            breaker_open_secs: self.breaker_open_secs.unwrap_or(t.breaker_open_secs),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    per_client_per_minute: u32,
    burst: u32,
    client_header: String,
    #[serde(deserialize_with = "text_list")]
    trusted_proxies: Vec<String>,
    max_tracked_clients: usize,
    sweep_secs: u64,
    #[serde(default)]
    overrides: BTreeMap<String, ClientQuota>,
    per_ip_per_minute: u32,
    per_ip_burst: u32,
    no_cache_per_minute: u32,
    lease: u32,
    #[serde(default)]
    clients: BTreeMap<String, RawClientKey>,
    #[serde(deserialize_with = "text_list")]
    anonymous_appliances: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientKey {
    key_sha256: String,
    #[serde(default, deserialize_with = "some_text_list")]
    appliances: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: String,
    timeout_ms: u64,
    lock_ms: u64,
    lock_ttl_ms: u64,
    prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    #[serde(deserialize_with = "text_list")]
    devices: Vec<String>,
    max_samples: usize,
}

/// `cache.dir`: empty turns the disk tier off; `auto` is systemd's `$STATE_DIRECTORY` (its
/// first path), else `$XDG_STATE_HOME/metricgate`, else `~/.local/state/metricgate`, else
/// `./metricgate-state`; anything else is the directory itself.
fn state_dir(text: &str) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text != "auto" {
        return Some(PathBuf::from(text));
    }
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    Some(if let Some(state) = var("STATE_DIRECTORY") {
        let first = state
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        PathBuf::from(first)
    } else if let Some(xdg) = var("XDG_STATE_HOME") {
        PathBuf::from(xdg).join("metricgate")
    } else if let Some(home) = var("HOME") {
        PathBuf::from(home).join(".local/state/metricgate")
    } else {
        PathBuf::from("metricgate-state")
    })
}

impl RawSettings {
    /// `config/default.toml` alone.
    pub(super) fn defaults() -> Result<Self, SettingsError> {
        Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| SettingsError(vec![format!("config/default.toml: {e}")]))
    }
}

/// Problems found so far; a value that failed is replaced by a placeholder so the conversion
/// goes on and finds the others. A placeholder never escapes: any problem fails the whole.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn or<T>(&mut self, parsed: Result<T, String>, placeholder: T) -> T {
        parsed.unwrap_or_else(|problem| {
            self.0.push(problem);
            placeholder
        })
    }

    /// A count that zero would make meaningless (a timeout, a limit, a period).
    fn positive<T, N: TryFrom<T>>(&mut self, name: &str, value: T, placeholder: N) -> N {
        self.or(
            N::try_from(value).map_err(|_| format!("{name} must be greater than 0")),
            placeholder,
        )
    }
}

const U32: NonZeroU32 = NonZeroU32::MIN;
const U64: NonZeroU64 = NonZeroU64::MIN;
const USIZE: NonZeroUsize = NonZeroUsize::MIN;

/// Where a failed address goes meanwhile: port 0 relates to nothing in [`Settings::check`].
const NO_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

impl TryFrom<RawSettings> for Settings {
    type Error = SettingsError;

    fn try_from(raw: RawSettings) -> Result<Self, SettingsError> {
        let mut p = Problems::default();
        let s = raw.server;
        let listen = p.or(
            s.listen.parse().map_err(|_| {
                format!(
                    "server.listen: {:?} is not an address such as 127.0.0.1:8080",
                    s.listen
                )
            }),
            NO_ADDRESS,
        );
        let up = raw.upstream;
        // Without `[appliances.*]`, `[upstream]` is the one appliance, URL or not.
        let upstream_is_appliance = !up.url.is_empty() || raw.appliances.is_empty();
        if up.url.is_empty() && upstream_is_appliance {
            p.0.push(
                "upstream.url is required (METRICGATE__UPSTREAM__URL), or [appliances.<name>] tables"
                    .into(),
            );
        }
        let mut appliances = Vec::new();
        let mut default_appliance = None;
        for (name, table) in raw.appliances {
            let at = format!("appliances.{name}");
            let Ok(parsed) =
                ApplianceName::parse(&name).map_err(|e| p.0.push(format!("{at}: {e}")))
            else {
                continue;
            };
            if table.default {
                if let Some(other) = &default_appliance {
                    p.0.push(format!(
                        "{at}.default: {other} is the default already; mark one appliance"
                    ));
                }
                default_appliance = Some(parsed.clone());
            }
            let label = (!table.label.is_empty()).then(|| table.label.clone());
            if table.url.is_empty() {
                p.0.push(format!("{at}.url is required"));
                continue;
            }
            let upstream = upstream_settings(&mut p, &at, table.over(&up));
            appliances.push(ApplianceSettings {
                name: parsed,
                label,
                upstream,
            });
        }
        // The short form's keys: what `[appliances.*]` inherit, and an appliance of its own
        // when it has a URL.
        let mut short = up;
        if short.url.is_empty() {
            short.url = PLACEHOLDER_URL.to_owned();
        }
        let upstream = upstream_settings(&mut p, "upstream", short);
        let r = raw.rate_limit;
        let client_header = p.or(
            r.client_header.parse(),
            ClientHeader(http::HeaderName::from_static("x-client-id")),
        );
        let trusted_proxies = r
            .trusted_proxies
            .iter()
            .filter_map(|text| {
                proxy(text)
                    .ok_or_else(|| {
                        p.0.push(format!(
                            "rate_limit.trusted_proxies: {text:?} is not an IP address or CIDR"
                        ))
                    })
                    .ok()
            })
            .collect();
        // Access names only appliances the gateway fronts: a misspelt name would otherwise
        // lock a client out of an appliance without a word.
        let known: Vec<ApplianceName> = upstream_is_appliance
            .then(|| ApplianceName::parse(DEFAULT_NAME).ok())
            .flatten()
            .into_iter()
            .chain(appliances.iter().map(|a| a.name.clone()))
            .collect();
        let clients = r
            .clients
            .into_iter()
            .filter_map(|(client, key)| {
                let appliances = key.appliances.map(|names| {
                    access_list(
                        &mut p,
                        &format!("rate_limit.clients.{client}.appliances"),
                        &names,
                        &known,
                    )
                });
                match key.key_sha256.parse::<KeyDigest>() {
                    Ok(key_sha256) => Some((
                        client,
                        ClientKey {
                            key_sha256,
                            appliances,
                        },
                    )),
                    Err(e) => {
                        p.0.push(format!("rate_limit.clients.{client}.key_sha256: {e}"));
                        None
                    }
                }
            })
            .collect();
        let anonymous_appliances = (r.anonymous_appliances != ["*"]).then(|| {
            access_list(
                &mut p,
                "rate_limit.anonymous_appliances",
                &r.anonymous_appliances,
                &known,
            )
        });
        let devices = raw
            .prometheus
            .devices
            .iter()
            .filter_map(|text| {
                text.trim()
                    .parse::<u64>()
                    .map_err(|_| {
                        p.0.push(format!(
                            "prometheus.devices: {text:?} is not a device id (1 to 2^53 - 1)"
                        ))
                    })
                    .ok()
            })
            .collect();
        let a = raw.admin;
        let admin_listen = if a.listen.is_empty() {
            None
        } else {
            Some(p.or(
                a.listen.parse().map_err(|_| {
                    format!(
                        "admin.listen: {:?} is not an address such as 127.0.0.1:8081 (or empty)",
                        a.listen
                    )
                }),
                NO_ADDRESS,
            ))
        };
        let (admin_token, admin_token_file) = token(
            &mut p,
            ("admin.token", a.token),
            ("admin.token_file", a.token_file),
        );
        let settings = Settings {
            server: ServerSettings {
                listen,
                workers: s.workers,
                log_level: s.log_level,
                log_format: s.log_format,
                shutdown_grace_secs: s.shutdown_grace_secs,
                client_request_timeout_ms: s.client_request_timeout_ms,
                access_log: s.access_log,
                access_log_sample: p.positive("server.access_log_sample", s.access_log_sample, U64),
                access_log_max_per_second: p.positive(
                    "server.access_log_max_per_second",
                    s.access_log_max_per_second,
                    U32,
                ),
            },
            upstream,
            upstream_is_appliance,
            appliances,
            default_appliance,
            query: {
                let q = raw.query;
                QueryLimits {
                    max_metrics: p.positive("query.max_metrics", q.max_metrics, USIZE),
                    max_devices: p.positive("query.max_devices", q.max_devices, USIZE),
                    max_range_days: p.positive("query.max_range_days", q.max_range_days, U64),
                    max_points: p.positive("query.max_points", q.max_points, U64),
                    min_interval_seconds: p.positive(
                        "query.min_interval_seconds",
                        q.min_interval_seconds,
                        U64,
                    ),
                    max_interval_seconds: p.positive(
                        "query.max_interval_seconds",
                        q.max_interval_seconds,
                        U64,
                    ),
                    default_interval_seconds: p.positive(
                        "query.default_interval_seconds",
                        q.default_interval_seconds,
                        U64,
                    ),
                }
            },
            cache: {
                let c = raw.cache;
                CacheSettings {
                    max_bytes: p.positive("cache.max_bytes", c.max_bytes, U64),
                    historic_ttl_secs: p.positive(
                        "cache.historic_ttl_secs",
                        c.historic_ttl_secs,
                        U64,
                    ),
                    live_ttl_secs: p.positive("cache.live_ttl_secs", c.live_ttl_secs, U64),
                    settle_secs: c.settle_secs,
                    stale_while_revalidate_secs: c.stale_while_revalidate_secs,
                    stale_if_error_secs: c.stale_if_error_secs,
                    gzip_min_bytes: c.gzip_min_bytes,
                    dir: state_dir(&c.dir),
                    disk_max_bytes: p.positive("cache.disk_max_bytes", c.disk_max_bytes, U64),
                    archive: c.archive,
                }
            },
            rate_limit: RateLimitSettings {
                per_client_per_minute: p.positive(
                    "rate_limit.per_client_per_minute",
                    r.per_client_per_minute,
                    U32,
                ),
                burst: p.positive("rate_limit.burst", r.burst, U32),
                client_header,
                trusted_proxies,
                max_tracked_clients: p.positive(
                    "rate_limit.max_tracked_clients",
                    r.max_tracked_clients,
                    USIZE,
                ),
                sweep_secs: p.positive("rate_limit.sweep_secs", r.sweep_secs, U64),
                overrides: r.overrides,
                per_ip_per_minute: p.positive(
                    "rate_limit.per_ip_per_minute",
                    r.per_ip_per_minute,
                    U32,
                ),
                per_ip_burst: p.positive("rate_limit.per_ip_burst", r.per_ip_burst, U32),
                no_cache_per_minute: r.no_cache_per_minute,
                lease: p.positive("rate_limit.lease", r.lease, U32),
                clients,
                anonymous_appliances,
            },
            segments: {
                let g = raw.segments;
                SegmentSettings {
                    enabled: g.enabled,
                    points: p.positive("segments.points", g.points, U64),
                    max_bytes: p.positive("segments.max_bytes", g.max_bytes, U64),
                    max_concurrent_fetches: p.positive(
                        "segments.max_concurrent_fetches",
                        g.max_concurrent_fetches,
                        USIZE,
                    ),
                    max_points_per_request: p.positive(
                        "segments.max_points_per_request",
                        g.max_points_per_request,
                        U64,
                    ),
                    prefetch: g.prefetch,
                    prefetch_budget_percent: g.prefetch_budget_percent,
                    prefetch_lead_secs: g.prefetch_lead_secs,
                    prefetch_idle_periods: p.positive(
                        "segments.prefetch_idle_periods",
                        g.prefetch_idle_periods,
                        U32,
                    ),
                }
            },
            redis: RedisSettings {
                url: if raw.redis.url.is_empty() {
                    None
                } else {
                    p.or(
                        RedisUrl::parse(&raw.redis.url)
                            .map(Some)
                            .map_err(|e| format!("redis.url: {e}")),
                        None,
                    )
                },
                timeout_ms: p.positive("redis.timeout_ms", raw.redis.timeout_ms, U64),
                lock_ms: p.positive("redis.lock_ms", raw.redis.lock_ms, U64),
                lock_ttl_ms: raw.redis.lock_ttl_ms,
                prefix: raw.redis.prefix,
            },
            prometheus: PrometheusSettings {
                devices,
                max_samples: p.positive(
                    "prometheus.max_samples",
                    raw.prometheus.max_samples,
                    NonZeroUsize::MIN,
                ),
            },
            source: ConfigSource::Built,
            admin: AdminSettings {
                listen: admin_listen,
                token: admin_token,
                token_file: admin_token_file,
            },
        };
        settings.check_into(&mut p.0);
        if p.0.is_empty() {
            Ok(settings)
        } else {
            Err(SettingsError(p.0))
        }
    }
}

/// Where a missing URL goes meanwhile (the short form without one only lends its keys).
const PLACEHOLDER_URL: &str = "http://appliance.invalid";

/// One appliance's settings from its raw keys, its problems named under `at`.
fn upstream_settings(p: &mut Problems, at: &str, up: RawUpstream) -> UpstreamSettings {
    let placeholder = || PLACEHOLDER_URL.parse::<UpstreamUrl>();
    let url = match up.url.parse::<UpstreamUrl>() {
        Ok(url) => url,
        Err(e) => {
            p.0.push(format!("{at}.url: {e}"));
            match placeholder() {
                Ok(url) => url,
                Err(e) => unreachable!("the placeholder URL is one: {e}"),
            }
        }
    };
    let (private_token, private_token_file) = token(
        p,
        (&format!("{at}.private_token"), up.private_token),
        (&format!("{at}.private_token_file"), up.private_token_file),
    );
    let ca_file = (!up.ca_file.is_empty())
        .then(|| CaFile::read(&up.ca_file).map_err(|e| p.0.push(e)).ok())
        .flatten();
    let pin_sha256 = p.or(
        parse_pins(&up.pin_sha256).map_err(|e| format!("{at}.pin_sha256: {e}")),
        Vec::new(),
    );
    UpstreamSettings {
        url,
        public_token: up.public_token,
        private_token,
        private_token_file,
        ca_file,
        pin_sha256,
        insecure_skip_verify: up.insecure_skip_verify,
        connect_timeout_ms: p.positive(
            &format!("{at}.connect_timeout_ms"),
            up.connect_timeout_ms,
            U64,
        ),
        timeout_ms: p.positive(&format!("{at}.timeout_ms"), up.timeout_ms, U64),
        max_response_bytes: p.positive(
            &format!("{at}.max_response_bytes"),
            up.max_response_bytes,
            USIZE,
        ),
        catalog_refresh_secs: p.positive(
            &format!("{at}.catalog_refresh_secs"),
            up.catalog_refresh_secs,
            U64,
        ),
        probe_secs: p.positive(&format!("{at}.probe_secs"), up.probe_secs, U64),
        probe_timeout_ms: p.positive(&format!("{at}.probe_timeout_ms"), up.probe_timeout_ms, U64),
        max_in_flight: p.positive(&format!("{at}.max_in_flight"), up.max_in_flight, USIZE),
        per_minute: up.per_minute,
        queue_wait_secs: p.positive(&format!("{at}.queue_wait_secs"), up.queue_wait_secs, U64),
        queue_timeout_ms: p.positive(&format!("{at}.queue_timeout_ms"), up.queue_timeout_ms, U64),
        retries: up.retries,
        retry_backoff_ms: up.retry_backoff_ms,
        retry_budget_percent: up.retry_budget_percent,
        breaker_failures: p.positive(&format!("{at}.breaker_failures"), up.breaker_failures, U32),
        breaker_open_secs: p.positive(
            &format!("{at}.breaker_open_secs"),
            up.breaker_open_secs,
            U64,
        ),
    }
}

/// A secret set inline or read from a file (trailing whitespace trimmed), never both: the
/// secret (empty when neither is set) and the file it came from.
fn token(
    p: &mut Problems,
    (inline_name, inline): (&str, SecretString),
    (file_name, file): (&str, String),
) -> (SecretString, Option<PathBuf>) {
    if file.is_empty() {
        return (inline, None);
    }
    if !inline.expose_secret().is_empty() {
        p.0.push(format!(
            "{inline_name} and {file_name} are both set; set one"
        ));
        return (inline, None);
    }
    match std::fs::read_to_string(&file) {
        Ok(text) => (
            SecretString::from(text.trim_end().to_owned()),
            Some(PathBuf::from(file)),
        ),
        Err(e) => {
            p.0.push(format!("{file_name}: cannot read {file}: {e}"));
            (inline, None)
        }
    }
}

/// An IP network, or a single address (as its /32 or /128).
fn proxy(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A list as a file writes it (an array of strings or numbers) or as an environment variable
/// does (one string, comma-separated; empty is the empty list), each item as text.
/// The appliances an access list (`at`) names, each one of `known`.
fn access_list(
    p: &mut Problems,
    at: &str,
    names: &[String],
    known: &[ApplianceName],
) -> Vec<ApplianceName> {
    names
        .iter()
        .filter_map(|name| match ApplianceName::parse(name) {
            Ok(parsed) if known.contains(&parsed) => Some(parsed),
            Ok(_) => {
                let choices: Vec<&str> = known.iter().map(ApplianceName::as_str).collect();
                p.0.push(format!(
                    "{at}: no appliance is named {name:?}; the choices: {}",
                    choices.join(", ")
                ));
                None
            }
            Err(e) => {
                p.0.push(format!("{at}: {e}"));
                None
            }
        })
        .collect()
}

/// [`text_list`] for a list that may be left out (`None`: not set).
fn some_text_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    text_list(deserializer).map(Some)
}

fn text_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct Items;

    impl<'de> Visitor<'de> for Items {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list, or a comma-separated string")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            if text.trim().is_empty() {
                return Ok(Vec::new());
            }
            Ok(text.split(',').map(|item| item.trim().to_owned()).collect())
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(vec![n.to_string()])
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            Ok(vec![n.to_string()])
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<Item>()? {
                items.push(item.0);
            }
            Ok(items)
        }
    }

    /// One item of a list: text, or a number written as one.
    struct Item(String);

    impl<'de> Deserialize<'de> for Item {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct One;

            impl Visitor<'_> for One {
                type Value = Item;

                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a string or a number")
                }

                fn visit_str<E: de::Error>(self, text: &str) -> Result<Item, E> {
                    Ok(Item(text.to_owned()))
                }

                fn visit_u64<E: de::Error>(self, n: u64) -> Result<Item, E> {
                    Ok(Item(n.to_string()))
                }

                fn visit_i64<E: de::Error>(self, n: i64) -> Result<Item, E> {
                    Ok(Item(n.to_string()))
                }
            }

            deserializer.deserialize_any(One)
        }
    }

    deserializer.deserialize_any(Items)
}
