//! Interoperability with a relying-party library nobody here wrote: the `openidconnect` crate runs
//! the whole authorization-code flow (PKCE S256, a nonce, `scope=openid email`) against the real
//! issuer binary (`issuer serve` on SQLite in a temporary folder, on a free port), as a
//! confidential client registered with `issuer clients add`. The library discovers the issuer,
//! builds the authorization URL, exchanges the code (Basic client authentication), validates the
//! ID token (ES256 signature against the JWKS, `iss`, `aud`, `exp`, `nonce`) and reads
//! `/userinfo`. The browser's part is plain HTTP with a small cookie jar (`tests::signin`): the
//! login page is fetched, its form filled in and posted, and the redirect to the client read from
//! `Location` (the redirect URI is never served).
//!
//! In order: discovery; a first sign-in with the password (the login page, its CSRF cookie, the
//! session cookie, the redirect's `state` and `iss`); the code exchanged and the ID token checked
//! (`at_hash`, `email`, `auth_time`) and userinfo; a second sign-in riding the session (no login
//! page); `prompt=login` showing the login page again despite the session; the first code
//! replayed: refused, and the refresh token it had given is refused from then on.
//!
//! Needs the issuer binary (`cargo build -p issuer --bins`; `cargo xtask test` builds it).

use axum::body::Bytes;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreIdTokenClaims, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreTokenResponse, CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, TokenResponse as _, http,
};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tests::harness::Answer;
use tests::issuer::Issuer;
use tests::signin::{
    CSRF_COOKIE, HttpBrowser, SESSION_COOKIE, add_user, code_from_redirect, described, login_page, set_cookie,
};

/// The user who signs in.
const EMAIL: &str = "dana@example.com";
/// Her password.
const PASSWORD: &str = "correct horse battery staple";
/// The relying party's client id.
const CLIENT_ID: &str = "rp";
/// Its redirect URI: registered, never served (the test reads `Location` instead).
const REDIRECT_URI: &str = "http://127.0.0.1:9/cb";
/// Its post-logout redirect URI (registered; the flow here does not log out).
const POST_LOGOUT_REDIRECT_URI: &str = "http://127.0.0.1:9/bye";

/// The relying party's HTTP client (the library brings none without reqwest).
type HyperClient = LegacyClient<HttpConnector, Full<Bytes>>;

/// The client `CoreClient::from_provider_metadata` makes, with a redirect URI: the authorization
/// endpoint set, the token and userinfo endpoints "maybe set" (as discovered).
type RelyingParty =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

fn now() -> i64 {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    i64::try_from(seconds).expect("seconds fit an i64")
}

/// The library's HTTP adapter: one request over hyper-util, its whole answer.
async fn send(
    client: HyperClient,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, std::io::Error> {
    let (parts, body) = request.into_parts();
    let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
    let response = client.request(request).await.map_err(std::io::Error::other)?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    Ok(http::Response::from_parts(parts, bytes.to_vec()))
}

// ---------------------------------------------------------------------------------------------
// The browser's part (the rest is in `tests::signin`).

/// Asserts the rules of a `__Host-` cookie (Secure, `Path=/`, no Domain) and HttpOnly, with
/// `same_site`.
fn assert_host_cookie(attributes: &[String], same_site: &str, what: &str) {
    for needed in ["secure", "httponly", "path=/", &format!("samesite={same_site}")] {
        assert!(attributes.iter().any(|attribute| attribute == needed), "{what}: no {needed} in {attributes:?}");
    }
    assert!(!attributes.iter().any(|attribute| attribute.starts_with("domain=")), "{what}: a Domain: {attributes:?}");
}

/// Asserts that `answer` sends the browser back to [`REDIRECT_URI`] with a code, `state` and
/// `iss` (RFC 9207); the code.
fn assert_code_redirect(answer: &Answer, csrf: &CsrfToken, issuer: &str, what: &str) -> AuthorizationCode {
    AuthorizationCode::new(code_from_redirect(answer, REDIRECT_URI, csrf.secret(), Some(issuer), what))
}

// ---------------------------------------------------------------------------------------------
// The relying party's part.

/// One authorization request of the relying party: its URL and what it keeps to finish it.
struct Authorization {
    url: url::Url,
    csrf: CsrfToken,
    nonce: Nonce,
    verifier: PkceCodeVerifier,
}

/// A new authorization request (new state, nonce and PKCE pair) for `scope=openid email`, with
/// `prompt=login` when `login` is set.
fn authorization(rp: &RelyingParty, login: bool) -> Authorization {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = rp
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("email".to_owned()))
        .set_pkce_challenge(challenge);
    if login {
        request = request.add_prompt(CoreAuthPrompt::Login);
    }
    let (url, csrf, nonce) = request.url();
    Authorization { url, csrf, nonce, verifier }
}

/// A copy of `verifier` (the library's verifier is spent by the exchange).
fn copy(verifier: &PkceCodeVerifier) -> PkceCodeVerifier {
    PkceCodeVerifier::new(verifier.secret().clone())
}

