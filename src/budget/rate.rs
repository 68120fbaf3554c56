//! [`RateBudget`]: the app's limit, its window and how long a request waits for a slot.

use std::time::Duration;

/// How many requests the app may send to Withings: at most `limit` in any `window`, each
/// request waiting up to `deadline` for a slot, the `Sweep` and `Backfill` lanes leaving
/// `headroom` slots of every window to the others. Default: 120 per 60 s, 60 s deadline,
/// headroom a tenth of the limit.
///
/// ```
/// use std::time::Duration;
/// use tower_withings::budget::RateBudget;
///
/// // The standard plan.
/// let standard = RateBudget::default();
/// assert_eq!((standard.limit(), standard.window()), (Some(120), Duration::from_secs(60)));
/// // An enterprise plan, and a request that would rather fail than wait 60 s.
/// let bigger = RateBudget::per_minute(600).deadline(Duration::from_secs(5));
/// assert_eq!(bigger.limit(), Some(600));
/// // Off: the app counts for itself.
/// assert_eq!(RateBudget::unlimited().limit(), None);
/// // A backfill may use 108 of the standard 120; 12 stay free for what the user waits for.
/// assert_eq!(standard.background_limit(), Some(108));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBudget {
    pub(super) limit: Option<u32>,
    pub(super) window: Duration,
    pub(super) deadline: Duration,
    /// `None`: a tenth of the limit.
    pub(super) headroom: Option<u32>,
}

impl RateBudget {
    /// Withings' standard plan: 120 requests per minute.
    pub const STANDARD_PER_MINUTE: u32 = 120;
    /// How long a request waits for a slot unless told otherwise.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

    /// At most `limit` requests in any 60 s (`0` is taken as 1).
    pub fn per_minute(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(60))
    }

    /// At most `limit` requests in any `window` (a shorter window is for tests and the
    /// simulator; `0` is taken as 1 and a zero window as 1 ms).
    pub fn new(limit: u32, window: Duration) -> Self {
        RateBudget {
            limit: Some(limit.max(1)),
            window: window.max(Duration::from_millis(1)),
            deadline: Self::DEFAULT_DEADLINE,
            headroom: None,
        }
    }

    /// No budget: requests go as fast as they are made.
    pub fn unlimited() -> Self {
        RateBudget {
            limit: None,
            ..Self::default()
        }
    }

    crate::setters::setters! {
        /// How long a request waits for a slot before failing with `BudgetExhausted`.
        fn deadline(deadline: Duration) => deadline;
        /// Slots of every window that the background lanes ([`Lane::Sweep`](super::Lane::Sweep),
        /// [`Lane::Backfill`](super::Lane::Backfill)) leave to token calls, `Interactive` and
        /// `Notification` requests, so that a backfill using all it may still leaves a
        /// notification's fetch a slot at once, in this process or another (the count is the
        /// shared ledger's). Default a tenth of the limit; at most `limit - 1`, so the
        /// background lanes always move.
        fn headroom(slots: u32) => headroom = Some(slots);
    }

    /// What the background lanes may use of each window: the limit less the
    /// [`headroom`](Self::headroom); `None` when unlimited.
    pub fn background_limit(&self) -> Option<u32> {
        let limit = self.limit?;
        let headroom = self.headroom.unwrap_or(limit / 10);
        Some(limit - headroom.min(limit - 1))
    }

    /// The limit per window; `None` when unlimited.
    pub fn limit(&self) -> Option<u32> {
        self.limit
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How long a request waits for a slot.
    pub fn wait_deadline(&self) -> Duration {
        self.deadline
    }

    /// How long a reserved slot counts before its window starts: a fortieth of the window
    /// (1.5 s of a minute), at least 250 ms, at most a quarter of the window. A holder sends
    /// within the first half; the second half is for the request to reach Withings.
    pub(super) fn hold(&self) -> Duration {
        (self.window / 40)
            .max(Duration::from_millis(250))
            .min(self.window / 4)
    }
}

impl Default for RateBudget {
    fn default() -> Self {
        Self::per_minute(Self::STANDARD_PER_MINUTE)
    }
}
