//! Hot-path cost with 1, 10 000 and 1 000 000 users' tokens loaded, requests spread at random
//! across the users; and the memory each loaded user costs.
//!
//! Memory is measured two ways while the users are imported: the bytes the program asked the
//! allocator for (a counting global allocator in this binary: exact, no allocator overhead)
//! and the growth of the resident set (`VmRSS`, `/proc/self/statm`: what the OS sees,
//! allocator overhead and free lists included). Each for the handle with a `NullStore` (the
//! layer's own state: what a process with a durable store keeps), with `MemoryStore` (plus the
//! in-memory copy), and for the baseline `RwLock<HashMap<UserId, Token>>`. Results are printed
//! and written to `<criterion dir>/many_users/memory.json`.
//!
//! `cargo bench --bench many_users -- --warm-up-time 1`

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::*;
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::Full;
use tower::Layer;
use tower_withings::store::{MemoryStore, StoreFuture, StoredToken, TokenStore};
use tower_withings::{Credentials, Secret, Token, UserId, WithingsAuth};

/// Counts live heap bytes while `COUNTING` is on.
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);

fn counted(delta: i64) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; only sizes are counted.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            counted(layout.size() as i64);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            counted(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        counted(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is checked by the caller.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            counted(new_size as i64 - layout.size() as i64);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

const USER_COUNTS: [u64; 3] = [1, 10_000, 1_000_000];
const TTL: Duration = Duration::from_secs(10_800);

/// A store that keeps nothing: the handle's own memory, as with a durable store elsewhere.
struct NullStore;

impl TokenStore for NullStore {
    fn load(&self, _: UserId) -> StoreFuture<'_, Option<StoredToken>> {
        Box::pin(async { Ok(None) })
    }
    fn put<'a>(&'a self, _: &'a Token, _: SystemTime) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn compare_and_save<'a>(
        &'a self,
        _: &'a Secret,
        _: &'a Token,
        _: SystemTime,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async { Ok(false) })
    }
    fn mark_needs_reauthorization<'a>(&'a self, _: UserId, _: &'a Secret) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn list(&self) -> StoreFuture<'_, Vec<StoredToken>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Baseline: the map one writes first. `RwLock<HashMap<UserId, Token>>`, header formatted per
/// request, no refresh.
fn map_auth<S>(tokens: HashMap<UserId, Token>, inner: S) -> LookupAuth<S, impl HeaderFor> {
    let tokens = Arc::new(RwLock::new(tokens));
    LookupAuth {
        header_for: move |request: &Request<Full<Bytes>>| {
            let user = request.extensions().get::<UserId>();
            let tokens = tokens.read().expect("not poisoned");
            match user.and_then(|user| tokens.get(user)) {
                Some(token) if SystemTime::now() < token.expires_at => {
                    Ok(bearer(token.access_token.expose()))
                }
                _ => Err("no valid token"),
            }
        },
        inner,
    }
}

fn handle(store: impl TokenStore) -> WithingsAuth {
    let endpoint = FakeTokenEndpoint::new(Duration::ZERO, UserId(1));
    WithingsAuth::builder(Credentials::new("bench-client", "bench-secret"))
        .store(store)
        .rate_budget(tower_withings::budget::RateBudget::unlimited())
        .build(endpoint.client())
}

fn import_all(rt: &tokio::runtime::Runtime, auth: &WithingsAuth, users: u64) {
    let now = SystemTime::now();
    rt.block_on(async {
        for id in 1..=users {
            auth.import(token(UserId(id), now, TTL))
                .await
                .expect("import");
        }
    });
}

fn rss_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Runs `load` with the allocator counting; returns (heap bytes, RSS growth) it left behind.
fn measure<T>(load: impl FnOnce() -> T) -> (T, i64, i64) {
    let rss_before = rss_bytes();
    LIVE.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let kept = load();
    COUNTING.store(false, Ordering::SeqCst);
    let heap = LIVE.load(Ordering::SeqCst);
    (kept, heap, rss_bytes() - rss_before)
}

const MEMORY_USERS: u64 = 1_000_000;
const MEMORY_KINDS: [&str; 3] = [
    "withings_null_store",
    "withings_memory_store",
    "rwlock_hashmap",
];

/// In a child process (a clean heap, so RSS growth is this load alone): loads
/// `MEMORY_USERS` users the way `kind` says and prints one `MEMORY {json}` line.
fn memory_child(kind: &str) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let users = MEMORY_USERS;
    let now = SystemTime::now();
    let (kept, heap, rss): (Box<dyn std::any::Any>, i64, i64) = match kind {
        "withings_null_store" => {
            let (auth, heap, rss) = measure(|| {
                let auth = handle(NullStore);
                import_all(&rt, &auth, users);
                auth
            });
            (Box::new(auth), heap, rss)
        }
        "withings_memory_store" => {
            let (auth, heap, rss) = measure(|| {
                let auth = handle(MemoryStore::new());
                import_all(&rt, &auth, users);
                auth
            });
            (Box::new(auth), heap, rss)
        }
        "rwlock_hashmap" => {
            let (map, heap, rss) = measure(|| {
                let map: HashMap<UserId, Token> = (1..=users)
                    .map(|id| (UserId(id), token(UserId(id), now, TTL)))
                    .collect();
                RwLock::new(map)
            });
            (Box::new(map), heap, rss)
        }
        other => panic!("unknown memory kind {other}"),
    };
    println!(
        "MEMORY {{\"users\": {users}, \"heap_bytes_per_user\": {:.1}, \"rss_bytes_per_user\": {:.1}}}",
        heap as f64 / users as f64,
        rss as f64 / users as f64
    );
    drop(kept);
    std::process::exit(0);
}

