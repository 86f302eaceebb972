//! Axle's webhook types, shared by the contract and fuzz suites (both include this file with
//! `#[path]`).

/// The webhook types Axle documents (docs.axle.insure/api-reference/webhooks/ignition-events,
/// …/account-events, docs.axle.insure/guides/policy-events): the contract suite makes the
/// simulator send each one, and the fuzz suite's seeds must hold each one.
pub const EVENT_TYPES: &[&str] = &[
    "ignition.created",
    "ignition.opened",
    "ignition.attempted",
    "ignition.completed",
    "ignition.exited",
    "ignition.errored",
    "account.modified",
    "account.retrying",
    "account.disconnected",
    "policy.modified",
    "policy.renewal-available",
];
