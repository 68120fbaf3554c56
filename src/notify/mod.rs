//! Withings notifications: subscribe users, receive what Withings POSTs, react to unlinks.
//!
//! Withings tells an app that a user's data changed by POSTing a small form to a callback URL
//! the app subscribed for that user and category ([`Appli`]). Two halves:
//!
//! - [`NotifyClient`] manages subscriptions (`POST {api}/notify` with `action=subscribe`,
//!   `get`, `list`, `update`, `revoke`), each call through the user's [`crate::WithingsAuthLayer`],
//!   and [`NotifyClient::ensure_subscribed`] makes sure a user has the subscriptions the app
//!   needs (idempotent, retried on transient refusals). Callback URLs are checked with
//!   Withings' rules before anything is sent.
//! - [`NotifyReceiver`] is the callback: a tower `Service` for any server that answers
//!   Withings' `HEAD` check, authenticates the sender by a secret in the URL, parses the form
//!   into a [`Notification`] and hands it to the app through a bounded queue
//!   ([`Notifications`]), answering within Withings' 2 s: 200 once queued, 503 (so Withings
//!   retries) when it cannot be, never 200 and then dropped. Withings' retries of a delivered
//!   notification are acknowledged but not delivered twice. An `action=unlink` or `delete`
//!   marks the user in the token store, so the layer fails fast for them with
//!   [`crate::Error::NeedsReauthorization`], and is delivered so the app is told.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use axum::Router;
//! use tower_withings::notify::{Appli, NotifyClient, NotifyReceiver};
//! use tower_withings::{UserId, WithingsAuth, transport};
//!
//! # async fn example(auth: WithingsAuth, user: UserId) -> Result<(), Box<dyn std::error::Error>> {
//! // The same secret at every start: it is part of each subscription's callback URL.
//! let secret = std::env::var("WITHINGS_NOTIFY_SECRET")?;
//! let (receiver, mut notifications) = NotifyReceiver::builder(secret)
//!     .auth(&auth) // unlinked users are marked: the layer fails fast
//!     .build()?;
//! let callback = receiver.callback_url("https://app.example.com/withings/notify");
//! let app: Router = Router::new().route_service("/withings/notify/{secret}", receiver);
//! # let _ = app;
//!
//! // For each user (at login, at start): subscribe what is missing.
//! let notify = NotifyClient::new(&auth, transport::https_client());
//! notify.ensure_subscribed(user, callback.expose(), &[Appli::Weight, Appli::User]).await?;
//!
//! while let Some(n) = notifications.recv().await {
//!     // fetch the new data for n.user (getmeas with n.startdate..n.enddate, …)
//! #   let _ = n;
//! }
//! # Ok(()) }
//! ```

mod appli;
mod client;
mod dedupe;
mod form;
mod network;
mod queue;
mod receiver;
mod stats;

pub use appli::{Appli, ParseAppliError};
pub use client::{Ensured, NOTIFY_PATH, NotifyClient, Subscription};
pub use form::{Action, FormError, Notification};
pub use network::{Network, ParseNetworkError, PeerAddr};
pub use queue::Notifications;
pub use receiver::{NotifyReceiver, NotifyReceiverBuilder, ReceiverFuture};
pub use stats::ReceiverStats;
