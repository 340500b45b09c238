//! A small table-driven checker for the manifest sections that upstream leaves unchecked.
//!
//! A section is a table of [`Field`]s, kept in the section's own module beside its type;
//! [`check_object`] reports unknown keys (with the nearest valid key), wrong types and
//! out-of-range values, every problem at once, each with its field path. The checker knows no
//! section: what a table cannot say is a [`Kind::Check`] function, or a hand-written check in the
//! section's module (`manifest_version`, `disks` and `vm`, whose messages and order are
//! upstream's).

use serde_json::{Map, Value};

use crate::config::kind_of;
use crate::diag::{Problems, join, suggest};

pub enum Kind {
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    /// An optional string: null means unset.
    Str,
    /// A string that must be there when the key is (list items, settings without a null form).
    RequiredStr,
    Enum(&'static [&'static str]),
    Object(&'static [Field]),
    /// Any mapping; its contents are the user's (metadata, source extras).
    FreeObject,
    /// A mapping whose values are all strings.
    StrMap,
    StrList,
    ObjectList(&'static [Field]),
    /// A regular expression; `check` says what is wrong with one (so the section decides which
    /// regex rules apply), `nullable`: null means unset.
    Regex {
        nullable: bool,
        check: fn(&str) -> Result<(), String>,
    },
    /// A section this build does not implement: only an empty value (or `enabled: false`) passes.
    Unsupported(&'static str),
    /// A section with its own checker (path, value, problems).
    Check(fn(&str, &Value, &mut Problems)),
}

pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
}

/// A table row; short, because the tables are long.
pub const fn f(name: &'static str, kind: Kind) -> Field {
    Field { name, kind }
}

/// Checks `map` against `fields`, skipping the keys in `handled` (checked elsewhere).
pub fn check_object(
    path: &str,
    map: &Map<String, Value>,
    fields: &[Field],
    handled: &[&str],
    problems: &mut Problems,
) {
    for (key, value) in map {
        if handled.contains(&key.as_str()) {
            continue;
        }
        let here = join(path, key);
        match fields.iter().find(|fl| fl.name == key) {
            Some(field) => check_value(&here, value, &field.kind, problems),
            None => {
                let names: Vec<&str> = fields
                    .iter()
                    .map(|fl| fl.name)
                    .chain(handled.iter().copied())
                    .collect();
                problems.push(&here, crate::diag::unknown_key(key, &names, None));
            }
        }
    }
}

pub fn check_value(path: &str, value: &Value, kind: &Kind, problems: &mut Problems) {
    let wrong = |problems: &mut Problems, expected: &str| {
        problems.push(
            path,
            format!(
                "{path} must be {expected} (got {}: {})",
                kind_of(value),
                crate::diag::excerpt_value(value)
            ),
        );
    };
    match kind {
        Kind::Bool => {
            if !value.is_boolean() {
                wrong(problems, "a boolean (true or false)");
            }
        }
        Kind::Int { min, max } => match value.as_i64() {
            Some(n) if (*min..=*max).contains(&n) => {}
            _ => wrong(problems, &format!("an integer from {min} to {max}")),
        },
        Kind::Str => {
            if !value.is_string() && !value.is_null() {
                wrong(problems, "a string");
            }
        }
        Kind::RequiredStr => {
            if !value.is_string() {
                wrong(problems, "a string");
            }
        }
        Kind::Enum(allowed) => match value.as_str() {
            Some(s) if allowed.contains(&s) => {}
            Some(s) => {
                let hint = suggest(s, allowed)
                    .map(|x| format!(" (did you mean '{x}'?)"))
                    .unwrap_or_default();
                problems.push(
                    path,
                    format!(
                        "{path} must be one of: {} (got: '{}'){hint}",
                        allowed.join(", "),
                        crate::diag::excerpt(s)
                    ),
                );
            }
            None => wrong(problems, &format!("one of: {}", allowed.join(", "))),
        },
        Kind::Object(fields) => match value.as_object() {
            Some(map) => check_object(path, map, fields, &[], problems),
            None => wrong(problems, "a mapping"),
        },
        Kind::FreeObject => {
            if !value.is_object() {
                wrong(problems, "a mapping");
            }
        }
        Kind::StrMap => match value.as_object() {
            Some(map) => {
                for (k, v) in map {
                    if !v.is_string() {
                        check_value(&join(path, k), v, &Kind::Str, problems);
                    }
                }
            }
            None => wrong(problems, "a mapping of strings"),
        },
        Kind::StrList => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_value(&format!("{path}[{i}]"), item, &Kind::RequiredStr, problems);
                }
            }
            None => wrong(problems, "a list of strings"),
        },
        Kind::ObjectList(fields) => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_value(
                        &format!("{path}[{i}]"),
                        item,
                        &Kind::Object(fields),
                        problems,
                    );
                }
            }
            None => wrong(problems, "a list"),
        },
        Kind::Check(check) => check(path, value, problems),
        Kind::Regex { nullable, check } => match value.as_str() {
            Some(pattern) => {
                if let Err(why) = check(pattern) {
                    problems.push(path, format!("{path} {why}"));
                }
            }
            None if value.is_null() && *nullable => {}
            None => wrong(problems, "a regular expression (a string)"),
        },
        Kind::Unsupported(reason) => {
            let empty = match value {
                Value::Null => true,
                Value::Object(m) => {
                    m.is_empty()
                        || m.iter().all(|(k, v)| match (k.as_str(), v) {
                            ("enabled", Value::Bool(false)) => true,
                            (_, Value::Array(a)) => a.is_empty(),
                            (_, Value::Object(o)) => o.is_empty(),
                            _ => false,
                        })
                }
                _ => false,
            };
            if !empty {
                problems.push(path, format!("{reason}; remove '{path}' from the manifest"));
            }
        }
    }
}
