//! `SqliteStore`: the conformance kit, file permissions and WAL, several instances on one file,
//! bad rows, and a busy or unusable database.

use std::time::{Duration, SystemTime};

use crate::store_support::{
    TempDir, assert_bad_records_reported, put_good_record, token, two_sqlite_instances,
};
use rusqlite::{Connection, params};
use tower_withings::store::{LockAttempt, SqliteStore, TokenStore};
use tower_withings::testkit::{check_shared_stores, check_store};
use tower_withings::{Error, Secret, UserId};

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = TempDir::new("sqlite");
    let store = SqliteStore::open(dir.file("tokens.sqlite3")).await.unwrap();
    check_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_file_conform() {
    let dir = TempDir::new("sqlite");
    let (a, b) = two_sqlite_instances(&dir).await;
    check_shared_stores(&a, &b).await;
    // And each instance alone, while the other is open.
    check_store(&b).await;
}

#[cfg(unix)]
#[tokio::test]
async fn file_is_private_and_in_wal_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("sqlite");
    let path = dir.file("tokens.sqlite3");
    let store = SqliteStore::open(&path).await.unwrap();
    store.put(&token(1, "a"), SystemTime::now()).await.unwrap();
    for file in [path.clone(), dir.file("tokens.sqlite3-wal")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    }
    let raw = Connection::open(&path).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = raw
        .query_row("SELECT version FROM withings_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
}

#[tokio::test]
async fn records_survive_reopening() {
    let dir = TempDir::new("sqlite");
    let path = dir.file("tokens.sqlite3");
    let t = token(42, "persist");
    let granted = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.put(&t, granted).await.unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let stored = store.load(UserId(42)).await.unwrap().unwrap();
    assert!(stored.token.refresh_token == t.refresh_token);
    assert_eq!(stored.refreshed_at, granted, "millisecond precision");
}

#[tokio::test]
async fn bad_rows_are_reported_per_user_and_do_not_break_others() {
    let dir = TempDir::new("sqlite");
    let path = dir.file("tokens.sqlite3");
    let store = SqliteStore::open(&path).await.unwrap();
    put_good_record(&store).await;
    let raw = Connection::open(&path).unwrap();
    let insert = "INSERT INTO withings_tokens (user_id, access_token, refresh_token, expires_at_ms,
                  scope, needs_reauthorization, refreshed_at_ms, format)
                  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
    // A time that is text.
    raw.execute(
        insert,
        params![
            11,
            "secret-access-11",
            "secret-refresh-11",
            "soon",
            "s",
            0,
            0,
            1
        ],
    )
    .unwrap();
    // A newer record format.
    raw.execute(
        insert,
        params![12, "secret-access-12", "secret-refresh-12", 1, "s", 0, 0, 2],
    )
    .unwrap();
    // A token that is a blob of non-UTF-8 bytes.
    raw.execute(
        insert,
        params![13, "secret-access-13", vec![0xffu8, 0xfe], 1, "s", 0, 0, 1],
    )
    .unwrap();
    // A re-authorization mark that is neither 0 nor 1.
    raw.execute(
        insert,
        params![14, "secret-access-14", "secret-refresh-14", 1, "s", 7, 0, 1],
    )
    .unwrap();
    // A row whose user id cannot be a Withings user.
    raw.execute(
        insert,
        params![-5, "secret-access-x", "secret-refresh-x", 1, "s", 0, 0, 1],
    )
    .unwrap();

    assert_bad_records_reported(&store, &[11, 12, 13, 14], store.list_all().await.unwrap()).await;
    // The good user still refreshes normally.
    let good = store.load(UserId(10)).await.unwrap().unwrap();
    let next = token(10, "good-2");
    let saved = store.compare_and_save(&good.token.refresh_token, &next, SystemTime::now());
    assert!(saved.await.unwrap());

    // A new authorization repairs a bad row.
    store
        .put(&token(11, "repaired"), SystemTime::now())
        .await
        .unwrap();
    assert!(store.load(UserId(11)).await.unwrap().is_some());
}

#[tokio::test]
async fn a_file_from_a_newer_schema_is_refused() {
    let dir = TempDir::new("sqlite");
    let path = dir.file("tokens.sqlite3");
    drop(SqliteStore::open(&path).await.unwrap());
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE withings_schema SET version = 2", [])
        .unwrap();
    match SqliteStore::open(&path).await {
        Err(error @ Error::Store { .. }) => {
            assert!(error.to_string().contains("newer"), "{error}");
        }
        other => panic!("expected a store error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let dir = TempDir::new("sqlite");
    let path = dir.file("tokens.sqlite3");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    match SqliteStore::open(&path).await {
        Err(Error::Store { operation, .. }) => assert_eq!(operation, "open"),
        other => panic!("expected a store error, got {other:?}"),
    }
    let missing_dir = dir.file("no/such/dir/tokens.sqlite3");
    assert!(matches!(
        SqliteStore::open(&missing_dir).await,
        Err(Error::Store { .. })
    ));
}

#[tokio::test]
async fn a_locked_database_is_an_error_never_a_lease() {
    let dir = TempDir::new("sqlite");
    let path = dir.file("tokens.sqlite3");
    let store = SqliteStore::builder(&path)
        .busy_timeout(Duration::from_millis(200))
        .open()
        .await
        .unwrap();
    store.put(&token(5, "a"), SystemTime::now()).await.unwrap();
    // Another process holds the write lock and does not let go.
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    match store.try_lock(UserId(5), Duration::from_secs(30)).await {
        Err(Error::Store { operation, .. }) => assert_eq!(operation, "lock"),
        other => panic!("expected Err(Store) while the database is locked, got {other:?}"),
    }
    assert!(matches!(
        store.put(&token(5, "b"), SystemTime::now()).await,
        Err(Error::Store { .. })
    ));
    blocker.execute_batch("ROLLBACK").unwrap();

    // Once the lock is gone, everything works again and nothing was half-written.
    assert!(matches!(
        store.try_lock(UserId(5), Duration::from_secs(30)).await,
        Ok(LockAttempt::Acquired(_))
    ));
    let stored = store.load(UserId(5)).await.unwrap().unwrap();
    assert!(stored.token.refresh_token == Secret::new("refresh-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_instances_racing_for_one_lease() {
    let dir = TempDir::new("sqlite");
    let path = dir.file("tokens.sqlite3");
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(SqliteStore::open(&path).await.unwrap());
    }
    let mut tasks = Vec::new();
    for store in &stores {
        for _ in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.try_lock(UserId(77), Duration::from_secs(30)).await
            }));
        }
    }
    let mut acquired = 0;
    for task in tasks {
        if let LockAttempt::Acquired(_) = task.await.unwrap().unwrap() {
            acquired += 1;
        }
    }
    assert_eq!(acquired, 1, "32 lockers on 4 instances: exactly one lease");
}
