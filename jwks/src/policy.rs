//! The route policy: which requests need a token, and which roles.
//!
//! Rules are tried in order; the first whose path (and method, if given) matches decides. A
//! request that no rule matches is denied. Paths that an origin could read differently from the
//! policy (dot segments, `//`, backslashes, `;` path parameters, percent-escapes of characters that
//! need none, of `/`, `\`, `%` or control characters, broken escapes) match no rule, so they are
//! denied. Matching is byte-exact and case-sensitive: run it in front of an origin that routes
//! case-sensitively.

use crate::claims::SubjectKind;
use serde_json::Value;

/// What a matching rule requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// Any valid token.
    Authenticated,
    /// A valid token with at least one of these roles.
    AnyRole(Vec<String>),
    /// A valid token with every one of these roles.
    AllRoles(Vec<String>),
}

impl Access {
    /// True when a request needs a verified token.
    pub fn needs_token(&self) -> bool {
        !matches!(self, Self::Public)
    }

    /// True when a token with `roles` satisfies this rule.
    pub fn permits(&self, roles: &[String]) -> bool {
        match self {
            Self::Public | Self::Authenticated => true,
            Self::AnyRole(required) => required.iter().any(|role| roles.contains(role)),
            Self::AllRoles(required) => required.iter().all(|role| roles.contains(role)),
        }
    }
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// An exact path, or a prefix ending in `*`. A prefix ending in `/*` also matches the path
    /// without its last `/` (`/admin/*` matches `/admin`, `/admin/` and `/admin/users`).
    pub path: String,
    /// Upper-case methods this rule applies to; `None` for every method.
    pub methods: Option<Vec<String>>,
    /// What the rule requires.
    pub access: Access,
    /// The kind of caller the rule admits (`subject = "user"` or `"service"`); `None`: either.
    pub subject: Option<SubjectKind>,
}

impl Rule {
    fn matches(&self, method: &str, path: &str) -> bool {
        let path_matches = match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix) || prefix.strip_suffix('/').is_some_and(|bare| path == bare),
            None => path == self.path,
        };
        path_matches
            && self.methods.as_ref().is_none_or(|methods| methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
    }
}

/// An ordered list of rules; no match means deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
    preflight: bool,
}

/// Why a policy text was refused. Every variant about a rule names it by number (from 1) and path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The text is not valid JSON or TOML of the policy's shape.
    #[error("the policy is not valid {format}: {detail}")]
    Syntax {
        /// `JSON` or `TOML`.
        format: &'static str,
        /// The parser's message (about the policy text, which is not secret).
        detail: String,
    },
    /// TOML policies need the `toml` feature.
    #[error("TOML policies are not supported in this build; use JSON")]
    TomlUnsupported,
    /// The policy has no rules, so it would deny everything.
    #[error("the policy has no rules")]
    NoRules,
    /// A rule's path does not start with `/`, or has a `*` other than at its end.
    #[error("rule {rule} ({path:?}): the path must start with '/' and may only end with '*'")]
    BadPath {
        /// Rule number, from 1.
        rule: usize,
        /// The rule's path.
        path: String,
    },
    /// A rule's methods list is empty or holds something that is not an HTTP method token.
    #[error("rule {rule} ({path:?}): methods must be a non-empty list of HTTP methods")]
    BadMethods {
        /// Rule number, from 1.
        rule: usize,
        /// The rule's path.
        path: String,
    },
    /// `access` is not one of `public`, `authenticated`, `any_role`, `all_roles`.
    #[error("rule {rule} ({path:?}): access must be public, authenticated, any_role or all_roles")]
    BadAccess {
        /// Rule number, from 1.
        rule: usize,
        /// The rule's path.
        path: String,
    },
    /// `subject` is not `user` or `service`, or is given on a public rule.
    #[error("rule {rule} ({path:?}): subject must be user or service, and only on a rule that needs a token")]
    BadSubject {
        /// Rule number, from 1.
        rule: usize,
        /// The rule's path.
        path: String,
    },
    /// A role rule without roles, or roles on a rule that takes none.
    #[error("rule {rule} ({path:?}): any_role and all_roles need a non-empty roles list, other access kinds none")]
    BadRoles {
        /// Rule number, from 1.
        rule: usize,
        /// The rule's path.
        path: String,
    },
}

/// A rule as written, before it is checked.
struct RuleText {
    path: String,
    methods: Option<Vec<String>>,
    access: String,
    roles: Option<Vec<String>>,
    subject: Option<String>,
}

/// The members a policy and a rule may have.
const POLICY_MEMBERS: [&str; 2] = ["preflight", "rules"];
const RULE_MEMBERS: [&str; 5] = ["path", "methods", "access", "roles", "subject"];

