//! Live reload of the configuration (SIGHUP, `POST /internal/reload`): the sources the gateway
//! started from are read again, and what can change in place does, without dropping a request:
//! rate limits and client overrides, the log level, the cache TTLs, and the appliances (added,
//! removed, re-tokened: see [`Fleet::reload`]). Any other changed setting
//! is named as needing a restart, and is reported again on every reload until it is in force.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::fleet::{Fleet, FleetChange, Parts};
use crate::limits::CallerLimits;
use crate::settings::{Settings, SettingsError};
use crate::telemetry::{self, LevelError};

/// Settings that a reload puts in force; a name ending in `.` covers its whole section.
const RELOADABLE: &[&str] = &[
    "rate_limit.",
    "server.log_level",
    "cache.historic_ttl_secs",
    "cache.live_ttl_secs",
    "cache.settle_secs",
    "cache.stale_while_revalidate_secs",
    "cache.stale_if_error_secs",
    "upstream.",
    "appliances",
    "upstream_is_appliance",
    "default_appliance",
];

fn is_reloadable(key: &str) -> bool {
    RELOADABLE.iter().any(|r| match r.strip_suffix('.') {
        Some(section) => key
            .strip_prefix(section)
            .is_some_and(|rest| rest.starts_with('.')),
        None => {
            key == *r
                || key
                    .strip_prefix(r)
                    .is_some_and(|rest| rest.starts_with('.'))
        }
    })
}

/// What a reload did.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ReloadReport {
    /// Changed settings now in force.
    #[schema(example = json!(["rate_limit.burst", "cache.live_ttl_secs"]))]
    pub applied: Vec<String>,
    /// Changed settings that take effect only after a restart (the running values stay).
    #[schema(example = json!(["server.workers"]))]
    pub restart_needed: Vec<String>,
    /// Anything else worth knowing (e.g. `RUST_LOG` keeps deciding the log level).
    pub notes: Vec<String>,
    /// Appliances added, removed and started anew (absent when none).
    #[serde(skip_serializing_if = "FleetChange::is_empty")]
    pub appliances: FleetChange,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(
        "this gateway was not started from configuration files (demo or embedded): there is nothing to read again"
    )]
    NotFromConfiguration,
    #[error("the configuration is invalid, so the running one is kept: {0}")]
    Invalid(#[source] SettingsError),
    #[error("an appliance cannot be started, so the running ones are kept: {0}")]
    Appliance(String),
}

/// The settings in force, and the one reload at a time that may change them.
pub struct Reloader {
    in_force: tokio::sync::Mutex<Settings>,
}

impl Reloader {
    pub fn new(settings: &Settings) -> Self {
        Self {
            in_force: tokio::sync::Mutex::new(settings.clone()),
        }
    }

