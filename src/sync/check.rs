//! `testkit::check_sync_state`: the [`SyncState`] contract as a test users run on their store.

use std::time::Duration;

use super::state::{BackfillProgress, Commit, InboxEntry, SyncState, VersionEntry};
use super::stream::SyncStream;
use crate::store::TokenStore;
use crate::token::UserId;

fn fresh_user() -> UserId {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("the operating system's random source");
    UserId(1_000_000_000_000 + u64::from(u32::from_le_bytes(b)))
}

fn entry(id: &str, version: i64, deleted: bool, at: i64) -> VersionEntry {
    VersionEntry {
        id: id.to_owned(),
        version,
        deleted,
        at: Some(at),
    }
}

/// `user`'s pending inbox entries, oldest first (of the first 1,000 of every user's).
async fn inbox_of(state: &dyn SyncState, user: UserId) -> Vec<InboxEntry> {
    let mut entries = state.inbox(1_000).await.unwrap();
    entries.retain(|e| e.user == user);
    entries
}

/// A commit of `versions` alone.
fn versions(versions: &[VersionEntry]) -> Commit<'_> {
    Commit {
        versions,
        ..Commit::default()
    }
}

fn sync_of<S: TokenStore + ?Sized>(store: &S) -> &dyn SyncState {
    store
        .sync_state()
        .expect("TokenStore::sync_state returns None: this store keeps no sync state")
}

