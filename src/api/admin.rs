//! The operator's endpoints, off the public surface: what the cache holds and purging it, the
//! limits in force, and readiness with its reasons. They are served on the admin listener
//! (`admin.listen`, loopback by default), or on the main port behind `admin.token`.

use std::collections::BTreeMap;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;

use crate::cache::{FleetCacheReport, Purged};
use crate::error::{ApiError, Problem};
use crate::limits::{bearer, key_matches, sha256};
use crate::query;
use crate::reload::ReloadReport;
use crate::settings::ClientQuota;
use crate::state::AppState;
use crate::upstream::GuardReport;

/// Lets a request through when no admin token is set (the admin listener, which then relies
/// on its address), or when it carries the token (`Authorization: Bearer`, compared in
/// constant time); else a 401 problem.
pub async fn authorize(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let allowed = req.app_data::<web::Data<AppState>>().is_none_or(|state| {
        let token = state.settings.admin.token.expose_secret();
        token.is_empty()
            || bearer(req.request()).is_some_and(|b| key_matches(b, &sha256(token.as_bytes())))
    });
    if allowed {
        return next.call(req).await.map(|r| r.map_into_left_body());
    }
    let refusal = ApiError::Unauthorized.error_response();
    Ok(req.into_response(refusal).map_into_right_body())
}

/// Entries, bytes and hit ratio of the response cache, and of the segment cache below it.
#[utoipa::path(get, path = "/internal/cache", tag = "admin",
    responses(
        (status = 200, description = "Cache statistics", body = FleetCacheReport),
        (status = 401, description = "The admin token is required", body = Problem, content_type = "application/problem+json")))]
pub async fn get_cache(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.cache_report().await)
}

/// Removes every cached answer and segment, or those for one metric and/or one device, on
/// every replica: here, in Redis, and (announced with a generation) on the other replicas.
/// Counted (`metricgate_cache_purges_total`) and logged with who asked.
#[utoipa::path(delete, path = "/internal/cache", tag = "admin",
    params(
        ("metric" = Option<String>, Query, description = "Only answers that include this metric"),
        ("did" = Option<u64>, Query, description = "Only answers that include this device", minimum = 1)),
    responses(
        (status = 200, description = "Purged", body = Purged),
        (status = 400, description = "Invalid parameters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The admin token is required", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_cache(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let filter = query::parse_purge(req.query_string()).map_err(ApiError::InvalidQuery)?;
    // `appliance=emea` (repeatable) purges those appliances' caches only.
    let mut appliances = Vec::new();
    for (k, v) in form_urlencoded::parse(req.query_string().as_bytes()) {
        if k == "appliance" {
            appliances.push(super::pick::by_name(&state, Some(&v))?.name.to_string());
        }
    }
    let purged = state.purge_caches(&filter, &appliances).await;
    state.metrics.cache_purges.inc();
    let caller = state.callers.identify(&req);
    let peer = req.peer_addr().map(|a| a.ip().to_string());
    tracing::info!(
        answers = purged.purged,
        segments = purged.segments,
        ?filter,
        %caller,
        peer,
        "cache purged"
    );
    Ok(HttpResponse::Ok().json(purged))
}

/// Reads the configuration file again: rate limits, client overrides, the log level and the
/// cache TTLs change in place (as on SIGHUP); other changed settings are named as needing a
/// restart.
#[utoipa::path(post, path = "/internal/reload", tag = "admin",
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
    /// The ceiling per client address, across every client id it sends (proven ids exempt).
    pub per_ip: ClientQuota,
    /// Forced refreshes (`no-cache`) each caller may make per minute.
    pub no_cache_per_minute: u32,
    /// Client ids that must be proven with their key (never the keys).
    pub keyed_clients: Vec<String>,
    /// Callers whose state is tracked right now.
    pub tracked_clients: usize,
    /// The default appliance's (else the first one's).
    pub appliance: Option<GuardReport>,
    /// Each appliance's, by name.
    pub appliances: std::collections::BTreeMap<String, GuardReport>,
    /// `shared` (limits, budget and cache shared through Redis), `embedded` (Redis configured
    /// but out of reach: this replica acts alone) or `disabled`.
    #[schema(example = "shared")]
    pub redis: &'static str,
}

/// The effective rate limits and the appliance's protection, with live state.
#[utoipa::path(get, path = "/internal/limits", tag = "admin",
    responses(
        (status = 200, description = "Limits in force", body = Limits),
        (status = 401, description = "The admin token is required", body = Problem, content_type = "application/problem+json")))]
pub async fn get_limits(state: web::Data<AppState>) -> HttpResponse {
    // The limits in force, which a reload may have changed since startup.
    let r = state.callers.settings();
    let callers = &state.callers;
    HttpResponse::Ok().json(Limits {
        client_header: callers.header().to_string(),
        trusted_proxies: r.trusted_proxies.iter().map(ToString::to_string).collect(),
        per_client: callers.default_quota(),
        overrides: r.overrides.clone(),
        per_ip: callers.per_ip_quota(),
        no_cache_per_minute: callers.no_cache_per_minute(),
        keyed_clients: callers.keyed_ids(),
        tracked_clients: callers.tracked(),
        redis: match &state.shared {
            None => "disabled",
            Some(s) if s.is_up() => "shared",
            Some(_) => "embedded",
        },
        appliance: state
            .fleet
            .default_or_first()
            .map(|a| a.client.guard().report(&a.settings)),
        appliances: state
            .fleet
            .all()
            .iter()
            .map(|a| (a.name.to_string(), a.client.guard().report(&a.settings)))
            .collect(),
    })
}
