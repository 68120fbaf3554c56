//! [`WithingsAuth`]: the handle an app keeps. It runs the web flow, owns the token store and
//! the per-user refresh state, and makes [`WithingsAuthLayer`]s.

use std::sync::Arc;
use std::time::Duration;

use crate::budget::{self, Budget, BudgetLayer, RateBudget};
use crate::clock::Clock;
use crate::config::{ClientAuth, Credentials, Endpoints};
use crate::error::Error;
use crate::layer::service::WithingsAuthLayer;
use crate::metrics::MetricsSnapshot;
use crate::oauth::{AuthorizeRequest, Callback, OAuthClient, OAuthClientBuilder, RedirectPolicy};
use crate::refresh::{RefreshPolicy, Refresher, bearer_header};
use crate::store::BudgetUsage;
use crate::store::{MemoryStore, TokenStore};
use crate::token::{Scope, Token, UserId};
use crate::transport::HttpClient;

/// The app's Withings connection: OAuth flow, token store, and refresh coordination.
///
/// Cheap to clone; clones share everything. Layers from [`layer`](Self::layer) share its
/// per-user state, so a refresh started by one request serves all of them.
///
/// ```
/// use tower_withings::{Credentials, WithingsAuth, store::MemoryStore, transport};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let auth = WithingsAuth::builder(Credentials::new("my-client-id", "my-client-secret"))
///     .store(MemoryStore::new())
///     .build(transport::plain_http_client());
/// let layer = auth.layer(); // put it in front of any tower HTTP client
/// # let _ = layer; }
/// ```
#[derive(Debug, Clone)]
pub struct WithingsAuth {
    pub(crate) refresher: Arc<Refresher>,
    /// The app's request budget: under every layer this handle makes, around its token calls.
    budget: Arc<Budget>,
}

/// Configures a [`WithingsAuth`].
#[derive(Debug)]
pub struct WithingsAuthBuilder {
    oauth: OAuthClientBuilder,
    store: ChosenStore,
    policy: RefreshPolicy,
    token_timeout: Duration,
    budget: RateBudget,
}

/// The store a builder was given. `dyn TokenStore` has no `Debug`: this prints as a
/// placeholder, so the builder's `Debug` can be derived.
struct ChosenStore(Arc<dyn TokenStore>);

impl std::fmt::Debug for ChosenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn TokenStore")
    }
}

impl WithingsAuthBuilder {
    crate::setters::setters! {
        /// Where tokens are kept (default: [`MemoryStore`], lost on exit).
        fn store(store: impl TokenStore) => store = ChosenStore(Arc::new(store));

        /// A store already shared elsewhere.
        fn shared_store(store: Arc<dyn TokenStore>) => store = ChosenStore(store);
    }

    /// Where Withings is (default: the public cloud).
    pub fn endpoints(mut self, endpoints: Endpoints) -> Self {
        self.oauth = self.oauth.endpoints(endpoints);
        self
    }

    /// How token requests authenticate (default: client secret in the form body).
    pub fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.oauth = self.oauth.client_auth(client_auth);
        self
    }

    /// Which redirect URIs to accept (default: only what Withings accepts).
    pub fn redirect_policy(mut self, policy: RedirectPolicy) -> Self {
        self.oauth = self.oauth.redirect_policy(policy);
        self
    }

    /// The wall clock for token expiry (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.oauth = self.oauth.clock(clock);
        self
    }

    crate::setters::setters! {
        /// Refresh this long before a token expires (default 5 min).
        fn refresh_skew(skew: Duration) => policy.skew;

        /// Spread refreshes over up to this much more, fixed per user (default 60 s).
        fn refresh_jitter(jitter: Duration) => policy.jitter;
    }

    /// After a failed refresh, wait `base`, doubling per failure up to `cap`, with jitter
    /// (defaults 1 s and 5 min). A 601 answer's `wait_seconds` overrides it.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.policy.backoff_base = base;
        self.policy.backoff_cap = cap;
        self
    }

    crate::setters::setters! {
        /// How long a token-endpoint call may take (default 30 s). The cross-process refresh lease
        /// lasts three times this (signed mode makes two calls, then the pair is saved), so it
        /// outlives any refresh its holder can still complete.
        fn token_timeout(timeout: Duration) => token_timeout;

        /// How often a process waiting for another's refresh re-reads the store (default 100 ms).
        fn lease_poll(every: Duration) => policy.lease_poll;

        /// Forget a user's in-memory state once no request used it for between `idle` and twice
        /// `idle` (default 15 min): a new user's first request sweeps, at most once per `idle`,
        /// the users unused since the previous sweep. The next request reloads them from the store.
        /// Bounds memory by the users in use, however many different [`UserId`]s requests carry.
        fn evict_idle_after(idle: Duration) => policy.idle_eviction;

        /// The app's request budget (default: Withings' standard 120 per minute, a request waits
        /// up to 60 s for a slot). It is counted in the token store, so every handle and process
        /// sharing the store shares it ([`TokenStore::budget`]); [`RateBudget::unlimited`] turns
        /// it off.
        fn rate_budget(budget: RateBudget) => budget;
    }

    /// Builds the handle; token requests go through `http_client`.
    pub fn build(mut self, http_client: impl HttpClient) -> WithingsAuth {
        self.policy.lease = self.token_timeout * 3;
        let oauth = self.oauth.timeout(self.token_timeout);
        let budget = Arc::new(Budget::new(
            self.budget,
            oauth.client_id(),
            Arc::clone(&self.store.0),
            oauth.configured_endpoints().clone(),
        ));
        // A token call waits for its slot at most as long as the call itself may take, so a
        // refresh lease (three timeouts) outlives the wait and the call.
        let wait = self.budget.wait_deadline().min(oauth.configured_timeout());
        let oauth = oauth.build_with(http_client, |timed| {
            budget::token_client(Arc::clone(&budget), wait, timed)
        });
        WithingsAuth {
            refresher: Arc::new(Refresher::new(oauth, self.store.0, self.policy)),
            budget,
        }
    }
}

