//! Differential tests against jwt-simple: tokens it signs verify in the core with the same claims,
//! and, where the two rule sets overlap, both accept and refuse exactly the same tokens.

mod support;

use jwks::{KeySet, P256Verifier, PublicKey, Validator};
use jwt_simple::algorithms::ECDSAP256PublicKeyLike as _;
use jwt_simple::prelude::*;
use proptest::prelude::*;
use std::collections::HashSet;
use support::{AUDIENCE, ISSUER, NOW};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoleClaims {
    roles: Vec<String>,
}

#[derive(Debug, Clone)]
struct Case {
    iat_offset: i64,
    lifetime: u64,
    nbf_offset: Option<i64>,
    issuer: &'static str,
    audiences: Vec<&'static str>,
    subject: String,
    roles: Vec<String>,
    tamper: Option<(usize, u8)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        -4000i64..200,
        1u64..3600,
        proptest::option::of(-200i64..200),
        prop::sample::select(vec![ISSUER, "https://issuer.test/", "https://other.test"]),
        prop::collection::vec(prop::sample::select(vec![AUDIENCE, "other", "apis"]), 1..3),
        "[a-zA-Z0-9@._-]{1,24}",
        prop::collection::vec("[a-z]{1,8}", 0..4),
        proptest::option::weighted(0.2, (0usize..1000, 1u8..255)),
    )
        .prop_map(|(iat_offset, lifetime, nbf_offset, issuer, audiences, subject, roles, tamper)| Case {
            iat_offset,
            lifetime,
            nbf_offset,
            issuer,
            audiences,
            subject,
            roles,
            tamper,
        })
        // Stay off the one boundary where the two libraries round differently (now - leeway == exp).
        .prop_filter("not on the expiry boundary", |case| {
            (NOW as i64 + case.iat_offset) + case.lifetime as i64 != NOW as i64 - 60
        })
}

struct Signer {
    key_pair: ES256KeyPair,
    keys: KeySet,
    public: ES256PublicKey,
}

fn signer() -> Signer {
    let key_pair = ES256KeyPair::from_bytes(&[0x17; 32]).expect("key");
    let public = key_pair.public_key();
    let core_key = core_key_of(&public);
    let key_pair = key_pair.with_key_id(core_key.thumbprint());
    Signer { key_pair, keys: KeySet::from_keys([core_key]), public }
}

/// The same key in the core, through its uncompressed SEC1 bytes.
fn core_key_of(public: &ES256PublicKey) -> PublicKey {
    PublicKey::from_sec1(&public.public_key().to_bytes_uncompressed()).expect("converts")
}

fn mint(signer: &Signer, case: &Case) -> String {
    let iat = (NOW as i64 + case.iat_offset) as u64;
    let mut claims = Claims::with_custom_claims(RoleClaims { roles: case.roles.clone() }, Duration::from_secs(1))
        .with_issuer(case.issuer)
        .with_subject(&case.subject)
        .with_audiences(case.audiences.iter().copied().collect::<HashSet<_>>());
    claims.issued_at = Some(Duration::from_secs(iat));
    claims.expires_at = Some(Duration::from_secs(iat + case.lifetime));
    claims.invalid_before = case.nbf_offset.map(|offset| Duration::from_secs((NOW as i64 + offset) as u64));
    let options = HeaderOptions { signature_type: Some("at+jwt".to_owned()), ..HeaderOptions::default() };
    let token = signer.key_pair.sign_with_options(claims, &options).expect("signs");
    match case.tamper {
        None => token,
        Some((at, flip)) => {
            let mut bytes = token.into_bytes();
            let at = at % bytes.len();
            // Keep the token in the base64url alphabet so that both libraries reach the signature.
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            if bytes[at] != b'.' {
                let position = alphabet.iter().position(|c| *c == bytes[at]).unwrap_or(0);
                bytes[at] = alphabet[(position + usize::from(flip)) % 64];
            }
            String::from_utf8(bytes).expect("ASCII")
        }
    }
}

fn jwt_simple_accepts(signer: &Signer, token: &str) -> bool {
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([ISSUER.to_owned()])),
        allowed_audiences: Some(HashSet::from([AUDIENCE.to_owned()])),
        time_tolerance: Some(Duration::from_secs(60)),
        artificial_time: Some(Duration::from_secs(NOW)),
        required_signature_type: Some("at+jwt".to_owned()),
        ..VerificationOptions::default()
    };
    signer.public.verify_token::<RoleClaims>(token, Some(options)).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn core_and_jwt_simple_agree(case in case()) {
        let signer = signer();
        let token = mint(&signer, &case);
        let validator = Validator::new(support::options());
        let core = validator.validate(&token, &signer.keys, &P256Verifier, NOW);
        let theirs = jwt_simple_accepts(&signer, &token);
        prop_assert_eq!(core.is_ok(), theirs, "core: {:?}, case {:?}", core, case);
        if let Ok(claims) = core {
            prop_assert_eq!(claims.sub.as_deref(), Some(case.subject.as_str()));
            prop_assert_eq!(claims.roles, case.roles);
            prop_assert_eq!(claims.iat, (NOW as i64 + case.iat_offset) as u64);
            prop_assert_eq!(claims.exp, claims.iat + case.lifetime);
            let mut audiences = claims.aud.clone();
            audiences.sort();
            let mut expected: Vec<String> = case.audiences.iter().map(|a| (*a).to_owned()).collect::<HashSet<_>>().into_iter().collect();
            expected.sort();
            prop_assert_eq!(audiences, expected);
        }
    }
}

#[test]
fn the_same_key_has_the_same_kid_on_both_sides() {
    let signer = signer();
    let core_key = core_key_of(&signer.public);
    assert_eq!(signer.public.jwk_thumbprint(), core_key.thumbprint());
}

#[test]
fn an_issuer_key_pair_converts_through_sec1_both_ways() {
    // How the issuer builds the core's key from its jwt-simple key pair (there is no jwt-simple
    // conversion in the core): the uncompressed SEC1 bytes of the pair's public key.
    use jwt_simple::algorithms::ECDSAP256KeyPairLike as _;
    let pair = ES256KeyPair::from_bytes(&[0x17; 32]).expect("key pair");
    let core_key = PublicKey::from_sec1(&pair.key_pair().public_key().to_bytes_uncompressed()).expect("converts");
    assert_eq!(core_key, core_key_of(&pair.public_key()));
    assert_eq!(core_key.thumbprint(), pair.public_key().jwk_thumbprint());
    // And back: jwt-simple takes the core's SEC1 encoding as the same key.
    let theirs = ES256PublicKey::from_bytes(&core_key.to_sec1()).expect("jwt-simple imports it");
    assert_eq!(theirs.to_bytes(), pair.public_key().to_bytes());
}
