//! Where the app's slots are counted: [`BudgetLedger`], the contract a shared engine (a token
//! store's database) keeps, and [`LocalLedger`], the in-process one.
//!
//! A slot is counted from the moment it is reserved until `hold` after it, plus the window: a
//! holder sends within the first half of `hold` and the second half covers the time the
//! request takes to arrive. That way the count in the ledger is never below what the server
//! sees in any window, whichever holder sent, even one that died holding slots (its entries
//! just age out).
//!
//! Each holder also tells the ledger when its waiting requests started, and the ledger serves
//! the oldest first across holders; the rows it keeps for that age out like the slots (the
//! rule: [`BudgetLedger`]).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::future::StoreFuture;

/// A reservation asked of a [`BudgetLedger`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotAsk<'a> {
    /// Whose budget: the Withings client id (Withings counts per app).
    pub app: &'a str,
    /// How many slots the holder would like now (at least 1).
    pub want: u32,
    /// At most this many slots in any `window`.
    pub limit: u32,
    /// The window's length.
    pub window: Duration,
    /// How long after the reservation its slots stay counted before their window starts
    /// (the ledger stamps them `now + hold`).
    pub hold: Duration,
    /// Who asks: one running budget (one process' handle), a random name that stays the
    /// same for its life.
    pub holder: &'a str,
    /// When each of the holder's waiting requests started to wait, on this process' clock
    /// (any order; empty: nobody waits, the slots are for the holder's pool). A ledger shared
    /// by processes serves the oldest waiters first, whichever process they are in.
    pub waiting: &'a [Instant],
}

/// A [`BudgetLedger`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotGrant {
    /// Slots granted, `0..=want`.
    pub granted: u32,
    /// When fewer than asked were granted: how long until the ledger may grant more (the
    /// oldest entry leaving the window, or the end of a pause).
    pub retry_in: Duration,
}

/// What a window holds now, for `withings budget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetUsage {
    /// Slots counted in the current window (reserved, whether used or not).
    pub used: u32,
    /// The app is paused (a 601 asked everyone to wait) for this much longer.
    pub paused_for: Option<Duration>,
}

/// A shared count of the app's request slots: the engine behind a [`RateBudget`](crate::budget::RateBudget)
/// shared by every process using one token store. Returned by
/// [`TokenStore::budget`](crate::store::TokenStore::budget).
///
/// The contract (checked by `testkit::check_budget_ledger`):
/// - [`reserve`](Self::reserve) is atomic across every process using the ledger: it drops
///   entries stamped at or before `now − window`, counts the rest, grants
///   `min(want, limit − counted)` (none while paused), and records the grant as one entry
///   stamped `now + hold`. `now` is one clock for every holder (the database server's).
/// - **Oldest waiter first, across processes.** Each holder's waiters that a grant does not
///   cover are recorded as one row (the oldest's start on `now`'s clock, how many, and an
///   expiry: the retry hint plus twice `hold`, so a dead holder's row ages out like its
///   slots); a grant replaces the holder's row. While another holder's live row is there, a
///   holder gets only the slots for its waiters older than that row's oldest (by at most a
///   tenth of `hold`), or what is left once every other row's waiters had one; a holder
///   held back so is told to retry in a quarter of `hold`.
/// - [`pause`](Self::pause) stops every grant for `wait` (the longest pause asked wins).
pub trait BudgetLedger: Send + Sync {
    /// Reserves up to `ask.want` slots.
    fn reserve<'a>(&'a self, ask: &'a SlotAsk<'a>) -> StoreFuture<'a, SlotGrant>;

    /// Stops all grants of `app` for `wait`.
    fn pause<'a>(&'a self, app: &'a str, wait: Duration) -> StoreFuture<'a, ()>;

    /// The window's use now.
    fn usage<'a>(&'a self, app: &'a str, window: Duration) -> StoreFuture<'a, BudgetUsage>;

    /// The same as [`reserve`](Self::reserve) without waiting, for in-memory ledgers (then the
    /// budget takes one slot per request and keeps no block). `None`: not available.
    fn reserve_now(&self, ask: &SlotAsk<'_>) -> Option<SlotGrant> {
        let _ = ask;
        None
    }
}

/// Other holders' waiters, as their live rows say: the oldest's start and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Others {
    pub oldest: i64,
    pub count: i64,
}

/// The asking holder's row after a reservation: its oldest waiter the grant did not cover,
/// how many it did not cover, and when the row expires. `None`: no row (delete it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaiterRow {
    pub oldest: i64,
    pub count: i64,
    pub expires: i64,
}

