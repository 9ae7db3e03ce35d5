//! Shared parts of Portcullis's end-to-end tests and local demo.
//!
//! [`demo_origin`] is the small origin that `cargo xtask dev` puts behind the edge Worker: it
//! trusts the edge's signed assertion (`X-Portcullis-Assertion`), and nothing else. [`harness`] is
//! what the tests that start real processes (`tests/edge.rs`, `tests/e2e.rs`, `tests/issuers.rs`)
//! share; [`issuer`] runs the issuer for `tests/e2e.rs` and `tests/issuers.rs`; [`browser`] drives
//! headless Chromium through WebDriver (`tests/browser.rs`, `tests/signin_browser.rs`).

pub mod browser;
pub mod demo_origin;
pub mod harness;
pub mod issuer;
/// Signing in at the issuer over plain HTTP: a cookie jar, the login page, the authorization-code
/// flow by hand (`tests/oidc.rs`, `tests/e2e.rs`).
pub mod signin;
