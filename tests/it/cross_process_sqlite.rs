//! One refresh per user across independent `WithingsAuth` instances and OS processes sharing
//! one SQLite file; a killed lease holder and a killed writer.

use std::time::{Duration, SystemTime};

use crate::cross_process_common::{
    Backend, ChildProcess, child_role, dead_lease_holder_is_outlived,
    refresh_once_across_instances, refresh_once_across_processes,
    short_lived_tokens_refresh_once_across_processes,
};
use crate::store_support::{TempDir, random_user};
use tower_withings::store::{LockAttempt, SqliteStore, TokenStore};
use tower_withings::{Secret, Token, UserId};

/// The entry point of child processes; a no-op when run as a normal test.
const CHILD: &str = "cross_process_sqlite::child_process_entry";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_entry() {
    child_role().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_instances_refresh_once() {
    let dir = TempDir::new("xp-sqlite");
    refresh_once_across_instances(&Backend::sqlite(&dir), 4, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_os_processes_refresh_once() {
    let dir = TempDir::new("xp-sqlite");
    refresh_once_across_processes(&Backend::sqlite(&dir), CHILD, 3, 8).await;
}

/// Eight processes, tokens living 3 s: one refresh, the others adopt the stored pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_os_processes_refresh_short_lived_tokens_once() {
    let dir = TempDir::new("xp-sqlite");
    short_lived_tokens_refresh_once_across_processes(&Backend::sqlite(&dir), CHILD, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dead_lease_holder_is_outlived() {
    let dir = TempDir::new("xp-sqlite");
    dead_lease_holder_is_outlived(&Backend::sqlite(&dir), CHILD).await;
}

/// A process killed in the middle of a write transaction leaves the last committed pair, and
/// no lock behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_writer_leaves_the_committed_pair() {
    let dir = TempDir::new("xp-sqlite");
    let backend = Backend::sqlite(&dir);
    let path = backend.sqlite_path().unwrap();
    let store = SqliteStore::open(path).await.unwrap();
    let user = random_user();
    let token = Token {
        user_id: UserId(user),
        access_token: Secret::new("committed-access"),
        refresh_token: Secret::new("committed-refresh"),
        expires_at: SystemTime::now() + Duration::from_secs(10_800),
        scope: "user.metrics".into(),
    };
    store.put(&token, SystemTime::now()).await.unwrap();

    let writer = ChildProcess::spawn(CHILD, "hold-write", &backend, user, &[]);
    writer
        .line_starting("WRITE-HELD", Duration::from_secs(30))
        .await;
    writer.kill();

    let stored = store.load(UserId(user)).await.unwrap().unwrap();
    assert!(
        stored.token.refresh_token == token.refresh_token,
        "rolled back"
    );
    assert!(matches!(
        store.try_lock(UserId(user), Duration::from_secs(5)).await,
        Ok(LockAttempt::Acquired(_))
    ));
    let reopened = SqliteStore::open(path).await.unwrap();
    assert!(reopened.load(UserId(user)).await.unwrap().is_some());
}
