//! No input makes parsing or verification panic, and the asynchronous path agrees with the
//! synchronous one.

mod support;

use jwks::{AsyncEs256Verifier, KeySet, P256Verifier, Policy, PublicKey, UntrustedToken, Validator};
use proptest::prelude::*;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use support::{NOW, TestKey, claims, options};

/// Polls a future that never waits (all futures in this file are ready at once).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the future was not ready"),
    }
}

/// An asynchronous backend in the shape of WebCrypto's: a future per check.
struct DeferredBackend;

impl AsyncEs256Verifier for DeferredBackend {
    fn verify_es256(&self, key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> impl Future<Output = bool> {
        let verdict = jwks::Es256Verifier::verify_es256(&P256Verifier, key, message, signature);
        async move { verdict }
    }
}

fn token_like() -> impl Strategy<Value = String> {
    let key = TestKey::new(3);
    let good = key.sign_claims(&claims(&[]));
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_.=+/ -]{0,300}",
        (0usize..good.len(), any::<char>()).prop_map(move |(at, c)| {
            let mut text = good.clone();
            if text.is_char_boundary(at) {
                text.insert(at, c);
            }
            text
        }),
        prop::collection::vec("[A-Za-z0-9_-]{0,60}", 0..5).prop_map(|parts| parts.join(".")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn token_parsing_and_validation_never_panic(text in token_like()) {
        let key = TestKey::new(3);
        let keys = KeySet::parse(key.jwks().as_bytes()).expect("key set");
        let _ = UntrustedToken::parse(&text);
        let validator = Validator::new(options());
        let sync = validator.validate(&text, &keys, &P256Verifier, NOW);
        let deferred = ready(validator.validate_async(&text, &keys, &DeferredBackend, NOW));
        prop_assert_eq!(sync, deferred);
    }

    #[test]
    fn key_set_parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = KeySet::parse(&bytes);
    }

    #[test]
    fn key_set_parsing_of_json_like_input_never_panics(text in r#"\{"keys":\[(\{("[a-z]{1,4}":("[A-Za-z0-9_-]{0,50}"|[0-9]{1,3}|null|\[\]),?){0,8}\},?){0,4}\]\}"#) {
        let _ = KeySet::parse(text.as_bytes());
    }

    #[test]
    fn policy_parsing_never_panics(text in any::<String>()) {
        if let Ok(policy) = Policy::parse(&text) {
            let _ = policy.route("GET", "/");
        }
    }
}

#[test]
fn async_and_sync_agree_on_a_good_token() {
    let key = TestKey::new(3);
    let keys = KeySet::parse(key.jwks().as_bytes()).expect("key set");
    let token = key.sign_claims(&claims(&[]));
    let validator = Validator::new(options());
    let sync = validator.validate(&token, &keys, &P256Verifier, NOW).expect("valid");
    let deferred = ready(validator.validate_async(&token, &keys, &DeferredBackend, NOW)).expect("valid");
    let blanket = ready(validator.validate_async(&token, &keys, &P256Verifier, NOW)).expect("valid");
    assert_eq!(sync, deferred);
    assert_eq!(sync, blanket);
}
