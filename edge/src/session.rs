//! Browser sessions at the edge, the pure parts: which requests are navigations, which return
//! paths are safe, what the sign-in flow and the session keep in their sealed cookies, and the
//! cookies and URLs themselves. The sealing (AES-GCM), the code exchange and the session objects
//! are the Worker's (`runtime`).

use crate::reply::percent_encode;
use crate::request::{RequestHead, cookie_pairs};

/// Where the issuer sends the browser back with a code.
pub const CALLBACK_PATH: &str = "/_portcullis/callback";

/// Where a page posts to sign out.
pub const LOGOUT_PATH: &str = "/_portcullis/logout";

/// The session cookie: sealed, HttpOnly, Secure, SameSite=Lax, the whole site.
pub const SESSION_COOKIE: &str = "__Host-portcullis-edge-session";

/// The prefix of a sign-in flow's cookie; the rest of its name is the flow's `state`.
pub const FLOW_COOKIE_PREFIX: &str = "__Host-portcullis-edge-flow-";

/// The cookie a page reads its logout form's CSRF token from (not HttpOnly: pages need it; it is
/// worth nothing without the session cookie it is bound to).
pub const CSRF_COOKIE: &str = "__Host-portcullis-edge-csrf";

/// The largest `name=value` of a cookie the edge sets: browsers refuse one over 4096 bytes (and
/// then a sign-in would loop), so a token that would make it larger stays in the session's object.
pub const MAX_COOKIE_BYTES: usize = 4000;

/// True when the cookie `name` with `value` is small enough for every browser.
pub fn fits_in_a_cookie(name: &str, value: &str) -> bool {
    name.len() + 1 + value.len() <= MAX_COOKIE_BYTES
}

/// The most sign-in flows a browser keeps at once: a new one past that clears the others.
pub const MAX_FLOWS: usize = 3;

/// How long a sign-in flow may take, in seconds.
pub const FLOW_LIFETIME_SECS: u64 = 600;

/// The longest return path kept.
const MAX_RETURN_PATH: usize = 2048;

/// `target` if it is a safe place to send the browser back to after sign-in: a path of this site
/// (with its query), never anything a browser could read as another site. Refused: no leading
/// `/`, `//` or `/\` (another host), any `\`, control characters or spaces, and encoded slashes,
/// backslashes or percent signs (`/%2F%2Fevil.example` decoded once by someone on the way).
pub fn safe_return_path(target: &str) -> Option<&str> {
    let bytes = target.as_bytes();
    let starts_well = bytes.first() == Some(&b'/') && !matches!(bytes.get(1), Some(b'/' | b'\\'));
    let visible = bytes.iter().all(|byte| byte.is_ascii_graphic()) && !target.contains('\\');
    let lower = target.to_ascii_lowercase();
    let encoded_separator = ["%2f", "%5c", "%25", "%00", "%09", "%0a", "%0d"].iter().any(|code| lower.contains(code));
    (starts_well && visible && !encoded_separator && target.len() <= MAX_RETURN_PATH).then_some(target)
}

// The sealed values are written as fields joined with `|` (none of the values but the last can
// hold one): a handful of bytes each, where serde's derives cost the Worker kilobytes.

/// What a sign-in flow keeps until the callback: sealed into its own cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// The PKCE verifier (RFC 7636), 43 characters of base64url.
    pub verifier: String,
    /// The `nonce` the ID token must carry (base64url).
    pub nonce: String,
    /// When the flow expires (Unix seconds).
    pub expires_at: u64,
    /// Where to send the browser afterwards (a [`safe_return_path`]; last: it may hold a `|`).
    pub return_to: String,
}

impl Flow {
    /// `verifier|nonce|expires_at|return_to`.
    pub fn encode(&self) -> String {
        format!("{}|{}|{}|{}", self.verifier, self.nonce, self.expires_at, self.return_to)
    }

    /// The flow [`Self::encode`] wrote; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let mut fields = text.splitn(4, '|');
        let (verifier, nonce) = (fields.next()?, fields.next()?);
        let expires_at = fields.next()?.parse().ok()?;
        let return_to = safe_return_path(fields.next()?)?;
        Some(Self {
            verifier: verifier.to_owned(),
            nonce: nonce.to_owned(),
            expires_at,
            return_to: return_to.to_owned(),
        })
    }
}

