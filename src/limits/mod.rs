//! Each caller's budget, so callers are treated fairly. (The appliance's budget is
//! `upstream::ApplianceGuard`'s.)

mod callers;

pub use callers::{Caller, CallerLimits, Decision, RateState};
