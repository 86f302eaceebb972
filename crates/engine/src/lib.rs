//! coverwatch-engine
