//! The HTTP surface: one file per route group, wired together here.
//! (`/openapi.json` and `/docs/` are served by the Swagger UI service.)

pub mod admin;
mod cache_headers;
mod csv;
pub mod metricdata;
pub mod metrics;
pub mod openapi;
pub mod ops;

use actix_web::middleware::from_fn;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::ApiError;
use crate::limits;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .wrap(from_fn(limits::middleware))
            .route("/metricdata", web::get().to(metricdata::get_metricdata))
            .route("/metrics", web::get().to(metrics::get_metrics)),
    )
    .route("/healthz", web::get().to(ops::healthz))
    .route("/readyz", web::get().to(ops::readyz))
    .route("/metrics", web::get().to(ops::prometheus))
    .route("/internal/cache", web::get().to(admin::get_cache))
    .route("/internal/cache", web::delete().to(admin::delete_cache))
    .route("/internal/limits", web::get().to(admin::get_limits))
    .service(openapi::swagger_ui());
}

/// Every route's path (none has parameters), for the fallback and metric labels.
pub const ROUTES: &[&str] = &[
    "/v1/metricdata",
    "/v1/metrics",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/internal/cache",
    "/internal/limits",
];

/// Unknown routes and methods get a problem too, never actix's plain-text default.
pub async fn fallback(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(if ROUTES.contains(&req.path()) {
        ApiError::MethodNotAllowed
    } else {
        ApiError::NotFound
    })
}
