//! coverwatch-store
