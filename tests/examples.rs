//! The examples, run as tests against the simulator: each example file is compiled into this
//! test as a module, and its own `run()` is called. `main` and what only it uses are dead code
//! here.

#[allow(dead_code)]
#[path = "../examples/hyper_client.rs"]
mod hyper_client;
#[allow(dead_code)]
#[path = "../examples/multi_user.rs"]
mod multi_user;

#[tokio::test]
async fn hyper_client_example_runs() {
    hyper_client::run().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_user_example_runs() {
    multi_user::run().await.unwrap();
}
