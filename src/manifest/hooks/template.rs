//! `{{ var }}` templates over a closed set of variables, for hook arguments, environment values,
//! URLs, headers and JSON bodies.
//!
//! A template is parsed once, when the manifest is loaded, into literal text and variable slots;
//! an unknown variable or a malformed placeholder is an error then, not a surprise at 3 a.m.
//! Rendering only concatenates: a substituted value is data and is never parsed again, so a VM
//! named `{{ stage }}` or `$(reboot)` stays exactly that text. Header values may also name an
//! environment variable as `${NAME}` (tokens stay out of manifests); those are resolved once at
//! plan time and never shown.
//!
//! Rendering lives here beside the parser, although only the runner renders: what a substituted
//! value can and cannot do is part of what a template means.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::diag::suggest;
use crate::spelling::spelled_enum;

spelled_enum! {
    /// Every variable a template may name.
    #[derive(PartialOrd, Ord)]
    pub enum Var {
        Stage = "stage",
        Timestamp = "timestamp",
        TimestampIso = "timestamp_iso",
        VmName = "vm_name",
        VmId = "vm_id",
        SourcePath = "source_path",
        SourceDir = "source_dir",
        SourceFilename = "source_filename",
        FixedPath = "fixed_path",
        OutputPath = "output_path",
        OutputDir = "output_dir",
        OutputFilename = "output_filename",
        OutputDirectory = "output_directory",
        OutputFormat = "output_format",
        ManifestPath = "manifest_path",
        BatchId = "batch_id",
        User = "user",
        Hostname = "hostname",
        Pwd = "pwd",
    }
}

/// The values variables take when a hook fires.
#[derive(Clone, Debug, Default)]
pub struct Context {
    values: BTreeMap<Var, String>,
}

impl Context {
    pub fn set(&mut self, var: Var, value: impl Into<String>) {
        self.values.insert(var, value.into());
    }

    /// A variable's value; one that has none (no batch, no output yet) is empty.
    pub fn get(&self, var: Var) -> &str {
        self.values.get(&var).map_or("", String::as_str)
    }
}

/// What a template source may contain besides `{{ var }}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// `{{ var }}` only.
    Vars,
    /// `{{ var }}` and `${ENV_NAME}` (header values).
    VarsAndEnv,
}

#[derive(Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var),
    /// `${NAME}`, not yet resolved.
    Env(String),
    /// `${NAME}` resolved at plan time; never displayed.
    Secret(String),
}

