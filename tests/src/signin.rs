//! Signing in at the issuer as a browser does, over plain HTTP (no browser engine): a small cookie
//! jar ([`Jar`]), a browser that keeps it ([`HttpBrowser`]), the issuer's login page read from its
//! HTML ([`login_page`]), the redirect back to the client read from `Location`
//! ([`code_from_redirect`]; the redirect URI is never served), and the whole authorization-code
//! flow done by hand ([`sign_in`]) for the tests that need a user's tokens from it.
//!
//! Requests go through the harness's [`Client`].

use crate::harness::{Answer, Client};
use crate::issuer::Issuer;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

/// The issuer's browser session cookie.
pub const SESSION_COOKIE: &str = "__Host-portcullis-session";
/// The CSRF cookie of the issuer's sign-in forms.
pub const CSRF_COOKIE: &str = "__Host-portcullis-csrf";
/// The PKCE code verifier of [`sign_in`]: the example of RFC 7636, Appendix B.
pub const PKCE_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
/// `BASE64URL(SHA256(PKCE_VERIFIER))`, its S256 code challenge (RFC 7636, Appendix B).
pub const PKCE_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// A browser's cookies for the issuer's one origin: `name=value` from each `Set-Cookie`, removed
/// by `Max-Age=0` (or less), sent back in `Cookie`. It keeps `Secure` cookies on
/// http://127.0.0.1, as browsers do for that secure context (the issuer's cookies are all
/// `__Host-`, so `Secure`, even there).
#[derive(Debug, Default)]
pub struct Jar {
    cookies: BTreeMap<String, String>,
}

impl Jar {
    /// Takes in the `Set-Cookie` headers of `answer`.
    pub fn store(&mut self, answer: &Answer) {
        for line in answer.headers.get_all("set-cookie").iter().filter_map(|value| value.to_str().ok()) {
            let mut parts = line.split(';').map(str::trim);
            let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else { continue };
            let removed = parts.filter_map(|attribute| attribute.split_once('=')).any(|(key, value)| {
                key.eq_ignore_ascii_case("max-age") && value.parse::<i64>().is_ok_and(|seconds| seconds <= 0)
            });
            if removed {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    /// The value of cookie `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// The `Cookie` header to send.
    pub fn header(&self) -> String {
        self.cookies.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("; ")
    }
}

/// A browser at the issuer over plain HTTP: the issuer's client, and a cookie jar. It follows no
/// redirect: each answer is the caller's to read.
pub struct HttpBrowser<'c> {
    client: &'c Client,
    /// Its cookies.
    pub jar: Jar,
}

impl<'c> HttpBrowser<'c> {
    /// A browser with no cookies, at the issuer `client` talks to.
    pub fn new(client: &'c Client) -> Self {
        Self { client, jar: Jar::default() }
    }

    /// `GET url` (at the issuer) as a navigation from another site, with the jar's cookies; keeps
    /// the cookies it sets. Panics when `url` is not at the issuer.
    pub async fn get(&mut self, url: &url::Url) -> Answer {
        let base = &self.client.base;
        let target = url.as_str().strip_prefix(base.as_str()).unwrap_or_else(|| panic!("{url} is not at {base}"));
        let cookie = self.jar.header();
        let answer = self.client.get(target, &[("cookie", &cookie), ("sec-fetch-site", "cross-site")]).await;
        self.jar.store(&answer);
        answer
    }

    /// `POST path` with `fields` as a form, as the login page submits it (same origin); keeps the
    /// cookies it sets.
    pub async fn submit(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let cookie = self.jar.header();
        let headers = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", cookie.as_str()),
            ("origin", self.client.base.as_str()),
            ("sec-fetch-site", "same-origin"),
        ];
        let answer = self.client.send("POST", path, &headers, body.into_bytes()).await;
        self.jar.store(&answer);
        answer
    }
}

/// How an answer is described in a failed assertion: status, headers, the start of the body.
pub fn described(answer: &Answer) -> String {
    let text = answer.text();
    let excerpt: String = text.chars().take(600).collect();
    format!("{} {:?}\n{excerpt}", answer.status, answer.headers)
}

/// The `Set-Cookie` line of `answer` that sets cookie `name`, as its attributes in lower case
/// (`secure`, `path=/`, ...) after `name=value`.
pub fn set_cookie(answer: &Answer, name: &str) -> Option<Vec<String>> {
    answer.headers.get_all("set-cookie").iter().filter_map(|value| value.to_str().ok()).find_map(|line| {
        let mut parts = line.split(';').map(str::trim);
        let pair = parts.next()?;
        (pair.split_once('=')?.0 == name).then(|| parts.map(str::to_ascii_lowercase).collect())
    })
}

/// The text of an HTML attribute value with the escapes the issuer's pages use undone.
pub fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&#39;", "'").replace("&amp;", "&")
}

