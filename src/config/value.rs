//! Scalar config values that remember where they were written: strings are `${VAR}`-expanded
//! and may stand for numbers, booleans and durations; errors carry the value's span.
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

/// A config value with the byte range it came from.
#[derive(Debug, Clone)]
pub struct Val<T> {
    pub value: T,
    pub span: Range<usize>,
}

/// A raw TOML scalar before conversion.
#[derive(Debug, Clone)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Conversion from an expanded scalar.
pub trait FromScalar: Sized {
    fn from_scalar(s: Scalar) -> Result<Self, String>;
}

impl FromScalar for String {
    fn from_scalar(s: Scalar) -> Result<Self, String> {
        match s {
            Scalar::Str(s) => Ok(s),
            _ => Err("expected a string".into()),
        }
    }
}

fn integer(s: Scalar) -> Result<i64, String> {
    match s {
        Scalar::Int(i) => Ok(i),
        Scalar::Str(t) => t
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("expected a whole number, got {t:?}")),
        Scalar::Float(_) => Err("expected a whole number, got a fraction".into()),
        Scalar::Bool(_) => Err("expected a whole number, got a boolean".into()),
    }
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl FromScalar for $t {
            fn from_scalar(s: Scalar) -> Result<Self, String> {
                let i = integer(s)?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range"))
            }
        }
    )*};
}
unsigned!(u16, u32, u64, usize);

impl FromScalar for bool {
    fn from_scalar(s: Scalar) -> Result<Self, String> {
        match s {
            Scalar::Bool(b) => Ok(b),
            Scalar::Str(t) => match t.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(format!("expected true or false, got {other:?}")),
            },
            _ => Err("expected true or false".into()),
        }
    }
}

/// A duration in (possibly fractional) seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Secs(pub Duration);

impl FromScalar for Secs {
    fn from_scalar(s: Scalar) -> Result<Self, String> {
        let f = match s {
            Scalar::Int(i) => i as f64,
            Scalar::Float(f) => f,
            Scalar::Str(t) => t
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("expected seconds, got {t:?}"))?,
            Scalar::Bool(_) => return Err("expected seconds, got a boolean".into()),
        };
        if !f.is_finite() || !(0.0..=1e9).contains(&f) {
            return Err(format!("{f} is not a valid number of seconds"));
        }
        Ok(Secs(Duration::from_secs_f64(f)))
    }
}

/// Where `${VAR}` values come from.
pub type EnvLookup = Box<dyn Fn(&str) -> Option<String>>;

thread_local! {
    /// The environment lookup used while deserializing; the loader sets it for one parse.
    static LOOKUP: std::cell::RefCell<Option<EnvLookup>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `lookup` as the source of `${VAR}` values.
pub fn with_env<R>(lookup: EnvLookup, f: impl FnOnce() -> R) -> R {
    LOOKUP.with(|l| *l.borrow_mut() = Some(lookup));
    let r = f();
    LOOKUP.with(|l| *l.borrow_mut() = None);
    r
}

fn expand_scalar(s: Scalar) -> Result<Scalar, String> {
    match s {
        Scalar::Str(t) => LOOKUP.with(|l| {
            let l = l.borrow();
            let env = |name: &str| match l.as_ref() {
                Some(f) => f(name),
                None => std::env::var(name).ok(),
            };
            super::expand::expand(&t, &env).map(Scalar::Str)
        }),
        other => Ok(other),
    }
}

impl<'de, T: FromScalar> Deserialize<'de> for Val<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = toml::Spanned::<Scalar>::deserialize(d)?;
        let span = spanned.span();
        let value = expand_scalar(spanned.into_inner())
            .and_then(T::from_scalar)
            .map_err(de::Error::custom)?;
        Ok(Val { value, span })
    }
}

/// A list given either as an array or as one comma-separated string.
#[derive(Debug, Clone)]
pub struct List(pub Vec<Val<String>>);

enum ListInner {
    Many(Vec<Val<String>>),
    One(String),
}

impl<'de> Deserialize<'de> for ListInner {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListInner;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of strings or a comma-separated string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListInner, E> {
                Ok(ListInner::One(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ListInner, A::Error> {
                let mut v = Vec::new();
                while let Some(item) = seq.next_element::<Val<String>>()? {
                    v.push(item);
                }
                Ok(ListInner::Many(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = toml::Spanned::<ListInner>::deserialize(d)?;
        let span = spanned.span();
        Ok(match spanned.into_inner() {
            ListInner::Many(v) => List(v),
            ListInner::One(s) => {
                let expanded = match expand_scalar(Scalar::Str(s)).map_err(de::Error::custom)? {
                    Scalar::Str(t) => t,
                    _ => String::new(),
                };
                List(
                    expanded
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(|p| Val {
                            value: p.to_string(),
                            span: span.clone(),
                        })
                        .collect(),
                )
            }
        })
    }
}
