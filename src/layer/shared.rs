//! [`Shared`]: what every request of a layer (or a reqwest middleware) reaches, behind one
//! `Arc`, so that a request clones one reference count, not two.

use std::sync::Arc;

use crate::budget::Budget;
use crate::refresh::Refresher;

/// The handle's refresher and request budget.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) refresher: Arc<Refresher>,
    pub(crate) budget: Arc<Budget>,
}
