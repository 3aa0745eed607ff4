//! [`ApiError`] → `application/problem+json` (RFC 9457): the one place HTTP statuses are chosen.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::catalog::CatalogError;
use crate::fetch::FetchError;
use crate::normalize::AnswerError;
use crate::promql::PromError;
use crate::query::FieldError;
use crate::reload::ReloadError;
use crate::service::{PromqlError, ServiceError};
use crate::telemetry::chain;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the query is invalid")]
    InvalidQuery(Vec<FieldError>),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no such resource")]
    NotFound,
    #[error("no metric has this id")]
    UnknownMetricId(u64),
    #[error("not in the cache (only-if-cached)")]
    NotCached,
    #[error("the caller is over its rate limit")]
    RateLimited { retry_after_secs: u64 },
    /// `allow`: the methods the route answers, as the `Allow` header lists them.
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("the path is not in canonical form")]
    NonCanonicalPath,
    #[error("the URI is too long")]
    UriTooLong { limit: usize },
    #[error("the request headers are too large")]
    HeadersTooLarge { limit: usize },
    #[error(transparent)]
    Reload(#[from] ReloadError),
    #[error("the admin endpoints need the admin token")]
    Unauthorized,
    /// The caller asked an appliance outside its own (`choices`: the ones it may ask). The
    /// same answer whether the other appliance exists or not, so it reveals none.
    #[error("the caller may not ask that appliance")]
    ForbiddenAppliance { choices: Vec<String> },
}

/// An RFC 9457 problem.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Identifies the kind of problem.
    #[schema(example = "urn:metricgate:problem:invalid-query")]
    #[serde(rename = "type")]
    pub type_: String,
    #[schema(example = "Invalid query parameters")]
    pub title: String,
    #[schema(example = 400)]
    pub status: u16,
    #[schema(example = "2 parameters are invalid: interval, did")]
    pub detail: String,
    /// Every bad parameter (400 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::InvalidQuery(errors) => ApiError::InvalidQuery(errors),
            ServiceError::NotCached => ApiError::NotCached,
            ServiceError::Fetch(e) => ApiError::Fetch(e),
        }
    }
}

type Parts = (StatusCode, &'static str, &'static str, String);

/// Our own failure: a 500 whose detail points at the request id (the log line with the cause
/// carries the same id).
fn internal() -> Parts {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "the gateway failed to answer; an operator can find the cause in its logs by the X-Request-Id of this response".into(),
    )
}

fn fetch_parts(e: &FetchError) -> Parts {
    match e {
        FetchError::Upstream(e) => upstream_parts(e),
        FetchError::Answer(e) => answer_parts(e),
        FetchError::Render(_) | FetchError::Task(_) => internal(),
    }
}

fn answer_parts(e: &AnswerError) -> Parts {
    match e {
        AnswerError::Reported(message) => (
            StatusCode::BAD_GATEWAY,
            "appliance-error",
            "The appliance answered with an error",
            format!("the appliance reported: {}", first_line(message)),
        ),
        AnswerError::MissingMetric { .. } => (
            StatusCode::BAD_GATEWAY,
            "appliance-missing-metric",
            "The appliance's answer lacks a requested metric",
            format!("{e}; the gateway gives no empty series in its place"),
        ),
        AnswerError::UnknownShape { reason, .. } => (
            StatusCode::BAD_GATEWAY,
            "appliance-unknown-shape",
            "The appliance's answer has an unknown shape",
            format!("the answer matches no known shape ({reason})"),
        ),
    }
}

