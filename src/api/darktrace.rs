//! `/darktrace/*`: a drop-in for scripts written against darktrace-sdk. They set
//! `host="http://<gateway>/darktrace"`, keep any tokens, and run unchanged: their signing
//! headers are ignored (the gateway signs with its own), their parameter dialect is accepted,
//! and the answers have the shapes the SDK's documentation shows.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use utoipa::IntoParams;

use super::failures::ApplianceFailures;
use super::metricdata::{Answering, serve};
use super::params::SdkMetricDataParams;
use crate::catalog::{MetricCatalog, MetricInfo};
use crate::error::{ApiError, Problem};
use crate::query::{Dialect, FieldError};
use crate::state::AppState;

/// Metric data in the shapes darktrace-sdk scripts expect.
///
/// Validated, cached, coalesced and rate-limited exactly like `/v1/metricdata`; only the
/// spelling of the question and the shape of the answer differ. `DTAPI-*` headers are ignored.
/// A `Warning` header marks an answer that left out parts of the appliance's the gateway did not
/// understand (such an answer is never cached).
#[utoipa::path(get, path = "/darktrace/metricdata", operation_id = "sdk_get_metricdata", tag = "darktrace-sdk", params(SdkMetricDataParams),
    responses(
        (status = 200, description = "One metric: `data` is a list of points; several: `data` maps names to lists; several devices: each point has `values` per device", body = crate::render::sdk::SdkMetricData, headers(
            ("Cache-Status" = String, description = "As on `/v1/metricdata`"),
            ("Metricgate-Fetched" = String, description = "The ranges the appliance was asked for to make this answer, oldest first: `2026-11-01T00:00:00Z/2026-11-02T00:00:00Z, …` (RFC 3339 UTC, start inclusive, end exclusive; a long cold range is several bounded requests, a rolling window's refresh only its unsettled tail). Only on answers this request fetched; absent on a hit and on an answer assembled from cached segments"))),
        (status = 304, description = "Not modified (`If-None-Match` matched)"),
        (status = 400, description = "Invalid parameters; `errors` names each one", body = Problem, content_type = "application/problem+json"),
        ApplianceFailures))]
pub fn get_metricdata(req: HttpRequest, state: web::Data<AppState>) -> Answering {
    serve(req, state, Dialect::Sdk)
}

/// The appliance a named drop-in path (`/darktrace/{appliance}/…`, `/appliance/{appliance}/…`)
/// asks: read by [`super::pick::appliance`] from the path; here for the document.
#[allow(dead_code)]
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct AppliancePath {
    /// The appliance's name, as `GET /v1/appliances` lists it (`default` is `[upstream]`'s,
    /// the short form). A name the gateway does not front is a 400 naming the choices.
    #[param(example = "default", pattern = "^[a-z0-9][a-z0-9_-]{0,31}$")]
    appliance: String,
}

/// Metric data from one appliance of the fleet, by name, in the shapes darktrace-sdk scripts
/// expect: a script points its host at `http://<gateway>/darktrace/<name>`.
///
/// As `/darktrace/metricdata`, asked of the appliance the path names instead of the default.
#[utoipa::path(get, path = "/darktrace/{appliance}/metricdata", operation_id = "sdk_get_named_metricdata", tag = "darktrace-sdk", params(AppliancePath, SdkMetricDataParams),
    responses(
        (status = 200, description = "As on `/darktrace/metricdata`", body = crate::render::sdk::SdkMetricData, headers(
            ("Cache-Status" = String, description = "As on `/v1/metricdata`"),
            ("Metricgate-Fetched" = String, description = "As on `/darktrace/metricdata`"))),
        (status = 304, description = "Not modified (`If-None-Match` matched)"),
        (status = 400, description = "Invalid parameters, or an appliance the gateway does not front; `errors` names each one", body = Problem, content_type = "application/problem+json"),
        ApplianceFailures))]
pub fn get_named_metricdata(req: HttpRequest, state: web::Data<AppState>) -> Answering {
    get_metricdata(req, state)
}

/// The metric catalog of one appliance of the fleet, by name (catalogs and `mlid`s differ
/// between appliances).
#[utoipa::path(get, path = "/darktrace/{appliance}/metrics", operation_id = "sdk_get_named_metrics", tag = "darktrace-sdk", params(AppliancePath, SdkMetricsParams),
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
#[utoipa::path(get, path = "/darktrace/{appliance}/metrics/{mlid}", operation_id = "sdk_get_named_metric", tag = "darktrace-sdk",
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

/// The fields of a metric, the names `responsedata` may pick.
const FIELDS: &[&str] = &[
    "mlid",
    "name",
    "label",
    "set",
    "units",
    "filtertypes",
    "unitsinterval",
    "lengthscale",
];

#[allow(dead_code)]
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SdkMetricsParams {
    /// Only these fields of each metric, comma-separated (e.g. `mlid,name`): `mlid`, `name`,
    /// `label`, `set`, `units`, `filtertypes`, `unitsinterval`, `lengthscale`. Empty: all.
    #[param(
        example = "mlid,name",
        pattern = "^( *(mlid|name|label|set|units|filtertypes|unitsinterval|lengthscale) *(, *(mlid|name|label|set|units|filtertypes|unitsinterval|lengthscale) *)*)?$"
    )]
    responsedata: Option<String>,
}

