//! CORS at the edge: the `CORS` setting, the answers to preflights (the edge gives them itself,
//! so that no request without a token reaches a protected route of the origin), and the headers
//! that let an allowed page read the other answers.
//!
//! `CORS` is a JSON object (or a `[vars.CORS]` table in wrangler.toml): `allow_origins` (exact
//! origins such as `https://app.example`, or `"*"` without credentials), `allow_methods` (default
//! GET, HEAD, POST, PUT, PATCH, DELETE), `allow_headers` (default `authorization`,
//! `content-type`), `max_age` (seconds, default 600, at most 86400), `allow_credentials` (default
//! false). Unset: no origin is allowed.

use crate::reply::Reply;
use crate::request::RequestHead;
use serde_json::Value;

/// The CORS settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    origins: Vec<String>,
    any_origin: bool,
    methods: Vec<String>,
    headers: Vec<String>,
    max_age: u64,
    credentials: bool,
}

/// The members `CORS` may have.
const MEMBERS: [&str; 5] = ["allow_origins", "allow_methods", "allow_headers", "max_age", "allow_credentials"];

/// A member that is a list of strings: `None` when absent, an error when of another type.
fn strings(written: &Value, name: &str) -> Result<Option<Vec<String>>, String> {
    let Some(member) = written.get(name) else { return Ok(None) };
    let wrong = || format!("{name} must be a list of strings");
    let list = member.as_array().ok_or_else(wrong)?;
    list.iter().map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong)).collect::<Result<_, _>>().map(Some)
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else { return false };
    (scheme == "https" || scheme == "http")
        && !rest.is_empty()
        && rest.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-.:[]".contains(&byte))
}

/// An RFC 9110 token (a method or a header name).
fn is_token(text: &str) -> bool {
    crate::config::is_token(text)
}

impl Cors {
    /// Reads `CORS`; the error names what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        // The core's strict parser, walked by hand: a derived deserializer costs the Worker more.
        let written = jwks::json::parse(text.as_bytes()).map_err(|error| format!("is not a CORS object ({error})"))?;
        let members = written.as_object().ok_or("is not a CORS object")?;
        if let Some(unknown) = members.keys().find(|name| !MEMBERS.contains(&name.as_str())) {
            return Err(format!("has an unknown member {unknown:?}"));
        }
        let allow_origins = strings(&written, "allow_origins")?.unwrap_or_default();
        let allow_credentials = match written.get("allow_credentials") {
            None => false,
            Some(value) => value.as_bool().ok_or("allow_credentials must be true or false")?,
        };
        let any_origin = allow_origins.iter().any(|origin| origin == "*");
        if any_origin && allow_credentials {
            return Err("allows any origin (\"*\") with credentials".to_owned());
        }
        let origins: Vec<String> = allow_origins.into_iter().filter(|origin| origin != "*").collect();
        if let Some(bad) = origins.iter().find(|origin| !is_origin(origin)) {
            return Err(format!("{bad:?} is not an origin (scheme://host[:port])"));
        }
        let methods = strings(&written, "allow_methods")?
            .unwrap_or_else(|| ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].map(str::to_owned).to_vec());
        let headers: Vec<String> = strings(&written, "allow_headers")?
            .unwrap_or_else(|| vec!["authorization".to_owned(), "content-type".to_owned()])
            .iter()
            .map(|name| name.to_ascii_lowercase())
            .collect();
        if let Some(bad) = methods.iter().chain(&headers).find(|name| !is_token(name)) {
            return Err(format!("{bad:?} is not a method or header name"));
        }
        let max_age = match written.get("max_age") {
            None => 600,
            Some(value) => value.as_u64().ok_or("max_age must be a whole number of seconds")?,
        };
        if max_age > 86_400 {
            return Err("max_age must be at most 86400".to_owned());
        }
        Ok(Self { origins, any_origin, methods, headers, max_age, credentials: allow_credentials })
    }

    /// True when pages of `origin` may send credentials (cookies) with their requests: an origin
    /// listed by name, with `allow_credentials`.
    pub fn allows_credentials_from(&self, origin: &str) -> bool {
        self.credentials && self.origins.iter().any(|allowed| allowed == origin)
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    fn allowed_origin(&self, origin: &str) -> Option<String> {
        if self.origins.iter().any(|allowed| allowed == origin) {
            Some(origin.to_owned())
        } else {
            self.any_origin.then(|| "*".to_owned())
        }
    }
}

/// The answer to a CORS preflight of `head` (it asks for `method`): 204 with the CORS headers when
/// the origin, the method and every requested header are allowed; otherwise 403 without them
/// (the browser then refuses the request it was about to send). Never forwarded.
pub fn preflight_reply(cors: Option<&Cors>, head: &RequestHead<'_>, method: &str) -> Reply {
    let refused = Reply { status: 403, headers: vec![("vary", "origin".to_owned())], body: "forbidden\n".to_owned() };
    let Some(cors) = cors else { return refused };
    let Some(allow_origin) = head.header("origin").and_then(|origin| cors.allowed_origin(origin)) else {
        return refused;
    };
    let requested: Vec<String> = head
        .header("access-control-request-headers")
        .unwrap_or_default()
        .split(',')
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    if !cors.methods.iter().any(|allowed| allowed == method)
        || requested.iter().any(|name| !cors.headers.contains(name))
    {
        return refused;
    }
    let mut headers = vec![
        ("access-control-allow-origin", allow_origin),
        ("access-control-allow-methods", cors.methods.join(", ")),
        ("access-control-allow-headers", cors.headers.join(", ")),
        ("access-control-max-age", cors.max_age.to_string()),
        ("vary", "origin".to_owned()),
    ];
    if cors.credentials {
        headers.push(("access-control-allow-credentials", "true".to_owned()));
    }
    Reply { status: 204, headers, body: String::new() }
}