/// The policy's members, walked by hand (the Worker parses the policy too, and a derived
/// deserializer costs it kilobytes): unknown members are refused, like every wrong type.
fn policy_text(document: &Value, format: &'static str) -> Result<(bool, Vec<RuleText>), PolicyError> {
    let syntax = |detail: String| PolicyError::Syntax { format, detail };
    let members = document.as_object().ok_or_else(|| syntax("the policy is not an object".to_owned()))?;
    known_members(members, &POLICY_MEMBERS).map_err(syntax)?;
    let preflight = match members.get("preflight") {
        None => true,
        Some(value) => value.as_bool().ok_or_else(|| syntax("preflight must be true or false".to_owned()))?,
    };
    let rules = match members.get("rules") {
        None => Vec::new(),
        Some(rules) => rules
            .as_array()
            .ok_or_else(|| syntax("rules must be a list".to_owned()))?
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let at = |what: &str| syntax(format!("rule {}: {what}", index + 1));
                let rule = rule.as_object().ok_or_else(|| at("not an object"))?;
                known_members(rule, &RULE_MEMBERS).map_err(|detail| at(&detail))?;
                let text = |name: &str| match rule.get(name) {
                    None => Ok(None),
                    Some(value) => value
                        .as_str()
                        .map(|text| Some(text.to_owned()))
                        .ok_or_else(|| at(&format!("{name} must be a string"))),
                };
                let list = |name: &str| match rule.get(name) {
                    None => Ok(None),
                    Some(value) => value
                        .as_array()
                        .and_then(|items| {
                            items.iter().map(|item| item.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()
                        })
                        .map(Some)
                        .ok_or_else(|| at(&format!("{name} must be a list of strings"))),
                };
                Ok(RuleText {
                    path: text("path")?.ok_or_else(|| at("missing field `path`"))?,
                    methods: list("methods")?,
                    access: text("access")?.ok_or_else(|| at("missing field `access`"))?,
                    roles: list("roles")?,
                    subject: text("subject")?,
                })
            })
            .collect::<Result<_, PolicyError>>()?,
    };
    Ok((preflight, rules))
}

/// Refuses a member not in `known`.
fn known_members(members: &serde_json::Map<String, Value>, known: &[&str]) -> Result<(), String> {
    match members.keys().find(|name| !known.contains(&name.as_str())) {
        Some(unknown) => Err(format!("unknown field `{unknown}`")),
        None => Ok(()),
    }
}

