//! The authorization request (RFC 6749 §4.1.1, RFC 7636, OpenID Connect Core §3.1.2.1), checked
//! as a pure function of its parameters and the client it names.
//!
//! Two kinds of refusal, as RFC 6749 §4.1.2.1 says: while the client or the redirect URI is in
//! doubt, the browser is never sent anywhere ([`AuthorizeError::NoRedirect`], an error page);
//! once both are known, every other error goes back to the redirect URI
//! ([`AuthorizeError::Redirect`]).

use super::pkce;
use crate::domain::accounts::Client;
use url::Url;

/// The scopes the issuer grants. `openid` asks for an ID token; `email` adds the address to it
/// and to `/userinfo`; `offline_access` is accepted for clients that always ask for it (a
/// refresh token is issued either way).
pub const SCOPES: &[&str] = &["openid", "email", "offline_access"];

/// The longest `state` and `nonce` accepted, in bytes.
const MAX_ECHOED: usize = 512;

/// What the request says about the login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// Sign in again only if there is no session (or it is older than `max_age`).
    Default,
    /// `prompt=none`: never show a page; `login_required` when a login would be needed.
    None,
    /// `prompt=login`: always ask again.
    Login,
}

/// A checked authorization request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationRequest {
    /// The client.
    pub client_id: String,
    /// The redirect URI, registered by the client exactly so.
    pub redirect_uri: String,
    /// Echoed back to the client.
    pub state: Option<String>,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The granted scopes, space-separated, in the order of [`SCOPES`].
    pub scope: String,
    /// Put in the ID token.
    pub nonce: Option<String>,
    /// `prompt`.
    pub prompt: Prompt,
    /// `max_age`: the oldest login (in seconds) that still counts.
    pub max_age: Option<u64>,
    /// `login_hint`: the email to fill in.
    pub login_hint: Option<String>,
    /// The request as it came, to carry through the login page and sign-in links.
    pub query: String,
}

impl AuthorizationRequest {
    /// True when an ID token was asked for.
    pub fn wants_id_token(&self) -> bool {
        self.scope.split(' ').any(|scope| scope == "openid")
    }

    /// True when a login at `auth_time` is recent enough for `max_age` at `now`.
    pub fn accepts_login_at(&self, auth_time: u64, now: u64) -> bool {
        self.max_age.is_none_or(|max_age| auth_time.saturating_add(max_age) >= now)
    }
}

/// Why an authorization request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizeError {
    /// The client or the redirect URI cannot be trusted: shown on an error page, never redirected to.
    #[error("{0}")]
    NoRedirect(&'static str),
    /// Sent back to the redirect URI (RFC 6749 §4.1.2.1).
    #[error("{code}: {description}")]
    Redirect {
        /// Where to.
        redirect_uri: String,
        /// Echoed.
        state: Option<String>,
        /// `invalid_request`, `unsupported_response_type`, `invalid_scope`, `login_required`, ...
        code: &'static str,
        /// `error_description`: for the developer, never secret.
        description: &'static str,
    },
}

/// The parameters of a query string, each at most once (RFC 6749 §3.1); an empty value counts as
/// absent. `Err` names a parameter sent twice.
pub fn parameters(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut seen: Vec<(String, String)> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if seen.iter().any(|(other, _)| *other == name) {
            return Err(name.into_owned());
        }
        seen.push((name.into_owned(), value.into_owned()));
    }
    seen.retain(|(_, value)| !value.is_empty());
    Ok(seen)
}

/// The client id and redirect URI of a query string, before the client is looked up.
pub fn client_of(query: &str) -> Result<(String, Option<String>), AuthorizeError> {
    let params = parameters(query).map_err(|_| AuthorizeError::NoRedirect("a parameter is repeated"))?;
    let get = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    let client_id = get("client_id").ok_or(AuthorizeError::NoRedirect("client_id is missing"))?;
    Ok((client_id, get("redirect_uri")))
}

