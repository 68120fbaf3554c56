//! The app's end of the receiver's bounded queue.

use tokio::sync::mpsc;

use super::Notification;

/// The app's end of the receiver's bounded queue: every notification the receiver answered
/// 2xx for arrives here, once.
///
/// The queue lives in memory: what it still holds when it is dropped (or the process dies) is
/// lost, though Withings was told it arrived. To stop, [`close`](Self::close) it (the receiver
/// then answers 503, so Withings retries later), then read what is left until `recv` says
/// `None`.
#[derive(Debug)]
pub struct Notifications {
    rx: mpsc::Receiver<Notification>,
}

impl Notifications {
    /// The next notification; `None` once every [`NotifyReceiver`](super::NotifyReceiver) clone is dropped and the
    /// queue is empty.
    pub async fn recv(&mut self) -> Option<Notification> {
        self.rx.recv().await
    }

    /// Stops taking notifications: from now on the receiver answers 503 (Withings retries
    /// later), while those already queued can still be read.
    pub fn close(&mut self) {
        self.rx.close();
    }

    /// A notification if one is waiting.
    pub fn try_recv(&mut self) -> Option<Notification> {
        self.rx.try_recv().ok()
    }

    /// How many notifications wait in the queue.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The tokio channel itself (e.g. for `tokio_stream::wrappers::ReceiverStream`).
    pub fn into_inner(self) -> mpsc::Receiver<Notification> {
        self.rx
    }
}

impl Notifications {
    pub(super) fn new(rx: mpsc::Receiver<Notification>) -> Self {
        Notifications { rx }
    }
}
