//! The domain layer: what the issuer knows and decides, with no notion of HTTP. Each module owns
//! its rules and its error type; its SQL lives in the matching module of [`crate::store`].
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`keys`] | signing keys, their lifecycle, the pure rotation planner ([`keys::rotation`]) |
//! | [`published`] | the JWKS as served, rebuilt when the key set moves |
//! | [`tokens`] | what an access token and an ID token hold, and the rules they are minted under |
//! | [`accounts`] | users and service clients |
//! | [`address`] | client addresses: trusted proxies' headers, IPv6 /64 grouping |
//! | [`sessions`] | refresh-token families, the pure refresh decision, revocations, the pure login limits |
//! | [`signin`] | browser sign-in: browser sessions, sign-in links, authorization codes, PKCE, mail |
//! | [`secrets`] | password hashing, random secrets and their stored hashes |
//! | [`kek`] | the key-encryption key that seals private keys at rest |

pub mod accounts;
pub mod address;
pub mod kek;
pub mod keys;
pub(crate) mod published;
pub mod secrets;
pub mod sessions;
pub mod signin;
pub mod tokens;
