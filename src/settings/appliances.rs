//! The appliances a gateway fronts: `[upstream]` (the short form: one appliance named
//! `default`) and `[appliances.<name>]` tables, each taking what it does not set from
//! `[upstream]`.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::{Settings, UpstreamSettings};

/// An appliance's name: what callers write in `?appliance=`, paths and the PromQL `appliance`
/// label. Lower-case letters, digits, `-` and `_`, at most 32, starting with a letter or digit
/// (so it reads the same in an environment variable, a URL and a label value).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ApplianceName(Arc<str>);

/// The short form's name.
pub const DEFAULT_NAME: &str = "default";

impl ApplianceName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let ok = !text.is_empty()
            && text.len() <= 32
            && text.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'-' || b == b'_'))
            });
        if ok {
            Ok(Self(Arc::from(text)))
        } else {
            Err(format!(
                "{text:?} is not an appliance name (lower-case letters, digits, - and _, at most 32)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Looked up by the text a caller sent (ordering and equality are the text's).
impl std::borrow::Borrow<str> for ApplianceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApplianceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One appliance, with every `[upstream]` key resolved.
#[derive(Debug, Clone, Serialize)]
pub struct ApplianceSettings {
    pub name: ApplianceName,
    /// What people call it (`EMEA master`); listings show it beside the name.
    pub label: Option<String>,
    pub upstream: UpstreamSettings,
}

impl Settings {
    /// Every appliance the gateway fronts, by name: the short form (when `[upstream]` has a
    /// URL) as `default`, then `[appliances.*]`.
    pub fn fleet(&self) -> Vec<ApplianceSettings> {
        let short = self.upstream_is_appliance.then(|| ApplianceSettings {
            name: ApplianceName(Arc::from(DEFAULT_NAME)),
            label: None,
            upstream: self.upstream.clone(),
        });
        short
            .into_iter()
            .chain(self.appliances.iter().cloned())
            .collect()
    }

    /// The appliance a question without `appliance=` goes to: the one marked `default`, else
    /// the short form, else the only one; `None` when several and none is marked.
    pub fn default_appliance(&self) -> Option<ApplianceName> {
        if let Some(name) = &self.default_appliance {
            return Some(name.clone());
        }
        let fleet = self.fleet();
        match fleet.as_slice() {
            [only] => Some(only.name.clone()),
            _ => fleet
                .into_iter()
                .find(|a| a.name.as_str() == DEFAULT_NAME && self.upstream_is_appliance)
                .map(|a| a.name),
        }
    }

    /// Problems of the fleet as a whole: names taken twice, several defaults, none at all.
    pub(super) fn check_fleet(&self, problems: &mut Vec<String>) {
        if self.upstream_is_appliance
            && self
                .appliances
                .iter()
                .any(|a| a.name.as_str() == DEFAULT_NAME)
        {
            problems.push(format!(
                "appliances.{DEFAULT_NAME}: the name is taken by [upstream] (its short form); rename the table or empty upstream.url"
            ));
        }
        for a in self.fleet() {
            let at = setting_prefix(&a.name, self.upstream_is_appliance);
            let up = &a.upstream;
            if up.public_token.is_empty() {
                let env =
                    format!("METRICGATE__{}__PUBLIC_TOKEN", at.replace('.', "__")).to_uppercase();
                problems.push(format!("{at}.public_token is required ({env})"));
            }
            if secrecy::ExposeSecret::expose_secret(&up.private_token).is_empty() {
                problems.push(format!(
                    "{at}.private_token or {at}.private_token_file is required"
                ));
            }
            if up.insecure_skip_verify && !up.pin_sha256.is_empty() {
                problems.push(format!(
                    "{at}.pin_sha256 and {at}.insecure_skip_verify are both set; a pin needs verification on"
                ));
            }
            if up.per_minute < 2 {
                problems.push(format!(
                    "{at}.per_minute must be at least 2 (a tenth, at least one, is kept for readiness probes)"
                ));
            }
        }
    }
}

/// Where an appliance's keys are set: `upstream` for the short form, else its table.
pub fn setting_prefix(name: &ApplianceName, short_form: bool) -> String {
    if short_form && name.as_str() == DEFAULT_NAME {
        "upstream".to_owned()
    } else {
        format!("appliances.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_the_same_in_variables_urls_and_labels() {
        for good in ["emea", "amer-2", "customer_17", "1st"] {
            assert!(ApplianceName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "EMEA", "-x", "a b", "a/b", "é", &"x".repeat(33)] {
            assert!(ApplianceName::parse(bad).is_err(), "{bad}");
        }
    }
}
