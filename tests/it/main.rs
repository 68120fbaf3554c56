//! The integration tests, one binary: each area a module, the shared helpers compiled once.
//! Tests that must run as their own process are elsewhere: `tests/crash.rs` (SIGKILLs a
//! child copy of its binary), `tests/cli.rs` (drives the `withings` binary),
//! `tests/examples.rs` (needs the examples' required features), `tests/soak.rs` (a long
//! load run kept apart from the suite's timing).

/// The durable stores behind one trait, for scenarios written once.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
mod backend;
mod common;
mod store_support;

mod budget;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
mod cancellation;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
mod cross_process;
mod data;
mod data_sim;
mod events;
mod layer;
mod notify;
mod oauth_flow;
mod properties;
mod refresh;
#[cfg(feature = "reqwest")]
mod reqwest_middleware;
mod secrecy;
mod sim;
mod stacks;
#[cfg(feature = "sqlite")]
mod store_faults;
#[cfg(feature = "testkit")]
mod store_memory;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
mod store_outage;
#[cfg(all(feature = "postgres", feature = "testkit"))]
mod store_postgres;
#[cfg(all(feature = "redis", feature = "testkit"))]
mod store_redis;
#[cfg(all(feature = "sqlite", feature = "testkit"))]
mod store_sqlite;
mod sync;
mod sync_history;
mod sync_scale;
#[cfg(feature = "testkit")]
mod sync_state;
mod sync_support;
mod users;
