//! fluxtrail: proof of what a GitOps pipeline did.
//!
//! Git hosts and Flux post to the HTTP edge (`http`); host modules (`git`) verify and parse
//! deliveries into domain events; the ledger (`ledger`) records them in a `store`. See
//! ARCHITECTURE.md for the map.

pub mod backfill;
pub mod config;
pub mod core;
pub mod domain;
pub mod dora;
pub mod flux;
pub mod git;
pub mod http;
pub mod ledger;
pub mod outbox;
pub mod policy;
pub mod publish;
pub mod startup;
pub mod store;
pub mod sweep;
pub mod telemetry;
