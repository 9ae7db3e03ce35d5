//! The Worker's configuration: wrangler `[vars]` and secrets, read and checked once per isolate.
//!
//! Every value is checked before the first request is served. A bad value is a [`ConfigError`]
//! that names the variable; the Worker then answers every request with a generic 500 rather than
//! guess (never an open door).

use crate::assertion::{AssertionSettings, parse_keys};
use crate::cors::Cors;
use crate::document_cache::CacheBounds;
use jwks::assertion::{DEFAULT_ASSERTION_ISSUER, MAX_ASSERTION_LIFETIME};
use jwks::{Access, ClaimsOptions, Policy, PolicyError, Validator};
use std::fmt;

/// Every variable the Worker reads; the status page lists which of them are set.
pub const VARIABLES: &[&str] = &[
    "ISSUER",
    "AUDIENCE",
    "JWKS_URL",
    "ORIGIN_URL",
    "POLICY",
    "LEEWAY_SECONDS",
    "TOKEN_COOKIE",
    "LOGIN_URL",
    "FORWARD_TOKEN",
    "REALM",
    "JWKS_MIN_TTL_SECONDS",
    "JWKS_MAX_TTL_SECONDS",
    "JWKS_REFETCH_COOLDOWN_SECONDS",
    "JWKS_MAX_STALE_SECONDS",
    "JWKS_TIMEOUT_MS",
    "TOKEN_CACHE_ENTRIES",
    "ASSERTION_KEYS",
    "ASSERTION_ISSUER",
    "ASSERTION_TTL_SECONDS",
    "CORS",
    "REVOCATION_URL",
    "REVOCATION_MAX_AGE_SECONDS",
    "REVOCATION_MAX_STALE_SECONDS",
    "STATUS_ROLE",
    "STATUS_SECRET",
    "SESSION_CLIENT_ID",
    "SESSION_CLIENT_SECRET",
    "SESSION_COOKIE_KEYS",
    "SESSION_SCOPE",
    "SESSION_AFTER_LOGOUT",
];

/// The most verified tokens an isolate may keep: an entry (the token and its decoded claims) takes
/// about 1 KiB for a typical access token and 14 KiB at most (at the 8 KiB the core accepts), so
/// 4 MiB typically and 56 MiB at worst of the isolate's 128 MiB.
const MAX_TOKEN_CACHE_ENTRIES: u64 = 4096;

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the key set is fetched from.
    pub jwks_url: String,
    /// Where allowed requests go: scheme, host, optional port and base path, no trailing `/`.
    pub origin_url: String,
    /// Which routes need which roles.
    pub policy: Policy,
    /// A cookie the token may also come in.
    pub token_cookie: Option<String>,
    /// Where a browser without a token is sent, with the original URL as `return_to`.
    pub login_url: Option<String>,
    /// Whether `Authorization` (and the token cookie) reach the origin.
    pub forward_token: bool,
    /// The `realm` of `WWW-Authenticate`.
    pub realm: String,
    /// Key set cache bounds, and how long a fetch of the set may take.
    pub cache: CacheBounds,
    /// The token rules: `ISSUER` (the exact `iss`, `validator.claims.issuer`), `AUDIENCE` (any one
    /// must be in the token's `aud`, `validator.claims.audiences`) and `LEEWAY_SECONDS`
    /// (`validator.claims.leeway_secs`), with the core's defaults for the rest.
    pub validator: Validator,
    /// `TOKEN_CACHE_ENTRIES`: how many verified tokens an isolate keeps, so that a token seen
    /// again skips its signature check (see [`jwks::TokenCache`]); 0 turns the cache off.
    pub token_cache_entries: usize,
    /// `ASSERTION_KEYS` (a secret), `ASSERTION_ISSUER` (default `portcullis-edge`) and
    /// `ASSERTION_TTL_SECONDS` (default 60, at most 300): the edge signs an assertion for the
    /// origin on each request it forwards with an identity. Unset keys: no assertions.
    pub assertion: Option<AssertionSettings>,
    /// `CORS`: which pages of other origins may call the protected routes (see [`crate::cors`]);
    /// unset, none. The edge answers preflights itself.
    pub cors: Option<Cors>,
    /// `REVOCATION_URL` (default: `ISSUER` + `/revoked`; `off`: no checks),
    /// `REVOCATION_MAX_AGE_SECONDS` (default 30) and `REVOCATION_MAX_STALE_SECONDS` (default 300):
    /// where the issuer lists revoked access tokens, and how the edge caches that list.
    pub revocations: Option<RevocationSettings>,
    /// Who may read `/_portcullis/status`: a token with `STATUS_ROLE` (default `admin`), or the
    /// bearer `STATUS_SECRET` (a secret; unset: none).
    pub status: StatusAccess,
    /// Browser sessions at the edge (see [`crate::session`]): `SESSION_CLIENT_ID` turns them on,
    /// with the secrets `SESSION_CLIENT_SECRET` and `SESSION_COOKIE_KEYS`. Unset: bearer tokens
    /// only, as before.
    pub session: Option<SessionSettings>,
    /// The names of the [`VARIABLES`] that are set (for the status page: names, never values), in
    /// the order of [`VARIABLES`].
    pub variables_set: Vec<&'static str>,
}

