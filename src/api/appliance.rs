//! `/appliance/*`: for scripts written against the vendor's API guide, which call the
//! appliance directly. They change only their host (`https://<appliance>` becomes
//! `http://<gateway>/appliance`) and may drop their tokens: signing headers are ignored (the
//! gateway signs with its own), the guide's parameters are accepted, and the answers have the
//! appliance's own shapes, served from the same cache and under the same limits as `/v1`.

use actix_web::{HttpRequest, HttpResponse, web};

use super::darktrace::{AppliancePath, SdkMetricsParams};
use super::failures::ApplianceFailures;
use super::metricdata::{Answering, serve};
use super::params::ApplianceMetricDataParams;
use crate::catalog::MetricInfo;
use crate::error::{ApiError, Problem};
use crate::query::Dialect;
use crate::state::AppState;

/// Metric data as the appliance answers it: an array with one object per metric (the guide's
/// `time`, `timems`, `size`, `in`, `out`), led by a `breachtimes` object with
/// `breachtimes=true`.
///
/// Validated, cached, coalesced and rate-limited exactly like `/v1/metricdata`; only the
/// spelling of the question and the shape of the answer differ. `DTAPI-*` headers are ignored.
#[utoipa::path(get, path = "/appliance/metricdata", operation_id = "appliance_get_metricdata", tag = "appliance", params(ApplianceMetricDataParams),
    responses(
        (status = 200, description = "The appliance's array: `{breachtimes}` first when asked for, then one `{metric, data}` per metric (and device, when several are asked for)", body = Vec<crate::render::appliance::ApplianceElement>, headers(
            ("Cache-Status" = String, description = "As on `/v1/metricdata`"),
            ("Metricgate-Fetched" = String, description = "The ranges the appliance was asked for to make this answer, oldest first: `2026-11-01T00:00:00Z/2026-11-02T00:00:00Z, …` (RFC 3339 UTC, start inclusive, end exclusive; a long cold range is several bounded requests, a rolling window's refresh only its unsettled tail). Only on answers this request fetched; absent on a hit and on an answer assembled from cached segments"))),
        (status = 304, description = "Not modified (`If-None-Match` matched)"),
        (status = 400, description = "Invalid parameters; `errors` names each one", body = Problem, content_type = "application/problem+json"),
        ApplianceFailures))]
pub fn get_metricdata(req: HttpRequest, state: web::Data<AppState>) -> Answering {
    serve(req, state, Dialect::Appliance)
}

/// The appliance's metric catalog, as the appliance lists it (an array).
#[utoipa::path(get, path = "/appliance/metrics", operation_id = "appliance_get_metrics", tag = "appliance", params(SdkMetricsParams),
    responses(
        (status = 200, description = "Every metric", body = Vec<MetricInfo>),
        (status = 400, description = "An unknown parameter or field", body = Problem, content_type = "application/problem+json"),
        ApplianceFailures))]
pub async fn get_metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    super::darktrace::get_metrics(req, state).await
}

/// One metric of the catalog, by the appliance's id for it (`mlid`).
#[utoipa::path(get, path = "/appliance/metrics/{mlid}", operation_id = "appliance_get_metric", tag = "appliance",
    params(("mlid" = u64, Path, description = "The appliance's metric id"), SdkMetricsParams),
    responses(
        (status = 200, description = "The metric", body = MetricInfo),
        (status = 400, description = "`mlid` is not a number, or an unknown parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No metric has this id", body = Problem, content_type = "application/problem+json"),
        ApplianceFailures))]
pub async fn get_metric(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    super::darktrace::get_metric(req, state).await
}

/// Metric data from one appliance of the fleet, by name, as the appliance answers it: a script
/// written against the vendor's guide replaces `https://<appliance>` with
/// `http://<gateway>/appliance/<name>`.
///
/// As `/appliance/metricdata`, asked of the appliance the path names instead of the default.
#[utoipa::path(get, path = "/appliance/{appliance}/metricdata", operation_id = "appliance_get_named_metricdata", tag = "appliance", params(AppliancePath, ApplianceMetricDataParams),
    responses(
        (status = 200, description = "As on `/appliance/metricdata`", body = Vec<crate::render::appliance::ApplianceElement>, headers(
            ("Cache-Status" = String, description = "As on `/v1/metricdata`"),
            ("Metricgate-Fetched" = String, description = "As on `/appliance/metricdata`"))),
        (status = 304, description = "Not modified (`If-None-Match` matched)"),
        (status = 400, description = "Invalid parameters, or an appliance the gateway does not front; `errors` names each one", body = Problem, content_type = "application/problem+json"),
        ApplianceFailures))]
pub fn get_named_metricdata(req: HttpRequest, state: web::Data<AppState>) -> Answering {
    get_metricdata(req, state)
}

/// The metric catalog of one appliance of the fleet, by name, as the appliance lists it.
#[utoipa::path(get, path = "/appliance/{appliance}/metrics", operation_id = "appliance_get_named_metrics", tag = "appliance", params(AppliancePath, SdkMetricsParams),
    responses(
        (status = 200, description = "Every metric of that appliance", body = Vec<MetricInfo>),
        (status = 400, description = "An unknown parameter or field, or an appliance the gateway does not front", body = Problem, content_type = "application/problem+json"),
        ApplianceFailures))]
pub async fn get_named_metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    get_metrics(req, state).await
}

/// One metric of a named appliance's catalog, by that appliance's id for it (`mlid`).
#[utoipa::path(get, path = "/appliance/{appliance}/metrics/{mlid}", operation_id = "appliance_get_named_metric", tag = "appliance",
    params(AppliancePath, ("mlid" = u64, Path, description = "The appliance's metric id"), SdkMetricsParams),
    responses(
        (status = 200, description = "The metric", body = MetricInfo),
        (status = 400, description = "`mlid` is not a number, an unknown parameter, or an appliance the gateway does not front", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No metric has this id on that appliance", body = Problem, content_type = "application/problem+json"),
        ApplianceFailures))]
pub async fn get_named_metric(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    get_metric(req, state).await
}
