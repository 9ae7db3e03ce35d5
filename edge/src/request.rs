//! What the edge reads from an incoming request: the route it falls under and the token it
//! carries.

use crate::config::Config;
use jwks::{Access, SubjectKind};

/// The reserved path prefix: the edge answers these itself, they never reach the origin.
pub const RESERVED_PREFIX: &str = "/_portcullis/";

/// The status page's path (its refusals name it as their rule).
pub const STATUS_PATH: &str = "/_portcullis/status";

/// The request headers the edge decides on: the token's (`Authorization`, `Cookie`), a
/// preflight's (`Origin`, `Access-Control-Request-Method`, `-Headers`), a browser's (`Accept`), the
/// runtime's `CF-Connecting-IP` (the client's address, told to the origin), and the `Connection`
/// header, whose list the forwarding drops. Reading only these keeps the cost per
/// request independent of how many headers a client sends.
pub const DECISION_HEADERS: &[&str] = &[
    "accept",
    "access-control-request-headers",
    "access-control-request-method",
    "authorization",
    "cf-connecting-ip",
    "connection",
    "cookie",
    "origin",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
];

/// The parts of an incoming request that the edge decides on.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The absolute URL, as the runtime serialises it (`https://host/path?query`).
    pub url: &'a str,
    /// The headers the edge decides on ([`DECISION_HEADERS`]; the Worker reads no others), as
    /// the runtime gives them: lower-case names, repeated headers joined with `, `.
    pub headers: &'a [(String, String)],
}

/// A request's head as the Worker reads it from JavaScript in one piece: the method, the URL, then
/// each header, one line each (`method\nurl\nname\nvalue\n...`; none of them can hold a line
/// break).
#[derive(Debug, Clone)]
pub struct ParsedHead<'a> {
    method: &'a str,
    url: &'a str,
    headers: Vec<(String, String)>,
}

impl<'a> ParsedHead<'a> {
    /// Parses `block`; `None` when it is shorter than a method and a URL.
    pub fn parse(block: &'a str) -> Option<Self> {
        let mut parts = block.split('\n');
        let (method, url) = (parts.next()?, parts.next()?);
        let mut headers = Vec::new();
        while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
            headers.push((name.to_owned(), value.to_owned()));
        }
        Some(Self { method, url, headers })
    }

    /// The head to decide on.
    pub fn head(&self) -> RequestHead<'_> {
        RequestHead { method: self.method, url: self.url, headers: &self.headers }
    }
}

impl<'a> RequestHead<'a> {
    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// The value of the first cookie `name` the request carries, if any.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case("cookie"))
            .find_map(|(_, value)| cookie_value(value, name))
    }

    /// The scheme, the authority, the path (at least `/`), and the query with its `?` (or empty).
    pub fn url_parts(&self) -> UrlParts<'a> {
        UrlParts::split(self.url)
    }

    /// True for a browser's navigation to a page: `Sec-Fetch-Mode: navigate` with `Sec-Fetch-Dest:
    /// document`; from a browser without Fetch Metadata, a GET or HEAD that accepts HTML. A
    /// `fetch`, an XHR, an image or an iframe is not, even when it accepts HTML: it gets a 401,
    /// never a redirect to a login page.
    pub fn is_browser_navigation(&self) -> bool {
        match (self.header("sec-fetch-mode"), self.header("sec-fetch-dest")) {
            (None, None) => {
                let method_ok = self.method.eq_ignore_ascii_case("GET") || self.method.eq_ignore_ascii_case("HEAD");
                method_ok
                    && self.header("accept").is_some_and(|accept| accept.to_ascii_lowercase().contains("text/html"))
            }
            (mode, dest) => {
                mode.is_some_and(|mode| mode.trim().eq_ignore_ascii_case("navigate"))
                    && dest.is_some_and(|dest| dest.trim().eq_ignore_ascii_case("document"))
            }
        }
    }

    /// For a CORS preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`), the method
    /// it asks about.
    pub fn preflight_method(&self) -> Option<&'a str> {
        if !self.method.eq_ignore_ascii_case("OPTIONS") || self.header("origin").is_none() {
            return None;
        }
        self.header("access-control-request-method").map(str::trim).filter(|method| !method.is_empty())
    }
}

