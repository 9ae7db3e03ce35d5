//! `/_portcullis/bench?n=N` (feature `bench` only): the cost of one verified request inside
//! workerd with warm keys, side by side with a plain `crypto.subtle.verify` loop as the floor.
//!
//! - floor: a JavaScript loop awaiting `crypto.subtle.verify` on one token's signature;
//! - edge: per iteration, what the Worker's fetch handler does for a verified request short of the
//!   network (the subrequest itself is the runtime's): read the incoming request's method, URL and
//!   headers from JavaScript, then [`Edge::decide`] (route, token, the [`KeyStore`] lookup with warm
//!   keys, the revocation list, validation with WebCrypto, roles), then build the origin's request
//!   ([`forward::outbound_request`]: a copy of the client's, headers cleaned, identity added);
//! - verification: the same without building the origin's request (reading and deciding only);
//!
//!   both with the verified-token cache off (`TOKEN_CACHE_ENTRIES=0`: every request has its
//!   signature checked and its assertion signed, a token's first request at an isolate), and with
//!   it on, as deployed (the same token again: its time checks run, its signature check is
//!   skipped, its assertion reused); the edge has assertion keys, so the origin's request carries
//!   `X-Portcullis-Assertion`;
//! - a plain JavaScript edge, for reference: what a minimal hand-written Worker does for the same
//!   request (the bearer token's header and claims decoded with `atob` and `JSON.parse`, `alg`,
//!   `kid`, `iss`, `aud`, `exp` and the role checked, `crypto.subtle.verify`, then a copy of the
//!   request with `Authorization` removed and the four identity headers set), with and without
//!   building the origin's request;
//! - a breakdown: WebCrypto alone through the edge's backend, token validation alone (with and
//!   without the crypto), reading the request, deciding, an assertion signed and one reused,
//!   building the outbound request, and `new Request(target, request)` from plain JavaScript
//!   (what any Worker that forwards pays).
//!
//! The incoming request carries the headers of a browser's API call (eleven, with a cookie and a
//! spoofed `X-Auth-Subject`).
//!
//! Each round runs every loop once, side by side, after a warm-up round; the medians over rounds
//! are reported, and the median of each round's own ratio to that round's floor (the machine's
//! speed drifts between rounds). workerd's clocks only move between events, so each timed loop is
//! bracketed by a `setTimeout(0)`.
//!
//! The edge checks revocations against a list of 10,000 revoked tokens (not the bench token's);
//! the breakdown has that look-up alone, and the time to parse such a list (what each refresh of
//! the list costs an isolate, every half `REVOCATION_MAX_AGE_SECONDS`).
//!
//! [`KeyStore`]: super::documents::DocumentStore

use super::webcrypto::WebCrypto;
use super::{Action, Edge, forward, now_ms, read_head, respond};
use crate::config::Config;
use crate::document_cache::FetchedDocument as _;
use crate::reply::Reply;
use crate::request::{ParsedHead, RequestHead};
use crate::revocations::RevocationList;
use crate::session::{SESSION_COOKIE, SessionCookie};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use js_sys::futures::JsFuture;
use jwks::{AsyncEs256Verifier as _, KeySet, PublicKey};
use serde_json::json;
use std::collections::BTreeMap;
use wasm_bindgen::JsValue;
use wasm_bindgen::prelude::wasm_bindgen;
use worker::Context;

