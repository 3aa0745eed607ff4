//! The listings Grafana's editor and variables read (`/labels`, `/label/{name}/values`,
//! `/series`, `/metadata`) and the status routes it probes (`/status/buildinfo`, `/rules`,
//! `/alerts`). None of them asks the appliance for data.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use futures::future::join_all;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::query::members;
use super::{Form, PrometheusSuccess, SelectorParams, SeriesParams, success};
use crate::error::Problem;
use crate::error::{PrometheusError, PrometheusFailure};
use crate::normalize::MetricInfo;
use crate::promql::{self, Metadata, PromError};
use crate::service::promql::with_contexts;
use crate::state::AppState;

async fn labels(
    req: HttpRequest,
    payload: Option<web::Payload>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    let form = Form::read(&req, payload).await?;
    form.check_times()?;
    let (matches, limit) = (form.all("match[]"), form.limit()?);
    let listing = {
        let fleet = crate::api::pick::promql_appliances(&req, &state)?;
        with_contexts(&members(&fleet), |appliances| {
            promql::label_names(&matches, limit, appliances)
        })?
    };
    Ok(success(listing.data, listing.warnings))
}

/// Label names: every label a series can have, or those of the series `match[]` names.
#[utoipa::path(get, path = "/prometheus/api/v1/labels", operation_id = "prometheus_labels", tag = "prometheus",
    params(SelectorParams),
    responses(
        (status = 200, description = "`data` lists label names", body = PrometheusSuccess<Vec<String>>),
        (status = 400, description = "`bad_data`: a bad selector or time", body = PrometheusFailure),
        super::query::PrometheusRateLimited))]
pub async fn get_labels(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    labels(req, None, state).await
}

/// The same as `GET`, with the parameters in a form-encoded body.
#[utoipa::path(post, path = "/prometheus/api/v1/labels", operation_id = "prometheus_labels_post", tag = "prometheus",
    request_body(content = SelectorParams, description = "Optional: without a body every label is listed", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`data` lists label names", body = PrometheusSuccess<Vec<String>>),
        (status = 400, description = "`bad_data`", body = PrometheusFailure),
        super::query::PrometheusRateLimited))]
pub async fn post_labels(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    labels(req, Some(payload), state).await
}

/// A label's values: `appliance` lists the appliances, `__name__` the catalogs' metrics (and
/// `darktrace_model_breach`), `did` the devices seen in cached answers or configured
/// (`prometheus.devices`), `hostname`, `ip` and `label` theirs, `direction` `in` and `out`.
/// With `match[]`: the values of the series it names.
#[utoipa::path(get, path = "/prometheus/api/v1/label/{name}/values", operation_id = "prometheus_label_values", tag = "prometheus",
    params(("name" = String, Path, description = "A label name (`U__`-escaped names are accepted)", example = "did"), SelectorParams),
    responses(
        (status = 200, description = "`data` lists the values", body = PrometheusSuccess<Vec<String>>),
        (status = 400, description = "`bad_data`: a bad label name, selector or time; a path that is not plain (percent-encoding, dot segments: `invalid-path`) is refused before routing, as a problem", content(
            (PrometheusFailure = "application/json"),
            (Problem = "application/problem+json"))),
        super::query::PrometheusRateLimited))]
pub async fn label_values(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    let form = Form::read(&req, None).await?;
    form.check_times()?;
    let name = label_name(&name)?;
    let (matches, limit) = (form.all("match[]"), form.limit()?);
    let listing = {
        let fleet = crate::api::pick::promql_appliances(&req, &state)?;
        with_contexts(&members(&fleet), |appliances| {
            promql::label_values(&name, &matches, limit, appliances)
        })?
    };
    Ok(success(listing.data, listing.warnings))
}

