//! Each caller's budget, so callers are treated fairly, and who a caller is. (The appliance's
//! budget is `upstream::ApplianceGuard`'s.)

mod callers;
mod identity;
mod leases;

pub use callers::{CallerLimits, Decision, RateState, effective_lease};
pub use identity::{Caller, Identity, Proof, bearer, key_matches, sha256};