    /// Reads the configuration again and puts what can change in place in force in `callers`,
    /// the `fleet` and the log filter. Requests in flight finish on what they started with.
    pub async fn reload(
        &self,
        callers: &CallerLimits,
        fleet: &Fleet,
        parts: &Parts,
    ) -> Result<ReloadReport, ReloadError> {
        let mut in_force = self.in_force.lock().await;
        let next = in_force
            .reread()
            .ok_or(ReloadError::NotFromConfiguration)?
            .map_err(ReloadError::Invalid)?;
        let mut report = ReloadReport::default();
        for key in changed(&in_force, &next) {
            if is_reloadable(&key) {
                report.applied.push(key);
            } else {
                report.restart_needed.push(key);
            }
        }
        let touches = |prefix: &str| report.applied.iter().any(|k| k.starts_with(prefix));
        if touches("rate_limit.") {
            callers.reconfigure(&next.rate_limit);
            in_force.rate_limit = next.rate_limit.clone();
        }
        let fleet_keys = ["upstream", "appliances", "default_appliance"];
        if fleet_keys.iter().any(|k| touches(k)) {
            report.appliances = fleet.reload(&next, parts).map_err(ReloadError::Appliance)?;
            in_force.upstream = next.upstream.clone();
            in_force.upstream_is_appliance = next.upstream_is_appliance;
            in_force.appliances = next.appliances.clone();
            in_force.default_appliance = next.default_appliance.clone();
        }
        if touches("cache.") {
            for appliance in fleet.all() {
                appliance.service.reload_ttls(&next.cache);
            }
            let (c, n) = (&mut in_force.cache, &next.cache);
            c.historic_ttl_secs = n.historic_ttl_secs;
            c.live_ttl_secs = n.live_ttl_secs;
            c.settle_secs = n.settle_secs;
            c.stale_while_revalidate_secs = n.stale_while_revalidate_secs;
            c.stale_if_error_secs = n.stale_if_error_secs;
        }
        if touches("server.log_level") {
            match telemetry::set_level(&next.server.log_level) {
                Ok(()) | Err(LevelError::NotInstalled) => {}
                Err(e) => {
                    report.applied.retain(|k| k != "server.log_level");
                    report
                        .notes
                        .push(format!("server.log_level not changed: {e}"));
                }
            }
            in_force.server.log_level = next.server.log_level.clone();
        }
        drop(in_force);
        tracing::info!(
            applied = ?report.applied,
            restart_needed = ?report.restart_needed,
            "configuration reloaded"
        );
        if !report.restart_needed.is_empty() {
            tracing::warn!(
                settings = ?report.restart_needed,
                "changed settings take effect only after a restart; the running values stay"
            );
        }
        for note in &report.notes {
            tracing::warn!("{note}");
        }
        Ok(report)
    }
}

/// Every `section.key` (and `rate_limit.overrides.<client>.<field>`) whose value differs,
/// sorted. The private token is compared too, by value, but never shown.
fn changed(old: &Settings, new: &Settings) -> Vec<String> {
    use secrecy::ExposeSecret;
    let (a, b) = (flatten(old), flatten(new));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    if old.upstream.private_token.expose_secret() != new.upstream.private_token.expose_secret() {
        keys.push("upstream.private_token".into());
    }
    for a in &new.appliances {
        let before = old.appliances.iter().find(|o| o.name == a.name);
        if before.is_some_and(|o| {
            o.upstream.private_token.expose_secret() != a.upstream.private_token.expose_secret()
        }) {
            keys.push(format!("appliances.{}.private_token", a.name));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

fn flatten(settings: &Settings) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        "",
        serde_json::to_value(settings).unwrap_or_default(),
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ClientQuota;
    use std::num::NonZero;

    #[test]
    fn changes_are_named_by_setting_and_sorted_into_reloadable_or_not() {
        let old = Settings::defaults();
        let mut new = old.clone();
        new.rate_limit.burst = NonZero::new(7).unwrap();
        new.rate_limit.overrides.insert(
            "dash".into(),
            ClientQuota {
                per_minute: 1,
                burst: 1,
            },
        );
        new.cache.live_ttl_secs = std::num::NonZeroU64::new(5).unwrap();
        new.cache.max_bytes = std::num::NonZeroU64::MIN;
        new.server.workers = 3;
        new.upstream.private_token = secrecy::SecretString::from("changed".to_owned());
        let keys = changed(&old, &new);
        assert_eq!(
            keys,
            [
                "cache.live_ttl_secs",
                "cache.max_bytes",
                "rate_limit.burst",
                "rate_limit.overrides.dash.burst",
                "rate_limit.overrides.dash.per_minute",
                "server.workers",
                "upstream.private_token",
            ]
        );
        let reloadable: Vec<bool> = keys.iter().map(|k| is_reloadable(k)).collect();
        assert_eq!(reloadable, [true, false, true, true, true, false, true]);
        assert!(!is_reloadable("rate_limits.x"));
        assert!(changed(&old, &old.clone()).is_empty());
    }
}
