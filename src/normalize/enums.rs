//! The appliance's enumerated types (`GET /enums`) → [`ApplicationProtocols`]: the numeric
//! codes its `applicationprotocol` filter takes, by name.
//!
//! The guide's shape: an object of categories by readable name (`"Application protocol"`),
//! each a list of `{code, name}` with the code as a string. Category names drift between
//! versions, so the category is found by its letters alone, in any case and number.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::AnswerError;

/// The application protocols an appliance knows, by code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplicationProtocols {
    names: BTreeMap<u32, String>,
}

#[derive(Deserialize)]
struct EnumEntry {
    code: Code,
    name: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Code {
    Number(u64),
    Text(String),
}

/// A name squashed to its lowercase letters and digits: `SSL/TLS` and `ssltls` meet.
fn squashed(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn bad(reason: String) -> AnswerError {
    AnswerError::UnknownShape {
        reason,
        cause: None,
    }
}

/// Decodes `GET /enums` into the application protocols it lists.
pub fn application_protocols(body: &[u8]) -> Result<ApplicationProtocols, AnswerError> {
    let categories: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| AnswerError::UnknownShape {
            reason: format!("/enums: {e}"),
            cause: Some(std::sync::Arc::new(e)),
        })?;
    let list = categories
        .into_iter()
        .find(|(name, _)| {
            matches!(
                squashed(name).as_str(),
                "applicationprotocol" | "applicationprotocols"
            )
        })
        .map(|(_, list)| list)
        .ok_or_else(|| bad("/enums has no application protocol category".into()))?;
    let entries: Vec<EnumEntry> =
        serde_json::from_value(list).map_err(|e| AnswerError::UnknownShape {
            reason: format!("/enums application protocols: {e}"),
            cause: Some(std::sync::Arc::new(e)),
        })?;
    let mut names = BTreeMap::new();
    for entry in entries {
        let code = match entry.code {
            Code::Number(n) => u32::try_from(n).ok(),
            Code::Text(t) => t.trim().parse().ok(),
        };
        // The filter takes numbers; a code that is not one cannot be asked for.
        if let Some(code) = code {
            names.entry(code).or_insert(entry.name);
        }
    }
    if names.is_empty() {
        return Err(bad(
            "/enums lists no numeric application protocol code".into()
        ));
    }
    Ok(ApplicationProtocols { names })
}

impl ApplicationProtocols {
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn has_code(&self, code: u32) -> bool {
        self.names.contains_key(&code)
    }

    /// The code of the protocol named `name` in any case; failing that, of the one name that
    /// matches it letter for letter (`ssl-tls` for `SSL/TLS`).
    pub fn code_of(&self, name: &str) -> Option<u32> {
        if let Some((code, _)) = self
            .names
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
        {
            return Some(*code);
        }
        let wanted = squashed(name);
        let mut matches = self.names.iter().filter(|(_, n)| squashed(n) == wanted);
        match (matches.next(), matches.next()) {
            (Some((code, _)), None) if !wanted.is_empty() => Some(*code),
            _ => None,
        }
    }

    /// Up to three known names closest to `name`, best first.
    pub fn closest(&self, name: &str) -> Vec<String> {
        let lower = name.to_ascii_lowercase();
        let mut scored: Vec<(f64, &String)> = self
            .names
            .values()
            .map(|n| (strsim::jaro_winkler(&lower, &n.to_ascii_lowercase()), n))
            .filter(|(score, _)| *score >= 0.75)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        scored.dedup_by(|a, b| a.1 == b.1);
        scored.into_iter().take(3).map(|(_, n)| n.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guides_shape_is_read_by_category_letters() {
        let body = br#"{
            "Country": [{"code": "AD", "name": "Andorra"}],
            "Application protocol": [
                {"code": "1053", "name": "BITTORRENT"},
                {"code": "1001", "name": "HTTP"},
                {"code": 1002, "name": "HTTPS"},
                {"code": "1009", "name": "SSL/TLS"},
                {"code": "x", "name": "Not a number"}
            ]
        }"#;
        let p = application_protocols(body).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p.code_of("bittorrent"), Some(1053));
        assert_eq!(p.code_of("Https"), Some(1002));
        assert_eq!(p.code_of("ssl-tls"), Some(1009));
        assert_eq!(p.code_of("gopher"), None);
        assert!(p.has_code(1001));
        assert!(!p.has_code(7));
        assert_eq!(p.closest("htps")[0], "HTTPS");
        let plural = br#"{"applicationprotocols": [{"code": "5", "name": "DNS"}]}"#;
        assert_eq!(
            application_protocols(plural).unwrap().code_of("dns"),
            Some(5)
        );
    }

    #[test]
    fn other_shapes_are_refused() {
        for body in [
            &br#"[{"code": "1", "name": "Unknown"}]"#[..],
            br#"{"Country": []}"#,
            br#"{"Application protocol": [{"code": "x", "name": "y"}]}"#,
            br#"{"Application protocol": 5}"#,
            b"not json",
        ] {
            assert!(application_protocols(body).is_err());
        }
    }
}
