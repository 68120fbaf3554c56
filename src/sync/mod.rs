//! Sync: every new, edited or deleted record reaches the app, from notification to sink,
//! with nothing lost across crashes and replicas.
//!
//! - **Streams** ([`SyncStream`]): measures, activity, workouts and sleep summaries are read
//!   by `lastupdate`; intraday, sleep segments and the heart list as time windows re-read
//!   with an overlap.
//! - **Changes** ([`Change`]): an upsert or a delete with a stable [`RecordKey`] (user,
//!   stream, record identity) and a version (the `modified` Withings gave).
//! - **Sink** ([`Sink`]): the app's; `Ok` means durable. The cursor moves only after the sink
//!   accepted every change up to it, and only to a time Withings gave (never the client's
//!   clock, never a measurement date). Pages are not in modification order, so a cursor
//!   moves only at the end of a read that was complete and fully accepted.
//! - **State** ([`SyncState`]): in the same store as the tokens
//!   ([`TokenStore::sync_state`](crate::store::TokenStore::sync_state)): cursors raised by
//!   compare-and-set, a lease per (user, stream) with a fencing token, the highest version
//!   delivered per record (versions only go up on the way to the sink, and a crash
//!   re-delivers at most the batch the sink had not accepted), the notification inbox.
//! - **Engine** ([`SyncEngine`]): notification fetches, then the safety-net sweep, then the
//!   backfill of new users in checkpointed chunks, each in its lane of the request budget
//!   ([`SYNC_LANES`]: the `Notification`, `Sweep` and `Backfill` of
//!   [`budget::Lane`](crate::budget::Lane)); users take turns within a lane; an unlink or a
//!   refused refresh token stops the user's sync at once.
//! - **Intake** ([`Intake`]): the notification receiver stores each notification durably
//!   and answers, without calling Withings.
//!
//! # What the sync guarantees, and what it does not
//!
//! `tower_withings::sync` keeps the app's copy of each linked user's Withings data up to date:
//! notifications, a daily safety-net sweep, and a backfill of new users, delivered to a `Sink`
//! the app implements.
//!
//! It guarantees:
//!
//! - **Nothing accepted is lost, nothing skipped.** A cursor moves only after the sink accepted
//!   every change of a complete read up to it, and only to a modification time Withings gave
//!   (`modified`), never the client's clock or a measurement date. A crash, a sink error or a
//!   sink panic re-delivers at most the batch the sink had not accepted.
//! - **Versions only go up.** Per record (user, stream, id), the sink never sees an older
//!   version after a newer one, also with several processes on one store: one worker per
//!   (user, stream) holds a lease (reclaimed within 30 s when its holder dies), and the highest
//!   version delivered per record is kept in the store. Applying a batch twice is harmless
//!   (upserts by key).
//! - **Inbox first.** With `NotifyReceiverBuilder::intake`, a notification is stored durably
//!   before Withings gets its 200; a crash right after the answer loses nothing. Bursts for one
//!   user and stream become one fetch. The receiver never calls Withings.
//! - **Missed notifications are caught** by the sweep within `sweep_every` (24 h by default).
//! - **Backfill is checkpointed** per chunk (30 days): a crash redoes at most one chunk.
//! - **Unlink means silence.** After an unlink or delete notification, or a refresh token
//!   Withings refuses for good, no further request is made for that user, and an event says so.
//! - **Values are exact**: records are the typed rows of `tower_withings::data`
//!   (`56300 × 10^-3` is `56.3`).
//!
//! It does not:
//!
//! - **See deletions by itself.** Withings' `lastupdate` never reports them. Turn on
//!   `SyncConfig::reconcile(Some(window))` to re-list a window at each sweep and emit deletes;
//!   deletions older than the window stay unseen.
//! - **Order deliveries across keys or streams.** Only per key do versions go up.
//! - **Fence a sink that stalls past its lease** on its own: each batch carries the lease's
//!   `fence`; a sink that must stay ordered even then keeps the highest fence per (user, stream)
//!   and refuses lower ones.
//! - **Read window streams by modification time.** Intraday activity, sleep segments and the
//!   heart list have no `lastupdate`; they are re-read over a window with a 1 h overlap, and an
//!   edit outside that window is not seen. They are not synced by default.
//! - **Detect a change that keeps its `modified`.** A record is delivered again only when its
//!   `modified` moves past the version the sink already has.
//! - **Guarantee real time.** A notification is fetched as soon as the notification lane is
//!   free; Withings itself delivers most notifications within two minutes, without a guarantee.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::{Arc, Mutex};
//! use std::time::{Duration, SystemTime};
//!
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower_withings::store::{MemoryStore, TokenStore};
//! use tower_withings::sync::{Batch, Sink, SinkFuture, SyncConfig, SyncEngine, SyncStream};
//! use tower_withings::{Endpoints, Secret, Token, UserId};
//!
//! /// The app's side: here a list; in an app, an upsert into its own table.
//! #[derive(Default)]
//! struct Table(Mutex<Vec<String>>);
//!
//! impl Sink for Table {
//!     fn accept<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a> {
//!         Box::pin(async move {
//!             let mut rows = self.0.lock().unwrap();
//!             rows.extend(batch.changes.iter().map(|c| format!("{} v{}", c.key, c.version)));
//!             Ok(()) // durable: the cursor may move past these changes
//!         })
//!     }
//! }
//!
//! // A weight taken an hour ago, uploaded a minute ago.
//! let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
//! let (date, modified) = (now - 3_600, now - 60);
//! // Any tower service will do; in an app it is the stack with `auth.layer()` in it.
//! let withings = tower::service_fn(move |_: http::Request<Full<Bytes>>| async move {
//!     let page = format!(r#"{{"status":0,"body":{{"more":0,"measuregrps":[{{"grpid":7,
//!         "date":{date},"modified":{modified},"measures":[{{"value":56300,"type":1,"unit":-3}}]}}]}}}}"#);
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(page))))
//! });
//! let store = Arc::new(MemoryStore::new()); // the same store as the tokens
//! # let token = Token { user_id: UserId(1), access_token: Secret::new("a"),
//! #     refresh_token: Secret::new("r"), expires_at: SystemTime::now() + Duration::from_secs(60),
//! #     scope: "user.metrics".into() };
//! # store.put(&token, SystemTime::now()).await.unwrap();
//! let table = Arc::new(Table::default());
//! let config = SyncConfig::default().streams(&[SyncStream::Measures]);
//! let engine =
//!     SyncEngine::new(withings, &Endpoints::withings(), store.clone(), table.clone(), config)
//!         .unwrap();
//! assert!(engine.run_once().await.unwrap()); // catch up: sweep, then backfill
//! assert_eq!(table.0.lock().unwrap()[0], format!("1/measures/7 v{modified}"));
//! let state = store.sync_state().unwrap();
//! let cursor = state.load(UserId(1), SyncStream::Measures).await.unwrap().cursor;
//! assert_eq!(cursor, Some(modified as i64)); // the `modified` Withings gave
//! # }
//! ```

mod change;
#[cfg(feature = "testkit")]
pub(crate) mod check;
mod engine;
mod events;
mod intake;
mod lane;
mod read;
mod sink;
mod state;
mod stream;

pub use change::{Change, ChangeKind, Record, RecordKey};
pub use engine::{Backfill, Step, StreamStatus, SyncConfig, SyncEngine, SyncStatus, UserSync};
pub use events::{SyncEvent, SyncMetrics};
pub use intake::{Accepted, Intake};
pub use lane::{SYNC_LANES, tag_lane};
pub use sink::{Batch, Sink, SinkFuture};
pub use state::{
    BackfillProgress, Commit, InboxEntry, StreamState, SyncLease, SyncState, VersionEntry,
};
pub use stream::{Incremental, SyncStream, UnknownStream};