#[wasm_bindgen(inline_js = r#"
export async function floorLoop(n, key, signature, data) {
  let valid = 0;
  for (let i = 0; i < n; i++) {
    if (await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, signature, data)) valid++;
  }
  return valid;
}
export function plainNewRequests(n, url, incoming) {
  let made = 0;
  for (let i = 0; i < n; i++) {
    if (new Request(url, incoming).method === "GET") made++;
  }
  return made;
}
export async function plainJsEdgeLoop(n, incoming, key, issuer, audience, role, forward) {
  const decode = (part) => atob(part.replace(/-/g, "+").replace(/_/g, "/"));
  const params = { name: "ECDSA", hash: "SHA-256" };
  const encoder = new TextEncoder();
  let passed = 0;
  for (let i = 0; i < n; i++) {
    const authorization = incoming.headers.get("authorization");
    if (authorization === null || !authorization.startsWith("Bearer ")) continue;
    const parts = authorization.slice(7).split(".");
    if (parts.length !== 3) continue;
    const header = JSON.parse(decode(parts[0]));
    const claims = JSON.parse(decode(parts[1]));
    const now = Date.now() / 1000;
    if (header.alg !== "ES256" || typeof header.kid !== "string" || claims.iss !== issuer) continue;
    if (claims.aud !== audience || !(claims.exp > now) || !claims.roles.includes(role)) continue;
    const signature = Uint8Array.from(decode(parts[2]), (c) => c.charCodeAt(0));
    const data = encoder.encode(parts[0] + "." + parts[1]);
    if (!(await crypto.subtle.verify(params, key, signature, data))) continue;
    if (forward) {
      const outbound = new Request("https://origin.bench.invalid/api/items?page=2", incoming);
      const headers = outbound.headers;
      headers.delete("authorization");
      headers.set("x-auth-subject", claims.sub);
      headers.set("x-auth-roles", claims.roles.join(","));
      headers.set("x-auth-issuer", claims.iss);
      headers.set("x-auth-token-id", claims.jti);
    }
    passed++;
  }
  return passed;
}
export function tick() { return new Promise((resolve) => setTimeout(resolve, 0)); }
export function clock() { return performance.now(); }
export async function makeKeys() {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const verify = await crypto.subtle.importKey("raw", raw, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  return { sign: pair.privateKey, verify, raw };
}
export async function privateJwk(key) {
  const jwk = await crypto.subtle.exportKey("jwk", key);
  return JSON.stringify({ keys: [{ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, d: jwk.d, kid: "bench-edge" }] });
}
export async function signEs256(key, data) {
  return new Uint8Array(await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key, data));
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = floorLoop)]
    fn floor_loop(n: u32, key: &JsValue, signature: &[u8], data: &[u8]) -> js_sys::Promise;
    #[wasm_bindgen(js_name = plainJsEdgeLoop)]
    fn plain_js_edge_loop(
        n: u32,
        incoming: &web_sys::Request,
        key: &JsValue,
        issuer: &str,
        audience: &str,
        role: &str,
        forward: bool,
    ) -> js_sys::Promise;
    fn tick() -> js_sys::Promise;
    #[wasm_bindgen(js_name = plainNewRequests)]
    fn plain_new_requests(n: u32, url: &str, incoming: &web_sys::Request) -> u32;
    fn clock() -> f64;
    #[wasm_bindgen(js_name = makeKeys)]
    fn make_keys() -> js_sys::Promise;
    #[wasm_bindgen(js_name = privateJwk)]
    fn private_jwk(key: &JsValue) -> js_sys::Promise;
    #[wasm_bindgen(js_name = signEs256)]
    fn sign_es256(key: &JsValue, data: &[u8]) -> js_sys::Promise;
}

const ISSUER: &str = "https://issuer.bench.invalid";
/// The bench's session cookie key (32 bytes, base64url).
const BENCH_COOKIE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
/// How many revoked tokens the bench's revocation list holds.
const REVOKED_ENTRIES: usize = 10_000;
const URL: &str = "https://edge.bench.invalid/api/items?page=2";
const POLICY: &str = r#"{"rules": [{"path": "/api/*", "access": "any_role", "roles": ["reader"]}]}"#;
const ROUNDS: usize = 15;

/// Runs the benchmark; `n` (from the query, default 500) iterations per loop and round.
pub(super) async fn run(head: &RequestHead<'_>, ctx: &Context) -> worker::Result<web_sys::Response> {
    let n = head
        .url_parts()
        .query
        .trim_start_matches('?')
        .split('&')
        .find_map(|pair| pair.strip_prefix("n="))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(500)
        .clamp(1, 20_000);
    match measure(n, ctx).await {
        Ok(document) => respond(Reply { status: 200, headers: Vec::new(), body: format!("{document}\n") }),
        Err(error) => respond(Reply { status: 500, headers: Vec::new(), body: format!("bench failed: {error}\n") }),
    }
}

