//! Talking to the appliance: its dialect, request signing and the HTTP client.

pub mod client;
pub mod dialect;
pub mod sign;
pub mod tls;

pub use client::{ApplianceClient, UpstreamError};
pub use dialect::ApplianceRequest;
