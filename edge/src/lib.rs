//! The Portcullis edge: a Cloudflare Worker that verifies ES256 access tokens with the `jwks` core,
//! enforces the route policy's roles, and forwards allowed requests to the origin with identity
//! headers.
//!
//! The decisions are pure and build everywhere ([`config`], [`request`], [`decision`],
//! [`headers`], [`reply`], [`document_cache`], [`revocations`], [`counters`], [`assertion`], [`cors`]), so `cargo test -p edge` checks them
//! natively. The Worker itself (the fetch handler, the key set fetching, WebCrypto and forwarding)
//! only builds for `wasm32` and stays a thin shell of I/O around them, counting its decisions
//! where it makes them.

pub mod assertion;
pub mod config;
pub mod cors;
pub mod counters;
pub mod decision;
pub mod document_cache;
pub mod headers;
pub mod reply;
pub mod request;
pub mod revocations;
pub mod session;

#[cfg(target_arch = "wasm32")]
mod runtime;

#[cfg(test)]
mod testing {
    //! Helpers shared by the unit tests.

    use crate::config::Config;

    /// A valid configuration with a catch-all `authenticated` policy, changed by `extra`.
    pub(crate) fn config(extra: &[(&str, &str)]) -> Config {
        Config::from_lookup(|name| {
            extra.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned()).or_else(|| {
                match name {
                    "ISSUER" => Some("https://issuer.example"),
                    "AUDIENCE" => Some("api"),
                    "ORIGIN_URL" => Some("https://origin.example"),
                    "POLICY" => Some(r#"{"rules": [{"path": "/*", "access": "authenticated"}]}"#),
                    _ => None,
                }
                .map(str::to_owned)
            })
        })
        .expect("valid config")
    }

    /// Owned header pairs.
    pub(crate) fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }
}