/// Where the revocation list comes from and how it is cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSettings {
    /// The list's URL.
    pub url: String,
    /// Its lifetime is at most `REVOCATION_MAX_AGE_SECONDS` (the bound on how long a revoked
    /// token still passes while the issuer answers); it is refreshed from half that, retried every
    /// sixth of it, and serves `REVOCATION_MAX_STALE_SECONDS` past it when it cannot be refreshed.
    pub bounds: CacheBounds,
}

/// The edge as the issuer's client, signing browsers in.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// `SESSION_CLIENT_ID`: the edge's client at the issuer.
    pub client_id: String,
    /// `SESSION_CLIENT_SECRET` (a secret): its secret, sent with HTTP Basic.
    pub client_secret: String,
    /// `SESSION_COOKIE_KEYS` (a secret): one or two AES-256 keys, base64url, comma-separated; the
    /// first seals, both open (so the key can be rotated without signing everyone out).
    pub cookie_keys: Vec<[u8; 32]>,
    /// `SESSION_SCOPE`: what the edge asks for, default `openid`.
    pub scope: String,
    /// `SESSION_AFTER_LOGOUT`: the path of this site a logout ends on, default `/`.
    pub after_logout: String,
    /// The issuer's endpoints, from `ISSUER`: `/authorize`, `/oauth/token`, `/oauth/revoke`,
    /// `/session/end`.
    pub authorize_endpoint: String,
    /// See [`Self::authorize_endpoint`].
    pub token_endpoint: String,
    /// See [`Self::authorize_endpoint`].
    pub revocation_endpoint: String,
    /// See [`Self::authorize_endpoint`].
    pub end_session_endpoint: String,
}

impl fmt::Debug for SessionSettings {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SessionSettings")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<set>")
            .field("cookie_keys", &self.cookie_keys.len())
            .field("scope", &self.scope)
            .field("after_logout", &self.after_logout)
            .field("token_endpoint", &self.token_endpoint)
            .finish_non_exhaustive()
    }
}

/// The cookie keys of `SESSION_COOKIE_KEYS`: one or two, each 32 bytes of base64url.
fn parse_cookie_keys(text: &str) -> Result<Vec<[u8; 32]>, &'static str> {
    use base64::Engine as _;
    let keys: Vec<&str> = text.split(',').map(str::trim).filter(|key| !key.is_empty()).collect();
    if keys.is_empty() || keys.len() > 2 {
        return Err("must hold one or two keys, comma-separated");
    }
    keys.iter()
        .map(|key| {
            let bytes =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key).map_err(|_| "a key is not base64url")?;
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| "each key must be 32 bytes (43 characters of base64url)")
        })
        .collect()
}

/// Who may read the status page.
#[derive(Clone, PartialEq, Eq)]
pub struct StatusAccess {
    /// What a token must carry.
    pub access: Access,
    /// A bearer secret that opens it too.
    pub secret: Option<String>,
}

impl fmt::Debug for StatusAccess {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = self.secret.as_ref().map(|_| "<set>");
        formatter.debug_struct("StatusAccess").field("access", &self.access).field("secret", &secret).finish()
    }
}

/// A configuration value that is missing or wrong. Its message names the variable and never
/// repeats the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable at fault.
    pub variable: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "configuration variable {} {}", self.variable, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn problem(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { variable, problem: problem.into() }
}

/// Reads the variables through `lookup`; unset and empty are the same.
struct Vars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Vars<'_> {
    fn optional(&self, name: &'static str) -> Option<String> {
        (self.lookup)(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or_else(|| problem(name, "is missing"))
    }

    fn number(
        &self,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let Some(text) = self.optional(name) else {
            return Ok(default);
        };
        let number = text
            .bytes()
            .all(|byte| byte.is_ascii_digit())
            .then(|| text.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| problem(name, "is not a whole number"))?;
        if !range.contains(&number) {
            return Err(problem(name, format!("must be between {} and {}", range.start(), range.end())));
        }
        Ok(number)
    }
}