/// The value of attribute `name` in the tag `tag` (`<input ...>`), unescaped.
pub fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// The login form of a login page: its inputs by name, each with its `type` and `value`. Panics
/// when the page has no form to `/login`.
pub fn login_form(page: &Answer) -> HashMap<String, (String, String)> {
    let html = page.text();
    let start = html.find("action=\"/login\"").unwrap_or_else(|| panic!("no form to /login: {}", described(page)));
    let form = &html[start..start + html[start..].find("</form>").expect("the login form ends")];
    let mut inputs = HashMap::new();
    for tag in form.split("<input").skip(1).map(|rest| &rest[..rest.find('>').unwrap_or(rest.len())]) {
        if let Some(name) = attribute(tag, "name") {
            let kind = attribute(tag, "type").unwrap_or_default();
            inputs.insert(name, (kind, attribute(tag, "value").unwrap_or_default()));
        }
    }
    inputs
}

/// Asserts that `answer` is the login page (200, HTML), with its form (`csrf` and `request`
/// hidden, `email`, `password`); the hidden `csrf` and `request` values. `what` names the step in
/// a failure.
pub fn login_page(answer: &Answer, what: &str) -> (String, String) {
    assert_eq!(answer.status, 200, "{what}: {}", described(answer));
    let content_type = answer.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{what}: {}", described(answer));
    let inputs = login_form(answer);
    for (name, kind) in [("csrf", "hidden"), ("request", "hidden"), ("email", "email"), ("password", "password")] {
        let found = inputs.get(name).map(|(found, _)| found.as_str());
        assert_eq!(found, Some(kind), "{what}: the login form's input {name}: {inputs:?}");
    }
    let value = |name: &str| inputs[name].1.clone();
    (value("csrf"), value("request"))
}

/// Asserts that `answer` sends the browser back to `redirect_uri` (303) with a code, no error,
/// `state` and, when `iss` is given, that `iss` (RFC 9207); the code. `what` names the step in a
/// failure.
pub fn code_from_redirect(answer: &Answer, redirect_uri: &str, state: &str, iss: Option<&str>, what: &str) -> String {
    assert_eq!(answer.status, 303, "{what}: {}", described(answer));
    let location = answer.header("location").unwrap_or_else(|| panic!("{what}: no Location: {}", described(answer)));
    let url = url::Url::parse(location).unwrap_or_else(|error| panic!("{what}: Location {location}: {error}"));
    let base = format!("{}{}", url.origin().ascii_serialization(), url.path());
    assert_eq!(base, redirect_uri, "{what}: {location}");
    let params: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert!(!params.contains_key("error"), "{what}: an error: {location}");
    assert_eq!(params.get("state").map(String::as_str), Some(state), "{what}: state: {location}");
    if let Some(iss) = iss {
        assert_eq!(params.get("iss").map(String::as_str), Some(iss), "{what}: iss (RFC 9207): {location}");
    }
    let code = params.get("code").filter(|code| !code.is_empty());
    code.unwrap_or_else(|| panic!("{what}: no code: {location}")).clone()
}

/// `issuer users add EMAIL --role ROLE` on `issuer`'s database, the password on stdin.
pub fn add_user(issuer: &Issuer, email: &str, password: &str, role: &str) {
    let mut add = issuer.command();
    add.args(["users", "add", email, "--role", role]).stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = add.spawn().expect("issuer users add");
    child
        .stdin
        .take()
        .expect("the CLI's stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("the password on stdin");
    assert!(child.wait().expect("issuer users add").success(), "issuer users add {email}");
}

/// The whole authorization-code flow by hand, as a confidential client with a browser that has
/// no session yet: `GET /authorize` (`response_type=code`, `scope`, a fixed `state`, PKCE S256
/// with [`PKCE_CHALLENGE`]) at `issuer` (its base URL, `http://host:port`), the login page filled
/// in with `email` and `password` and posted, the code taken from the redirect to `redirect_uri`
/// and exchanged at `POST /oauth/token` with [`PKCE_VERIFIER`] and the client's credentials in the
/// form (`client_secret_post`, RFC 6749 §2.3.1). Returns the token endpoint's JSON
/// (`access_token`, `refresh_token`, and `id_token` for `scope=openid`); panics, with the answer,
/// at the first step that goes wrong.
pub async fn sign_in(
    issuer: &str,
    client_id: &str,
    client_secret: &str,
    redirect_uri: &str,
    email: &str,
    password: &str,
    scope: &str,
) -> Value {
    const STATE: &str = "raw-sign-in";
    let client = Client::new(issuer.to_owned());
    let mut browser = HttpBrowser::new(&client);
    let authorize = url::Url::parse_with_params(
        &format!("{issuer}/authorize"),
        [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", scope),
            ("state", STATE),
            ("code_challenge", PKCE_CHALLENGE),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap_or_else(|error| panic!("the authorization URL at {issuer}: {error}"));
    let page = browser.get(&authorize).await;
    let (csrf, request) = login_page(&page, "sign-in: the authorization request");
    let fields = [("csrf", csrf.as_str()), ("request", &request), ("email", email), ("password", password)];
    let signed_in = browser.submit("/login", &fields).await;
    let code = code_from_redirect(&signed_in, redirect_uri, STATE, None, "sign-in: the login");
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", PKCE_VERIFIER),
        ("client_id", client_id),
        ("client_secret", client_secret),
    ];
    let answer = client
        .try_post_form("/oauth/token", &exchange, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("sign-in: POST {issuer}/oauth/token: no answer within 30 s"));
    assert_eq!(answer.status, 200, "sign-in: the code exchange: {}", described(&answer));
    answer.json()
}
