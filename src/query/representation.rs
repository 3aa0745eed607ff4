//! How an answer is written, decided once per request from `format`, `Accept` and
//! `Accept-Encoding` (with their q-values): index keys, cache keys, body and headers all
//! follow this one decision.

/// The body's shape and media type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Format {
    #[default]
    Json,
    Csv,
    /// The shapes the darktrace-sdk documentation promises, for `/darktrace/metricdata`.
    Sdk,
    /// The appliance's own array, as the vendor's API guide documents it, for
    /// `/appliance/metricdata`.
    Appliance,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json | Format::Sdk | Format::Appliance => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }

    /// A short tag for keys that must tell representations apart.
    pub fn tag(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Sdk => "sdk",
            Format::Appliance => "appliance",
        }
    }
}

/// Whether the body may be sent gzip-compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    #[default]
    Identity,
    Gzip,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Representation {
    pub format: Format,
    pub encoding: Encoding,
}

/// Which representations a route offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// `/v1`: JSON, or CSV by `format=csv` or `Accept`.
    JsonOrCsv,
    /// `/darktrace`: the SDK's JSON shapes only.
    Sdk,
    /// `/appliance`: the appliance's JSON array only.
    Appliance,
}

impl Representation {
    /// `raw_query` is the whole query string: only its `format` parameter is read here (the
    /// parser reports a bad value), decoded as the parser decodes it, so `%66ormat=csv` is
    /// `format=csv` here too.
    pub fn negotiate(
        offer: Offer,
        raw_query: &str,
        accept: Option<&str>,
        accept_encoding: Option<&str>,
    ) -> Self {
        let encoding = if accept_encoding.is_some_and(accepts_gzip) {
            Encoding::Gzip
        } else {
            Encoding::Identity
        };
        let format = match offer {
            Offer::Sdk => Format::Sdk,
            Offer::Appliance => Format::Appliance,
            Offer::JsonOrCsv => match format_parameter(raw_query) {
                Some(f) => f,
                None if accept.is_some_and(prefers_csv) => Format::Csv,
                None => Format::Json,
            },
        };
        Self { format, encoding }
    }
}

/// The first `format` parameter, when it names a format; a repeated or bad one is the
/// parser's to refuse. Decodes only keys that could spell `format` (and then that one value),
/// so the hit path does not decode every value of the query.
fn format_parameter(raw_query: &str) -> Option<Format> {
    // Every request asks this before anything else: SIMD searches (`memchr`), where `str`'s
    // generic searches showed in the hit path's profile.
    static FORMAT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("format"));
    let bytes = raw_query.as_bytes();
    if FORMAT.find(bytes).is_none() && memchr::memchr(b'%', bytes).is_none() {
        return None;
    }
    let value = raw_query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let is_format = if key.contains(['%', '+']) {
            decode(key) == "format"
        } else {
            key == "format"
        };
        is_format.then_some(value)
    })?;
    match decode(value).as_str() {
        "json" => Some(Format::Json),
        "csv" => Some(Format::Csv),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` decoding of one key or value, as the parser does it.
fn decode(text: &str) -> String {
    let bytes = text.replace('+', " ");
    percent_encoding::percent_decode_str(&bytes)
        .decode_utf8_lossy()
        .into_owned()
}

/// One `type/subtype;q=…` element's media range and weight. A weight that does not parse
/// counts as 1, as most servers read it.
fn media_ranges(header: &str) -> impl Iterator<Item = (&str, f32)> {
    header.split(',').filter_map(|element| {
        let mut parts = element.split(';');
        let range = parts.next()?.trim();
        if range.is_empty() {
            return None;
        }
        let q = parts
            .filter_map(|p| {
                let (name, value) = p.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| value.trim().parse::<f32>().ok())
                    .flatten()
            })
            .next()
            .unwrap_or(1.0);
        Some((range, q))
    })
}

/// The weight a header gives `wanted` (`type/subtype`): the most specific range that matches.
fn weight(header: &str, wanted: &str) -> f32 {
    let kind = wanted.split('/').next().unwrap_or("");
    let mut best: Option<(u8, f32)> = None;
    for (range, q) in media_ranges(header) {
        let specificity = if range.eq_ignore_ascii_case(wanted) {
            3
        } else if range
            .split_once('/')
            .is_some_and(|(t, s)| s == "*" && t.eq_ignore_ascii_case(kind))
        {
            2
        } else if range == "*/*" {
            1
        } else {
            continue;
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// CSV only when the caller weighs it above JSON; a tie, or no preference, is JSON.
fn prefers_csv(accept: &str) -> bool {
    let csv = weight(accept, "text/csv");
    csv > 0.0 && csv > weight(accept, "application/json")
}

/// gzip when listed with a weight above 0, or covered by `*` with a weight above 0.
fn accepts_gzip(accept_encoding: &str) -> bool {
    let mut star = None;
    for (coding, q) in media_ranges(accept_encoding) {
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            return q > 0.0;
        }
        if coding == "*" {
            star = Some(q);
        }
    }
    star.is_some_and(|q| q > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(raw: &str, accept: Option<&str>) -> Format {
        Representation::negotiate(Offer::JsonOrCsv, raw, accept, None).format
    }

    fn gzip(accept_encoding: &str) -> bool {
        Representation::negotiate(Offer::JsonOrCsv, "", None, Some(accept_encoding)).encoding
            == Encoding::Gzip
    }

    #[test]
    fn the_format_parameter_is_read_decoded() {
        assert_eq!(format("metric=a&format=csv", None), Format::Csv);
        assert_eq!(format("metric=a&format=%63sv", None), Format::Csv);
        assert_eq!(format("metric=a&%66ormat=csv", None), Format::Csv);
        assert_eq!(
            format("metric=a&format=json", Some("text/csv")),
            Format::Json
        );
        assert_eq!(format("metric=a&xformat=csv", None), Format::Json);
        assert_eq!(format("metric=format%3Dcsv", None), Format::Json);
    }

    #[test]
    fn accept_weights_decide_between_json_and_csv() {
        assert_eq!(format("", Some("text/csv")), Format::Csv);
        assert_eq!(
            format("", Some("text/csv;q=0, application/json")),
            Format::Json
        );
        assert_eq!(format("", Some("text/csv;q=0")), Format::Json);
        assert_eq!(
            format("", Some("application/json;q=0.5, text/csv")),
            Format::Csv
        );
        assert_eq!(format("", Some("application/json, text/csv")), Format::Json);
        assert_eq!(
            format("", Some("text/*;q=0.9, application/json;q=0.1")),
            Format::Csv
        );
        assert_eq!(format("", Some("*/*")), Format::Json);
        assert_eq!(format("", Some("text/html")), Format::Json);
        assert_eq!(
            Representation::negotiate(Offer::Sdk, "format=csv", Some("text/csv"), None).format,
            Format::Sdk
        );
    }

    #[test]
    fn gzip_needs_a_weight_above_zero() {
        assert!(gzip("gzip"));
        assert!(gzip("deflate, gzip;q=0.5"));
        assert!(!gzip("gzip;q=0"));
        assert!(!gzip("gzip;q=0.000"));
        assert!(!gzip("gzip; q=0.0"));
        assert!(!gzip("identity"));
        assert!(gzip("*"));
        assert!(!gzip("*;q=0"));
        assert!(!gzip("gzip;q=0, *"), "gzip itself refused");
    }
}
