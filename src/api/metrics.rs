//! `GET /v1/metrics`: the appliance's metric catalog, normalized.

use actix_web::{HttpRequest, HttpResponse, web};

use super::failures::ApplianceFailures;
use super::pick;
use crate::catalog::MetricCatalog;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// The metrics the appliance knows, with units and supported filters.
///
/// Served from the gateway's periodically refreshed copy; fetched on demand if it has none.
#[utoipa::path(get, path = "/v1/metrics", tag = "metrics",
    params(("appliance" = Option<String>, Query, description = "The appliance whose catalog (see `GET /v1/appliances`); the default when omitted or empty. Catalogs and `mlid`s are each appliance's own.", pattern = "^([a-z0-9][a-z0-9_-]{0,31})?$")),
    responses(
        (status = 200, description = "The catalog", body = MetricCatalog),
        (status = 400, description = "No appliance has this name; `errors` lists the choices", body = Problem, content_type = "application/problem+json"),
        ApplianceFailures))]
pub async fn get_metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let appliance = pick::appliance(&req, &state)?;
    match appliance.catalog.get_or_fetch(&appliance.client).await? {
        Some(catalog) => Ok(HttpResponse::Ok().json(&*catalog)),
        None => Err(ApiError::NotFound),
    }
}