/// A parsed template. It displays and serializes as its source text.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl fmt::Debug for Template {
    /// The source only: resolved secrets must not reach logs through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown template variable '{name}'{hint}; variables: {}", Var::NAMES.join(", "))]
    UnknownVariable { name: String, hint: String },
    #[error(
        "malformed placeholder '{text}': a placeholder is {{{{ name }}}} with one variable name \
         (a literal '{{{{' cannot be written in hook values)"
    )]
    Malformed { text: String },
    #[error("'{{{{' at byte {at} has no closing '}}}}'")]
    Unclosed { at: usize },
    #[error(
        "malformed environment reference '{text}': write ${{NAME}} with a variable name of \
         letters, digits and '_'"
    )]
    MalformedEnv { text: String },
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// The variables the template names.
    pub fn vars(&self) -> impl Iterator<Item = Var> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(*v),
            _ => None,
        })
    }

    /// Parses `source`, collecting every error in it.
    pub fn parse(source: &str, syntax: Syntax) -> Result<Template, Vec<TemplateError>> {
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let mut lit = String::new();
        let mut rest = source;
        let mut offset = 0;
        loop {
            let var_at = rest.find("{{");
            let env_at = match syntax {
                Syntax::VarsAndEnv => rest.find("${"),
                Syntax::Vars => None,
            };
            let (at, is_env) = match (var_at, env_at) {
                (None, None) => break,
                (Some(v), Some(e)) if e < v => (e, true),
                (Some(v), _) => (v, false),
                (None, Some(e)) => (e, true),
            };
            lit.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let close = if is_env { "}" } else { "}}" };
            let Some(end) = after.find(close) else {
                if is_env {
                    errors.push(TemplateError::MalformedEnv {
                        text: rest[at..].to_owned(),
                    });
                } else {
                    errors.push(TemplateError::Unclosed { at: offset + at });
                }
                lit.push_str(&rest[at..]);
                rest = "";
                break;
            };
            let inner = &after[..end];
            let whole = &rest[at..at + 2 + end + close.len()];
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            if is_env {
                if is_identifier(inner) {
                    parts.push(Part::Env(inner.to_owned()));
                } else {
                    errors.push(TemplateError::MalformedEnv {
                        text: whole.to_owned(),
                    });
                }
            } else {
                let name = inner.trim();
                if inner.contains('{') || !is_identifier(name) {
                    errors.push(TemplateError::Malformed {
                        text: whole.to_owned(),
                    });
                } else {
                    match Var::from_name(name) {
                        Some(var) => parts.push(Part::Var(var)),
                        // Past the problems a list shows, a hint is never read: skip its
                        // cost, which a value of thousands of unknown names would multiply.
                        None => errors.push(TemplateError::UnknownVariable {
                            name: name.to_owned(),
                            hint: if errors.len() < crate::diag::MAX_PROBLEMS_SHOWN {
                                suggest(name, Var::NAMES)
                                    .map(|s| format!(" (did you mean '{s}'?)"))
                                    .unwrap_or_default()
                            } else {
                                String::new()
                            },
                        }),
                    }
                }
            }
            let consumed = at + 2 + end + close.len();
            offset += consumed;
            rest = &rest[consumed..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        if errors.is_empty() {
            Ok(Template {
                source: source.to_owned(),
                parts,
            })
        } else {
            Err(errors)
        }
    }

    /// A template that is only literal text.
    pub fn literal(text: &str) -> Template {
        Template {
            source: text.to_owned(),
            parts: vec![Part::Lit(text.to_owned())],
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The environment variables this template names.
    pub fn env_names(&self) -> Vec<&str> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Env(n) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Whether the template has any placeholder at all.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// Replaces every `${NAME}` with its value from `lookup`; returns the names it lacks.
    pub fn resolve_env(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Template, Vec<String>> {
        let mut missing = Vec::new();
        let parts = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Env(name) => match lookup(name) {
                    Some(v) => Part::Secret(v),
                    None => {
                        missing.push(name.clone());
                        Part::Lit(String::new())
                    }
                },
                other => other.clone(),
            })
            .collect();
        if missing.is_empty() {
            Ok(Template {
                source: self.source.clone(),
                parts,
            })
        } else {
            Err(missing)
        }
    }

    /// The text with every variable replaced by its value.
    pub fn render(&self, ctx: &Context) -> String {
        self.render_with(ctx, |v| v.to_owned())
    }

    /// Renders a URL: substituted values are percent-encoded, so a value cannot add a path
    /// segment, a query or a fragment.
    pub fn render_url(&self, ctx: &Context) -> String {
        self.render_with(ctx, percent_encode)
    }

    fn render_with(&self, ctx: &Context, encode: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => out.push_str(&encode(ctx.get(*v))),
                Part::Secret(s) => out.push_str(s),
                // Planning resolves every `${NAME}`; an unresolved one reads the environment now.
                Part::Env(name) => out.push_str(&std::env::var(name).unwrap_or_default()),
            }
        }
        out
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON value whose strings (at any depth) are templates; keys and non-strings stay as they are.
#[derive(Clone, Debug, PartialEq)]
pub enum JsonTemplate {
    Str(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
    Other(Value),
}

impl JsonTemplate {
    /// Parses every string in `value`; errors come back with the path of the string.
    pub fn parse(value: &Value, path: &str) -> Result<JsonTemplate, Vec<(String, TemplateError)>> {
        let mut errors = Vec::new();
        let t = Self::parse_into(value, path, &mut errors);
        if errors.is_empty() {
            Ok(t)
        } else {
            Err(errors)
        }
    }

    fn parse_into(
        value: &Value,
        path: &str,
        errors: &mut Vec<(String, TemplateError)>,
    ) -> JsonTemplate {
        match value {
            Value::String(s) => match Template::parse(s, Syntax::Vars) {
                Ok(t) => JsonTemplate::Str(t),
                Err(es) => {
                    errors.extend(es.into_iter().map(|e| (path.to_owned(), e)));
                    JsonTemplate::Other(value.clone())
                }
            },
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Self::parse_into(v, &format!("{path}[{i}]"), errors))
                    .collect(),
            ),
            Value::Object(map) => JsonTemplate::Object(
                map.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            Self::parse_into(v, &format!("{path}.{k}"), errors),
                        )
                    })
                    .collect(),
            ),
            other => JsonTemplate::Other(other.clone()),
        }
    }

    pub fn render(&self, ctx: &Context) -> Value {
        match self {
            JsonTemplate::Str(t) => Value::String(t.render(ctx)),
            JsonTemplate::Array(items) => {
                Value::Array(items.iter().map(|i| i.render(ctx)).collect())
            }
            JsonTemplate::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.render(ctx)))
                    .collect::<Map<String, Value>>(),
            ),
            JsonTemplate::Other(v) => v.clone(),
        }
    }

    /// The source document.
    pub fn source(&self) -> Value {
        match self {
            JsonTemplate::Str(t) => Value::String(t.source().to_owned()),
            JsonTemplate::Array(items) => Value::Array(items.iter().map(Self::source).collect()),
            JsonTemplate::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.source()))
                    .collect::<Map<String, Value>>(),
            ),
            JsonTemplate::Other(v) => v.clone(),
        }
    }

    /// The top-level keys, for checking them against a function's parameters.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            JsonTemplate::Object(entries) => entries.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

