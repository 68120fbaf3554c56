//! [`Intake`]: inbox first. The notification receiver stores each notification durably and
//! answers; nothing on that path calls Withings.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tokio::sync::broadcast;

use super::events::SyncEvent;
use super::lane::Gate;
use super::stream::SyncStream;
use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::notify::{Action, Notification};
use crate::store::TokenStore;

/// What [`Intake::accept`] did with a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Accepted {
    /// Stored in the inbox for these streams (coalesced with pending ones).
    Queued(Vec<SyncStream>),
    /// An unlink or account deletion: the user's sync is stopped.
    Stopped,
    /// Nothing to fetch (bed in/out, device events, unknown categories), or the user's sync
    /// is stopped already.
    Ignored,
}

/// Stores notifications in the sync's inbox, in the token store. Cheap to clone; call
/// [`accept`](Self::accept) from the notification receiver and answer 2xx only on `Ok`
/// (an `Err` is a 5xx, so Withings retries).
#[derive(Clone)]
pub struct Intake {
    store: Arc<dyn TokenStore>,
    gate: Option<Arc<Gate>>,
    events: Option<broadcast::Sender<SyncEvent>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").finish_non_exhaustive()
    }
}

impl Intake {
    /// An intake over `store`, which must keep sync state
    /// ([`TokenStore::sync_state`]); else [`Error::Store`].
    pub fn new(store: Arc<dyn TokenStore>) -> Result<Intake, Error> {
        if store.sync_state().is_none() {
            return Err(Error::store(
                "sync",
                "this token store keeps no sync state (TokenStore::sync_state is None)",
            ));
        }
        Ok(Intake {
            store,
            gate: None,
            events: None,
            clock: Arc::new(SystemClock),
        })
    }

    pub(crate) fn with_engine(
        mut self,
        gate: Arc<Gate>,
        events: broadcast::Sender<SyncEvent>,
        clock: Arc<dyn Clock>,
    ) -> Intake {
        self.gate = Some(gate);
        self.events = Some(events);
        self.clock = clock;
        self
    }

    /// Stores `n` durably: a data notification becomes an inbox entry per stream it asks
    /// for (a burst for one user and stream is one entry); an unlink or delete (appli 46)
    /// stops the user's sync at once. Makes no call to Withings.
    pub async fn accept(&self, n: &Notification) -> Result<Accepted, Error> {
        let state = self
            .store
            .sync_state()
            .ok_or_else(|| Error::store("sync", "no sync state"))?;
        if n.appli.code() == 46 {
            return match n.action {
                Some(Action::Unlink) | Some(Action::Delete) => {
                    let reason = n.action.as_ref().map_or("unlink", Action::as_str);
                    state.stop(n.user, reason).await?;
                    if let Some(gate) = &self.gate {
                        gate.stop(n.user);
                    }
                    if let Some(events) = &self.events {
                        let _ = events.send(SyncEvent::Stopped {
                            user: n.user,
                            reason: reason.to_owned(),
                        });
                    }
                    Ok(Accepted::Stopped)
                }
                _ => Ok(Accepted::Ignored),
            };
        }
        let streams = SyncStream::for_appli(n.appli);
        if streams.is_empty() || state.stopped(n.user).await?.is_some() {
            return Ok(Accepted::Ignored);
        }
        let now_ms = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        for stream in streams {
            state.inbox_push(n.user, *stream, now_ms).await?;
        }
        Ok(Accepted::Queued(streams.to_vec()))
    }
}