/// An absolute request URL split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// The authority (host and port).
    pub authority: &'a str,
    /// The scheme.
    pub scheme: &'a str,
    /// The path, at least `/`.
    pub path: &'a str,
    /// The query with its leading `?`, or empty.
    pub query: &'a str,
}

impl<'a> UrlParts<'a> {
    /// Splits a URL as the runtime serialises it (a WHATWG URL: `#` never reaches a server, and `?`
    /// starts the query).
    pub fn split(url: &'a str) -> Self {
        let url = url.split_once('#').map_or(url, |(before, _)| before);
        let (scheme, after_scheme, authority_start) = match url.find("://") {
            Some(at) => (&url[..at], &url[at + 3..], at + 3),
            None => ("", url, 0),
        };
        let authority_len =
            if authority_start == 0 { 0 } else { after_scheme.find(['/', '?']).unwrap_or(after_scheme.len()) };
        let authority = &after_scheme[..authority_len];
        let rest = &after_scheme[authority_len..];
        let (path, query) = match rest.find('?') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let path = if path.is_empty() { "/" } else { path };
        Self { authority, scheme, path, query }
    }
}

/// Where a request goes, before any token is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/_portcullis/status`.
    Status,
    /// `/_portcullis/jwks.json`: the keys of the edge's assertions.
    AssertionKeys,
    /// `/_portcullis/callback`: the issuer sends a signing-in browser back here.
    Callback,
    /// `/_portcullis/bench` (only in a Worker built with the `bench` feature).
    Bench,
    /// Another reserved path: 404.
    ReservedUnknown,
    /// A CORS preflight, answered by the edge from the `CORS` setting without a token (nothing
    /// reaches the origin): preflights are on, and a rule matches the method it asks about on
    /// this path.
    Preflight,
    /// A public rule: to the origin without a token.
    Public,
    /// A rule that needs a token, with what it requires and the rule's path (for logs).
    Protected {
        /// What the token must satisfy.
        access: &'a Access,
        /// The kind of caller the rule admits (`None`: either).
        subject: Option<SubjectKind>,
        /// The rule's path pattern.
        rule: &'a str,
    },
    /// No rule matches: denied.
    Denied,
}

impl Route<'_> {
    /// Whether the request's body goes on to the origin: never for a preflight (whatever it
    /// carries), nor for GET and HEAD.
    pub fn forwards_body(&self, method: &str) -> bool {
        !matches!(self, Self::Preflight) && !method.eq_ignore_ascii_case("GET") && !method.eq_ignore_ascii_case("HEAD")
    }
}

/// Decides the route of a request under `config`.
pub fn route<'a>(config: &'a Config, head: &RequestHead<'_>) -> Route<'a> {
    let path = head.url_parts().path;
    if path.starts_with(RESERVED_PREFIX) || path == RESERVED_PREFIX.trim_end_matches('/') {
        return match &path[RESERVED_PREFIX.len().min(path.len())..] {
            "status" => Route::Status,
            "jwks.json" => Route::AssertionKeys,
            "callback" => Route::Callback,
            "bench" if cfg!(feature = "bench") => Route::Bench,
            _ => Route::ReservedUnknown,
        };
    }
    // A preflight asks whether the method it names may be used on this path: it goes through only
    // when the policy has a rule for that. Otherwise it is an ordinary OPTIONS request, which the
    // policy decides like any other (and denies when no rule matches).
    if config.policy.allows_preflight()
        && let Some(requested) = head.preflight_method()
        && config.policy.route(requested, path).is_some()
    {
        return Route::Preflight;
    }
    match config.policy.route(head.method, path) {
        None => Route::Denied,
        Some(rule) if !rule.access.needs_token() => Route::Public,
        Some(rule) => Route::Protected { access: &rule.access, subject: rule.subject, rule: &rule.path },
    }
}

/// The token a request carries, if any, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No `Authorization: Bearer` and no token cookie.
    Missing,
    /// A token from `Authorization: Bearer` (possibly empty or garbage: the core decides).
    Bearer(&'a str),
    /// A token from the cookie named by `TOKEN_COOKIE` (a browser's, typically).
    Cookie(&'a str),
}

impl<'a> Credential<'a> {
    /// The token, wherever it came from.
    pub fn token(self) -> Option<&'a str> {
        match self {
            Self::Missing => None,
            Self::Bearer(token) | Self::Cookie(token) => Some(token),
        }
    }
}

