//! [`StoreFuture`]: what a store or a ledger method returns.

use std::future::Future;
use std::pin::Pin;

use crate::error::Error;

/// The future a [`TokenStore`](super::TokenStore) or [`BudgetLedger`](super::BudgetLedger)
/// method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;
