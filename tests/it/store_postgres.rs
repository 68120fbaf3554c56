//! `PostgresStore` against a real PostgreSQL: the conformance kit, two pools on one database,
//! bad rows, and an unreachable server. Each run uses its own table (dropped at the end).

use std::time::{Duration, SystemTime};

use crate::store_support::{
    assert_bad_records_reported, assert_no_lease_from_a_dead_store, postgres_unreachable,
    postgres_url, random_hex, token,
};
use tower_withings::store::{LockAttempt, PostgresStore, TokenStore};
use tower_withings::testkit::{check_shared_stores, check_store};
use tower_withings::{Error, UserId};

/// A store on a fresh table, or `None` (after a loud skip) when PostgreSQL is not running
/// outside CI.
async fn fresh_store() -> Option<(PostgresStore, String)> {
    let table = format!("withings_test_{}", random_hex(6));
    match PostgresStore::builder(&postgres_url())
        .table(&table)
        .build()
        .await
    {
        Ok(store) => Some((store, table)),
        Err(error) => {
            postgres_unreachable(&error);
            None
        }
    }
}

/// Drops the run's tables.
async fn drop_tables(store: &PostgresStore) {
    let client = crate::store_support::postgres_client().await;
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS \"{0}\"; DROP TABLE IF EXISTS \"{0}_leases\";",
            store.table()
        ))
        .await
        .expect("drop the test tables");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    let Some((store, _)) = fresh_store().await else {
        return;
    };
    check_store(&store).await;
    drop_tables(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_on_one_database_conform() {
    let Some((a, table)) = fresh_store().await else {
        return;
    };
    // A second, independent pool on the same table, as another replica would have.
    let b = PostgresStore::builder(&postgres_url())
        .table(&table)
        .max_connections(4)
        .build()
        .await
        .unwrap();
    check_shared_stores(&a, &b).await;
    drop_tables(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_reported_per_user_and_do_not_break_others() {
    let Some((store, table)) = fresh_store().await else {
        return;
    };
    store
        .put(&token(10, "good"), SystemTime::now())
        .await
        .unwrap();
    let client = crate::store_support::postgres_client().await;
    let insert = format!(
        "INSERT INTO \"{table}\" (user_id, access_token, refresh_token, expires_at, scope,
                                  needs_reauthorization, refreshed_at, format)
         VALUES ($1, $2, $3, $4::TEXT::TIMESTAMPTZ, 's', FALSE, now(), $5)"
    );
    let rows: [(i64, &str, &str, i16); 4] = [
        (11, "secret-refresh-11", "now", 99), // a newer record format
        (12, "", "now", 1),                   // an empty refresh token
        (13, "secret-refresh-13", "infinity", 1), // an expiry that is no time
        (-5, "secret-refresh-x", "now", 1),   // not a Withings user id
    ];
    for (user, refresh, expires, format) in rows {
        client
            .execute(
                &insert,
                &[&user, &"secret-access", &refresh, &expires, &format],
            )
            .await
            .unwrap();
    }
    assert_bad_records_reported(&store, &[11, 12, 13], store.list_all().await.unwrap()).await;
    drop(client);
    drop_tables(&store).await;
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_never_a_lease() {
    // Nothing listens on port 1.
    let url = "postgres://postgres@127.0.0.1:1/test";
    match PostgresStore::connect(url).await {
        Err(Error::Store { .. }) => {}
        other => panic!("expected a store error, got {other:?}"),
    }
    let store = PostgresStore::builder(url)
        .create_tables(false)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    assert_no_lease_from_a_dead_store(&store).await;
    assert!(matches!(
        store.put(&token(1, "x"), SystemTime::now()).await,
        Err(Error::Store { .. })
    ));
}

#[tokio::test]
async fn urls_and_table_names_are_checked_without_echoing_secrets() {
    let error = PostgresStore::connect("postgres://user:hunter2@[bad")
        .await
        .unwrap_err();
    assert!(!error.to_string().contains("hunter2"), "{error}");
    let error = PostgresStore::builder(&postgres_url())
        .table("x; DROP TABLE y")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Store { .. }));
    let sql = PostgresStore::schema_sql("my_tokens").unwrap();
    assert!(sql.contains("CREATE TABLE IF NOT EXISTS \"my_tokens\""));
    assert!(sql.contains("\"my_tokens_leases\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_tables_concurrently_is_safe() {
    let Some((first, table)) = fresh_store().await else {
        return;
    };
    drop_tables(&first).await;
    let url = postgres_url();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (url, table) = (url.clone(), table.clone());
        tasks.push(tokio::spawn(async move {
            PostgresStore::builder(&url).table(&table).build().await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("concurrent table creation");
    }
    assert!(matches!(
        first.try_lock(UserId(3), Duration::from_secs(5)).await,
        Ok(LockAttempt::Acquired(_))
    ));
    drop_tables(&first).await;
}