/// Checks the request `query` for `client` (`None`: no such client).
pub fn check(query: &str, client: Option<&Client>) -> Result<AuthorizationRequest, AuthorizeError> {
    let params = parameters(query).map_err(|_| AuthorizeError::NoRedirect("a parameter is repeated"))?;
    let get = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let client = client.ok_or(AuthorizeError::NoRedirect("unknown client"))?;
    if client.redirect_uris.is_empty() {
        return Err(AuthorizeError::NoRedirect("the client has no redirect URI: it cannot use this flow"));
    }
    let redirect_uri = get("redirect_uri").ok_or(AuthorizeError::NoRedirect("redirect_uri is missing"))?;
    if !client.redirect_uris.iter().any(|registered| registered == redirect_uri) {
        return Err(AuthorizeError::NoRedirect("redirect_uri is not registered for this client"));
    }
    let state = get("state").map(str::to_owned);
    let refuse = |code, description| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.to_owned(),
        state: state.clone(),
        code,
        description,
    };
    if state.as_ref().is_some_and(|state| state.len() > MAX_ECHOED) {
        return Err(refuse("invalid_request", "state is too long"));
    }
    match get("response_type") {
        Some("code") => {}
        Some(_) => return Err(refuse("unsupported_response_type", "only response_type=code is served")),
        None => return Err(refuse("invalid_request", "response_type is missing")),
    }
    let code_challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (None, _) => return Err(refuse("invalid_request", "code_challenge is required (PKCE, S256)")),
        (Some(_), Some("plain")) => return Err(refuse("invalid_request", "code_challenge_method plain is refused")),
        (Some(_), None) => return Err(refuse("invalid_request", "code_challenge_method=S256 is required")),
        (Some(_), Some(method)) if method != "S256" => {
            return Err(refuse("invalid_request", "code_challenge_method must be S256"));
        }
        (Some(challenge), Some(_)) if !pkce::is_challenge(challenge) => {
            return Err(refuse("invalid_request", "code_challenge is not a base64url SHA-256"));
        }
        (Some(challenge), Some(_)) => challenge.to_owned(),
    };
    let asked: Vec<&str> = get("scope").unwrap_or_default().split(' ').filter(|scope| !scope.is_empty()).collect();
    // RFC 6749 §3.3: no default scope; every token of a browser sign-in carries what was granted.
    if asked.is_empty() {
        return Err(refuse("invalid_scope", "scope is required (openid, email, offline_access)"));
    }
    if asked.iter().any(|scope| !SCOPES.contains(scope)) {
        return Err(refuse("invalid_scope", "a requested scope is not served (openid, email, offline_access)"));
    }
    let scope = SCOPES.iter().filter(|scope| asked.contains(scope)).copied().collect::<Vec<_>>().join(" ");
    let nonce = get("nonce").map(str::to_owned);
    if nonce.as_ref().is_some_and(|nonce| nonce.len() > MAX_ECHOED) {
        return Err(refuse("invalid_request", "nonce is too long"));
    }
    let mut prompt = Prompt::Default;
    for value in get("prompt").unwrap_or_default().split(' ').filter(|value| !value.is_empty()) {
        prompt = match (prompt, value) {
            (Prompt::Default, "none") => Prompt::None,
            (Prompt::None, _) | (_, "none") => {
                return Err(refuse("invalid_request", "prompt=none cannot be combined with another value"));
            }
            (_, "login") => Prompt::Login,
            // No consent screen and one account per browser: nothing to show for these.
            (current, "consent" | "select_account") => current,
            _ => return Err(refuse("invalid_request", "prompt must be none, login, consent or select_account")),
        };
    }
    let max_age = match get("max_age") {
        None => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| refuse("invalid_request", "max_age is not a number"))?),
    };
    let login_hint = get("login_hint").filter(|hint| hint.len() <= 254).map(str::to_owned);
    Ok(AuthorizationRequest {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        state,
        code_challenge,
        scope,
        nonce,
        prompt,
        max_age,
        login_hint,
        query: query.to_owned(),
    })
}

