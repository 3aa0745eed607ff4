//! `/prometheus/api/v1/*`: the Prometheus HTTP API, so Grafana's built-in Prometheus data
//! source (URL `http://<gateway>/prometheus`) plots Darktrace metrics. HTTP only: requests are
//! read as Prometheus reads them (GET, or a form-encoded POST), queries are planned and
//! evaluated by [`crate::promql`], their data comes from the use case (segments, coalescing,
//! the appliance's budget), and answers and failures have Prometheus' envelopes.

mod form;
pub(crate) mod listing;
pub(crate) mod query;

pub(crate) use form::{
    ExpressionParams, Form, FormatParams, PrometheusSuccess, QueryParams, QueryRangeParams,
    SelectorParams, SeriesParams, success, traceparent,
};

use actix_web::{HttpResponse, web};

use crate::error::PrometheusError;

use listing::{
    alerts, buildinfo, get_labels, get_series, label_values, metadata, post_labels, post_series,
    rules,
};
use query::{
    format_query, get_query, get_query_range, post_format_query, post_query, post_query_exemplars,
    post_query_range, query_exemplars,
};

/// Where the API lives: Grafana's data source URL is `http://<gateway>/prometheus`.
pub const PREFIX: &str = "/prometheus/api/v1";

/// `/label/{name}/values`, as a metric label and a prefix.
pub const LABEL_VALUES: (&str, &str) = (
    "/prometheus/api/v1/label/{name}/values",
    "/prometheus/api/v1/label/",
);

/// The API's routes (each behind the caller's rate limit: see [`super::limit::LIMITED`]).
pub fn configure(cfg: &mut web::ServiceConfig) {
    let both = |path: &str, get: fn() -> actix_web::Route, post: fn() -> actix_web::Route| {
        web::resource(path)
            .route(get())
            .route(post())
            .default_service(web::to(|| method_not_allowed("GET, HEAD, POST")))
    };
    let get_only = |path: &str, get: fn() -> actix_web::Route| {
        web::resource(path)
            .route(get())
            .default_service(web::to(|| method_not_allowed("GET, HEAD")))
    };
    cfg.service(
        web::scope(PREFIX)
            .service(both(
                "/query",
                || super::get().to(get_query),
                || super::post().to(post_query),
            ))
            .service(both(
                "/query_range",
                || super::get().to(get_query_range),
                || super::post().to(post_query_range),
            ))
            .service(both(
                "/format_query",
                || super::get().to(format_query),
                || super::post().to(post_format_query),
            ))
            .service(both(
                "/query_exemplars",
                || super::get().to(query_exemplars),
                || super::post().to(post_query_exemplars),
            ))
            .service(both(
                "/labels",
                || super::get().to(get_labels),
                || super::post().to(post_labels),
            ))
            .service(both(
                "/series",
                || super::get().to(get_series),
                || super::post().to(post_series),
            ))
            .service(get_only("/label/{name}/values", || {
                super::get().to(label_values)
            }))
            .service(get_only("/metadata", || super::get().to(metadata)))
            .service(get_only("/status/buildinfo", || super::get().to(buildinfo)))
            .service(get_only("/rules", || super::get().to(rules)))
            .service(get_only("/alerts", || super::get().to(alerts)))
            .default_service(web::to(not_found)),
    );
}

async fn not_found() -> Result<HttpResponse, PrometheusError> {
    Err(PrometheusError::NotFound)
}

async fn method_not_allowed(allow: &'static str) -> Result<HttpResponse, PrometheusError> {
    Err(PrometheusError::MethodNotAllowed { allow })
}
