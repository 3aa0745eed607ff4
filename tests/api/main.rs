//! Integration tests: one binary, one module per feature.

mod appliance;
mod browser;
mod cache;
mod clients;
mod contract;
mod deploy;
mod docs;
mod edges;
mod helpers;
mod hostile;
mod layers;
mod limits;
mod ops;
mod readme;
mod reload;
mod replicas;
mod representation;
mod sdk;
mod segments;
mod shutdown;
mod signing;
mod tls;
mod translation;
mod validation;