impl Config {
    /// Reads and checks every variable; `lookup` gives a variable's text, or `None` when unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_vars(&Vars { lookup: &lookup })
    }

    /// [`Self::from_lookup`], compiled once for every kind of lookup (the Worker has two).
    fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let issuer = vars.required("ISSUER")?;
        if !is_visible_ascii(&issuer) {
            return Err(problem("ISSUER", "must be printable ASCII without spaces"));
        }

        let audiences: Vec<String> = vars
            .required("AUDIENCE")?
            .split(',')
            .map(str::trim)
            .filter(|audience| !audience.is_empty())
            .map(str::to_owned)
            .collect();
        if audiences.is_empty() {
            return Err(problem("AUDIENCE", "lists no audience"));
        }

        let jwks_url = match vars.optional("JWKS_URL") {
            Some(url) => {
                check_issuer_url(&url).map_err(|why| problem("JWKS_URL", why))?;
                url
            }
            None => {
                let derived = format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'));
                check_issuer_url(&derived).map_err(|why| {
                    problem("ISSUER", format!("does not give a usable JWKS_URL ({why}); set JWKS_URL"))
                })?;
                derived
            }
        };

        let origin = vars.required("ORIGIN_URL")?;
        let origin_url = check_origin_url(&origin).map_err(|why| problem("ORIGIN_URL", why))?;

        let policy = parse_policy(&vars.required("POLICY")?)?;

        let leeway_secs = vars.number("LEEWAY_SECONDS", 60, 0..=600)?;

        let token_cookie = vars.optional("TOKEN_COOKIE");
        if let Some(name) = &token_cookie
            && !is_token(name)
        {
            return Err(problem("TOKEN_COOKIE", "is not a valid cookie name"));
        }

        let login_url = vars.optional("LOGIN_URL");
        if let Some(url) = &login_url {
            check_login_url(url).map_err(|why| problem("LOGIN_URL", why))?;
        }

        let forward_token = match vars.optional("FORWARD_TOKEN").map(|value| value.to_ascii_lowercase()).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(problem("FORWARD_TOKEN", "must be true or false")),
        };

        let realm = vars.optional("REALM").unwrap_or_else(|| "portcullis".to_owned());
        if !realm.bytes().all(|byte| (0x20..0x7f).contains(&byte) && byte != b'"' && byte != b'\\') {
            return Err(problem("REALM", "must be printable ASCII without quotes or backslashes"));
        }

        const DAY: u64 = 24 * 60 * 60;
        let min_ttl_secs = vars.number("JWKS_MIN_TTL_SECONDS", 60, 1..=DAY)?;
        let max_ttl_secs = vars.number("JWKS_MAX_TTL_SECONDS", DAY, 1..=7 * DAY)?;
        if max_ttl_secs < min_ttl_secs {
            return Err(problem("JWKS_MAX_TTL_SECONDS", "is less than JWKS_MIN_TTL_SECONDS"));
        }
        let cache = CacheBounds {
            min_ttl_secs,
            max_ttl_secs,
            refetch_cooldown_secs: vars.number("JWKS_REFETCH_COOLDOWN_SECONDS", 30, 1..=DAY)?,
            max_stale_secs: vars.number("JWKS_MAX_STALE_SECONDS", 0, 0..=7 * DAY)?,
            fetch_timeout_ms: u32::try_from(vars.number("JWKS_TIMEOUT_MS", 5000, 100..=30_000)?)
                .map_err(|_| problem("JWKS_TIMEOUT_MS", "is too large"))?,
        };

        let token_cache_entries = usize::try_from(vars.number(
            "TOKEN_CACHE_ENTRIES",
            jwks::DEFAULT_TOKEN_CACHE_ENTRIES as u64,
            0..=MAX_TOKEN_CACHE_ENTRIES,
        )?)
        .map_err(|_| problem("TOKEN_CACHE_ENTRIES", "is too large"))?;

        let assertion = match vars.optional("ASSERTION_KEYS") {
            None => None,
            Some(keys) => {
                let (signer, published) = parse_keys(&keys).map_err(|why| problem("ASSERTION_KEYS", why))?;
                let edge = vars.optional("ASSERTION_ISSUER").unwrap_or_else(|| DEFAULT_ASSERTION_ISSUER.to_owned());
                // The origin tells the edge's assertions from the issuer's tokens by `typ` and by `iss`.
                if !is_visible_ascii(&edge) || edge == issuer {
                    return Err(problem("ASSERTION_ISSUER", "must be printable ASCII and differ from ISSUER"));
                }
                let ttl_secs = vars.number("ASSERTION_TTL_SECONDS", 60, 1..=MAX_ASSERTION_LIFETIME)?;
                Some(AssertionSettings { signer, published, issuer: edge, ttl_secs })
            }
        };

        let cors = match vars.optional("CORS") {
            None => None,
            Some(text) => Some(Cors::parse(&text).map_err(|why| problem("CORS", why))?),
        };

        let revocations = match vars.optional("REVOCATION_URL").as_deref() {
            Some("off") => None,
            url => {
                let url = match url {
                    Some(url) => {
                        check_issuer_url(url).map_err(|why| problem("REVOCATION_URL", why))?;
                        url.to_owned()
                    }
                    None => {
                        let derived = format!("{}/revoked", issuer.trim_end_matches('/'));
                        check_issuer_url(&derived).map_err(|why| {
                            problem(
                                "ISSUER",
                                format!("does not give a usable REVOCATION_URL ({why}); set REVOCATION_URL"),
                            )
                        })?;
                        derived
                    }
                };
                let max_age_secs = vars.number("REVOCATION_MAX_AGE_SECONDS", 30, 1..=3600)?;
                let bounds = CacheBounds {
                    min_ttl_secs: 1,
                    max_ttl_secs: max_age_secs,
                    refetch_cooldown_secs: (max_age_secs / 6).max(1),
                    max_stale_secs: vars.number("REVOCATION_MAX_STALE_SECONDS", 300, 0..=DAY)?,
                    fetch_timeout_ms: cache.fetch_timeout_ms,
                };
                Some(RevocationSettings { url, bounds })
            }
        };

        let status_role = vars.optional("STATUS_ROLE").unwrap_or_else(|| "admin".to_owned());
        if !is_visible_ascii(&status_role) || status_role.contains(',') {
            return Err(problem("STATUS_ROLE", "must be one role: printable ASCII without spaces or commas"));
        }
        let status_secret = vars.optional("STATUS_SECRET");
        if status_secret.as_ref().is_some_and(|secret| secret.len() < 16 || !is_visible_ascii(secret)) {
            return Err(problem("STATUS_SECRET", "must be at least 16 printable ASCII characters"));
        }
        let status = StatusAccess { access: Access::AnyRole(vec![status_role]), secret: status_secret };

        let session = match vars.optional("SESSION_CLIENT_ID") {
            None => None,
            Some(client_id) => {
                if !is_visible_ascii(&client_id) {
                    return Err(problem("SESSION_CLIENT_ID", "must be printable ASCII without spaces"));
                }
                let client_secret = vars.required("SESSION_CLIENT_SECRET")?;
                let cookie_keys = parse_cookie_keys(&vars.required("SESSION_COOKIE_KEYS")?)
                    .map_err(|why| problem("SESSION_COOKIE_KEYS", why))?;
                let scope = vars.optional("SESSION_SCOPE").unwrap_or_else(|| "openid".to_owned());
                if !scope.split(' ').any(|scope| scope == "openid")
                    || !scope.bytes().all(|byte| byte == b' ' || byte.is_ascii_graphic())
                {
                    return Err(problem("SESSION_SCOPE", "must be space-separated scopes including openid"));
                }
                let after_logout = vars.optional("SESSION_AFTER_LOGOUT").unwrap_or_else(|| "/".to_owned());
                if crate::session::safe_return_path(&after_logout).is_none() {
                    return Err(problem("SESSION_AFTER_LOGOUT", "must be a path of this site"));
                }
                let base = issuer.trim_end_matches('/');
                check_issuer_url(base).map_err(|why| {
                    problem("ISSUER", format!("does not give usable sign-in endpoints ({why}) for SESSION_CLIENT_ID"))
                })?;
                Some(SessionSettings {
                    client_id,
                    client_secret,
                    cookie_keys,
                    scope,
                    after_logout,
                    authorize_endpoint: format!("{base}/authorize"),
                    token_endpoint: format!("{base}/oauth/token"),
                    revocation_endpoint: format!("{base}/oauth/revoke"),
                    end_session_endpoint: format!("{base}/session/end"),
                })
            }
        };

        let validator = Validator::new(ClaimsOptions::new(issuer, audiences).with_leeway(leeway_secs));
        let variables_set = VARIABLES.iter().copied().filter(|name| vars.optional(name).is_some()).collect();
        Ok(Self {
            jwks_url,
            origin_url,
            policy,
            token_cookie,
            login_url,
            forward_token,
            realm,
            cache,
            validator,
            token_cache_entries,
            assertion,
            cors,
            revocations,
            status,
            session,
            variables_set,
        })
    }
}

