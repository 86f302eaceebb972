//! Glue shared by the vendor crates' test suites that drive the simulators (`contract.rs` and
//! `fuzz.rs` of `crates/axle` and `crates/canopy` include this file with `#[path]`). The core
//! crate does not build it: it needs tokio, a dependency of the vendor crates' tests only.

#![allow(dead_code)] // Each test file uses the part it needs.

use std::future::Future;
use std::sync::OnceLock;

/// A URI on a port nothing listens on: a webhook sent there fails at once and stays in the
/// simulator's delivery log with its body, which is all a suite reading webhooks needs.
pub fn dead_webhook_uri(path: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}{path}", listener.local_addr().unwrap())
}

/// The value `gather` produces, gathered on the first call only, on a runtime of its own so that
/// any test (a synchronous property included) can ask for it.
pub fn gathered_once<T, F>(cell: &'static OnceLock<T>, gather: impl FnOnce() -> F) -> &'static T
where
    T: Send + Sync,
    F: Future<Output = T>,
{
    cell.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(gather())
    })
}
