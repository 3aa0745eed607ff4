//! Each caller's budget, so callers are treated fairly, and who a caller is. (The appliance's
//! budget is `upstream::ApplianceGuard`'s.)

mod access;
mod callers;
mod identity;
mod leases;

pub use access::{Access, AllowedAppliances};
pub use callers::{CallerLimits, Check, Decision, PolicyText, RateState, Verdict, effective_lease};
pub use identity::{Asking, Caller, Identity, Proof, bearer, key_matches, sha256};