/// What a POLICY that is not JSON text is told: the Worker has no TOML parser (it would cost
/// ~55 KB gzip of wasm), but wrangler turns a `[vars.POLICY]` table into JSON for it.
const POLICY_NOT_JSON: &str = "must be JSON text (a JSON object); a TOML policy goes in wrangler.toml as a \
                               [vars.POLICY] table, which wrangler hands to the Worker as JSON";

/// POLICY as text is JSON, whatever features `jwks` was built with here.
fn parse_policy(text: &str) -> Result<Policy, ConfigError> {
    if !text.trim_start().starts_with('{') {
        return Err(problem("POLICY", POLICY_NOT_JSON));
    }
    Policy::parse(text).map_err(|error| match error {
        PolicyError::TomlUnsupported => problem("POLICY", POLICY_NOT_JSON),
        other => problem("POLICY", other.to_string()),
    })
}

/// Printable ASCII, no spaces.
fn is_visible_ascii(text: &str) -> bool {
    text.bytes().all(|byte| byte.is_ascii_graphic())
}

/// An RFC 9110 token (what a cookie name must be).
pub(crate) fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// The parts of an absolute http(s) URL that the checks need.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HttpUrl<'a> {
    /// `http` or `https`, lower case.
    pub(crate) scheme: &'a str,
    /// The host, as written (brackets kept for IPv6).
    pub(crate) host: &'a str,
    /// Everything from the first `/`, `?` or `#` after the authority.
    pub(crate) rest: &'a str,
}

/// Splits an absolute `http://` or `https://` URL, refusing what a configured URL should never
/// hold: user info, spaces or control characters, an empty host, a bad port.
pub(crate) fn parse_http_url(text: &str) -> Result<HttpUrl<'_>, &'static str> {
    if !is_visible_ascii(text) {
        return Err("must be printable ASCII without spaces");
    }
    let (scheme, after) = text.split_once("://").ok_or("is not an absolute http(s) URL")?;
    if scheme != "https" && scheme != "http" {
        return Err("is not an absolute http(s) URL");
    }
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(authority_end);
    if authority.contains('@') {
        return Err("must not carry user info");
    }
    let (host, port) = match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => (&authority[..colon], Some(&authority[colon + 1..])),
        _ => (authority, None),
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| !ip.is_empty() && ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'))
    } else {
        !host.is_empty() && host.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.')
    };
    if !host_ok {
        return Err("has no valid host");
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|byte| byte.is_ascii_digit()) || port.parse::<u16>().is_err())
    {
        return Err("has an invalid port");
    }
    Ok(HttpUrl { scheme, host, rest })
}

