//! coverwatch provider for Canopy Connect.
//!
//! * [`CanopyConfig`] / [`CanopyProvider::new`]: configuration, validated at start-up.
//! * [`client`]: the API client (Basic auth, requests and answers; timeouts and retries are
//!   the shared vendor executor's, `coverwatch-vendor-http`).
//! * [`detail`]: [`CanopyEventDetail`], Canopy's typed event detail, its stored form and its
//!   arm of the gRPC `Event` ([`detail_codec`]).
//! * [`model`]: Canopy's JSON, read leniently.
//! * [`normalize`]: a pull → the normalized account and policies (pure).
//! * [`webhook`]: `canopy-signature` and the event types → normalized happenings.
//! * [`plugin`]: [`CanopyPlugin`]: `[vendors.canopy]` settings → a provider, and the simulator's.
//! * [`provider`]: `impl Provider for CanopyProvider`.
//!
//! Link ids travel through Canopy as pull meta data, set by `ccmeta-` parameters on the widget
//! URL: `coverwatch_link_id` with `coverwatch_session`, the session's proof, without which the
//! link id proves nothing. The vendor ids a link keeps are `initial_pull`, `pull` (the latest
//! pull read) and `monitoring`.

pub mod client;
pub mod config;
pub mod detail;
pub mod error;
pub mod model;
pub mod normalize;
pub mod plugin;
pub mod provider;
pub mod verdict;
pub mod webhook;

pub use client::CanopyClient;
pub use config::{CanopyConfig, CanopySettings, StaleSignatures};
pub use detail::{CanopyEventDetail, detail_codec};
pub use error::CanopyError;
pub use plugin::{CanopyPlugin, plugin};
pub use provider::{CanopyProvider, META_QUERY_PREFIX, PULL_JWT_SECRET, RECONNECT_PULL_SECRET};
pub use verdict::{CanopyCheckStatus, CanopyPolicyCheck};
pub use webhook::{
    EXTERNAL_INITIAL_PULL, EXTERNAL_MONITORING, EXTERNAL_PULL, LINK_ID_META_KEY, SESSION_META_KEY,
    SIGNATURE_HEADER,
};

/// This vendor's name: its registry key, its stored form and its metric label.
pub const PROVIDER: coverwatch_core::ProviderId =
    coverwatch_core::ProviderId::from_static("canopy");
