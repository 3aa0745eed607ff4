//! `/query`, `/query_range`, `/format_query` and `/query_exemplars`.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};

use super::{
    ExpressionParams, Form, FormatParams, PrometheusSuccess, QueryParams, QueryRangeParams,
    success, traceparent,
};
use crate::api::lane::lane;
use crate::error::{PrometheusError, PrometheusFailure};
use crate::fleet::Appliance;
use crate::promql::{At, time};
use crate::service::MetricService;
use crate::service::promql;
use crate::state::AppState;

/// Every appliance the fleet has, as the PromQL use case reads them (by name).
pub(crate) fn members(fleet: &[Arc<Appliance>]) -> Vec<(&str, &MetricService)> {
    fleet
        .iter()
        .map(|a| (a.name.as_str(), &a.service))
        .collect()
}

/// Evaluates the form's `query` at `at` over the fleet through the PromQL use case, and
/// writes the envelope.
async fn answer(
    req: &HttpRequest,
    state: &AppState,
    form: &Form,
    at: At,
) -> Result<HttpResponse, PrometheusError> {
    form.check_timeout()?;
    let limit = form.limit()?;
    let text = form.get("query").unwrap_or("");
    let fleet = crate::api::pick::promql_appliances(req, state)?;
    let members = members(&fleet);
    let evaluated = promql::evaluate(
        &members,
        text,
        at,
        limit,
        traceparent(req),
        &lane(req, state),
    )
    .await?;
    Ok(success(evaluated.data, evaluated.warnings))
}

async fn instant(
    req: HttpRequest,
    payload: Option<web::Payload>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    let form = Form::read(&req, payload).await?;
    for t in form.each("time") {
        time::parse_time("time", t)?;
    }
    let at = match form.given("time") {
        Some(t) => time::parse_time("time", t)?,
        None => state.clock.now_ms(),
    };
    answer(&req, &state, &form, At::Instant(at)).await
}

async fn range(
    req: HttpRequest,
    payload: Option<web::Payload>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    let form = Form::read(&req, payload).await?;
    let start = time::parse_time("start", form.get("start").unwrap_or(""))?;
    let end = time::parse_time("end", form.get("end").unwrap_or(""))?;
    let step = time::parse_duration("step", form.get("step").unwrap_or(""))?;
    answer(&req, &state, &form, At::Range { start, end, step }).await
}

/// Evaluates a PromQL expression at one instant.
///
/// The whole PromQL language of Prometheus 3 for float samples: every aggregation, binary
/// operator and vector matching, `offset`, `@`, subqueries and every function but those
/// Prometheus keeps behind a feature flag (refused as `bad_data` `unsupported: …`). Results
/// are proven identical to a real Prometheus' on the same samples. Data comes through the
/// segment cache, like `/v1`'s; `warnings` carries Prometheus' warnings and the gateway's
/// hints (an unknown metric, an unknown label).
#[utoipa::path(get, path = "/prometheus/api/v1/query", operation_id = "prometheus_query", tag = "prometheus",
    params(QueryParams),
    responses(
        (status = 200, description = "`data` is `{resultType: vector|scalar, result}`", body = PrometheusSuccess<serde_json::Value>),
        (status = 400, description = "`bad_data`: a bad parameter, or PromQL the gateway does not answer", body = PrometheusFailure),
        (status = 422, description = "`execution`: the query cannot be evaluated (ambiguous vector matching, duplicate series, too many samples)", body = PrometheusFailure),
        PrometheusApplianceFailures))]
pub async fn get_query(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    instant(req, None, state).await
}

/// The same as `GET`, with the parameters in a form-encoded body.
#[utoipa::path(post, path = "/prometheus/api/v1/query", operation_id = "prometheus_query_post", tag = "prometheus",
    request_body(content = QueryParams, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`data` is `{resultType: vector|scalar, result}`", body = PrometheusSuccess<serde_json::Value>),
        (status = 400, description = "`bad_data`", body = PrometheusFailure),
        (status = 422, description = "`execution`", body = PrometheusFailure),
        PrometheusApplianceFailures))]
pub async fn post_query(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    instant(req, Some(payload), state).await
}

/// Evaluates a PromQL expression at every step from `start` to `end`.
///
/// The appliance is asked for buckets of the step rounded to whole minutes (at least the
/// smallest interval allowed); the value at each time is the bucket holding it. Grafana's
/// refreshes ask for nearly the same windows again and again: those are answered from cached
/// segments, and only the newest buckets are fetched.
#[utoipa::path(get, path = "/prometheus/api/v1/query_range", operation_id = "prometheus_query_range", tag = "prometheus",
    params(QueryRangeParams),
    responses(
        (status = 200, description = "`data` is `{resultType: matrix, result}`", body = PrometheusSuccess<serde_json::Value>),
        (status = 400, description = "`bad_data`: a bad parameter, too many points, or PromQL the gateway does not answer", body = PrometheusFailure),
        (status = 422, description = "`execution`: the query cannot be evaluated (ambiguous vector matching, duplicate series, too many samples)", body = PrometheusFailure),
        PrometheusApplianceFailures))]
