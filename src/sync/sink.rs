//! [`Sink`]: where the app takes the changes.

use std::future::Future;
use std::pin::Pin;

use super::change::Change;
use super::stream::SyncStream;
use crate::error::BoxError;
use crate::token::UserId;

/// A batch of changes of one user and one stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Batch {
    /// Whose.
    pub user: UserId,
    /// Which stream.
    pub stream: SyncStream,
    /// The fencing token of the lease the batch was read under: it only goes up for a
    /// (user, stream). A sink that must stay ordered even if a worker stalls past its lease
    /// keeps the highest fence it saw per (user, stream) and refuses lower ones.
    pub fence: u64,
    /// The changes, at most one per key.
    pub changes: Vec<Change>,
}

/// The future [`Sink::accept`] returns.
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>>;

/// Where the app takes changes. `Ok` means the batch is durable on the app's side: only then
/// does the cursor move past it. An `Err` (or a panic) leaves the cursor where it was, and
/// the batch comes again later. Applying a batch twice must be harmless (upsert by key;
/// versions only go up per key).
///
/// ```
/// use std::sync::Mutex;
/// use tower_withings::sync::{Batch, Sink, SinkFuture};
///
/// #[derive(Default)]
/// struct Printer(Mutex<usize>);
///
/// impl Sink for Printer {
///     fn accept<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a> {
///         Box::pin(async move {
///             *self.0.lock().unwrap() += batch.changes.len();
///             Ok(())
///         })
///     }
/// }
/// # let _ = Printer::default();
/// ```
pub trait Sink: Send + Sync + 'static {
    /// Takes a batch; `Ok` once it is durable.
    fn accept<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a>;
}

impl<T: Sink + ?Sized> Sink for std::sync::Arc<T> {
    fn accept<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a> {
        (**self).accept(batch)
    }
}
