//! Helpers of the property tests in this directory. `contract.rs` beside them is not built here:
//! the vendor crates' contract suites include it with `#[path]` (it needs their HTTP and schema
//! dependencies).

pub mod fuzz_json;
