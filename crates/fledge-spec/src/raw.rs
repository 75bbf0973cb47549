//! Values as found in a document, for "found …" in messages.
//!
//! Fields with their own checks (traffic, durations) read a [`Raw`] first and judge
//! it afterwards, with the same function whether the value comes from the
//! deserializer or from the node tree. That keeps one wording per problem, and lets
//! `parse_spec` put a placeholder in place of a bad value and carry on, so that a
//! spec's problems are reported together (see [`with_lenient`]).

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A value as written: text, a number (as text), or something else described.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Raw {
    /// A string.
    Text(String),
    /// A number, formatted as parsed.
    Number(String),
    /// Null, or an empty value.
    Null,
    /// Anything else, already described ("a list", "true").
    Other(String),
}

impl Raw {
    /// How the value reads in "found …".
    pub(crate) fn describe(&self) -> String {
        match self {
            Raw::Text(s) => {
                let mut short: String = s.chars().take(40).collect();
                if s.chars().count() > 40 {
                    short.push('…');
                }
                format!("the text `{short}`")
            }
            Raw::Number(n) => n.clone(),
            Raw::Null => "nothing".to_owned(),
            Raw::Other(d) => d.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Text(v.to_owned()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                Ok(Raw::Number(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Number(v.to_string()))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
                Ok(Raw::Number(v.to_string()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
                Ok(Raw::Number(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Number(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Other(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                Raw::deserialize(d)
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Raw, E> {
                Ok(Raw::Other(format!("{} bytes of binary data", v.len())))
            }
            // Containers are read to their end, so that the deserializer stays in step
            // when the caller replaces the value with a placeholder.
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Raw::Other("a list".to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Raw::Other("a mapping".to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

thread_local! {
    /// Set while [`crate::parse_spec`] deserializes. A bad criterion, traffic or
    /// duration then becomes a placeholder that validation always refuses
    /// (a criterion that does not parse, traffic 255, `Duration::MAX`), instead of
    /// stopping serde at the first problem; validation reads the value again from
    /// the document and reports it with the spec's other problems. Never set
    /// outside that call, and validation refuses every placeholder, so none escapes.
    static LENIENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether bad values become placeholders (see [`LENIENT`]).
pub(crate) fn lenient() -> bool {
    LENIENT.with(std::cell::Cell::get)
}

/// Runs `f` with placeholders for bad values (see [`LENIENT`]).
pub(crate) fn with_lenient<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            LENIENT.with(|l| l.set(self.0));
        }
    }
    let _reset = Reset(LENIENT.with(|l| l.replace(true)));
    f()
}

/// Reads a [`Raw`] and judges it with `check`; a failure is a serde error, or the
/// `placeholder` while [`lenient`].
pub(crate) fn judged<'de, D, T>(
    d: D,
    check: impl FnOnce(&Raw) -> Result<T, String>,
    placeholder: T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = Raw::deserialize(d)?;
    match check(&raw) {
        Ok(v) => Ok(v),
        Err(_) if lenient() => Ok(placeholder),
        Err(message) => Err(serde::de::Error::custom(message)),
    }
}
