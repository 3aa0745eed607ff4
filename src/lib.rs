//! metricgate: an internal gateway in front of a Darktrace appliance's `/metricdata` API.
//!
//! The request path, module by module:
//! [`api`] (HTTP) → [`query`] (validation) → [`cache`] → [`source`] (fan-out) → [`upstream`] (dialect,
//! signing) → [`normalize`] (one schema) → [`api`].

pub mod api;
pub mod cache;
pub mod catalog;
pub mod error;
pub mod health;
pub mod limits;
pub mod normalize;
pub mod query;
pub mod redis;
pub mod settings;
pub mod sim;
pub mod source;
pub mod startup;
pub mod telemetry;
pub mod upstream;