impl Policy {
    /// Parses a policy from JSON (text starting with `{`) or TOML.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let (preflight, rules) = if text.trim_start().starts_with('{') {
            let document = crate::json::parse(text.as_bytes())
                .map_err(|error| PolicyError::Syntax { format: "JSON", detail: error.to_string() })?;
            policy_text(&document, "JSON")?
        } else {
            policy_text(&parse_toml(text)?, "TOML")?
        };
        if rules.is_empty() {
            return Err(PolicyError::NoRules);
        }
        let rules =
            rules.into_iter().enumerate().map(|(index, rule)| rule.validate(index + 1)).collect::<Result<_, _>>()?;
        Ok(Self { rules, preflight })
    }

    /// The first rule that matches `method` and `path`; `None` means deny. `path` is the URL path
    /// without the query, as sent (not decoded). An ambiguous path (see the module documentation)
    /// matches nothing.
    pub fn route(&self, method: &str, path: &str) -> Option<&Rule> {
        if !is_plain_path(path) {
            return None;
        }
        self.rules.iter().find(|rule| rule.matches(method, path))
    }

    /// Whether CORS preflights are let through without a token (the edge answers them itself,
    /// from its CORS setting). Default true.
    pub fn allows_preflight(&self) -> bool {
        self.preflight
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

#[cfg(feature = "toml")]
fn parse_toml(text: &str) -> Result<Value, PolicyError> {
    toml::from_str(text).map_err(|error| PolicyError::Syntax { format: "TOML", detail: error.message().to_owned() })
}

#[cfg(not(feature = "toml"))]
fn parse_toml(_text: &str) -> Result<Value, PolicyError> {
    Err(PolicyError::TomlUnsupported)
}

impl RuleText {
    fn validate(self, rule: usize) -> Result<Rule, PolicyError> {
        let path = self.path;
        let star_only_at_end = path.find('*').is_none_or(|at| at == path.len() - 1);
        if !path.starts_with('/') || !star_only_at_end {
            return Err(PolicyError::BadPath { rule, path });
        }
        let methods = match self.methods {
            None => None,
            Some(methods) if !methods.is_empty() && methods.iter().all(|m| is_method_token(m)) => {
                Some(methods.iter().map(|m| m.to_ascii_uppercase()).collect())
            }
            Some(_) => return Err(PolicyError::BadMethods { rule, path }),
        };
        let roles = self.roles.filter(|roles| !roles.is_empty());
        let access = match (self.access.as_str(), roles) {
            ("public", None) => Access::Public,
            ("authenticated", None) => Access::Authenticated,
            ("any_role", Some(roles)) => Access::AnyRole(roles),
            ("all_roles", Some(roles)) => Access::AllRoles(roles),
            ("public" | "authenticated" | "any_role" | "all_roles", _) => {
                return Err(PolicyError::BadRoles { rule, path });
            }
            _ => return Err(PolicyError::BadAccess { rule, path }),
        };
        let subject = match self.subject.as_deref() {
            None => None,
            Some(name) => match SubjectKind::from_name(name) {
                Some(kind) if access.needs_token() => Some(kind),
                _ => return Err(PolicyError::BadSubject { rule, path }),
            },
        };
        Ok(Rule { path, methods, access, subject })
    }
}

fn is_method_token(method: &str) -> bool {
    !method.is_empty() && method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-')
}

fn is_plain_path(path: &str) -> bool {
    if !path.starts_with('/') || path.contains(['\\', ';']) || path.contains("//") {
        return false;
    }
    if path.split('/').any(|segment| segment == "." || segment == "..") {
        return false;
    }
    let bytes = path.as_bytes();
    bytes.iter().enumerate().filter(|(_, byte)| **byte == b'%').all(|(at, _)| {
        let escaped = bytes.get(at + 1..at + 3).and_then(|hex| std::str::from_utf8(hex).ok());
        escaped.and_then(|hex| u8::from_str_radix(hex, 16).ok()).is_some_and(is_meaningful_escape)
    })
}

/// True for a percent-escaped byte that an origin cannot mistake for anything else: not an
/// unreserved character (RFC 3986 §2.3, which needs no escape, so `%61dmin` reads as `admin`), not
/// `/`, `\`, `;` or `%` (a second decoding), and not a control character.
fn is_meaningful_escape(byte: u8) -> bool {
    let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
    !unreserved && !matches!(byte, b'/' | b'\\' | b';' | b'%') && !byte.is_ascii_control()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const TOML_POLICY: &str = r#"
        [[rules]]
        path = "/health"
        methods = ["get", "HEAD"]
        access = "public"

        [[rules]]
        path = "/api/admin/*"
        access = "any_role"
        roles = ["admin"]

        [[rules]]
        path = "/api/reports/*"
        access = "all_roles"
        roles = ["reader", "finance"]

        [[rules]]
        path = "/api/*"
        access = "authenticated"
    "#;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn first_match_wins_and_no_match_denies() {
        let policy = Policy::parse(TOML_POLICY).expect("valid policy");
        assert!(policy.allows_preflight());
        let access = |method, path| policy.route(method, path).map(|rule| rule.access.clone());
        assert_eq!(access("GET", "/health"), Some(Access::Public));
        assert_eq!(access("head", "/health"), Some(Access::Public));
        assert_eq!(access("POST", "/health"), None);
        assert_eq!(access("GET", "/health/x"), None);
        assert_eq!(access("GET", "/api/admin/users"), Some(Access::AnyRole(roles(&["admin"]))));
        assert_eq!(access("GET", "/api/admin/"), Some(Access::AnyRole(roles(&["admin"]))));
        assert_eq!(
            access("GET", "/api/admin"),
            Some(Access::AnyRole(roles(&["admin"]))),
            "/api/admin/* covers /api/admin"
        );
        assert_eq!(access("GET", "/api/administrator"), Some(Access::Authenticated), "but not a longer name");
        assert_eq!(access("DELETE", "/api/x"), Some(Access::Authenticated));
        assert_eq!(access("GET", "/"), None);
        assert_eq!(access("GET", "/apix"), None);
    }

    #[test]
    fn ambiguous_paths_match_nothing() {
        let policy = Policy::parse(r#"{"rules":[{"path":"/*","access":"public"}]}"#).expect("valid policy");
        assert!(policy.route("GET", "/anything").is_some());
        for path in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/a//b",
            "/a%2fb",
            "/a%2Fb",
            "/a%2e%2e/b",
            "/a\\b",
            "a",
            "",
            "/a%5cb",
            "/public/..;/api/admin",
            "/a;jsessionid=1",
            "/api/%61dmin",
            "/api/%7Euser",
            "/a%252e%252e/b",
            "/a%00",
            "/a%0a",
            "/a%",
            "/a%4",
            "/a%zz",
            "/a%c3%",
        ] {
            assert!(policy.route("GET", path).is_none(), "{path}");
        }
    }

    #[test]
    fn escapes_that_change_nothing_still_match() {
        let policy = Policy::parse(r#"{"rules": [{"path": "/files/*", "access": "authenticated"}]}"#).unwrap();
        for path in ["/files/a%20b", "/files/caf%C3%A9", "/files/what%3F", "/files/"] {
            assert_eq!(policy.route("GET", path).map(|rule| &rule.access), Some(&Access::Authenticated), "{path}");
        }
    }

    #[test]
    fn roles_any_of_and_all_of() {
        assert!(Access::AnyRole(roles(&["a", "b"])).permits(&roles(&["b"])));
        assert!(!Access::AnyRole(roles(&["a", "b"])).permits(&roles(&["c"])));
        assert!(Access::AllRoles(roles(&["a", "b"])).permits(&roles(&["b", "c", "a"])));
        assert!(!Access::AllRoles(roles(&["a", "b"])).permits(&roles(&["a"])));
        assert!(Access::Authenticated.permits(&[]));
        assert!(!Access::Public.needs_token());
        assert!(Access::Authenticated.needs_token());
    }

    #[test]
    fn json_and_toml_read_the_same() {
        let json = r#"{"preflight": false, "rules": [
            {"path": "/health", "methods": ["GET", "HEAD"], "access": "public"},
            {"path": "/api/admin/*", "access": "any_role", "roles": ["admin"]},
            {"path": "/api/reports/*", "access": "all_roles", "roles": ["reader", "finance"]},
            {"path": "/api/*", "access": "authenticated"}]}"#;
        let from_json = Policy::parse(json).expect("valid JSON policy");
        let from_toml = Policy::parse(&format!("preflight = false\n{TOML_POLICY}")).expect("valid TOML policy");
        assert_eq!(from_json, from_toml);
        assert!(!from_json.allows_preflight());
    }

    #[test]
    fn a_rule_may_admit_only_users_or_only_services() {
        let policy = Policy::parse(
            r#"{"rules":[
                {"path":"/internal/*","access":"authenticated","subject":"service"},
                {"path":"/me","access":"authenticated","subject":"user"},
                {"path":"/*","access":"any_role","roles":["reader"]}
            ]}"#,
        )
        .expect("valid");
        let subject = |path| policy.route("GET", path).map(|rule| rule.subject);
        assert_eq!(subject("/internal/jobs"), Some(Some(SubjectKind::Service)));
        assert_eq!(subject("/me"), Some(Some(SubjectKind::User)));
        assert_eq!(subject("/other"), Some(None), "either, when the rule does not say");
    }

    #[test]
    fn errors_name_the_bad_rule() {
        let bad = |rule: &str| {
            Policy::parse(&format!(r#"{{"rules":[{{"path":"/ok","access":"public"}},{rule}]}}"#))
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            bad(r#"{"path":"api","access":"public"}"#),
            r#"rule 2 ("api"): the path must start with '/' and may only end with '*'"#
        );
        assert!(bad(r#"{"path":"/a*b","access":"public"}"#).starts_with("rule 2 (\"/a*b\")"));
        assert!(bad(r#"{"path":"/a","access":"admin"}"#).contains("access must be"));
        assert!(bad(r#"{"path":"/a","access":"any_role"}"#).contains("roles list"));
        assert!(bad(r#"{"path":"/a","access":"any_role","roles":[]}"#).contains("roles list"));
        assert!(bad(r#"{"path":"/a","access":"public","roles":["x"]}"#).contains("roles list"));
        assert!(bad(r#"{"path":"/a","access":"public","methods":[]}"#).contains("methods"));
        assert!(bad(r#"{"path":"/a","access":"public","methods":["G T"]}"#).contains("methods"));
        assert!(bad(r#"{"path":"/a","access":"public","role":["x"]}"#).contains("unknown field"));
        assert!(bad(r#"{"path":"/a","access":"authenticated","subject":"robot"}"#).contains("subject must be"));
        assert!(bad(r#"{"path":"/a","access":"public","subject":"user"}"#).contains("subject must be"));
        assert_eq!(Policy::parse(r#"{"rules":[]}"#), Err(PolicyError::NoRules));
        assert!(matches!(Policy::parse("rules = 5"), Err(PolicyError::Syntax { format: "TOML", .. })));
        assert!(matches!(Policy::parse("{"), Err(PolicyError::Syntax { format: "JSON", .. })));
    }
}
