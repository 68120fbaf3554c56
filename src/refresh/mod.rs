//! One refresh per user: the per-user slot, its published snapshot, and the refresh task.
//!
//! The hot path reads a user's [`Snapshot`] through `arc-swap` (no lock) with
//! [`Refresher::lookup`]. Only when the snapshot is unusable does a request come here: the first
//! one spawns the refresh task, every other one waits on the same `watch` channel and gets the
//! same outcome. The task re-reads the store, takes the store's lease, calls Withings, **saves
//! the rotated pair, and only then publishes it**. It runs detached, so a caller that gives up
//! never aborts it.
//!
//! `flight.rs` is the mechanism (slots, snapshots, generations, the single flight, waiters, the
//! panic guard); `protocol.rs` is what one refresh does with Withings and the store (lease,
//! adopt, compare-and-save, terminal states, backoff).

mod flight;
mod protocol;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use crate::config::Endpoints;
use crate::metrics::Metrics;
use crate::oauth::OAuthClient;
use crate::store::TokenStore;
use crate::token::UserId;

pub(crate) use flight::{Lookup, Slot};
pub(crate) use protocol::{RefreshPolicy, bearer_header};

/// Why a refresh was asked for (recorded in traces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Nothing loaded yet for this user.
    Load,
    /// The access token is expired or inside the skew window.
    Proactive,
    /// Withings refused the access token.
    Reactive,
    /// Asked for explicitly.
    Forced,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Load => "load",
            Reason::Proactive => "proactive",
            Reason::Reactive => "reactive",
            Reason::Forced => "forced",
        }
    }
}

/// Everything a refresh needs, and every user's slot.
pub(crate) struct Refresher {
    pub oauth: OAuthClient,
    pub store: Arc<dyn TokenStore>,
    pub policy: RefreshPolicy,
    pub metrics: Metrics,
    slots: papaya::HashMap<UserId, Arc<Slot>, foldhash::fast::RandomState>,
    /// What happens to users' authorizations, for [`crate::WithingsAuth::events`].
    pub events: tokio::sync::broadcast::Sender<crate::events::Event>,
    /// Unix second after which the next new slot first sweeps out idle ones.
    next_sweep: AtomicU64,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("oauth", &self.oauth)
            .field("policy", &self.policy)
            .field("users", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Refresher {
    pub(crate) fn new(
        oauth: OAuthClient,
        store: Arc<dyn TokenStore>,
        policy: RefreshPolicy,
    ) -> Self {
        Refresher {
            oauth,
            store,
            policy,
            metrics: Metrics::default(),
            slots: papaya::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            events: tokio::sync::broadcast::channel(crate::events::CAPACITY).0,
            next_sweep: AtomicU64::new(0),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.oauth.clock().now()
    }

    /// Tells the app's event receivers, if any.
    pub(crate) fn emit(&self, event: crate::events::Event) {
        let _ = self.events.send(event);
    }

    pub(crate) fn endpoints(&self) -> &Endpoints {
        self.oauth.endpoints()
    }
}
