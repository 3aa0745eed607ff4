//! Budgets: each caller's (so callers are treated fairly) and the appliance's (so it is
//! treated gently, whatever the callers do).

mod appliance;
mod callers;

pub use appliance::{ApplianceGuard, BreakerState, GuardReport, Ticket};
pub use callers::{Caller, CallerLimits, Decision, RateState, middleware, parse_proxy};
