//! The HTTP surface: one file per route group, wired together here.
//! (`/openapi.json` and `/docs/` are served by the Swagger UI service.)

pub mod admin;
pub mod appliance;
mod cache_headers;
pub mod darktrace;
mod explorer;
mod failures;
pub mod limit;
pub mod metricdata;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod ops;
mod params;
pub mod prometheus;

use actix_web::http::Method;
use actix_web::middleware::from_fn;
use actix_web::{HttpRequest, HttpResponse, guard, web};

use crate::error::ApiError;
use crate::state::AppState;
use limit::Refusal;

/// The public surface. The metric routes are behind the caller's limit ([`LIMITED`]),
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
        .route("/healthz", get().to(ops::healthz))
        .route("/readyz", get().to(ops::readyz))
        .route("/metrics", get().to(ops::prometheus))
        .route("/", get().to(explorer::page))
        .route("/explorer/{file}", get().to(explorer::asset))
        .route("/docs", get().to(openapi::docs_without_slash))
        .configure(prometheus::configure)
        .service(openapi::swagger_ui());
}

/// A GET route. actix's own method guard records each method it tries in the request's
/// extensions (for an `Allow` header; the fallbacks' come from [`allowed_methods`] instead):
/// an allocation and a map insert on every request. `HEAD` is routed as `GET` (see
/// [`observe`]).
pub(crate) fn get() -> actix_web::Route {
    method(Method::GET)
}

/// A POST route, guarded as [`get`] is.
pub(crate) fn post() -> actix_web::Route {
    method(Method::POST)
}

fn method(allowed: Method) -> actix_web::Route {
    web::route().guard(guard::fn_guard(move |ctx| ctx.head().method == allowed))
}

/// The route groups behind the caller's limit (each path itself and everything below it),
/// and how each refuses.
pub const LIMITED: &[(&str, Refusal)] = &[
    ("/v1", Refusal::Problem),
    ("/darktrace", Refusal::Problem),
    ("/appliance", Refusal::Problem),
    (prometheus::PREFIX, Refusal::Prometheus),
];

/// Whether `path` is behind the caller's limit, and how it refuses.
pub fn limited(path: &str) -> Option<Refusal> {
    LIMITED
        .iter()
        .find(|(group, _)| {
            path.strip_prefix(group)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .map(|(_, refusal)| *refusal)
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

/// Every route's path, for the fallback and metric labels. Only one has a parameter:
/// [`METRIC_BY_ID`], matched by prefix.
pub const ROUTES: &[&str] = &[
    "/",
    "/docs",
    "/v1/metricdata",
    "/v1/metrics",
    "/darktrace/metricdata",
    "/darktrace/metrics",
    "/appliance/metricdata",
    "/appliance/metrics",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/internal/cache",
    "/internal/limits",
    "/internal/readiness",
    "/internal/reload",
    "/prometheus/api/v1/query",
    "/prometheus/api/v1/query_range",
    "/prometheus/api/v1/format_query",
    "/prometheus/api/v1/query_exemplars",
    "/prometheus/api/v1/labels",
    "/prometheus/api/v1/series",
    "/prometheus/api/v1/metadata",
    "/prometheus/api/v1/status/buildinfo",
    "/prometheus/api/v1/rules",
    "/prometheus/api/v1/alerts",
];

/// The operator's routes: on the admin listener, or on the main port when `admin.listen` is
/// empty.
pub const ADMIN_ROUTES: &[&str] = &[
    "/internal/cache",
    "/internal/limits",
    "/internal/readiness",
    "/internal/reload",
];

/// What the admin listener serves besides [`ADMIN_ROUTES`].
const ADMIN_LISTENER_ROUTES: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// Every label `observe` gives a route in the HTTP series.
pub fn route_labels() -> Vec<&'static str> {
    let mut labels = ROUTES.to_vec();
    labels.extend([
        METRIC_BY_ID.0,
        APPLIANCE_METRIC_BY_ID.0,
        "/docs/",
        "/explorer/",
        "unmatched",
    ]);
    labels
}

/// `/darktrace/metrics/{mlid}`, as a metric label and a prefix.
pub const METRIC_BY_ID: (&str, &str) = ("/darktrace/metrics/{mlid}", "/darktrace/metrics/");

/// `/appliance/metrics/{mlid}`, likewise.
pub const APPLIANCE_METRIC_BY_ID: (&str, &str) =
    ("/appliance/metrics/{mlid}", "/appliance/metrics/");

/// Unknown routes and methods get a problem too, never actix's plain-text default.
pub async fn fallback(
    req: HttpRequest,
    state: Option<web::Data<AppState>>,
) -> Result<HttpResponse, ApiError> {
    let path = req.path();
    let admin_here = state.is_some_and(|s| s.settings.admin.listen.is_none());
    let known = if ADMIN_ROUTES.contains(&path) {
        admin_here
    } else {
        ROUTES.contains(&path)
            || path.starts_with(METRIC_BY_ID.1)
            || path.starts_with(APPLIANCE_METRIC_BY_ID.1)
    };
    Err(if known {
        ApiError::MethodNotAllowed {
            allow: allowed_methods(path),
        }
    } else {
        ApiError::NotFound
    })
}

/// The methods a known route of the gateway's own answers, as a 405's `Allow` lists them:
/// GET (and HEAD) everywhere but the admin routes [`admin_routes`] registers otherwise (the
/// Prometheus API's routes say theirs where its scope registers them).
fn allowed_methods(path: &str) -> &'static str {
    match path {
        "/internal/cache" => "GET, HEAD, DELETE",
        "/internal/reload" => "POST",
        _ => "GET, HEAD",
    }
}

/// The admin listener's fallback.
pub async fn admin_fallback(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let path = req.path();
    Err(
        if ADMIN_ROUTES.contains(&path) || ADMIN_LISTENER_ROUTES.contains(&path) {
            ApiError::MethodNotAllowed {
                allow: allowed_methods(path),
            }
        } else {
            ApiError::NotFound
        },
    )
}

#[cfg(test)]
mod tests {
    use super::{Refusal, limited};

    #[test]
    fn the_limit_covers_each_group_and_everything_below_it_only() {
        for (path, expected) in [
            ("/v1", Some(Refusal::Problem)),
            ("/v1/metricdata", Some(Refusal::Problem)),
            ("/v1/nothing/here", Some(Refusal::Problem)),
            ("/darktrace/metrics/4", Some(Refusal::Problem)),
            ("/appliance/metricdata", Some(Refusal::Problem)),
            ("/prometheus/api/v1/query", Some(Refusal::Prometheus)),
            ("/v1metricdata", None),
            ("/darktracex", None),
            ("/prometheus/api/v1x", None),
            ("/prometheus", None),
            ("/healthz", None),
            ("/metrics", None),
            ("/", None),
            ("/internal/cache", None),
        ] {
            assert_eq!(limited(path), expected, "{path}");
        }
    }
}
