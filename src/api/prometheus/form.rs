//! A Prometheus API request's parameters as Prometheus reads them, the documented parameter
//! sets, and the success envelope: what every Prometheus route file shares.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::PrometheusError;
use crate::promql::PromError;

/// Largest form-encoded body accepted, in bytes (a query naming many devices is long).
const MAX_BODY_BYTES: usize = 256 * 1024;

/// A request's parameters as Prometheus reads them (Go's `ParseForm`): a form-encoded POST
/// body's first, then the URL's; the first value of a name counts, `match[]` takes all.
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    pub(crate) async fn read(
        req: &HttpRequest,
        payload: Option<web::Payload>,
    ) -> Result<Self, PrometheusError> {
        let mut pairs = Vec::new();
        let form_encoded = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|m| {
                    m.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        if let Some(mut payload) = payload.filter(|_| form_encoded) {
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|_| PrometheusError::Body)?;
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(PrometheusError::BodyTooLarge {
                        limit: MAX_BODY_BYTES,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            if let Some(part) = body[..]
                .split(|b| *b == b'&')
                .find(|part| !part.is_empty() && !part.contains(&b'='))
            {
                let part = String::from_utf8_lossy(part);
                return Err(PrometheusError::NotAForm(crate::query::shown(&part)));
            }
            pairs.extend(
                form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())),
            );
        }
        pairs.extend(
            form_urlencoded::parse(req.query_string().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned())),
        );
        Ok(Self { pairs })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or `None` when absent or empty (as Prometheus treats both).
    pub(crate) fn given(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// Every non-empty value of `name`: the first counts, but none may be malformed.
    pub(crate) fn each(&self, name: &str) -> impl Iterator<Item = &str> {
        self.pairs
            .iter()
            .filter(move |(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `limit`: a count of series, 0 (or none) for all.
    pub(crate) fn limit(&self) -> Result<usize, PrometheusError> {
        self.count("limit")
    }

    /// A count parameter (`limit`, `limit_per_metric`): a non-negative integer that fits Go's
    /// `int`, as Prometheus reads it; 0 when absent or empty.
    pub(crate) fn count(&self, name: &str) -> Result<usize, PrometheusError> {
        let read = |v: &str| {
            v.parse::<i64>()
                .ok()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    PromError::bad_data(format!(
                        "invalid parameter \"{name}\": cannot parse \"{}\" to a valid limit",
                        crate::query::shown(v)
                    ))
                })
        };
        let counts = self.each(name).map(read).collect::<Result<Vec<_>, _>>()?;
        match self.given(name) {
            Some(_) => Ok(counts.first().copied().unwrap_or(0)),
            None => Ok(0),
        }
    }

    /// Checks the optional times a listing takes (they do not narrow it).
    pub(crate) fn check_times(&self) -> Result<(), PrometheusError> {
        for name in ["start", "end"] {
            for v in self.each(name) {
                crate::promql::time::parse_time(name, v)?;
            }
        }
        Ok(())
    }

    /// Checks `timeout` (queries are bounded by the appliance's own timeouts).
    pub(crate) fn check_timeout(&self) -> Result<(), PrometheusError> {
        for v in self.each("timeout") {
            crate::promql::time::parse_duration("timeout", v)?;
        }
        Ok(())
    }
}

/// Prometheus' success envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct PrometheusSuccess<T> {
    /// Always `success`.
    #[schema(example = "success")]
    status: &'static str,
    data: T,
    /// Things the caller should know that did not stop the request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    /// Prometheus 3's notes that are not warnings (`PromQL info: …`, e.g. a `rate()` of a
    /// metric that might not be a counter).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    infos: Vec<String>,
}

/// The success envelope; notes starting `PromQL info:` go to `infos`, as Prometheus 3 splits
/// them from `warnings`.
pub(crate) fn success<T: Serialize>(data: T, notes: Vec<String>) -> HttpResponse {
    let (infos, warnings) = notes
        .into_iter()
        .partition(|n: &String| n.starts_with("PromQL info:"));
    HttpResponse::Ok().json(PrometheusSuccess {
        status: "success",
        data,
        warnings,
        infos,
    })
}

/// `/query`'s and `/query_range`'s documented parameters.
#[allow(dead_code)]
#[derive(Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct QueryParams {
    /// A PromQL expression (Prometheus 3's language, for float samples; see docs/grafana.md).
    #[param(example = "sum by (did) (connections{did=~\"123|456\"})")]
    query: String,
    /// Evaluation time: RFC 3339 or Unix seconds; now when absent.
    #[param(example = "2024-01-15T12:00:00Z")]
    time: Option<String>,
    /// Accepted and checked; queries are bounded by the appliance's timeouts.
    timeout: Option<String>,
    /// Most series in the answer; 0 for all.
    limit: Option<u64>,
}

#[allow(dead_code)]
#[derive(Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct QueryRangeParams {
    /// A PromQL expression (Prometheus 3's language, for float samples; see docs/grafana.md).
    #[param(example = "sum(bandwidth{did=~\"123|456\"}) * 8")]
    query: String,
    /// Start, inclusive: RFC 3339 or Unix seconds.
    #[param(example = "2024-01-15T12:00:00Z")]
    start: String,
    /// End, inclusive: RFC 3339 or Unix seconds.
    #[param(example = "2024-01-15T18:00:00Z")]
    end: String,
    /// Step between evaluations: seconds or a duration such as `1m`. The appliance is asked
    /// for buckets of the step rounded to whole minutes.
    #[param(example = "60")]
    step: String,
    timeout: Option<String>,
    /// Most series in the answer; 0 for all.
    limit: Option<u64>,
}

/// The parameters of the listings (`/series`, `/labels`, `/label/{name}/values`).
#[allow(dead_code)]
#[derive(Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct SelectorParams {
    /// Series selectors; only the series they name are listed.
    #[serde(rename = "match[]")]
    #[param(rename = "match[]", example = json!(["connections{did=\"123\"}"]))]
    matches: Option<Vec<String>>,
    /// Checked, but listings do not depend on time.
    start: Option<String>,
    end: Option<String>,
    /// Most items in the answer; 0 for all.
    limit: Option<u64>,
}

/// `/series`' parameters: as the listings', with at least one selector.
#[allow(dead_code)]
#[derive(Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// Series selectors, at least one; the series they name are listed.
    #[serde(rename = "match[]")]
    #[param(rename = "match[]", example = json!(["connections{did=\"123\"}"]))]
    matches: Vec<String>,
    /// Checked, but listings do not depend on time.
    start: Option<String>,
    end: Option<String>,
    /// Most items in the answer; 0 for all.
    limit: Option<u64>,
}

/// `/format_query`'s parameter.
#[allow(dead_code)]
#[derive(Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct FormatParams {
    /// A PromQL expression.
    #[param(example = "sum(connections)")]
    query: String,
}

/// `/query_exemplars`' parameters.
#[allow(dead_code)]
#[derive(Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct ExpressionParams {
    /// A PromQL expression.
    #[param(example = "sum(connections)")]
    query: String,
    start: Option<String>,
    end: Option<String>,
}

/// A traceparent to continue towards the appliance.
pub(crate) fn traceparent(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
}
