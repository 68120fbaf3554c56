//! A conformance kit for [`TokenStore`] implementations (feature `testkit`).
//!
//! Run [`check_store`] on your store in a test; it panics, saying which rule broke, if the
//! store does not keep the rules the layer relies on. If several processes will share your
//! backend, also run [`check_shared_stores`] on two separate handles to it. A store that keeps
//! the default [`TokenStore::try_lock`] (one process only: the layer already runs one refresh
//! per user in-process) has no leases to check: run [`check_single_process_store`] instead.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tower_withings::Error> {
//! use tower_withings::{store::MemoryStore, testkit};
//! testkit::check_store(&MemoryStore::new()).await;
//! # Ok(()) }
//! ```
//!
//! What is checked:
//! - `load` of an unknown user is `None`;
//! - `put` then `load` returns every field: both tokens (including unusual characters and a
//!   long token), the user id, the scope, `refreshed_at`, and `expires_at` **to within one
//!   second** (stores may keep whole seconds; this crate's stores keep milliseconds or better);
//! - `compare_and_save` with the wrong spent token returns `false` and changes nothing; with
//!   the right one it saves everything and returns `true`; it never creates a record;
//! - `mark_needs_reauthorization` marks only while the stored refresh token is the refused one,
//!   and keeps the record; `put` clears the mark;
//! - users are independent; `list` returns the records put (other users may be listed too);
//! - `delete` removes that user's record only (and says whether there was one);
//! - leases: acquire, a second locker gets `Held`, another user is independent, unlock by the
//!   wrong owner does not release, unlock then re-acquire, a lease lapses after its duration
//!   (a 300 ms lease, then a wait past it) and the lapsed holder's unlock does not release its
//!   successor's lease, and 16 concurrent lockers of one user get exactly one `Acquired`.
//!
//! - the request budget, for a store whose [`TokenStore::budget`] offers a ledger: grants stop
//!   at the limit, a refusal says when to retry (within a window and a hold), `usage` counts
//!   what was granted, a pause stops every grant, apps are independent, and (through two
//!   handles) 40 racing reservations of one slot each against a limit of 10 get exactly 10,
//!   and a holder with newer waiters gets only what is left once an older holder's waiters
//!   (recorded while a 300 ms pause stopped every grant) had theirs.
//!
//! - the sync's state, for a store whose [`TokenStore::sync_state`] offers it: run
//!   [`check_sync_state`] on two handles (leases and fences, the cursor only rising, versions
//!   only going up, the coalescing inbox, stop and forget).
//!
//! Every run uses fresh random user ids (above 10^12), so runs against a shared server do not
//! collide. The records it writes are left in the store, but for the one `delete` removes.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use crate::secret::Secret;
use crate::store::{Lease, LockAttempt, SlotAsk, StoredToken, TokenStore};
pub use crate::sync::check::check_sync_state;
use crate::token::{Token, UserId};

/// How far a stored time may be from the one written.
const TIME_TOLERANCE: Duration = Duration::from_secs(1);

/// The short lease used to check expiry.
const SHORT_LEASE: Duration = Duration::from_millis(300);

/// A long lease, which must not lapse during the checks.
const LONG_LEASE: Duration = Duration::from_secs(60);

/// How many lockers race for one user.
const RACERS: usize = 16;

/// Runs every check on `store`; panics with a message naming the first rule it breaks.
pub async fn check_store<S: TokenStore + ?Sized>(store: &S) {
    let users = Users::new();
    records(store, &users).await;
    lock_basics(store, users.id(6), users.id(7)).await;
    lease_expiry(store, users.id(8)).await;
    racing_lockers(store, users.id(9)).await;
    budget_ledger(store).await;
}

/// Every check of [`check_store`] but the leases: for a store used by one process only, which
/// keeps the default [`TokenStore::try_lock`] (it grants every lease).
pub async fn check_single_process_store<S: TokenStore + ?Sized>(store: &S) {
    records(store, &Users::new()).await;
    budget_ledger(store).await;
}

fn slot_ask(app: &str, want: u32, limit: u32) -> SlotAsk<'_> {
    SlotAsk {
        app,
        want,
        limit,
        window: Duration::from_secs(60),
        hold: Duration::from_millis(250),
        holder: "testkit",
        waiting: &[],
    }
}

