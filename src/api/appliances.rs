//! `GET /v1/appliances`: the appliances a caller may ask, by name.

use actix_web::{HttpRequest, HttpResponse, web};
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
    /// This caller's questions without `appliance=` go to this one.
    pub default: bool,
    /// Reachable, its catalog in, its breaker not open.
    pub ready: bool,
    /// The appliance's software version, from its `/status`, once the gateway has read it
    /// (a listing asks for it in the background; the next listing shows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "6.2.48")]
    pub version: Option<String>,
}

/// The appliances behind the gateway that the caller may ask (a client limited to some by
/// `[rate_limit.clients.<id>] appliances` never sees the others): names, labels, which is its
/// default, and readiness.
#[utoipa::path(get, path = "/v1/appliances", tag = "metrics",
    responses((status = 200, description = "Every appliance the caller may ask", body = Vec<ApplianceListing>)))]
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let now = state.clock.now_ms();
    let allowed = super::pick::allowed(&req, &state);
    let default = super::pick::for_caller(&state, None, &allowed)
        .ok()
        .map(|a| a.name.clone());
    let listing: Vec<ApplianceListing> = state
        .fleet
        .all()
        .iter()
        .filter(|a| allowed.admits(a.name.as_str()))
        .map(|a| ApplianceListing {
            name: a.name.to_string(),
            label: a.label.clone(),
            default: default.as_ref() == Some(&a.name),
            ready: appliance_readiness(a, now).ready,
            version: a.version(now),
        })
        .collect();
    HttpResponse::Ok().json(listing)
}
