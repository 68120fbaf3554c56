//! Withings notifications: subscribe users, receive what Withings POSTs, react to unlinks.
//!
//! Withings tells an app that a user's data changed by POSTing a small form to a callback URL
//! the app subscribed for that user and category ([`Appli`]). Two halves:
//!
//! - [`NotifyClient`] manages subscriptions (`POST {api}/notify` with `action=subscribe`,
//!   `get`, `list`, `update`, `revoke`), each call through the user's [`crate::WithingsAuthLayer`],
//!   and [`NotifyClient::ensure_subscribed`] lists what exists and subscribes only what is
//!   missing (call it at every start; transient refusals retried with bounded backoff).
//!   Callback URLs are checked with Withings' rules before anything is sent (https, a host
//!   name, not localhost, port 80 or 443, at most 255 characters); a callback that fails
//!   Withings' `HEAD` check is [`crate::Error::CallbackRefused`], saying why, not a retry loop.
//! - [`NotifyReceiver`] is the callback: a tower `Service` for any server (axum's
//!   `route_service`, hyper, …). It answers Withings' `HEAD`/`GET` check with 200,
//!   authenticates the sender by a secret in the callback URL's last path segment (compared in
//!   constant time; wrong or missing → 404, nothing delivered; Withings signs nothing) and
//!   optionally by source network, parses the form into a [`Notification`] (unknown fields
//!   ignored, bad forms 400, bodies over 16 KiB 413) and hands it to the app through a bounded
//!   queue ([`Notifications`]), answering within 1.5 s (Withings waits 2 s): 200 once queued,
//!   503 (so Withings retries) when it cannot be, never 200 and then dropped. Withings' repeats
//!   of a delivered notification (same user, appli and range within 15 min) are acknowledged
//!   but not delivered twice.
//! - An `action=unlink` or `delete` marks the user before it is acknowledged (the store record
//!   is marked, never deleted) and is delivered so the app is told. With
//!   [`.auth(&auth)`](NotifyReceiverBuilder::auth) this process fails the user's requests at
//!   once with [`crate::Error::AccessRevoked`], sending nothing; other processes sharing the
//!   store (or a receiver given only the store) fail with
//!   [`crate::Error::NeedsReauthorization`] at their next refresh.
//!
//! The simulator (`withings-sim`) plays Withings' side: the `HEAD` check at subscribe time,
//! deliveries when a test adds data (`sim.add_measure`, `add_activity`, `send_notification`),
//! retries and removal of a subscription after repeated failures, `unlink_user` /
//! `delete_user` events, and counters (`sim.notify_counters()`).
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
pub use client::{Ensured, NotifyClient, Subscription};
pub use form::{Action, FormError, Notification};
pub use network::{Network, ParseNetworkError, PeerAddr};
pub use queue::Notifications;
pub use receiver::{NotifyReceiver, NotifyReceiverBuilder, ReceiverFuture};
pub use stats::ReceiverStats;