fn upstream_parts(e: &UpstreamError) -> Parts {
    use UpstreamError as U;
    let bad_gateway = StatusCode::BAD_GATEWAY;
    match e {
            U::BadSignature => (
                bad_gateway,
                "appliance-credentials",
                "The appliance rejected the gateway's signature",
                "the gateway's API token pair is wrong for this appliance; an operator must check upstream.public_token and the private token".into(),
            ),
            U::BadDate => (
                bad_gateway,
                "appliance-clock",
                "The appliance rejected the gateway's request date",
                "the gateway's clock and the appliance's differ by more than 30 minutes; an operator must check both clocks (NTP)".into(),
            ),
            U::Redirected { .. } => (
                bad_gateway,
                "appliance-refused",
                "The appliance refused the gateway",
                "the appliance refused the gateway's credentials or permissions (it answered with a redirect)".into(),
            ),
            U::Refused { message } => (
                bad_gateway,
                "appliance-refused-query",
                "The appliance refused the query",
                format!("the appliance refused the query: {message}"),
            ),
            U::Throttled { retry_after_secs } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "appliance-throttled",
                "The appliance is rate-limiting the gateway",
                format!("the appliance asked the gateway to slow down (429); retry in {retry_after_secs} s"),
            ),
            U::Rejected { status, message } => (
                bad_gateway,
                "appliance-error",
                "The appliance answered with an error",
                format!("the appliance answered {status}: {}", first_line(message)),
            ),
            U::Timeout(after) => (
                StatusCode::GATEWAY_TIMEOUT,
                "appliance-timeout",
                "The appliance did not answer in time",
                format!("no answer within {} ms", after.as_millis()),
            ),
            U::Connect(_) => (
                bad_gateway,
                "appliance-unreachable",
                "The appliance cannot be reached",
                "the gateway could not connect to the appliance".into(),
            ),
            U::Untrusted { .. } => (
            bad_gateway,
            "appliance-untrusted",
            "The appliance's TLS certificate is not trusted",
            "the gateway refused the appliance's certificate; an operator must check upstream.ca_file or upstream.pin_sha256 (GET /readyz says why)".into(),
        ),
        U::Body(_) => (
                bad_gateway,
                "appliance-broken-answer",
                "The appliance's answer broke off",
                "the connection failed while the answer was being read".into(),
            ),
            U::TooLarge(limit) => (
                bad_gateway,
                "appliance-answer-too-large",
                "The appliance's answer is too large",
                format!("the answer exceeds {limit} bytes; ask for a shorter range, a coarser interval or fewer metrics"),
            ),
            U::Saturated { retry_after_secs } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "appliance-busy",
                "The appliance's request budget is exhausted",
                format!("the gateway protects the appliance and could not send this request in time; retry in {retry_after_secs} s"),
            ),
            U::CircuitOpen { retry_after_secs } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "appliance-failing",
                "The appliance is failing",
                format!("recent appliance requests failed, so the gateway is not sending more for now; retry in {retry_after_secs} s"),
            ),
    }
}

