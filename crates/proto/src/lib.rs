//! coverwatch-proto
