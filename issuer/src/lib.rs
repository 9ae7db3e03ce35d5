//! The Portcullis issuer: ES256 signing keys that rotate on their own, the JWKS and discovery
//! documents, and access tokens (RFC 9068).
//!
//! Three layers, with imports that run one way:
//!
//! - [`http`]: the axum [`Router`](axum::Router) built by [`app`] (one router per area, merged
//!   in one place), the extractors, and the one mapping from domain errors to status codes and
//!   RFC 6749 bodies;
//! - the domain ([`AppState`] and [`domain`]): keys, tokens, accounts and sessions, with their
//!   pure decisions (the rotation planner, the refresh decision) apart from their I/O; it knows
//!   nothing of HTTP;
//! - [`store`]: the pool, the migrations, and each table's SQL with its rows as types.
//!
//! [`config`] is parsed once, by the binary, and handed down. The `issuer` binary (`src/main.rs`
//! and `src/cli/`) wraps all this in a CLI (`serve`, `keys`, `token mint`, `users`, `clients`).
//! Token rules are not written here: key ids, the published JWKS and the check of admin tokens
//! all come from the `jwks` core that the edge verifier uses too. See `docs/DESIGN.md`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use issuer::{AppState, app, clock::SystemClock, config::Config, domain::kek::Kek};
//! use std::sync::Arc;
//!
//! let config = Config::load(None, std::env::vars())?;
//! let state = AppState::open(config, Kek::generate(), Arc::new(SystemClock)).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app(state)).await?;
//! # Ok(()) }
//! ```

pub mod clock;
pub mod config;
pub mod domain;
pub mod duration;
pub mod http;
pub mod metrics;
mod state;
pub mod store;

pub use http::{ApiError, MAX_BODY_BYTES, REQUEST_TIMEOUT, app};
pub use state::{ADMIN_ROLE, AppState, CodeTokens, LoginError, StartError, TokenError, list_keys};