/// What the session cookie holds: the session object's name, the CSRF token of logout, and the
/// current access token (so that a request with a good one needs nobody), unless that token is too
/// large for a cookie (see [`fits_in_a_cookie`]): then it is empty, and every request asks the
/// session's object. Never the refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCookie {
    /// The session's id: the name of its session object (base64url).
    pub session_id: String,
    /// The CSRF token a logout must bring (base64url).
    pub csrf: String,
    /// The access token.
    pub access_token: String,
}

impl SessionCookie {
    /// `session_id|csrf|access_token`.
    pub fn encode(&self) -> String {
        format!("{}|{}|{}", self.session_id, self.csrf, self.access_token)
    }

    /// The cookie [`Self::encode`] wrote; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let mut fields = text.splitn(3, '|');
        let (session_id, csrf, access_token) = (fields.next()?, fields.next()?, fields.next()?);
        if session_id.is_empty() || csrf.is_empty() {
            return None;
        }
        Some(Self { session_id: session_id.to_owned(), csrf: csrf.to_owned(), access_token: access_token.to_owned() })
    }
}

/// What a session object keeps: the refresh token, the current access token and when it expires,
/// and the ID token (for the issuer's logout). Nothing of it leaves the object but the access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTokens {
    /// When the access token expires (Unix seconds).
    pub access_expires_at: u64,
    /// The refresh token.
    pub refresh_token: String,
    /// The access token.
    pub access_token: String,
    /// The ID token, if the issuer gave one.
    pub id_token: Option<String>,
}

impl SessionTokens {
    /// The tokens of a token endpoint's answer (JSON) received at `now`; `None` without an access
    /// and a refresh token. A refresh's answer may leave out what did not change: `previous`
    /// fills in the refresh and the ID token then.
    pub fn from_token_response(body: &str, now: u64, previous: Option<&Self>) -> Option<Self> {
        let answer = jwks::json::parse(body.as_bytes()).ok()?;
        let text = |name: &str| answer[name].as_str().filter(|value| !value.is_empty()).map(str::to_owned);
        let refresh_token =
            text("refresh_token").or_else(|| previous.map(|previous| previous.refresh_token.clone()))?;
        let id_token = text("id_token").or_else(|| previous.and_then(|previous| previous.id_token.clone()));
        let expires_in = answer["expires_in"].as_u64().unwrap_or(60);
        Some(Self {
            access_expires_at: now.saturating_add(expires_in),
            refresh_token,
            access_token: text("access_token")?,
            id_token,
        })
    }

    /// `access_expires_at|refresh_token|access_token|id_token` (the last empty without one).
    pub fn encode(&self) -> String {
        let id_token = self.id_token.as_deref().unwrap_or_default();
        format!("{}|{}|{}|{id_token}", self.access_expires_at, self.refresh_token, self.access_token)
    }

    /// The tokens [`Self::encode`] wrote; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let mut fields = text.splitn(4, '|');
        let access_expires_at = fields.next()?.parse().ok()?;
        let (refresh_token, access_token, id_token) = (fields.next()?, fields.next()?, fields.next()?);
        if refresh_token.is_empty() || access_token.is_empty() {
            return None;
        }
        Some(Self {
            access_expires_at,
            refresh_token: refresh_token.to_owned(),
            access_token: access_token.to_owned(),
            id_token: (!id_token.is_empty()).then(|| id_token.to_owned()),
        })
    }
}

/// The value of `name` in a form or query string (`a=1&b=2`, with or without the leading `?`),
/// percent-decoded (and `+` read as a space); `None` when absent, repeated, or not UTF-8 once
/// decoded: a repeated parameter is refused rather than one of its values picked.
pub fn form_value(form: &str, name: &str) -> Option<String> {
    let mut found = None;
    for pair in form.trim_start_matches('?').split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode_component(key).as_deref() == Some(name) {
            if found.is_some() {
                return None;
            }
            found = Some(decode_component(value)?);
        }
    }
    found
}

/// Percent-decodes a form component; `None` for a broken escape or bytes that are not UTF-8.
fn decode_component(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(at + 1..at + 3)?).ok()?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                at += 3;
            }
            b'+' => {
                decoded.push(b' ');
                at += 1;
            }
            byte => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// True when `state` has the form the edge gives its flows (43 characters of base64url): a cookie