/// The budget ledger's rules, if the store has one.
async fn budget_ledger<S: TokenStore + ?Sized>(store: &S) {
    let Some(ledger) = store.budget() else {
        return;
    };
    let app = format!("testkit-{}", Lease::new().owner);
    let other = format!("{app}-other");
    let window = Duration::from_secs(60);
    let reserve = async |app: &str, want| {
        let ask = slot_ask(app, want, 3);
        ledger.reserve(&ask).await.expect("reserve")
    };
    let usage = async |app: &str| ledger.usage(app, window).await.expect("usage");
    // A limit of 3: room for 2, then the last one.
    for (want, granted, ledger_with) in [(2, 2, "room"), (2, 1, "one slot left")] {
        let grant = reserve(&app, want).await;
        assert_eq!(
            grant.granted, granted,
            "a ledger with {ledger_with} granted {} of {want} slots",
            grant.granted
        );
    }
    let grant = reserve(&app, 1).await;
    assert_eq!(
        grant.granted, 0,
        "a full ledger granted a slot past the limit"
    );
    let longest = window + Duration::from_millis(250) + TIME_TOLERANCE;
    assert!(
        grant.retry_in > Duration::ZERO && grant.retry_in <= longest,
        "a refusal said to retry in {:?} (expected within the window and the hold)",
        grant.retry_in
    );
    let used = usage(&app).await;
    assert_eq!(
        used.used, 3,
        "usage counted {} of the 3 slots granted",
        used.used
    );
    assert_eq!(used.paused_for, None, "an app never paused reads as paused");
    let grant = reserve(&other, 1).await;
    assert_eq!(
        grant.granted, 1,
        "one app's full window refused another app"
    );
    ledger
        .pause(&other, Duration::from_secs(30))
        .await
        .expect("pause");
    let grant = reserve(&other, 1).await;
    assert_eq!(grant.granted, 0, "a paused app was granted a slot");
    assert!(
        grant.retry_in > Duration::from_secs(20) && grant.retry_in <= Duration::from_secs(31),
        "a 30 s pause said to retry in {:?}",
        grant.retry_in
    );
    let paused = usage(&other).await.paused_for;
    assert!(paused.is_some(), "usage of a paused app shows no pause");
}

/// Reservations racing through two handles never grant more than the limit in all.
async fn shared_budget<A: TokenStore + ?Sized, B: TokenStore + ?Sized>(a: &A, b: &B) {
    let (Some(first), Some(second)) = (a.budget(), b.budget()) else {
        return;
    };
    let app = format!("testkit-{}", Lease::new().owner);
    let ask = slot_ask(&app, 1, 10);
    let ask = &ask;
    let grants = join_all((0..40).map(|i| {
        Box::pin(async move {
            if i % 2 == 0 {
                first.reserve(ask).await
            } else {
                second.reserve(ask).await
            }
        }) as Pin<Box<dyn Future<Output = _> + Send + '_>>
    }))
    .await;
    let granted: u32 = grants
        .into_iter()
        .map(|g: Result<crate::store::SlotGrant, crate::Error>| {
            g.expect("reserve through two handles").granted
        })
        .sum();
    assert_eq!(
        granted, 10,
        "40 reservations through two handles against a limit of 10 granted {granted}"
    );
}

/// A holder whose waiters are older (recorded while a pause stopped every grant) goes first:
/// the other, with newer waiters, gets only what is left once the first's waiters had theirs.
async fn oldest_waiters_first<A: TokenStore + ?Sized, B: TokenStore + ?Sized>(a: &A, b: &B) {
    let (Some(first), Some(second)) = (a.budget(), b.budget()) else {
        return;
    };
    let app = format!("testkit-{}", Lease::new().owner);
    let now = tokio::time::Instant::now();
    let old = [now.checked_sub(Duration::from_secs(10)).unwrap_or(now); 2];
    let new = [now; 2];
    // A long hold: the rows outlive a slow machine's wait (tolerance 0.5 s, poll 1.25 s).
    let ask = |holder, waiting| SlotAsk {
        holder,
        waiting,
        hold: Duration::from_secs(5),
        ..slot_ask(&app, 2, 3)
    };
    first
        .pause(&app, Duration::from_millis(300))
        .await
        .expect("pause");
    for (ledger, holder, waiting) in [(first, "old", &old), (second, "new", &new)] {
        let grant = ledger
            .reserve(&ask(holder, waiting))
            .await
            .expect("reserve");
        assert_eq!(grant.granted, 0, "a paused app was granted a slot");
    }
    while first
        .usage(&app, Duration::from_secs(60))
        .await
        .expect("usage")
        .paused_for
        .is_some()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let grant = second.reserve(&ask("new", &new)).await.expect("reserve");
    assert_eq!(
        grant.granted, 1,
        "3 free slots, 2 older waiters elsewhere: the newer holder got {} of 2 (expected 1)",
        grant.granted
    );
    assert!(
        grant.retry_in <= Duration::from_secs(5),
        "a holder held back for older waiters was told to retry in {:?}",
        grant.retry_in
    );
    let grant = first.reserve(&ask("old", &old)).await.expect("reserve");
    assert_eq!(
        grant.granted, 2,
        "the holder of the oldest waiters got {} of the 2 slots left",
        grant.granted
    );
}