/// The token from `Authorization: Bearer` (scheme case-insensitive), else from the cookie named
/// `cookie_name`. Another `Authorization` scheme counts as no token.
pub fn credential<'a>(head: &RequestHead<'a>, cookie_name: Option<&str>) -> Credential<'a> {
    if let Some(authorization) = head.header("authorization") {
        let authorization = authorization.trim();
        let (scheme, rest) = authorization.split_once([' ', '\t']).unwrap_or((authorization, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Credential::Bearer(rest.trim());
        }
    }
    cookie_name.and_then(|name| head.cookie(name)).map_or(Credential::Missing, Credential::Cookie)
}

/// True when the request's `Authorization: Bearer` is exactly `secret`, compared without an early
/// exit (its time tells nothing of how much of it matched); false without a secret. The edge
/// keeps this loop rather than a crate: it is the only comparison of a secret it makes.
pub fn bearer_is(head: &RequestHead<'_>, secret: Option<&str>) -> bool {
    let (Some(secret), Credential::Bearer(presented)) = (secret, credential(head, None)) else {
        return false;
    };
    same_secret(presented, secret)
}

/// True when `presented` is `secret`, compared without an early exit.
pub fn same_secret(presented: &str, secret: &str) -> bool {
    let (secret, presented) = (secret.as_bytes(), presented.as_bytes());
    let difference = secret.iter().zip(presented).fold(0u8, |difference, (a, b)| difference | (a ^ b));
    secret.len() == presented.len() && difference == 0
}

/// The `name=value` pairs of a `Cookie` header, trimmed, empty ones left out. Pairs are split on
/// `;` and on `,` too: the runtime joins repeated `Cookie` headers with `, ` (and a cookie value
/// may hold neither, RFC 6265 §4.1.1).
pub fn cookie_pairs(cookie_header: &str) -> impl Iterator<Item = &str> {
    cookie_header.split([';', ',']).map(str::trim).filter(|pair| !pair.is_empty())
}

/// The name of a cookie pair (all of it when it has no `=`).
pub fn cookie_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name).trim()
}