/// The CORS headers of any other answer to `head` (the origin's or the edge's own), so that an
/// allowed page can read it: none when the request has no allowed `Origin`.
pub fn response_headers(cors: Option<&Cors>, head: &RequestHead<'_>) -> Vec<(&'static str, String)> {
    let Some(cors) = cors else { return Vec::new() };
    let Some(allow_origin) = head.header("origin").and_then(|origin| cors.allowed_origin(origin)) else {
        return Vec::new();
    };
    let mut headers = vec![("access-control-allow-origin", allow_origin), ("vary", "origin".to_owned())];
    if cors.credentials {
        headers.push(("access-control-allow-credentials", "true".to_owned()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pairs;

    fn cors() -> Cors {
        Cors::parse(r#"{"allow_origins": ["https://app.example"], "allow_headers": ["Authorization", "X-Trace"]}"#)
            .expect("valid")
    }

    fn reply(cors: Option<&Cors>, headers: &[(&str, &str)]) -> Reply {
        let headers = pairs(headers);
        let head = RequestHead { method: "OPTIONS", url: "https://edge.example/api/x", headers: &headers };
        preflight_reply(cors, &head, "POST")
    }

    #[test]
    fn an_allowed_preflight_is_answered_with_the_cors_headers() {
        let cors = cors();
        let answer = reply(
            Some(&cors),
            &[("origin", "https://app.example"), ("access-control-request-headers", "authorization, x-trace")],
        );
        assert_eq!(answer.status, 204);
        let header = |name: &str| answer.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str());
        assert_eq!(header("access-control-allow-origin"), Some("https://app.example"));
        assert_eq!(header("access-control-allow-headers"), Some("authorization, x-trace"));
        assert_eq!(header("access-control-max-age"), Some("600"));
        assert_eq!(header("access-control-allow-credentials"), None);
    }

    #[test]
    fn other_preflights_are_refused_without_cors_headers() {
        let cors = cors();
        for (cors, headers) in [
            (None, vec![("origin", "https://app.example")]),
            (Some(&cors), vec![("origin", "https://evil.example")]),
            (Some(&cors), vec![]),
            (Some(&cors), vec![("origin", "https://app.example"), ("access-control-request-headers", "x-other")]),
        ] {
            let answer = reply(cors, &headers);
            assert_eq!(answer.status, 403, "{headers:?}");
            assert!(!answer.headers.iter().any(|(name, _)| name.starts_with("access-control")), "{headers:?}");
        }
        let only_get =
            Cors::parse(r#"{"allow_origins": ["https://app.example"], "allow_methods": ["GET"]}"#).expect("valid");
        assert_eq!(reply(Some(&only_get), &[("origin", "https://app.example")]).status, 403, "POST not allowed");
    }

    #[test]
    fn answers_to_allowed_pages_carry_the_origin() {
        let cors = cors();
        let headers = pairs(&[("origin", "https://app.example")]);
        let head = RequestHead { method: "GET", url: "https://edge.example/api/x", headers: &headers };
        assert_eq!(
            response_headers(Some(&cors), &head),
            [("access-control-allow-origin", "https://app.example".to_owned()), ("vary", "origin".to_owned())]
        );
        let other = pairs(&[("origin", "https://evil.example")]);
        let head = RequestHead { method: "GET", url: "https://edge.example/api/x", headers: &other };
        assert!(response_headers(Some(&cors), &head).is_empty());
    }

    #[test]
    fn bad_settings_are_refused() {
        for (text, expected) in [
            (r#"{"allow_origins": ["*"], "allow_credentials": true}"#, "with credentials"),
            (r#"{"allow_origins": ["https://app.example/path"]}"#, "is not an origin"),
            (r#"{"allow_origins": ["app.example"]}"#, "is not an origin"),
            (r#"{"allow_methods": ["GET POST"]}"#, "not a method"),
            (r#"{"max_age": 100000}"#, "at most 86400"),
            (r#"{"allow_origin": ["https://app.example"]}"#, "unknown member \"allow_origin\""),
            ("[]", "is not a CORS object"),
            ("{", "is not a CORS object (not JSON)"),
            (r#"{"max_age": 60, "max_age": 60}"#, "two members with the same name"),
            (r#"{"allow_origins": "https://app.example"}"#, "allow_origins must be a list of strings"),
            (r#"{"allow_headers": [1]}"#, "allow_headers must be a list of strings"),
            (r#"{"allow_credentials": "yes"}"#, "allow_credentials must be true or false"),
            (r#"{"max_age": -1}"#, "max_age must be a whole number"),
        ] {
            let error = Cors::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
