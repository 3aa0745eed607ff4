//! `GET /v1/metrics`: the appliance's metric catalog, normalized.

use actix_web::{HttpRequest, HttpResponse, web};

use super::failures::ApplianceFailures;
use super::pick;
use crate::catalog::MetricCatalog;
use crate::error::ApiError;
use crate::state::AppState;

/// The metrics the appliance knows, with units and supported filters.
///
/// Served from the gateway's periodically refreshed copy; fetched on demand if it has none.
#[utoipa::path(get, path = "/v1/metrics", tag = "metrics",
    responses(
        (status = 200, description = "The catalog", body = MetricCatalog),
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