async fn records<S: TokenStore + ?Sized>(store: &S, users: &Users) {
    unknown_user(store, users.id(0)).await;
    round_trip(store, users.id(1)).await;
    compare_and_save(store, users.id(2)).await;
    reauthorization_mark(store, users.id(3)).await;
    independent_users_and_list(store, users.id(4), users.id(5)).await;
    delete(store, users.id(10), users.id(11)).await;
}

async fn delete<S: TokenStore + ?Sized>(store: &S, user: UserId, other: UserId) {
    let now = SystemTime::now();
    store.put(&token(user, "gone"), now).await.expect("put");
    store.put(&token(other, "kept"), now).await.expect("put");
    assert!(
        store.delete(user).await.expect("delete"),
        "delete of a stored record said there was none"
    );
    assert!(
        store.load(user).await.expect("load").is_none(),
        "a deleted record can still be loaded"
    );
    assert!(
        !store
            .list()
            .await
            .expect("list")
            .iter()
            .any(|r| r.token.user_id == user),
        "a deleted record is still listed"
    );
    assert!(
        !store.delete(user).await.expect("delete"),
        "a second delete said there was a record"
    );
    assert!(
        store.load(other).await.expect("load").is_some(),
        "delete removed another user's record"
    );
}

/// Checks that two handles on one backend (two connections, pools or processes' worth of
/// state) see each other's writes and leases; panics naming the first rule broken.
pub async fn check_shared_stores<A: TokenStore + ?Sized, B: TokenStore + ?Sized>(a: &A, b: &B) {
    let users = Users::new();
    let user = users.id(0);
    let t1 = token(user, "shared-1");
    let now = SystemTime::now();
    a.put(&t1, now).await.expect("put through the first handle");
    stored_is(
        b,
        "load through the second handle",
        &t1,
        "a record put through one handle, loaded through the other",
    )
    .await;

    let t2 = token(user, "shared-2");
    assert!(
        b.compare_and_save(&t1.refresh_token, &t2, now)
            .await
            .expect("compare_and_save through the second handle"),
        "compare_and_save through the second handle did not see the pair put through the first"
    );
    stored_is(
        a,
        "load through the first handle",
        &t2,
        "a pair saved through one handle, loaded through the other",
    )
    .await;
    let stale = token(user, "shared-3");
    assert!(
        !saves(a, &t1.refresh_token, &stale, now).await,
        "compare_and_save through the first handle succeeded with a refresh token the second handle had already rotated"
    );

    let lease = acquired(a, user, LONG_LEASE, "try_lock through the first handle").await;
    assert_held(
        b,
        user,
        "the second handle acquired a lease the first handle holds",
    )
    .await;
    a.unlock(user, lease)
        .await
        .expect("unlock through the first handle");
    let lease = acquired(
        b,
        user,
        LONG_LEASE,
        "try_lock through the second handle after unlock",
    )
    .await;
    b.unlock(user, lease)
        .await
        .expect("unlock through the second handle");

    let racer = users.id(1);
    let attempts = join_all((0..RACERS).map(|i| {
        Box::pin(async move {
            if i % 2 == 0 {
                a.try_lock(racer, LONG_LEASE).await
            } else {
                b.try_lock(racer, LONG_LEASE).await
            }
        }) as Pin<Box<dyn Future<Output = _> + Send + '_>>
    }))
    .await;
    let winners = count_winners(attempts, "racing try_lock through two handles");
    assert_eq!(
        winners.len(),
        1,
        "{RACERS} lockers racing through two handles: expected exactly one Acquired, got {}",
        winners.len()
    );
    shared_budget(a, b).await;
    oldest_waiters_first(a, b).await;
}

