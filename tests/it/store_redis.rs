//! `RedisStore` against a real Redis: the conformance kit, two connections, garbage keys, and
//! a server that is unreachable or dies. Each run uses its own key prefix (deleted at the end).

use std::time::{Duration, SystemTime};

use crate::store_support::{
    Fresh, assert_bad_records_reported, assert_no_lease_from_a_dead_store, fresh_stores_conform,
    fresh_with_good_record, redis_connection, token,
};
use redis::AsyncCommands;
use tower_withings::store::{LockAttempt, RedisStore, Timeouts, TokenStore};
use tower_withings::{Error, Secret, UserId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conforms_alone_and_on_two_connections() {
    fresh_stores_conform::<RedisStore>().await;
}

#[tokio::test]
async fn key_names_are_documented_ones() {
    let Some(store) = RedisStore::fresh().await else {
        return;
    };
    let p = store.prefix().to_owned();
    // The lease's key, seen from outside while held.
    let attempt = store
        .try_lock(UserId(46865875), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(attempt, LockAttempt::Acquired(_)), "{attempt:?}");
    let mut conn = redis_connection().await;
    let held: bool = conn.exists(format!("{p}lock:46865875")).await.unwrap();
    assert!(held, "the lease is `{p}lock:<user>`");
    assert_eq!(RedisStore::DEFAULT_PREFIX, "withings:");

    store
        .put(
            &token(7, "layout"),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_234),
        )
        .await
        .unwrap();
    let kind: String = redis::cmd("TYPE")
        .arg(format!("{p}token:7"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "hash");
    let format: String = conn.hget(format!("{p}token:7"), "format").await.unwrap();
    assert_eq!(format, "1");
    let refreshed: String = conn
        .hget(format!("{p}token:7"), "refreshed_at_ms")
        .await
        .unwrap();
    assert_eq!(refreshed, "1234");

    let LockAttempt::Acquired(lease) = store
        .try_lock(UserId(7), Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("lease not acquired");
    };
    let owner: String = conn.get(format!("{p}lock:7")).await.unwrap();
    assert_eq!(owner, lease.owner);
    let ttl: i64 = conn.pttl(format!("{p}lock:7")).await.unwrap();
    assert!(ttl > 25_000 && ttl <= 30_000, "PX lease, got pttl {ttl}");
    store.unlock(UserId(7), lease).await.unwrap();
    let exists: bool = conn.exists(format!("{p}lock:7")).await.unwrap();
    assert!(!exists, "unlock deletes the lock key");
    store.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_keys_are_reported_per_user_and_do_not_break_others() {
    let Some(store) = fresh_with_good_record::<RedisStore>().await else {
        return;
    };
    let p = store.prefix().to_owned();
    // A hash naming another user: a record whose user id is then overwritten.
    store
        .put(&token(14, "moved"), SystemTime::now())
        .await
        .unwrap();
    let mut conn = redis_connection().await;
    let key = |suffix: &str| format!("{p}token:{suffix}");
    let newer_format = [
        ("format", "9"),
        ("user_id", "12"),
        ("refresh_token", "secret-refresh-12"),
    ];
    let _: () = redis::pipe()
        .set(key("11"), "secret-garbage") // a string where a hash belongs
        .hset_multiple(key("12"), &newer_format) // a hash of a newer format
        .hset(key("13"), "format", "1") // a hash missing most fields
        .hset(key("14"), "user_id", "99") // the hash naming another user
        .set(key("abc"), "x") // a key whose suffix is not a user id: ignored
        .rpush(key("15"), "x") // a list where a hash belongs
        .query_async(&mut conn)
        .await
        .unwrap();

    match store
        .compare_and_save(&Secret::new("x"), &token(11, "new"), SystemTime::now())
        .await
    {
        Err(Error::CorruptRecord { user, .. }) => assert_eq!(user, UserId(11)),
        other => panic!("expected CorruptRecord, got {other:?}"),
    }
    // Marking a garbage key does nothing and does not fail.
    store
        .mark_needs_reauthorization(UserId(11), &Secret::new("x"))
        .await
        .unwrap();

    assert_bad_records_reported(
        &store,
        &[11, 12, 13, 14, 15],
        store.list_all().await.unwrap(),
    )
    .await;

    // A new authorization replaces garbage.
    store
        .put(&token(11, "repaired"), SystemTime::now())
        .await
        .unwrap();
    assert!(store.load(UserId(11)).await.unwrap().is_some());

    // A lock key without expiry is foreign: reported, not waited on forever.
    let _: () = conn.set(format!("{p}lock:10"), "someone").await.unwrap();
    match store.try_lock(UserId(10), Duration::from_secs(5)).await {
        Err(Error::CorruptRecord { user, .. }) => assert_eq!(user, UserId(10)),
        other => panic!("expected CorruptRecord, got {other:?}"),
    }
    // A lock key of the wrong type held by someone else: unlock leaves it alone.
    let _: () = conn.del(format!("{p}lock:10")).await.unwrap();
    let _: () = conn.hset(format!("{p}lock:10"), "a", "b").await.unwrap();
    store
        .unlock(
            UserId(10),
            tower_withings::store::Lease { owner: "x".into() },
        )
        .await
        .unwrap();
    store.clean().await;
}

#[tokio::test]
async fn an_unreachable_server_is_an_error() {
    match RedisStore::builder("redis://127.0.0.1:1")
        .timeouts(Timeouts::new(
            Duration::from_millis(500),
            Duration::from_secs(5),
        ))
        .connect()
        .await
    {
        Err(Error::Store { operation, .. }) => assert_eq!(operation, "connect"),
        other => panic!("expected a store error, got {other:?}"),
    }
    let error = RedisStore::connect("redis://:hunter2@[bad")
        .await
        .unwrap_err();
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_is_an_error_never_a_lease() {
    use crate::backend::{Backend, RedisProcess};
    let Some(server) = RedisProcess::fresh().await else {
        return;
    };
    let store = server.open_faulty().await;
    assert!(matches!(
        store.try_lock(UserId(1), Duration::from_secs(30)).await,
        Ok(LockAttempt::Acquired(_))
    ));
    server.down().await;
    // A bound on waiting, not a measurement: the errors must come, not hang.
    tokio::time::timeout(Duration::from_secs(20), async {
        // The first call finds the connection broken; later ones fail reconnecting.
        for _ in 0..2 {
            assert_no_lease_from_a_dead_store(&*store).await;
        }
    })
    .await
    .expect("store errors come promptly once the server is gone");
}
