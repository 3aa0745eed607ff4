//! The caller's limit on every metric route: who is asking, whether they may, and the
//! `RateLimit` headers either way. Which routes it guards, and how each group refuses, is
//! [`LIMITED`].

use std::cell::RefCell;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use futures::future::LocalBoxFuture;
use pin_project_lite::pin_project;

use crate::error::{ApiError, PrometheusError};
use crate::limits::{Asking, Check, Decision, PolicyText, RateState, Verdict};
use crate::state::AppState;

/// What identifying a caller reads, from actix's request.
impl Asking for actix_web::HttpRequest {
    fn peer(&self) -> Option<std::net::IpAddr> {
        self.peer_addr().map(|a| a.ip())
    }

    fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers().get(name).and_then(|v| v.to_str().ok())
    }

    fn each_header(&self, name: &HeaderName, each: &mut dyn FnMut(&str)) {
        for value in self.headers().get_all(name) {
            if let Ok(text) = value.to_str() {
                each(text);
            }
        }
    }
}

/// How a route group refuses a caller over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An RFC 9457 problem, as every gateway route answers.
    Problem,
    /// Prometheus' error envelope, for the Prometheus-compatible API.
    Prometheus,
}

impl Refusal {
    fn response(self, retry_after_secs: u64) -> HttpResponse {
        match self {
            Refusal::Problem => ApiError::RateLimited { retry_after_secs }.error_response(),
            Refusal::Prometheus => {
                PrometheusError::RateLimited { retry_after_secs }.error_response()
            }
        }
    }
}

/// The route groups behind the caller's limit (each path itself and everything below it),
/// and how each refuses.
pub const LIMITED: &[(&str, Refusal)] = &[
    ("/v1", Refusal::Problem),
    ("/darktrace", Refusal::Problem),
    ("/appliance", Refusal::Problem),
    (super::prometheus::PREFIX, Refusal::Prometheus),
];

/// Whether `path` is behind the caller's limit, and how it refuses.
pub fn limit_of(path: &str) -> Option<Refusal> {
    LIMITED
        .iter()
        .find(|(group, _)| {
            path.strip_prefix(group)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .map(|(_, refusal)| *refusal)
}

thread_local! {
    /// The last `RateLimit` value this thread wrote, and the budget it said: a caller well
    /// within its budget gets the same one request after request (`remaining` one below the
    /// burst), so it is rendered once and shared rather than formatted and allocated again.
    static LAST_RATELIMIT: RefCell<Option<(RateState, HeaderValue)>> = const { RefCell::new(None) };
}

/// `RateLimit-Policy` and `RateLimit`, as in draft-ietf-httpapi-ratelimit-headers-07.
fn write_headers(headers: &mut HeaderMap, policy: PolicyText, s: &RateState) {
    // Digits and `;w=burst` only (see `PolicyText`), and static: no copy, no allocation.
    headers.insert(
        HeaderName::from_static("ratelimit-policy"),
        HeaderValue::from_static(policy.as_str()),
    );
    let current = LAST_RATELIMIT.with_borrow_mut(|last| match last {
        Some((said, value)) if said == s => Some(value.clone()),
        _ => {
            let value = rate_limit_value(s)?;
            *last = Some((*s, value.clone()));
            Some(value)
        }
    });
    if let Some(current) = current {
        headers.insert(HeaderName::from_static("ratelimit"), current);
    }
}

/// `limit=<burst>, remaining=<n>, reset=<seconds>`, written by hand (`format!` showed in
/// profiles).
fn rate_limit_value(s: &RateState) -> Option<HeaderValue> {
    let mut text = [0u8; 80];
    let mut at = 0;
    let (mut limit, mut remaining, mut reset) = (
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
    );
    for part in [
        b"limit=".as_slice(),
        limit.format(s.limit).as_bytes(),
        b", remaining=",
        remaining.format(s.remaining).as_bytes(),
        b", reset=",
        reset.format(s.reset_secs).as_bytes(),
    ] {
        text.get_mut(at..at + part.len())?.copy_from_slice(part);
        at += part.len();
    }
    HeaderValue::from_bytes(&text[..at]).ok()
}

/// The middleware, one per server worker (it holds that worker's handle on the state). It
/// sits before routing, so the routes it guards need no scope of their own; written out
/// rather than with `from_fn`, whose `Next` boxes every request's future.
pub struct Limit {
    state: Rc<AppState>,
}

impl Limit {
    pub fn new(state: AppState) -> Self {
        Self {
            state: Rc::new(state),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Limit
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = LimitService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(LimitService {
            service: Rc::new(service),
            state: self.state.clone(),
        }))
    }
}

pub struct LimitService<S> {
    service: Rc<S>,
    state: Rc<AppState>,
}

impl<S, B> Service<ServiceRequest> for LimitService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Limited<S::Future, B>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let Some(refusal) = limit_of(req.path()) else {
            return Limited::Allowed {
                inner: self.service.call(req),
                headers: None,
            };
        };
        // The caller is not kept in the request's extensions: that map insert showed on every
        // hit, and the few that need it again (an access line, a forced refresh) identify it
        // again.
        let (_, check) = self.state.callers.identify_and_check(req.request());
        match check {
            Check::Now(verdict) => limited(req, refusal, verdict, &self.service),
            // Waiting on Redis: the one path that boxes.
            Check::Later(verdict) => {
                let service = self.service.clone();
                Limited::Shared {
                    inner: Box::pin(async move {
                        limited(req, refusal, verdict.await, &*service).await
                    }),
                }
            }
        }
    }
}

