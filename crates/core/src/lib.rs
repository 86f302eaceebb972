//! coverwatch-core
