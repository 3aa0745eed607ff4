//! Whose turn a request takes when callers queue for the appliance's budget.

use actix_web::HttpRequest;

use crate::service::Lane;
use crate::state::AppState;

/// The caller as the limits know it: a client id proven by its key, else its address (so
/// rotating unproven ids gains no turns). Read only on a miss: a hit never queues.
pub fn lane(req: &HttpRequest, state: &AppState) -> Lane {
    Lane::new(&state.callers.identify(req).principal().to_string())
}
