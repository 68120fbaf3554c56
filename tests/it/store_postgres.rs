//! `PostgresStore` against a real PostgreSQL: the conformance kit, two pools on one database,
//! bad rows, and an unreachable server. Each run uses its own table (dropped at the end).

use std::time::{Duration, SystemTime};

use crate::store_support::{
    Fresh, assert_bad_records_reported, assert_no_lease_from_a_dead_store, fresh_stores_conform,
    fresh_with_good_record, postgres_url, token,
};
use tower_withings::store::{LockAttempt, PostgresStore, Timeouts, TokenStore};
use tower_withings::{Error, UserId};

/// Alone, and with a second, independent pool on the same table, as another replica would
/// have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms_alone_and_on_two_pools() {
    fresh_stores_conform::<PostgresStore>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_reported_per_user_and_do_not_break_others() {
    let Some(store) = fresh_with_good_record::<PostgresStore>().await else {
        return;
    };
    let table = store.table().to_owned();
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
    store.clean().await;
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
        .timeouts(Timeouts::new(
            Duration::from_secs(1),
            Duration::from_secs(5),
        ))
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
    let Some(first) = PostgresStore::fresh().await else {
        return;
    };
    let table = first.table().to_owned();
    first.clean().await;
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
    first.clean().await;
}
