//! coverwatch-axle
