//! metricgate: an internal gateway in front of a Darktrace appliance's `/metricdata` API.
//!
//! The request path, module by module, each importing only those after it:
//! [`api`] (HTTP in and out) → [`service`] (the use case) → [`query`] (validation and
//! representation) → [`cache`] (storage and policy) → [`fetch`] (fan-out) → [`upstream`]
//! (dialect, signing, the appliance's guard) → [`normalize`] (one schema) → [`render`].
//! Beside the path: [`state`] and [`startup`] (wiring), [`clock`] (the only "now"),
//! [`catalog`], [`health`], [`limits`], [`telemetry`], [`redis`], and [`sim`] (the appliance
//! stand-in for demos and tests).

pub mod api;
pub mod cache;
pub mod catalog;
pub mod clock;
pub mod coalesce;
pub mod error;
pub mod fetch;
pub mod fleet;
pub mod health;
pub mod limits;
pub mod normalize;
pub mod pin;
pub mod prefetch;
pub mod promql;
pub mod query;
pub mod redis;
pub mod reload;
pub mod render;
pub mod service;
pub mod settings;
pub mod sim;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod upstream;
