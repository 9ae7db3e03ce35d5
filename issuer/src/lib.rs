//! The Portcullis issuer: ES256 signing keys that rotate on their own, the JWKS and discovery
//! documents, and access tokens (RFC 9068).
//!
//! [`app`] builds the axum [`Router`](axum::Router) over an [`AppState`]; the `issuer` binary
//! wraps both in a CLI (`serve`, `keys list | rotate | revoke`, `token mint`, `users ...`,
//! `clients ...`). Users log in at the OAuth token endpoint; their refresh tokens rotate
//! ([`sessions`]). Token rules are not
//! written here: key ids, the published JWKS and the check of admin tokens all come from the
//! `jwks` core that the edge verifier uses too.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use issuer::{AppState, app, clock::SystemClock, config::Config, kek::Kek};
//! use std::sync::Arc;
//!
//! let config = Config::load(None, std::env::vars())?;
//! let state = AppState::open(config, Kek::generate(), Arc::new(SystemClock)).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app(state)).await?;
//! # Ok(()) }
//! ```

pub mod accounts;
pub mod clock;
pub mod config;
pub mod db;
mod error;
mod http;
mod jwks_cache;
pub mod kek;
pub mod keys;
mod oauth;
pub mod secrets;
pub mod sessions;
mod state;
pub mod token;

pub use error::ApiError;
pub use http::{ADMIN_ROLE, MAX_BODY_BYTES, REQUEST_TIMEOUT, app};
pub use state::{AppState, StartError, list_keys};
