//! How much of a response body the crate reads, at most, to learn its Withings status.

/// How much of an error body the layer reads, at most, for Withings' message
/// ([`WithingsAuthLayer::status_errors`](crate::WithingsAuthLayer::status_errors)): Withings'
/// error bodies are a few hundred bytes.
pub(crate) const ERROR_BODY_LIMIT: usize = 16 * 1024;

/// How much of a body the layer reads, at most, looking for its `status`: of the bytes as sent
/// and, for a compressed body, of the decoded bytes too. Withings puts the status first, so
/// normally only the first chunk is looked at; a body whose status is not first is read whole
/// only if it fits.
pub(crate) const PEEK_LIMIT: usize = 64 * 1024;

/// How many frames the layer reads, at most, looking for the status (a stream of empty or
/// one-byte frames ends the peek too).
pub(crate) const PEEK_FRAMES: u32 = 1024;

/// How many frames one poll reads before yielding to the executor, so that a timeout around
/// the layer can fire while a slow or endless body is being looked at.
pub(crate) const PEEK_FRAMES_PER_POLL: u32 = 32;
