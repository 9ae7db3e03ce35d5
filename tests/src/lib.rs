//! Shared parts of Portcullis's end-to-end tests and local demo.
//!
//! [`demo_origin`] is the small origin that `cargo xtask dev` puts behind the edge Worker: it
//! trusts the identity headers the edge sets, and nothing else. [`harness`] is what the tests that
//! start real processes (`tests/edge.rs`, `tests/e2e.rs`, `tests/issuers.rs`) share; [`issuer`]
//! runs the issuer for `tests/e2e.rs` and `tests/issuers.rs`.

pub mod demo_origin;
pub mod harness;
pub mod issuer;
