//! One integration-test binary (it links once): parsers over fixtures, and the real server
//! spawned on port 0 and driven over HTTP.

mod approvals;
mod audit;
mod backfill;
mod fake_sb;
mod faults;
mod flux;
mod groups;
mod helpers;
mod hooks;
mod hostile;
mod hosting;
mod ledger;
mod openapi;
mod outage;
mod parsers;
mod process;
mod proxy;
mod read_api;
mod scale;
mod scaleout;
mod servicebus;
#[path = "../standin/mod.rs"]
mod standin;
mod store;
mod sweep;
mod truth;
mod ui;
