//! Which appliance a request is for: `appliance=` in the query, a name in the path
//! (`/darktrace/<name>/…`), else the default; and whether its caller may ask it. Every route
//! that reads an appliance picks it here, so access per caller (`[rate_limit.clients.<id>]
//! appliances`) is enforced in this one place.

use std::sync::Arc;

use actix_web::{HttpMessage, HttpRequest};

use crate::error::{ApiError, PrometheusError};
use crate::fleet::{Appliance, PickError};
use crate::query::FieldError;
use crate::settings::ApplianceName;
use crate::state::AppState;

pub use crate::limits::AllowedAppliances;

/// The appliance a request was answered from, kept in its extensions once picked (the access
/// line names it).
#[derive(Debug, Clone)]
pub struct Picked(pub ApplianceName);

/// The value of `appliance=` in `query`, if given (and not empty).
pub fn named_in(query: &str) -> Option<String> {
    // Most requests name none: a substring test spares them the parse.
    if !query.contains("appliance=") {
        return None;
    }
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, v)| k == "appliance" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// The appliances the caller of `req` may ask: what every route reading appliances (one, or
/// several at once) checks its choice against. `All` unless the caller is limited.
pub fn allowed(req: &HttpRequest, state: &AppState) -> AllowedAppliances {
    state.callers.allowed(req)
}

/// The appliance `req` names (in its path, else `appliance=`), else the caller's default; a
/// 403 when the caller may not ask it. Remembered in the request for its access line.
pub fn appliance(req: &HttpRequest, state: &AppState) -> Result<Arc<Appliance>, ApiError> {
    let asked = match req.match_info().get("appliance") {
        Some(name) => Some(name.to_owned()),
        None => named_in(req.query_string()),
    };
    let picked = for_caller(state, asked.as_deref(), &allowed(req, state))?;
    remember(req, &picked);
    Ok(picked)
}

/// Notes in `req` which appliance answers it (for the access line).
pub fn remember(req: &HttpRequest, appliance: &Appliance) {
    req.extensions_mut().insert(Picked(appliance.name.clone()));
}

/// The appliance `asked` names, else the caller's default, for a caller that may ask
/// `allowed`. A caller limited to some appliances gets the same 403 for a name outside them
/// whether it exists or not, and any list of choices it is shown holds only its own.
pub fn for_caller(
    state: &AppState,
    asked: Option<&str>,
    allowed: &AllowedAppliances,
) -> Result<Arc<Appliance>, ApiError> {
    let Some(own) = allowed.names() else {
        return by_name(state, asked);
    };
    let choices = || own.iter().map(ToString::to_string).collect::<Vec<_>>();
    match asked {
        Some(name) if !allowed.admits(name) => {
            Err(ApiError::ForbiddenAppliance { choices: choices() })
        }
        Some(name) => state.fleet.pick(Some(name)).map_err(|_| {
            // Named in its access but gone from the fleet (a reload between the two).
            refused(&PickError::Unknown {
                asked: name.to_owned(),
                choices: choices(),
            })
        }),
        None => match state.fleet.pick(None) {
            Ok(default) if allowed.admits(default.name.as_str()) => Ok(default),
            // The default is not the caller's: its only appliance is what it means (a
            // provider's customer keeps its scripts without `appliance=`).
            _ => match own {
                [only] => state
                    .fleet
                    .pick(Some(only.as_str()))
                    .map_err(|e| refused(&e)),
                [] => Err(ApiError::ForbiddenAppliance {
                    choices: Vec::new(),
                }),
                _ => Err(refused(&PickError::NoDefault { choices: choices() })),
            },
        },
    }
}

/// The appliance `name` names, else the default; a 400 naming `appliance` and the choices.
/// Not limited per caller: for the admin surface, and for callers who may ask every appliance.
pub fn by_name(state: &AppState, name: Option<&str>) -> Result<Arc<Appliance>, ApiError> {
    state.fleet.pick(name).map_err(|e| refused(&e))
}

fn refused(e: &PickError) -> ApiError {
    ApiError::InvalidQuery(vec![FieldError::new("appliance", e.to_string())])
}

/// The appliance PromQL reads: the caller's default (the gateway's default when the caller
/// may ask it, else the first); in Prometheus' envelope when the caller may ask none.
pub fn promql_appliance(
    req: &HttpRequest,
    state: &AppState,
) -> Result<Arc<Appliance>, PrometheusError> {
    let allowed = allowed(req, state);
    let picked = match allowed.names() {
        None => state.fleet.default_or_first(),
        Some(own) => state
            .fleet
            .default_or_first()
            .filter(|a| allowed.admits(a.name.as_str()))
            .or_else(|| {
                own.iter()
                    .find_map(|n| state.fleet.pick(Some(n.as_str())).ok())
            }),
    };
    match picked {
        Some(appliance) => {
            remember(req, &appliance);
            Ok(appliance)
        }
        None if allowed.is_all() => {
            Err(crate::promql::PromError::bad_data("no appliance is configured").into())
        }
        None => Err(PrometheusError::ForbiddenAppliance {
            choices: allowed
                .names()
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect(),
        }),
    }
}
