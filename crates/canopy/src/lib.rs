//! coverwatch-canopy
