//! Integration tests: one binary, one module per feature.

mod admin;
mod cache;
mod callers;
mod clients;
mod contract;
mod deploy;
mod docs;
mod helpers;
mod hostile;
mod layers;
mod limits;
mod ops;
mod protection;
mod replicas;
mod representation;
mod sdk;
mod segments;
mod shutdown;
mod signing;
mod tls;
mod translation;
mod validation;
