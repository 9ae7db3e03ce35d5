//! The request the origin receives: where it goes and which headers it carries.

use crate::config::Config;
use crate::decision::Identity;
use crate::request::{RequestHead, cookie_name, cookie_pairs};

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the common non-standard ones): never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers the edge sets itself, so a client's values are dropped.
const EDGE_SET: &[&str] = &["host", "x-forwarded-host", "x-forwarded-proto"];

/// The prefix of the identity headers; a client's are always dropped.
const IDENTITY_PREFIX: &str = "x-auth-";

/// The origin URL for a request: `ORIGIN_URL` followed by the request's path and query.
pub fn origin_target(config: &Config, head: &RequestHead<'_>) -> String {
    let parts = head.url_parts();
    format!("{}{}{}", config.origin_url, parts.path, parts.query)
}

/// The headers the origin receives: the client's, cleaned (hop-by-hop ones, those named in
/// `Connection`, any `X-Auth-*`, `Host`, the token unless `FORWARD_TOKEN`, and `Content-Length`
/// when the body does not go along), then `X-Forwarded-Host`/`-Proto` and the identity.
pub fn forward_headers(
    config: &Config,
    head: &RequestHead<'_>,
    identity: Option<&Identity>,
    with_body: bool,
) -> Vec<(String, String)> {
    let connection_listed: Vec<String> = head
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();

    let mut forwarded = Vec::with_capacity(head.headers.len() + 6);
    for (name, value) in head.headers {
        let lower = name.to_ascii_lowercase();
        let dropped = HOP_BY_HOP.contains(&lower.as_str())
            || EDGE_SET.contains(&lower.as_str())
            || lower.starts_with(IDENTITY_PREFIX)
            || connection_listed.contains(&lower)
            || (lower == "authorization" && !config.forward_token)
            || (lower == "content-length" && !with_body);
        if dropped {
            continue;
        }
        if lower == "cookie"
            && !config.forward_token
            && let Some(cookie_name) = &config.token_cookie
        {
            if let Some(kept) = without_cookie(value, cookie_name) {
                forwarded.push((lower, kept));
            }
            continue;
        }
        forwarded.push((lower, value.clone()));
    }

    let parts = head.url_parts();
    if !parts.authority.is_empty() {
        forwarded.push(("x-forwarded-host".to_owned(), parts.authority.to_owned()));
    }
    if !parts.scheme.is_empty() {
        forwarded.push(("x-forwarded-proto".to_owned(), parts.scheme.to_owned()));
    }
    if let Some(identity) = identity {
        forwarded.extend(identity.headers().into_iter().map(|(name, value)| (name.to_owned(), value)));
    }
    forwarded
}

/// Parses a header block as the Worker hands it over from JavaScript in one piece: `name\nvalue\n`
/// for each header (a `Headers` object can hold neither `\n` nor `\r` in a name or value).
pub fn parse_block(block: &str) -> Vec<(String, String)> {
    let mut parts = block.split('\n');
    let mut headers = Vec::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        headers.push((name.to_owned(), value.to_owned()));
    }
    headers
}

/// The header block of `headers` for JavaScript (see [`parse_block`]). A pair holding a line break
/// could not be a header and is left out.
pub fn to_block(headers: &[(String, String)]) -> String {
    let mut block = String::with_capacity(headers.iter().map(|(name, value)| name.len() + value.len() + 2).sum());
    for (name, value) in headers {
        if !name.contains(['\n', '\r']) && !value.contains(['\n', '\r']) {
            block.push_str(name);
            block.push('\n');
            block.push_str(value);
            block.push('\n');
        }
    }
    block
}

