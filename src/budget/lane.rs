//! [`Lane`]: which queue a request waits in when the budget is short.

/// Which queue a request waits in for a slot of the app's request budget when none is at
/// hand. Lanes are served in order: token calls (the crate's own, always first), then
/// `Interactive`, `Notification`, `Sweep`, `Backfill`; within a lane, in order of arrival.
/// A request names its lane as an extension; one that names none is `Interactive`.
///
/// ```
/// use tower_withings::budget::Lane;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Lane::Backfill); // waits behind everything else
/// assert!(Lane::Interactive < Lane::Backfill);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Lane {
    /// Someone is waiting for the answer (the default).
    #[default]
    Interactive,
    /// Fetching the data a Withings notification announced.
    Notification,
    /// A periodic pass over users.
    Sweep,
    /// Filling in history.
    Backfill,
}

/// Who asks for a slot: token calls, then the lanes in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// A token call: a refresh that waits behind data calls can let a token expire.
    Token,
    Lane(Lane),
}

impl Priority {
    /// How many queues there are.
    pub(crate) const COUNT: usize = 5;
    /// A data call that names no lane.
    #[cfg(test)]
    pub(crate) const DATA: Priority = Priority::Lane(Lane::Interactive);

    /// The queue's place in the serving order.
    pub(crate) fn index(self) -> usize {
        match self {
            Priority::Token => 0,
            Priority::Lane(Lane::Interactive) => 1,
            Priority::Lane(Lane::Notification) => 2,
            Priority::Lane(Lane::Sweep) => 3,
            Priority::Lane(Lane::Backfill) => 4,
        }
    }

    /// A lane that leaves the budget's headroom to the others (`Sweep`, `Backfill`).
    pub(crate) fn is_background(self) -> bool {
        matches!(self, Priority::Lane(Lane::Sweep | Lane::Backfill))
    }

    /// The first queue of the background lanes: the queues before it are served up to the
    /// full limit, the rest up to the background limit.
    pub(crate) const FIRST_BACKGROUND: usize = 3;

    /// The lane a request names ([`Lane`] extension), else the default.
    pub(crate) fn of<B>(request: &http::Request<B>) -> Priority {
        Priority::Lane(
            request
                .extensions()
                .get::<Lane>()
                .copied()
                .unwrap_or_default(),
        )
    }
}