impl Serialize for JsonTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.source().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ctx() -> Context {
        let mut c = Context::default();
        c.set(Var::Stage, "pre_convert");
        c.set(Var::VmName, "web 01");
        c.set(Var::OutputPath, "/srv/out/d0.qcow2");
        c
    }

    fn render(src: &str) -> String {
        Template::parse(src, Syntax::Vars)
            .expect("parses")
            .render(&ctx())
    }

    #[test]
    fn substitutes_with_and_without_spaces() {
        assert_eq!(
            render("{{stage}}:{{ vm_name }}:{{  output_path  }}"),
            "pre_convert:web 01:/srv/out/d0.qcow2"
        );
    }

    #[test]
    fn unset_variables_are_empty() {
        assert_eq!(render("[{{ batch_id }}]"), "[]");
    }

    #[test]
    fn text_without_placeholders_is_literal() {
        let t = Template::parse("plain $HOME } { text", Syntax::Vars).expect("parses");
        assert!(t.is_literal());
        assert_eq!(t.render(&ctx()), "plain $HOME } { text");
    }

    #[test]
    fn unknown_variable_suggests_the_nearest() {
        let err = Template::parse("{{ vmname }}", Syntax::Vars).unwrap_err();
        assert_eq!(
            err[0].to_string(),
            format!(
                "unknown template variable 'vmname' (did you mean 'vm_name'?); variables: {}",
                Var::NAMES.join(", ")
            )
        );
    }

    #[test]
    fn only_the_problems_a_list_shows_get_a_hint() {
        let value = "{{ vmname }}".repeat(crate::diag::MAX_PROBLEMS_SHOWN + 10);
        let err = Template::parse(&value, Syntax::Vars).unwrap_err();
        let hinted = |e: &TemplateError| matches!(e, TemplateError::UnknownVariable { hint, .. } if !hint.is_empty());
        assert_eq!(err.len(), crate::diag::MAX_PROBLEMS_SHOWN + 10);
        assert!(err[..crate::diag::MAX_PROBLEMS_SHOWN].iter().all(hinted));
        assert!(!err[crate::diag::MAX_PROBLEMS_SHOWN..].iter().any(hinted));
    }

    #[test]
    fn every_error_in_a_value_is_reported() {
        let err = Template::parse("{{ a }} {{ .Id }} {{ b", Syntax::Vars).unwrap_err();
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(matches!(err[0], TemplateError::UnknownVariable { .. }));
        assert_eq!(
            err[1],
            TemplateError::Malformed {
                text: "{{ .Id }}".to_owned()
            }
        );
        assert_eq!(err[2], TemplateError::Unclosed { at: 18 });
    }

    #[test]
    fn env_references_only_where_allowed() {
        let t = Template::parse("Bearer ${TOKEN}", Syntax::Vars).expect("literal in args");
        assert!(t.is_literal());
        let t = Template::parse("Bearer ${TOKEN} {{ stage }}", Syntax::VarsAndEnv).expect("parses");
        assert_eq!(t.env_names(), ["TOKEN"]);
        let resolved = t
            .resolve_env(|n| (n == "TOKEN").then(|| "s3cret".to_owned()))
            .expect("resolves");
        assert_eq!(resolved.render(&ctx()), "Bearer s3cret pre_convert");
        assert!(!format!("{resolved:?}").contains("s3cret"));
        assert_eq!(t.resolve_env(|_| None).unwrap_err(), ["TOKEN"]);
        assert!(Template::parse("${not valid}", Syntax::VarsAndEnv).is_err());
        assert!(Template::parse("${OPEN", Syntax::VarsAndEnv).is_err());
    }

    #[test]
    fn a_value_that_looks_like_a_placeholder_is_not_reparsed() {
        let mut c = Context::default();
        c.set(Var::VmName, "{{ stage }} ${TOKEN} $(reboot)");
        c.set(Var::Stage, "post_convert");
        let t = Template::parse("x={{ vm_name }}", Syntax::VarsAndEnv)
            .expect("parses")
            .resolve_env(|_| Some("leak".to_owned()))
            .expect("resolves");
        assert_eq!(t.render(&c), "x={{ stage }} ${TOKEN} $(reboot)");
    }

    #[test]
    fn url_values_are_percent_encoded() {
        let t = Template::parse("http://h/vms/{{ vm_name }}?stage={{ stage }}", Syntax::Vars)
            .expect("parses");
        let mut c = ctx();
        c.set(Var::VmName, "a/b?c#d e");
        assert_eq!(
            t.render_url(&c),
            "http://h/vms/a%2Fb%3Fc%23d%20e?stage=pre_convert"
        );
    }

    #[test]
    fn json_strings_are_templated_at_any_depth() {
        let v = json!({"vm": "{{ vm_name }}", "n": 3, "list": ["{{ stage }}", {"deep": "{{ stage }}!"}], "{{ stage }}": true});
        let t = JsonTemplate::parse(&v, "body").expect("parses");
        assert_eq!(
            t.render(&ctx()),
            json!({"vm": "web 01", "n": 3, "list": ["pre_convert", {"deep": "pre_convert!"}], "{{ stage }}": true})
        );
        assert_eq!(t.source(), v);
    }

    #[test]
    fn json_errors_carry_their_path() {
        let v = json!({"a": ["ok", "{{ nope }}"]});
        let err = JsonTemplate::parse(&v, "hooks.x[0].body").unwrap_err();
        assert_eq!(err[0].0, "hooks.x[0].body.a[1]");
    }

    proptest! {
        /// Whatever a value holds, rendering puts it in verbatim, exactly once.
        #[test]
        fn rendering_inserts_values_verbatim(value in ".*", prefix in "[a-z /:-]*", suffix in "[a-z /:-]*") {
            let mut c = Context::default();
            c.set(Var::VmName, value.clone());
            let t = Template::parse(&format!("{prefix}{{{{ vm_name }}}}{suffix}"), Syntax::VarsAndEnv).expect("parses");
            prop_assert_eq!(t.render(&c), format!("{prefix}{value}{suffix}"));
        }

        /// Text without `{{` and `${` is always literal and renders as itself.
        #[test]
        fn plain_text_round_trips(text in "[^{$]*") {
            let t = Template::parse(&text, Syntax::VarsAndEnv).expect("parses");
            prop_assert!(t.is_literal());
            prop_assert_eq!(t.render(&Context::default()), text);
        }

        /// Parsing never panics, whatever the input.
        #[test]
        fn parse_never_panics(text in ".*") {
            let _ = Template::parse(&text, Syntax::VarsAndEnv);
        }

        /// Percent-encoded values decode back to themselves and hold no URL delimiters.
        #[test]
        fn percent_encoding_round_trips(value in ".*") {
            let enc = percent_encode(&value);
            prop_assert!(!enc.contains(['/', '?', '#', '&', '=', ' ']));
            let mut bytes = Vec::new();
            let b = enc.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ascii");
                    bytes.push(u8::from_str_radix(hex, 16).expect("hex"));
                    i += 3;
                } else {
                    bytes.push(b[i]);
                    i += 1;
                }
            }
            prop_assert_eq!(String::from_utf8(bytes).expect("utf8"), value);
        }
    }
}
