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

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sync_state_conforms_across_two_handles() {
    use crate::store_support::{postgres_unreachable, postgres_url, random_hex};
    use tower_withings::store::PostgresStore;
    let table = format!("withings_sync_test_{}", random_hex(6));
    let open = || {
        PostgresStore::builder(&postgres_url())
            .table(&table)
            .build()
    };
    let a = match open().await {
        Ok(store) => store,
        Err(error) => return postgres_unreachable(&error),
    };
    let b = open().await.unwrap();
    check_sync_state(&a, &b).await;
    let client = crate::store_support::postgres_client().await;
    for suffix in [
        "", "_leases", "_budget", "_pause", "_sync_c", "_sync_v", "_sync_i", "_sync_x",
    ] {
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{table}{suffix}\""))
            .await
            .unwrap();
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sync_state_conforms_across_two_handles() {
    use crate::store_support::{random_hex, redis_unreachable, redis_url};
    use tower_withings::store::RedisStore;
    let prefix = format!("withings-sync-test-{}:", random_hex(6));
    let open = || {
        RedisStore::builder(&redis_url())
            .prefix(prefix.clone())
            .connect()
    };
    let a = match open().await {
        Ok(store) => store,
        Err(error) => return redis_unreachable(&error),
    };
    let b = open().await.unwrap();
    check_sync_state(&a, &b).await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}
