//! `GET /v1/appliances`: the appliances a caller may ask, by name.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::ops::appliance_readiness;
use crate::state::AppState;

/// One appliance, as callers see it: never its URL or tokens.
#[derive(Serialize, ToSchema)]
pub struct ApplianceListing {
    /// What `appliance=` takes.
    #[schema(example = "emea")]
    pub name: String,
    /// What people call it.
    #[schema(example = "EMEA master")]
    pub label: Option<String>,
    /// Questions without `appliance=` go to this one.
    pub default: bool,
    /// Reachable, its catalog in, its breaker not open.
    pub ready: bool,
}

/// The appliances behind the gateway: names, labels, which is the default, and readiness.
#[utoipa::path(get, path = "/v1/appliances", tag = "metrics",
    responses((status = 200, description = "Every appliance the caller may ask", body = Vec<ApplianceListing>)))]
pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let now = state.clock.now_ms();
    let default = state.fleet.pick(None).ok().map(|a| a.name.clone());
    let listing: Vec<ApplianceListing> = state
        .fleet
        .all()
        .iter()
        .map(|a| ApplianceListing {
            name: a.name.to_string(),
            label: a.label.clone(),
            default: default.as_ref() == Some(&a.name),
            ready: appliance_readiness(a, now).ready,
        })
        .collect();
    HttpResponse::Ok().json(listing)
}
