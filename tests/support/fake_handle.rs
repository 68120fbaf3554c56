//! A handle whose Withings is an in-process fake: token calls go to the fake, the user's
//! token is valid, no budget to wait on and no backoff. Support code shared by the data tests
//! (`tests/it/data.rs`) and the heap measurement (`benches/common/heap.rs`, which
//! `tests/data_heap.rs` runs too).

use std::time::{Duration, SystemTime};

use tower_withings::budget::RateBudget;
use tower_withings::store::MemoryStore;
use tower_withings::transport::HttpClient;
use tower_withings::{Credentials, Endpoints, Error, Secret, Token, UserId, WithingsAuth};

/// A handle over `fake` (its token calls too) at `endpoints`, holding a pair for `user` with
/// `scope`, valid for 3 hours.
pub async fn fake_handle<S: HttpClient>(
    fake: S,
    endpoints: Endpoints,
    user: UserId,
    scope: &str,
) -> Result<WithingsAuth, Error> {
    let auth = WithingsAuth::builder(Credentials::new("client-id", "client-secret"))
        .store(MemoryStore::new())
        .endpoints(endpoints)
        .rate_budget(RateBudget::unlimited())
        .backoff(Duration::ZERO, Duration::ZERO)
        .build(fake);
    auth.import(Token {
        user_id: user,
        access_token: Secret::new("access-1"),
        refresh_token: Secret::new("refresh-1"),
        expires_at: SystemTime::now() + Duration::from_secs(3 * 3600),
        scope: scope.into(),
    })
    .await?;
    Ok(auth)
}
