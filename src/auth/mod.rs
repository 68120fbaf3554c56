//! The handle an app keeps ([`WithingsAuth`], `handle.rs`: web flow, store, layers, budget) and
//! the lifecycle of the users it knows (`users.rs`: their state, revoke, forget, the keeper).

pub(crate) mod handle;
mod users;

pub use handle::{WithingsAuth, WithingsAuthBuilder};
pub use users::{KEEPER_THRESHOLD, Keeper, UserState, UserStatus};
