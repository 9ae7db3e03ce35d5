//! The rotation timeline under a manual clock, checked the way verifiers see it: through the
//! served JWKS, parsed and used by the `jwks` core.

use crate::common::{T0, TestIssuer};
use issuer::domain::keys::{KeyInfo, KeyState};
use jwks::{KeySet, P256Verifier, SignatureError, VerifyError};
use std::time::Duration;

const STEP: u64 = 30;
const MAX_AGE: u64 = 300;
const TTL: u64 = 300;
const LEEWAY: u64 = 60;
const PERIOD: u64 = 3600;

fn active_count(keys: &[KeyInfo]) -> usize {
    keys.iter().filter(|key| key.state == KeyState::Active).count()
}

#[tokio::test]
async fn keys_rotate_without_a_verifier_noticing() {
    let issuer =
        TestIssuer::start(&[("rotation_period", "1h"), ("access_token_ttl", "5m"), ("jwks_max_age", "5m")]).await;
    let validator = issuer.validator();
    let app = issuer.app();
    let first_kid = issuer.state.keys().signer().await.expect("active").kid().to_owned();
    // Every distinct JWKS served, with when it was first and last served; every token minted.
    let mut served: Vec<(u64, u64, KeySet)> = Vec::new();
    let mut tokens: Vec<(u64, String, String)> = Vec::new();

    let end = T0 + 5 * PERIOD + 600;
    while issuer.now() < end {
        let now = issuer.now();
        issuer.state.sync().await.expect("scheduled step");
        let keys = issuer.state.keys().list().await.expect("list");
        assert_eq!(active_count(&keys), 1, "exactly one active key at {now}");
        assert!(keys.iter().filter(|key| key.state == KeyState::Next).count() <= 1);
        assert!(keys.iter().filter(|key| key.state.is_published()).count() <= 3, "the key set stays small");

        let current = crate::common::key_set(&app).await;
        let changed = match served.last_mut() {
            Some((_, last_served, last)) if *last == current => {
                *last_served = now;
                false
            }
            _ => {
                served.push((now, now, current.clone()));
                true
            }
        };
        let minted = issuer.mint(&["reader"]).await;
        tokens.push((now, minted.kid.clone(), minted.token.clone()));

        // A verifier that fetched the JWKS at any moment within max-age knows the signing key.
        for (first_served, _, cached) in served.iter().filter(|(_, last_served, _)| now - last_served < MAX_AGE) {
            let verdict = validator.validate(&minted.token, cached, &P256Verifier, now);
            assert!(verdict.is_ok(), "token of {now} against the JWKS first served at {first_served}: {verdict:?}");
        }
        // Every token still within its lifetime verifies with the JWKS as published now (which
        // only needs checking when the JWKS changed).
        if changed {
            for (minted_at, kid, token) in tokens.iter().filter(|(at, _, _)| now < at + TTL + LEEWAY) {
                let verdict = validator.validate(token, &current, &P256Verifier, now);
                assert!(verdict.is_ok(), "token of {minted_at} (kid {kid}) at {now}: {verdict:?}");
            }
        }
        issuer.advance(Duration::from_secs(STEP));
    }
    assert!(served.len() >= 10, "the JWKS changed at each publication and retirement");

    let keys = issuer.state.keys().list().await.expect("list");
    let rotations = keys.iter().filter(|key| key.activated_at.is_some()).count() - 1;
    assert_eq!(rotations, 5, "one rotation per period: {keys:#?}");
    for key in &keys {
        if let Some(activated_at) = key.activated_at.filter(|_| key.kid != first_kid) {
            assert!(activated_at - key.published_at >= MAX_AGE, "{} signed before its publish lead", key.kid);
        }
        if let (Some(retiring), Some(retired)) = (key.retiring_at, key.retired_at) {
            assert!(retired - retiring >= TTL + LEEWAY, "{} retired too early", key.kid);
            assert!(retired - retiring <= TTL + LEEWAY + STEP, "{} retired late", key.kid);
        }
    }
    assert!(keys.iter().filter(|key| key.state == KeyState::Retired).count() >= 4);
    // The key of the first token is gone now, and a verifier refuses its tokens by kid.
    let (_, first_kid_used, first_token) = &tokens[0];
    let verdict = validator.validate(first_token, &issuer.key_set().await, &P256Verifier, issuer.now());
    assert!(
        matches!(verdict, Err(VerifyError::Signature(SignatureError::UnknownKid))),
        "{first_kid_used}: {verdict:?}"
    );
}

