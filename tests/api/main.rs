//! Integration tests: one binary, one module per feature.

mod cache;
mod clients;
mod contract;
mod docs;
mod helpers;
mod limits;
mod signing;
mod translation;
mod validation;
