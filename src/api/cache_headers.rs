//! HTTP caching semantics for callers: request directives in, `Cache-Status`, `Age`,
//! `Cache-Control`, `ETag`, 304s and gzip out.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

use super::observe::UpstreamMs;
use crate::cache::{Directives, Route};
use crate::error::failure_status;
use crate::query::{Encoding, Representation};
use crate::service::Served;

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

fn cache_status(answer: &Served, ttl: i64, refresh: Refresh) -> String {
    let status = route_status(answer, ttl);
    match refresh {
        Refresh::AsAsked => status,
        Refresh::Limited => match status.split_once("; detail=") {
            Some((head, detail)) => format!("{head}; detail=\"no-cache-limited {detail}\""),
            None => format!("{status}; detail=no-cache-limited"),
        },
    }
}

fn route_status(answer: &Served, ttl: i64) -> String {
    match answer.route {
        Route::Hit => format!("metricgate; hit; ttl={ttl}"),
        Route::Miss { collapsed: false } => format!("metricgate; fwd=miss; stored; ttl={ttl}"),
        Route::Miss { collapsed: true } => {
            format!("metricgate; fwd=miss; collapsed; stored; ttl={ttl}")
        }
        Route::Forced { collapsed } => format!(
            "metricgate; fwd=request{}; stored; ttl={ttl}",
            if collapsed { "; collapsed" } else { "" }
        ),
        Route::StaleWhileRevalidate => {
            format!("metricgate; hit; ttl={ttl}; detail=stale-while-revalidate")
        }
        Route::StaleIfError => {
            let status = answer.failure.as_ref().map_or(502, failure_status);
            format!("metricgate; fwd=stale; fwd-status={status}; ttl={ttl}; detail=stale-if-error")
        }
    }
}

fn etag_matches(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
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
        .insert_header((header::CACHE_CONTROL, format!("max-age={}", ttl.max(0))))
        .insert_header((header::ETAG, entry.etag.as_str()))
        .insert_header((
            header::VARY,
            HeaderValue::from_static("accept, accept-encoding"),
        ));
    if let Route::Miss { .. } | Route::Forced { .. } = answer.route {
        response
            .extensions_mut()
            .insert(UpstreamMs(entry.upstream_ms));
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
