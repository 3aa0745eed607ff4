//! Which appliance a request is for: `appliance=` in the query, a name in the path
//! (`/darktrace/<name>/…`), else the default.

use std::sync::Arc;

use actix_web::HttpRequest;

use crate::error::ApiError;
use crate::fleet::{Appliance, PickError};
use crate::query::FieldError;
use crate::state::AppState;

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

/// The appliance `req` names (in its path, else `appliance=`), else the default.
pub fn appliance(req: &HttpRequest, state: &AppState) -> Result<Arc<Appliance>, ApiError> {
    match req.match_info().get("appliance") {
        Some(name) => by_name(state, Some(name)),
        None => by_name(state, named_in(req.query_string()).as_deref()),
    }
}

/// The appliance `name` names, else the default; a 400 naming `appliance` and the choices.
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