async fn unknown_user<S: TokenStore + ?Sized>(store: &S, user: UserId) {
    let found = store
        .load(user)
        .await
        .expect("load of an unknown user must succeed (with None)");
    assert!(
        found.is_none(),
        "load of a user never stored returned a record"
    );
}

async fn round_trip<S: TokenStore + ?Sized>(store: &S, user: UserId) {
    let granted_at = SystemTime::now() - Duration::from_millis(1_234);
    let mut t = token(user, "round-trip");
    // Characters that trip up quoting and escaping, and a long token.
    t.access_token = Secret::new(format!(
        "a'\"\\%_*?[]{{}};--\u{e9}\u{1F600}{}",
        "x".repeat(600)
    ));
    t.refresh_token = Secret::new("r'\"\\%_*?[]:-- ,=&");
    t.scope = "user.info,user.metrics,user.activity".into();
    store.put(&t, granted_at).await.expect("put");
    let stored = stored_is(store, "load after put", &t, "put then load").await;
    assert!(
        !stored.needs_reauthorization,
        "a freshly put record is marked as needing re-authorization"
    );
    assert_close(stored.refreshed_at, granted_at, "refreshed_at after put");
}

async fn compare_and_save<S: TokenStore + ?Sized>(store: &S, user: UserId) {
    let now = SystemTime::now();
    let t1 = token(user, "cas-1");
    store.put(&t1, now).await.expect("put");

    let intruder = token(user, "cas-intruder");
    let wrong = Secret::new("not-the-stored-refresh-token");
    assert!(
        !saves(store, &wrong, &intruder, now).await,
        "compare_and_save succeeded although the spent refresh token is not the stored one"
    );
    stored_is(
        store,
        "load after a refused compare_and_save",
        &t1,
        "a refused compare_and_save changed the record",
    )
    .await;

    let t2 = token(user, "cas-2");
    let later = now + Duration::from_secs(3_600);
    assert!(
        store
            .compare_and_save(&t1.refresh_token, &t2, later)
            .await
            .expect("compare_and_save"),
        "compare_and_save with the stored refresh token returned false"
    );
    let stored = stored_is(
        store,
        "load after compare_and_save",
        &t2,
        "compare_and_save then load",
    )
    .await;
    assert_close(
        stored.refreshed_at,
        later,
        "refreshed_at after compare_and_save",
    );
    let again = token(user, "cas-3");
    assert!(
        !saves(store, &t1.refresh_token, &again, later).await,
        "compare_and_save succeeded twice with the same spent refresh token"
    );

    let nobody = UserId(user.0 + 1_000_000);
    let stranger = token(nobody, "cas-nobody");
    assert!(
        !saves(store, &t1.refresh_token, &stranger, now).await,
        "compare_and_save succeeded for a user with no record"
    );
    assert!(
        store.load(nobody).await.expect("load").is_none(),
        "compare_and_save created a record for a user that had none"
    );
}

async fn reauthorization_mark<S: TokenStore + ?Sized>(store: &S, user: UserId) {
    let now = SystemTime::now();
    let t1 = token(user, "mark-1");
    store.put(&t1, now).await.expect("put");

    store
        .mark_needs_reauthorization(user, &Secret::new("some-older-refresh-token"))
        .await
        .expect("mark_needs_reauthorization with a stale token must succeed (doing nothing)");
    let stored = loaded(store, user, "load after a stale mark").await;
    assert!(
        !stored.needs_reauthorization,
        "mark_needs_reauthorization marked a record whose refresh token is not the refused one"
    );

    store
        .mark_needs_reauthorization(user, &t1.refresh_token)
        .await
        .expect("mark_needs_reauthorization");
    let stored = stored_is(
        store,
        "load after mark_needs_reauthorization (the record must be kept)",
        &t1,
        "mark_needs_reauthorization changed the pair",
    )
    .await;
    assert!(
        stored.needs_reauthorization,
        "mark_needs_reauthorization with the stored refresh token did not mark the record"
    );

    let t2 = token(user, "mark-2");
    store.put(&t2, now).await.expect("put");
    let stored = stored_is(store, "load after put", &t2, "put over a marked record").await;
    assert!(
        !stored.needs_reauthorization,
        "put (a new authorization) did not clear the re-authorization mark"
    );

    store
        .mark_needs_reauthorization(UserId(user.0 + 1_000_000), &t2.refresh_token)
        .await
        .expect("mark_needs_reauthorization of an unknown user must succeed (doing nothing)");
}

