//! HTTP caching semantics for callers: request directives in, `Cache-Status`, `Age`,
//! `Cache-Control`, `ETag`, 304s and gzip out.

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use std::cell::RefCell;
use std::sync::{Arc, Weak};

use super::observe::UpstreamMs;
use crate::cache::{Directives, Entry, Route, gzip};
use crate::error::failure_status;
use crate::query::{Encoding, Representation};
use crate::service::fanout::FanOut;
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
    as_refreshed(route_status(answer, ttl), refresh)
}

/// `status`, saying so when the caller's `no-cache` was over its limit.
fn as_refreshed(status: HeaderValue, refresh: Refresh) -> HeaderValue {
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
    let archived = answer.sourcing.as_ref().is_some_and(|s| s.archived);
    let assembled = match (answer.route, origin) {
        // Answered, all or in part, from the archive: it says so, fetched or not.
        (Route::Miss { .. }, Some(Origin::Assembled | Origin::Prefetched)) if archived => {
            Some(&b"; detail=archive"[..])
        }
        (Route::Miss { .. }, Some(Origin::Appliance)) if archived => None,
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
        // Fetched in part, the rest from the archive.
        (Route::Miss { .. } | Route::Forced { .. }, None) if archived => b"; detail=archive",
        (Route::StaleWhileRevalidate, None) => b"; detail=stale-while-revalidate",
        (Route::SharedHit, None) => b"; detail=shared",
        _ => b"",
    };
    status_value(head, ttl, tail)
}

/// A plain hit's `Cache-Status`.
fn hit_status(ttl: i64) -> HeaderValue {
    status_value("metricgate; hit; ttl=", ttl, b"")
}

fn status_value(head: &str, ttl: i64, tail: &[u8]) -> HeaderValue {
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

/// The header values that change with an answer's age: rendered for each response, except
/// that a worker serving the same stored answer again at the same age (a hot answer, many
/// times a second) reuses the last ones instead of formatting and validating them again.
#[derive(Clone)]
struct HitHeaders {
    cache_status: HeaderValue,
    age: HeaderValue,
    cache_control: HeaderValue,
    etag: Option<HeaderValue>,
}

/// This worker's last plain hit: the answer (held weakly, so its address is not reused while
/// it is compared), its age and freshness left, and its headers.
struct LastHit {
    entry: Weak<Entry>,
    age: i64,
    ttl: i64,
    headers: HitHeaders,
}

thread_local! {
    static LAST_HIT: RefCell<Option<LastHit>> = const { RefCell::new(None) };
}

impl HitHeaders {
    fn new(cache_status: HeaderValue, age: i64, ttl: i64, etag: &str) -> Self {
        Self {
            cache_status,
            age: HeaderValue::from(age),
            cache_control: max_age(ttl),
            etag: HeaderValue::from_str(etag).ok(),
        }
    }

    fn render(answer: &Served, age: i64, ttl: i64, refresh: Refresh) -> Self {
        Self::new(
            cache_status(answer, ttl, refresh),
            age,
            ttl,
            &answer.entry.etag,
        )
    }

    /// A plain hit's headers (`Cache-Status: metricgate; hit; ttl=…`), from this worker's
    /// last ones when they still say the same.
    fn of(entry: &Arc<Entry>, age: i64, ttl: i64) -> Self {
        LAST_HIT.with_borrow_mut(|last| {
            if let Some(l) = last.as_ref().filter(|l| {
                std::ptr::eq(l.entry.as_ptr(), Arc::as_ptr(entry)) && l.age == age && l.ttl == ttl
            }) {
                return l.headers.clone();
            }
            let headers = Self::new(hit_status(ttl), age, ttl, &entry.etag);
            *last = Some(LastHit {
                entry: Arc::downgrade(entry),
                age,
                ttl,
                headers: headers.clone(),
            });
            headers
        })
    }
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
    // Headers go straight into the response's map: the builder converts each pair again,
    // and every cache hit passes here.
    let mut response = HttpResponse::new(if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    });
    let headers = response.headers_mut();
    let age = entry.deadlines.age_secs(now);
    let plain_hit = answer.route == Route::Hit && refresh == Refresh::AsAsked;
    let rendered = if plain_hit && entry.left_out == 0 && answer.sourcing.is_none() {
        HitHeaders::of(entry, age, ttl)
    } else {
        HitHeaders::render(answer, age, ttl, refresh)
    };
    headers.insert(
        HeaderName::from_static("cache-status"),
        rendered.cache_status,
    );
    headers.insert(header::AGE, rendered.age);
    if let Some(etag) = rendered.etag {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::VARY,
        HeaderValue::from_static("accept, accept-encoding"),
    );
    if entry.left_out > 0 {
        // Served once to those who asked, kept nowhere: no cache downstream keeps it either.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(warning) = HeaderValue::try_from(warning(entry.left_out)) {
            headers.insert(header::WARNING, warning);
        }
    } else {
        headers.insert(header::CACHE_CONTROL, rendered.cache_control);
    }
    if let Some(ranges) = answer
        .sourcing
        .as_ref()
        .filter(|s| !s.fetched.is_empty())
        .and_then(|s| fetched_header(&s.fetched))
    {
        headers.insert(HeaderName::from_static(FETCHED), ranges);
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
    if not_modified {
        return response;
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(representation.format.content_type()),
    );
    let body = match &entry.gzip {
        Some(gz) if representation.encoding == Encoding::Gzip => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            gz.clone()
        }
        _ => entry.body.clone(),
    };
    response.set_body(BoxBody::new(body))
}