/// The request passed on with the headers its response will carry, or refused.
fn limited<S, B>(
    req: ServiceRequest,
    refusal: Refusal,
    Verdict { decision, policy }: Verdict,
    service: &S,
) -> Limited<S::Future, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    match decision {
        Decision::Allowed(s) => Limited::Allowed {
            inner: service.call(req),
            headers: Some((policy, s)),
        },
        Decision::Limited {
            state: s,
            retry_after_secs,
        } => Limited::Refused {
            response: Some(refuse(req, refusal, &s, retry_after_secs, policy)),
        },
    }
}

/// The refusal for a caller over its limit, with the headers that say so.
fn refuse<B>(
    req: ServiceRequest,
    refusal: Refusal,
    state: &RateState,
    retry_after_secs: u64,
    policy: PolicyText,
) -> ServiceResponse<EitherBody<B>> {
    let mut response = refusal.response(retry_after_secs);
    write_headers(response.headers_mut(), policy, state);
    req.into_response(response).map_into_right_body()
}

pin_project! {
    /// A request through the limit: passed on (with the headers to add to its response),
    /// refused, or waiting on the shared decision.
    #[project = LimitedProj]
    pub enum Limited<F, B> {
        Allowed {
            #[pin]
            inner: F,
            headers: Option<(PolicyText, RateState)>,
        },
        Refused {
            response: Option<ServiceResponse<EitherBody<B>>>,
        },
        Shared {
            inner: LocalBoxFuture<'static, Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>,
        },
    }
}

impl<F, B> Future for Limited<F, B>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
    B: MessageBody,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LimitedProj::Allowed { inner, headers } => {
                let Poll::Ready(outcome) = inner.poll(cx) else {
                    return Poll::Pending;
                };
                let mut response = outcome?;
                if let Some((policy, s)) = headers.take() {
                    write_headers(response.headers_mut(), policy, &s);
                }
                Poll::Ready(Ok(response.map_into_left_body()))
            }
            LimitedProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after it finished.
                None => Poll::Pending,
            },
            LimitedProj::Shared { inner } => inner.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_covers_each_group_and_everything_below_it_only() {
        for (path, expected) in [
            ("/v1", Some(Refusal::Problem)),
            ("/v1/metricdata", Some(Refusal::Problem)),
            ("/v1/nothing/here", Some(Refusal::Problem)),
            ("/darktrace/metrics/4", Some(Refusal::Problem)),
            ("/appliance/metricdata", Some(Refusal::Problem)),
            ("/prometheus/api/v1/query", Some(Refusal::Prometheus)),
            ("/v1metricdata", None),
            ("/darktracex", None),
            ("/prometheus/api/v1x", None),
            ("/prometheus", None),
            ("/healthz", None),
            ("/metrics", None),
            ("/", None),
            ("/internal/cache", None),
        ] {
            assert_eq!(limit_of(path), expected, "{path}");
        }
    }

    fn written(limit: u32, remaining: u32, reset_secs: u64) -> String {
        let mut headers = HeaderMap::new();
        let state = RateState {
            limit,
            remaining,
            reset_secs,
        };
        let policy = PolicyText::of(&crate::settings::ClientQuota {
            per_minute: 60,
            burst: 5,
        });
        write_headers(&mut headers, policy, &state);
        let value = headers.get("ratelimit");
        value.map_or("", |v| v.to_str().unwrap_or("")).to_owned()
    }

    #[test]
    fn each_response_says_its_own_budget_though_a_thread_reuses_the_last_one() {
        assert_eq!(written(5, 4, 1), "limit=5, remaining=4, reset=1");
        assert_eq!(written(5, 4, 1), "limit=5, remaining=4, reset=1");
        assert_eq!(written(5, 3, 2), "limit=5, remaining=3, reset=2");
        assert_eq!(written(5, 3, 3), "limit=5, remaining=3, reset=3");
        assert_eq!(written(6, 3, 3), "limit=6, remaining=3, reset=3");
        assert_eq!(written(5, 4, 1), "limit=5, remaining=4, reset=1");
        assert_eq!(
            written(u32::MAX, u32::MAX, u64::MAX),
            format!(
                "limit={}, remaining={}, reset={}",
                u32::MAX,
                u32::MAX,
                u64::MAX
            )
        );
    }
}