/// A host that is this machine: plain http to it is acceptable.
fn is_loopback(host: &str) -> bool {
    host == "localhost" || host == "[::1]" || host.strip_prefix("127.").is_some_and(|rest| rest.split('.').count() == 3)
}

/// The key set must come over https (plain http only to this machine, for development).
fn check_issuer_url(text: &str) -> Result<(), &'static str> {
    let url = parse_http_url(text)?;
    if url.scheme != "https" && !is_loopback(url.host) {
        return Err("must be https (http is only accepted for localhost)");
    }
    if url.rest.contains('#') {
        return Err("must not have a fragment");
    }
    Ok(())
}

/// The origin: scheme, host, port and an optional base path; returned without a trailing `/`.
fn check_origin_url(text: &str) -> Result<String, &'static str> {
    let url = parse_http_url(text)?;
    if url.rest.contains(['?', '#']) {
        return Err("must not have a query or a fragment");
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// The login page: an absolute http(s) URL, or a path on this host.
fn check_login_url(text: &str) -> Result<(), &'static str> {
    let rest = if text.starts_with('/') {
        if text.starts_with("//") || !is_visible_ascii(text) {
            return Err("must be an absolute http(s) URL or a path starting with a single '/'");
        }
        text
    } else {
        parse_http_url(text)?.rest
    };
    if rest.contains('#') {
        return Err("must not have a fragment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const POLICY: &str = r#"{"rules": [{"path": "/api/*", "access": "authenticated"}]}"#;

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            ("ISSUER", "https://issuer.example".to_owned()),
            ("AUDIENCE", "api".to_owned()),
            ("ORIGIN_URL", "https://origin.example/".to_owned()),
            ("POLICY", POLICY.to_owned()),
        ])
    }

    fn parse(vars: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    fn with(changes: &[(&'static str, &str)]) -> Result<Config, ConfigError> {
        let mut vars = base();
        for (name, value) in changes {
            vars.insert(name, (*value).to_owned());
        }
        parse(&vars)
    }

    fn fails_on(changes: &[(&'static str, &str)]) -> &'static str {
        with(changes).expect_err("should be refused").variable
    }

    #[test]
    fn defaults_are_filled_in() {
        let config = parse(&base()).expect("valid");
        assert_eq!(config.jwks_url, "https://issuer.example/.well-known/jwks.json");
        assert_eq!(config.origin_url, "https://origin.example");
        assert_eq!(config.validator.claims.audiences, ["api"]);
        assert_eq!(config.variables_set, ["ISSUER", "AUDIENCE", "ORIGIN_URL", "POLICY"]);
        assert!(!config.forward_token);
        assert_eq!(config.token_cookie, None);
        assert_eq!(config.login_url, None);
        assert_eq!(config.realm, "portcullis");
        assert_eq!(
            config.cache,
            CacheBounds {
                min_ttl_secs: 60,
                max_ttl_secs: 86_400,
                refetch_cooldown_secs: 30,
                max_stale_secs: 0,
                fetch_timeout_ms: 5000
            }
        );
        assert_eq!(
            config.revocations,
            Some(RevocationSettings {
                url: "https://issuer.example/revoked".to_owned(),
                bounds: CacheBounds {
                    min_ttl_secs: 1,
                    max_ttl_secs: 30,
                    refetch_cooldown_secs: 5,
                    max_stale_secs: 300,
                    fetch_timeout_ms: 5000
                }
            })
        );
        assert_eq!(config.status, StatusAccess { access: Access::AnyRole(vec!["admin".to_owned()]), secret: None });
        assert_eq!(config.validator.claims.issuer, "https://issuer.example");
        assert_eq!(config.validator.claims.leeway_secs, 60);
        assert_eq!(config.token_cache_entries, jwks::DEFAULT_TOKEN_CACHE_ENTRIES);
    }

    #[test]
    fn every_value_can_be_set() {
        let config = with(&[
            ("AUDIENCE", " api , admin-api ,"),
            ("JWKS_URL", "https://keys.example/jwks"),
            ("ORIGIN_URL", "http://10.0.0.2:8080/base/"),
            ("LEEWAY_SECONDS", "30"),
            ("TOKEN_COOKIE", "__Host-token"),
            ("LOGIN_URL", "/login?from=edge"),
            ("FORWARD_TOKEN", "TRUE"),
            ("REALM", "api.example"),
            ("JWKS_MIN_TTL_SECONDS", "1"),
            ("JWKS_MAX_TTL_SECONDS", "600"),
            ("JWKS_REFETCH_COOLDOWN_SECONDS", "2"),
            ("JWKS_MAX_STALE_SECONDS", "0"),
            ("JWKS_TIMEOUT_MS", "250"),
            ("TOKEN_CACHE_ENTRIES", "0"),
        ])
        .expect("valid");
        assert_eq!(config.token_cache_entries, 0);
        assert_eq!(config.validator.claims.audiences, ["api", "admin-api"]);
        assert_eq!(config.jwks_url, "https://keys.example/jwks");
        assert_eq!(config.origin_url, "http://10.0.0.2:8080/base");
        assert_eq!(config.validator.claims.leeway_secs, 30);
        assert_eq!(config.token_cookie.as_deref(), Some("__Host-token"));
        assert_eq!(config.login_url.as_deref(), Some("/login?from=edge"));
        assert!(config.forward_token);
        assert_eq!(config.realm, "api.example");
        assert_eq!(
            config.cache,
            CacheBounds {
                min_ttl_secs: 1,
                max_ttl_secs: 600,
                refetch_cooldown_secs: 2,
                max_stale_secs: 0,
                fetch_timeout_ms: 250
            }
        );
    }

    #[test]
    fn revocation_checks_and_the_status_page_can_be_set() {
        let config = with(&[
            ("REVOCATION_URL", "http://127.0.0.1:9000/revoked"),
            ("REVOCATION_MAX_AGE_SECONDS", "2"),
            ("REVOCATION_MAX_STALE_SECONDS", "0"),
            ("JWKS_TIMEOUT_MS", "250"),
            ("STATUS_ROLE", "ops"),
            ("STATUS_SECRET", "0123456789abcdef"),
        ])
        .expect("valid");
        let revocations = config.revocations.expect("checked");
        assert_eq!(revocations.url, "http://127.0.0.1:9000/revoked");
        assert_eq!(
            revocations.bounds,
            CacheBounds {
                min_ttl_secs: 1,
                max_ttl_secs: 2,
                refetch_cooldown_secs: 1,
                max_stale_secs: 0,
                fetch_timeout_ms: 250
            }
        );
        assert_eq!(config.status.access, Access::AnyRole(vec!["ops".to_owned()]));
        assert_eq!(config.status.secret.as_deref(), Some("0123456789abcdef"));
        assert!(!format!("{:?}", config.status).contains("0123"), "the secret is not printed");
        for (name, bad) in [
            ("REVOCATION_URL", "http://issuer.example/revoked"),
            ("REVOCATION_MAX_AGE_SECONDS", "0"),
            ("REVOCATION_MAX_AGE_SECONDS", "3601"),
            ("REVOCATION_MAX_STALE_SECONDS", "86401"),
            ("STATUS_ROLE", "a,b"),
            ("STATUS_ROLE", "two words"),
            ("STATUS_SECRET", "short"),
        ] {
            assert_eq!(fails_on(&[(name, bad)]), name, "{bad:?}");
        }
    }

    #[test]
    fn browser_sessions_need_a_client_its_secret_and_cookie_keys() {
        assert_eq!(with(&[]).expect("valid").session, None, "off by default");
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
        let other = "HxwdHhkaGxwVFhcYERITFA0ODxAJCgsMBQYHCAECAwQ";
        let session = with(&[
            ("SESSION_CLIENT_ID", "edge"),
            ("SESSION_CLIENT_SECRET", "s3cret"),
            ("SESSION_COOKIE_KEYS", &format!("{key}, {other}")),
        ])
        .expect("valid")
        .session
        .expect("on");
        assert_eq!(
            (session.client_id.as_str(), session.scope.as_str(), session.after_logout.as_str()),
            ("edge", "openid", "/")
        );
        assert_eq!(session.cookie_keys.len(), 2);
        assert_eq!(session.cookie_keys[0][..4], [0, 1, 2, 3]);
        assert_eq!(session.authorize_endpoint, "https://issuer.example/authorize");
        assert_eq!(session.token_endpoint, "https://issuer.example/oauth/token");
        assert!(!format!("{session:?}").contains("s3cret"), "the secret is not printed");
        let base = [("SESSION_CLIENT_ID", "edge"), ("SESSION_CLIENT_SECRET", "s"), ("SESSION_COOKIE_KEYS", key)];
        for (name, bad) in [
            ("SESSION_CLIENT_SECRET", ""),
            ("SESSION_COOKIE_KEYS", ""),
            ("SESSION_COOKIE_KEYS", "short"),
            (
                "SESSION_COOKIE_KEYS",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8,AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8,AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
            ),
            ("SESSION_SCOPE", "email"),
            ("SESSION_AFTER_LOGOUT", "https://evil.example/"),
            ("SESSION_AFTER_LOGOUT", "//evil.example"),
        ] {
            let mut vars: Vec<(&str, &str)> = base.iter().filter(|(name_, _)| *name_ != name).copied().collect();
            vars.push((name, bad));
            assert_eq!(fails_on(&vars), name, "{name}={bad:?}");
        }
    }

    #[test]
    fn required_values_are_named_when_missing() {
        for name in ["ISSUER", "AUDIENCE", "ORIGIN_URL", "POLICY"] {
            let mut vars = base();
            vars.remove(name);
            assert_eq!(parse(&vars).expect_err("missing").variable, name);
            vars.insert(name, "   ".to_owned());
            assert_eq!(parse(&vars).expect_err("blank").variable, name);
        }
        assert_eq!(fails_on(&[("AUDIENCE", " , ,")]), "AUDIENCE");
    }

    #[test]
    fn key_sets_come_over_https_except_from_this_machine() {
        assert_eq!(fails_on(&[("JWKS_URL", "http://issuer.example/jwks")]), "JWKS_URL");
        assert_eq!(fails_on(&[("JWKS_URL", "ftp://issuer.example/jwks")]), "JWKS_URL");
        assert_eq!(fails_on(&[("JWKS_URL", "https://user@issuer.example/jwks")]), "JWKS_URL");
        assert_eq!(fails_on(&[("JWKS_URL", "https://issuer.example/jwks#x")]), "JWKS_URL");
        assert_eq!(fails_on(&[("JWKS_URL", "https://issuer.example:99999/jwks")]), "JWKS_URL");
        assert_eq!(fails_on(&[("JWKS_URL", "https://issuer example/jwks")]), "JWKS_URL");
        for local in ["http://127.0.0.1:9000/jwks", "http://localhost/jwks", "http://[::1]:80/"] {
            assert_eq!(with(&[("JWKS_URL", local)]).expect("loopback").jwks_url, local);
        }
        assert_eq!(fails_on(&[("JWKS_URL", "http://127.0.0.1.evil.example/jwks")]), "JWKS_URL");
        // Without JWKS_URL, the issuer must give a usable one.
        let error = with(&[("ISSUER", "urn:example:issuer")]).expect_err("no JWKS URL");
        assert_eq!(error.variable, "ISSUER");
        let urn = with(&[("ISSUER", "urn:example:issuer"), ("JWKS_URL", "https://k.example/j")]).expect_err("no list");
        assert!(urn.problem.contains("REVOCATION_URL"), "{urn}");
        let issuer_elsewhere =
            [("ISSUER", "urn:example:issuer"), ("JWKS_URL", "https://k.example/j"), ("REVOCATION_URL", "off")];
        assert_eq!(with(&issuer_elsewhere).expect("no revocation checks").revocations, None);
        assert_eq!(
            with(&[("ISSUER", "http://127.0.0.1:8080/")]).expect("local issuer").jwks_url,
            "http://127.0.0.1:8080/.well-known/jwks.json"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert_eq!(fails_on(&[("ISSUER", "https://issuer .example")]), "ISSUER");
        assert_eq!(fails_on(&[("ORIGIN_URL", "origin.example")]), "ORIGIN_URL");
        assert_eq!(fails_on(&[("ORIGIN_URL", "https://origin.example/?a=b")]), "ORIGIN_URL");
        assert_eq!(fails_on(&[("POLICY", r#"{"rules": [{"path": "api", "access": "public"}]}"#)]), "POLICY");
        assert_eq!(fails_on(&[("POLICY", r#"{"rules": [{"path": "/a", "access": "public""#)]), "POLICY");
        assert_eq!(fails_on(&[("POLICY", "{\"rules\": []}")]), "POLICY");
        assert_eq!(fails_on(&[("LEEWAY_SECONDS", "-1")]), "LEEWAY_SECONDS");
        assert_eq!(fails_on(&[("LEEWAY_SECONDS", "1e3")]), "LEEWAY_SECONDS");
        assert_eq!(fails_on(&[("LEEWAY_SECONDS", "601")]), "LEEWAY_SECONDS");
        assert_eq!(fails_on(&[("TOKEN_COOKIE", "to ken")]), "TOKEN_COOKIE");
        assert_eq!(fails_on(&[("TOKEN_COOKIE", "a;b")]), "TOKEN_COOKIE");
        assert_eq!(fails_on(&[("LOGIN_URL", "//evil.example/login")]), "LOGIN_URL");
        assert_eq!(fails_on(&[("LOGIN_URL", "javascript:alert(1)")]), "LOGIN_URL");
        assert_eq!(fails_on(&[("LOGIN_URL", "https://login.example/#frag")]), "LOGIN_URL");
        assert_eq!(fails_on(&[("FORWARD_TOKEN", "yes")]), "FORWARD_TOKEN");
        assert_eq!(fails_on(&[("REALM", "a\"b")]), "REALM");
        assert_eq!(fails_on(&[("JWKS_MIN_TTL_SECONDS", "0")]), "JWKS_MIN_TTL_SECONDS");
        assert_eq!(
            fails_on(&[("JWKS_MIN_TTL_SECONDS", "600"), ("JWKS_MAX_TTL_SECONDS", "60")]),
            "JWKS_MAX_TTL_SECONDS"
        );
        assert_eq!(fails_on(&[("JWKS_REFETCH_COOLDOWN_SECONDS", "0")]), "JWKS_REFETCH_COOLDOWN_SECONDS");
        assert_eq!(fails_on(&[("JWKS_TIMEOUT_MS", "99999999999999999999999")]), "JWKS_TIMEOUT_MS");
        assert_eq!(fails_on(&[("TOKEN_CACHE_ENTRIES", "4097")]), "TOKEN_CACHE_ENTRIES");
        assert_eq!(fails_on(&[("TOKEN_CACHE_ENTRIES", "-1")]), "TOKEN_CACHE_ENTRIES");
    }

    #[test]
    fn assertion_settings_are_checked() {
        const KEYS: &str = r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "edge-1",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
            "d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}]}"#;
        assert_eq!(parse(&base()).expect("valid").assertion, None, "off without keys");
        let config = with(&[("ASSERTION_KEYS", KEYS)]).expect("valid");
        let assertion = config.assertion.expect("on");
        assert_eq!(
            (assertion.issuer.as_str(), assertion.ttl_secs, assertion.signer.kid.as_str()),
            ("portcullis-edge", 60, "edge-1")
        );
        assert!(config.variables_set.contains(&"ASSERTION_KEYS"));
        assert_eq!(fails_on(&[("ASSERTION_KEYS", "{}")]), "ASSERTION_KEYS");
        assert_eq!(fails_on(&[("ASSERTION_KEYS", KEYS), ("ASSERTION_TTL_SECONDS", "301")]), "ASSERTION_TTL_SECONDS");
        assert_eq!(
            fails_on(&[("ASSERTION_KEYS", KEYS), ("ASSERTION_ISSUER", "https://issuer.example")]),
            "ASSERTION_ISSUER"
        );
        let error = with(&[("ASSERTION_KEYS", &KEYS.replace("\"d\"", "\"dd\""))]).expect_err("no private part");
        assert!(!error.to_string().contains("jpsQnnGQ"), "{error}");
        assert!(!format!("{:?}", with(&[("ASSERTION_KEYS", KEYS)])).contains("jpsQnnGQ"), "Debug hides the key");
    }

    #[test]
    fn cors_is_checked() {
        assert_eq!(parse(&base()).expect("valid").cors, None, "no origin allowed without it");
        assert!(with(&[("CORS", r#"{"allow_origins": ["https://app.example"]}"#)]).expect("valid").cors.is_some());
        assert_eq!(fails_on(&[("CORS", r#"{"allow_origins": ["app.example"]}"#)]), "CORS");
        assert_eq!(fails_on(&[("CORS", "allow_origins = []")]), "CORS");
    }

    #[test]
    fn messages_name_the_variable_and_not_the_value() {
        let error = with(&[("LEEWAY_SECONDS", "secret-looking-value")]).expect_err("bad");
        let message = error.to_string();
        assert!(message.contains("LEEWAY_SECONDS"), "{message}");
        assert!(!message.contains("secret-looking-value"), "{message}");
    }

    #[test]
    fn json_policies_are_accepted_too() {
        let json = r#"{"preflight": false, "rules": [{"path": "/*", "access": "public"}]}"#;
        let config = with(&[("POLICY", json)]).expect("valid");
        assert!(!config.policy.allows_preflight());
    }

    #[test]
    fn toml_text_is_refused_with_a_pointer_to_a_vars_policy_table() {
        // Refused by the edge itself, whether or not this build of jwks has its TOML parser.
        for text in ["[[rules]]\npath = \"/*\"\naccess = \"public\"", "preflight = true", "[]"] {
            let error = with(&[("POLICY", text)]).expect_err("not JSON");
            assert_eq!(error.variable, "POLICY");
            assert_eq!(
                error.to_string(),
                "configuration variable POLICY must be JSON text (a JSON object); a TOML policy goes in \
                 wrangler.toml as a [vars.POLICY] table, which wrangler hands to the Worker as JSON"
            );
        }
        // Leading white space before the JSON is fine; broken JSON says what is wrong with it.
        assert!(with(&[("POLICY", &format!("\n  {POLICY}"))]).is_ok());
        let error = with(&[("POLICY", "{\"rules\": [")]).expect_err("broken JSON");
        assert!(error.problem.contains("JSON"), "{error}");
    }

    #[test]
    fn the_variables_list_covers_every_variable_read() {
        let asked = std::cell::RefCell::new(Vec::new());
        let vars = base();
        Config::from_lookup(|name| {
            asked.borrow_mut().push(name.to_owned());
            vars.get(name).cloned()
        })
        .expect("valid");
        let asked = asked.into_inner();
        for name in &asked {
            assert!(VARIABLES.contains(&name.as_str()), "{name} is read but not in VARIABLES");
        }
    }

    #[test]
    fn urls_are_split_strictly() {
        let url = parse_http_url("https://[::1]:8443/a?b").expect("valid");
        assert_eq!(url, HttpUrl { scheme: "https", host: "[::1]", rest: "/a?b" });
        let url = parse_http_url("http://example.com").expect("valid");
        assert_eq!(url, HttpUrl { scheme: "http", host: "example.com", rest: "" });
        assert!(parse_http_url("https://:80/").is_err());
        assert!(parse_http_url("https://exa_mple.com/").is_err());
        assert!(parse_http_url("https://example.com:/").is_err());
        assert!(parse_http_url("HTTPS://example.com/").is_err());
        assert!(parse_http_url("https://example.com\t/").is_err());
        assert!(parse_http_url("https://[zz]/").is_err());
    }
}
