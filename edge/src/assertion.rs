//! The edge's assertions to the origin (`X-Portcullis-Assertion`): its signing keys from the
//! `ASSERTION_KEYS` secret, the JWKS it publishes at `/_portcullis/jwks.json`, what it signs for a
//! verified identity, and the reuse of an assertion for the same token. Pure: WebCrypto signs, in
//! the runtime shell.

use crate::decision::Identity;
use jwks::assertion::{AssertionClaims, MAX_ASSERTION_LIFETIME, signing_input};
use jwks::{Jwk, JwkSet, PublicKey, SERVICE_GRANT, SubjectKind};
use serde::Deserialize as _;
use std::collections::{HashMap, VecDeque};
use std::fmt;

pub use jwks::assertion::{ASSERTION_HEADER, MAX_ASSERTION_KEYS};

/// `Cache-Control: max-age` of `/_portcullis/jwks.json`: a key added to the secret is published
/// this long before it may sign (see the README's rotation steps).
pub const ASSERTION_JWKS_MAX_AGE: u64 = 300;

/// The key that signs: its `kid`, and its private JWK as WebCrypto's `importKey("jwk", ...)` takes it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningJwk {
    /// The key id in the assertion's header.
    pub kid: String,
    /// `{"kty":"EC","crv":"P-256","x":..,"y":..,"d":..}`.
    pub jwk: String,
}

impl fmt::Debug for SigningJwk {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private part.
        formatter.debug_struct("SigningJwk").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// The assertion settings: `ASSERTION_KEYS`, `ASSERTION_ISSUER`, `ASSERTION_TTL_SECONDS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionSettings {
    /// The first key of `ASSERTION_KEYS`.
    pub signer: SigningJwk,
    /// The body of `/_portcullis/jwks.json`: the public halves of every key.
    pub published: String,
    /// `iss` of the assertions.
    pub issuer: String,
    /// Their lifetime, in seconds.
    pub ttl_secs: u64,
}

/// Reads `ASSERTION_KEYS`: a JWK set of 1 to [`MAX_ASSERTION_KEYS`] P-256 keys with their private
/// parts and distinct `kid`s (a key without one gets its RFC 7638 thumbprint). The first signs;
/// all are published. The error never repeats a key.
pub fn parse_keys(text: &str) -> Result<(SigningJwk, String), String> {
    // The core's strict parser, and each key read as the core reads a JWKS's (one copy of that
    // code in the Worker).
    let not_a_set = || "is not a JWK set (JSON with \"keys\")".to_owned();
    let document = jwks::json::parse(text.as_bytes()).map_err(|_| not_a_set())?;
    let entries = document.get("keys").and_then(serde_json::Value::as_array).ok_or_else(not_a_set)?;
    if entries.is_empty() || entries.len() > MAX_ASSERTION_KEYS {
        return Err(format!("must hold 1 to {MAX_ASSERTION_KEYS} keys"));
    }
    let keys: Vec<Jwk> = entries
        .iter()
        .enumerate()
        .map(|(index, entry)| Jwk::deserialize(entry).map_err(|_| format!("key {index}: not a JWK")))
        .collect::<Result<_, _>>()?;
    let mut published = Vec::with_capacity(keys.len());
    let mut signer = None;
    for (index, jwk) in keys.iter().enumerate() {
        let private = jwk.d.as_deref().filter(|d| d.len() == 43 && d.bytes().all(is_base64url));
        let Some(private) = private else {
            return Err(format!("key {index}: needs its private part d (32 bytes, base64url)"));
        };
        let public =
            PublicKey::from_jwk(&Jwk { d: None, ..jwk.clone() }).map_err(|error| format!("key {index}: {error}"))?;
        let kid = jwk.kid.clone().unwrap_or_else(|| public.thumbprint().to_owned());
        if published.iter().any(|other: &Jwk| other.kid.as_deref() == Some(&kid)) {
            return Err(format!("key {index}: its kid is used twice"));
        }
        let mut shown = public.to_jwk();
        shown.kid = Some(kid.clone());
        shown.alg = Some("ES256".to_owned());
        shown.key_use = Some("sig".to_owned());
        if index == 0 {
            let (x, y) = (shown.x.clone().unwrap_or_default(), shown.y.clone().unwrap_or_default());
            let jwk = serde_json::json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y, "d": private }).to_string();
            signer = Some(SigningJwk { kid, jwk });
        }
        published.push(shown);
    }
    let body = serde_json::to_string(&JwkSet { keys: published }).map_err(|_| "cannot be published".to_owned())?;
    signer.map(|signer| (signer, body)).ok_or_else(|| "holds no key".to_owned())
}

