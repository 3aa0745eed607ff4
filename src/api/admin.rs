//! `/internal/*`: what the cache holds, and purging it.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use std::collections::BTreeMap;

use crate::cache::{CacheReport, Purged};
use crate::error::{ApiError, Problem};
use crate::query;
use crate::reload::ReloadReport;
use crate::settings::ClientQuota;
use crate::state::AppState;
use crate::upstream::GuardReport;

/// Entries, bytes and hit ratio of the response cache, and of the segment cache below it.
#[utoipa::path(get, path = "/internal/cache", tag = "operations",
    responses((status = 200, description = "Cache statistics", body = CacheReport)))]
pub async fn get_cache(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.cache_report().await)
}

/// Removes every cached answer and segment, or those for one metric and/or one device.
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
    let purged = state.purge_caches(&filter).await;
    tracing::info!(purged.purged, purged.segments, ?filter, "cache purged");
    Ok(HttpResponse::Ok().json(purged))
}

/// Reads the configuration file again: rate limits, client overrides, the log level and the
/// cache TTLs change in place (as on SIGHUP); other changed settings are named as needing a
/// restart.
#[utoipa::path(post, path = "/internal/reload", tag = "operations",
    responses(
        (status = 200, description = "Reloaded", body = ReloadReport),
        (status = 409, description = "Not reloaded: no configuration file to read, or it is invalid (the running configuration stays)", body = Problem, content_type = "application/problem+json")))]
pub async fn reload(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.reload().await?))
}

/// The limits in force: per caller, per client override, and towards the appliance.
#[derive(Serialize, ToSchema)]
pub struct Limits {
    /// Header that identifies callers (else their IP does).
    pub client_header: String,
    pub trusted_proxies: Vec<String>,
    /// The default per-caller quota.
    pub per_client: ClientQuota,
    /// Per-client quotas, by client id.
    pub overrides: BTreeMap<String, ClientQuota>,
    /// Callers whose state is tracked right now.
    pub tracked_clients: usize,
    pub appliance: GuardReport,
    /// `shared` (limits, budget and cache shared through Redis), `embedded` (Redis configured
    /// but out of reach: this replica acts alone) or `disabled`.
    #[schema(example = "shared")]
    pub redis: &'static str,
}

/// The effective rate limits and the appliance's protection, with live state.
#[utoipa::path(get, path = "/internal/limits", tag = "operations",
    responses((status = 200, description = "Limits in force", body = Limits)))]
pub async fn get_limits(state: web::Data<AppState>) -> HttpResponse {
    // The limits in force, which a reload may have changed since startup.
    let r = state.callers.settings();
    HttpResponse::Ok().json(Limits {
        client_header: state.callers.header().to_string(),
        trusted_proxies: r.trusted_proxies.clone(),
        per_client: state.callers.default_quota(),
        overrides: r.overrides.clone(),
        tracked_clients: state.callers.tracked(),
        redis: match &state.shared {
            None => "disabled",
            Some(s) if s.is_up() => "shared",
            Some(_) => "embedded",
        },
        appliance: state.client.guard().report(&state.settings.upstream),
    })
}