async fn wait(promise: js_sys::Promise) -> Result<JsValue, String> {
    JsFuture::from(promise).await.map_err(|error| format!("{error:?}"))
}

fn js_error(error: JsValue) -> String {
    format!("{error:?}")
}

/// A backend that accepts every signature: the cost of everything but the crypto.
struct Accept;

impl jwks::Es256Verifier for Accept {
    fn verify_es256(&self, _: &PublicKey, _: &[u8], _: &[u8; 64]) -> bool {
        true
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn measure(n: u32, ctx: &Context) -> Result<serde_json::Value, String> {
    let keys = wait(make_keys()).await?;
    let get = |name: &str| js_sys::Reflect::get(&keys, &JsValue::from_str(name)).map_err(|_| format!("no {name}"));
    let raw = js_sys::Uint8Array::new(&get("raw")?).to_vec();
    let public = PublicKey::from_sec1(&raw).map_err(|error| error.to_string())?;
    let key_set = KeySet::from_keys([public.clone()]);

    let now = now_ms() / 1000;
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": public.thumbprint()});
    let claims = json!({"iss": ISSUER, "sub": "user-1", "aud": "bench", "iat": now, "exp": now + 600,
        "jti": "bench-1", "roles": ["reader"], "client_id": "bench"});
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = js_sys::Uint8Array::new(&wait(sign_es256(&get("sign")?, input.as_bytes())).await?).to_vec();
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&signature));
    // The edge's assertion key: another pair, as `ASSERTION_KEYS` holds it.
    let edge_keys = wait(make_keys()).await?;
    let edge_private = js_sys::Reflect::get(&edge_keys, &JsValue::from_str("sign")).map_err(|_| "no edge key")?;
    let assertion_keys = wait(private_jwk(&edge_private)).await?.as_string().ok_or("no private JWK")?;

