//! `stores`: what one rotation costs in each durable store (compare-and-save of a new pair, then
//! load it back) and one cross-process lease round trip (try_lock, then unlock), so a deployment
//! can be sized. Needs the PostgreSQL and Redis servers of this machine kind
//! (`TOWER_WITHINGS_POSTGRES_URL`, `TOWER_WITHINGS_REDIS_URL` to point elsewhere).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use tower_withings::store::{LockAttempt, TokenStore};
use tower_withings::{Secret, Token, UserId};

fn stores(c: &mut Criterion) {
    let runtime = common::runtime();
    let run = std::process::id();
    let dir = std::env::temp_dir().join(format!("tower-withings-bench-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let backends = runtime.block_on(common::durable_stores(&dir, &format!("bench_{run}")));

    let mut group = c.benchmark_group("stores");
    for (name, store) in &backends {
        let user = UserId(u64::from(run) * 10 + 1);
        let first = common::token(user, SystemTime::now(), Duration::from_secs(10_800));
        runtime
            .block_on(store.put(&first, SystemTime::now()))
            .unwrap();
        let current = Arc::new(Mutex::new(first));
        let rotation = Arc::new(AtomicU64::new(0));
        group.bench_function(format!("{name}/save_then_load"), |b| {
            b.to_async(&runtime).iter(|| {
                let (store, current, rotation) = (store.clone(), current.clone(), rotation.clone());
                async move {
                    let spent = current.lock().unwrap().refresh_token.clone();
                    let n = rotation.fetch_add(1, Ordering::Relaxed);
                    let next = Token {
                        refresh_token: Secret::new(common::hex_token('r', n)),
                        access_token: Secret::new(common::hex_token('a', n)),
                        ..current.lock().unwrap().clone()
                    };
                    assert!(
                        store
                            .compare_and_save(&spent, &next, SystemTime::now())
                            .await
                            .unwrap()
                    );
                    let loaded = store.load(user).await.unwrap().unwrap();
                    assert_eq!(loaded.token.refresh_token, next.refresh_token);
                    *current.lock().unwrap() = next;
                }
            })
        });
        group.bench_function(format!("{name}/lease_round_trip"), |b| {
            b.to_async(&runtime).iter(|| {
                let store = store.clone();
                async move {
                    match store.try_lock(user, Duration::from_secs(30)).await.unwrap() {
                        LockAttempt::Acquired(lease) => store.unlock(user, lease).await.unwrap(),
                        LockAttempt::Held => panic!("nobody else holds this lease"),
                    }
                }
            })
        });
    }
    group.finish();

    // Leave nothing behind on the shared servers.
    drop(backends);
    runtime.block_on(common::drop_durable(&format!("bench_{run}")));
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = stores
}
criterion_main!(benches);
