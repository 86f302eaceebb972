//! The coverwatch service: configuration, CLI support, the gRPC service, the webhook listener,
//! background workers and the wiring between them. Start reading at [`app::start`].

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
mod grpc;
pub mod healthcheck;
mod http;
pub mod prometheus;
pub mod providers;
mod requirements;
mod status;
pub mod supervisor;
pub mod telemetry;
pub mod tls;

pub use app::{App, Overrides, start};
pub use config::Config;
pub use http::RefusalCounts;
