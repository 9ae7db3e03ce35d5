//! The request the origin receives: where it goes and which headers it carries.

use crate::config::Config;
use crate::decision::Identity;
use crate::request::RequestHead;
use crate::session;

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

/// Headers that say where a request came from, which only the edge may tell the origin: a
/// client's are dropped (the edge sets `Host` through the URL and `X-Forwarded-Host`/`-Proto`).
const EDGE_SET: &[&str] = &["host", "forwarded", crate::assertion::ASSERTION_HEADER];

/// Headers that let an origin act on another method or path than the policy judged: never
/// forwarded.
const REWRITING: &[&str] =
    &["x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url"];

/// Headers that claim the client's address: a client's are dropped. The edge tells the origin the
/// address itself, in `X-Forwarded-For`, from the runtime's `CF-Connecting-IP`.
const CLIENT_ADDRESS: &[&str] = &[
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "cf-connecting-ip",
];

/// The header in which the runtime gives the client's address.
pub const CONNECTING_IP: &str = "cf-connecting-ip";

/// The prefix of the other such headers (`X-Forwarded-For`, `-Host`, `-Proto`, `-Port`, ...).
const FORWARDED_PREFIX: &str = "x-forwarded-";

/// The prefix of the identity headers; a client's are always dropped.
const IDENTITY_PREFIX: &str = "x-auth-";

/// The origin URL for a request: `ORIGIN_URL` followed by the request's path and query.
pub fn origin_target(config: &Config, head: &RequestHead<'_>) -> String {
    let parts = head.url_parts();
    format!("{}{}{}", config.origin_url, parts.path, parts.query)
}

/// What the edge changes in the client's headers for the origin: the names it deletes, then the
/// values it sets (each replacing any header of that name). The Worker applies them to a copy of
/// the client's request, so the headers it has no reason to touch cross as they are.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderEdits {
    /// Lower-case names removed.
    pub delete: Vec<String>,
    /// Lower-case names and the values they get, in order.
    pub set: Vec<(String, String)>,
}

impl HeaderEdits {
    /// The origin's `target` URL and the edits as one block for JavaScript: the target, each name
    /// to delete, an empty line, then each name and value to set, one line each. A header to set
    /// whose value holds a line break (no header can) is deleted instead, so that the client's
    /// header of that name cannot stay; a name holding one is left out.
    pub fn plan(&self, target: &str) -> String {
        let clean = |text: &str| !text.is_empty() && !text.contains(['\n', '\r']);
        let (settable, unsettable): (Vec<_>, Vec<_>) =
            self.set.iter().filter(|(name, _)| clean(name)).partition(|(_, value)| !value.contains(['\n', '\r']));
        let mut plan = String::with_capacity(target.len() + 256);
        plan.push_str(target);
        plan.push('\n');
        let deleted = self.delete.iter().filter(|name| clean(name)).chain(unsettable.iter().map(|(name, _)| name));
        for name in deleted {
            plan.push_str(name);
            plan.push('\n');
        }
        plan.push('\n');
        for (name, value) in settable {
            plan.push_str(name);
            plan.push('\n');
            plan.push_str(value);
            plan.push('\n');
        }
        plan
    }
}