/// A label name from the path: plain, or `U__`-escaped as Prometheus 3 allows.
fn label_name(raw: &str) -> Result<String, PromError> {
    let invalid = || {
        PromError::bad_data(format!(
            "invalid label name: \"{}\"",
            crate::query::shown(raw)
        ))
    };
    let name = match raw.strip_prefix("U__") {
        None => raw.to_owned(),
        Some(escaped) => unescape(escaped).ok_or_else(invalid)?,
    };
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid { Ok(name) } else { Err(invalid()) }
}

/// Prometheus' value escaping: `__` is `_`, `_<hex>_` a code point, the rest as is.
fn unescape(escaped: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = escaped;
    while let Some(c) = rest.chars().next() {
        if c != '_' {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if let Some(after) = rest.strip_prefix("__") {
            out.push('_');
            rest = after;
            continue;
        }
        let end = rest[1..].find('_')? + 1;
        let code = u32::from_str_radix(&rest[1..end], 16).ok()?;
        out.push(char::from_u32(code)?);
        rest = &rest[end + 1..];
    }
    Some(out)
}

async fn series(
    req: HttpRequest,
    payload: Option<web::Payload>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    let form = Form::read(&req, payload).await?;
    form.check_times()?;
    let (matches, limit) = (form.all("match[]"), form.limit()?);
    let listing = {
        let fleet = crate::api::pick::promql_appliances(&req, &state)?;
        with_contexts(&members(&fleet), |appliances| {
            promql::series(&matches, limit, appliances)
        })?
    };
    Ok(success(listing.data, listing.warnings))
}

/// The series `match[]` names (at least one): on each appliance it picks (by `appliance`
/// matchers; without any, every one), per metric, the network-wide series and one per known
/// device, each as a total and its `in` and `out` parts, labelled with the appliance. Listed
/// from the catalogs and the known devices, without asking an appliance.
#[utoipa::path(get, path = "/prometheus/api/v1/series", operation_id = "prometheus_series", tag = "prometheus",
    params(SeriesParams),
    responses(
        (status = 200, description = "`data` lists label sets", body = PrometheusSuccess<Vec<BTreeMap<String, String>>>),
        (status = 400, description = "`bad_data`: no `match[]`, a bad selector or time", body = PrometheusFailure),
        super::query::PrometheusRateLimited))]
pub async fn get_series(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    series(req, None, state).await
}

/// The same as `GET`, with the parameters in a form-encoded body.
#[utoipa::path(post, path = "/prometheus/api/v1/series", operation_id = "prometheus_series_post", tag = "prometheus",
    request_body(content = SeriesParams, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`data` lists label sets", body = PrometheusSuccess<Vec<BTreeMap<String, String>>>),
        (status = 400, description = "`bad_data`", body = PrometheusFailure),
        super::query::PrometheusRateLimited))]
pub async fn post_series(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    series(req, Some(payload), state).await
}

#[allow(dead_code)]
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetadataParams {
    /// Only this metric.
    #[param(example = "connections")]
    metric: Option<String>,
    /// Most metrics listed; 0 for all.
    limit: Option<u64>,
    /// Checked (a count, as `limit`); every metric has one entry.
    limit_per_metric: Option<u64>,
}

/// Metric metadata from the appliances' catalogs (their union; an appliance whose catalog
/// cannot be had is named in `warnings`): every metric is a `gauge` (a bucket's maximum), its
/// help the catalog's label, its unit the catalog's units.
#[utoipa::path(get, path = "/prometheus/api/v1/metadata", operation_id = "prometheus_metadata", tag = "prometheus",
    params(MetadataParams),
    responses(
        (status = 200, description = "`data` maps metric names to `[{type, help, unit}]`", body = PrometheusSuccess<BTreeMap<String, Vec<MetadataDoc>>>),
        (status = 400, description = "`bad_data`: a bad `limit` or `limit_per_metric`", body = PrometheusFailure),
        super::query::PrometheusApplianceFailures))]