/// The most of an appliance's error text a caller sees: its first line, at most 200
/// characters (the whole of it goes to the logs).
fn first_line(text: &str) -> String {
    const MOST: usize = 200;
    let line = text.trim().lines().next().unwrap_or("").trim();
    match line.char_indices().nth(MOST) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// Why one appliance of a fan-out (`appliances=`) gave no answer, in one line for its
/// `Warning` and `warnings` entry: the detail its problem would have had, and for a question
/// its catalog refuses, what each parameter's message says. Chosen here, beside the problems
/// themselves, so the two never say different things.
pub fn fanout_reason(e: &ServiceError) -> String {
    match e {
        ServiceError::InvalidQuery(errors) => errors
            .iter()
            .map(|e| format!("`{}`: {}", e.parameter, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        ServiceError::NotCached => ApiError::NotCached.parts().3,
        ServiceError::Fetch(e) => fetch_parts(e).3,
    }
}

/// What a caller refused an appliance is told: only the appliances it may ask.
fn forbidden_detail(choices: &[String]) -> String {
    if choices.is_empty() {
        "this caller may ask no appliance".into()
    } else {
        format!("this caller may ask only: {}", choices.join(", "))
    }
}

/// The status a failed fetch answers with (for `Cache-Status: fwd-status=`).
pub fn failure_status(e: &FetchError) -> u16 {
    fetch_parts(e).0.as_u16()
}

impl ApiError {
    fn parts(&self) -> Parts {
        match self {
            ApiError::InvalidQuery(errors) => {
                let mut names: Vec<&str> = errors.iter().map(|e| e.parameter.as_str()).collect();
                names.dedup();
                (
                    StatusCode::BAD_REQUEST,
                    "invalid-query",
                    "Invalid query parameters",
                    format!(
                        "{} invalid: {}",
                        if names.len() == 1 { "1 parameter is".to_owned() } else { format!("{} parameters are", names.len()) },
                        names.join(", ")
                    ),
                )
            }
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                "no such route; see /openapi.json or /docs/".into(),
            ),
            ApiError::UnknownMetricId(mlid) => (
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                format!("no metric has mlid {mlid}; GET /darktrace/metrics lists them"),
            ),
            ApiError::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                format!("this caller is over its rate limit; retry in {retry_after_secs} s (see the RateLimit headers)"),
            ),
            ApiError::NotCached => (
                StatusCode::GATEWAY_TIMEOUT,
                "not-cached",
                "Not cached",
                "the caller asked for only-if-cached and the gateway holds no answer".into(),
            ),
            ApiError::NonCanonicalPath => (
                StatusCode::BAD_REQUEST,
                "invalid-path",
                "Invalid path",
                "paths must be plain: no percent-encoding, dot segments, empty segments, `;` or `\\`".into(),
            ),
            ApiError::UriTooLong { limit } => (
                StatusCode::URI_TOO_LONG,
                "uri-too-long",
                "URI too long",
                format!("the path and query may be at most {limit} bytes"),
            ),
            ApiError::HeadersTooLarge { limit } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                "Request headers too large",
                format!("the request headers may total at most {limit} bytes"),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "this endpoint needs `Authorization: Bearer <admin token>`".into(),
            ),
            ApiError::ForbiddenAppliance { choices } => (
                StatusCode::FORBIDDEN,
                "forbidden-appliance",
                "Not one of this caller's appliances",
                forbidden_detail(choices),
            ),
            ApiError::MethodNotAllowed { allow } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                format!("this route answers {allow} (the Allow header lists them)"),
            ),
            ApiError::Reload(e) => (
                StatusCode::CONFLICT,
                "not-reloaded",
                "The configuration was not reloaded",
                e.to_string(),
            ),
            ApiError::Fetch(e) => fetch_parts(e),
            ApiError::Catalog(CatalogError::Upstream(e)) => upstream_parts(e),
            ApiError::Catalog(CatalogError::Answer(e)) => answer_parts(e),
        }
    }

    /// RFC 9110 asks a 405 to say which methods the route does answer.
    fn allow(&self) -> Option<&'static str> {
        match self {
            ApiError::MethodNotAllowed { allow } => Some(allow),
            _ => None,
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            ApiError::Fetch(FetchError::Upstream(e))
            | ApiError::Catalog(CatalogError::Upstream(e)) => match e {
                UpstreamError::Saturated { retry_after_secs }
                | UpstreamError::CircuitOpen { retry_after_secs }
                | UpstreamError::Throttled { retry_after_secs } => Some(*retry_after_secs),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn problem(&self) -> Problem {
        let (status, slug, title, detail) = self.parts();
        Problem {
            type_: format!("urn:metricgate:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors: match self {
                ApiError::InvalidQuery(errors) => Some(errors.clone()),
                _ => None,
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let problem = self.problem();
        if problem.status == 500 {
            tracing::error!(error = %chain(self), "request failed: our own fault");
        } else if problem.status >= 500 {
            tracing::warn!(error = %chain(self), status = problem.status, "request failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        response
            .content_type(PROBLEM_JSON)
            .insert_header(("Cache-Control", "no-store"));
        if let Some(secs) = self.retry_after_secs() {
            response.insert_header(("Retry-After", secs.to_string()));
        }
        if let Some(allow) = self.allow() {
            response.insert_header(("Allow", allow));
        }
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(problem)
    }
}

/// A failure of the Prometheus-compatible API (`/prometheus`), answered in Prometheus' error
/// envelope, `{"status":"error","errorType":…,"error":…}`, which Grafana and Prometheus
/// clients read (a problem document would reach them as an unreadable body). The statuses
/// are Prometheus' for its own failures and the gateway's for the appliance's.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error(transparent)]
    Query(#[from] PromError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body could not be read")]
    Body,
    /// A form body part that is not `name=value` (Prometheus' clients always send pairs).
    #[error("the form body is not name=value pairs: `{0}` has no `=`")]
    NotAForm(String),
    #[error("the caller is over its rate limit")]
    RateLimited { retry_after_secs: u64 },
    #[error("no such endpoint")]
    NotFound,
    /// The caller may not ask the appliance (see [`ApiError::ForbiddenAppliance`]).
    #[error("the caller may not ask that appliance")]
    ForbiddenAppliance { choices: Vec<String> },
    /// `allow`: the methods the endpoint answers, as the `Allow` header lists them.
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
}

impl From<PromqlError> for PrometheusError {
    fn from(e: PromqlError) -> Self {
        match e {
            PromqlError::Query(e) => Self::Query(e),
            PromqlError::Fetch(e) => Self::Fetch(e),
        }
    }
}

/// Prometheus' error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct PrometheusFailure {
    /// Always `error`.
    #[schema(example = "error")]
    pub status: &'static str,
    /// `bad_data` (400), `execution` (422), `forbidden` (403: an appliance outside the
    /// caller's), `not_found` (404), `unavailable` (429, 502, 503), `timeout` (504) or
    /// `internal` (500).
    #[serde(rename = "errorType")]
    #[schema(example = "bad_data")]
    pub error_type: &'static str,
    #[schema(example = "invalid parameter \"query\": parse error: unexpected end of input")]
    pub error: String,
}

impl PrometheusError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        let from_problem = |(status, _, title, detail): Parts| {
            let error_type = match status {
                StatusCode::INTERNAL_SERVER_ERROR => "internal",
                StatusCode::GATEWAY_TIMEOUT => "timeout",
                _ => "unavailable",
            };
            (status, error_type, format!("{title}: {detail}"))
        };
        match self {
            Self::Query(PromError::BadData(m)) => (StatusCode::BAD_REQUEST, "bad_data", m.clone()),
            Self::Query(PromError::Execution(m)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "execution", m.clone())
            }
            Self::Fetch(e) => from_problem(fetch_parts(e)),
            Self::Catalog(CatalogError::Upstream(e)) => from_problem(upstream_parts(e)),
            Self::Catalog(CatalogError::Answer(e)) => from_problem(answer_parts(e)),
            Self::BodyTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "bad_data", self.to_string())
            }
            Self::Body | Self::NotAForm(_) => {
                (StatusCode::BAD_REQUEST, "bad_data", self.to_string())
            }
            Self::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "unavailable",
                format!(
                    "this caller is over its rate limit; retry in {retry_after_secs} s (see the RateLimit headers)"
                ),
            ),
            Self::MethodNotAllowed { allow } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "bad_data",
                format!("this endpoint answers {allow}"),
            ),
            // A 403 in the envelope: Prometheus has no error type for it, and its clients
            // (client_golang, Grafana) show the envelope's `error` whatever the status, so the
            // status says what happened and the text which appliances the caller may ask.
            Self::ForbiddenAppliance { choices } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                forbidden_detail(choices),
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see /openapi.json for the Prometheus API's routes".into(),
            ),
        }
    }

    /// RFC 9110 asks a 405 to say which methods the endpoint does answer.
    fn allow(&self) -> Option<&'static str> {
        match self {
            Self::MethodNotAllowed { allow } => Some(allow),
            _ => None,
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs }
            | Self::Fetch(FetchError::Upstream(
                UpstreamError::Saturated { retry_after_secs }
                | UpstreamError::CircuitOpen { retry_after_secs },
            )) => Some(*retry_after_secs),
            _ => None,
        }
    }

    pub fn failure(&self) -> PrometheusFailure {
        let (_, error_type, error) = self.parts();
        PrometheusFailure {
            status: "error",
            error_type,
            error,
        }
    }
}