/// name is made from it, so nothing else is ever looked up.
pub fn is_flow_state(state: &str) -> bool {
    state.len() == 43 && state.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The length of an AES-GCM nonce.
pub const NONCE_BYTES: usize = 12;

/// A sealed cookie's value: base64url of the nonce and the ciphertext (with its tag).
pub fn sealed_text(nonce: &[u8; NONCE_BYTES], ciphertext: &[u8]) -> String {
    use base64::Engine as _;
    let mut bytes = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
    bytes.extend_from_slice(nonce);
    bytes.extend_from_slice(ciphertext);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The nonce and ciphertext of a sealed cookie's value; `None` when it cannot be one (not
/// base64url, shorter than a nonce and a tag, or longer than a cookie may be).
pub fn sealed_parts(text: &str) -> Option<([u8; NONCE_BYTES], Vec<u8>)> {
    use base64::Engine as _;
    if text.len() > 4096 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
    if bytes.len() < NONCE_BYTES + 16 {
        return None;
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
    Some((nonce.try_into().ok()?, ciphertext.to_vec()))
}

/// The issuer's authorization URL for a new flow: code, PKCE S256, `state` and `nonce`.
pub fn authorize_url(
    authorize_endpoint: &str,
    client_id: &str,
    redirect_uri: &str,
    scope: &str,
    state: &str,
    challenge: &str,
    nonce: &str,
) -> String {
    let separator = if authorize_endpoint.contains('?') { '&' } else { '?' };
    let params = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", scope),
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("nonce", nonce),
    ];
    let query: Vec<String> = params.iter().map(|(name, value)| format!("{name}={}", percent_encode(value))).collect();
    format!("{authorize_endpoint}{separator}{}", query.join("&"))
}

/// The callback URL of the site `head` was sent to (its scheme and authority).
pub fn callback_url(head: &RequestHead<'_>) -> String {
    let url = head.url_parts();
    format!("{}://{}{CALLBACK_PATH}", url.scheme, url.authority)
}

/// The origin (scheme and authority) of the site `head` was sent to.
pub fn site_origin(head: &RequestHead<'_>) -> String {
    let url = head.url_parts();
    format!("{}://{}", url.scheme, url.authority)
}

/// True for a POST a page of this very site made: `Sec-Fetch-Site: same-origin`, or, from a
/// browser that sends no Fetch Metadata, an `Origin` equal to the site's. A cross-site form or a
/// `fetch` from another origin is neither.
pub fn is_same_origin_post(head: &RequestHead<'_>) -> bool {
    match head.header("sec-fetch-site") {
        Some(site) => site.trim().eq_ignore_ascii_case("same-origin"),
        None => head.header("origin").is_some_and(|origin| origin.trim() == site_origin(head)),
    }
}

/// True when a request that comes with the session cookie may act on it: a GET, HEAD or OPTIONS
/// (they change nothing), a request from a page of this site, or one from an origin `CORS` lets
/// send credentials. Otherwise (a form another site submits, a fetch from another origin) the
/// cookie would act for the user without the user's page asking.
pub fn may_use_session(head: &RequestHead<'_>, cors: Option<&crate::cors::Cors>) -> bool {
    let safe = ["GET", "HEAD", "OPTIONS"].iter().any(|method| head.method.eq_ignore_ascii_case(method));
    let allowed_origin =
        || cors.zip(head.header("origin")).is_some_and(|(cors, origin)| cors.allows_credentials_from(origin.trim()));
    safe || is_same_origin_post(head) || allowed_origin()
}

/// The issuer's logout URL (OpenID Connect RP-Initiated Logout): the client, where to come back to,
/// and the ID token when the session still had one.
pub fn end_session_url(endpoint: &str, client_id: &str, after: &str, id_token: Option<&str>) -> String {
    let separator = if endpoint.contains('?') { '&' } else { '?' };
    let mut url = format!(
        "{endpoint}{separator}client_id={}&post_logout_redirect_uri={}",
        percent_encode(client_id),
        percent_encode(after)
    );
    if let Some(id_token) = id_token {
        url.push_str(&format!("&id_token_hint={}", percent_encode(id_token)));
    }
    url
}

/// The names of the sign-in flow cookies the request carries.
pub fn flow_cookie_names<'a>(head: &RequestHead<'a>) -> Vec<&'a str> {
    head.headers
        .iter()
        .filter(|(name, _)| name == "cookie")
        .flat_map(|(_, value)| cookie_pairs(value))
        .filter_map(|pair| pair.split_once('=').map(|(name, _)| name.trim()))
        .filter(|name| name.starts_with(FLOW_COOKIE_PREFIX))
        .collect()
}