/// The edits that make the client's headers the origin's: it loses the hop-by-hop ones, those
/// named in `Connection`, any `X-Auth-*`, `Host`, `Forwarded`, any `X-Forwarded-*`, any
/// `X-Portcullis-Assertion`, the token unless `FORWARD_TOKEN`, and `Content-Length` when the body
/// does not go along; it gets `X-Forwarded-Host`/`-Proto`, the identity, and the edge's
/// `assertion` when there is one. `client_names` are the names of the headers the client sent; the values it needs
/// (`Connection`, `Cookie`) come from `head`.
pub fn forward_edits(
    config: &Config,
    head: &RequestHead<'_>,
    client_names: &[&str],
    identity: Option<&Identity>,
    assertion: Option<&str>,
    with_body: bool,
) -> HeaderEdits {
    let connection_listed: Vec<String> = head
        .header("connection")
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(|name| as_cgi_reads(&name.trim().to_ascii_lowercase()))
        .filter(|name| !name.is_empty())
        .collect();

    let mut edits = HeaderEdits::default();
    for name in client_names {
        let lower = name.to_ascii_lowercase();
        // CGI, WSGI and Rack origins read `X_Auth_Roles` as `X-Auth-Roles`, and PHP also reads
        // `X.Auth.Roles` so (and they may merge it with the real one): a name is judged as such an
        // origin reads it.
        let read_as = as_cgi_reads(&lower);
        let dropped = HOP_BY_HOP.contains(&read_as.as_str())
            || EDGE_SET.contains(&read_as.as_str())
            || REWRITING.contains(&read_as.as_str())
            || CLIENT_ADDRESS.contains(&read_as.as_str())
            || read_as.starts_with(IDENTITY_PREFIX)
            || read_as.starts_with(FORWARDED_PREFIX)
            || connection_listed.contains(&read_as)
            || (read_as == "authorization" && !config.forward_token)
            || (read_as == "content-length" && !with_body);
        if dropped && !edits.delete.contains(&lower) {
            edits.delete.push(lower);
        }
    }
    // The token cookie (unless FORWARD_TOKEN) and the edge's own session and sign-in cookies stay
    // at the edge; every other cookie is the origin's.
    let token_cookie = config.token_cookie.as_deref().filter(|_| !config.forward_token);
    let edge_cookie = |name: &str| {
        Some(name) == token_cookie || name == session::SESSION_COOKIE || name.starts_with(session::FLOW_COOKIE_PREFIX)
    };
    if let Some(cookies) = head.header("cookie")
        && !edits.delete.iter().any(|name| name == "cookie")
    {
        match without_cookies(cookies, edge_cookie) {
            Some(kept) if kept == cookies => {}
            Some(kept) => edits.set.push(("cookie".to_owned(), kept)),
            None => edits.delete.push("cookie".to_owned()),
        }
    }

    let parts = head.url_parts();
    if !parts.authority.is_empty() {
        edits.set.push(("x-forwarded-host".to_owned(), parts.authority.to_owned()));
    }
    if !parts.scheme.is_empty() {
        edits.set.push(("x-forwarded-proto".to_owned(), parts.scheme.to_owned()));
    }
    if let Some(address) = head.header(CONNECTING_IP).map(str::trim).filter(|address| is_address(address)) {
        edits.set.push(("x-forwarded-for".to_owned(), address.to_owned()));
    }
    if let Some(identity) = identity {
        edits.set.extend(identity.headers().into_iter().map(|(name, value)| (name.to_owned(), value)));
    }
    if let Some(assertion) = assertion {
        edits.set.push((crate::assertion::ASSERTION_HEADER.to_owned(), assertion.to_owned()));
    }
    // A name set anyway need not be deleted first.
    edits.delete.retain(|name| !edits.set.iter().any(|(set, _)| set == name));
    edits
}

