//! Withings retries a notification it thinks failed: the receiver remembers what it delivered
//! lately (bounded in time and number) and what it is handling, so a retry is acknowledged but
//! not delivered twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{Action, Appli, Notification};
use crate::token::UserId;

/// What identifies one notification among Withings' retries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    user: UserId,
    appli: Appli,
    startdate: Option<u64>,
    enddate: Option<u64>,
    date: Option<String>,
    action: Option<Action>,
}

impl Key {
    pub(super) fn of(n: &Notification) -> Key {
        Key {
            user: n.user,
            appli: n.appli,
            startdate: n.startdate,
            enddate: n.enddate,
            date: n.date.clone(),
            action: n.action.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    InFlight,
    Delivered(Instant),
}

/// Notifications delivered lately (bounded in time and number) and those being handled.
pub(super) struct Dedupe {
    window: Duration,
    capacity: usize,
    seen: HashMap<Key, Seen>,
    /// Delivered keys, oldest first.
    order: VecDeque<(Instant, Key)>,
}

pub(super) enum Reserved<'a> {
    Fresh(Reservation<'a>),
    Duplicate,
    Busy,
}

/// A notification being handled; forgotten on drop unless committed (a 503, a timeout or a
/// dropped connection lets the retry through).
pub(super) struct Reservation<'a> {
    dedupe: &'a Mutex<Dedupe>,
    key: Option<Key>,
}

fn lock(dedupe: &Mutex<Dedupe>) -> MutexGuard<'_, Dedupe> {
    // Updated in single steps: a panic elsewhere cannot leave it torn.
    dedupe.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'a> Reservation<'a> {
    pub(super) fn take(dedupe: &'a Mutex<Dedupe>, key: Key) -> Reserved<'a> {
        let mut d = lock(dedupe);
        d.expire(Instant::now());
        match d.seen.get(&key) {
            Some(Seen::Delivered(_)) => return Reserved::Duplicate,
            Some(Seen::InFlight) => return Reserved::Busy,
            None => {}
        }
        if d.seen.len() >= d.capacity {
            // Forget the oldest delivered one; if all are in flight, there is no room.
            match d.order.pop_front() {
                Some((_, oldest)) => {
                    d.seen.remove(&oldest);
                }
                None => return Reserved::Busy,
            }
        }
        d.seen.insert(key.clone(), Seen::InFlight);
        Reserved::Fresh(Reservation {
            dedupe,
            key: Some(key),
        })
    }

    pub(super) fn commit(mut self) {
        if let Some(key) = self.key.take() {
            let now = Instant::now();
            let mut d = lock(self.dedupe);
            d.seen.insert(key.clone(), Seen::Delivered(now));
            d.order.push_back((now, key));
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut d = lock(self.dedupe);
            if d.seen.get(&key) == Some(&Seen::InFlight) {
                d.seen.remove(&key);
            }
        }
    }
}

impl Dedupe {
    pub(super) fn new(window: Duration, capacity: usize) -> Dedupe {
        Dedupe {
            window,
            capacity,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            if let Some((at, key)) = self.order.pop_front()
                && self.seen.get(&key) == Some(&Seen::Delivered(at))
            {
                self.seen.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> Key {
        Key {
            user: UserId(n),
            appli: Appli::Weight,
            startdate: Some(1),
            enddate: Some(2),
            date: None,
            action: None,
        }
    }

    #[test]
    fn dedupe_is_bounded_and_releases_what_was_not_committed() {
        let dedupe = Mutex::new(Dedupe::new(Duration::from_secs(60), 3));
        let Reserved::Fresh(r) = Reservation::take(&dedupe, key(1)) else {
            panic!()
        };
        // In flight: a concurrent repeat must wait.
        assert!(matches!(Reservation::take(&dedupe, key(1)), Reserved::Busy));
        drop(r); // not committed (e.g. queue full): the retry gets through
        let Reserved::Fresh(r) = Reservation::take(&dedupe, key(1)) else {
            panic!()
        };
        r.commit();
        assert!(matches!(
            Reservation::take(&dedupe, key(1)),
            Reserved::Duplicate
        ));
        for n in 2..10 {
            let Reserved::Fresh(r) = Reservation::take(&dedupe, key(n)) else {
                panic!("{n}")
            };
            r.commit();
            assert!(lock(&dedupe).seen.len() <= 3);
        }
        // The oldest were forgotten.
        assert!(matches!(
            Reservation::take(&dedupe, key(1)),
            Reserved::Fresh(_)
        ));
    }

    #[test]
    fn dedupe_forgets_after_the_window() {
        let dedupe = Mutex::new(Dedupe::new(Duration::ZERO, 10));
        let Reserved::Fresh(r) = Reservation::take(&dedupe, key(1)) else {
            panic!()
        };
        r.commit();
        assert!(matches!(
            Reservation::take(&dedupe, key(1)),
            Reserved::Fresh(_)
        ));
    }
}
