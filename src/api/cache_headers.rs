//! HTTP caching semantics for callers: request directives in, `Cache-Status`, `Age`,
//! `Cache-Control`, `ETag`, 304s and gzip out.

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

use super::observe::UpstreamMs;
use crate::cache::{Directives, Route};
use crate::error::failure_status;
use crate::query::{Encoding, Representation};
use crate::service::{Origin, Served};

/// What became of a caller's `Cache-Control: no-cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// As the caller asked (or it did not ask).
    AsAsked,
    /// The caller is over its forced refreshes (`rate_limit.no_cache_per_minute`): answered as
    /// if it had not asked, and `Cache-Status` says so.
    Limited,
}

pub fn directives(req: &HttpRequest) -> Directives {
    let mut d = Directives::default();
    for value in req.headers().get_all(header::CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in text.split(',').map(|t| t.trim().to_ascii_lowercase()) {
            match directive.as_str() {
                "no-cache" | "max-age=0" => d.no_cache = true,
                "only-if-cached" => d.only_if_cached = true,
                _ => {}
            }
        }
    }
    if req
        .headers()
        .get(header::PRAGMA)
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"no-cache"))
    {
        d.no_cache = true;
    }
    d
}

fn cache_status(answer: &Served, ttl: i64, refresh: Refresh) -> HeaderValue {
    let status = route_status(answer, ttl);
    match refresh {
        Refresh::AsAsked => status,
        Refresh::Limited => {
            let text = String::from_utf8_lossy(status.as_bytes()).into_owned();
            let limited = match text.split_once("; detail=") {
                Some((head, detail)) => format!("{head}; detail=\"no-cache-limited {detail}\""),
                None => format!("{text}; detail=no-cache-limited"),
            };
            HeaderValue::try_from(limited).unwrap_or(status)
        }
    }
}

fn route_status(answer: &Served, ttl: i64) -> HeaderValue {
    if answer.entry.left_out > 0 {
        return HeaderValue::from_static("metricgate; fwd=miss; detail=partial");
    }
    // Made from cached segments without asking the appliance: a hit, whatever the answer
    // cache's own lookup found.
    let origin = answer.sourcing.as_ref().map(|s| s.origin);
    let assembled = match (answer.route, origin) {
        (Route::Miss { .. }, Some(Origin::Assembled)) => Some(&b"; detail=assembled"[..]),
        (Route::Miss { .. }, Some(Origin::Prefetched)) => Some(&b"; detail=prefetched"[..]),
        _ => None,
    };
    let head = match (answer.route, assembled) {
        (_, Some(_)) => "metricgate; hit; ttl=",
        (route, None) => match route {
            Route::Hit | Route::SharedHit => "metricgate; hit; ttl=",
            Route::Miss { collapsed: false } => "metricgate; fwd=miss; stored; ttl=",
            Route::Miss { collapsed: true } => "metricgate; fwd=miss; collapsed; stored; ttl=",
            Route::Forced { collapsed: false } => "metricgate; fwd=request; stored; ttl=",
            Route::Forced { collapsed: true } => "metricgate; fwd=request; collapsed; stored; ttl=",
            Route::StaleWhileRevalidate => "metricgate; hit; ttl=",
            Route::StaleIfError => {
                let status = answer.failure.as_ref().map_or(502, failure_status);
                let text = format!(
                    "metricgate; fwd=stale; fwd-status={status}; ttl={ttl}; detail=stale-if-error"
                );
                return HeaderValue::try_from(text)
                    .unwrap_or(HeaderValue::from_static("metricgate"));
            }
        },
    };
    let tail: &[u8] = match (answer.route, assembled) {
        (_, Some(detail)) => detail,
        (Route::StaleWhileRevalidate, None) => b"; detail=stale-while-revalidate",
        (Route::SharedHit, None) => b"; detail=shared",
        _ => b"",
    };
    // Built by hand: every answer carries it (a hit is otherwise a few lookups).
    let mut text = Vec::with_capacity(head.len() + 20 + tail.len());
    text.extend_from_slice(head.as_bytes());
    text.extend_from_slice(itoa::Buffer::new().format(ttl).as_bytes());
    text.extend_from_slice(tail);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or(HeaderValue::from_static("metricgate"))
}

fn etag_matches(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

/// `Warning` (RFC 7234's, code 199) for an answer that left out parts of the appliance's: a
/// count only; JSON answers name each in `warnings`, the log names their keys.
fn warning(left_out: usize) -> String {
    format!(
        "199 metricgate \"{left_out} part(s) of the appliance's answer had no known shape and were left out; this answer is not cached\""
    )
}

pub fn respond(
    req: &HttpRequest,
    answer: &Served,
    representation: Representation,
    refresh: Refresh,
) -> HttpResponse {
    let now = answer.now_ms;
    let entry = &answer.entry;
    let ttl = entry.deadlines.ttl_secs(now);
    let not_modified = etag_matches(req, &entry.etag);
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((
            header::HeaderName::from_static("cache-status"),
            cache_status(answer, ttl, refresh),
        ))
        .insert_header((header::AGE, entry.deadlines.age_secs(now)))
        .insert_header((header::ETAG, entry.etag.as_str()))
        .insert_header((
            header::VARY,
            HeaderValue::from_static("accept, accept-encoding"),
        ));
    if entry.left_out > 0 {
        // Served once to those who asked, kept nowhere: no cache downstream keeps it either.
        response
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::WARNING, warning(entry.left_out)));
    } else {
        response.insert_header((header::CACHE_CONTROL, max_age(ttl)));
    }
    let asked = answer
        .sourcing
        .as_ref()
        .is_none_or(|s| s.origin == Origin::Appliance);
    if let (Route::Miss { .. } | Route::Forced { .. }, true) = (answer.route, asked) {
        response
            .extensions_mut()
            .insert(UpstreamMs(entry.upstream_ms));
    }
    if let Some(ranges) = answer
        .sourcing
        .as_ref()
        .filter(|s| !s.fetched.is_empty())
        .and_then(|s| fetched_header(&s.fetched))
    {
        response.insert_header((HeaderName::from_static(FETCHED), ranges));
    }
    if not_modified {
        return response.finish();
    }
    response.content_type(HeaderValue::from_static(
        representation.format.content_type(),
    ));
    match &entry.gzip {
        Some(gz) if representation.encoding == Encoding::Gzip => response
            .insert_header((header::CONTENT_ENCODING, HeaderValue::from_static("gzip")))
            .body(gz.clone()),
        _ => response.body(entry.body.clone()),
    }
}

/// The ranges this answer's own fetch asked of the appliance, in the spirit of Trickster's
/// `X-Trickster-Result`: `start/end` in RFC 3339 (UTC), comma-separated, oldest first.
pub const FETCHED: &str = "metricgate-fetched";

fn fetched_header(ranges: &[(i64, i64)]) -> Option<HeaderValue> {
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map(|t| {
            if ms % 1000 == 0 {
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            } else {
                t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            }
        })
    };
    let mut text = String::new();
    for (start, end) in ranges {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str(&iso(*start)?);
        text.push('/');
        text.push_str(&iso(*end)?);
    }
    HeaderValue::try_from(text).ok()
}

fn max_age(ttl: i64) -> HeaderValue {
    let mut text = Vec::with_capacity(28);
    text.extend_from_slice(b"max-age=");
    text.extend_from_slice(itoa::Buffer::new().format(ttl.max(0)).as_bytes());
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or(HeaderValue::from_static("no-cache"))
}
