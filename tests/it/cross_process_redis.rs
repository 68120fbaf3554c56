//! One refresh per user across independent `WithingsAuth` instances and OS processes sharing
//! one Redis (separate connections); a killed lease holder. Each run uses its own namespace, removed at the end.

use crate::cross_process_common::{Backend, child_role, server_scenarios};

/// The entry point of child processes; a no-op when run as a normal test.
const CHILD: &str = "cross_process_redis::child_process_entry";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_entry() {
    child_role().await;
}

server_scenarios!(
    Backend::redis(),
    CHILD,
    redis_instances_refresh_once,
    redis_os_processes_refresh_once,
    redis_dead_lease_holder_is_outlived
);