#[tokio::test]
async fn emergency_revocation_of_the_active_key() {
    let issuer = TestIssuer::start(&[]).await;
    let validator = issuer.validator();
    let before = issuer.mint(&[]).await;
    let revoked = issuer.state.revoke_key(&before.kid).await.expect("revokes");
    assert_eq!(revoked.previous_state, KeyState::Active);
    assert_ne!(revoked.active, before.kid, "a new key signs at once");

    let keys = issuer.key_set().await;
    assert!(keys.get(&before.kid).is_none(), "removed from the JWKS at once");
    let verdict = validator.validate(&before.token, &keys, &P256Verifier, issuer.now());
    assert!(matches!(verdict, Err(VerifyError::Signature(SignatureError::UnknownKid))), "{verdict:?}");
    let after = issuer.mint(&[]).await;
    assert_eq!(after.kid, revoked.active);
    validator.validate(&after.token, &keys, &P256Verifier, issuer.now()).expect("the replacement is published");
    let listed = issuer.state.keys().list().await.expect("list");
    assert_eq!(active_count(&listed), 1);
}

#[tokio::test]
async fn revoking_the_active_key_promotes_the_published_next_key() {
    let issuer = TestIssuer::start(&[]).await;
    let active = issuer.mint(&[]).await.kid;
    let issuer::domain::keys::Rotation::Scheduled { next, .. } = issuer.state.rotate_keys().await.expect("rotate")
    else {
        panic!("the first rotation only schedules");
    };
    let revoked = issuer.state.revoke_key(&active).await.expect("revokes");
    assert_eq!(revoked.active, next, "the key verifiers already have takes over");
    assert_eq!(issuer.key_set().await.kids().collect::<Vec<_>>(), [next.as_str()]);

    // Revoking the next key leaves the active one alone; the schedule publishes a new next key.
    let issuer = TestIssuer::start(&[]).await;
    let active = issuer.mint(&[]).await.kid;
    let issuer::domain::keys::Rotation::Scheduled { next, .. } = issuer.state.rotate_keys().await.expect("rotate")
    else {
        panic!("the first rotation only schedules");
    };
    let revoked = issuer.state.revoke_key(&next).await.expect("revokes");
    assert_eq!((revoked.previous_state, revoked.active.as_str()), (KeyState::Next, active.as_str()));
    assert_eq!(issuer.key_set().await.len(), 1);
    issuer.advance(Duration::from_secs(24 * 3600));
    issuer.state.sync().await.expect("sync");
    assert_eq!(issuer.key_set().await.len(), 2, "the schedule publishes a new next key");
}

#[tokio::test]
async fn rotation_on_demand_stops_at_the_key_set_limit() {
    let issuer = TestIssuer::start(&[("jwks_max_age", "0s"), ("retire_delay", "1d")]).await;
    let mut saw_limit = false;
    for _ in 0..4 * issuer::domain::keys::MAX_PUBLISHED_KEYS {
        match issuer.state.rotate_keys().await {
            Ok(_) => {}
            Err(issuer::domain::keys::KeyStoreError::TooManyKeys) => {
                saw_limit = true;
                break;
            }
            Err(other) => panic!("{other}"),
        }
        issuer.advance(Duration::from_secs(10));
    }
    assert!(saw_limit);
    assert_eq!(issuer.key_set().await.len(), issuer::domain::keys::MAX_PUBLISHED_KEYS);
}
