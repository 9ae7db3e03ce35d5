//! What the edge answers itself (refusals, the status page, configuration errors) and the one-line
//! structured logs that go with them. The client gets a status, a challenge and a generic body;
//! the reason goes to the log only.

use crate::config::{Config, ConfigError};
use crate::counters::{CacheLookups, Counters};
use crate::decision::Refusal;
use crate::request::{Credential, RequestHead, credential};
use serde_json::{Value, json};

/// A response the edge makes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status.
    pub status: u16,
    /// Headers, besides `content-type` and `cache-control` (always text, never stored).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: String,
}

impl Reply {
    pub(crate) fn text(status: u16, body: &str) -> Self {
        Self { status, headers: Vec::new(), body: format!("{body}\n") }
    }

    /// The content type of the body.
    pub fn content_type(&self) -> &'static str {
        if self.body.starts_with('{') { "application/json" } else { "text/plain; charset=utf-8" }
    }
}

/// The `WWW-Authenticate` value (RFC 6750 §3): the realm, and the error code when there is one.
pub fn www_authenticate(realm: &str, error: Option<&str>) -> String {
    match error {
        Some(error) => format!("Bearer realm=\"{realm}\", error=\"{error}\""),
        None => format!("Bearer realm=\"{realm}\""),
    }
}

