//! Signing the edge's assertions with WebCrypto: the first key of `ASSERTION_KEYS`, imported once
//! per isolate as a non-extractable key (`crypto.subtle.importKey("jwk", ...)`), signs with
//! `crypto.subtle.sign` (ECDSA P-256, SHA-256, raw `r || s`: what a JWS needs).

use super::webcrypto::with_subtle;
use crate::assertion::SigningJwk;
use crate::reply::event_log;
use js_sys::futures::JsFuture;
use serde_json::json;
use std::cell::OnceCell;
use wasm_bindgen::{JsCast as _, JsValue};
use web_sys::{CryptoKey, EcKeyImportParams, EcdsaParams};
use worker::console_error;

thread_local! {
    /// The imported signing key; `None` when it does not import (a bad private part).
    static SIGNER: OnceCell<Option<CryptoKey>> = const { OnceCell::new() };
}

/// The signing key, imported on first use. Requests that arrive while it is being imported import
/// it too; the first result is kept.
async fn signer(jwk: &SigningJwk) -> Option<CryptoKey> {
    if let Some(imported) = SIGNER.with(|cell| cell.get().cloned()) {
        return imported;
    }
    let imported = import(jwk).await;
    SIGNER.with(|cell| cell.get_or_init(|| imported).clone())
}

/// Imports the private key, and checks that it is the key its published half says: a probe
/// signed with it must verify under `x`, `y` (a `d` of another key would sign assertions that no
/// origin accepts). `None`, logged once per isolate, when either fails.
async fn import(jwk: &SigningJwk) -> Option<CryptoKey> {
    let private = js_sys::JSON::parse(&jwk.jwk).ok()?;
    let public = js_sys::JSON::parse(&jwk.jwk).ok()?;
    js_sys::Reflect::delete_property(public.unchecked_ref::<js_sys::Object>(), &JsValue::from_str("d")).ok()?;
    let (Some(signer), Some(verifier)) = (import_as(&private, "sign").await, import_as(&public, "verify").await) else {
        console_error!(
            "{}",
            event_log("assertion_key_unusable", json!({ "kid": jwk.kid, "reason": "does not import" }))
        );
        return None;
    };
    let probe = b"portcullis assertion key check";
    let signed = sign_with(&signer, probe).await;
    let matches = match signed {
        Some(signature) => verify_with(&verifier, &signature, probe).await,
        None => false,
    };
    if !matches {
        let detail = json!({ "kid": jwk.kid, "reason": "d is not the private part of x, y" });
        console_error!("{}", event_log("assertion_key_unusable", detail));
        return None;
    }
    Some(signer)
}

async fn import_as(key_data: &JsValue, usage: &str) -> Option<CryptoKey> {
    let promise = with_subtle(|subtle| {
        let params = EcKeyImportParams::new("ECDSA");
        params.set_named_curve("P-256");
        let usages = js_sys::Array::of1(&JsValue::from_str(usage));
        subtle.subtle.import_key_with_object("jwk", key_data.unchecked_ref(), &params, false, &usages)
    })?
    .ok()?;
    let imported = JsFuture::from(promise).await.ok()?;
    imported.is_object().then(|| imported.unchecked_into())
}

async fn sign_with(key: &CryptoKey, message: &[u8]) -> Option<[u8; 64]> {
    let promise = with_subtle(|subtle| {
        let params = EcdsaParams::new_with_str("ECDSA", "SHA-256");
        subtle.subtle.sign_with_object_and_u8_array(&params, key, message)
    })?
    .ok()?;
    let signature = JsFuture::from(promise).await.ok()?;
    js_sys::Uint8Array::new(&signature).to_vec().try_into().ok()
}

async fn verify_with(key: &CryptoKey, signature: &[u8; 64], message: &[u8]) -> bool {
    let promise = with_subtle(|subtle| {
        let params = EcdsaParams::new_with_str("ECDSA", "SHA-256");
        subtle.subtle.verify_with_object_and_u8_array_and_u8_array(&params, key, signature, message)
    });
    let Some(Ok(promise)) = promise else { return false };
    JsFuture::from(promise).await.is_ok_and(|valid| valid.as_bool() == Some(true))
}

/// Signs `message` with the assertion key: the raw `r || s`, or `None` when the key does not
/// import, is not the key it is published as, or WebCrypto refuses.
pub(super) async fn sign_es256(jwk: &SigningJwk, message: &[u8]) -> Option<[u8; 64]> {
    sign_with(&signer(jwk).await?, message).await
}

/// 128 random bits from `crypto.getRandomValues`, as 32 hex digits: an assertion's `jti`.
pub(super) fn random_id() -> Option<String> {
    Some(super::sealing::random_bytes::<16>()?.iter().map(|byte| format!("{byte:02x}")).collect())
}