async fn independent_users_and_list<S: TokenStore + ?Sized>(store: &S, a: UserId, b: UserId) {
    let now = SystemTime::now();
    let ta = token(a, "list-a");
    let tb = token(b, "list-b");
    store.put(&ta, now).await.expect("put");
    store.put(&tb, now).await.expect("put");
    store
        .mark_needs_reauthorization(b, &tb.refresh_token)
        .await
        .expect("mark_needs_reauthorization");
    let stored_a = stored_is(store, "load", &ta, "writing one user changed another").await;
    assert!(
        !stored_a.needs_reauthorization,
        "marking one user marked another"
    );

    let listed = store.list().await.expect("list");
    let find = |user: UserId| -> &StoredToken {
        listed
            .iter()
            .find(|r| r.token.user_id == user)
            .unwrap_or_else(|| panic!("list does not include user {user}, which was put"))
    };
    assert_same_token(&find(a).token, &ta, "list");
    assert_same_token(&find(b).token, &tb, "list");
    assert!(
        find(b).needs_reauthorization,
        "list lost the re-authorization mark"
    );
    assert_eq!(
        listed.iter().filter(|r| r.token.user_id == a).count(),
        1,
        "list returned user {a} more than once"
    );
}

async fn lock_basics<S: TokenStore + ?Sized>(store: &S, user: UserId, other: UserId) {
    let first = acquired(store, user, LONG_LEASE, "first try_lock").await;
    assert_held(
        store,
        user,
        "a second try_lock acquired a lease that is held (a store keeping the default try_lock \
         is for one process only: check it with check_single_process_store)",
    )
    .await;
    let theirs = acquired(
        store,
        other,
        LONG_LEASE,
        "try_lock of another user while one is held",
    )
    .await;

    store
        .unlock(
            user,
            Lease {
                owner: "someone-else".into(),
            },
        )
        .await
        .expect("unlock by the wrong owner must succeed (doing nothing)");
    store
        .unlock(user, theirs.clone())
        .await
        .expect("unlock with another user's lease must succeed (doing nothing)");
    assert_held(store, user, "unlock by the wrong owner released the lease").await;

    assert_ne!(
        first.owner, theirs.owner,
        "two leases got the same owner value"
    );
    store.unlock(user, first).await.expect("unlock");
    let again = acquired(store, user, LONG_LEASE, "try_lock after unlock").await;
    store.unlock(user, again).await.expect("unlock");
    store.unlock(other, theirs).await.expect("unlock");
}

async fn lease_expiry<S: TokenStore + ?Sized>(store: &S, user: UserId) {
    let short = acquired(store, user, SHORT_LEASE, "try_lock with a 300 ms lease").await;
    assert_held(
        store,
        user,
        "a 300 ms lease was not held right after it was taken",
    )
    .await;
    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(200)).await;
    let successor = acquired(
        store,
        user,
        LONG_LEASE,
        "try_lock 500 ms after a 300 ms lease was taken (it must have lapsed)",
    )
    .await;
    store
        .unlock(user, short)
        .await
        .expect("unlock of a lapsed lease must succeed (doing nothing)");
    assert_held(
        store,
        user,
        "the holder of a lapsed lease released its successor's lease",
    )
    .await;
    store.unlock(user, successor).await.expect("unlock");
}

async fn racing_lockers<S: TokenStore + ?Sized>(store: &S, user: UserId) {
    let attempts = join_all((0..RACERS).map(|_| store.try_lock(user, LONG_LEASE))).await;
    let winners = count_winners(attempts, "racing try_lock");
    assert_eq!(
        winners.len(),
        1,
        "{RACERS} concurrent try_lock calls for one user: expected exactly one Acquired, got {}",
        winners.len()
    );
    for lease in winners {
        store.unlock(user, lease).await.expect("unlock");
    }
}

fn count_winners(attempts: Vec<Result<LockAttempt, crate::Error>>, what: &str) -> Vec<Lease> {
    attempts
        .into_iter()
        .filter_map(|attempt| match attempt {
            Ok(LockAttempt::Acquired(lease)) => Some(lease),
            Ok(LockAttempt::Held) => None,
            Err(error) => panic!("{what} failed: {error}"),
        })
        .collect()
}

