//! Axle (axle.insure) behind the coverwatch [`Provider`](coverwatch_core::Provider) trait.
//!
//! - [`config`]: [`AxleConfig`] (base URL, client credentials, timeouts, retries, the optional
//!   shared webhook header) and its validation.
//! - [`client`]: the HTTP client: Axle's requests and `{success, data}` envelopes, sent through
//!   the shared vendor executor (`coverwatch-vendor-http`: timeouts, retries, `Retry-After`),
//!   typed errors that keep Axle's status and `x-axle-request-id`.
//! - [`detail`]: [`AxleEventDetail`], Axle's typed event detail, its stored form and its arm
//!   of the gRPC `Event` ([`detail_codec`]).
//! - [`model`]: Axle's JSON, read leniently.
//! - [`normalize`]: Axle objects → the core Policy and Account (pure).
//! - [`webhook`]: authentication of raw deliveries and their normalization.
//! - [`plugin`]: [`AxlePlugin`]: `[vendors.axle]` settings → a provider, and the simulator's.
//! - [`provider`]: [`AxleProvider`], the trait implementation.
//! - [`validation`]: Policy Validation: the documented rules requirement rules map to, and
//!   how Validate Policy's answer reads.

pub mod client;
pub mod config;
pub mod detail;
pub mod error;
pub mod model;
pub mod normalize;
pub mod plugin;
pub mod provider;
pub mod validation;
pub mod verdict;
pub mod webhook;

pub use client::AxleClient;
pub use config::{AxleConfig, AxleSettings, ConfigError};
pub use detail::{AxleEventDetail, detail_codec};
pub use error::AxleError;
pub use plugin::{AxlePlugin, plugin};
pub use provider::AxleProvider;
pub use verdict::{
    AxlePolicyValidation, AxleValidation, AxleValidationStatus, SentRule, UnsentRule,
};

/// This vendor's name: its registry key, its stored form and its metric label.
pub const PROVIDER: coverwatch_core::ProviderId = coverwatch_core::ProviderId::from_static("axle");
