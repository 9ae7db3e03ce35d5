//! JSON parsing that refuses duplicate object members anywhere in the document: the core's for
//! tokens and key sets, and public for other documents a verifier reads from its issuer (the
//! edge's revocation list), so that they are read as strictly, by the same code.
//!
//! `serde_json` keeps the last of two members with the same name; two parsers that disagree on
//! which one counts is a classic way to smuggle a claim past a verifier, so Portcullis refuses
//! such documents outright.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Why a document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StrictJsonError {
    /// Not JSON at all (or nested too deep).
    #[error("not JSON")]
    Syntax,
    /// An object has two members with the same name.
    #[error("an object has two members with the same name")]
    DuplicateMember,
}

/// Parses `bytes` as one JSON value, refusing duplicate members at any depth.
pub fn parse(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue::deserialize(&mut deserializer).map_err(|error| {
        // The visitor accepts every JSON type, so the only data error is its own.
        if error.classify() == serde_json::error::Category::Data {
            StrictJsonError::DuplicateMember
        } else {
            StrictJsonError::Syntax
        }
    })?;
    deserializer.end().map_err(|_| StrictJsonError::Syntax)?;
    Ok(value.0)
}

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let StrictValue(value) = map.next_value()?;
            if members.insert(name, value).is_some() {
                return Err(de::Error::custom("duplicate member"));
            }
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn parses_plain_documents() {
        let value = parse(br#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}]}"#).expect("valid JSON");
        assert_eq!(value["a"][1], Value::from(-2));
        assert_eq!(value["a"][6]["b"], Value::Object(Map::new()));
    }

    #[test]
    fn refuses_duplicate_members_at_any_depth() {
        assert!(matches!(parse(br#"{"a":1,"a":2}"#), Err(StrictJsonError::DuplicateMember)));
        assert!(matches!(parse(br#"{"x":[{"a":1,"\u0061":2}]}"#), Err(StrictJsonError::DuplicateMember)));
    }

    #[test]
    fn refuses_trailing_data_and_bad_syntax() {
        assert!(matches!(parse(br#"{"a":1} {}"#), Err(StrictJsonError::Syntax)));
        assert!(matches!(parse(b"{"), Err(StrictJsonError::Syntax)));
        assert!(matches!(parse(b""), Err(StrictJsonError::Syntax)));
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert!(matches!(parse(deep.as_bytes()), Err(StrictJsonError::Syntax)));
    }
}
