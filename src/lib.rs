#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod error;
pub mod oauth;
pub mod secret;
#[cfg(feature = "sim")]
pub mod sim;
pub mod status;
pub mod token;
pub mod transport;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ClientAuth, Credentials, Endpoints};
pub use error::{BoxError, Error};
pub use oauth::{AuthorizeRequest, Callback, OAuthClient, RedirectPolicy};
pub use secret::Secret;
pub use token::{Scope, Token, UserId};
