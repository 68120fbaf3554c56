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
//!   ([`TokenStore::sync_state`](crate::TokenStore::sync_state)): cursors raised by
//!   compare-and-set, a lease per (user, stream) with a fencing token, the highest version
//!   delivered per record (versions only go up on the way to the sink, and a crash
//!   re-delivers at most the batch the sink had not accepted), the notification inbox.
//! - **Engine** ([`SyncEngine`]): notification fetches, then the safety-net sweep, then the
//!   backfill of new users in checkpointed chunks; users take turns within a lane
//!   ([`SyncLane`]); an unlink or a refused refresh token stops the user's sync at once.
//! - **Intake** ([`Intake`]): the notification receiver stores each notification durably
//!   and answers, without calling Withings.

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
pub use lane::{SyncLane, tag_lane};
pub use sink::{Batch, Sink, SinkFuture};
pub use state::{
    BackfillProgress, Commit, InboxEntry, StreamState, SyncLease, SyncState, VersionEntry,
};
pub use stream::{Incremental, SyncStream, UnknownStream};
