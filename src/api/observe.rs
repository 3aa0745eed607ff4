//! Per request, before routing: hostile shapes refused, `HEAD` answered as `GET` without the
//! body, an id (the caller's `X-Request-Id`, or a new one, returned either way), a span that
//! every log line of the request carries, an access line (as `server.access_log` says), and
//! the HTTP series.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::HttpMessage;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use pin_project_lite::pin_project;

use crate::error::ApiError;
use crate::state::AppState;

/// How long the appliance took for the answer this response carries (none for cache hits).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamMs(pub u64);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's id when it is a sensible token, else a new UUID.
fn request_id(req: &ServiceRequest) -> HeaderValue {
    req.headers()
        .get(&REQUEST_ID)
        .filter(|id| {
            (1..=128).contains(&id.len())
                && id
                    .as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        })
        .cloned()
        .unwrap_or_else(|| {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let id = new_id().hyphenated().encode_lower(&mut buf);
            HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("-"))
        })
}

thread_local! {
    /// This thread's random half of every id it makes, and how many it has made.
    static IDS: std::cell::Cell<(u64, u64)> = std::cell::Cell::new((rand::random(), rand::random()));
}

/// A version-4 UUID that names one request: a random half per thread, and a bijective mix of
/// the thread's count (unique, unpredictable enough for an id, and far cheaper than a
/// cryptographic generator per request, which showed in the hit path's profile).
fn new_id() -> uuid::Uuid {
    let (half, count) = IDS.with(|ids| {
        let (half, count) = ids.get();
        ids.set((half, count.wrapping_add(1)));
        (half, count)
    });
    let mixed = splitmix64(count);
    uuid::Builder::from_random_bytes((u128::from(half) << 64 | u128::from(mixed)).to_be_bytes())
        .into_uuid()
}

/// SplitMix64's finalizer: a bijection on `u64` that scatters consecutive counts.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The route, as a label of bounded cardinality. A known path is its own pattern (without
/// the allocation `match_pattern` makes); the one route with a parameter is matched by prefix.
fn route_label(path: &str) -> &'static str {
    let (by_id, by_id_prefix) = super::METRIC_BY_ID;
    super::ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or(if path.starts_with("/docs/") {
            "/docs/"
        } else if path.starts_with("/explorer/") {
            "/explorer/"
        } else if path.starts_with(by_id_prefix) {
            by_id
        } else if path.starts_with(super::APPLIANCE_METRIC_BY_ID.1) {
            super::APPLIANCE_METRIC_BY_ID.0
        } else if path.starts_with(super::prometheus::LABEL_VALUES.1) {
            super::prometheus::LABEL_VALUES.0
        } else {
            super::routes::named_route(path).unwrap_or("unmatched")
        })
}

/// A path as the routes spell them: anything a router or proxy might read two ways (encoded
/// characters, dot or empty segments, parameters, backslashes) is refused before routing.
fn is_canonical(path: &str) -> bool {
    // One pass over the bytes (it runs on every request): no `%`, `\\` or `;`, and no empty,
    // `.` or `..` segment after the leading `/`.
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut segment_start = 1;
    for (i, b) in bytes.iter().enumerate().skip(1) {
        match b {
            b'%' | b'\\' | b';' => return false,
            b'/' => {
                if matches!(&bytes[segment_start..i], b"" | b"." | b"..") {
                    return false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    !matches!(&bytes[segment_start..], b"." | b"..")
}

/// Longest path and query accepted, in bytes.
const MAX_URI_BYTES: usize = 8192;
/// Most header bytes (names and values) accepted.
const MAX_HEADER_BYTES: usize = 16384;

/// Requests refused before routing: over-long, or with a path that could be read two ways.
fn refusal(req: &ServiceRequest) -> Option<ApiError> {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Some(ApiError::UriTooLong {
            limit: MAX_URI_BYTES,
        });
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Some(ApiError::HeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        });
    }
    (!is_canonical(req.uri().path())).then_some(ApiError::NonCanonicalPath)
}

/// The middleware, one per server worker (it holds that worker's handle on the state).
/// Written out rather than with `from_fn`, whose `Next` boxes every request's future.
pub struct Observe {
    state: Rc<AppState>,
}

impl Observe {
    pub fn new(state: AppState) -> Self {
        Self {
            state: Rc::new(state),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Observe
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = ObserveService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ObserveService {
            service,
            state: self.state.clone(),
        }))
    }
}

pub struct ObserveService<S> {
    service: S,
    state: Rc<AppState>,
}

impl<S, B> Service<ServiceRequest> for ObserveService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Observed<S::Future, B>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let id = request_id(&req);
        let span = tracing::info_span!("request", request_id = %id.to_str().unwrap_or("-"));
        let method = req.method().clone();
        // Every GET route answers HEAD: routed as a GET, and actix sends the head without the
        // body (it reads the method from the wire, not from here).
        if method == Method::HEAD {
            req.head_mut().method = Method::GET;
        }
        let finish = Finish {
            started,
            id,
            span,
            method,
            state: self.state.clone(),
        };
        match refusal(&req) {
            None => {
                let inner = {
                    let _entered = finish.span.enter();
                    self.service.call(req)
                };
                Observed {
                    inner: Some(inner),
                    refused: None,
                    finish: Some(finish),
                }
            }
            Some(e) => {
                let answer = actix_web::ResponseError::error_response(&e);
                Observed {
                    inner: None,
                    refused: Some(req.into_response(answer).map_into_right_body()),
                    finish: Some(finish),
                }
            }
        }
    }
}

