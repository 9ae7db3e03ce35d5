//! Sealed cookies: AES-256-GCM through WebCrypto, with the cookie's name as associated data (a
//! value sealed for one cookie does not open as another), keys from `SESSION_COOKIE_KEYS` imported
//! once per isolate; and the random values and digests the sign-in flow needs.

use super::webcrypto::with_subtle;
use crate::session::{NONCE_BYTES, sealed_parts, sealed_text};
use js_sys::Uint8Array;
use js_sys::futures::JsFuture;
use std::cell::OnceCell;
use wasm_bindgen::{JsCast as _, JsValue};
use web_sys::{AesGcmParams, CryptoKey};

thread_local! {
    /// The imported cookie keys, the sealing one first; empty when they do not import.
    static KEYS: OnceCell<Vec<CryptoKey>> = const { OnceCell::new() };
}

/// `N` random bytes from `crypto.getRandomValues`.
pub(super) fn random_bytes<const N: usize>() -> Option<[u8; N]> {
    let crypto = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("crypto")).ok()?;
    if !crypto.is_object() {
        return None;
    }
    // workerd's global is not a `WorkerGlobalScope`: its `crypto` is not checked as web-sys' type.
    let crypto: web_sys::Crypto = crypto.unchecked_into();
    let mut bytes = [0_u8; N];
    crypto.get_random_values_with_u8_array(&mut bytes).ok()?;
    Some(bytes)
}

/// 256 random bits, base64url: a `state`, a PKCE verifier, a session id, a CSRF token.
pub(super) fn random_token() -> Option<String> {
    use base64::Engine as _;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// SHA-256 of `data`, base64url: a PKCE S256 challenge.
pub(super) async fn sha256_base64url(data: &[u8]) -> Option<String> {
    use base64::Engine as _;
    let promise = with_subtle(|subtle| subtle.subtle.digest_with_str_and_u8_array("SHA-256", data))?.ok()?;
    let digest = JsFuture::from(promise).await.ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Uint8Array::new(&digest).to_vec()))
}

/// The cookie keys, imported on first use. Requests that arrive meanwhile import them too; the
/// first result is kept.
async fn keys(raw: &[[u8; 32]]) -> Vec<CryptoKey> {
    if let Some(keys) = KEYS.with(|cell| cell.get().cloned()) {
        return keys;
    }
    let mut imported = Vec::with_capacity(raw.len());
    for key in raw {
        let usages = js_sys::Array::of2(&JsValue::from_str("encrypt"), &JsValue::from_str("decrypt"));
        let promise = with_subtle(|subtle| {
            subtle.subtle.import_key_with_str("raw", &Uint8Array::from(&key[..]), "AES-GCM", false, &usages)
        });
        let Some(Ok(promise)) = promise else { return Vec::new() };
        match JsFuture::from(promise).await {
            Ok(key) => imported.push(key.unchecked_into()),
            Err(_) => return Vec::new(),
        }
    }
    KEYS.with(|cell| cell.get_or_init(|| imported).clone())
}

fn params(nonce: &[u8; NONCE_BYTES], name: &str) -> AesGcmParams {
    let params = AesGcmParams::new_with_u8_array("AES-GCM", &Uint8Array::from(&nonce[..]));
    params.set_additional_data_u8_array(&Uint8Array::from(name.as_bytes()));
    params
}

/// `plaintext` sealed with the first key for the cookie `name`; `None` when WebCrypto fails.
pub(super) async fn seal(raw_keys: &[[u8; 32]], name: &str, plaintext: &[u8]) -> Option<String> {
    let key = keys(raw_keys).await.into_iter().next()?;
    let nonce = random_bytes::<NONCE_BYTES>()?;
    let promise =
        with_subtle(|subtle| subtle.subtle.encrypt_with_object_and_u8_array(&params(&nonce, name), &key, plaintext))?;
    let sealed = JsFuture::from(promise.ok()?).await.ok()?;
    Some(sealed_text(&nonce, &Uint8Array::new(&sealed).to_vec()))
}

/// The plaintext of a value sealed for the cookie `name` with any of the keys; `None` for anything
/// else (another key, another cookie, altered, not a sealed value at all).
pub(super) async fn open(raw_keys: &[[u8; 32]], name: &str, text: &str) -> Option<Vec<u8>> {
    let (nonce, ciphertext) = sealed_parts(text)?;
    for key in keys(raw_keys).await {
        let promise = with_subtle(|subtle| {
            subtle.subtle.decrypt_with_object_and_u8_array(&params(&nonce, name), &key, &ciphertext)
        });
        if let Some(Ok(promise)) = promise
            && let Ok(plain) = JsFuture::from(promise).await
        {
            return Some(Uint8Array::new(&plain).to_vec());
        }
    }
    None
}
