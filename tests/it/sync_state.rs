//! The sync state's contract (`testkit::check_sync_state`) on every store of the crate.

use crate::store_support::TempDir;
use tower_withings::store::MemoryStore;
use tower_withings::testkit::check_sync_state;

#[tokio::test]
async fn memory_sync_state_conforms() {
    let store = MemoryStore::new();
    check_sync_state(&store, &store).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sync_state_conforms_across_two_instances() {
    use tower_withings::store::SqliteStore;
    let dir = TempDir::new("sync-state");
    let path = dir.file("tokens.sqlite3");
    let a = SqliteStore::open(&path).await.unwrap();
    let b = SqliteStore::open(&path).await.unwrap();
    check_sync_state(&a, &b).await;
}
