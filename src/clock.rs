//! Wall-clock time, injectable so tests move it instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// A source of the current wall-clock time.
///
/// Token expiry is an absolute [`SystemTime`] (it is shared with other processes through a store),
/// so the clock is a wall clock. Tests use [`ManualClock`] to step over a token's lifetime.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that starts at the system time and moves only when told to.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    start: SystemTime,
    offset_ms: AtomicU64,
}

impl ManualClock {
    /// A clock frozen at the current system time.
    pub fn new() -> Self {
        ManualClock {
            inner: Arc::new(ManualInner {
                start: SystemTime::now(),
                offset_ms: AtomicU64::new(0),
            }),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.inner.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        let offset = Duration::from_millis(self.inner.offset_ms.load(Ordering::SeqCst));
        self.inner.start + offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_secs(31));
        assert_eq!(
            clock.now().duration_since(t0).unwrap(),
            Duration::from_secs(31)
        );
        let shared = clock.clone();
        shared.advance(Duration::from_secs(1));
        assert_eq!(
            clock.now().duration_since(t0).unwrap(),
            Duration::from_secs(32)
        );
    }
}
