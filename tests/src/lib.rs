//! Shared parts of Portcullis's end-to-end tests and local demo.
//!
//! [`demo_origin`] is the small origin that `cargo xtask dev` puts behind the edge Worker: it
//! trusts the identity headers the edge sets, and nothing else.

pub mod demo_origin;