/// A `Set-Cookie` value for a `__Host-` cookie: Secure, Path=/, HttpOnly unless `script_readable`,
/// with `same_site` and `max_age` (0 removes it).
pub fn set_cookie(name: &str, value: &str, same_site: &str, max_age: u64, script_readable: bool) -> String {
    let http_only = if script_readable { "" } else { "; HttpOnly" };
    format!("{name}={value}; Path=/; Secure{http_only}; SameSite={same_site}; Max-Age={max_age}")
}

/// A `Set-Cookie` value that removes the cookie `name`.
pub fn clear_cookie(name: &str) -> String {
    set_cookie(name, "", "Lax", 0, false)
}

/// The cookies a new flow's answer sets or clears: its own (sealed `value`, Lax so that it comes
/// back with the issuer's redirect, `FLOW_LIFETIME_SECS`), and, when the browser already holds
/// [`MAX_FLOWS`] or more, the removal of each of those.
pub fn flow_cookies(existing: &[&str], state: &str, value: &str) -> Vec<String> {
    let mut cookies = Vec::new();
    if existing.len() >= MAX_FLOWS {
        cookies.extend(existing.iter().map(|name| clear_cookie(name)));
    }
    cookies.push(set_cookie(&format!("{FLOW_COOKIE_PREFIX}{state}"), value, "Lax", FLOW_LIFETIME_SECS, false));
    cookies
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ParsedHead;

    fn head_of(method: &str, url: &str, headers: &[(&str, &str)]) -> String {
        let mut block = format!("{method}\n{url}\n");
        for (name, value) in headers {
            block.push_str(&format!("{name}\n{value}\n"));
        }
        block
    }

    #[test]
    fn only_paths_of_this_site_are_returned_to() {
        for good in ["/", "/page", "/a/b?x=1&y=%20z", "/search?q=caf%C3%A9", "/a#frag"] {
            assert_eq!(safe_return_path(good), Some(good), "{good}");
        }
        for bad in [
            "",
            "page",
            "//evil.example",
            "//evil.example/path",
            "/\\evil.example",
            "/a\\b",
            "https://evil.example/",
            "https:evil.example",
            "javascript:alert(1)",
            "/%2F%2Fevil.example",
            "/%5cevil.example",
            "/a%2fb",
            "/%252F",
            "/a b",
            "/a\tb",
            "/a\nLocation: https://evil.example",
            "/caf\u{e9}",
        ] {
            assert_eq!(safe_return_path(bad), None, "{bad:?}");
        }
        assert_eq!(safe_return_path(&format!("/{}", "a".repeat(MAX_RETURN_PATH))), None, "too long");
    }

    #[test]
    fn the_authorization_url_carries_the_flow() {
        let url = authorize_url(
            "http://127.0.0.1:8080/authorize",
            "site",
            "https://site.example/_portcullis/callback",
            "openid",
            "st",
            "ch",
            "no",
        );
        assert_eq!(
            url,
            "http://127.0.0.1:8080/authorize?response_type=code&client_id=site\
             &redirect_uri=https%3A%2F%2Fsite.example%2F_portcullis%2Fcallback&scope=openid&state=st\
             &code_challenge=ch&code_challenge_method=S256&nonce=no"
        );
    }

    #[test]
    fn the_callback_is_on_the_site_the_browser_asked() {
        let block = head_of("GET", "http://127.0.0.1:8787/page?x=1", &[]);
        let parsed = ParsedHead::parse(&block).expect("a head");
        assert_eq!(callback_url(&parsed.head()), "http://127.0.0.1:8787/_portcullis/callback");
    }

    #[test]
    fn cookies_are_host_only_secure_and_flows_cannot_pile_up() {
        assert_eq!(
            set_cookie(SESSION_COOKIE, "v", "Lax", 60, false),
            "__Host-portcullis-edge-session=v; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=60"
        );
        assert_eq!(
            set_cookie(CSRF_COOKIE, "c", "Strict", 60, true),
            "__Host-portcullis-edge-csrf=c; Path=/; Secure; SameSite=Strict; Max-Age=60"
        );
        assert_eq!(clear_cookie("__Host-x"), "__Host-x=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0");

        let cookie = "theme=dark; __Host-portcullis-edge-flow-a=1; __Host-portcullis-edge-flow-b=2; __Host-portcullis-edge-session=s";
        let block = head_of("GET", "https://site.example/", &[("cookie", cookie)]);
        let parsed = ParsedHead::parse(&block).expect("a head");
        let existing = flow_cookie_names(&parsed.head());
        assert_eq!(existing, ["__Host-portcullis-edge-flow-a", "__Host-portcullis-edge-flow-b"]);
        let set = flow_cookies(&existing, "c", "sealed");
        assert_eq!(set, ["__Host-portcullis-edge-flow-c=sealed; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600"]);
        let third = ["__Host-portcullis-edge-flow-a", "__Host-portcullis-edge-flow-b", "__Host-portcullis-edge-flow-c"];
        let set = flow_cookies(&third, "d", "sealed");
        assert_eq!(set.len(), 4, "the three cleared, the new one set: {set:?}");
        assert!(set[..3].iter().all(|cookie| cookie.ends_with("Max-Age=0")));
    }

    #[test]
    fn logout_posts_come_from_pages_of_this_site_only() {
        let post = |headers: &[(&str, &str)]| {
            let block = head_of("POST", "http://127.0.0.1:8787/_portcullis/logout", headers);
            let parsed = ParsedHead::parse(&block).expect("a head");
            is_same_origin_post(&parsed.head())
        };
        assert!(post(&[("sec-fetch-site", "same-origin")]));
        assert!(!post(&[("sec-fetch-site", "same-site")]), "another port or subdomain is another origin");
        assert!(!post(&[("sec-fetch-site", "cross-site"), ("origin", "http://127.0.0.1:8787")]));
        assert!(post(&[("origin", "http://127.0.0.1:8787")]));
        assert!(!post(&[("origin", "http://127.0.0.1:8788")]));
        assert!(!post(&[]), "neither header: refused");
        assert_eq!(
            end_session_url("http://i.example/session/end", "edge", "http://s.example/", Some("a.b.c")),
            "http://i.example/session/end?client_id=edge&post_logout_redirect_uri=http%3A%2F%2Fs.example%2F&id_token_hint=a.b.c"
        );
        let same = crate::request::same_secret;
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("ab", "abc"));
    }

    #[test]
    fn a_session_cookie_acts_only_for_this_sites_pages_when_it_changes_something() {
        let cors = crate::cors::Cors::parse(r#"{"allow_origins": ["https://app.example"], "allow_credentials": true}"#)
            .expect("CORS");
        let may = |method: &str, headers: &[(&str, &str)]| {
            let block = head_of(method, "https://site.example/api/x", headers);
            let parsed = ParsedHead::parse(&block).expect("a head");
            may_use_session(&parsed.head(), Some(&cors))
        };
        assert!(may("GET", &[("sec-fetch-site", "cross-site")]), "a cross-site link: reading only");
        assert!(may("POST", &[("sec-fetch-site", "same-origin")]));
        assert!(may("DELETE", &[("origin", "https://site.example")]));
        assert!(may("PUT", &[("sec-fetch-site", "cross-site"), ("origin", "https://app.example")]), "allowed by CORS");
        assert!(!may("POST", &[("sec-fetch-site", "same-site"), ("origin", "https://blog.site.example")]), "a sibling");
        assert!(!may("POST", &[("sec-fetch-site", "cross-site"), ("origin", "https://evil.example")]));
        assert!(!may("POST", &[]), "no Fetch Metadata and no Origin");
        let block = head_of("POST", "https://site.example/api/x", &[("origin", "https://app.example")]);
        let parsed = ParsedHead::parse(&block).expect("a head");
        assert!(!may_use_session(&parsed.head(), None), "without CORS, only this site");
    }

    #[test]
    fn form_values_are_decoded_and_never_ambiguous() {
        assert_eq!(form_value("?code=a%2Bb&state=s", "code").as_deref(), Some("a+b"));
        assert_eq!(form_value("code=a+b", "code").as_deref(), Some("a b"));
        assert_eq!(form_value("code=&x=1", "code").as_deref(), Some(""));
        assert_eq!(form_value("x=1", "code"), None);
        assert_eq!(form_value("code=1&code=2", "code"), None, "repeated: refused");
        assert_eq!(form_value("code=%zz", "code"), None);
        assert_eq!(form_value("code=%ff", "code"), None, "not UTF-8");
        assert_eq!(form_value("c%6Fde=x", "code").as_deref(), Some("x"));
        assert!(is_flow_state(&"a".repeat(43)));
        assert!(!is_flow_state(&"a".repeat(42)) && !is_flow_state(&format!("{};", "a".repeat(42))));
    }

    #[test]
    fn sealed_values_split_back_into_nonce_and_ciphertext() {
        let nonce = [7u8; NONCE_BYTES];
        let text = sealed_text(&nonce, &[1u8; 40]);
        assert_eq!(sealed_parts(&text), Some((nonce, vec![1u8; 40])));
        for bad in ["", "not base64!", &sealed_text(&nonce, &[1u8; 15]), &"A".repeat(5000)] {
            assert_eq!(sealed_parts(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sealed_values_are_small_and_read_back_exactly() {
        let session = SessionCookie { session_id: "s".repeat(43), csrf: "c".repeat(43), access_token: "t".repeat(560) };
        let text = session.encode();
        // Sealed: 12 bytes of nonce and 16 of tag, then base64url: under 1 KB with a typical token.
        let sealed = (text.len() + 28).div_ceil(3) * 4;
        assert!(sealed + SESSION_COOKIE.len() + 1 < 1024, "{sealed}");
        assert_eq!(SessionCookie::decode(&text), Some(session));
        for bad in ["", "a|b", "a||c", "|b|c"] {
            assert_eq!(SessionCookie::decode(bad), None, "{bad:?}");
        }
        // Without its token (too large for a cookie): every request asks the session's object.
        let tokenless = SessionCookie { session_id: "s".into(), csrf: "c".into(), access_token: String::new() };
        assert_eq!(SessionCookie::decode(&tokenless.encode()), Some(tokenless));
        assert!(fits_in_a_cookie(SESSION_COOKIE, &"v".repeat(MAX_COOKIE_BYTES - SESSION_COOKIE.len() - 1)));
        assert!(!fits_in_a_cookie(SESSION_COOKIE, &"v".repeat(MAX_COOKIE_BYTES - SESSION_COOKIE.len())));

        let flow = Flow {
            verifier: "v".repeat(43),
            nonce: "n".repeat(43),
            expires_at: 1_800_000_600,
            return_to: "/a?b=c|d".to_owned(),
        };
        assert_eq!(Flow::decode(&flow.encode()), Some(flow));
        assert_eq!(Flow::decode("v|n|soon|/"), None);
        assert_eq!(Flow::decode("v|n|1|//evil.example"), None, "a return path is checked again when read");

        let tokens = SessionTokens {
            access_expires_at: 1_800_000_300,
            refresh_token: "r".repeat(43),
            access_token: "a.b.c".to_owned(),
            id_token: None,
        };
        assert_eq!(SessionTokens::decode(&tokens.encode()), Some(tokens.clone()));
        let with_id = SessionTokens { id_token: Some("i.d.t".to_owned()), ..tokens };
        assert_eq!(SessionTokens::decode(&with_id.encode()), Some(with_id));
        assert_eq!(SessionTokens::decode("1||a|"), None);
    }

    #[test]
    fn a_token_endpoint_answer_gives_the_session_its_tokens() {
        let first = SessionTokens::from_token_response(
            r#"{"access_token":"a1","refresh_token":"r1","expires_in":300,"id_token":"i1","token_type":"Bearer"}"#,
            1000,
            None,
        )
        .expect("tokens");
        assert_eq!(
            first,
            SessionTokens {
                access_expires_at: 1300,
                refresh_token: "r1".into(),
                access_token: "a1".into(),
                id_token: Some("i1".into())
            }
        );
        // A refresh that leaves out the ID token keeps the one held; one without an access token is
        // no answer at all.
        let refreshed =
            SessionTokens::from_token_response(r#"{"access_token":"a2","refresh_token":"r2"}"#, 2000, Some(&first))
                .expect("tokens");
        assert_eq!((refreshed.access_expires_at, refreshed.id_token.as_deref()), (2060, Some("i1")));
        assert_eq!(SessionTokens::from_token_response(r#"{"refresh_token":"r"}"#, 0, None), None);
        assert_eq!(SessionTokens::from_token_response(r#"{"access_token":"a"}"#, 0, None), None, "no refresh token");
        assert_eq!(SessionTokens::from_token_response("not json", 0, None), None);
    }
}