impl ResponseError for PrometheusError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %chain(self), "request failed: our own fault");
        } else if status.is_server_error() {
            tracing::warn!(error = %chain(self), status = status.as_u16(), "request failed");
        }
        let mut response = HttpResponse::build(status);
        response.insert_header(("Cache-Control", "no-store"));
        if let Some(secs) = self.retry_after_secs() {
            response.insert_header(("Retry-After", secs.to_string()));
        }
        if let Some(allow) = self.allow() {
            response.insert_header(("Allow", allow));
        }
        response.json(self.failure())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coalesce::Coalescer;

    #[tokio::test]
    async fn our_own_failures_are_500s_never_the_appliances() {
        let fetches: Coalescer<u8, u8, FetchError> = Coalescer::default();
        let panicked = fetches
            .join_or_start(1, async { panic!("a bug of ours") })
            .into_fetch()
            .await
            .unwrap_err();
        assert!(matches!(panicked, FetchError::Task(_)));
        let problem = ApiError::Fetch(panicked).problem();
        assert_eq!(problem.status, 500);
        assert_eq!(problem.type_, "urn:metricgate:problem:internal");
        assert!(!problem.detail.contains("appliance"), "{}", problem.detail);

        let appliance = ApiError::Fetch(FetchError::Answer(AnswerError::Reported("x".into())));
        assert_eq!(appliance.problem().status, 502);
    }

    #[test]
    fn appliance_error_text_is_cut_to_a_short_first_line() {
        let body = format!("{}\nsecond line with internals\n", "é".repeat(300));
        let problem = ApiError::Fetch(FetchError::Upstream(UpstreamError::Rejected {
            status: 500,
            message: body,
        }))
        .problem();
        assert!(
            !problem.detail.contains("second line"),
            "{}",
            problem.detail
        );
        let shown = problem
            .detail
            .trim_start_matches("the appliance answered 500: ");
        assert_eq!(shown.chars().count(), 201, "200 characters and an ellipsis");
    }
}