/// A `Cookie` header without the cookies whose names `removed` picks (every occurrence, however
/// the pairs are joined: see [`cookie_pairs`](crate::request::cookie_pairs)); `None` when nothing
/// is left. Every other cookie keeps its bytes: only the `;`-separated pieces that hold a removed
/// one are rewritten (a piece may hold several pairs joined with `,` when the client sent the
/// header twice).
pub fn without_cookies(cookie_header: &str, removed: impl Fn(&str) -> bool) -> Option<String> {
    let mut kept: Vec<String> = Vec::new();
    for piece in cookie_header.split(';') {
        // A pair `name=value` (the edge reads its cookies only from such pairs; a bare `name` in
        // another cookie's value is that cookie's).
        let is_token = |pair: &str| pair.split_once('=').is_some_and(|(key, _)| removed(key.trim()));
        let holds_token = piece.split(',').any(is_token);
        let piece = if holds_token {
            piece.split(',').filter(|pair| !is_token(pair)).collect::<Vec<_>>().join(",")
        } else {
            piece.to_owned()
        };
        let piece = piece.trim();
        if !piece.is_empty() {
            kept.push(piece.to_owned());
        }
    }
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// A header name as a CGI origin reads it: lower case, every character but a letter or a digit
/// read as `-` (`X_Auth_Roles`, `X.Auth.Roles` are `x-auth-roles`).
fn as_cgi_reads(lower: &str) -> String {
    lower.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

/// An IPv4 or IPv6 address as the runtime writes one (digits, hex, `.` and `:` only).
fn is_address(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 45
        && text.bytes().all(|byte| byte.is_ascii_hexdigit() || byte == b'.' || byte == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_token(name: &str) -> bool {
        name == "token"
    }
    use crate::request::ParsedHead;
    use crate::testing::pairs;

    fn config(extra: &[(&str, &str)]) -> Config {
        let mut all = vec![("ORIGIN_URL", "http://origin.internal:8080/base/")];
        all.extend_from_slice(extra);
        crate::testing::config(&all)
    }

    /// The origin's headers: `head`'s with [`forward_edits`] applied as the runtime's `Headers`
    /// applies them (`delete`, then `set`), sorted by name as `Headers` lists them.
    fn forward_headers(
        config: &Config,
        head: &RequestHead<'_>,
        identity: Option<&Identity>,
        with_body: bool,
    ) -> Vec<(String, String)> {
        let names: Vec<&str> = head.headers.iter().map(|(name, _)| name.as_str()).collect();
        let edits = forward_edits(config, head, &names, identity, None, with_body);
        let mut headers: Vec<(String, String)> =
            head.headers.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.clone())).collect();
        headers.retain(|(name, _)| !edits.delete.contains(name));
        for (name, value) in &edits.set {
            headers.retain(|(kept, _)| kept != name);
            headers.push((name.clone(), value.clone()));
        }
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        headers
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
            expires_at: 2_000_000_000,
            kind: jwks::SubjectKind::User,
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
        ("x-forwarded-for", "10.0.0.1"),
        ("forwarded", "for=10.0.0.1;host=spoofed.example;proto=https"),
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
                ("content-type", "application/json"),
                ("cookie", "theme=dark; lang=en"),
                ("x-auth-issuer", "https://issuer.example"),
                ("x-auth-roles", "reader"),
                ("x-auth-subject", "user-1"),
                ("x-auth-subject-type", "user"),
                ("x-auth-token-id", "t-1"),
                ("x-forwarded-host", "edge.example:8443"),
                ("x-forwarded-proto", "https"),
            ])
        );
    }

    #[test]
    fn names_are_judged_as_cgi_origins_read_them() {
        let config = config(&[]);
        let headers = pairs(&[
            ("X_Auth_Roles", "admin"),
            ("x.auth.subject", "root"),
            ("X_Forwarded_For", "10.0.0.1"),
            ("X_Portcullis_Assertion", "forged"),
            ("Transfer_Encoding", "chunked"),
            ("x_custom", "kept"),
        ]);
        let head = RequestHead { method: "GET", url: "https://edge.example/api", headers: &headers };
        let forwarded = forward_headers(&config, &head, Some(&identity()), false);
        let odd: Vec<_> = names(&forwarded).into_iter().filter(|name| name.contains(['_', '.'])).collect();
        assert_eq!(odd, ["x_custom"]);
    }

    #[test]
    fn method_overrides_and_client_addresses_are_the_edges_to_tell() {
        let config = config(&[]);
        let mut headers = pairs(&[
            ("x-http-method-override", "DELETE"),
            ("X-Method-Override", "PUT"),
            ("x-http-method", "PATCH"),
            ("x-original-url", "/api/admin/x"),
            ("x-rewrite-url", "/api/admin/x"),
            ("x-real-ip", "10.0.0.1"),
            ("x-client-ip", "10.0.0.2"),
            ("true-client-ip", "10.0.0.3"),
            ("client-ip", "10.0.0.4"),
            ("x-forwarded-for", "10.0.0.5"),
            ("cf-connecting-ip", "203.0.113.9"),
        ]);
        let head = RequestHead { method: "GET", url: "https://edge.example/api", headers: &headers };
        let forwarded = forward_headers(&config, &head, Some(&identity()), false);
        let addresses: Vec<_> =
            forwarded.iter().filter(|(name, _)| name.ends_with("ip") || name == "x-forwarded-for").collect();
        assert_eq!(addresses, [&("x-forwarded-for".to_owned(), "203.0.113.9".to_owned())], "{forwarded:?}");
        assert!(
            !names(&forwarded)
                .iter()
                .any(|name| name.contains("override") || name.contains("-url") || name.ends_with("-method"))
        );
        // Not an address: none is claimed for the client.
        headers.retain(|(name, _)| name != "cf-connecting-ip");
        headers.push(("cf-connecting-ip".to_owned(), "10.0.0.1, evil".to_owned()));
        let head = RequestHead { method: "GET", url: "https://edge.example/api", headers: &headers };
        assert!(!names(&forward_headers(&config, &head, None, false)).contains(&"x-forwarded-for"));
    }

    #[test]
    fn the_edges_own_cookies_never_reach_the_origin() {
        let config = config(&[]);
        let cookie = "theme=dark; __Host-portcullis-edge-session=sealed; __Host-portcullis-edge-flow-abc=f; __Host-portcullis-edge-csrf=c";
        let headers = pairs(&[("cookie", cookie)]);
        let head = RequestHead { method: "GET", url: "https://edge.example/api", headers: &headers };
        let forwarded = forward_headers(&config, &head, None, false);
        // The CSRF cookie goes on: a page needs it for its logout form, and it is worth nothing alone.
        assert!(
            forwarded.contains(&("cookie".to_owned(), "theme=dark; __Host-portcullis-edge-csrf=c".to_owned())),
            "{forwarded:?}"
        );
    }

    #[test]
    fn removing_the_token_cookie_keeps_the_others_byte_for_byte() {
        let header = r#"prefs=a,b; token=x.y.z;  q="1, 2"; empty="#;
        assert_eq!(without_cookies(header, is_token).as_deref(), Some(r#"prefs=a,b; q="1, 2"; empty="#));
        assert_eq!(without_cookies("prefs=a,b, token=x; z=1", is_token).as_deref(), Some("prefs=a,b; z=1"));
        assert_eq!(without_cookies("scopes=read,token; a=1", is_token).as_deref(), Some("scopes=read,token; a=1"));
    }

    #[test]
    fn the_assertion_is_the_edges_alone() {
        let config = config(&[]);
        let mut headers = pairs(CLIENT);
        headers.push(("X-Portcullis-Assertion".to_owned(), "forged".to_owned()));
        let head = RequestHead { method: "GET", url: "https://edge.example/api", headers: &headers };
        let names: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
        let public = forward_edits(&config, &head, &names, None, None, false);
        assert!(public.delete.contains(&"x-portcullis-assertion".to_owned()), "a client's is removed");
        assert!(!public.set.iter().any(|(name, _)| name == "x-portcullis-assertion"));
        let protected = forward_edits(&config, &head, &names, Some(&identity()), Some("signed"), false);
        assert!(protected.set.contains(&("x-portcullis-assertion".to_owned(), "signed".to_owned())));
        assert!(!protected.delete.contains(&"x-portcullis-assertion".to_owned()), "set replaces it");
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
        assert_eq!(
            forward_edits(&config, &head, &["content-length", "content-type"], None, None, false).delete,
            ["content-length"]
        );
    }

    #[test]
    fn head_blocks_parse() {
        let block = "POST\nhttps://edge.example/a?b\naccept\ntext/html\nx-empty\n\ncookie\na=1; b=2\n";
        let parsed = ParsedHead::parse(block).expect("a head");
        let head = parsed.head();
        assert_eq!((head.method, head.url), ("POST", "https://edge.example/a?b"));
        assert_eq!(head.headers, pairs(&[("accept", "text/html"), ("x-empty", ""), ("cookie", "a=1; b=2")]));
        assert_eq!(ParsedHead::parse("GET\nhttps://e.example/\n").map(|parsed| parsed.head().headers.len()), Some(0));
        assert!(ParsedHead::parse("GET").is_none());
    }

    #[test]
    fn the_plan_lists_target_deletions_then_settings_without_line_breaks() {
        let edits = HeaderEdits {
            delete: vec!["authorization".to_owned(), "x-bad\n".to_owned()],
            set: pairs(&[("x-auth-roles", ""), ("x-bad", "a\r\nx-auth-subject: admin"), ("x-auth-subject", "u")]),
        };
        assert_eq!(
            edits.plan("https://origin.example/a?b"),
            "https://origin.example/a?b\nauthorization\nx-bad\n\nx-auth-roles\n\nx-auth-subject\nu\n"
        );
        assert_eq!(HeaderEdits::default().plan("https://o.example/"), "https://o.example/\n\n");
    }

    #[test]
    fn untouched_headers_need_no_edit_and_set_names_are_not_deleted_first() {
        let config = config(&[("TOKEN_COOKIE", "token")]);
        let headers = pairs(&[("accept", "*/*"), ("cookie", "a=1; b=2"), ("x-auth-subject", "admin")]);
        let names = ["accept", "cookie", "x-auth-subject"];
        let head = RequestHead { method: "GET", url: "https://edge.example/", headers: &headers };
        let edits = forward_edits(&config, &head, &names, Some(&identity()), None, false);
        assert!(edits.delete.is_empty(), "{edits:?}");
        assert!(!edits.set.iter().any(|(name, _)| name == "cookie" || name == "accept"), "{edits:?}");
        let edits = forward_edits(&config, &head, &names, None, None, false);
        assert_eq!(edits.delete, ["x-auth-subject"]);
        let only_token = pairs(&[("cookie", "token=a.b.c")]);
        let head = RequestHead { method: "GET", url: "https://edge.example/", headers: &only_token };
        assert_eq!(forward_edits(&config, &head, &["cookie"], None, None, false).delete, ["cookie"]);
    }

    #[test]
    fn a_cookie_header_with_only_the_token_is_dropped() {
        assert_eq!(without_cookies("token=a.b.c", is_token), None);
        assert_eq!(without_cookies(" token=x ;  a=1;", is_token).as_deref(), Some("a=1"));
        assert_eq!(without_cookies("tokenx=1; token=2", is_token).as_deref(), Some("tokenx=1"));
        assert_eq!(without_cookies("flag; token=2", is_token).as_deref(), Some("flag"));
    }

    #[test]
    fn the_token_cookie_is_stripped_from_repeated_cookie_headers() {
        // The runtime joins repeated Cookie headers with ", ".
        assert_eq!(without_cookies("a=1, token=a.b.c", is_token).as_deref(), Some("a=1"));
        assert_eq!(without_cookies("token=a.b.c, a=1; b=2", is_token).as_deref(), Some("a=1; b=2"));
        assert_eq!(without_cookies("a=1,token=x,token=y", is_token).as_deref(), Some("a=1"));
        assert_eq!(without_cookies("token=x, token=y", is_token), None);
        let config = config(&[("TOKEN_COOKIE", "token")]);
        let headers = pairs(&[("cookie", "theme=dark, token=a.b.c, token=d.e.f; lang=en")]);
        let head = RequestHead { method: "GET", url: "https://edge.example/", headers: &headers };
        let forwarded = forward_headers(&config, &head, None, true);
        let cookies: Vec<&str> =
            forwarded.iter().filter(|(name, _)| name == "cookie").map(|(_, value)| value.as_str()).collect();
        assert_eq!(cookies, ["theme=dark; lang=en"]);
    }
}
