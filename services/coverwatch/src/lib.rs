//! coverwatch service