/// How far a part of a merged answer went, ordered from the least to the most forwarded: the
/// merged answer's `Cache-Status` is its most forwarded part's, so it never claims to be a
/// hit when any appliance was asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Forwarded {
    /// From a cache, or assembled from cached segments (as [`route_status`] counts them).
    Hit,
    Miss,
    /// Fetched because the caller said `no-cache`.
    Request,
    /// Served stale because its fetch failed with this status.
    Stale(u16),
}

fn forwarded(part: &Served) -> Forwarded {
    let assembled = part
        .sourcing
        .as_ref()
        .is_some_and(|s| s.origin != Origin::Appliance);
    match part.route {
        Route::Hit | Route::SharedHit | Route::StaleWhileRevalidate => Forwarded::Hit,
        Route::Miss { .. } if assembled => Forwarded::Hit,
        Route::Miss { .. } => Forwarded::Miss,
        Route::Forced { .. } => Forwarded::Request,
        Route::StaleIfError => Forwarded::Stale(part.failure.as_ref().map_or(502, failure_status)),
    }
}

/// A merged answer's `Cache-Status` (RFC 9211 lists caches, not parts, so it is one entry):
/// its most forwarded part's, with the least freshness left of any part; never `stored`, since
/// the merged answer is kept nowhere (its parts are, by their appliances' caches). An answer
/// missing a part is `fwd=miss; detail=partial`, as one left out in part is.
fn fanout_status(merged: &FanOut, ttl: i64) -> HeaderValue {
    if !merged.is_complete() {
        return HeaderValue::from_static("metricgate; fwd=miss; detail=partial");
    }
    let most = merged
        .parts
        .iter()
        .map(|p| forwarded(&p.served))
        .max()
        .unwrap_or(Forwarded::Miss);
    let text = match most {
        Forwarded::Hit => format!("metricgate; hit; ttl={ttl}"),
        Forwarded::Miss => format!("metricgate; fwd=miss; ttl={ttl}"),
        Forwarded::Request => format!("metricgate; fwd=request; ttl={ttl}"),
        Forwarded::Stale(status) => {
            format!("metricgate; fwd=stale; fwd-status={status}; ttl={ttl}; detail=stale-if-error")
        }
    };
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("metricgate"))
}

/// A `Warning` value (code 199) for one appliance of a merged answer: its reason, kept to
/// what a quoted string carries (printable ASCII, no `"` or `\\`).
fn appliance_warning(appliance: &str, reason: &str) -> Option<HeaderValue> {
    let text: String = format!("appliance {appliance}: {reason}")
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect();
    HeaderValue::try_from(format!("199 metricgate \"{text}\"")).ok()
}

/// An answer merged from several appliances (`appliances=`), written with the caching
/// headers of its parts: `Age` the oldest part's, freshness the least any part has left,
/// `ETag` over the merged body. An answer missing an appliance (or part of one's answer) says
/// so in a `Warning` per appliance and is `no-store`: no cache downstream may keep it as the
/// whole answer either.
pub fn respond_fanout(
    req: &HttpRequest,
    merged: &FanOut,
    representation: Representation,
    refresh: Refresh,
    gzip_min: usize,
) -> HttpResponse {
    let age = merged
        .parts
        .iter()
        .map(|p| p.served.entry.deadlines.age_secs(p.served.now_ms))
        .max()
        .unwrap_or(0);
    let ttl = merged
        .parts
        .iter()
        .map(|p| p.served.entry.deadlines.ttl_secs(p.served.now_ms))
        .min()
        .unwrap_or(0);
    let not_modified = etag_matches(req, &merged.etag);
    let mut response = HttpResponse::new(if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    });
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("cache-status"),
        as_refreshed(fanout_status(merged, ttl), refresh),
    );
    headers.insert(header::AGE, HeaderValue::from(age));
    if let Ok(etag) = HeaderValue::from_str(&merged.etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::VARY,
        HeaderValue::from_static("accept, accept-encoding"),
    );
    if merged.is_complete() {
        headers.insert(header::CACHE_CONTROL, max_age(ttl));
    } else {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    for failure in &merged.failures {
        if let Some(warning) = appliance_warning(&failure.appliance, &failure.reason) {
            headers.append(header::WARNING, warning);
        }
    }
    for part in merged.parts.iter().filter(|p| p.served.entry.left_out > 0) {
        let left_out = part.served.entry.left_out;
        let reason = format!(
            "{left_out} part(s) of the appliance's answer had no known shape and were left out; this answer is not cached"
        );
        if let Some(warning) = appliance_warning(&part.appliance, &reason) {
            headers.append(header::WARNING, warning);
        }
    }
    // The access log's upstream time: the slowest appliance this request's own fetches asked.
    let upstream_ms = merged
        .parts
        .iter()
        .filter(|p| matches!(p.served.route, Route::Miss { .. } | Route::Forced { .. }))
        .filter(|p| {
            p.served
                .sourcing
                .as_ref()
                .is_none_or(|s| s.origin == Origin::Appliance)
        })
        .map(|p| p.served.entry.upstream_ms)
        .max();
    if let Some(ms) = upstream_ms {
        response.extensions_mut().insert(UpstreamMs(ms));
    }
    if not_modified {
        return response;
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(representation.format.content_type()),
    );
    let gzipped = (representation.encoding == Encoding::Gzip && merged.body.len() >= gzip_min)
        .then(|| gzip(&merged.body))
        .flatten();
    let body = match gzipped {
        Some(gz) => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            gz
        }
        None => merged.body.clone(),
    };
    response.set_body(BoxBody::new(body))
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
