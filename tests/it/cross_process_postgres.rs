//! One refresh per user across independent `WithingsAuth` instances and OS processes sharing
//! one database (separate pools); a killed lease holder. Each run uses its own namespace, removed at the end.

use crate::cross_process_common::{
    Backend, child_role, dead_lease_holder_is_outlived, refresh_once_across_instances,
    refresh_once_across_processes,
};
use crate::store_support::{START_POSTGRES, unreachable};

/// The entry point of child processes; a no-op when run as a normal test.
const CHILD: &str = "cross_process_postgres::child_process_entry";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_entry() {
    child_role().await;
}

/// A fresh namespace on the server, or `None` (after a loud skip) outside CI when the server
/// is not running.
async fn backend() -> Option<Backend> {
    let backend = Backend::postgres();
    match backend.open().await {
        Ok(_) => Some(backend),
        Err(error) => {
            unreachable(
                "PostgreSQL",
                "TOWER_WITHINGS_POSTGRES_URL",
                START_POSTGRES,
                &error,
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_refresh_once() {
    let Some(backend) = backend().await else {
        return;
    };
    refresh_once_across_instances(&backend, 4, 8).await;
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_os_processes_refresh_once() {
    let Some(backend) = backend().await else {
        return;
    };
    refresh_once_across_processes(&backend, CHILD, 3, 8).await;
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dead_lease_holder_is_outlived() {
    let Some(backend) = backend().await else {
        return;
    };
    dead_lease_holder_is_outlived(&backend, CHILD).await;
    backend.cleanup().await;
}
