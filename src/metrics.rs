//! Counters readable from a [`crate::WithingsAuth`] handle, and, with the `metrics` feature,
//! the same events through the [`metrics`](https://docs.rs/metrics) facade (Prometheus,
//! OpenTelemetry… exporters plug in there). No user id is ever a label (cardinality).
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `withings_requests_total` | counter | | requests the layer sent to the API host |
//! | `withings_refusals_total` | counter | | responses refusing the token (HTTP 401, body status 100/101/102/200/401) |
//! | `withings_replays_total` | counter | | requests sent again after a refusal |
//! | `withings_not_replayed_total` | counter | | refusals not replayed because the body could not be sent twice (`Error::NotReplayed`, or the response with `not_replayed_as_response`) |
//! | `withings_token_calls_total` | counter | | refreshes sent to Withings' token endpoint |
//! | `withings_refreshes_adopted_total` | counter | | pairs another process saved, used instead of refreshing |
//! | `withings_refresh_waits_total` | counter | | requests that waited for a refresh already running |
//! | `withings_refreshes_total` | counter | `reason` (load, proactive, reactive, forced), `outcome` (ok, error) | refresh tasks, by why and how they ended |
//! | `withings_refresh_duration_seconds` | histogram | `outcome` | how long a refresh task took |
//! | `withings_refresh_failures_total` | counter | | refresh tasks that ended in an error |
//! | `withings_lease_waits_total` | counter | | times a refresh found another process holding the user's lease |
//! | `withings_store_duration_seconds` | histogram | `operation` (load, save, lock) | token store calls made by refreshes |
//! | `withings_budget_slots_total` | counter | | request-budget slots taken (one per request sent to the API host) |
//! | `withings_budget_waits_total` | counter | | requests that waited for a slot |
//! | `withings_budget_wait_seconds` | histogram | | how long they waited |
//! | `withings_budget_exhausted_total` | counter | | requests that got no slot within the deadline (`BudgetExhausted`) |
//! | `withings_rate_limited_total` | counter | | calls (data or token) Withings answered with status 601 |
//! | `withings_sync_requests_total` | counter | `lane` (notification, sweep, backfill) | requests the sync engine sent (`sync::SyncMetrics::requests`) |
//! | `withings_sync_changes_total` | counter | | changes the sync's sink accepted |
//! | `withings_sync_sink_failures_total` | counter | | batches the sync's sink refused or panicked on |
//! | `withings_sync_backfill_chunks_total` | counter | | backfill chunks the sync checkpointed |
//! | `withings_sync_inbox_depth` | gauge | | pending notification inbox entries, set at each `SyncEngine::status` |

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares a public reading of `u64` counters, as written, and beside it its live twin:
/// `$live`, one `AtomicU64` per field, `Default`, whose `snapshot()` reads every counter into
/// the reading. The counters are listed once, so the two cannot drift apart.
macro_rules! counters {
    (
        $(#[$attr:meta])*
        pub struct $snapshot:ident {
            $($(#[$doc:meta])* pub $field:ident: u64,)+
        }
        live: $live_vis:vis struct $live:ident;
    ) => {
        $(#[$attr])*
        pub struct $snapshot {
            $($(#[$doc])* pub $field: u64,)+
        }

        #[doc = concat!("The live counters a [`", stringify!($snapshot), "`] reads.")]
        #[derive(Debug, Default)]
        $live_vis struct $live {
            $($live_vis $field: ::std::sync::atomic::AtomicU64,)+
        }

        impl $live {
            /// A reading of every counter.
            $live_vis fn snapshot(&self) -> $snapshot {
                $snapshot {
                    $($field: self.$field.load(::std::sync::atomic::Ordering::Relaxed),)+
                }
            }
        }
    };
}
pub(crate) use counters;

/// Live counters, shared by every layer built from one [`crate::WithingsAuth`].
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub refreshes_started: AtomicU64,
    pub refreshes_adopted: AtomicU64,
    pub refreshes_failed: AtomicU64,
    pub replays: AtomicU64,
    pub not_replayed: AtomicU64,
    pub waited: AtomicU64,
}

impl Metrics {
    /// Counts one event in `counter` (for [`MetricsSnapshot`]) and, with the `metrics` feature,
    /// under `name`.
    pub(crate) fn bump(counter: &AtomicU64, name: &'static str) {
        counter.fetch_add(1, Ordering::Relaxed);
        emit(name);
    }

    pub(crate) fn snapshot(&self, budget: &crate::budget::BudgetCounters) -> MetricsSnapshot {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            budget_slots: read(&budget.slots),
            budget_waits: read(&budget.waits),
            budget_wait_time: std::time::Duration::from_micros(read(&budget.wait_micros)),
            budget_exhausted: read(&budget.exhausted),
            rate_limited: read(&budget.rate_limited),
            refreshes_started: read(&self.refreshes_started),
            refreshes_adopted: read(&self.refreshes_adopted),
            refreshes_failed: read(&self.refreshes_failed),
            replays: read(&self.replays),
            not_replayed: read(&self.not_replayed),
            waited: read(&self.waited),
        }
    }
}

/// A reading of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Token-endpoint refreshes this process started.
    pub refreshes_started: u64,
    /// Times a token rotated elsewhere (another process) was adopted from the store instead.
    pub refreshes_adopted: u64,
    /// Refresh attempts that ended in an error.
    pub refreshes_failed: u64,
    /// Requests re-sent after an auth failure.
    pub replays: u64,
    /// Auth failures not replayed because the request body could not be sent twice (returned
    /// as `Error::NotReplayed`, or as they came with `not_replayed_as_response`).
    pub not_replayed: u64,
    /// Requests that waited for a refresh another request had started.
    pub waited: u64,
    /// Request-budget slots taken: requests (and token calls) sent to the API host.
    pub budget_slots: u64,
    /// Requests that waited for a budget slot.
    pub budget_waits: u64,
    /// Their total wait.
    pub budget_wait_time: std::time::Duration,
    /// Requests that got no slot within the deadline (`Error::BudgetExhausted`).
    pub budget_exhausted: u64,
    /// Calls (data or token) Withings answered with status 601.
    pub rate_limited: u64,
}

/// Counts one event under `name` through the `metrics` facade (nothing without the feature).
#[inline]
pub(crate) fn emit(name: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(name).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = name;
}

/// A refresh task's end, by reason and outcome, with its duration.
pub(crate) fn refresh_done(reason: &'static str, ok: bool, elapsed: std::time::Duration) {
    #[cfg(feature = "metrics")]
    {
        let outcome = if ok { "ok" } else { "error" };
        ::metrics::counter!("withings_refreshes_total", "reason" => reason, "outcome" => outcome)
            .increment(1);
        ::metrics::histogram!("withings_refresh_duration_seconds", "outcome" => outcome)
            .record(elapsed.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (reason, ok, elapsed);
}

/// How long a store call made by a refresh took.
/// How long a request waited for a budget slot.
pub(crate) fn budget_wait(elapsed: std::time::Duration) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!("withings_budget_wait_seconds").record(elapsed.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = elapsed;
}

pub(crate) fn store_call(operation: &'static str, elapsed: std::time::Duration) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!("withings_store_duration_seconds", "operation" => operation)
        .record(elapsed.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (operation, elapsed);
}
