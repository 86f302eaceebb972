//! The coverwatch domain, free of I/O: typed ids, the [`link`] state machine, [`event`] kinds and
//! payloads, the normalized [`policy`] model, and the [`provider::Provider`] trait that hides each
//! vendor. Every other crate of ours depends on this one; this one depends on none of them.

pub mod backoff;
pub mod change;
pub mod event;
pub mod ids;
pub mod link;
pub mod plugin;
pub mod policy;
pub mod provider;
pub mod requirements;
pub mod telemetry;
pub mod webhook;

pub use event::{Event, EventKind, EventPayload, ProviderDetail, VendorDetail};
pub use ids::{EventId, IdError, LinkId, TenantId, UserId};
pub use link::{IllegalTransition, Link, LinkRequirements, LinkState};
pub use plugin::{BuiltVendor, SettingsError, Simulator, VendorPlugin};
pub use provider::{InvalidProviderId, Provider, ProviderError, ProviderId};
