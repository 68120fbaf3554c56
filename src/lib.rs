//! tower-withings: Withings OAuth 2.0 for any tower HTTP client.

#[cfg(feature = "sim")]
pub mod sim;
