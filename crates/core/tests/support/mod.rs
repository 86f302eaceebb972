//! Helpers of the property tests in this directory.

pub mod fuzz_json;
