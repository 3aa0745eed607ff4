//! The HTTP surface: one file per route group, wired together here.
//! (`/openapi.json` and `/docs/` are served by the Swagger UI service.)

pub mod admin;
pub mod appliance;
pub mod appliances;
mod cache_headers;
pub mod darktrace;
mod explorer;
mod failures;
mod lane;
pub mod limit;
pub mod metricdata;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod ops;
mod params;
pub(crate) mod pick;
pub mod prometheus;
mod routes;

pub use routes::{
    ADMIN_ROUTES, APPLIANCE_METRIC_BY_ID, METRIC_BY_ID, ROUTES, admin_fallback, fallback,
    route_labels,
};
pub(crate) use routes::{get, post};

use actix_web::middleware::from_fn;
use actix_web::web;

/// The public surface. The metric routes are behind the caller's limit ([`limit::LIMITED`]),
/// applied before routing by [`limit::Limit`].
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/metricdata", get().to(metricdata::get_metricdata))
        .route("/v1/metrics", get().to(metrics::get_metrics))
        .route("/darktrace/metricdata", get().to(darktrace::get_metricdata))
        .route("/darktrace/metrics", get().to(darktrace::get_metrics))
        .route(METRIC_BY_ID.0, get().to(darktrace::get_metric))
        .route("/appliance/metricdata", get().to(appliance::get_metricdata))
        .route("/appliance/metrics", get().to(appliance::get_metrics))
        .route(APPLIANCE_METRIC_BY_ID.0, get().to(appliance::get_metric))
        .route(
            "/darktrace/{appliance}/metricdata",
            get().to(darktrace::get_named_metricdata),
        )
        .route(
            "/darktrace/{appliance}/metrics",
            get().to(darktrace::get_named_metrics),
        )
        .route(
            "/darktrace/{appliance}/metrics/{mlid}",
            get().to(darktrace::get_named_metric),
        )
        .route(
            "/appliance/{appliance}/metricdata",
            get().to(appliance::get_named_metricdata),
        )
        .route(
            "/appliance/{appliance}/metrics",
            get().to(appliance::get_named_metrics),
        )
        .route(
            "/appliance/{appliance}/metrics/{mlid}",
            get().to(appliance::get_named_metric),
        )
        .route("/v1/appliances", get().to(appliances::list))
        .route("/healthz", get().to(ops::healthz))
        .route("/readyz", get().to(ops::readyz))
        .route("/metrics", get().to(ops::prometheus))
        .route("/", get().to(explorer::page))
        .route("/explorer/{file}", get().to(explorer::asset))
        .route("/docs", get().to(openapi::docs_without_slash))
        .configure(prometheus::configure)
        .service(openapi::swagger_ui());
}

/// The operator's endpoints, each behind [`admin::authorize`].
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/internal")
            .wrap(from_fn(admin::authorize))
            .route("/cache", get().to(admin::get_cache))
            .route("/cache", web::delete().to(admin::delete_cache))
            .route("/limits", get().to(admin::get_limits))
            .route("/reload", post().to(admin::reload))
            .route("/readiness", get().to(ops::readiness_detail)),
    );
}

/// The admin listener: the operator's endpoints, liveness, readiness with its reasons, the
/// Prometheus series and the admin surface's OpenAPI document.
pub fn admin_listener_routes(cfg: &mut web::ServiceConfig) {
    admin_routes(cfg);
    cfg.route("/healthz", get().to(ops::healthz))
        .service(
            web::resource("/readyz")
                .wrap(from_fn(admin::authorize))
                .route(get().to(ops::readiness_detail)),
        )
        .route("/metrics", get().to(ops::prometheus))
        .route("/openapi.json", get().to(openapi::serve_admin_document));
}
