//! The sync state's contract (`testkit::check_sync_state`) on every store of the crate.

use crate::store_support::{TempDir, two_fresh_handles_keep_sync_state, two_sqlite_instances};
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
    let dir = TempDir::new("sync-state");
    let (a, b) = two_sqlite_instances(&dir).await;
    check_sync_state(&a, &b).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sync_state_conforms_across_two_handles() {
    two_fresh_handles_keep_sync_state::<tower_withings::store::PostgresStore>().await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sync_state_conforms_across_two_handles() {
    two_fresh_handles_keep_sync_state::<tower_withings::store::RedisStore>().await;
}