/// Memory per loaded user, each kind measured in its own child process.
fn memory_per_user() {
    let exe = std::env::current_exe().expect("this bench's path");
    let mut rows = Vec::new();
    for kind in MEMORY_KINDS {
        let output = std::process::Command::new(&exe)
            .arg("--bench")
            .arg("many_users/memory-only-no-timing")
            .env("MANY_USERS_MEMORY_CHILD", kind)
            .output()
            .expect("run the memory child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let Some(json) = stdout.lines().find_map(|l| l.strip_prefix("MEMORY ")) else {
            panic!(
                "memory child {kind} failed: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        println!("memory per user, {MEMORY_USERS} users, {kind}: {json}");
        rows.push(format!("  \"{kind}\": {json}"));
    }
    write_result(
        "many_users",
        "memory.json",
        &format!("{{\n{}\n}}\n", rows.join(",\n")),
    );
}

/// A small fast generator, so the users a request goes to are spread with no pattern.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn many_users(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if let Ok(kind) = std::env::var("MANY_USERS_MEMORY_CHILD") {
        memory_child(&kind);
    }
    if std::env::var_os("MANY_USERS_SKIP_MEMORY").is_none() {
        memory_per_user();
    }
    let mut group = c.benchmark_group("many_users");
    let inner = Noop::empty();
    let mut one_user = None;
    let mut rows = Vec::new();
    for users in USER_COUNTS {
        let auth = handle(MemoryStore::new());
        import_all(&rt, &auth, users);
        let now = SystemTime::now();
        let map: HashMap<UserId, Token> = (1..=users)
            .map(|id| (UserId(id), token(UserId(id), now, TTL)))
            .collect();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut withings = auth.layer().layer(inner.clone());
        let len = rt.block_on(finish(call_now(&mut withings, getmeas(UserId(users)))));
        assert_eq!(len, 0);
        group.bench_function(BenchmarkId::new("withings", users), |b| {
            b.to_async(&rt).iter_batched(
                || getmeas(UserId(1 + rng.below(users))),
                |request| finish(call_now(&mut withings, request)),
                BatchSize::NumIterations(256),
            )
        });
        let mut baseline = map_auth(map, inner.clone());
        group.bench_function(BenchmarkId::new("rwlock_hashmap", users), |b| {
            b.to_async(&rt).iter_batched(
                || getmeas(UserId(1 + rng.below(users))),
                |request| finish(call_now(&mut baseline, request)),
                BatchSize::NumIterations(256),
            )
        });
        assert_eq!(auth.metrics().refreshes_started, 0);
        match &mut one_user {
            None => one_user = Some((auth, withings, baseline)),
            Some((_, small_withings, small_baseline)) => {
                // The same comparison interleaved: N users over 1 user, round by round.
                // Requests for the one user, or spread over all `users`.
                let mut spread = |many: bool| {
                    (0..PAIRED_REQUESTS)
                        .map(|_| getmeas(UserId(if many { 1 + rng.below(users) } else { 1 })))
                        .collect()
                };
                let ratios = interleaved(
                    &rt,
                    small_withings,
                    &mut withings,
                    PAIRED_ROUNDS,
                    &mut spread,
                );
                rows.push(ratio_row(
                    "many_users time N users / 1 user,",
                    &format!("withings/{users}"),
                    &ratios,
                ));
                let ratios = interleaved(
                    &rt,
                    small_baseline,
                    &mut baseline,
                    PAIRED_ROUNDS,
                    &mut spread,
                );
                rows.push(ratio_row(
                    "many_users time N users / 1 user,",
                    &format!("rwlock_hashmap/{users}"),
                    &ratios,
                ));
            }
        }
    }
    group.finish();
    write_result(
        "many_users",
        "paired.json",
        &format!("{{\n{}\n}}\n", rows.join(",\n")),
    );
}

/// Rounds of the interleaved comparison, and requests per stack per round.
const PAIRED_ROUNDS: usize = 30;
const PAIRED_REQUESTS: usize = 4096;

criterion_group! {
    name = benches;
    config = criterion();
    targets = many_users
}
criterion_main!(benches);
