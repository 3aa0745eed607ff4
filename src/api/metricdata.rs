//! `GET /v1/metricdata`: the request handed to the use case ([`crate::service`]), the answer
//! written back with its caching headers.

use actix_web::http::header::{self, HeaderName};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use utoipa::IntoParams;

use super::cache_headers;
use super::openapi::ApplianceFailures;
use crate::error::{ApiError, Problem};
use crate::normalize::MetricData;
use crate::query::{Dialect, Offer, Representation};
use crate::service::MetricRequest;
use crate::state::AppState;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The parameters, for the OpenAPI document. Parsing is done by [`query::parse`], which
/// reports every bad parameter at once rather than stopping at the first.
#[allow(dead_code)]
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricDataParams {
    /// One metric name (see `GET /v1/metrics`). Give `metric` or `metrics`, not both.
    #[param(example = "connections", pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    metric: Option<String>,
    /// Several metric names: repeat `metrics=` or give a comma list. Sorted and deduplicated.
    #[param(example = json!(["connections", "externalconnections"]), style = Form, explode)]
    metrics: Option<Vec<String>>,
    /// Device id. Not with `devices`.
    #[param(example = 123, minimum = 1)]
    did: Option<u64>,
    /// Destination device id.
    #[param(minimum = 1)]
    ddid: Option<u64>,
    /// Other device id.
    #[param(minimum = 1)]
    odid: Option<u64>,
    /// Port (source or destination).
    #[param(minimum = 1, maximum = 65535)]
    port: Option<u16>,
    #[param(minimum = 1, maximum = 65535)]
    sourceport: Option<u16>,
    #[param(example = 443, minimum = 1, maximum = 65535)]
    destinationport: Option<u16>,
    /// IP protocol: a name (`tcp`, `udp`, `icmp`, …) or a number 0–255.
    #[param(example = "tcp")]
    protocol: Option<String>,
    /// Application protocol code (letters, digits, `_ . : -`; at most 32).
    #[param(example = "https", pattern = "^[A-Za-z0-9_.:-]{1,32}$")]
    applicationprotocol: Option<String>,
    /// Start: epoch ms, ISO-8601 (`2024-01-15T12:00:00Z`) or `YYYY-MM-DD HH:MM:SS` (UTC).
    /// Alias: `from`. Without an end, the range runs until now.
    #[param(example = "1705320000000")]
    starttime: Option<String>,
    /// End, same formats as `starttime`. Alias: `to`. Needs a start.
    #[param(example = "1705323600000")]
    endtime: Option<String>,
    /// Alias of `starttime`.
    from: Option<String>,
    /// Alias of `endtime`.
    to: Option<String>,
    /// Bucket width: seconds (`300`) or a label (`1min`, `5min`, `15min`, `1hour`, `1day`).
    /// Default 60 seconds. Each bucket holds the maximum value inside it.
    #[param(example = "5min")]
    interval: Option<String>,
    /// Include model breach times (`true`/`false`/`1`/`0`).
    #[param(example = false)]
    breachtimes: Option<bool>,
    /// Include full device details (`true`/`false`/`1`/`0`).
    #[param(example = false)]
    fulldevicedetails: Option<bool>,
    /// Several numeric device ids: repeat `devices=` or give a comma list. Not with `did`.
    #[param(example = json!(["123", "456"]), style = Form, explode)]
    devices: Option<Vec<String>>,
    /// `json` (default) or `csv`: one row per point, `timestamp_iso,timestamp_ms,metric,did,value,in,out`.
    /// `Accept: text/csv` does the same.
    #[param(example = "json", pattern = "^(json|csv)$")]
    format: Option<String>,
}

/// Time-series metric data, normalized into one schema.
///
/// Every parameter is validated before anything reaches the appliance; a 400 names every bad
/// parameter at once. Answers are cached by canonical query (however it is spelled) and time
/// bucket; `Cache-Status`, `Age`, `Cache-Control` and a strong `ETag` say how fresh each one
/// is. Send `Cache-Control: no-cache` to force a fresh fetch, `only-if-cached` to never wait on
/// the appliance, and `If-None-Match` to get a 304 when nothing changed.
#[utoipa::path(get, path = "/v1/metricdata", tag = "metrics", params(MetricDataParams),
    responses(
        (status = 200, description = "The data: JSON, or CSV with `format=csv` / `Accept: text/csv`", content(
            (MetricData = "application/json"),
            (String = "text/csv", example = "timestamp_iso,timestamp_ms,metric,did,value,in,out\n2024-01-15T12:00:00.000Z,1705320000000,connections,123,762,335,427\n")), headers(
            ("Cache-Status" = String, description = "RFC 9211: `metricgate; hit; ttl=42`, `metricgate; fwd=miss; stored`, or a stale answer with `detail=stale-while-revalidate` / `detail=stale-if-error`"),
            ("Age" = u64, description = "Seconds since the answer was fetched"),
            ("Cache-Control" = String, description = "`max-age=<seconds of freshness left>`"),
            ("ETag" = String, description = "Strong validator of the body"),
            ("RateLimit-Policy" = String, description = "The caller's quota: `<per minute>;w=60;burst=<burst>`"),
            ("RateLimit" = String, description = "The caller's budget: `limit=<burst>, remaining=<n>, reset=<seconds until full>`"))),
        (status = 304, description = "Not modified (`If-None-Match` matched)"),
        (status = 400, description = "Invalid parameters; `errors` names each one", body = Problem, content_type = "application/problem+json"),
        ApplianceFailures))]
pub async fn get_metricdata(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    serve(&req, &state, Dialect::Gateway).await
}

/// What `/v1/metricdata` and `/darktrace/metricdata` share: the request handed to the use
/// case, and its answer written back.
pub(super) async fn serve(
    req: &HttpRequest,
    state: &AppState,
    dialect: Dialect,
) -> Result<HttpResponse, ApiError> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let offer = match dialect {
        Dialect::Gateway => Offer::JsonOrCsv,
        Dialect::Sdk => Offer::Sdk,
    };
    let representation = Representation::negotiate(
        offer,
        req.query_string(),
        header(header::ACCEPT),
        header(header::ACCEPT_ENCODING),
    );
    let served = state
        .service
        .answer(MetricRequest {
            dialect,
            raw_query: req.query_string(),
            representation,
            directives: cache_headers::directives(req),
            traceparent: header(TRACEPARENT),
        })
        .await?;
    Ok(cache_headers::respond(req, &served, representation))
}