impl WithingsAuth {
    /// Starts configuring a handle for these credentials.
    pub fn builder(credentials: Credentials) -> WithingsAuthBuilder {
        WithingsAuthBuilder {
            oauth: OAuthClient::builder(credentials),
            store: ChosenStore(Arc::new(MemoryStore::new())),
            policy: RefreshPolicy {
                skew: Duration::from_secs(300),
                jitter: Duration::from_secs(60),
                backoff_base: Duration::from_secs(1),
                backoff_cap: Duration::from_secs(300),
                lease: Duration::from_secs(60),
                lease_poll: Duration::from_millis(100),
                idle_eviction: Duration::from_secs(15 * 60),
            },
            token_timeout: Duration::from_secs(30),
            budget: RateBudget::default(),
        }
    }

    /// A layer that finds the user in each request's [`UserId`] extension.
    pub fn layer(&self) -> WithingsAuthLayer {
        WithingsAuthLayer::new(Arc::clone(&self.refresher), Arc::clone(&self.budget), None)
    }

    /// A layer bound to one user; a request's own [`UserId`] extension still wins.
    pub fn layer_for(&self, user: UserId) -> WithingsAuthLayer {
        WithingsAuthLayer::new(
            Arc::clone(&self.refresher),
            Arc::clone(&self.budget),
            Some(user),
        )
    }

    /// The request budget alone, for a stack that places it itself (under a retry layer, say);
    /// [`layer`](Self::layer) already includes it unless made
    /// [`without_budget`](WithingsAuthLayer::without_budget).
    pub fn budget_layer(&self) -> BudgetLayer {
        BudgetLayer::new(Arc::clone(&self.budget))
    }

    /// The same as [`layer`](Self::layer) for reqwest: a `reqwest_middleware::Middleware` on
    /// this handle's refresher and store; the user comes from each request's
    /// `.with_extension(UserId(…))`. See [`crate::reqwest`].
    #[cfg(feature = "reqwest")]
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
    pub fn reqwest_middleware(&self) -> crate::reqwest::WithingsMiddleware {
        crate::reqwest::WithingsMiddleware::new(
            Arc::clone(&self.refresher),
            Arc::clone(&self.budget),
            None,
        )
    }

    /// [`reqwest_middleware`](Self::reqwest_middleware) bound to one user; a request's own
    /// [`UserId`] extension still wins.
    #[cfg(feature = "reqwest")]
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
    pub fn reqwest_middleware_for(&self, user: UserId) -> crate::reqwest::WithingsMiddleware {
        crate::reqwest::WithingsMiddleware::new(
            Arc::clone(&self.refresher),
            Arc::clone(&self.budget),
            Some(user),
        )
    }

    /// The protocol client (URLs, code exchange, refresh) this handle uses.
    pub fn oauth(&self) -> &OAuthClient {
        &self.refresher.oauth
    }

    /// The token store.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.refresher.store
    }

    /// Step 1 of the web flow; see [`OAuthClient::authorize`].
    pub fn authorize(
        &self,
        redirect_uri: &str,
        scopes: &[Scope],
    ) -> Result<AuthorizeRequest, Error> {
        self.oauth().authorize(redirect_uri, scopes)
    }

    /// Steps 2–3: verifies the callback, exchanges its code, stores the pair, and returns the
    /// Withings user it belongs to. Later requests for that user use it at once.
    pub async fn exchange_code(
        &self,
        callback: &Callback,
        request: &AuthorizeRequest,
    ) -> Result<UserId, Error> {
        let token = self.oauth().exchange_code(callback, request).await?;
        self.import(token).await
    }

    /// Stores a pair obtained elsewhere (a code exchange done by hand, a migration) as the
    /// user's new authorization, replacing any earlier one.
    pub async fn import(&self, token: Token) -> Result<UserId, Error> {
        let user = token.user_id;
        // A pair no request could carry is refused before it replaces a working one.
        bearer_header(&token.access_token)?;
        let refresher = &self.refresher;
        let now = refresher.now();
        self.store().put(&token, now).await?;
        refresher.reset(&refresher.slot(user, now), token, now);
        Ok(user)
    }

    /// The request budget's current window: slots counted and any pause a 601 asked for
    /// (`None` when the budget is off). Read from the store's ledger when it has one, so it is
    /// the whole app's.
    pub async fn budget_usage(&self) -> Result<Option<BudgetUsage>, Error> {
        self.budget.usage().await
    }

    /// The request budget this handle keeps.
    pub fn rate_budget(&self) -> RateBudget {
        self.budget.config()
    }

    /// The counters so far.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.refresher.metrics.snapshot(&self.budget.counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builders_debug_shows_its_settings_but_not_the_secret() {
        let builder = WithingsAuth::builder(Credentials::new("app", "the-client-secret"));
        let shown = format!("{builder:?}");
        assert!(
            shown.contains("dyn TokenStore") && shown.contains("policy"),
            "{shown}"
        );
        assert!(!shown.contains("the-client-secret"), "leaked in {shown}");
    }
}
