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
