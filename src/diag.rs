//! Diagnostics: what is wrong with an input, said once and the same way everywhere.
//!
//! Validation passes collect [`Problem`]s (a field path and a message) into [`Problems`] and
//! report them all at once, rendered by [`render_problems`]. Unknown names get the nearest valid
//! one from [`suggest`] ("did you mean"), and unknown keys one message shape
//! ([`Problems::unknown_keys`]). [`error_chain`] puts an error and its causes on one line for
//! reports. This module sits at the bottom: it knows no manifest, profile or stage.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// A word as a POSIX shell reads it back, for a command line shown to the user: words made
/// only of safe characters stay bare, anything else is single-quoted.
pub fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// One thing wrong with a document, at a field path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.message.contains(&self.path) {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Problems collected by a validation pass.
#[derive(Clone, Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Adds a problem. Checks quote values through [`excerpt`]; as a last guard, a path longer
    /// than [`MAX_PATH_CHARS`] or a message longer than [`MAX_MESSAGE_CHARS`] is cut here, so a
    /// huge key or value can never make a report huge.
    pub fn push(&mut self, path: &str, message: impl Into<String>) {
        let message = message.into();
        self.0.push(Problem {
            path: excerpt_n(path, MAX_PATH_CHARS),
            message: excerpt_n(&message, MAX_MESSAGE_CHARS),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Reports every key of `map` (at `path`) that is not in `known`.
    pub fn unknown_keys(&mut self, path: &str, map: &Map<String, Value>, known: &[&str]) {
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                self.push(&join(path, key), unknown_key(key, known, None));
            }
        }
    }
}

/// `path.key`, or `key` at the top level.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// "unknown key 'x'" with the nearest known key, or the list of known keys when none is near.
/// `owner` names what the key was given to ("a script hook").
pub fn unknown_key(key: &str, known: &[&str], owner: Option<&str>) -> String {
    let key = excerpt(key);
    let key = key.as_str();
    let of = owner.map(|o| format!(" for {o}")).unwrap_or_default();
    let hint = match suggest(key, known) {
        Some(s) => format!(" (did you mean '{s}'?)"),
        None => match owner {
            Some(o) => format!("; {o} takes: {}", known.join(", ")),
            None => format!("; expected one of: {}", known.join(", ")),
        },
    };
    format!("unknown key '{key}'{of}{hint}")
}

/// " (did you mean 'x'?)" when a candidate is close to `word`, else nothing.
pub fn did_you_mean<S: AsRef<str>>(word: &str, candidates: &[S]) -> String {
    suggest(word, candidates)
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default()
}

/// The longest word [`suggest`] looks at: no name is this long, so a longer word is no typo of
/// one, and comparing it would cost time quadratic in its length.
pub const MAX_SUGGEST_CHARS: usize = 64;

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub fn suggest<S: AsRef<str>>(word: &str, candidates: &[S]) -> Option<String> {
    if word.chars().nth(MAX_SUGGEST_CHARS).is_some() {
        return None;
    }
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c.as_ref()), c.as_ref()))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_owned())
}

/// The most problems [`render_problems`] lists; the rest are counted.
pub const MAX_PROBLEMS_SHOWN: usize = 50;
/// The longest field path a problem keeps, in characters.
pub const MAX_PATH_CHARS: usize = 200;
/// The longest message a problem keeps, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1000;
/// How much of a value [`excerpt`] quotes, in characters.
pub const EXCERPT_CHARS: usize = 60;

/// Renders problems as an indented list, one per line: the first [`MAX_PROBLEMS_SHOWN`], then
/// "… and N more problems".
pub fn render_problems(problems: &[Problem]) -> String {
    let mut lines: Vec<String> = problems
        .iter()
        .take(MAX_PROBLEMS_SHOWN)
        .map(|p| format!("  - {p}"))
        .collect();
    let rest = problems.len().saturating_sub(MAX_PROBLEMS_SHOWN);
    if rest > 0 {
        lines.push(format!("  … and {rest} more problem{}", plural(rest)));
    }
    lines.join("\n")
}

/// A value as messages quote it: whole when short, else its first [`EXCERPT_CHARS`] characters
/// and "… (N more bytes)".
pub fn excerpt(value: &str) -> String {
    excerpt_n(value, EXCERPT_CHARS)
}

/// [`excerpt`] with another length, in characters.
pub fn excerpt_n(value: &str, chars: usize) -> String {
    match value.char_indices().nth(chars) {
        None => value.to_owned(),
        Some((cut, _)) => format!("{}… ({} more bytes)", &value[..cut], value.len() - cut),
    }
}

/// A JSON value as messages quote it, cut like [`excerpt`].
pub fn excerpt_value(value: &Value) -> String {
    excerpt(&value.to_string())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// "N problem" or "N problems".
pub fn count_problems(n: usize) -> String {
    format!("{n} problem{}", plural(n))
}

/// The error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// An error's text followed by each of its causes, one `caused by:` line each. A transparent
/// variant prints its inner error's text, and its `source()` is that inner error's source:
/// walking from the top lists every cause once.
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str("\n  caused by: ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_name_the_nearest_or_list_the_rest() {
        let mut p = Problems::default();
        let map: Map<String, Value> =
            serde_json::from_str(r#"{"lable": 1, "zzz": 2, "id": 3}"#).expect("json");
        p.unknown_keys("disks[0]", &map, &["id", "label"]);
        let shown: Vec<String> = p.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "disks[0].lable: unknown key 'lable' (did you mean 'label'?)",
                "disks[0].zzz: unknown key 'zzz'; expected one of: id, label",
            ]
        );
        assert_eq!(
            unknown_key("zzz", &["path", "args"], Some("a script hook")),
            "unknown key 'zzz' for a script hook; a script hook takes: path, args"
        );
    }

    #[test]
    fn excerpts_cut_long_values_and_say_how_much_is_left() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(100);
        assert_eq!(
            excerpt(&long),
            format!("{}… (80 more bytes)", "é".repeat(60))
        );
        assert_eq!(excerpt(&"x".repeat(60)), "x".repeat(60));
        assert_eq!(excerpt_value(&Value::String("ab".into())), "\"ab\"");
    }

    #[test]
    fn at_most_fifty_problems_are_listed_and_the_rest_counted() {
        let mut p = Problems::default();
        for i in 0..1000 {
            p.push(&format!("disks[{i}]"), "bad");
        }
        let text = render_problems(&p.0);
        assert_eq!(text.lines().count(), 51);
        assert!(text.starts_with("  - disks[0]: bad\n"), "{text}");
        assert!(text.contains("  - disks[49]: bad\n"), "{text}");
        assert!(!text.contains("disks[50]"), "{text}");
        assert!(text.ends_with("  … and 950 more problems"), "{text}");
        p.0.truncate(51);
        assert!(render_problems(&p.0).ends_with("  … and 1 more problem"));
        p.0.truncate(50);
        assert!(!render_problems(&p.0).contains("more"));
    }

    #[test]
    fn no_suggestion_for_words_longer_than_any_name() {
        assert_eq!(suggest("qcow", &["qcow2", "raw"]), Some("qcow2".to_owned()));
        assert_eq!(
            suggest(&"q".repeat(MAX_SUGGEST_CHARS + 1), &["qcow2"]),
            None
        );
    }

    #[test]
    fn a_chain_lists_every_cause() {
        let inner = std::io::Error::other("Is a directory");
        #[derive(Debug, thiserror::Error)]
        #[error("could not read the file")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(
            error_chain(&Outer(inner)),
            "could not read the file: Is a directory"
        );
    }
}