fn is_base64url(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

/// What to sign for `identity`, sent to `audience` at `now` (Unix seconds): the JWS signing input
/// and the assertion's `exp` (at most `ttl_secs` away, and never after the access token's).
pub fn to_sign(
    settings: &AssertionSettings,
    audience: &str,
    identity: &Identity,
    jti: &str,
    now: u64,
) -> (String, u64) {
    let ttl = settings.ttl_secs.min(MAX_ASSERTION_LIFETIME);
    let exp = now.saturating_add(ttl).min(identity.expires_at.max(now));
    let claims = AssertionClaims {
        iss: &settings.issuer,
        aud: audience,
        sub: identity.subject.as_deref(),
        roles: &identity.roles,
        jti,
        iat: now,
        exp,
        token_jti: identity.token_id.as_deref(),
        gty: (identity.kind == SubjectKind::Service).then_some(SERVICE_GRANT),
    };
    (signing_input(&settings.signer.kid, &claims), exp)
}

/// Assertions made for access tokens, per isolate: one is handed out again for the same token
/// while more than half of its life is left, so a client sending one token many times does not
/// pay a signature per request. Bounded: the oldest entry goes first.
#[derive(Debug, Default)]
pub struct AssertionCache {
    capacity: usize,
    entries: HashMap<String, Made>,
    order: VecDeque<String>,
    hits: u64,
    misses: u64,
}

#[derive(Debug)]
struct Made {
    assertion: String,
    iat: u64,
    exp: u64,
}

impl AssertionCache {
    /// A cache of at most `capacity` assertions (0: none kept).
    pub fn new(capacity: usize) -> Self {
        Self { capacity, ..Self::default() }
    }

    /// The assertion made for `token`, if it still has more than half of its life at `now`.
    pub fn get(&mut self, token: &str, now: u64) -> Option<String> {
        let found = self
            .entries
            .get(token)
            .filter(|made| made.exp > now && (made.exp - now).saturating_mul(2) > made.exp.saturating_sub(made.iat))
            .map(|made| made.assertion.clone());
        if found.is_some() {
            self.hits += 1
        } else {
            self.misses += 1
        }
        found
    }

    /// Keeps `assertion`, made for `token` at `iat` and valid until `exp`.
    pub fn insert(&mut self, token: &str, assertion: String, iat: u64, exp: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(token.to_owned(), Made { assertion, iat, exp }).is_none() {
            self.order.push_back(token.to_owned());
        }
        while self.entries.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else { break };
            self.entries.remove(&oldest);
        }
    }

    /// Look-ups that found an assertion to reuse, and those that did not.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7515 Appendix A.3's key (public and private parts).
    const X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";

    fn set(keys: &[(&str, Option<&str>)]) -> String {
        let keys: Vec<_> = keys
            .iter()
            .map(|(d, kid)| {
                let mut key = serde_json::json!({ "kty": "EC", "crv": "P-256", "x": X, "y": Y, "d": d });
                if let Some(kid) = kid {
                    key["kid"] = (*kid).into();
                }
                key
            })
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    #[test]
    fn the_keys_are_read_and_only_their_public_halves_published() {
        let (signer, published) = parse_keys(&set(&[(D, Some("edge-1")), (D, Some("edge-2"))])).expect("valid");
        assert_eq!(signer.kid, "edge-1");
        assert!(signer.jwk.contains(D));
        assert!(!format!("{signer:?}").contains(D), "Debug hides d");
        assert!(!published.contains(D) && !published.contains("\"d\""), "{published}");
        let published: serde_json::Value = serde_json::from_str(&published).expect("JSON");
        assert_eq!(published["keys"][1]["kid"], "edge-2");
        assert_eq!(published["keys"][0]["alg"], "ES256");
        assert_eq!(published["keys"][0]["use"], "sig");
        let (signer, _) = parse_keys(&set(&[(D, None)])).expect("valid");
        assert_eq!(signer.kid.len(), 43, "the thumbprint when no kid is given");
    }

    #[test]
    fn bad_key_sets_are_refused_without_repeating_a_key() {
        let five = set(&[(D, Some("1")), (D, Some("2")), (D, Some("3")), (D, Some("4")), (D, Some("5"))]);
        let cases = [
            ("not json".to_owned(), "is not a JWK set"),
            (r#"{"keys": []}"#.to_owned(), "1 to 4 keys"),
            (five, "1 to 4 keys"),
            (set(&[("short", Some("a"))]), "needs its private part"),
            (set(&[(D, Some("a")), (D, Some("a"))]), "kid is used twice"),
            (set(&[(D, Some("a"))]).replace(X, &X.replace('f', "g")), "key 0"),
        ];
        for (text, expected) in cases {
            let error = parse_keys(&text).expect_err(expected);
            assert!(error.contains(expected), "{error} / {expected}");
            assert!(!error.contains(D), "{error}");
        }
    }

    #[test]
    fn an_assertion_never_outlives_the_access_token() {
        let (signer, published) = parse_keys(&set(&[(D, Some("edge-1"))])).expect("valid");
        let settings = AssertionSettings { signer, published, issuer: "portcullis-edge".to_owned(), ttl_secs: 60 };
        let identity = Identity {
            subject: Some("alice".to_owned()),
            roles: vec!["reader".to_owned()],
            issuer: "https://issuer.example".to_owned(),
            token_id: Some("t1".to_owned()),
            expires_at: 1_030,
            kind: SubjectKind::User,
        };
        let (input, exp) = to_sign(&settings, "https://origin.example", &identity, "a1", 1_000);
        assert_eq!(exp, 1_030);
        let payload = input.split('.').nth(1).expect("payload");
        let header = input.split('.').next().expect("header");
        let decode = |part: &str| -> serde_json::Value {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url");
            serde_json::from_slice(&bytes).expect("JSON")
        };
        assert_eq!(decode(header)["typ"], "portcullis-assertion+jwt");
        assert_eq!(decode(header)["kid"], "edge-1");
        let claims = decode(payload);
        assert_eq!((claims["aud"].as_str(), claims["sub"].as_str()), (Some("https://origin.example"), Some("alice")));
        assert_eq!((claims["token_jti"].as_str(), claims["iat"].as_u64()), (Some("t1"), Some(1_000)));
        assert!(claims.get("gty").is_none(), "a user's: no gty");
        let service = Identity { kind: SubjectKind::Service, ..identity.clone() };
        let (input, _) = to_sign(&settings, "o", &service, "a3", 1_000);
        assert_eq!(
            decode(input.split('.').nth(1).expect("payload"))["gty"],
            SERVICE_GRANT,
            "a service's, as its token said"
        );
        let long_lived = Identity { expires_at: 5_000, ..identity };
        assert_eq!(to_sign(&settings, "o", &long_lived, "a2", 1_000).1, 1_060);
    }

    #[test]
    fn assertions_are_reused_while_more_than_half_their_life_is_left() {
        let mut cache = AssertionCache::new(2);
        cache.insert("t1", "a1".to_owned(), 1_000, 1_060);
        assert_eq!(cache.get("t1", 1_029).as_deref(), Some("a1"));
        assert_eq!(cache.get("t1", 1_030), None, "half its life gone");
        assert_eq!(cache.get("t2", 1_000), None);
        cache.insert("t2", "a2".to_owned(), 1_000, 1_060);
        cache.insert("t3", "a3".to_owned(), 1_000, 1_060);
        assert_eq!(cache.get("t1", 1_001), None, "the oldest went first");
        assert_eq!(cache.get("t3", 1_001).as_deref(), Some("a3"));
        assert_eq!(cache.counts(), (2, 3));
        let mut off = AssertionCache::new(0);
        off.insert("t1", "a1".to_owned(), 1_000, 1_060);
        assert_eq!(off.get("t1", 1_001), None);
    }
}