pub async fn metadata(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PrometheusError> {
    let form = Form::read(&req, None).await?;
    let limit = form.limit()?;
    form.count("limit_per_metric")?;
    let fleet = crate::api::pick::promql_appliances(&req, &state)?;
    let catalogs = join_all(fleet.iter().map(|a| a.catalog.get_or_fetch(&a.client))).await;
    // The union of the catalogs (a metric on several appliances listed once); an appliance
    // whose catalog cannot be had is named in a warning, unless none can.
    let mut metrics: BTreeMap<String, MetricInfo> = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut first_error = None;
    let mut any = false;
    for (appliance, catalog) in fleet.iter().zip(catalogs) {
        match catalog {
            Ok(catalog) => {
                any = true;
                for m in catalog.iter().flat_map(|c| &c.metrics) {
                    metrics.entry(m.name.clone()).or_insert_with(|| m.clone());
                }
            }
            Err(e) => {
                warnings.push(format!("appliance {}: {e}", appliance.name));
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error
        && !any
    {
        return Err(e.into());
    }
    let metrics: Vec<MetricInfo> = metrics.into_values().collect();
    let data: BTreeMap<String, Vec<Metadata>> =
        promql::metadata(&metrics, form.given("metric"), limit);
    Ok(success(data, warnings))
}

/// `/metadata`'s entries, for the document.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct MetadataDoc {
    #[serde(rename = "type")]
    #[schema(example = "gauge")]
    kind: String,
    #[schema(example = "Connections")]
    help: String,
    #[schema(example = "connections")]
    unit: String,
}

/// Build information, as Grafana reads it to tell Prometheus from Mimir: a Prometheus (no
/// `features`) whose API this gateway answers.
#[utoipa::path(get, path = "/prometheus/api/v1/status/buildinfo", operation_id = "prometheus_buildinfo", tag = "prometheus",
    responses((status = 200, description = "`data` is `{version, revision, branch, buildUser, buildDate, goVersion}`", body = PrometheusSuccess<BTreeMap<String, String>>),
        super::query::PrometheusRateLimited))]
pub async fn buildinfo() -> HttpResponse {
    let data: BTreeMap<&str, String> = [
        // The Prometheus API version whose behaviour is followed (label values by match[],
        // metadata, format_query).
        ("version", "2.45.0".to_owned()),
        ("revision", String::new()),
        (
            "branch",
            format!("metricgate-{}", env!("CARGO_PKG_VERSION")),
        ),
        ("buildUser", "metricgate".to_owned()),
        ("buildDate", String::new()),
        ("goVersion", String::new()),
    ]
    .into();
    success(data, Vec::new())
}

/// No recording or alerting rules: an empty list (Grafana's alert list reads it).
#[utoipa::path(get, path = "/prometheus/api/v1/rules", operation_id = "prometheus_rules", tag = "prometheus",
    responses((status = 200, description = "`data` is `{groups: []}`", body = PrometheusSuccess<serde_json::Value>),
        super::query::PrometheusRateLimited))]
pub async fn rules() -> HttpResponse {
    success(json!({ "groups": [] }), Vec::new())
}

/// No alerts: an empty list.
#[utoipa::path(get, path = "/prometheus/api/v1/alerts", operation_id = "prometheus_alerts", tag = "prometheus",
    responses((status = 200, description = "`data` is `{alerts: []}`", body = PrometheusSuccess<serde_json::Value>),
        super::query::PrometheusRateLimited))]
pub async fn alerts() -> HttpResponse {
    success(json!({ "alerts": [] }), Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_plain_and_escaped() {
        assert_eq!(label_name("did").unwrap(), "did");
        assert_eq!(label_name("__name__").unwrap(), "__name__");
        assert_eq!(label_name("U__did").unwrap(), "did");
        assert_eq!(label_name("U______name____").unwrap(), "__name__");
        assert_eq!(
            label_name("U__a_2e_b").unwrap_err().to_string(),
            "invalid label name: \"U__a_2e_b\""
        );
        assert!(label_name("1x").is_err());
        assert!(label_name("U__a_zz_").is_err());
        assert_eq!(unescape("http_2e_status").unwrap(), "http.status");
    }
}