/// The ask's waiters' starts on the ledger's clock, oldest first: `now` (ms) is the ledger's
/// clock read now, and a waiter that has waited `d` on this process' clock started at
/// `now − d`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn waiting_since(ask: &SlotAsk<'_>, now: i64) -> Vec<i64> {
    let at = Instant::now();
    let mut since: Vec<i64> = ask
        .waiting
        .iter()
        .map(|start| now.saturating_sub(whole_millis(at.saturating_duration_since(*start))))
        .collect();
    since.sort_unstable();
    since
}

/// How much older than another holder's oldest a waiter may be and still count as first (the
/// clocks the ages were read on differ by a round trip), and how soon a holder held back for
/// another's older waiters asks again: a tenth and a quarter of `hold` (25 and 62 ms at the
/// smallest hold), in ms.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn tolerance_and_poll(hold: Duration) -> (i64, i64) {
    let hold = whole_millis(hold);
    ((hold / 10).max(1), (hold / 4).max(1))
}

/// The ledger's decision for a database backend, in the database's milliseconds: `counted`
/// slots are in the window (entries stamped after `now − window`), the oldest stamped
/// `oldest`, the app is paused until `paused_until`, the holder's waiters started at `mine`
/// (oldest first, [`waiting_since`]) and other holders' live rows say `others`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn decide(
    ask: &SlotAsk<'_>,
    now: i64,
    counted: i64,
    oldest: Option<i64>,
    paused_until: Option<i64>,
    mine: &[i64],
    others: Option<Others>,
) -> (SlotGrant, Option<WaiterRow>) {
    let millis = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let (tolerance, poll) = tolerance_and_poll(ask.hold);
    let want = i64::from(ask.want);
    let (granted, retry_ms) = match paused_until.filter(|until| *until > now) {
        Some(until) => (0, until - now),
        None => {
            let free = i64::from(ask.limit).saturating_sub(counted).max(0);
            let granted = fair_share(want, free, mine, others, tolerance);
            let retry_ms = match oldest {
                _ if granted == want => 0,
                // Slots are free but held for another holder's older waiters.
                _ if granted < want.min(free) => poll,
                Some(oldest) => oldest + window_millis(ask.window) - now,
                None => window_millis(ask.window),
            };
            (granted, retry_ms.max(0))
        }
    };
    let expires = now
        .saturating_add(retry_ms)
        .saturating_add(2 * whole_millis(ask.hold));
    let row = row_after(mine, granted, expires);
    let grant = SlotGrant {
        granted: u32::try_from(granted).unwrap_or(0),
        retry_in: millis(retry_ms),
    };
    (grant, row)
}

/// How many of `want` slots a holder gets when `free` are: all it asks while no other holder
/// has a live row; else one for each of its waiters (starts `mine`, oldest first) that started
/// no later than the others' oldest plus `tolerance`, or what is left once every other row's
/// waiters had one, whichever is more. Any unit of time.
fn fair_share(want: i64, free: i64, mine: &[i64], others: Option<Others>, tolerance: i64) -> i64 {
    let fair = match others {
        None => want,
        Some(others) => {
            let first = mine
                .iter()
                .take_while(|since| **since <= others.oldest.saturating_add(tolerance))
                .count();
            let spare = free.saturating_sub(others.count);
            i64::try_from(first).unwrap_or(i64::MAX).max(spare)
        }
    };
    want.min(free).min(fair).max(0)
}

/// The holder's row once `granted` of its waiters (starts `mine`, oldest first) have a slot:
/// the rest, if any.
fn row_after(mine: &[i64], granted: i64, expires: i64) -> Option<WaiterRow> {
    let left = mine.get(usize::try_from(granted).unwrap_or(usize::MAX)..)?;
    Some(WaiterRow {
        oldest: *left.first()?,
        count: i64::try_from(left.len()).unwrap_or(i64::MAX),
        expires,
    })
}

/// A duration in whole milliseconds, as the databases count (at least 1).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn window_millis(d: Duration) -> i64 {
    whole_millis(d).max(1)
}

/// A duration in whole milliseconds.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn whole_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One app's sliding window: entries `(stamp, count)`, oldest first. Times are microseconds
/// on one monotonic clock (see [`micros`]), so the hot path compares integers.
#[derive(Debug, Default)]
pub(crate) struct Window {
    entries: VecDeque<(u64, u32)>,
    counted: u32,
    /// 0: not paused.
    paused_until: u64,
    /// The holders' rows of waiters (times in microseconds on the same clock).
    waiters: Vec<(String, WaiterRow)>,
}

/// `at` in microseconds on the process' window clock: from a fixed base, offset by 2^62 so
/// that instants before the base (another runtime's paused clock) still order correctly.
/// Read from tokio's clock, so tests on a paused runtime move it too.
pub(crate) fn micros(at: Instant) -> u64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(std::time::Instant::now);
    let at = at.into_std();
    let zero = 1u64 << 62;
    match at.checked_duration_since(base) {
        Some(after) => zero.saturating_add(us(after)),
        // Rounded up, so that both sides of the base round down: whole µs apart stay so.
        None => zero.saturating_sub(us(base.duration_since(at) + Duration::from_nanos(999))),
    }
}