/// Checks the token response of an exchange as a relying party does: the ID token (signature
/// ES256 against the discovered JWKS, `iss`, `aud`, `exp`, `nonce` by the library; `at_hash`,
/// `email` and `auth_time` here); its claims.
fn checked_id_token(rp: &RelyingParty, tokens: &CoreTokenResponse, nonce: &Nonce, what: &str) -> CoreIdTokenClaims {
    let id_token = tokens.id_token().unwrap_or_else(|| panic!("{what}: no id_token"));
    let verifier = rp.id_token_verifier().set_allowed_algs([CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
    let claims = id_token.claims(&verifier, nonce).unwrap_or_else(|error| panic!("{what}: the ID token: {error}"));
    let algorithm = id_token.signing_alg().expect("the ID token's algorithm");
    assert_eq!(algorithm, &CoreJwsSigningAlgorithm::EcdsaP256Sha256, "{what}");
    let key = id_token.signing_key(&verifier).expect("the ID token's key");
    let at_hash = AccessTokenHash::from_token(tokens.access_token(), algorithm, key).expect("at_hash of the token");
    assert_eq!(claims.access_token_hash(), Some(&at_hash), "{what}: at_hash");
    assert_eq!(claims.email().map(|email| email.as_str()), Some(EMAIL), "{what}: the email claim");
    let auth_time = claims.auth_time().unwrap_or_else(|| panic!("{what}: no auth_time")).timestamp();
    assert!((now() - 300..=now() + 5).contains(&auth_time), "{what}: auth_time {auth_time}, now {}", now());
    claims.clone()
}

/// A raw `POST /oauth/token` or `/oauth/introspect` with `fields` and the client's Basic
/// credentials (RFC 6749 §2.3.1).
async fn client_post(issuer: &Issuer, path: &str, secret: &str, fields: &[(&str, &str)]) -> Answer {
    let encode = |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let basic = format!("Basic {}", STANDARD.encode(format!("{}:{}", encode(CLIENT_ID), encode(secret))));
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let headers = [("authorization", basic.as_str()), ("content-type", "application/x-www-form-urlencoded")];
    issuer.client.send("POST", path, &headers, body.into_bytes()).await
}

/// The whole authorization-code flow of the `openidconnect` crate against `issuer serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openidconnect_relying_party_signs_in() {
    let started = Instant::now();
    let mut step = Instant::now();
    let mut lap = |what: &str| {
        eprintln!("{what}: {:.0} ms", step.elapsed().as_secs_f64() * 1000.0);
        step = Instant::now();
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut issuer = Issuer::new("issuer", dir.path(), None);
    issuer.serve().await;
    add_user(&issuer, EMAIL, PASSWORD, "reader");
    let secret = issuer
        .add_client(
            CLIENT_ID,
            &["--redirect-uri", REDIRECT_URI, "--post-logout-redirect-uri", POST_LOGOUT_REDIRECT_URI],
        )
        .await;
    lap("issuer up, user and client added");

    // 1. Discovery, and the relying party from it.
    let hyper: HyperClient = LegacyClient::builder(TokioExecutor::new()).build_http();
    let http_client = move |request: openidconnect::HttpRequest| send(hyper.clone(), request);
    let issuer_url = IssuerUrl::new(issuer.identifier().to_owned()).expect("the issuer URL");
    let metadata = CoreProviderMetadata::discover_async(issuer_url, &http_client)
        .await
        .unwrap_or_else(|error| panic!("discovery at {}: {error:?}", issuer.url()));
    let rp: RelyingParty = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(CLIENT_ID.to_owned()),
        Some(ClientSecret::new(secret.clone())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.to_owned()).expect("the redirect URI"));
    lap("discovery");
    // A code exchanged with its PKCE verifier (the library authenticates the client with Basic).
    let exchange = async |code: AuthorizationCode, verifier: &PkceCodeVerifier| {
        let request = rp.exchange_code(code).expect("a token endpoint").set_pkce_verifier(copy(verifier));
        request.request_async(&http_client).await
    };

    // 2. The first sign-in: the login page, then the password.
    let mut browser = HttpBrowser::new(&issuer.client);
    let first = authorization(&rp, false);
    let page = browser.get(&first.url).await;
    let (csrf, request) = login_page(&page, "the first authorization");
    let csrf_cookie = set_cookie(&page, CSRF_COOKIE).unwrap_or_else(|| panic!("no CSRF cookie: {}", described(&page)));
    assert_host_cookie(&csrf_cookie, "strict", "the CSRF cookie");
    assert_eq!(browser.jar.get(CSRF_COOKIE), Some(csrf.as_str()), "the form's csrf is the cookie's");
    assert_eq!(Some(request.as_str()), first.url.query(), "the form carries the authorization request");
    let fields = [("csrf", csrf.as_str()), ("request", &request), ("email", EMAIL), ("password", PASSWORD)];
    let signed_in = browser.submit("/login", &fields).await;
    let code = assert_code_redirect(&signed_in, &first.csrf, issuer.identifier(), "the login");
    let session = set_cookie(&signed_in, SESSION_COOKIE)
        .unwrap_or_else(|| panic!("no session cookie: {}", described(&signed_in)));
    assert_host_cookie(&session, "lax", "the session cookie");
    let max_age = session.iter().find_map(|attribute| attribute.strip_prefix("max-age=")?.parse::<i64>().ok());
    assert!(max_age.is_some_and(|seconds| seconds > 0), "the session cookie's Max-Age: {session:?}");
    lap("login page and password");

    // 3. The code exchanged (PKCE, Basic), the ID token and userinfo.
    let first_tokens =
        exchange(code.clone(), &first.verifier).await.unwrap_or_else(|error| panic!("the first exchange: {error:?}"));
    let claims = checked_id_token(&rp, &first_tokens, &first.nonce, "the first ID token");
    let refresh = first_tokens.refresh_token().expect("a refresh token").secret().clone();
    let userinfo: CoreUserInfoClaims = rp
        .user_info(first_tokens.access_token().clone(), Some(claims.subject().clone()))
        .expect("a userinfo endpoint")
        .request_async(&http_client)
        .await
        .unwrap_or_else(|error| panic!("userinfo: {error:?}"));
    assert_eq!(userinfo.subject(), claims.subject(), "userinfo's sub");
    assert_eq!(userinfo.email().map(|email| email.as_str()), Some(EMAIL), "userinfo's email");
    lap("exchange, ID token, userinfo");

    // 4. A second sign-in rides the session: straight back with a code, for the new nonce.
    let second = authorization(&rp, false);
    let back = browser.get(&second.url).await;
    let code2 = assert_code_redirect(&back, &second.csrf, issuer.identifier(), "the authorization with a session");
    let second_tokens =
        exchange(code2, &second.verifier).await.unwrap_or_else(|error| panic!("the second exchange: {error:?}"));
    let claims2 = checked_id_token(&rp, &second_tokens, &second.nonce, "the second ID token");
    assert_eq!(claims2.subject(), claims.subject(), "the same user");
    assert_eq!(claims2.auth_time(), claims.auth_time(), "no new authentication: the same auth_time");
    lap("second authorization on the session");

    // 5. prompt=login: the login page again, despite the session.
    let third = authorization(&rp, true);
    let page = browser.get(&third.url).await;
    login_page(&page, "prompt=login with a session");
    lap("prompt=login");

    // 6. The first code replayed: refused; and the refresh token it gave, alive until then, is
    //    refused from then on. The raw refresh request is shown to work first, on the second
    //    sign-in's refresh token, so that the refusal is the replay's doing.
    let refresh_grant = async |token: &str| {
        let fields = [("grant_type", "refresh_token"), ("refresh_token", token)];
        client_post(&issuer, "/oauth/token", &secret, &fields).await
    };
    let introspect = async |token: &str| {
        let answer = client_post(&issuer, "/oauth/introspect", &secret, &[("token", token)]).await;
        assert_eq!(answer.status, 200, "introspection: {}", described(&answer));
        answer.json()["active"].clone()
    };
    let second_refresh = second_tokens.refresh_token().expect("a refresh token").secret().clone();
    let refreshed = refresh_grant(&second_refresh).await;
    assert_eq!(refreshed.status, 200, "the second refresh token, refreshed: {}", described(&refreshed));
    let rotated = refreshed.json()["refresh_token"].as_str().expect("a new refresh token").to_owned();
    assert_ne!(rotated, second_refresh, "the refresh token rotates");
    assert_eq!(introspect(&refresh).await, true, "the first refresh token before the replay");
    let replay = exchange(code, &first.verifier).await;
    match replay {
        Err(RequestTokenError::ServerResponse(response)) => {
            assert_eq!(response.error().to_string(), "invalid_grant", "the replayed code: {response:?}");
        }
        other => panic!("the replayed code: not invalid_grant: {other:?}"),
    }
    let answer = refresh_grant(&refresh).await;
    assert_eq!(answer.status, 400, "the first refresh token after the replay: {}", described(&answer));
    assert_eq!(answer.json()["error"], "invalid_grant", "the first refresh token after the replay");
    // Not asserted (RFC 6749 §4.1.2: the tokens of the replayed code SHOULD be revoked; the
    // other sign-in's may or may not be): what else the replay ended.
    let first_access = first_tokens.access_token().secret().clone();
    let at_userinfo = issuer.client.get_with_token("/userinfo", &first_access).await.status;
    eprintln!(
        "after the replay: the first access token at /userinfo {at_userinfo}; the second sign-in's refresh token \
         active: {}",
        introspect(&rotated).await
    );
    lap("code replay");

    issuer.stop();
    eprintln!("openidconnect flow in {:.1} s", started.elapsed().as_secs_f64());
}