/// Checks the sync-state contract through two handles on one backend (pass the same store
/// twice for a store only one process uses); panics naming the rule that broke.
///
/// Checked: a fresh (user, stream) is empty; one live lease at a time, across handles, with
/// a fence that rises at every taking; only the holder commits, and a lease taken over after
/// its holder stopped renewing (a 300 ms lease) fences the old holder out; the cursor only
/// rises; versions are kept only when they rank higher (`(version, deleted)`); `known` lists
/// the live records of a window; the inbox coalesces a burst per (user, stream), keeps an
/// entry a notification joined after it was read, and empties on ack; stop drops the inbox
/// and is visible from the other handle; forget removes everything.
pub async fn check_sync_state<A: TokenStore + ?Sized, B: TokenStore + ?Sized>(a: &A, b: &B) {
    let (a, b) = (sync_of(a), sync_of(b));
    let user = fresh_user();
    let s = SyncStream::Measures;
    let long = Duration::from_secs(60);

    assert_eq!(
        a.load(user, s).await.unwrap(),
        Default::default(),
        "a fresh stream is empty"
    );

    // Leases and fences.
    let first = a
        .lease(user, s, long)
        .await
        .unwrap()
        .expect("a free lease is granted");
    assert!(
        b.lease(user, s, long).await.unwrap().is_none(),
        "a held lease is not granted twice"
    );
    assert!(
        b.lease(user, SyncStream::Activity, long)
            .await
            .unwrap()
            .is_some(),
        "streams lease independently"
    );
    a.release(&first).await.unwrap();
    let second = b
        .lease(user, s, long)
        .await
        .unwrap()
        .expect("a released lease is granted");
    assert!(second.fence > first.fence, "every taking raises the fence");
    assert!(
        !a.commit(
            &first,
            long,
            Commit {
                cursor: Some(5),
                ..Commit::default()
            }
        )
        .await
        .unwrap(),
        "a former holder cannot commit"
    );

    // Cursor only rises.
    let c = |cursor| Commit {
        cursor: Some(cursor),
        ..Commit::default()
    };
    assert!(
        b.commit(&second, long, c(100)).await.unwrap(),
        "the holder commits"
    );
    assert!(b.commit(&second, long, c(50)).await.unwrap());
    assert_eq!(
        a.load(user, s).await.unwrap().cursor,
        Some(100),
        "the cursor never goes back"
    );
    let progress = BackfillProgress {
        next_end: 80,
        horizon: 10,
    };
    let commit = Commit {
        cursor: Some(120),
        backfill: Some(progress),
        swept_at: Some(7),
        versions: &[],
    };
    assert!(b.commit(&second, long, commit).await.unwrap());
    let st = a.load(user, s).await.unwrap();
    assert_eq!(
        (st.cursor, st.backfill, st.swept_at),
        (Some(120), Some(progress), Some(7))
    );
    assert_eq!(st.fence, second.fence, "the stored fence is the holder's");

    // Versions only go up.
    let v = [entry("g1", 10, false, 1_000), entry("g2", 20, false, 2_000)];
    assert!(b.commit(&second, long, versions(&v)).await.unwrap());
    let lower = [entry("g1", 9, false, 1_000), entry("g2", 20, true, 2_000)];
    assert!(b.commit(&second, long, versions(&lower)).await.unwrap());
    let ids = ["g1".to_owned(), "g2".to_owned(), "g3".to_owned()];
    let got = a.versions(user, s, &ids).await.unwrap();
    assert_eq!(
        got[0].as_ref().map(VersionEntry::rank),
        Some((10, false)),
        "a lower version is ignored"
    );
    assert_eq!(
        got[1].as_ref().map(VersionEntry::rank),
        Some((20, true)),
        "a delete ranks above its upsert"
    );
    assert_eq!(got[2], None);
    let known = a.known(user, s, 0, 5_000).await.unwrap();
    assert_eq!(
        known.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        ["g1"],
        "known lists live records"
    );
    assert!(
        a.known(user, s, 1_001, 5_000).await.unwrap().is_empty(),
        "known keeps to its window"
    );

    // A lapsed lease is taken over and its holder fenced out.
    let short = Duration::from_millis(300);
    let other = fresh_user();
    let dead = a.lease(other, s, short).await.unwrap().expect("granted");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let heir = b
        .lease(other, s, long)
        .await
        .unwrap()
        .expect("a lapsed lease is taken over");
    assert!(heir.fence > dead.fence);
    assert!(
        !a.commit(&dead, long, c(1)).await.unwrap(),
        "a holder whose lease was taken over cannot commit"
    );
    assert!(b.commit(&heir, long, c(1)).await.unwrap());

    // Inbox: coalescing, ack only of what was read.
    a.inbox_push(user, s, 1).await.unwrap();
    b.inbox_push(user, s, 2).await.unwrap();
    a.inbox_push(user, SyncStream::Workouts, 3).await.unwrap();
    let pending = inbox_of(b, user).await;
    assert_eq!(
        pending.len(),
        2,
        "a burst for one (user, stream) is one entry"
    );
    assert_eq!(
        (pending[0].stream, pending[0].count),
        (s, 2),
        "oldest first, counting the burst"
    );
    a.inbox_push(user, s, 4).await.unwrap();
    assert!(
        !b.inbox_ack(&pending[0]).await.unwrap(),
        "an entry joined after reading stays"
    );
    let again = inbox_of(a, user).await;
    assert_eq!(again.len(), 2);
    assert!(
        b.inbox_ack(&again[0]).await.unwrap(),
        "an unchanged entry is acked"
    );
    assert!(a.inbox_depth().await.unwrap() >= 1);

    // Stop, resume, forget.
    a.stop(user, "unlink").await.unwrap();
    assert_eq!(b.stopped(user).await.unwrap().as_deref(), Some("unlink"));
    assert!(
        inbox_of(b, user).await.is_empty(),
        "stopping drops the user's inbox"
    );
    assert!(b.resume(user).await.unwrap());
    assert_eq!(a.stopped(user).await.unwrap(), None);
    a.inbox_push(user, s, 5).await.unwrap();
    b.forget(user).await.unwrap();
    assert_eq!(
        a.load(user, s).await.unwrap(),
        Default::default(),
        "forget removes cursors"
    );
    assert_eq!(
        a.versions(user, s, &ids).await.unwrap(),
        vec![None, None, None],
        "and versions"
    );
    assert!(inbox_of(a, user).await.is_empty(), "and the inbox");
    assert!(a.streams(user).await.unwrap().is_empty());
    assert!(
        a.lease(user, s, long).await.unwrap().is_some(),
        "a forgotten user's lease is free"
    );
}