/// `redirect_uri` with the answer's parameters added to its query, and `iss` (RFC 9207).
pub fn redirect_with(redirect_uri: &str, answer: &[(&str, &str)], issuer: &str) -> String {
    match Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut query = url.query_pairs_mut();
                for (name, value) in answer {
                    query.append_pair(name, value);
                }
                query.append_pair("iss", issuer);
            }
            url.into()
        }
        // Registered URIs are checked absolute URLs: this cannot happen; send nowhere.
        Err(_) => "about:blank".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn client() -> Client {
        Client {
            client_id: "site".to_owned(),
            audiences: vec!["api".to_owned()],
            roles: Vec::new(),
            created_at: 0,
            redirect_uris: vec!["https://site.example/callback".to_owned()],
            post_logout_redirect_uris: Vec::new(),
            public: false,
        }
    }

    fn query(extra: &str) -> String {
        format!(
            "response_type=code&client_id=site&redirect_uri=https%3A%2F%2Fsite.example%2Fcallback&state=s1\
             &code_challenge={CHALLENGE}&code_challenge_method=S256&scope=openid{extra}"
        )
    }

    fn redirected_code(result: Result<AuthorizationRequest, AuthorizeError>) -> &'static str {
        match result {
            Err(AuthorizeError::Redirect { code, state, .. }) => {
                assert_eq!(state.as_deref(), Some("s1"), "state is echoed");
                code
            }
            other => panic!("not a redirected error: {other:?}"),
        }
    }

    #[test]
    fn a_good_request_is_read() {
        let query = query("&nonce=n1&max_age=60&prompt=login").replace("scope=openid", "scope=email%20openid%20");
        let request = check(&query, Some(&client())).expect("valid");
        assert_eq!(request.scope, "openid email");
        assert!(request.wants_id_token());
        assert_eq!(request.nonce.as_deref(), Some("n1"));
        assert_eq!(request.prompt, Prompt::Login);
        assert!(request.accepts_login_at(100, 160) && !request.accepts_login_at(100, 161));
    }

    #[test]
    fn the_client_and_redirect_uri_are_never_redirected_to_when_in_doubt() {
        let cases = [
            (query(""), None, "unknown client"),
            (query("").replace("callback", "callback%2Fmore"), Some(client()), "redirect_uri is not registered"),
            (query("").replace("%2Fcallback", ""), Some(client()), "redirect_uri is not registered"),
            (query("").replace("&redirect_uri=https%3A%2F%2Fsite.example%2Fcallback", ""), Some(client()), "missing"),
            (query("&client_id=other"), Some(client()), "repeated"),
        ];
        for (query, client, why) in cases {
            match check(&query, client.as_ref()) {
                Err(AuthorizeError::NoRedirect(reason)) => assert!(reason.contains(why), "{reason} / {why}"),
                other => panic!("{query}: {other:?}"),
            }
        }
        let mut no_uris = client();
        no_uris.redirect_uris.clear();
        assert!(matches!(check(&query(""), Some(&no_uris)), Err(AuthorizeError::NoRedirect(_))));
    }

    #[test]
    fn other_errors_go_back_to_the_client() {
        let cases = [
            (query("").replace("&code_challenge_method=S256", "&code_challenge_method=plain"), "invalid_request"),
            (query("").replace("&code_challenge_method=S256", ""), "invalid_request"),
            (query("").replace(&format!("&code_challenge={CHALLENGE}"), ""), "invalid_request"),
            (query("").replace(CHALLENGE, "short"), "invalid_request"),
            (query("").replace("response_type=code", "response_type=token"), "unsupported_response_type"),
            (query("").replace("response_type=code&", ""), "invalid_request"),
            (query("").replace("scope=openid", "scope=openid%20admin"), "invalid_scope"),
            (query("&prompt=none%20login"), "invalid_request"),
            (query("&prompt=bogus"), "invalid_request"),
            (query("&max_age=soon"), "invalid_request"),
            (query(&format!("&nonce={}", "n".repeat(600))), "invalid_request"),
            (query("").replace("&scope=openid", ""), "invalid_scope"),
        ];
        for (query, code) in cases {
            assert_eq!(redirected_code(check(&query, Some(&client()))), code, "{query}");
        }
    }

    #[test]
    fn answers_keep_the_registered_query_and_name_the_issuer() {
        let url =
            redirect_with("https://site.example/cb?a=1", &[("code", "c&d"), ("state", "s")], "https://id.example");
        assert_eq!(url, "https://site.example/cb?a=1&code=c%26d&state=s&iss=https%3A%2F%2Fid.example");
    }
}
