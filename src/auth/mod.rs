//! The handle an app keeps ([`WithingsAuth`]) and what comes with it: its
//! builder, the users it knows ([`UserInfo`], [`AuthState`]), the keeper that refreshes aging
//! refresh tokens ([`Keeper`]) and its counters ([`MetricsSnapshot`]).
//!
//! `handle.rs` is the handle (web flow, store, layers, budget); `users.rs` the lifecycle of
//! its users (their state, revoke, forget, the keeper).

pub(crate) mod handle;
mod users;

pub use crate::metrics::MetricsSnapshot;
pub(crate) use handle::WithingsAuth;
pub use handle::WithingsAuthBuilder;
pub use users::{AuthState, KEEPER_THRESHOLD, Keeper, UserInfo};
