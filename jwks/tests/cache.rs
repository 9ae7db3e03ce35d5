//! The verified-token cache: a token seen again skips the signature check, never the time checks,
//! and never outlives the key that verified it.

mod support;

use jwks::{
    ClaimsError, Es256Verifier, KeySet, P256Verifier, PublicKey, SignatureError, TokenCache, Validator, VerifyError,
};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use support::{NOW, TestKey, claims, options};

/// Polls a future that never waits (the backends here answer at once).
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the future was not ready"),
    }
}

/// p256, counting the signature checks it is asked for.
#[derive(Default)]
struct Counting {
    checks: Cell<u32>,
}

impl Es256Verifier for Counting {
    fn verify_es256(&self, key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> bool {
        self.checks.set(self.checks.get() + 1);
        P256Verifier.verify_es256(key, message, signature)
    }
}

struct Setup {
    validator: Validator,
    backend: Counting,
    cache: RefCell<TokenCache>,
}

impl Setup {
    fn new(capacity: usize) -> Self {
        Self {
            validator: Validator::new(options()),
            backend: Counting::default(),
            cache: RefCell::new(TokenCache::new(capacity)),
        }
    }

    fn validate(&self, token: &str, keys: &KeySet, now: u64) -> Result<jwks::Claims, VerifyError> {
        ready(self.validator.validate_async_cached(token, keys, &self.backend, now, &self.cache))
    }

    fn checks(&self) -> u32 {
        self.backend.checks.get()
    }
}

#[test]
fn a_token_seen_again_skips_the_signature_check_and_gives_the_same_claims() {
    let key = TestKey::new(1);
    let keys = KeySet::from_keys([key.public.clone()]);
    let token = key.sign_claims(&claims(&[]));
    let setup = Setup::new(16);
    let first = setup.validate(&token, &keys, NOW).expect("valid");
    let again = setup.validate(&token, &keys, NOW + 10).expect("valid from the cache");
    assert_eq!(first, again);
    assert_eq!(setup.checks(), 1);
    assert_eq!(setup.cache.borrow().len(), 1);
}

#[test]
fn time_checks_run_at_every_look_up() {
    let key = TestKey::new(1);
    let keys = KeySet::from_keys([key.public.clone()]);
    let token = key.sign_claims(&claims(&[]));
    let setup = Setup::new(16);
    setup.validate(&token, &keys, NOW).expect("valid");
    // exp is NOW + 300, with 60 s of leeway.
    let expired = setup.validate(&token, &keys, NOW + 360);
    assert_eq!(expired, Err(VerifyError::Claims(ClaimsError::Expired)));
    assert!(setup.cache.borrow().is_empty(), "an expired token leaves the cache");
    // Before nbf (beyond the leeway), a token that was valid later is refused.
    let later = key.sign_claims(&claims(&[("nbf", &(NOW + 100).to_string()), ("iat", &(NOW + 100).to_string())]));
    setup.validate(&later, &keys, NOW + 100).expect("valid at nbf");
    assert_eq!(setup.validate(&later, &keys, NOW).map(|_| ()), Err(VerifyError::Claims(ClaimsError::NotYetValid)));
}

#[test]
fn a_token_goes_with_the_key_that_verified_it() {
    let (k1, k2) = (TestKey::new(1), TestKey::new(2));
    let both = KeySet::from_keys([k1.public.clone(), k2.public.clone()]);
    let token = k1.sign_claims(&claims(&[]));
    let setup = Setup::new(16);
    setup.validate(&token, &both, NOW).expect("valid");
    // The key left the set (rotated out or revoked): the token is refused, not served from the cache.
    let only_k2 = KeySet::from_keys([k2.public.clone()]);
    assert_eq!(setup.validate(&token, &only_k2, NOW), Err(VerifyError::Signature(SignatureError::UnknownKid)));
    // Another key published under the same kid does not inherit the entry.
    let jwks = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"{}","x":"{}","y":"{}"}}]}}"#,
        k1.kid(),
        jwk_member(&k2, "x"),
        jwk_member(&k2, "y")
    );
    let impostor = KeySet::parse(jwks.as_bytes()).expect("a key set");
    setup.validate(&token, &both, NOW).expect("valid again, checked again");
    let checks = setup.checks();
    assert_eq!(setup.validate(&token, &impostor, NOW), Err(VerifyError::Signature(SignatureError::Invalid)));
    assert_eq!(setup.checks(), checks + 1, "checked against the new key");
}

fn jwk_member(key: &TestKey, member: &str) -> String {
    let jwk: serde_json::Value = serde_json::from_str(&key.jwks()).expect("JSON");
    jwk["keys"][0][member].as_str().expect("a coordinate").to_owned()
}