/// The value of the first cookie `name` in a `Cookie` header (quotes removed), if present.
pub fn cookie_value<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    cookie_pairs(cookie_header).find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| {
            let value = value.trim();
            value.strip_prefix('"').and_then(|inner| inner.strip_suffix('"')).unwrap_or(value)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_secret_is_matched_whole() {
        let secret = Some("0123456789abcdef");
        let with = |authorization: &str| {
            let block = format!("GET\nhttps://e.example/_portcullis/status\nauthorization\n{authorization}\n");
            let parsed = ParsedHead::parse(&block).expect("a head");
            bearer_is(&parsed.head(), secret)
        };
        assert!(with("Bearer 0123456789abcdef"));
        assert!(with("bearer  0123456789abcdef "));
        for other in
            ["Bearer 0123456789abcde", "Bearer 0123456789abcdefg", "Bearer x", "Basic 0123456789abcdef", "Bearer"]
        {
            assert!(!with(other), "{other:?}");
        }
        let block = "GET\nhttps://e.example/_portcullis/status\nauthorization\nBearer 0123456789abcdef\n";
        assert!(!bearer_is(&ParsedHead::parse(block).expect("a head").head(), None), "no secret: nothing matches");
    }

    use crate::testing::pairs as headers;

    fn config(policy: &str) -> Config {
        crate::testing::config(&[("POLICY", policy)])
    }

    const RULES: &str = r#"[
        {"path": "/public/*", "access": "public"},
        {"path": "/api/admin/*", "access": "any_role", "roles": ["admin"]},
        {"path": "/api/*", "access": "authenticated"}
    ]"#;

    fn policy(preflight: bool) -> String {
        format!(r#"{{"preflight": {preflight}, "rules": {RULES}}}"#)
    }

    #[test]
    fn urls_split_into_scheme_authority_path_and_query() {
        let parts = UrlParts::split("https://edge.example:8443/a/b?x=1&y=%3F#frag");
        assert_eq!(parts.authority, "edge.example:8443");
        assert_eq!(parts.scheme, "https");
        assert_eq!(parts.path, "/a/b");
        assert_eq!(parts.query, "?x=1&y=%3F");
        let bare = UrlParts::split("http://edge.example");
        assert_eq!((bare.authority, bare.path, bare.query), ("edge.example", "/", ""));
        let query_only = UrlParts::split("http://edge.example?q");
        assert_eq!((query_only.authority, query_only.path, query_only.query), ("edge.example", "/", "?q"));
    }

    #[test]
    fn routes_follow_the_policy() {
        let config = config(&policy(true));
        let route_of = |method: &str, url: &str, pairs: &[(&str, &str)]| {
            let headers = headers(pairs);
            let head = RequestHead { method, url, headers: &headers };
            format!("{:?}", route(&config, &head))
        };
        assert_eq!(route_of("GET", "https://e.example/public/x", &[]), "Public");
        assert!(route_of("GET", "https://e.example/api/x?y", &[]).contains("Authenticated"));
        assert!(route_of("POST", "https://e.example/api/admin/x", &[]).contains("AnyRole"));
        assert_eq!(route_of("GET", "https://e.example/other", &[]), "Denied");
        assert_eq!(route_of("GET", "https://e.example/api/../admin", &[]), "Denied");
        assert_eq!(route_of("GET", "https://e.example/_portcullis/status", &[]), "Status");
        assert_eq!(route_of("GET", "https://e.example/_portcullis/jwks.json", &[]), "AssertionKeys");
        assert_eq!(route_of("GET", "https://e.example/_portcullis/nope", &[]), "ReservedUnknown");
        assert_eq!(route_of("GET", "https://e.example/_portcullis", &[]), "ReservedUnknown");
        let bench = if cfg!(feature = "bench") { "Bench" } else { "ReservedUnknown" };
        assert_eq!(route_of("GET", "https://e.example/_portcullis/bench", &[]), bench);
        let preflight = [("origin", "https://app.example"), ("access-control-request-method", "POST")];
        assert_eq!(route_of("OPTIONS", "https://e.example/api/x", &preflight), "Preflight");
        // A bare OPTIONS is not a preflight: the policy decides.
        assert!(route_of("OPTIONS", "https://e.example/api/x", &preflight[..1]).contains("Protected"));
    }

    #[test]
    fn a_preflight_passes_only_where_a_rule_matches_the_method_it_asks_about() {
        let policy = r#"{"rules": [
            {"path": "/public/*", "methods": ["GET"], "access": "public"},
            {"path": "/api/*", "access": "authenticated"}
        ]}"#;
        let config = config(policy);
        let route_of = |url: &str, requested: &str| {
            let headers = headers(&[("origin", "https://app.example"), ("access-control-request-method", requested)]);
            let head = RequestHead { method: "OPTIONS", url, headers: &headers };
            format!("{:?}", route(&config, &head))
        };
        assert_eq!(route_of("https://e.example/api/x", "DELETE"), "Preflight");
        assert_eq!(route_of("https://e.example/public/x", "GET"), "Preflight");
        // No rule for the path: an ordinary OPTIONS, which no rule matches either.
        assert_eq!(route_of("https://e.example/elsewhere", "GET"), "Denied");
        // A rule for the path, but not for the method asked about: OPTIONS itself is not allowed.
        assert_eq!(route_of("https://e.example/public/x", "PUT"), "Denied");
        // An ambiguous path is never a preflight, whatever the method.
        assert_eq!(route_of("https://e.example/public/..;/api/x", "GET"), "Denied");
        assert_eq!(route_of("https://e.example/api/..;/x", "GET"), "Denied");
        // An empty method asked about is no preflight.
        assert!(route_of("https://e.example/api/x", " ").contains("Protected"));
    }

    #[test]
    fn preflights_carry_no_body() {
        assert!(!Route::Preflight.forwards_body("OPTIONS"));
        assert!(!Route::Public.forwards_body("GET"));
        assert!(!Route::Public.forwards_body("head"));
        assert!(Route::Public.forwards_body("POST"));
        assert!(Route::Public.forwards_body("OPTIONS"));
    }

    #[test]
    fn preflight_can_be_turned_off() {
        let config = config(&policy(false));
        let headers = headers(&[("origin", "https://app.example"), ("access-control-request-method", "GET")]);
        let head = RequestHead { method: "OPTIONS", url: "https://e.example/api/x", headers: &headers };
        assert!(matches!(route(&config, &head), Route::Protected { .. }));
    }

    #[test]
    fn the_token_comes_from_the_bearer_header_then_the_cookie() {
        let of = |pairs: &[(&str, &str)], cookie: Option<&str>| {
            let headers = headers(pairs);
            let head = RequestHead { method: "GET", url: "https://e.example/", headers: &headers };
            credential(&head, cookie).token().map(str::to_owned)
        };
        assert_eq!(of(&[("authorization", "Bearer abc.def.ghi")], None).as_deref(), Some("abc.def.ghi"));
        assert_eq!(of(&[("authorization", "bEaReR   abc  ")], None).as_deref(), Some("abc"));
        assert_eq!(of(&[("authorization", "Bearer")], None).as_deref(), Some(""));
        assert_eq!(of(&[("authorization", "Basic dXNlcjpwYXNz")], None), None);
        assert_eq!(of(&[("authorization", "Bearerabc")], None), None);
        assert_eq!(of(&[], None), None);
        let cookies = [("cookie", "a=1; token=\"c.o.k\"; b=2")];
        assert_eq!(of(&cookies, Some("token")).as_deref(), Some("c.o.k"));
        assert_eq!(of(&cookies, None), None);
        assert_eq!(of(&cookies, Some("tok")), None);
        let both = [("authorization", "Bearer h.e.ad"), ("cookie", "token=c.o.k")];
        assert_eq!(of(&both, Some("token")).as_deref(), Some("h.e.ad"));
        // Repeated Cookie headers, as the runtime joins them.
        assert_eq!(of(&[("cookie", "a=1, token=j.o.in, b=2")], Some("token")).as_deref(), Some("j.o.in"));
        assert_eq!(of(&[("cookie", "a=1; b=2, token=x.y.z")], Some("token")).as_deref(), Some("x.y.z"));
    }

    #[test]
    fn the_source_of_the_token_is_kept() {
        let headers = headers(&[("cookie", "token=c.o.k")]);
        let head = RequestHead { method: "GET", url: "https://e.example/", headers: &headers };
        assert_eq!(credential(&head, Some("token")), Credential::Cookie("c.o.k"));
        let headers = crate::testing::pairs(&[("authorization", "Bearer a.b.c"), ("cookie", "token=c.o.k")]);
        let head = RequestHead { headers: &headers, ..head };
        assert_eq!(credential(&head, Some("token")), Credential::Bearer("a.b.c"));
    }

    #[test]
    fn browsers_and_preflights_are_recognised() {
        let html = headers(&[("accept", "text/html,application/xhtml+xml;q=0.9")]);
        let head = RequestHead { method: "GET", url: "https://e.example/", headers: &html };
        assert!(head.is_browser_navigation());
        assert!(!RequestHead { method: "POST", ..head }.is_browser_navigation());
        let json = headers(&[("accept", "application/json")]);
        assert!(!RequestHead { headers: &json, ..head }.is_browser_navigation());
        // With Fetch Metadata, only a navigation of the page itself: not a fetch that accepts HTML,
        // not an iframe, not half of the pair.
        let accept = ("accept", "text/html");
        for (mode, dest, navigation) in [
            ("navigate", "document", true),
            ("cors", "empty", false),
            ("navigate", "iframe", false),
            ("no-cors", "image", false),
        ] {
            let metadata = headers(&[accept, ("sec-fetch-dest", dest), ("sec-fetch-mode", mode)]);
            assert_eq!(RequestHead { headers: &metadata, ..head }.is_browser_navigation(), navigation, "{mode} {dest}");
        }
        let half = headers(&[accept, ("sec-fetch-mode", "navigate")]);
        assert!(!RequestHead { headers: &half, ..head }.is_browser_navigation());
        let preflight = headers(&[("origin", "https://app.example"), ("access-control-request-method", " PUT ")]);
        let options = RequestHead { method: "OPTIONS", headers: &preflight, ..head };
        assert_eq!(options.preflight_method(), Some("PUT"));
        assert_eq!(RequestHead { method: "GET", ..options }.preflight_method(), None);
        assert_eq!(RequestHead { headers: &preflight[1..], ..options }.preflight_method(), None);
        assert_eq!(RequestHead { headers: &preflight[..1], ..options }.preflight_method(), None);
    }
}
