//! Talking to the appliance: its dialect, request signing, the HTTP client, and the guard
//! that keeps the appliance's load bounded.

pub mod client;
pub mod dialect;
mod guard;
pub mod sign;
pub mod tls;

pub use client::{ApplianceClient, UpstreamError};
pub use dialect::ApplianceRequest;
pub use guard::{ApplianceGuard, BreakerState, GuardReport};