fn us(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

impl Window {
    pub(crate) fn reserve(&mut self, ask: &SlotAsk<'_>, now: Instant) -> SlotGrant {
        let now = micros(now);
        let window = us(ask.window);
        self.prune(window, now);
        // The same rule as `decide`, in microseconds: oldest waiters first across holders.
        let signed = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
        let mut mine: Vec<i64> = ask.waiting.iter().map(|at| signed(micros(*at))).collect();
        mine.sort_unstable();
        self.waiters
            .retain(|(holder, row)| holder != ask.holder && row.expires > signed(now));
        let others = self
            .waiters
            .iter()
            .fold(None, |acc: Option<Others>, (_, row)| {
                Some(match acc {
                    None => Others {
                        oldest: row.oldest,
                        count: row.count,
                    },
                    Some(acc) => Others {
                        oldest: acc.oldest.min(row.oldest),
                        count: acc.count.saturating_add(row.count),
                    },
                })
            });
        let grant = self.grant(ask, now, &mine, others);
        let expires = now
            .saturating_add(us(grant.retry_in))
            .saturating_add(2 * us(ask.hold));
        if let Some(row) = row_after(&mine, i64::from(grant.granted), signed(expires)) {
            self.waiters.push((ask.holder.to_owned(), row));
        }
        grant
    }

    fn grant(
        &mut self,
        ask: &SlotAsk<'_>,
        now: u64,
        mine: &[i64],
        others: Option<Others>,
    ) -> SlotGrant {
        if self.paused_until > now {
            return SlotGrant {
                granted: 0,
                retry_in: Duration::from_micros(self.paused_until - now),
            };
        }
        let window = us(ask.window);
        let free = ask.limit.saturating_sub(self.counted);
        let tolerance = i64::try_from(us(ask.hold) / 10).unwrap_or(i64::MAX);
        let fair = fair_share(
            i64::from(ask.want),
            i64::from(free),
            mine,
            others,
            tolerance,
        );
        let granted = u32::try_from(fair).unwrap_or(0);
        if granted > 0 {
            let hold = us(ask.hold);
            let stamp = now.saturating_add(hold);
            // Entries closer than an eighth of `hold` merge, stamped with the later time (which
            // only counts the earlier slots a little longer): the window holds at most a few
            // hundred entries however many requests pass.
            match self.entries.back_mut() {
                Some((last, count)) if stamp.saturating_sub(*last) < hold / 8 => {
                    *last = stamp;
                    *count += granted;
                }
                _ => self.entries.push_back((stamp, granted)),
            }
            self.counted += granted;
        }
        let retry_in = if granted < ask.want.min(free) {
            // Slots are free but held for another holder's older waiters.
            ask.hold / 4
        } else if granted < ask.want {
            self.entries
                .front()
                .map(|(stamp, _)| Duration::from_micros((stamp + window).saturating_sub(now)))
                .unwrap_or(ask.window)
        } else {
            Duration::ZERO
        };
        SlotGrant { granted, retry_in }
    }

    pub(crate) fn pause(&mut self, now: Instant, wait: Duration) {
        let until = micros(now).saturating_add(us(wait));
        self.paused_until = self.paused_until.max(until);
    }

    pub(crate) fn usage(&mut self, window: Duration, now: Instant) -> BudgetUsage {
        let now = micros(now);
        self.prune(us(window), now);
        BudgetUsage {
            used: self.counted,
            paused_for: (self.paused_until > now)
                .then(|| Duration::from_micros(self.paused_until - now)),
        }
    }

    fn prune(&mut self, window: u64, now: u64) {
        while let Some((stamp, count)) = self.entries.front().copied() {
            if stamp.saturating_add(window) > now {
                break;
            }
            self.entries.pop_front();
            self.counted -= count;
        }
    }
}

/// The in-process ledger: what [`MemoryStore`](crate::store::MemoryStore) shares between the
/// handles using it.
#[derive(Debug, Default)]
pub struct LocalLedger {
    apps: Mutex<Vec<(String, Window)>>,
}

impl LocalLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, app: &str, f: impl FnOnce(&mut Window) -> T) -> T {
        // Each change is a few integer updates: a poisoned lock is still consistent.
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let index = match apps.iter().position(|(name, _)| name == app) {
            Some(index) => index,
            None => {
                apps.push((app.to_owned(), Window::default()));
                apps.len() - 1
            }
        };
        f(&mut apps[index].1)
    }
}

