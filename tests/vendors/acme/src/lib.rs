//! Acme: a fictional insurance-data vendor that exists only for tests. It proves that a vendor
//! is one crate and one registration line: nothing in core, the engine, the store or the proto
//! names it, and the service learns of it only through the plug-in list a test hands over
//! (`TestServer::start_with_plugins(config, vec![coverwatch_vendor_acme::plugin()])`).
//!
//! Acme's (invented) API, as its simulator serves it and its provider calls it:
//!
//! * `POST /v1/sessions` (API key) opens a hosted session for one end-user; Acme sends that
//!   session's and then that account's webhooks to the `notify_url` given here (per link, as
//!   Axle's `webhookUri`), each signed: `acme-signature: sha256=<hex HMAC-SHA256 of the raw
//!   body>` with the account's signing secret.
//! * The end-user consents on `GET /hosted/{session}`; Acme then sends `session.completed`
//!   with a one-time `code` (or `session.exited`).
//! * `POST /v1/grants` (API key) turns the code into an access token and an account id.
//! * `GET /v1/accounts/{id}`, `GET /v1/policies/{id}` (access token) read the data;
//!   `PUT`/`DELETE /v1/accounts/{id}/monitoring` start and stop monitoring. Only a monitored
//!   account's changes are sent: `policy.changed` and `policy.cancelled`, and `account.refreshed`
//!   after a scheduled refresh (new data or not).
//!
//! * [`settings`]: `[vendors.acme]` → [`AcmeConfig`] (unknown keys refused, durations as
//!   people write them, the bad field named).
//! * [`signature`]: the `acme-signature` header.
//! * [`provider`]: `impl Provider for AcmeProvider`, through the shared vendor HTTP executor.
//! * [`simulator`]: Acme's API, hosted page and webhook sender as an axum router, with test
//!   controls under `/_sim`.
//! * [`plugin`]: [`AcmePlugin`], whose simulated settings start its own simulator.

pub mod plugin;
pub mod provider;
pub mod settings;
pub mod signature;
pub mod simulator;

pub use plugin::{AcmePlugin, plugin};
pub use provider::AcmeProvider;
pub use settings::{AcmeConfig, AcmeSettings};
pub use simulator::AcmeSimulator;

/// The provider id, the configuration section `[vendors.acme]` and the webhook path segment.
pub const ID: &str = "acme";

/// This vendor's name: its registry key, its stored form and its metric label.
pub const PROVIDER: coverwatch_core::ProviderId = coverwatch_core::ProviderId::from_static(ID);

/// The vendor id a link keeps for its Acme account (`LinkGrant::external_ids`).
pub const EXTERNAL_ACCOUNT: &str = "account";
/// The vendor id a link keeps for its Acme monitoring.
pub const EXTERNAL_MONITORING: &str = "monitoring";