/// The appliance's metric catalog, as the appliance lists it (an array).
#[utoipa::path(get, path = "/darktrace/metrics", operation_id = "sdk_get_metrics", tag = "darktrace-sdk", params(SdkMetricsParams),
    responses(
        (status = 200, description = "Every metric", body = Vec<MetricInfo>),
        (status = 400, description = "An unknown parameter or field", body = Problem, content_type = "application/problem+json"),
        ApplianceFailures))]
pub async fn get_metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let fields = responsedata(req.query_string()).map_err(ApiError::InvalidQuery)?;
    let catalog = catalog(&req, &state).await?;
    Ok(respond(&catalog.metrics, fields.as_deref()))
}

/// One metric of the catalog, by the appliance's id for it (`mlid`).
#[utoipa::path(get, path = "/darktrace/metrics/{mlid}", operation_id = "sdk_get_metric", tag = "darktrace-sdk",
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
    let fields = responsedata(req.query_string());
    let id = req
        .match_info()
        .get("mlid")
        .unwrap_or_default()
        .parse::<u64>()
        .map_err(|_| FieldError::new("mlid", "the metric id is a number"));
    let (fields, id) = match (fields, id) {
        (Ok(fields), Ok(id)) => (fields, id),
        (fields, id) => {
            let mut errors = fields.err().unwrap_or_default();
            errors.extend(id.err());
            return Err(ApiError::InvalidQuery(errors));
        }
    };
    let catalog = catalog(&req, &state).await?;
    match catalog.metrics.iter().find(|m| m.mlid == Some(id)) {
        Some(metric) => Ok(respond(metric, fields.as_deref())),
        None => Err(ApiError::UnknownMetricId(id)),
    }
}

async fn catalog(
    req: &HttpRequest,
    state: &AppState,
) -> Result<std::sync::Arc<MetricCatalog>, ApiError> {
    let appliance = super::pick::appliance(req, state)?;
    appliance
        .catalog
        .get_or_fetch(&appliance.client)
        .await?
        .ok_or(ApiError::NotFound)
}

/// `responsedata=a,b`: the fields to keep; `None` keeps all. Anything else is refused.
pub(super) fn responsedata(raw: &str) -> Result<Option<Vec<String>>, Vec<FieldError>> {
    let mut fields = None;
    let mut errors = Vec::new();
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        if crate::query::ROUTING.contains(&key.as_ref()) {
            continue;
        }
        if key != "responsedata" || fields.is_some() {
            let message = if key == "responsedata" {
                "given more than once".to_owned()
            } else {
                "unknown parameter; only `responsedata` is accepted".to_owned()
            };
            errors.push(FieldError::new(crate::query::shown(&key), message));
            continue;
        }
        if value.is_empty() && key == "responsedata" {
            // Given empty: absent (a generated client's unset parameter).
            continue;
        }
        let picked: Vec<String> = value
            .split(',')
            .map(|f| f.trim_matches(' ').to_owned())
            .collect();
        for f in picked.iter().filter(|f| !FIELDS.contains(&f.as_str())) {
            errors.push(FieldError::new(
                "responsedata",
                format!(
                    "`{}` is not a field of a metric; use {}",
                    crate::query::shown(f),
                    FIELDS.join(", ")
                ),
            ));
        }
        fields = Some(picked);
    }
    if errors.is_empty() {
        Ok(fields)
    } else {
        Err(errors)
    }
}

/// Serializes `value`, keeping only `fields` of each metric object when given.
fn respond<T: serde::Serialize>(value: &T, fields: Option<&[String]>) -> HttpResponse {
    let Some(fields) = fields else {
        return HttpResponse::Ok().json(value);
    };
    // Off the hot path (a catalog listing), so a JSON tree is the simple way to pick fields.
    let keep = |v: &mut serde_json::Value| {
        if let Some(map) = v.as_object_mut() {
            map.retain(|k, _| fields.iter().any(|f| f == k));
        }
    };
    let mut tree = serde_json::to_value(value).unwrap_or_default();
    match tree.as_array_mut() {
        Some(items) => items.iter_mut().for_each(keep),
        None => keep(&mut tree),
    }
    HttpResponse::Ok().json(tree)
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;

    use super::*;

    /// The documented pattern of `responsedata` names [`FIELDS`], and says what is accepted.
    #[test]
    fn the_documented_responsedata_is_what_is_accepted() {
        let params = SdkMetricsParams::into_params(|| None);
        let Some(RefOr::T(Schema::Object(schema))) = &params[0].schema else {
            panic!("responsedata is a string");
        };
        let pattern = schema.pattern.clone().unwrap();
        let one = format!(" *({}) *", FIELDS.join("|"));
        assert_eq!(pattern, format!("^({one}(,{one})*)?$"));
        let pattern = regex::Regex::new(&pattern).unwrap();
        for value in [
            "",
            "mlid",
            "mlid,name",
            " mlid , name ",
            "label,set,units,filtertypes,unitsinterval,lengthscale",
            "nope",
            "mlid,",
            ",mlid",
            "mlid\tname",
            "mlid,nope",
            "MLID",
        ] {
            let raw = format!(
                "responsedata={}",
                value.replace(' ', "%20").replace('\t', "%09")
            );
            assert_eq!(
                pattern.is_match(value),
                responsedata(&raw).is_ok(),
                "`{value}`"
            );
        }
    }
}
