//! The test app the simulator must know before anyone signs in: its credentials, its callback
//! URL, and simulators it is registered with. Support code shared by the library's tests
//! (`tests/it/common.rs` includes it) and the CLI's (`cli/tests/common/mod.rs`).

use withings_sim::{SimConfig, Simulator};

pub const CLIENT_ID: &str = "test-client-id";
pub const CLIENT_SECRET: &str = "test-client-secret-0f9e8d7c";
pub const REDIRECT_URI: &str = "https://app.example.com/withings/callback";

/// A simulator that knows the test app and its callback URL.
pub async fn simulator() -> Simulator {
    simulator_with(SimConfig::default()).await
}

/// A simulator started with `config` (a `HistoryConfig` will do) that knows the test app and
/// its callback URL.
pub async fn simulator_with(config: impl Into<SimConfig>) -> Simulator {
    let sim = Simulator::start_with(config.into())
        .await
        .expect("simulator starts");
    sim.register_client(CLIENT_ID, CLIENT_SECRET, &[REDIRECT_URI]);
    sim
}