pin_project! {
    /// A request on its way through the routes, observed when its response comes back.
    pub struct Observed<F, B> {
        #[pin]
        inner: Option<F>,
        refused: Option<ServiceResponse<EitherBody<B>>>,
        finish: Option<Finish>,
    }
}

impl<F, B> Future for Observed<F, B>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
    B: MessageBody,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let response = match this.inner.as_mut().as_pin_mut() {
            Some(inner) => {
                let polled = {
                    let _entered = this.finish.as_ref().map(|f| f.span.enter());
                    inner.poll(cx)
                };
                let Poll::Ready(outcome) = polled else {
                    return Poll::Pending;
                };
                this.inner.set(None);
                outcome?.map_into_left_body()
            }
            None => match this.refused.take() {
                Some(response) => response,
                // Polled again after it finished.
                None => return Poll::Pending,
            },
        };
        Poll::Ready(Ok(match this.finish.take() {
            Some(finish) => finish.record(response),
            None => response,
        }))
    }
}

/// What is recorded of a request once its response is known.
struct Finish {
    started: Instant,
    id: HeaderValue,
    span: tracing::Span,
    method: Method,
    state: Rc<AppState>,
}

impl Finish {
    /// The HTTP series, the request id on the response, and the access line.
    fn record<B>(self, mut response: ServiceResponse<B>) -> ServiceResponse<B> {
        let elapsed = self.started.elapsed();
        let status = response.status().as_u16();
        let route = route_label(response.request().path());
        let Finish {
            id,
            span,
            method,
            state,
            ..
        } = self;
        state
            .http_series
            .record(route, status, elapsed.as_secs_f64());
        if status == 429 {
            state.metrics.rate_limited.inc();
        }
        response.headers_mut().insert(REQUEST_ID, id);
        if state.access_log.admit(status) && tracing::enabled!(tracing::Level::INFO) {
            let client = state.callers.identify(response.request()).to_string();
            let upstream_ms = response
                .response()
                .extensions()
                .get::<UpstreamMs>()
                .map(|u| u.0);
            let cache = response
                .headers()
                .get("cache-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let path = response.request().path().to_owned();
            // Known once the route picked it (absent on routes that read no appliance).
            let appliance = response
                .request()
                .extensions()
                .get::<super::pick::Picked>()
                .map(|p| p.0.clone());
            tracing::info!(
                parent: &span,
                %method,
                path,
                route,
                status,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                client,
                appliance,
                cache,
                upstream_ms,
                "request"
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::{is_canonical, new_id};
    use proptest::prelude::*;

    /// The rule as plainly written: what the one-pass version must agree with.
    fn plainly(path: &str) -> bool {
        path.starts_with('/')
            && !path.contains(['%', '\\', ';'])
            && !path.contains("//")
            && !path.split('/').any(|s| s == "." || s == "..")
    }

    #[test]
    fn known_paths() {
        for ok in [
            "/",
            "/v1/metricdata",
            "/docs/",
            "/a/.b/c.",
            "/explorer/x.js",
        ] {
            assert!(is_canonical(ok), "{ok}");
        }
        for bad in [
            "", "v1", "//v1", "/a//b", "/a/./b", "/a/../b", "/.", "/..", "/a/..", "/%2e", "/a\\b",
            "/a;b",
        ] {
            assert!(!is_canonical(bad), "{bad}");
        }
    }

    #[test]
    fn new_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<uuid::Uuid> = (0..100_000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 100_000);
        let other_thread = std::thread::spawn(new_id).join().unwrap();
        assert!(!ids.contains(&other_thread));
        for id in ids.iter().take(100) {
            assert_eq!(id.get_version(), Some(uuid::Version::Random));
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_plain_rule(path in "[/a.%;\\\\]{0,12}") {
            prop_assert_eq!(is_canonical(&path), plainly(&path));
        }
    }
}
