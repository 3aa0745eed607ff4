//! Which appliance a request is for: `appliance=` in the query, a name in the path
//! (`/darktrace/<name>/…`), else the default; and whether its caller may ask it. Every route
//! that reads an appliance picks it here, so access per caller (`[rate_limit.clients.<id>]
//! appliances`) is enforced in this one place.

use std::sync::Arc;

use actix_web::{HttpMessage, HttpRequest};

use crate::error::{ApiError, PrometheusError};
use crate::fleet::{Appliance, PickError};
use crate::query::FieldError;
use crate::state::AppState;

pub use crate::limits::AllowedAppliances;

/// The appliance a request was answered from, kept in its extensions once picked (the access
/// line names it). Its own copy of the name: cloning the shared one would write a reference
/// count on every request.
#[derive(Debug, Clone)]
pub struct Picked(pub String);

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
    with_appliance(req, state, Arc::clone)
}

/// Notes in `req` which appliance answers it (for the access line).
pub fn remember(req: &HttpRequest, appliance: &Appliance) {
    req.extensions_mut()
        .insert(Picked(appliance.name.as_str().to_owned()));
}

/// `f` of the appliance [`appliance`] picks, borrowed where the caller may ask every
/// appliance (the common case, and the hit path's).
pub fn with_appliance<T>(
    req: &HttpRequest,
    state: &AppState,
    f: impl FnOnce(&Arc<Appliance>) -> T,
) -> Result<T, ApiError> {
    let asked = match req.match_info().get("appliance") {
        Some(name) => Some(name.to_owned()),
        None => named_in(req.query_string()),
    };
    let allowed = allowed(req, state);
    if allowed.is_all() {
        return state
            .fleet
            .with_picked(asked.as_deref(), |a| {
                remember(req, a);
                f(a)
            })
            .map_err(|e| refused(&e));
    }
    let picked = for_caller(state, asked.as_deref(), &allowed)?;
    remember(req, &picked);
    Ok(f(&picked))
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

/// The appliances `appliances=` names (a comma list, or the parameter repeated), in the
/// order named and each once; `None` when it names none. A 400 naming both parameters when
/// `appliance` (or an appliance in the path) is given too, and one naming `appliances` and
/// the choices for a name no appliance has.
pub fn several(
    req: &HttpRequest,
    state: &AppState,
) -> Result<Option<Vec<Arc<Appliance>>>, ApiError> {
    let query = req.query_string();
    // Most requests name none: a substring test spares them the parse.
    if !query.contains("appliances=") {
        return Ok(None);
    }
    let mut names: Vec<String> = Vec::new();
    for (_, value) in form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k == "appliances") {
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
    }
    // Given empty, it is absent (as every other parameter).
    if names.is_empty() {
        return Ok(None);
    }
    if req.match_info().get("appliance").is_some() || named_in(query).is_some() {
        let both = "give `appliance` (one appliance) or `appliances` (several), not both";
        return Err(ApiError::InvalidQuery(vec![
            FieldError::new("appliance", both),
            FieldError::new("appliances", both),
        ]));
    }
    let allowed = allowed(req, state);
    if let Some(own) = allowed.names()
        && names.iter().any(|n| !allowed.admits(n))
    {
        return Err(ApiError::ForbiddenAppliance {
            choices: own.iter().map(ToString::to_string).collect(),
        });
    }
    let mut picked = Vec::with_capacity(names.len());
    let mut unknown = Vec::new();
    for name in &names {
        match state.fleet.pick(Some(name)) {
            Ok(appliance) => picked.push(appliance),
            Err(e) => unknown.push(FieldError::new("appliances", e.to_string())),
        }
    }
    if unknown.is_empty() {
        Ok(Some(picked))
    } else {
        Err(ApiError::InvalidQuery(unknown))
    }
}

/// The appliances PromQL reads for the caller of `req`: every appliance it may ask (the
/// others are invisible to it, as a label proxy hides them); a 403 in Prometheus' envelope
/// when it may ask none.
pub fn promql_appliances(
    req: &HttpRequest,
    state: &AppState,
) -> Result<Vec<Arc<Appliance>>, PrometheusError> {
    let allowed = allowed(req, state);
    let visible: Vec<Arc<Appliance>> = state
        .fleet
        .all()
        .into_iter()
        .filter(|a| allowed.admits(a.name.as_str()))
        .collect();
    if visible.is_empty() && !allowed.is_all() {
        return Err(PrometheusError::ForbiddenAppliance {
            choices: Vec::new(),
        });
    }
    Ok(visible)
}
