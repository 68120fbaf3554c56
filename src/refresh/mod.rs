//! One refresh per user: the per-user slot, its published snapshot, and the refresh task.
//!
//! The hot path reads a user's [`Snapshot`] through `arc-swap` (no lock) with
//! [`Refresher::lookup`]. Only when the snapshot is unusable does a request come here: the first
//! one spawns the refresh task, every other one waits on the same `watch` channel and gets the
//! same outcome. The task re-reads the store, takes the store's lease, calls Withings, **saves
//! the rotated pair, and only then publishes it**. It runs detached, so a caller that gives up
//! never aborts it.
//!
//! `flight.rs` is the mechanism (the [`Refresher`] itself, slots, snapshots, generations, the single flight, waiters, the
//! panic guard); `protocol.rs` is what one refresh does with Withings and the store (lease,
//! adopt, compare-and-save, terminal states, backoff); `policy.rs` decides when to refresh.

mod flight;
mod policy;
mod protocol;

pub(crate) use flight::{Known, Lookup, Refresher};
pub(crate) use policy::{Reason, RefreshPolicy, bearer_header};
