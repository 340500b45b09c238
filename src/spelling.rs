//! The spellings of an enum's values, written once.
//!
//! A manifest value such as `source_format: vhdx` is spelled in several places that must agree:
//! serde reads it and `--dump-config` writes it, the validation tables list the accepted names
//! and suggest the nearest one, and messages and reports print it. Written by hand, each of those
//! is a list that can drift from the others (a format accepted by validation but refused by
//! serde, a message listing a name that no longer exists). [`spelled_enum!`] takes one list of
//! `Variant = "spelling"` pairs and generates them all from it.
//!
//! This module sits at the bottom of the crate and knows nothing of manifests.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, EnumAccess, Unexpected, VariantAccess, Visitor};

/// Defines a fieldless enum from `Variant = "spelling"` pairs.
///
/// Doc comments and attributes on the enum and on each variant pass through (so `#[default]`
/// works together with `#[derive(Default)]`); `Clone`, `Copy`, `Debug`, `PartialEq`, `Eq` and
/// `Hash` are always derived. Generated: `ALL` and `NAMES` (both in declaration order, which is
/// the order messages list them in), `name()`, `from_name()`, `Display` (the spelling),
/// `Serialize` and `Deserialize`. Deserializing behaves like serde's derive for a unit-only enum
/// with the same names: an unknown spelling is serde's `unknown_variant` error listing `NAMES`.
/// Two variants with one spelling are an unreachable-pattern warning.
macro_rules! spelled_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $spelling:literal
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant,
            )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every spelling, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($spelling),+];

            /// How manifests, messages and reports spell this value.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $spelling,)+
                }
            }

            /// The value spelled `name` exactly (no case folding).
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($spelling => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_unit_variant(stringify!($name), *self as u32, self.name())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::spelling::deserialize(d, stringify!($name), Self::NAMES, Self::ALL)
            }
        }
    };
}

pub(crate) use spelled_enum;

/// What the generated `Deserialize` calls: the same requests a derived unit-only enum makes, so
/// every format accepts exactly what it would accept for the derive.
#[doc(hidden)]
pub fn deserialize<'de, D, T>(
    d: D,
    enum_name: &'static str,
    names: &'static [&'static str],
    all: &'static [T],
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Copy + 'static,
{
    d.deserialize_enum(
        enum_name,
        names,
        EnumVisitor {
            enum_name,
            spelling: Spelling { names, all },
        },
    )
}

struct EnumVisitor<T: 'static> {
    enum_name: &'static str,
    spelling: Spelling<T>,
}

impl<'de, T: Copy + 'static> Visitor<'de> for EnumVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "enum {}", self.enum_name)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<T, A::Error> {
        let (value, variant) = data.variant_seed(self.spelling)?;
        variant.unit_variant()?;
        Ok(value)
    }
}

/// The variant identifier: a spelling, or (for formats that send one) a variant index.
struct Spelling<T: 'static> {
    names: &'static [&'static str],
    all: &'static [T],
}

impl<T> Clone for Spelling<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Spelling<T> {}

