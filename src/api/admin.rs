//! `/internal/*`: what the cache holds, and purging it.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::cache::CacheReport;
use crate::error::{ApiError, Problem};
use crate::query;
use crate::startup::AppState;

/// Entries, bytes and hit ratio of the response cache.
#[utoipa::path(get, path = "/internal/cache", tag = "operations",
    responses((status = 200, description = "Cache statistics", body = CacheReport)))]
pub async fn get_cache(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.cache.report().await)
}

#[derive(Serialize, ToSchema)]
pub struct Purged {
    /// Entries removed.
    pub purged: u64,
}

/// Removes every cached answer, or those for one metric and/or one device.
#[utoipa::path(delete, path = "/internal/cache", tag = "operations",
    params(
        ("metric" = Option<String>, Query, description = "Only answers that include this metric"),
        ("did" = Option<u64>, Query, description = "Only answers that include this device", minimum = 1)),
    responses(
        (status = 200, description = "Purged", body = Purged),
        (status = 400, description = "Invalid parameters", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_cache(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let filter = query::parse_purge(req.query_string()).map_err(ApiError::InvalidQuery)?;
    let purged = state
        .cache
        .purge(filter.metric.as_deref(), filter.did)
        .await;
    tracing::info!(purged, ?filter, "cache purged");
    Ok(HttpResponse::Ok().json(Purged { purged }))
}