    // 10,000 revoked tokens, as the issuer lists them (22-character jtis), none of them the bench's.
    let far = now_ms() / 1000 + 3600;
    let entries: Vec<String> =
        (0..REVOKED_ENTRIES).map(|i| format!(r#"{{"jti":"revoked-{i:0>14}","exp":{far}}}"#)).collect();
    let revoked_document = format!(r#"{{"revoked":[{}]}}"#, entries.join(","));
    let revocation_list = RevocationList::parse(revoked_document.as_bytes(), now_ms() / 1000)?;

    // The Worker's own state for a bench configuration, its key store warm with the bench key:
    // as deployed (with the verified-token cache), and with the cache off, so that every request
    // has its signature checked.
    let make_edge = |token_cache_entries: &str| -> Result<Edge, String> {
        let config = Config::from_lookup(|name| {
            match name {
                "ISSUER" => Some(ISSUER),
                "AUDIENCE" => Some("bench"),
                "ORIGIN_URL" => Some("https://origin.bench.invalid"),
                "POLICY" => Some(POLICY),
                "TOKEN_CACHE_ENTRIES" => Some(token_cache_entries),
                "ASSERTION_KEYS" => Some(assertion_keys.as_str()),
                "SESSION_CLIENT_ID" => Some("bench-site"),
                "SESSION_CLIENT_SECRET" => Some("bench-secret"),
                "SESSION_COOKIE_KEYS" => Some(BENCH_COOKIE_KEY),
                _ => None,
            }
            .map(str::to_owned)
        })
        .map_err(|error| error.to_string())?;
        let edge = Edge::new(config, None);
        edge.keys.preload(key_set.clone())?;
        let revocations = edge.revocations.as_ref().ok_or("revocations are not checked")?;
        revocations.preload(RevocationList::parse(revoked_document.as_bytes(), now_ms() / 1000)?)?;
        Ok(edge)
    };
    let edge = make_edge("0")?;
    let cached_edge = make_edge("1024")?;

    // The incoming request, as the runtime hands it to the fetch handler.
    let headers = web_sys::Headers::new().map_err(js_error)?;
    let authorization = format!("Bearer {token}");
    for (name, value) in [
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("authorization", authorization.as_str()),
        ("cookie", "theme=dark; lang=en"),
        ("origin", "https://app.bench.invalid"),
        ("referer", "https://app.bench.invalid/items"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-site", "same-site"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0"),
        ("x-auth-subject", "spoofed"),
    ] {
        headers.append(name, value).map_err(js_error)?;
    }
    let init = web_sys::RequestInit::new();
    init.set_headers(&headers);
    let incoming = web_sys::Request::new_with_str_and_init(URL, &init).map_err(js_error)?;
    let verify_key = get("verify")?;

    // The same request from a signed-in browser: the token in the sealed session cookie instead
    // of Authorization (its access token fresh: the fast path, no session object asked).
    let cookie_keys = edge.config.session.as_ref().ok_or("no session settings")?.cookie_keys.clone();
    let session = SessionCookie { session_id: "s".repeat(43), csrf: "c".repeat(43), access_token: token.clone() };
    let sealed = super::sealing::seal(&cookie_keys, SESSION_COOKIE, session.encode().as_bytes())
        .await
        .ok_or("the session cookie was not sealed")?;
    let cookie_headers = web_sys::Headers::new_with_headers(&headers).map_err(js_error)?;
    cookie_headers.delete("authorization").map_err(js_error)?;
    cookie_headers.set("cookie", &format!("theme=dark; lang=en; {SESSION_COOKIE}={sealed}")).map_err(js_error)?;
    let cookie_init = web_sys::RequestInit::new();
    cookie_init.set_headers(&cookie_headers);
    let cookie_incoming = web_sys::Request::new_with_str_and_init(URL, &cookie_init).map_err(js_error)?;

    // One verified request, as `Edge::handle` does it short of the subrequest; with `forward`
    // false, short of the assertion and building the origin's request too.
    let (incoming, cookie_incoming) = (&incoming, &cookie_incoming);
    let edge_request = async |edge: &Edge, incoming: &web_sys::Request, forward: bool| {
        let block = read_head(incoming);
        let Some(parsed) = ParsedHead::parse(&block) else {
            return false;
        };
        let head = parsed.head();
        let Action::Forward { identity: Some((identity, token)), body, .. } = edge.decide(&head, ctx).await else {
            return false;
        };
        if !forward {
            return true;
        }
        let Ok(Some(assertion)) = edge.assertion(&token, &identity).await else {
            return false;
        };
        forward::outbound_request(&edge.config, &head, Some(&identity), Some(&assertion), incoming, body).is_ok()
    };
    let edge_once = async |edge: &Edge, forward: bool| edge_request(edge, incoming, forward).await;
    if !edge_once(&edge, true).await
        || !edge_once(&cached_edge, true).await
        || !edge_request(&cached_edge, cookie_incoming, true).await
    {
        return Err("the edge path refused the benchmark token".to_owned());
    }
    // Times `n` iterations of `edge_request(edge, incoming, forward)`, in microseconds per
    // iteration.
    let time_request = async |edge: &Edge, incoming: &web_sys::Request, forward: bool| {
        wait(tick()).await?;
        let start = clock();
        let mut valid = 0;
        for _ in 0..n {
            valid += u32::from(edge_request(edge, incoming, forward).await);
        }
        wait(tick()).await?;
        if valid != n {
            return Err("the edge loop did not verify".to_owned());
        }
        Ok::<f64, String>((clock() - start) * 1000.0 / f64::from(n))
    };
    let time_edge = async |edge: &Edge, forward: bool| time_request(edge, incoming, forward).await;

    // Where the difference goes: each part alone, same iterations.
    let signature64: [u8; 64] = signature.as_slice().try_into().map_err(|_| "the signature is not 64 bytes")?;
    let block = read_head(incoming);
    let parsed = ParsedHead::parse(&block).ok_or("no request head")?;
    let head = parsed.head();
    let Action::Forward { identity: Some((identity, _)), .. } = edge.decide(&head, ctx).await else {
        return Err("the edge refused the benchmark request".to_owned());
    };
    let validator = &edge.config.validator;
    let target = crate::headers::origin_target(&edge.config, &head);

    let mut floor_us = Vec::new();
    let mut edge_us = Vec::new();
    let mut verification_us = Vec::new();
    let mut cached_edge_us = Vec::new();
    let mut cookie_edge_us = Vec::new();
    let mut cached_cookie_edge_us = Vec::new();
    let mut cached_verification_us = Vec::new();
    let mut plain_js_edge_us = Vec::new();
    let mut plain_js_verification_us = Vec::new();
    let mut parts_us: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut revocation_parse_us = Vec::new();
    const PARSES: u32 = 5;
    // Round 0 warms up (V8 tiers the wasm and JIT-compiles the loops) and is not counted.
    for round in 0..=ROUNDS {
        wait(tick()).await?;
        let start = clock();
        let valid = wait(floor_loop(n, &verify_key, &signature, input.as_bytes())).await?;
        wait(tick()).await?;
        let floor_round = (clock() - start) * 1000.0 / f64::from(n);
        if valid.as_f64() != Some(f64::from(n)) {
            return Err("the floor loop did not verify".to_owned());
        }
        let edge_round = time_edge(&edge, true).await?;
        let verification_round = time_edge(&edge, false).await?;
        let cached_edge_round = time_edge(&cached_edge, true).await?;
        let cookie_edge_round = time_request(&edge, cookie_incoming, true).await?;
        let cached_cookie_edge_round = time_request(&cached_edge, cookie_incoming, true).await?;
        let cached_verification_round = time_edge(&cached_edge, false).await?;
        let mut plain_js_rounds = [0.0; 2];
        for (forward, slot) in [(true, 0), (false, 1)] {
            wait(tick()).await?;
            let start = clock();
            let passed = wait(plain_js_edge_loop(n, incoming, &verify_key, ISSUER, "bench", "reader", forward)).await?;
            wait(tick()).await?;
            if passed.as_f64() != Some(f64::from(n)) {
                return Err("the plain JavaScript edge did not verify".to_owned());
            }
            plain_js_rounds[slot] = (clock() - start) * 1000.0 / f64::from(n);
        }
        if round > 0 {
            floor_us.push(floor_round);
            edge_us.push(edge_round);
            verification_us.push(verification_round);
            cached_edge_us.push(cached_edge_round);
            cookie_edge_us.push(cookie_edge_round);
            cached_cookie_edge_us.push(cached_cookie_edge_round);
            cached_verification_us.push(cached_verification_round);
            plain_js_edge_us.push(plain_js_rounds[0]);
            plain_js_verification_us.push(plain_js_rounds[1]);
        }

        macro_rules! part {
            ($name:literal, $body:expr) => {{
                wait(tick()).await?;
                let start = clock();
                for _ in 0..n {
                    if !$body {
                        return Err(format!("the {} part failed", $name));
                    }
                }
                wait(tick()).await?;
                if round > 0 {
                    parts_us.entry($name).or_default().push((clock() - start) * 1000.0 / f64::from(n));
                }
            }};
        }
        part!("webcrypto_verify", WebCrypto.verify_es256(&public, input.as_bytes(), &signature64).await);
        part!(
            "token_validation",
            validator.validate_async(&token, &key_set, &WebCrypto, now_ms() / 1000).await.is_ok()
        );
        part!("token_validation_less_crypto", validator.validate(&token, &key_set, &Accept, now_ms() / 1000).is_ok());
        part!(
            "read_request",
            ParsedHead::parse(&read_head(incoming)).is_some_and(|parsed| parsed.head().headers.len() == 6)
        );
        part!("decide", matches!(edge.decide(&head, ctx).await, Action::Forward { identity: Some(_), .. }));
        // `edge` keeps no assertion (its caches are off): each is signed; `cached_edge` reuses one.
        part!("assertion_signed", matches!(edge.assertion(&token, &identity).await, Ok(Some(_))));
        part!("assertion_reused", matches!(cached_edge.assertion(&token, &identity).await, Ok(Some(_))));
        part!(
            "outbound_request",
            forward::outbound_request(&edge.config, &head, Some(&identity), None, incoming, false).is_ok()
        );
        part!("plain_js_new_request", plain_new_requests(1, &target, incoming) == 1);
        part!("revocation_lookup", !revocation_list.contains("bench-1"));
        wait(tick()).await?;
        let start = clock();
        for _ in 0..PARSES {
            RevocationList::parse(revoked_document.as_bytes(), now_ms() / 1000)?;
        }
        wait(tick()).await?;
        if round > 0 {
            revocation_parse_us.push((clock() - start) * 1000.0 / f64::from(PARSES));
        }
    }
    let floor = median(floor_us.clone());
    let (edge_median, verification_median) = (median(edge_us.clone()), median(verification_us.clone()));
    // Each round's ratio, floor and edge side by side: steadier than a ratio of medians when the
    // machine's speed drifts between rounds.
    let paired = |path: &[f64]| median(path.iter().zip(&floor_us).map(|(path, floor)| path / floor).collect());
    let breakdown: serde_json::Map<String, serde_json::Value> =
        parts_us.into_iter().map(|(name, values)| (name.to_owned(), json!(median(values)))).collect();

    let assertion_bytes = match edge.assertion(&token, &identity).await {
        Ok(Some(assertion)) => assertion.len(),
        _ => 0,
    };
    let ratio_to_floor =
        |name: &str| breakdown.get(name).and_then(serde_json::Value::as_f64).map(|value| value / floor);
    Ok(json!({
        "iterations_per_round": n,
        "rounds": ROUNDS,
        "token_bytes": token.len(),
        "assertion_bytes": assertion_bytes,
        "assertion_signed_ratio": ratio_to_floor("assertion_signed"),
        "assertion_reused_ratio": ratio_to_floor("assertion_reused"),
        "floor_us_per_verify": floor_us,
        "edge_us_per_request": edge_us,
        "verification_us_per_request": verification_us,
        "median_floor_us": floor,
        "median_edge_us": edge_median,
        "median_verification_us": verification_median,
        "ratio": edge_median / floor,
        "verification_ratio": verification_median / floor,
        "median_paired_ratio": paired(&edge_us),
        "median_paired_verification_ratio": paired(&verification_us),
        "cached_edge_us_per_request": cached_edge_us,
        "median_cookie_edge_us": median(cookie_edge_us.clone()),
        "median_cached_cookie_edge_us": median(cached_cookie_edge_us.clone()),
        "median_paired_cookie_ratio": paired(&cookie_edge_us),
        "median_paired_cached_cookie_ratio": paired(&cached_cookie_edge_us),
        "cached_verification_us_per_request": cached_verification_us,
        "median_cached_edge_us": median(cached_edge_us.clone()),
        "median_cached_verification_us": median(cached_verification_us.clone()),
        "median_paired_cached_ratio": paired(&cached_edge_us),
        "median_paired_cached_verification_ratio": paired(&cached_verification_us),
        "plain_js_edge_us_per_request": plain_js_edge_us,
        "plain_js_verification_us_per_request": plain_js_verification_us,
        "median_plain_js_edge_us": median(plain_js_edge_us.clone()),
        "median_plain_js_verification_us": median(plain_js_verification_us.clone()),
        "median_paired_plain_js_ratio": paired(&plain_js_edge_us),
        "median_paired_plain_js_verification_ratio": paired(&plain_js_verification_us),
        "token_validation_ratio": ratio_to_floor("token_validation"),
        "breakdown_us": breakdown,
        "revocation_entries": revocation_list.len(),
        "revocation_list_bytes": revoked_document.len(),
        "median_revocation_list_parse_us": median(revocation_parse_us),
    }))
}