#[test]
fn refused_tokens_are_never_kept() {
    let (k1, k2) = (TestKey::new(1), TestKey::new(2));
    let keys = KeySet::from_keys([k1.public.clone()]);
    let setup = Setup::new(16);
    // Signed by another key under k1's kid: a bad signature, each time.
    let forged = k2.sign_raw(&format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}"}}"#, k1.kid()), &claims(&[]));
    for _ in 0..2 {
        assert_eq!(setup.validate(&forged, &keys, NOW), Err(VerifyError::Signature(SignatureError::Invalid)));
    }
    assert_eq!(setup.checks(), 2);
    // A good signature over claims that fail (wrong audience): checked each time, never kept.
    let wrong_audience = k1.sign_claims(&claims(&[("aud", r#""billing""#)]));
    for _ in 0..2 {
        assert_eq!(setup.validate(&wrong_audience, &keys, NOW), Err(VerifyError::Claims(ClaimsError::WrongAudience)));
    }
    assert_eq!(setup.checks(), 4);
    assert!(setup.cache.borrow().is_empty());
    // The good token with its signature altered is another token: checked, refused.
    let good = k1.sign_claims(&claims(&[]));
    setup.validate(&good, &keys, NOW).expect("valid");
    let (input, signature) = good.rsplit_once('.').expect("three parts");
    let mut altered = signature.to_owned();
    altered.replace_range(..1, if signature.starts_with('A') { "B" } else { "A" });
    assert!(setup.validate(&format!("{input}.{altered}"), &keys, NOW).is_err());
}

#[test]
fn entries_count_only_under_the_options_they_were_checked_with() {
    let key = TestKey::new(1);
    let keys = KeySet::from_keys([key.public.clone()]);
    let token = key.sign_claims(&claims(&[]));
    let setup = Setup::new(16);
    setup.validate(&token, &keys, NOW).expect("valid for api");
    // Another validator (another audience) sharing the cache checks the token itself: refused.
    let billing = Validator::new(jwks::ClaimsOptions::new(support::ISSUER, ["billing"]));
    let refused = ready(billing.validate_async_cached(&token, &keys, &setup.backend, NOW, &setup.cache));
    assert_eq!(refused, Err(VerifyError::Claims(ClaimsError::WrongAudience)));
    assert_eq!(setup.checks(), 2);
    // A token that passes under those options replaces the entries kept under the first ones.
    let for_billing = key.sign_claims(&claims(&[("aud", r#""billing""#)]));
    ready(billing.validate_async_cached(&for_billing, &keys, &setup.backend, NOW, &setup.cache)).expect("valid");
    assert_eq!(setup.cache.borrow().len(), 1);
    setup.validate(&token, &keys, NOW).expect("valid for api, checked again");
    assert_eq!(setup.checks(), 4);
}

#[test]
fn the_oldest_entry_makes_room_and_zero_keeps_none() {
    let key = TestKey::new(1);
    let keys = KeySet::from_keys([key.public.clone()]);
    let tokens: Vec<String> = (0..3).map(|i| key.sign_claims(&claims(&[("jti", &format!("\"t-{i}\""))]))).collect();
    let setup = Setup::new(2);
    for token in &tokens {
        setup.validate(token, &keys, NOW).expect("valid");
    }
    assert_eq!((setup.cache.borrow().len(), setup.checks()), (2, 3));
    setup.validate(&tokens[2], &keys, NOW).expect("valid");
    setup.validate(&tokens[1], &keys, NOW).expect("valid");
    assert_eq!(setup.checks(), 3, "the two newest are held");
    setup.validate(&tokens[0], &keys, NOW).expect("valid");
    assert_eq!(setup.checks(), 4, "the oldest was dropped");

    let none = Setup::new(0);
    for _ in 0..3 {
        none.validate(&tokens[0], &keys, NOW).expect("valid");
    }
    assert_eq!((none.cache.borrow().len(), none.checks()), (0, 3));
}

#[test]
fn the_cache_counts_its_hits_and_misses() {
    let key = TestKey::new(1);
    let keys = KeySet::from_keys([key.public.clone()]);
    let token = key.sign_claims(&claims(&[]));
    let setup = Setup::new(16);
    setup.validate(&token, &keys, NOW).expect("valid");
    setup.validate(&token, &keys, NOW).expect("valid");
    setup.validate(&token, &keys, NOW).expect("valid");
    let mut bad = token.clone();
    bad.replace_range(bad.len() - 4.., "AAAA");
    setup.validate(&bad, &keys, NOW).expect_err("a bad signature");
    let cache = setup.cache.borrow();
    assert_eq!((cache.hits(), cache.misses()), (2, 2), "one check of each token, then two answers from the cache");
    assert_eq!(setup.checks(), 2);
}
