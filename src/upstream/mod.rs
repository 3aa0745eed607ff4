//! Talking to the appliance: its dialect, request signing, the HTTP client, and the guard
//! that keeps the appliance's load bounded.

mod breaker;
mod budget;
pub mod client;
pub mod dialect;
mod error;
mod guard;
mod queue;
pub mod sign;
pub mod tls;

pub use breaker::{BreakerState, Outcome};
pub use budget::probe_share;
pub use client::ApplianceClient;
pub use dialect::ApplianceRequest;
pub use error::UpstreamError;
pub use guard::{ApplianceGuard, GuardReport};
pub use queue::Lane;