impl BudgetLedger for LocalLedger {
    fn reserve<'a>(&'a self, ask: &'a SlotAsk<'a>) -> StoreFuture<'a, SlotGrant> {
        let grant = self.with(ask.app, |w| w.reserve(ask, Instant::now()));
        Box::pin(async move { Ok(grant) })
    }

    fn pause<'a>(&'a self, app: &'a str, wait: Duration) -> StoreFuture<'a, ()> {
        self.with(app, |w| w.pause(Instant::now(), wait));
        Box::pin(async { Ok(()) })
    }

    fn usage<'a>(&'a self, app: &'a str, window: Duration) -> StoreFuture<'a, BudgetUsage> {
        let usage = self.with(app, |w| w.usage(window, Instant::now()));
        Box::pin(async move { Ok(usage) })
    }

    fn reserve_now(&self, ask: &SlotAsk<'_>) -> Option<SlotGrant> {
        Some(self.with(ask.app, |w| w.reserve(ask, Instant::now())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(want: u32) -> SlotAsk<'static> {
        SlotAsk {
            app: "app",
            want,
            limit: 10,
            window: Duration::from_secs(60),
            hold: Duration::from_secs(2),
            holder: "holder",
            waiting: &[],
        }
    }

    #[test]
    fn never_more_than_the_limit_in_a_window() {
        let start = Instant::now();
        let mut w = Window::default();
        assert_eq!(w.reserve(&ask(4), start).granted, 4);
        let grant = w.reserve(&ask(8), start + Duration::from_secs(1));
        assert_eq!(grant.granted, 6);
        // The first entry is stamped start + hold and leaves the window a window later.
        assert_eq!(grant.retry_in, Duration::from_secs(61));
        assert_eq!(
            w.reserve(&ask(1), start + Duration::from_secs(61)).granted,
            0
        );
        assert_eq!(
            w.reserve(&ask(5), start + Duration::from_secs(62)).granted,
            4
        );
        assert_eq!(
            w.usage(Duration::from_secs(60), start + Duration::from_secs(62))
                .used,
            10
        );
    }

    #[test]
    fn a_pause_stops_every_grant_until_it_ends() {
        let start = Instant::now();
        let mut w = Window::default();
        w.pause(start, Duration::from_secs(9));
        w.pause(start, Duration::from_secs(3)); // a shorter pause does not shorten it
        let grant = w.reserve(&ask(1), start + Duration::from_secs(1));
        // The window clock counts whole microseconds.
        let off = grant.retry_in.abs_diff(Duration::from_secs(8));
        assert_eq!(grant.granted, 0);
        assert!(off <= Duration::from_micros(1), "{grant:?}");
        assert_eq!(
            w.reserve(&ask(1), start + Duration::from_millis(9_001))
                .granted,
            1
        );
    }

    #[test]
    fn the_oldest_waiters_go_first_whichever_holder_they_wait_in() {
        let start = Instant::now() + Duration::from_secs(100);
        let (old, new) = ([start; 3], [start + Duration::from_secs(1); 3]);
        let at = start + Duration::from_secs(2);
        let (old, new) = (&old[..], &new[..]);
        fn by<'a>(holder: &'a str, waiting: &'a [Instant], want: u32, limit: u32) -> SlotAsk<'a> {
            SlotAsk {
                holder,
                waiting,
                want,
                limit,
                ..ask(0)
            }
        }
        // A pause: both holders' waiters are recorded, none served.
        let mut w = Window::default();
        w.pause(at, Duration::from_secs(1));
        assert_eq!(w.reserve(&by("old", old, 3, 10), at).granted, 0);
        assert_eq!(w.reserve(&by("new", new, 3, 10), at).granted, 0);
        // 10 free, 3 older waiters elsewhere: the newer holder gets the 7 left.
        let after = at + Duration::from_secs(1);
        let grant = w.reserve(&by("new", new, 10, 10), after);
        assert_eq!(grant.granted, 7);
        assert_eq!(grant.retry_in, Duration::from_millis(500));
        assert_eq!(w.reserve(&by("old", old, 3, 10), after).granted, 3);
        // A row ages out: a holder that died with waiters holds nobody back for long.
        let mut w = Window::default();
        w.pause(at, Duration::from_secs(1));
        w.reserve(&by("dead", old, 3, 3), at);
        assert_eq!(w.reserve(&by("new", new, 3, 3), after).granted, 0);
        let later = after + Duration::from_secs(5);
        assert_eq!(w.reserve(&by("new", new, 3, 3), later).granted, 3);
    }

    #[test]
    fn close_entries_merge_so_the_window_stays_small() {
        let start = Instant::now();
        let mut w = Window::default();
        let mut big = ask(1);
        big.limit = u32::MAX;
        for i in 0..100_000u32 {
            w.reserve(&big, start + Duration::from_micros(u64::from(i)));
        }
        assert!(w.entries.len() < 10, "{} entries", w.entries.len());
        assert_eq!(w.counted, 100_000);
    }
}
