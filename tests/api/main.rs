//! Integration tests: one binary, one module per feature.

mod buckets;
mod cache;
mod clients;
mod contract;
mod deploy;
mod docs;
mod helpers;
mod hostile;
mod late_data;
mod layers;
mod limits;
mod ops;
mod protocols;
mod replicas;
mod replies;
mod representation;
mod sdk;
mod segments;
mod shapes;
mod shutdown;
mod signing;
mod times;
mod tls;
mod translation;
mod validation;
