//! The routes' names and guards, known to every handler file without knowing the handlers:
//! the method guards, every path (for the fallbacks and the metric labels), and the
//! fallbacks' problems.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, guard, web};

use crate::error::ApiError;
use crate::state::AppState;

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

/// Every route's path, for the fallback and metric labels. Only one has a parameter:
/// [`METRIC_BY_ID`], matched by prefix.
pub const ROUTES: &[&str] = &[
    "/",
    "/docs",
    "/v1/metricdata",
    "/v1/metrics",
    "/v1/appliances",
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
    labels.extend(NAMED_ROUTES);
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

/// The drop-in routes of a named appliance (`/darktrace/emea/metricdata`), as metric labels.
pub const NAMED_ROUTES: &[&str] = &[
    "/darktrace/{appliance}/metricdata",
    "/darktrace/{appliance}/metrics",
    "/darktrace/{appliance}/metrics/{mlid}",
    "/appliance/{appliance}/metricdata",
    "/appliance/{appliance}/metrics",
    "/appliance/{appliance}/metrics/{mlid}",
];

/// Which of [`NAMED_ROUTES`] `path` is, if any (after the unnamed routes were tried).
pub fn named_route(path: &str) -> Option<&'static str> {
    let (family, rest) = if let Some(rest) = path.strip_prefix("/darktrace/") {
        (0, rest)
    } else {
        (3, path.strip_prefix("/appliance/")?)
    };
    let (_, tail) = rest.split_once('/')?;
    let at = match tail.split_once('/') {
        None if tail == "metricdata" => 0,
        None if tail == "metrics" => 1,
        Some(("metrics", mlid)) if !mlid.is_empty() && !mlid.contains('/') => 2,
        _ => return None,
    };
    NAMED_ROUTES.get(family + at).copied()
}

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
            || named_route(path).is_some()
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
/// GET (and HEAD) everywhere but the admin routes `admin_routes` registers otherwise (the
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
