//! HTTP caching semantics for callers: request directives in, `Cache-Status`, `Age`,
//! `Cache-Control`, `ETag`, 304s and gzip out.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

use crate::cache::{Answer, Directives, Route};
use crate::telemetry::request::UpstreamMs;

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

fn cache_status(answer: &Answer, ttl: i64) -> String {
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
        Route::StaleIfError { status } => {
            format!("metricgate; fwd=stale; fwd-status={status}; ttl={ttl}; detail=stale-if-error")
        }
    }
}

fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|part| {
                let mut pieces = part.split(';').map(str::trim);
                pieces.next() == Some("gzip")
                    && !pieces.any(|p| p.replace(' ', "") == "q=0" || p == "q=0.0")
            })
        })
}

fn etag_matches(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

/// Whether the caller prefers CSV (`Accept: text/csv`).
pub fn accepts_csv(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/csv")))
}

pub fn respond(
    req: &HttpRequest,
    answer: &Answer,
    now: i64,
    content_type: &'static str,
) -> HttpResponse {
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
            cache_status(answer, ttl),
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
    response.content_type(HeaderValue::from_static(content_type));
    match &entry.gzip {
        Some(gz) if accepts_gzip(req) => response
            .insert_header((header::CONTENT_ENCODING, HeaderValue::from_static("gzip")))
            .body(gz.clone()),
        _ => response.body(entry.body.clone()),
    }
}
