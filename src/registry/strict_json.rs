//! JSON into a `serde_json::Value`, refusing an object that names a key twice. serde_json
//! keeps the last one silently, so `{"url": "http://ok:1", "url": "http://evil:1"}` would
//! mean whatever the reader after us decides; here it is an error naming the key's path
//! (`routes[0].path`). Depth stays bounded by serde_json's own recursion limit.
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Why a body was refused: the path of the duplicated key, or a syntax error.
#[derive(Debug, PartialEq, Eq)]
pub enum StrictError {
    Duplicate(String),
    Syntax(String),
}

const MARK: &str = "\u{0}duplicate\u{0}";

/// Parses `body`, refusing duplicate keys at any depth.
pub fn parse(body: &[u8]) -> Result<Value, StrictError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = Seed {
        path: String::new(),
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    v.map_err(|e| {
        let s = e.to_string();
        match s.strip_prefix(MARK) {
            // serde_json appends " at line L column C"; the path ends before it.
            Some(rest) => StrictError::Duplicate(
                rest.rsplit_once(" at line ")
                    .map_or(rest, |(p, _)| p)
                    .to_string(),
            ),
            None => StrictError::Syntax(s),
        }
    })
}

struct Seed {
    path: String,
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed {
            path: format!("{}[{}]", self.path, out.len()),
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                k.clone()
            } else {
                format!("{}.{k}", self.path)
            };
            if out.contains_key(&k) {
                return Err(de::Error::custom(format!("{MARK}{path}")));
            }
            let v = map.next_value_seed(Seed { path })?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_values_as_serde_json() {
        let src = br#"{"a": [1, -2, 3.5, true, null, "x\u00e9"], "b": {"c": {}}, "d": 18446744073709551615}"#;
        assert_eq!(
            parse(src).unwrap(),
            serde_json::from_slice::<Value>(src).unwrap()
        );
    }

    #[test]
    fn duplicates_are_named_by_path() {
        let d = |s: &str| parse(s.as_bytes()).unwrap_err();
        assert_eq!(
            d(r#"{"url": "a", "url": "b"}"#),
            StrictError::Duplicate("url".into())
        );
        assert_eq!(
            d(r#"{"routes": [{"path": "/a"}, {"path": "/b", "path": "/c"}]}"#),
            StrictError::Duplicate("routes[1].path".into())
        );
        // The same key in different objects is fine.
        assert!(parse(br#"{"a": {"x": 1}, "b": {"x": 1}}"#).is_ok());
    }

    #[test]
    fn syntax_errors_and_trailing_bytes() {
        assert!(matches!(parse(b"{"), Err(StrictError::Syntax(_))));
        assert!(matches!(parse(b"{} x"), Err(StrictError::Syntax(_))));
        let deep = "[".repeat(10_000);
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(StrictError::Syntax(_))
        ));
    }
}
