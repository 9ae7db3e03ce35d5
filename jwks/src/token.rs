//! `UntrustedToken`: a JWS in compact serialization, split and decoded but not yet trusted.

use crate::b64;
use crate::json::{self, StrictJsonError};
use serde_json::{Map, Value};

/// Bounds applied before any decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseLimits {
    /// The longest token accepted, in bytes. Default 8 KiB.
    pub max_token_bytes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self { max_token_bytes: 8 * 1024 }
    }
}

/// The segment of a compact JWS that an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// The protected header (first segment).
    Header,
    /// The payload (second segment).
    Payload,
    /// The signature (third segment).
    Signature,
}

impl std::fmt::Display for Segment {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::Header => "header",
            Self::Payload => "payload",
            Self::Signature => "signature",
        })
    }
}

/// Why a string is not a well-formed compact JWS. Nothing of the token is echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Longer than [`ParseLimits::max_token_bytes`].
    #[error("the token is longer than {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// Not exactly three dot-separated segments.
    #[error("the token does not have exactly three segments")]
    NotThreeSegments,
    /// A segment is not strict unpadded base64url.
    #[error("the {0} segment is not strict base64url")]
    BadBase64(Segment),
    /// The header is not a JSON object.
    #[error("the header is not a JSON object")]
    HeaderNotJsonObject,
    /// The header has two members with the same name.
    #[error("the header has a duplicate member")]
    HeaderDuplicateMember,
    /// A header member has the wrong JSON type (`alg`, `kid`, `typ` must be strings).
    #[error("the header member {0:?} is missing or of the wrong type")]
    HeaderMemberType(&'static str),
}

/// The protected header of a token. Before verification only `alg`, `kid` and `typ` are exposed;
/// the members that make a token unacceptable are kept for the verifier to refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The algorithm the token claims. Never used to choose one: the verifier requires `ES256`.
    pub alg: String,
    /// The key id.
    pub kid: Option<String>,
    /// The token type, e.g. `at+jwt`.
    pub typ: Option<String>,
    /// The first embedded-key member present (`jwk`, `jku`, `x5u`, `x5c`), if any.
    pub(crate) embedded_key: Option<&'static str>,
    /// Whether a `crit` member is present.
    pub(crate) has_crit: bool,
}

/// Members that would let a token bring its own key. Never trusted, never fetched.
const EMBEDDED_KEY_MEMBERS: [&str; 4] = ["jwk", "jku", "x5u", "x5c"];

impl Header {
    fn from_json(bytes: &[u8]) -> Result<Self, ParseError> {
        let members = match json::parse(bytes) {
            Ok(Value::Object(members)) => members,
            Ok(_) | Err(StrictJsonError::Syntax) => return Err(ParseError::HeaderNotJsonObject),
            Err(StrictJsonError::DuplicateMember) => return Err(ParseError::HeaderDuplicateMember),
        };
        let alg = string_member(&members, "alg")?.ok_or(ParseError::HeaderMemberType("alg"))?;
        Ok(Self {
            alg,
            kid: string_member(&members, "kid")?,
            typ: string_member(&members, "typ")?,
            embedded_key: EMBEDDED_KEY_MEMBERS.into_iter().find(|name| members.contains_key(*name)),
            has_crit: members.contains_key("crit"),
        })
    }
}

fn string_member(members: &Map<String, Value>, name: &'static str) -> Result<Option<String>, ParseError> {
    match members.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(ParseError::HeaderMemberType(name)),
    }
}

/// A compact JWS that has been split and decoded, and nothing more. Its payload is not reachable
/// from here (its `Debug` output shows lengths only): claims come only out of a
/// [`VerifiedToken`](crate::VerifiedToken), which only a signature check against a key set makes.
#[derive(Clone)]
pub struct UntrustedToken<'a> {
    pub(crate) signing_input: &'a str,
    pub(crate) header: Header,
    pub(crate) payload: Vec<u8>,
    pub(crate) signature: Vec<u8>,
}

impl std::fmt::Debug for UntrustedToken<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("UntrustedToken")
            .field("header", &self.header)
            .field("payload_bytes", &self.payload.len())
            .field("signature_bytes", &self.signature.len())
            .finish()
    }
}

impl<'a> UntrustedToken<'a> {
    /// Parses with the default [`ParseLimits`].
    pub fn parse(token: &'a str) -> Result<Self, ParseError> {
        Self::parse_with_limits(token, &ParseLimits::default())
    }