/// A `Cookie` header without the cookie `name` (every occurrence, however the pairs are joined:
/// see [`cookie_pairs`]); `None` when nothing is left.
pub fn without_cookie(cookie_header: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = cookie_pairs(cookie_header).filter(|pair| cookie_name(pair) != name).collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pairs;

    fn config(extra: &[(&str, &str)]) -> Config {
        let mut all = vec![("ORIGIN_URL", "http://origin.internal:8080/base/")];
        all.extend_from_slice(extra);
        crate::testing::config(&all)
    }

    fn names(headers: &[(String, String)]) -> Vec<&str> {
        headers.iter().map(|(name, _)| name.as_str()).collect()
    }

    fn identity() -> Identity {
        Identity {
            subject: Some("user-1".to_owned()),
            roles: vec!["reader".to_owned()],
            issuer: "https://issuer.example".to_owned(),
            token_id: Some("t-1".to_owned()),
        }
    }

    const CLIENT: &[(&str, &str)] = &[
        ("accept", "application/json"),
        ("authorization", "Bearer a.b.c"),
        ("connection", "keep-alive, X-Secret-Hop"),
        ("cookie", "theme=dark; token=a.b.c; lang=en"),
        ("host", "edge.example"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("upgrade", "h2c"),
        ("x-auth-subject", "admin"),
        ("X-Auth-Roles", "admin"),
        ("x-forwarded-host", "spoofed.example"),
        ("x-secret-hop", "1"),
        ("content-type", "application/json"),
    ];

    #[test]
    fn the_target_keeps_path_and_query_under_the_origin_base() {
        let config = config(&[]);
        let headers = Vec::new();
        let head = RequestHead { method: "GET", url: "https://edge.example/api/x?y=1&z", headers: &headers };
        assert_eq!(origin_target(&config, &head), "http://origin.internal:8080/base/api/x?y=1&z");
    }

    #[test]
    fn client_headers_are_cleaned_and_identity_added() {
        let config = config(&[("TOKEN_COOKIE", "token")]);
        let headers = pairs(CLIENT);
        let head = RequestHead { method: "GET", url: "https://edge.example:8443/api", headers: &headers };
        let forwarded = forward_headers(&config, &head, Some(&identity()), true);
        assert_eq!(
            forwarded,
            pairs(&[
                ("accept", "application/json"),
                ("cookie", "theme=dark; lang=en"),
                ("content-type", "application/json"),
                ("x-forwarded-host", "edge.example:8443"),
                ("x-forwarded-proto", "https"),
                ("x-auth-subject", "user-1"),
                ("x-auth-roles", "reader"),
                ("x-auth-issuer", "https://issuer.example"),
                ("x-auth-token-id", "t-1"),
            ])
        );
    }

    #[test]
    fn public_requests_get_no_identity_and_still_lose_spoofed_ones() {
        let config = config(&[]);
        let headers = pairs(CLIENT);
        let head = RequestHead { method: "GET", url: "https://edge.example/", headers: &headers };
        let forwarded = forward_headers(&config, &head, None, true);
        assert!(!names(&forwarded).iter().any(|name| name.starts_with("x-auth-")), "{forwarded:?}");
        assert!(!names(&forwarded).contains(&"authorization"));
        // Without TOKEN_COOKIE, cookies are the origin's business.
        assert!(forwarded.contains(&("cookie".to_owned(), "theme=dark; token=a.b.c; lang=en".to_owned())));
    }

    #[test]
    fn forward_token_keeps_authorization_and_the_cookie() {
        let config = config(&[("FORWARD_TOKEN", "true"), ("TOKEN_COOKIE", "token")]);
        let headers = pairs(CLIENT);
        let head = RequestHead { method: "GET", url: "https://edge.example/", headers: &headers };
        let forwarded = forward_headers(&config, &head, Some(&identity()), true);
        assert!(forwarded.contains(&("authorization".to_owned(), "Bearer a.b.c".to_owned())));
        assert!(forwarded.contains(&("cookie".to_owned(), "theme=dark; token=a.b.c; lang=en".to_owned())));
        assert_eq!(forwarded.iter().filter(|(name, _)| name == "x-auth-subject").count(), 1);
    }

    #[test]
    fn content_length_goes_only_with_the_body() {
        let config = config(&[]);
        let headers =
            pairs(&[("content-length", "5"), ("content-type", "text/plain"), ("origin", "https://a.example")]);
        let head = RequestHead { method: "OPTIONS", url: "https://edge.example/", headers: &headers };
        assert!(names(&forward_headers(&config, &head, None, true)).contains(&"content-length"));
        let without = forward_headers(&config, &head, None, false);
        assert_eq!(names(&without)[..2], ["content-type", "origin"]);
    }

    #[test]
    fn header_blocks_round_trip() {
        let headers = pairs(&[("accept", "text/html"), ("x-empty", ""), ("cookie", "a=1; b=2")]);
        let block = to_block(&headers);
        assert_eq!(block, "accept\ntext/html\nx-empty\n\ncookie\na=1; b=2\n");
        assert_eq!(parse_block(&block), headers);
        assert_eq!(parse_block(""), []);
        assert_eq!(to_block(&pairs(&[("x-bad", "a\r\nx-auth-subject: admin"), ("ok", "1")])), "ok\n1\n");
    }

    #[test]
    fn a_cookie_header_with_only_the_token_is_dropped() {
        assert_eq!(without_cookie("token=a.b.c", "token"), None);
        assert_eq!(without_cookie(" token=x ;  a=1;", "token").as_deref(), Some("a=1"));
        assert_eq!(without_cookie("tokenx=1; token=2", "token").as_deref(), Some("tokenx=1"));
        assert_eq!(without_cookie("flag; token=2", "token").as_deref(), Some("flag"));
    }

    #[test]
    fn the_token_cookie_is_stripped_from_repeated_cookie_headers() {
        // The runtime joins repeated Cookie headers with ", ".
        assert_eq!(without_cookie("a=1, token=a.b.c", "token").as_deref(), Some("a=1"));
        assert_eq!(without_cookie("token=a.b.c, a=1; b=2", "token").as_deref(), Some("a=1; b=2"));
        assert_eq!(without_cookie("a=1,token=x,token=y", "token").as_deref(), Some("a=1"));
        assert_eq!(without_cookie("token=x, token=y", "token"), None);
        let config = config(&[("TOKEN_COOKIE", "token")]);
        let headers = pairs(&[("cookie", "theme=dark, token=a.b.c"), ("cookie", "token=d.e.f; lang=en")]);
        let head = RequestHead { method: "GET", url: "https://edge.example/", headers: &headers };
        let forwarded = forward_headers(&config, &head, None, true);
        let cookies: Vec<&str> =
            forwarded.iter().filter(|(name, _)| name == "cookie").map(|(_, value)| value.as_str()).collect();
        assert_eq!(cookies, ["theme=dark", "lang=en"]);
    }
}