async fn acquired<S: TokenStore + ?Sized>(
    store: &S,
    user: UserId,
    lease: Duration,
    what: &str,
) -> Lease {
    match store.try_lock(user, lease).await {
        Ok(LockAttempt::Acquired(lease)) => lease,
        Ok(LockAttempt::Held) => panic!("{what}: expected Acquired, got Held"),
        Err(error) => panic!("{what} failed: {error}"),
    }
}

async fn loaded<S: TokenStore + ?Sized>(store: &S, user: UserId, what: &str) -> StoredToken {
    match store.load(user).await {
        Ok(Some(record)) => record,
        Ok(None) => panic!("{what}: user {user} has no record"),
        Err(error) => panic!("{what} failed: {error}"),
    }
}

/// Loads the record of `expected`'s user (the load named `load`) and checks that it holds
/// `expected` (`what`); returns it.
async fn stored_is<S: TokenStore + ?Sized>(
    store: &S,
    load: &str,
    expected: &Token,
    what: &str,
) -> StoredToken {
    let stored = loaded(store, expected.user_id, load).await;
    assert_same_token(&stored.token, expected, what);
    stored
}

/// Whether `compare_and_save(spent, token, at)` saved; failing instead of answering is a panic.
async fn saves<S: TokenStore + ?Sized>(
    store: &S,
    spent: &Secret,
    token: &Token,
    at: SystemTime,
) -> bool {
    let saved = store.compare_and_save(spent, token, at).await;
    saved.expect("compare_and_save must answer true or false, not fail")
}

/// Asserts that `user`'s lease is held (a `try_lock` answers `Held`); `why` if it is not.
async fn assert_held<S: TokenStore + ?Sized>(store: &S, user: UserId, why: &str) {
    let attempt = store.try_lock(user, LONG_LEASE).await.expect("try_lock");
    assert_eq!(attempt, LockAttempt::Held, "{why}");
}

/// Compares two pairs, saying which field differs without printing any token.
fn assert_same_token(stored: &Token, expected: &Token, what: &str) {
    assert_eq!(stored.user_id, expected.user_id, "{what}: user id differs");
    assert!(
        stored.access_token == expected.access_token,
        "{what}: access token differs from the one written"
    );
    assert!(
        stored.refresh_token == expected.refresh_token,
        "{what}: refresh token differs from the one written"
    );
    assert_eq!(stored.scope, expected.scope, "{what}: scope differs");
    assert_close(
        stored.expires_at,
        expected.expires_at,
        &format!("{what}: expires_at"),
    );
}

fn assert_close(stored: SystemTime, expected: SystemTime, what: &str) {
    let diff = stored
        .duration_since(expected)
        .or_else(|_| expected.duration_since(stored))
        .unwrap_or_default();
    assert!(
        diff < TIME_TOLERANCE,
        "{what}: stored {stored:?}, written {expected:?} (more than 1 s apart)"
    );
}

/// A distinct pair for `user`, expiring in about 3 h (with a sub-second part).
fn token(user: UserId, tag: &str) -> Token {
    Token {
        user_id: user,
        access_token: Secret::new(format!("access-{tag}-{user}")),
        refresh_token: Secret::new(format!("refresh-{tag}-{user}")),
        expires_at: SystemTime::now() + Duration::from_millis(10_800_000 + 456),
        scope: "user.metrics".into(),
    }
}

/// A block of random user ids for one run.
struct Users(u64);

impl Users {
    fn new() -> Self {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        // Above 10^12 (no real Withings user) and below 2^52 (fits every backend's integers).
        Users(1_000_000_000_000 + (u64::from_le_bytes(bytes) >> 13))
    }

    fn id(&self, n: u64) -> UserId {
        UserId(self.0 + n)
    }
}

/// Polls every future in one task until all are done (no spawning: the store is borrowed).
async fn join_all<F: Future + Unpin>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<F>> = futures.into_iter().map(Some).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut all = true;
        for (slot, out) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(future) = slot {
                match Pin::new(future).poll(cx) {
                    Poll::Ready(value) => {
                        *out = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => all = false,
                }
            }
        }
        if all { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    done.into_iter().flatten().collect()
}