/// `login_url` with `return_to` set to the percent-encoded `original_url`.
pub fn login_redirect(login_url: &str, original_url: &str) -> String {
    let separator = if login_url.contains('?') { '&' } else { '?' };
    format!("{login_url}{separator}return_to={}", percent_encode(original_url))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Whether a refusal sends a browser to log in (rather than a 401): when `LOGIN_URL` is set, for
/// a browser's navigation without a token, or with a token from the cookie that is no good
/// (expired, typically). A token sent in `Authorization` is an API client's: it gets the 401.
fn sends_to_login(config: &Config, head: &RequestHead<'_>, refusal: &Refusal) -> bool {
    let token_problem = match refusal {
        Refusal::NoToken => true,
        Refusal::InvalidToken(_) | Refusal::Revoked { .. } | Refusal::SessionEnded => {
            matches!(credential(head, config.token_cookie.as_deref()), Credential::Cookie(_))
        }
        Refusal::InsufficientRole { .. }
        | Refusal::WrongSubjectKind { .. }
        | Refusal::NoRule
        | Refusal::KeysUnavailable
        | Refusal::RevocationsUnavailable
        | Refusal::SessionUnavailable
        | Refusal::CrossSiteRequest => false,
    };
    token_problem && config.login_url.is_some() && head.is_browser_navigation()
}

/// The answer to a refused request.
pub fn refusal_reply(config: &Config, head: &RequestHead<'_>, refusal: &Refusal) -> Reply {
    if sends_to_login(config, head, refusal)
        && let Some(login_url) = &config.login_url
    {
        let mut reply = Reply::text(302, "login required");
        reply.headers.push(("location", login_redirect(login_url, head.url)));
        reply.headers.push(("vary", "Accept".to_owned()));
        return reply;
    }
    let body = match refusal.status() {
        401 => "unauthorized",
        403 => "forbidden",
        _ => "service unavailable",
    };
    let mut reply = Reply::text(refusal.status(), body);
    if refusal.status() == 401 || refusal.bearer_error().is_some() {
        reply.headers.push(("www-authenticate", www_authenticate(&config.realm, refusal.bearer_error())));
    }
    match refusal {
        Refusal::KeysUnavailable => reply.headers.push(("retry-after", config.cache.refetch_cooldown_secs.to_string())),
        Refusal::RevocationsUnavailable => {
            let cooldown =
                config.revocations.as_ref().map_or(1, |revocations| revocations.bounds.refetch_cooldown_secs);
            reply.headers.push(("retry-after", cooldown.to_string()));
        }
        _ => {}
    }
    reply
}

/// The answer to every request while the configuration is bad.
pub fn config_error_reply() -> Reply {
    internal_error_reply()
}

/// The answer to a request the edge failed on itself (the reason goes to the log).
pub fn internal_error_reply() -> Reply {
    Reply::text(500, "internal error")
}

/// The answer to a request the origin could not be asked or did not answer (the reason goes to
/// the log).
pub fn bad_gateway_reply() -> Reply {
    Reply::text(502, "bad gateway")
}

/// The answer to an unknown reserved path.
pub fn not_found_reply() -> Reply {
    Reply::text(404, "not found")
}

/// `/_portcullis/jwks.json`: the public halves of the assertion keys, cacheable for
/// [`ASSERTION_JWKS_MAX_AGE`](crate::assertion::ASSERTION_JWKS_MAX_AGE); 404 without assertion keys.
pub fn assertion_keys_reply(config: &Config) -> Reply {
    match &config.assertion {
        Some(settings) => Reply {
            status: 200,
            headers: vec![("cache-control", format!("public, max-age={}", crate::assertion::ASSERTION_JWKS_MAX_AGE))],
            body: settings.published.clone(),
        },
        None => not_found_reply(),
    }
}

/// The status page: the configuration that was loaded (nothing secret, not the origin; of the
/// variables, only which are set), the key set cache's state, how many verified tokens
/// (`tokens_cached`) the isolate holds, and its [`Counters`] with the cache's `lookups`.
pub fn status_reply(
    config: &Config,
    keys: Value,
    revocations: Value,
    tokens_cached: usize,
    lookups: CacheLookups,
    assertion_reuse: (u64, u64),
    counters: &Counters,
) -> Reply {
    let document = json!({
        "config": "loaded",
        "variables_set": config.variables_set,
        "issuer": config.validator.claims.issuer,
        "audiences": config.validator.claims.audiences,
        "jwks_url": config.jwks_url,
        "rules": config.policy.rules().len(),
        "preflight": config.policy.allows_preflight(),
        "keys": keys,
        "revocations": revocations,
        "token_cache": {"entries": tokens_cached, "capacity": config.token_cache_entries},
        "assertions": config.assertion.as_ref().map(|settings| json!({
            "issuer": settings.issuer,
            "ttl_seconds": settings.ttl_secs,
            "signing_kid": settings.signer.kid,
            "reused": assertion_reuse.0,
            "signed": assertion_reuse.1,
        })),
        "counters": counters.status(lookups),
    });
    Reply { status: 200, headers: Vec::new(), body: format!("{document}\n") }
}

/// The log line of a refusal: one JSON object, with the reason in full.
pub fn refusal_log(head: &RequestHead<'_>, refusal: &Refusal, rule: Option<&str>, kid: Option<&str>) -> String {
    let mut line = json!({
        "event": "refused",
        "status": refusal.status(),
        "code": refusal.code().as_str(),
        "reason": refusal.reason(),
        "method": head.method,
        "path": head.url_parts().path,
    });
    if let Some(rule) = rule {
        line["rule"] = json!(rule);
    }
    if let Some(kid) = kid {
        // An attacker chooses the kid of a bad token: keep the log line short.
        line["kid"] = json!(kid.chars().take(64).collect::<String>());
    }
    if let Refusal::InsufficientRole { subject: Some(subject) } | Refusal::Revoked { subject: Some(subject) } = refusal
    {
        line["sub"] = json!(subject);
    }
    line.to_string()
}

/// The log line of a bad configuration: names the variable and what is wrong with it.
pub fn config_error_log(error: &ConfigError) -> String {
    json!({
        "event": "config_error",
        "variable": error.variable,
        "problem": error.problem,
        "message": error.to_string(),
    })
    .to_string()
}

/// A log line about an event of the edge itself (key set fetched, refused, restored; origin
/// unreachable): `event` and the details, one JSON object.
pub fn event_log(event: &str, detail: Value) -> String {
    let mut line = json!({ "event": event });
    if let (Value::Object(line), Value::Object(detail)) = (&mut line, detail) {
        line.extend(detail);
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::config;

    fn header<'r>(reply: &'r Reply, name: &str) -> Option<&'r str> {
        reply.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
    }

    const URL: &str = "https://edge.example/app/page?x=1&y=a b";

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(www_authenticate("api", None), "Bearer realm=\"api\"");
        assert_eq!(www_authenticate("api", Some("invalid_token")), "Bearer realm=\"api\", error=\"invalid_token\"");
    }

    #[test]
    fn refusals_answer_with_status_and_challenge_only() {
        let config = config(&[("REALM", "api.example")]);
        let headers = Vec::new();
        let head = RequestHead { method: "GET", url: URL, headers: &headers };
        let cases = [
            (Refusal::NoToken, 401, Some("Bearer realm=\"api.example\"")),
            (
                Refusal::InvalidToken("claims: the token has expired".into()),
                401,
                Some("Bearer realm=\"api.example\", error=\"invalid_token\""),
            ),
            (
                Refusal::InsufficientRole { subject: None },
                403,
                Some("Bearer realm=\"api.example\", error=\"insufficient_scope\""),
            ),
            (Refusal::NoRule, 403, None),
            (Refusal::KeysUnavailable, 503, None),
        ];
        for (refusal, status, challenge) in cases {
            let reply = refusal_reply(&config, &head, &refusal);
            assert_eq!(reply.status, status, "{refusal:?}");
            assert_eq!(header(&reply, "www-authenticate"), challenge, "{refusal:?}");
            assert!(!reply.body.contains("expired"), "the reason is not echoed: {}", reply.body);
            assert_eq!(reply.content_type(), "text/plain; charset=utf-8");
        }
        let unavailable = refusal_reply(&config, &head, &Refusal::KeysUnavailable);
        assert_eq!(header(&unavailable, "retry-after"), Some("30"));
    }

    #[test]
    fn browsers_without_a_token_go_to_the_login_page() {
        let config = config(&[("LOGIN_URL", "https://login.example/start?app=1")]);
        let headers = vec![("accept".to_owned(), "text/html".to_owned())];
        let head = RequestHead { method: "GET", url: URL, headers: &headers };
        let reply = refusal_reply(&config, &head, &Refusal::NoToken);
        assert_eq!(reply.status, 302);
        assert_eq!(
            header(&reply, "location"),
            Some(
                "https://login.example/start?app=1&return_to=https%3A%2F%2Fedge.example%2Fapp%2Fpage%3Fx%3D1%26y%3Da%20b"
            )
        );
        // An API client gets the 401.
        let api = RequestHead { headers: &[], ..head };
        assert_eq!(refusal_reply(&config, &api, &Refusal::NoToken).status, 401);
        // Without LOGIN_URL, browsers get the 401 too.
        assert_eq!(refusal_reply(&crate::testing::config(&[]), &head, &Refusal::NoToken).status, 401);
    }

    #[test]
    fn browsers_whose_cookie_token_is_bad_go_to_the_login_page_too() {
        let config = config(&[("LOGIN_URL", "https://login.example/start"), ("TOKEN_COOKIE", "token")]);
        let expired = Refusal::InvalidToken("claims: the token has expired".into());
        let browser = |cookie: &str, authorization: Option<&str>| {
            let mut headers =
                vec![("accept".to_owned(), "text/html".to_owned()), ("cookie".to_owned(), cookie.to_owned())];
            if let Some(authorization) = authorization {
                headers.push(("authorization".to_owned(), authorization.to_owned()));
            }
            headers
        };
        let from_cookie = browser("token=a.b.c", None);
        let head = RequestHead { method: "GET", url: URL, headers: &from_cookie };
        let reply = refusal_reply(&config, &head, &expired);
        assert_eq!(reply.status, 302);
        assert!(header(&reply, "location").is_some_and(|location| location.contains("return_to=")), "{reply:?}");
        assert_eq!(header(&reply, "www-authenticate"), None);
        // The token came in Authorization (the cookie is another one): 401 invalid_token.
        let from_header = browser("other=1", Some("Bearer a.b.c"));
        let reply = refusal_reply(&config, &RequestHead { headers: &from_header, ..head }, &expired);
        assert_eq!(reply.status, 401);
        assert_eq!(header(&reply, "www-authenticate"), Some("Bearer realm=\"portcullis\", error=\"invalid_token\""));
        // Both: Authorization wins, so 401.
        let both = browser("token=a.b.c", Some("Bearer a.b.c"));
        assert_eq!(refusal_reply(&config, &RequestHead { headers: &both, ..head }, &expired).status, 401);
        // Not a navigation (a POST, or a fetch() asking for JSON): 401.
        assert_eq!(refusal_reply(&config, &RequestHead { method: "POST", ..head }, &expired).status, 401);
        // A good token lacking a role is not sent to log in again.
        let role = Refusal::InsufficientRole { subject: None };
        assert_eq!(refusal_reply(&config, &head, &role).status, 403);
        // Without LOGIN_URL: 401.
        let no_login = crate::testing::config(&[("TOKEN_COOKIE", "token")]);
        assert_eq!(refusal_reply(&no_login, &head, &expired).status, 401);
    }

    #[test]
    fn login_paths_get_a_query() {
        assert_eq!(login_redirect("/login", "https://e.example/"), "/login?return_to=https%3A%2F%2Fe.example%2F");
    }

    #[test]
    fn log_lines_are_one_json_object_with_the_reason() {
        let headers = Vec::new();
        let head = RequestHead { method: "POST", url: "https://e.example/api/x?secret=1", headers: &headers };
        let refusal = Refusal::InsufficientRole { subject: Some("user-1".into()) };
        let long_kid = "k".repeat(500);
        let line = refusal_log(&head, &refusal, Some("/api/*"), Some(&long_kid));
        assert!(!line.contains('\n'));
        let parsed: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(parsed["event"], "refused");
        assert_eq!(parsed["status"], 403);
        assert_eq!(parsed["code"], "insufficient_role");
        assert_eq!(parsed["path"], "/api/x");
        assert_eq!(parsed["rule"], "/api/*");
        assert_eq!(parsed["sub"], "user-1");
        assert_eq!(parsed["kid"].as_str().map(str::len), Some(64));
    }

    #[test]
    fn a_refusal_logs_the_code_of_the_counter_it_moves() {
        let headers = Vec::new();
        let head = RequestHead { method: "GET", url: URL, headers: &headers };
        let refusals = [
            Refusal::NoToken,
            Refusal::InvalidToken("the signature does not verify".into()),
            Refusal::InsufficientRole { subject: None },
            Refusal::NoRule,
            Refusal::KeysUnavailable,
        ];
        for refusal in refusals {
            let logged: Value = serde_json::from_str(&refusal_log(&head, &refusal, None, None)).expect("JSON");
            let counters = Counters::default();
            counters.refused(refusal.code());
            let status = counters.status(CacheLookups::default());
            let moved: Vec<&str> = status["refused"]
                .as_object()
                .expect("an object")
                .iter()
                .filter(|(_, count)| **count == 1)
                .map(|(code, _)| code.as_str())
                .collect();
            assert_eq!([logged["code"].as_str().expect("a code")], moved[..], "{refusal:?}");
        }
    }

    #[test]
    fn config_errors_log_the_variable_and_answer_generically() {
        let error = ConfigError { variable: "POLICY", problem: "has no rules".into() };
        let parsed: Value = serde_json::from_str(&config_error_log(&error)).expect("JSON");
        assert_eq!(parsed["variable"], "POLICY");
        let reply = config_error_reply();
        assert_eq!((reply.status, reply.body.as_str()), (500, "internal error\n"));
    }

    #[test]
    fn an_unreachable_origin_is_a_bare_502() {
        let reply = bad_gateway_reply();
        assert_eq!((reply.status, reply.body.as_str(), reply.headers.len()), (502, "bad gateway\n", 0));
        assert_eq!(reply.content_type(), "text/plain; charset=utf-8");
    }

    #[test]
    fn the_status_page_shows_config_and_keys() {
        let counters = Counters::default();
        counters.refused(crate::decision::RefusalCode::NoRule);
        let reply = status_reply(
            &config(&[("LOGIN_URL", "https://login.example/secret-path")]),
            json!({"state": "fresh"}),
            json!({"state": "fresh", "revocations": {"entries": 0}}),
            3,
            CacheLookups { hits: 5, misses: 2 },
            (0, 0),
            &counters,
        );
        let parsed: Value = serde_json::from_str(&reply.body).expect("JSON");
        assert_eq!(parsed["config"], "loaded");
        assert_eq!(parsed["variables_set"], json!(["ISSUER", "AUDIENCE", "ORIGIN_URL", "POLICY", "LOGIN_URL"]));
        assert!(!reply.body.contains("secret-path"), "names only, never values: {}", reply.body);
        assert_eq!(parsed["keys"]["state"], "fresh");
        assert_eq!(parsed["rules"], 1);
        assert_eq!(parsed["token_cache"], json!({"entries": 3, "capacity": jwks::DEFAULT_TOKEN_CACHE_ENTRIES}));
        assert!(parsed.get("origin_url").is_none());
        assert_eq!(parsed["counters"], counters.status(CacheLookups { hits: 5, misses: 2 }));
        assert_eq!(parsed["counters"]["token_cache"], json!({"hits": 5, "misses": 2}));
        assert_eq!(parsed["counters"]["refused"]["no_rule"], 1);
        assert_eq!(reply.content_type(), "application/json");
    }

    #[test]
    fn key_logs_merge_their_details() {
        let line = event_log("keys_fetched", json!({"kids": ["a"], "ttl_seconds": 60}));
        let parsed: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(parsed["event"], "keys_fetched");
        assert_eq!(parsed["ttl_seconds"], 60);
    }
}
