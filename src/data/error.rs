//! What a data call fails with, and what collecting every page gives back.

use std::fmt;

use crate::error::Error;

/// Why a data row, page or call failed.
///
/// In a row stream, [`DataError::Row`] is one malformed row: the stream goes on with the
/// rest of the page. Every other variant is the stream's last item.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The call failed: Withings' body status (601, 2554, …), the layer (no token, refresh
    /// failed, budget exhausted), the transport, or a body that is not Withings' JSON.
    #[error(transparent)]
    Withings(#[from] Error),
    /// One row could not be read; the rest of its page was kept.
    #[error(transparent)]
    Row(RowError),
    /// Withings said `more` but sent back an offset already sent: following it would loop.
    #[error(
        "Withings sent offset {offset:?} again on page {page} while saying there is more: stopped instead of looping"
    )]
    OffsetNotAdvancing {
        /// The page (from 1) that repeated it.
        page: usize,
        /// The repeated offset, as sent.
        offset: String,
    },
    /// Withings said `more` with no offset to send back.
    #[error("Withings said there is more after page {page} but sent no offset: stopped")]
    MoreWithoutOffset {
        /// The page (from 1).
        page: usize,
    },
    /// The configured page cap was reached with `more` still true.
    #[error(
        "stopped after {pages} pages with Withings still saying there is more (raise the client's page cap)"
    )]
    PageCap {
        /// Pages read.
        pages: usize,
    },
}

impl DataError {
    /// True for [`DataError::Row`]: the stream goes on after it.
    pub fn is_row(&self) -> bool {
        matches!(self, DataError::Row(_))
    }

    /// The crate's [`Error`] inside, for [`DataError::Withings`].
    pub fn withings(&self) -> Option<&Error> {
        match self {
            DataError::Withings(e) => Some(e),
            _ => None,
        }
    }
}

/// One row of a page that could not be read; the page's other rows were kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row {index} of page {page} could not be read: {reason}")]
pub struct RowError {
    /// The page (from 1, counted over every call of a request).
    pub page: usize,
    /// The row's place in the page (from 0).
    pub index: usize,
    /// What was wrong (never the row's content).
    pub reason: String,
}

/// Every row of every page, and the rows that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected<T> {
    /// The rows, in the order Withings sent them (duplicates within a page collapsed).
    pub rows: Vec<T>,
    /// Rows that could not be read.
    pub bad_rows: Vec<RowError>,
}

impl<T> Default for Collected<T> {
    fn default() -> Self {
        Collected {
            rows: Vec::new(),
            bad_rows: Vec::new(),
        }
    }
}

/// Collecting stopped early: the error, and every row read before it.
#[derive(Debug)]
pub struct Partial<T> {
    /// What stopped it.
    pub error: DataError,
    /// The rows read before.
    pub collected: Collected<T>,
}

impl<T> fmt::Display for Partial<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (after {} rows)",
            self.error,
            self.collected.rows.len()
        )
    }
}

impl<T: fmt::Debug> std::error::Error for Partial<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
