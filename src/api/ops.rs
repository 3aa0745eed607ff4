//! Liveness and readiness.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::startup::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Readiness, with the reasons when not ready.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Why the gateway is not ready (empty when ready).
    pub reasons: Vec<String>,
    /// Whether the metric catalog has been fetched.
    pub catalog: bool,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// The gateway can answer: configuration loaded, metric catalog fetched from the appliance.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready, with reasons", body = Readiness)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut reasons = Vec::new();
    let catalog = state.catalog.get().is_some();
    if !catalog {
        let why = state
            .catalog
            .last_error()
            .unwrap_or_else(|| "not fetched yet".into());
        reasons.push(format!("metric catalog: {why}"));
    }
    let body = Readiness {
        ready: reasons.is_empty(),
        reasons,
        catalog,
    };
    if body.ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
