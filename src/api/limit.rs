//! The caller's limit on every metric route: who is asking, whether they may, and the
//! `RateLimit` headers either way.

use actix_web::HttpResponse;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};

use crate::error::{ApiError, PrometheusError};
use crate::limits::{Decision, RateState};
use crate::state::AppState;

/// `RateLimit-Policy` and `RateLimit`, as in draft-ietf-httpapi-ratelimit-headers-07.
fn write_headers(headers: &mut HeaderMap, policy: &HeaderValue, s: &RateState) {
    // Written by hand: every limited response carries it, and `format!` showed in profiles.
    let mut current = Vec::with_capacity(48);
    let mut number = itoa::Buffer::new();
    current.extend_from_slice(b"limit=");
    current.extend_from_slice(number.format(s.limit).as_bytes());
    current.extend_from_slice(b", remaining=");
    current.extend_from_slice(number.format(s.remaining).as_bytes());
    current.extend_from_slice(b", reset=");
    current.extend_from_slice(number.format(s.reset_secs).as_bytes());
    headers.insert(HeaderName::from_static("ratelimit-policy"), policy.clone());
    if let Ok(c) = HeaderValue::from_maybe_shared(bytes::Bytes::from(current)) {
        headers.insert(HeaderName::from_static("ratelimit"), c);
    }
}

/// Applies the caller's limit to every request of the scope it wraps.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    limit(req, next, |retry_after_secs| {
        ApiError::RateLimited { retry_after_secs }.error_response()
    })
    .await
}

/// The same limit for the Prometheus-compatible API, refusing in Prometheus' envelope.
pub async fn prometheus(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    limit(req, next, |retry_after_secs| {
        PrometheusError::RateLimited { retry_after_secs }.error_response()
    })
    .await
}

async fn limit<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
    refuse: fn(u64) -> HttpResponse,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await.map(|r| r.map_into_left_body());
    };
    let who = state.callers.identify(req.request());
    let shared = match state.shared.as_ref().filter(|s| s.is_up()) {
        Some(s) => state.callers.check_shared(s, &who).await,
        None => None,
    };
    let (decision, policy) = match shared {
        Some(d) => d,
        None => state.callers.check(&who),
    };
    // Not kept in the request's extensions: that map insert showed on every hit, and the
    // few that need the caller again (an access line, a forced refresh) identify it again.
    match decision {
        Decision::Allowed(s) => {
            let mut response = next.call(req).await?;
            write_headers(response.headers_mut(), &policy, &s);
            Ok(response.map_into_left_body())
        }
        Decision::Limited {
            state: s,
            retry_after_secs,
        } => {
            let mut response = refuse(retry_after_secs);
            write_headers(response.headers_mut(), &policy, &s);
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}