pub async fn get_query_range(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    range(req, None, state).await
}

/// The same as `GET`, with the parameters in a form-encoded body (Grafana's default).
#[utoipa::path(post, path = "/prometheus/api/v1/query_range", operation_id = "prometheus_query_range_post", tag = "prometheus",
    request_body(content = QueryRangeParams, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`data` is `{resultType: matrix, result}`", body = PrometheusSuccess<serde_json::Value>),
        (status = 400, description = "`bad_data`", body = PrometheusFailure),
        (status = 422, description = "`execution`", body = PrometheusFailure),
        PrometheusApplianceFailures))]
pub async fn post_query_range(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    range(req, Some(payload), state).await
}

/// Pretty-prints any valid PromQL expression (Grafana's "Format query").
#[utoipa::path(get, path = "/prometheus/api/v1/format_query", operation_id = "prometheus_format_query", tag = "prometheus",
    params(FormatParams),
    responses(
        (status = 200, description = "`data` is the formatted expression", body = PrometheusSuccess<String>),
        (status = 400, description = "`bad_data`: not PromQL", body = PrometheusFailure),
        PrometheusRateLimited))]
pub async fn format_query(
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PrometheusError> {
    let form = Form::read(&req, Some(payload)).await?;
    let formatted = crate::promql::format(form.get("query").unwrap_or(""))?;
    Ok(success(formatted, Vec::new()))
}

/// The same as `GET`, with the parameters in a form-encoded body.
#[utoipa::path(post, path = "/prometheus/api/v1/format_query", operation_id = "prometheus_format_query_post", tag = "prometheus",
    request_body(content = FormatParams, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`data` is the formatted expression", body = PrometheusSuccess<String>),
        (status = 400, description = "`bad_data`: not PromQL", body = PrometheusFailure),
        PrometheusRateLimited))]
pub async fn post_format_query(
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PrometheusError> {
    format_query(req, payload).await
}

/// Darktrace metrics carry no exemplars: always an empty list (for Grafana's exemplar toggle).
#[utoipa::path(get, path = "/prometheus/api/v1/query_exemplars", operation_id = "prometheus_query_exemplars", tag = "prometheus",
    params(ExpressionParams),
    responses(
        (status = 200, description = "`data` is `[]`", body = PrometheusSuccess<Vec<String>>),
        (status = 400, description = "`bad_data`: not PromQL, or a bad time", body = PrometheusFailure),
        PrometheusRateLimited))]
pub async fn query_exemplars(
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PrometheusError> {
    let form = Form::read(&req, Some(payload)).await?;
    crate::promql::format(form.get("query").unwrap_or(""))?;
    form.check_times()?;
    Ok(success(Vec::<String>::new(), Vec::new()))
}

/// The same as `GET`, with the parameters in a form-encoded body.
#[utoipa::path(post, path = "/prometheus/api/v1/query_exemplars", operation_id = "prometheus_query_exemplars_post", tag = "prometheus",
    request_body(content = ExpressionParams, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`data` is `[]`", body = PrometheusSuccess<Vec<String>>),
        (status = 400, description = "`bad_data`: not PromQL, or a bad time", body = PrometheusFailure),
        PrometheusRateLimited))]
pub async fn post_query_exemplars(
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PrometheusError> {
    query_exemplars(req, payload).await
}

/// The refusal of a caller over its rate limit, which every route under `/prometheus` may give.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub enum PrometheusRateLimited {
    #[response(status = 429, description = "`unavailable`: the caller is over its rate limit", headers(
        ("Retry-After" = u64, description = "Seconds to wait")))]
    RateLimited(PrometheusFailure),
}

/// The appliance-backed failures of the query routes, in Prometheus' envelope.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub enum PrometheusApplianceFailures {
    #[response(status = 429, description = "`unavailable`: the caller is over its rate limit", headers(
        ("Retry-After" = u64, description = "Seconds to wait")))]
    RateLimited(PrometheusFailure),
    #[response(status = 500, description = "`internal`: the gateway's own failure")]
    Internal(PrometheusFailure),
    #[response(
        status = 502,
        description = "`unavailable`: the appliance failed, refused the gateway, or sent an unknown shape"
    )]
    BadGateway(PrometheusFailure),
    #[response(status = 503, description = "`unavailable`: the appliance's request budget is exhausted, or its circuit breaker is open", headers(
        ("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(PrometheusFailure),
    #[response(
        status = 504,
        description = "`timeout`: the appliance did not answer in time"
    )]
    Timeout(PrometheusFailure),
}
