//! Values as found in a document, for "found …" in messages.
//!
//! Fields with their own checks (traffic, durations) read a [`Raw`] first and judge
//! it afterwards, with the same function whether the value comes from the
//! deserializer or from the node tree. That keeps one wording per problem, and lets
//! `parse_spec` put a placeholder in place of a bad value and carry on, so that a
//! spec's problems are reported together (see [`with_lenient`]).

use std::marker::PhantomData;

use serde::de::{
    Deserialize, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor,
};

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

impl<'de> FromValue<'de> for Raw {
    const EXPECTING: &'static str = "any value";

    fn scalar(value: Scalar) -> Self {
        match value {
            Scalar::Text(s) => Raw::Text(s),
            Scalar::Number(n) => Raw::Number(n),
            Scalar::Bool(b) => Raw::Other(b.to_string()),
            Scalar::Null => Raw::Null,
            Scalar::Binary(d) => Raw::Other(d),
        }
    }

    // Containers are read to their end, so that the deserializer stays in step when
    // the caller replaces the value with a placeholder.
    fn seq<A: SeqAccess<'de>>(mut a: A) -> Result<Self, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Raw::Other("a list".to_owned()))
    }

    fn map<A: MapAccess<'de>>(mut a: A) -> Result<Self, A::Error> {
        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Raw::Other("a mapping".to_owned()))
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor::new())
    }
}

// === values kept as text ===

/// A scalar as the document wrote it, for the types that keep values as text.
pub(crate) enum Scalar {
    /// A string.
    Text(String),
    /// A number, formatted as parsed.
    Number(String),
    /// `true` or `false`.
    Bool(bool),
    /// Null, or an empty value.
    Null,
    /// Binary data, described by its size.
    Binary(String),
}

/// A type read from a value of any type: every scalar through [`Scalar`],
/// containers its own way (by default, refused).
pub(crate) trait FromValue<'de>: Sized {
    /// What it reads, for serde's "expected …".
    const EXPECTING: &'static str;

    /// The value of a scalar.
    fn scalar(value: Scalar) -> Self;

    /// The value of a sequence.
    fn seq<A: SeqAccess<'de>>(_: A) -> Result<Self, A::Error> {
        Err(Error::invalid_type(Unexpected::Seq, &Self::EXPECTING))
    }

    /// The value of a mapping.
    fn map<A: MapAccess<'de>>(_: A) -> Result<Self, A::Error> {
        Err(Error::invalid_type(Unexpected::Map, &Self::EXPECTING))
    }
}

/// `Visitor` methods that read a number of each named type as [`Scalar::Number`].
macro_rules! visit_numbers {
    ($($method:ident: $ty:ty),*) => {
        $(
            fn $method<E>(self, v: $ty) -> Result<T, E> {
                Ok(T::scalar(Scalar::Number(v.to_string())))
            }
        )*
    };
}

/// The serde visitor of every [`FromValue`] type.
pub(crate) struct ValueVisitor<T>(PhantomData<T>);

impl<T> ValueVisitor<T> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<'de, T: FromValue<'de> + Deserialize<'de>> Visitor<'de> for ValueVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok(T::scalar(Scalar::Text(v.to_owned())))
    }

    // Every number the same way, formatted as parsed.
    visit_numbers!(
        visit_u64: u64,
        visit_i64: i64,
        visit_u128: u128,
        visit_i128: i128,
        visit_f64: f64
    );

    fn visit_bool<E>(self, v: bool) -> Result<T, E> {
        Ok(T::scalar(Scalar::Bool(v)))
    }

    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::scalar(Scalar::Null))
    }

    fn visit_none<E>(self) -> Result<T, E> {
        Ok(T::scalar(Scalar::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(d)
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<T, E> {
        let described = format!("{} bytes of binary data", v.len());
        Ok(T::scalar(Scalar::Binary(described)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<T, A::Error> {
        T::seq(a)
    }

    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<T, A::Error> {
        T::map(a)
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