    /// Parses a compact JWS: at most `limits.max_token_bytes`, exactly three segments of strict
    /// base64url, and a header that is a JSON object without duplicate members.
    pub fn parse_with_limits(token: &'a str, limits: &ParseLimits) -> Result<Self, ParseError> {
        if token.len() > limits.max_token_bytes {
            return Err(ParseError::TooLarge { limit: limits.max_token_bytes });
        }
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (segments.next(), segments.next(), segments.next(), segments.next())
        else {
            return Err(ParseError::NotThreeSegments);
        };
        let signing_input = &token[..header.len() + 1 + payload.len()];
        let decode = |text: &str, segment| b64::decode(text).ok_or(ParseError::BadBase64(segment));
        let header = Header::from_json(&decode(header, Segment::Header)?)?;
        let payload = decode(payload, Segment::Payload)?;
        let signature = decode(signature, Segment::Signature)?;
        Ok(Self { signing_input, header, payload, signature })
    }

    /// The protected header, untrusted.
    pub fn header(&self) -> &Header {
        &self.header
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn b64(text: &str) -> String {
        crate::b64::encode(text.as_bytes())
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), crate::b64::encode(&[7u8; 64]))
    }

    #[test]
    fn parses_a_compact_jws() {
        let text = token(r#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#, "{}");
        let parsed = UntrustedToken::parse(&text).expect("well formed");
        assert_eq!(parsed.header().alg, "ES256");
        assert_eq!(parsed.header().kid.as_deref(), Some("k1"));
        assert_eq!(parsed.header().typ.as_deref(), Some("at+jwt"));
        assert_eq!(parsed.signing_input, &text[..text.rfind('.').expect("dot")]);
        assert_eq!(parsed.signature, vec![7u8; 64]);
    }

    #[test]
    fn refuses_malformed_tokens() {
        let good = token(r#"{"alg":"ES256"}"#, "{}");
        let cases: Vec<(String, ParseError)> = vec![
            ("a.b".into(), ParseError::NotThreeSegments),
            (format!("{good}.x"), ParseError::NotThreeSegments),
            (format!("{good}="), ParseError::BadBase64(Segment::Signature)),
            (format!(" {good}"), ParseError::BadBase64(Segment::Header)),
            (good.replacen('.', "+.", 1), ParseError::BadBase64(Segment::Header)),
            (token("[]", "{}"), ParseError::HeaderNotJsonObject),
            (token("{", "{}"), ParseError::HeaderNotJsonObject),
            (token(r#"{"alg":"ES256","alg":"none"}"#, "{}"), ParseError::HeaderDuplicateMember),
            (token(r#"{"kid":"k"}"#, "{}"), ParseError::HeaderMemberType("alg")),
            (token(r#"{"alg":1}"#, "{}"), ParseError::HeaderMemberType("alg")),
            (token(r#"{"alg":"ES256","kid":1}"#, "{}"), ParseError::HeaderMemberType("kid")),
            (token(r#"{"alg":"ES256","typ":null}"#, "{}"), ParseError::HeaderMemberType("typ")),
            ("x".repeat(8193), ParseError::TooLarge { limit: 8192 }),
        ];
        for (text, expected) in cases {
            assert_eq!(UntrustedToken::parse(&text).map(|_| ()), Err(expected), "{text:.80}");
        }
    }

    #[test]
    fn debug_output_shows_the_header_and_lengths_only() {
        let text = token(r#"{"alg":"ES256","kid":"k1"}"#, r#"{"sub":"secret-subject"}"#);
        let shown = format!("{:?}", UntrustedToken::parse(&text).expect("well formed"));
        assert!(shown.contains(r#"kid: Some("k1")"#), "{shown}");
        assert!(shown.contains("payload_bytes: 24") && shown.contains("signature_bytes: 64"), "{shown}");
        assert!(!shown.contains("secret") && !shown.contains("115, 101, 99"), "{shown}");
    }

    #[test]
    fn notes_members_the_verifier_refuses() {
        let text = token(r#"{"alg":"ES256","jku":"https://evil.example","crit":["exp"]}"#, "{}");
        let parsed = UntrustedToken::parse(&text).expect("well formed");
        assert_eq!(parsed.header().embedded_key, Some("jku"));
        assert!(parsed.header().has_crit);
    }
}
