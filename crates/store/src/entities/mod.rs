//! sea-orm entities, one per table (see `migrations/` for the schema and why it is shaped so).

pub mod account_snapshot;
pub mod api_key;
pub mod consumer;
pub mod event;
pub mod inbox;
pub mod link;
pub mod link_credential;
pub mod link_external_id;
pub mod policy_snapshot;
pub mod requirement_set;
pub mod tenant;
pub mod vendor_connection;