impl<'de, T: Copy + 'static> DeserializeSeed<'de> for Spelling<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de, T: Copy + 'static> Visitor<'de> for Spelling<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("variant identifier")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        usize::try_from(v)
            .ok()
            .and_then(|i| self.all.get(i).copied())
            .ok_or_else(|| {
                let expected = format!("variant index 0 <= i < {}", self.all.len());
                E::invalid_value(Unexpected::Unsigned(v), &expected.as_str())
            })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        self.names
            .iter()
            .position(|n| *n == v)
            .and_then(|i| self.all.get(i).copied())
            .ok_or_else(|| E::unknown_variant(v, self.names))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<T, E> {
        match std::str::from_utf8(v) {
            Ok(s) => self.visit_str(s),
            Err(_) => Err(E::unknown_variant(&String::from_utf8_lossy(v), self.names)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::{Value, json};

    spelled_enum! {
        /// Doc comments pass through.
        #[derive(Default, PartialOrd, Ord)]
        enum Colour {
            Red = "red",
            #[default]
            DarkBlue = "dark-blue",
            Upper = "UPPER",
        }
    }

    /// What the macro replaces: serde's derive with the same spellings.
    #[derive(Debug, PartialEq, Deserialize, Serialize)]
    enum Derived {
        #[serde(rename = "red")]
        Red,
        #[serde(rename = "dark-blue")]
        DarkBlue,
        #[serde(rename = "UPPER")]
        Upper,
    }

    #[test]
    fn names_and_values_line_up_in_declaration_order() {
        assert_eq!(Colour::NAMES, ["red", "dark-blue", "UPPER"]);
        assert_eq!(Colour::ALL, [Colour::Red, Colour::DarkBlue, Colour::Upper]);
        for (value, name) in Colour::ALL.iter().zip(Colour::NAMES) {
            assert_eq!(value.name(), *name);
            assert_eq!(Colour::from_name(name), Some(*value));
            assert_eq!(value.to_string(), *name);
        }
        assert_eq!(Colour::from_name("Red"), None, "no case folding");
        assert_eq!(Colour::from_name("blue"), None);
    }

    #[test]
    fn attributes_pass_through() {
        assert_eq!(Colour::default(), Colour::DarkBlue);
        assert!(Colour::Red < Colour::Upper);
    }

    #[test]
    fn serializes_as_the_spelling() {
        for c in Colour::ALL {
            assert_eq!(
                serde_json::to_value(c).expect("json"),
                Value::String(c.name().to_owned())
            );
        }
        assert_eq!(
            serde_json::to_string(&Derived::DarkBlue).expect("json"),
            serde_json::to_string(&Colour::DarkBlue).expect("json")
        );
    }

    #[test]
    fn unknown_spellings_list_the_names() {
        let e = serde_json::from_value::<Colour>(json!("blue")).expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "unknown variant `blue`, expected one of `red`, `dark-blue`, `UPPER`"
        );
    }

    #[test]
    fn accepts_and_refuses_what_the_derive_does() {
        let inputs = [
            json!("red"),
            json!("dark-blue"),
            json!("UPPER"),
            json!("Red"),
            json!("darkblue"),
            json!(""),
            json!(1),
            json!(null),
            json!(true),
            json!(["red"]),
            json!({"red": null}),
            json!({"red": 1}),
            json!({"nope": null}),
            json!({}),
        ];
        for input in inputs {
            let ours = serde_json::from_value::<Colour>(input.clone())
                .map(Colour::name)
                .map_err(|e| e.to_string());
            let derived = serde_json::from_value::<Derived>(input.clone())
                .map(|d| match d {
                    Derived::Red => "red",
                    Derived::DarkBlue => "dark-blue",
                    Derived::Upper => "UPPER",
                })
                .map_err(|e| e.to_string());
            assert_eq!(ours, derived, "for {input}");
        }
        // Through a text format too (YAML, as manifests are written).
        for text in ["dark-blue", "'UPPER'", "blue", "3"] {
            let ours = serde_saphyr::from_str::<Colour>(text)
                .map(Colour::name)
                .map_err(|e| e.to_string());
            let derived = serde_saphyr::from_str::<Derived>(text)
                .map(|d| match d {
                    Derived::Red => "red",
                    Derived::DarkBlue => "dark-blue",
                    Derived::Upper => "UPPER",
                })
                .map_err(|e| e.to_string());
            assert_eq!(ours, derived, "for {text}");
        }
    }

    #[test]
    fn works_inside_derived_containers() {
        #[derive(Debug, PartialEq, Deserialize, Serialize)]
        struct Holder {
            #[serde(default)]
            colour: Colour,
            #[serde(default)]
            maybe: Option<Colour>,
        }
        let h: Holder = serde_json::from_value(json!({"maybe": "UPPER"})).expect("typed");
        assert_eq!(
            h,
            Holder {
                colour: Colour::DarkBlue,
                maybe: Some(Colour::Upper)
            }
        );
        assert_eq!(
            serde_json::to_value(&h).expect("json"),
            json!({"colour": "dark-blue", "maybe": "UPPER"})
        );
        #[derive(Debug, PartialEq, Deserialize)]
        #[serde(untagged)]
        enum Either {
            Flag(bool),
            Named(Colour),
        }
        assert_eq!(
            serde_json::from_value::<Either>(json!("red")).expect("typed"),
            Either::Named(Colour::Red)
        );
    }
}
