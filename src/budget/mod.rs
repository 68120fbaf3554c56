//! One request budget for the whole app: Withings allows a partner app N requests per minute
//! (120 on the standard plan) for all its users together, token calls included, and answers
//! status 601 beyond it.
//!
//! Every request the crate sends to the API host (a layer's request, its replay, a token call)
//! first takes a slot of the app's [`RateBudget`]: never more than `limit` in any `window`
//! (sliding, as the server counts). A request without a slot waits, asynchronously, in its
//! [`Lane`] (token calls first: a refresh that waits behind data calls can let a token expire;
//! then the lanes in order, each in order of arrival), up to the budget's deadline, then fails
//! with [`Error::BudgetExhausted`] instead of earning a 601.
//!
//! The budget is its own layer, [`BudgetService`], which
//! [`WithingsAuthLayer`](crate::WithingsAuthLayer) puts under itself unless made
//! [`without_budget`](crate::WithingsAuthLayer::without_budget); the reqwest middleware and
//! the token calls take their slots the same way.
//!
//! The count lives where the token store keeps its data ([`TokenStore::budget`]): in the
//! [`MemoryStore`](crate::store::MemoryStore) for the handles sharing it, in the SQLite file for
//! every process on one machine, in PostgreSQL or Redis for every replica. A store that offers
//! no ledger (a custom one) gets an in-process budget per handle. A shared ledger is asked
//! for slots in small blocks, sized by how fast this process sends (see
//! [`BudgetLedger`](crate::store::BudgetLedger)), so a busy process makes no store round trip
//! per request and a one-off CLI call wastes nothing.
//!
//! ```
//! use std::time::Duration;
//! use tower_withings::budget::{Lane, RateBudget};
//! use tower_withings::{Credentials, WithingsAuth, transport};
//!
//! let auth = WithingsAuth::builder(Credentials::new("client-id", "client-secret"))
//!     // An enterprise plan; a request rather fails after 5 s than waits a minute.
//!     .rate_budget(RateBudget::per_minute(600).deadline(Duration::from_secs(5)))
//!     .build(transport::plain_http_client());
//! assert_eq!(auth.rate_budget().limit(), Some(600));
//!
//! // A request names its lane as an extension (default `Lane::Interactive`).
//! let request = http::Request::post("https://wbsapi.withings.net/measure")
//!     .extension(Lane::Backfill)
//!     .body(())
//!     .unwrap();
//! # let _ = request;
//! ```
//!
//! - **How it counts.** A slot counts from its reservation plus a short hold (a fortieth of the
//!   window, at least 250 ms) through the window after it, so requests still on their way and a
//!   process that died holding slots are covered: no window ever holds more than `limit`. The
//!   cost is that a saturated app gets about 97.5 % of `limit` (`benches/budget.rs`).
//! - **Headroom.** The background lanes (`Sweep`, `Backfill`) use at most
//!   [`RateBudget::background_limit`] of any window, `limit` less a tenth
//!   ([`RateBudget::headroom`]), counted in the same ledger: a backfill that takes all it may,
//!   in any process, still leaves a notification's fetch or a user's request a slot at once,
//!   instead of a wait for the next window.
//! - **A 601 anyway** (another app instance without the budget, or a plan smaller than
//!   configured) pauses the budget, app-wide, for its `wait_seconds` (a tenth of the window if
//!   it gives none, an hour at most), whether a data call or a token call got it. On a data
//!   call it is a rate limit, never a token failure: nothing is refreshed and the response comes
//!   back as Withings sent it ([`crate::parse_response`] makes it [`Error::RateLimited`]; a
//!   layer made with [`status_errors`](crate::WithingsAuthLayer::status_errors) returns that
//!   error itself).
//! - **Across processes** the oldest waiter is served first, whichever process it waits in: a
//!   shared ledger knows each process' waiters that a grant left waiting and grants a process
//!   only the slots for waiters older than the others' oldest, or what is left once theirs
//!   are served (the rule and its tolerances: [`BudgetLedger`](crate::store::BudgetLedger)). A
//!   process whose budget nobody else waits for asks exactly as often as before.
//! - **If the store is unreachable**, each process counts for itself until it answers again (a
//!   store outage must not stop the app's traffic). The `withings_budget_*` metrics and
//!   [`WithingsAuth::metrics`](crate::WithingsAuth::metrics) show slots taken, waits, their total
//!   time, exhaustions and 601s.
//! - [`RateBudget::unlimited`] turns it off; [`RateBudget::new`] takes a shorter window for
//!   tests. The simulator enforces one like Withings
//!   (`sim.set_app_rate_limit(Some(AppRateLimit { limit, window }))`, with
//!   `sim.busiest_window(w)` to check the result).
//! - On the command line: `--requests-per-minute N` (env `WITHINGS_REQUESTS_PER_MINUTE`, default
//!   120, 0 for none) and `--budget-deadline SECONDS` (default 60) on every command, shared
//!   through `--store` like the tokens; `withings budget` prints the window's use.
//!
//! [`TokenStore::budget`]: crate::store::TokenStore::budget
//! [`Error::BudgetExhausted`]: crate::Error::BudgetExhausted
//! [`Error::RateLimited`]: crate::Error::RateLimited

mod lane;
mod rate;
mod running;
mod service;

pub use lane::Lane;
pub(crate) use lane::Priority;
pub use rate::RateBudget;
pub(crate) use running::{Budget, BudgetCounters};
pub use service::{BudgetFuture, BudgetLayer, BudgetService};
pub(crate) use service::{RATE_LIMITED, token_client};
