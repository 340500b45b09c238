//! Reading JSON and YAML documents and merging them.
//!
//! Every input file (manifest, config, profile, batch manifest) comes through [`load_document`],
//! which picks the parser from the file name (`.json` is JSON, `.yaml`/`.yml` YAML, anything else
//! JSON first and then YAML) and reports syntax errors with the file, line and column. Documents
//! are kept as `serde_json::Value` until they have been merged and validated: the merge rule
//! ([`deep_merge`]) is that maps recurse and every other value, lists and `null` included, replaces.
//!
//! Every document is bounded before its cost is paid (see "Limits" in docs/manifest.md): the
//! file is read through [`read_bounded`] (at most [`MAX_DOCUMENT_BYTES`], refused before reading
//! when `fstat` already says more), and both parsers stop at [`MAX_DEPTH`] levels of nesting. YAML
//! is parsed by serde-saphyr with a budget checked while it parses: at most [`MAX_ALIASES`]
//! aliases, [`MAX_NODES`] nodes and [`MAX_SCALAR_BYTES`] bytes of scalars, aliased copies
//! included, so an alias bomb is refused after a few MiB of work, never after it has expanded.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The largest manifest, batch manifest, config file or profile read, in bytes (1 MiB; real ones
/// are a few KiB).
pub const MAX_DOCUMENT_BYTES: u64 = 1024 * 1024;
/// The deepest nesting of lists and mappings in a document (a manifest needs 5).
pub const MAX_DEPTH: usize = 64;
/// The most YAML aliases (`*name`) a document may use.
pub const MAX_ALIASES: usize = 1_000;
/// The most YAML anchors (`&name`) a document may define.
pub const MAX_ANCHORS: usize = 1_000;
/// The most YAML nodes (scalars, lists and mappings, aliased copies counted again) a document
/// may hold.
pub const MAX_NODES: usize = 200_000;
/// The most bytes of YAML scalar text, aliased copies counted again (4 MiB: four times the
/// largest document, so aliases can repeat a value but never blow it up).
pub const MAX_SCALAR_BYTES: usize = 4 * 1024 * 1024;
/// Parser messages longer than this are cut (they may quote a key or a value).
const MAX_MESSAGE_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: file not found")]
    NotFound { path: PathBuf },
    #[error("{path}: could not read the file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: the file is {} bytes; the limit is {limit} bytes ({} MiB)",
        if *.at_least { format!("more than {size}") } else { size.to_string() },
        limit / (1024 * 1024)
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        /// The size is what was read before stopping (a pipe), not the whole file's.
        at_least: bool,
        limit: u64,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: the top level must be a mapping (an object), found {found}")]
    NotAMapping { path: PathBuf, found: &'static str },
    /// A file of another kind than the option it was given to (a batch manifest given to
    /// `--manifest`), recognised before the strict parse would list its keys as unknown.
    #[error(
        "{} is {} ({evidence}), not {}: {}",
        path.display(),
        found.name(),
        expected.name(),
        found.advice(path)
    )]
    WrongKind {
        path: PathBuf,
        found: DocumentKind,
        expected: DocumentKind,
        /// What gave it away: `it has "vms"`, `it starts with <domain>`.
        evidence: String,
    },
}

/// The kinds of file hyper2kvm reads from the command line, as far as they can be told apart
/// by a glance: the keys only one kind has, or a domain's opening tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocumentKind {
    /// An Artifact Manifest v1 (`--manifest`).
    Manifest,
    /// A Batch Manifest v1 (`--batch-manifest`).
    BatchManifest,
    /// A `--config` file: tool options and manifest content.
    Config,
    /// A libvirt domain definition (`--libvirt-xml`).
    DomainXml,
}

/// Keys only a VM manifest has at its top level.
const MANIFEST_KEYS: &[&str] = &["manifest_version", "disks"];
/// Keys only a batch manifest has at its top level.
const BATCH_KEYS: &[&str] = &["batch_version", "vms", "batch_metadata", "shared_config"];

impl DocumentKind {
    pub fn name(self) -> &'static str {
        match self {
            DocumentKind::Manifest => "a VM manifest",
            DocumentKind::BatchManifest => "a batch manifest",
            DocumentKind::Config => "a configuration file",
            DocumentKind::DomainXml => "a libvirt domain XML",
        }
    }

    /// What to do with a file of this kind.
    fn advice(self, path: &Path) -> String {
        let shown = crate::diag::shell_word(&path.display().to_string());
        match self {
            DocumentKind::Manifest => format!("run hyper2kvm --manifest {shown}"),
            DocumentKind::BatchManifest => format!("run hyper2kvm --batch-manifest {shown}"),
            DocumentKind::Config => format!("pass it with --config {shown}"),
            DocumentKind::DomainXml => format!(
                "import it with hyper2kvm --libvirt-xml {shown} --output-dir DIR, which writes \
                 a VM manifest for it"
            ),
        }
    }
}

/// What a parsed document is, when its top-level keys say so unambiguously: keys of one kind
/// and none of the other. Returns the kind and the keys that told.
pub fn recognise(doc: &Map<String, Value>) -> Option<(DocumentKind, Vec<&'static str>)> {
    let has = |keys: &[&'static str]| -> Vec<&'static str> {
        keys.iter()
            .copied()
            .filter(|k| doc.contains_key(*k))
            .collect()
    };
    let (manifest, batch) = (has(MANIFEST_KEYS), has(BATCH_KEYS));
    match (manifest.is_empty(), batch.is_empty()) {
        (false, true) => Some((DocumentKind::Manifest, manifest)),
        (true, false) => Some((DocumentKind::BatchManifest, batch)),
        _ => None,
    }
}

/// Whether text is a libvirt domain definition: after an XML declaration, comments and a
/// doctype, its first element is `<domain`.
pub fn is_domain_xml(text: &str) -> bool {
    let mut rest = text.trim_start_matches('\u{feff}').trim_start();
    loop {
        let skipped = [("<?", "?>"), ("<!--", "-->"), ("<!DOCTYPE", ">")]
            .iter()
            .find(|(open, _)| rest.starts_with(open))
            .and_then(|(open, close)| {
                rest[open.len()..]
                    .find(close)
                    .map(|i| open.len() + i + close.len())
            });
        match skipped {
            Some(end) => rest = rest[end..].trim_start(),
            None => break,
        }
    }
    rest.strip_prefix("<domain")
        .and_then(|r| r.chars().next())
        .is_some_and(|c| c.is_whitespace() || c == '>' || c == '/')
}

/// `it has "vms"`, `it has "batch_version" and "vms"`.
fn has_keys(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    match quoted.split_last() {
        Some((last, [])) => format!("it has {last}"),
        Some((last, rest)) => format!("it has {} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The error for a file that is recognisably of another kind than `expected`, if it is.
fn wrong_kind(
    path: &Path,
    text: &str,
    doc: Option<&Map<String, Value>>,
    expected: DocumentKind,
) -> Option<ConfigError> {
    let (found, evidence) = if is_domain_xml(text) {
        (
            DocumentKind::DomainXml,
            "it starts with <domain>".to_owned(),
        )
    } else {
        let (kind, keys) = recognise(doc?)?;
        (kind, has_keys(&keys))
    };
    let fits = match expected {
        // A configuration file may hold a VM manifest's content.
        DocumentKind::Config => {
            found != DocumentKind::BatchManifest && found != DocumentKind::DomainXml
        }
        other => found == other,
    };
    (!fits).then(|| ConfigError::WrongKind {
        path: path.to_owned(),
        found,
        expected,
        evidence,
    })
}

/// Whether a file that did not parse as `expected` is a document of a kind hyper2kvm knows
/// (for a domain XML reader given a manifest).
pub fn recognise_file(path: &Path, text: &str, expected: DocumentKind) -> Option<ConfigError> {
    let doc = match parse_document(path, text) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    wrong_kind(path, text, doc.as_ref(), expected)
}

/// The syntax a document was read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    Json,
    Yaml,
}

impl fmt::Display for Syntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Syntax::Json => "JSON",
            Syntax::Yaml => "YAML",
        })
    }
}

/// Reads and parses a JSON or YAML file whose top level must be a mapping.
pub fn load_document(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    load(path, None)
}

/// [`load_document`] for a file given as `expected`: a file recognisably of another kind (see
/// [`recognise`] and [`is_domain_xml`]) is refused as such, naming the option it belongs to.
pub fn load_document_as(
    path: &Path,
    expected: DocumentKind,
) -> Result<Map<String, Value>, ConfigError> {
    load(path, Some(expected))
}

fn load(path: &Path, expected: Option<DocumentKind>) -> Result<Map<String, Value>, ConfigError> {
    let text = read_bounded(path, MAX_DOCUMENT_BYTES)?;
    let wrong = |doc: Option<&Map<String, Value>>| {
        expected.and_then(|kind| wrong_kind(path, &text, doc, kind))
    };
    // A domain XML is neither JSON nor YAML; say what it is rather than how it fails to parse.
    if let Some(e) = wrong(None) {
        return Err(e);
    }
    let value = parse_document(path, &text)?;
    match value {
        Value::Object(map) => match wrong(Some(&map)) {
            Some(e) => Err(e),
            None => Ok(map),
        },
        other => Err(ConfigError::NotAMapping {
            path: path.to_owned(),
            found: kind_of(&other),
        }),
    }
}

/// Reads a text file of at most `limit` bytes: refused before reading when `fstat` says it is
/// larger, and never more than `limit + 1` bytes read, so a pipe (`--config <(...)`) or a file
/// that grows is bounded too.
pub fn read_bounded(path: &Path, limit: u64) -> Result<String, ConfigError> {
    let read_err = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConfigError::NotFound {
                path: path.to_owned(),
            }
        } else {
            ConfigError::Read {
                path: path.to_owned(),
                source,
            }
        }
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if meta.is_file() && meta.len() > limit {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
            at_least: false,
            limit,
        });
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > limit {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            size: limit,
            at_least: true,
            limit,
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ))
    })
}

/// Parses text as the syntax its file name says; unknown extensions try JSON, then YAML.
pub fn parse_document(path: &Path, text: &str) -> Result<Value, ConfigError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let syntax_error = |syntax: Syntax, message: String| ConfigError::Syntax {
        path: path.to_owned(),
        message: format!("invalid {syntax}: {message}"),
    };
    match ext.as_deref() {
        Some("json") => parse_json(text).map_err(|m| syntax_error(Syntax::Json, m)),
        Some("yaml" | "yml") => parse_yaml(text).map_err(|m| syntax_error(Syntax::Yaml, m)),
        _ => parse_json(text).or_else(|json_err| {
            parse_yaml(text).map_err(|yaml_err| ConfigError::Syntax {
                path: path.to_owned(),
                message: format!("neither valid JSON ({json_err}) nor valid YAML ({yaml_err})"),
            })
        }),
    }
}

/// JSON, at most [`MAX_DEPTH`] levels deep (serde_json itself stops at 128, on its stack).
pub fn parse_json(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| cut_message(&e.to_string()))?;
    if depth_exceeds(&value, MAX_DEPTH) {
        return Err(format!(
            "nested more than {MAX_DEPTH} levels deep (the limit on lists and mappings)"
        ));
    }
    Ok(value)
}

/// YAML 1.2 (core schema: only `true`/`false` are booleans, `012` and `1_000` stay strings,
/// `<<` is an ordinary key), one document, no duplicate keys, within the budget above.
pub fn parse_yaml(text: &str) -> Result<Value, String> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    budget.max_aliases = MAX_ALIASES;
    budget.max_anchors = MAX_ANCHORS;
    budget.max_nodes = MAX_NODES;
    budget.max_events = 2 * MAX_NODES;
    budget.max_total_scalar_bytes = MAX_SCALAR_BYTES;
    budget.max_recorded_anchor_bytes = MAX_SCALAR_BYTES;
    budget.max_documents = 1;
    // The alias and byte budgets bound aliases already; many aliases of one anchor (a hook set
    // shared by every disk) are fine.
    budget.enforce_alias_anchor_ratio = false;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.with_snippet = false;
    options.crop_radius = 0;
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options.merge_keys = serde_saphyr::MergeKeyPolicy::AsOrdinary;
    options.ignore_binary_tag_for_string = true;
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| yaml_message(&e))
}

/// A serde-saphyr error in our words: a breached budget names our limit, everything else keeps
/// the parser's message (cut short) with its line and column.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let at = e
        .location()
        .map(|l| format!("line {} column {}: ", l.line(), l.column()))
        .unwrap_or_default();
    // Alias and snippet wrappers hold the error that was met.
    let mut inner = e;
    while let serde_saphyr::Error::WithSnippet { error, .. }
    | serde_saphyr::Error::AliasError { error, .. } = inner
    {
        inner = error;
    }
    let depth =
        || format!("nested more than {MAX_DEPTH} levels deep (the limit on lists and mappings)");
    let limit = match inner {
        // The scanner's own word for too many open flow collections (`[[[[…`).
        _ if inner.to_string().starts_with("recursion limit exceeded") => Some(depth()),
        serde_saphyr::Error::Budget { breach, .. } => match breach {
            B::Depth { .. } => Some(depth()),
            B::Aliases { .. } => Some(format!("more than {MAX_ALIASES} aliases (the limit)")),
            B::Anchors { .. } => Some(format!("more than {MAX_ANCHORS} anchors (the limit)")),
            B::Nodes { .. } | B::Events { .. } => Some(format!(
                "more than {MAX_NODES} values, aliased copies included (the limit)"
            )),
            B::ScalarBytes { .. } => Some(format!(
                "more than {MAX_SCALAR_BYTES} bytes of values, aliased copies included (the limit)"
            )),
            B::Documents { .. } => {
                Some("more than one YAML document (a file holds one)".to_owned())
            }
            _ => None,
        },
        _ => None,
    };
    match limit {
        Some(limit) => format!("{at}{limit}"),
        None => {
            let text = e.to_string();
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            // The location is said once, in front.
            let text = match text.rfind(" at line ") {
                Some(i) if !at.is_empty() => &text[..i],
                _ => text,
            };
            let text = if text.starts_with("line ") {
                text.to_owned()
            } else {
                format!("{at}{text}")
            };
            cut_message(&text)
        }
    }
}

/// A parser's message on one line, at most [`MAX_MESSAGE_CHARS`] characters of it.
fn cut_message(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::diag::excerpt_n(&one_line, MAX_MESSAGE_CHARS)
}

/// Whether `value` nests lists and mappings more than `limit` levels deep.
fn depth_exceeds(value: &Value, limit: usize) -> bool {
    let children: Box<dyn Iterator<Item = &Value>> = match value {
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(map) => Box::new(map.values()),
        _ => return false,
    };
    if limit == 0 {
        return true;
    }
    children.into_iter().any(|v| depth_exceeds(v, limit - 1))
}

/// Merges `over` into `base`: maps recurse, every other value replaces.
pub fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base_map), Value::Object(over_map)) => merge_maps(base_map, over_map),
        (base, over) => *base = over,
    }
}

/// [`deep_merge`] for two maps.
pub fn merge_maps(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match base.get_mut(&key) {
            Some(existing) => deep_merge(existing, value),
            None => {
                base.insert(key, value);
            }
        }
    }
}

/// A short name of a JSON value's type, for messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Resolves a path written in a file against that file's directory (absolute paths stay, `~/`
/// expands to `$HOME`).
pub fn resolve_relative(base_dir: &Path, written: &str) -> PathBuf {
    let expanded = match written.strip_prefix("~/") {
        Some(rest) => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(rest),
            None => PathBuf::from(written),
        },
        None => PathBuf::from(written),
    };
    if expanded.is_absolute() {
        normalize(&expanded)
    } else {
        normalize(&base_dir.join(expanded))
    }
}

/// Removes `.` and resolves `..` lexically, so reports show `/a/c`, not `/a/b/../c`.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The directory a file lives in, made absolute against the current directory. A file with no
/// real directory (a pipe such as `--config <(...)`, a `/dev/fd` or `/proc/*/fd` entry, a
/// character device) resolves against the current directory instead.
pub fn dir_of(file: &Path) -> PathBuf {
    let abs = absolute(file);
    let cwd = || std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    if has_no_real_directory(&abs) {
        return cwd();
    }
    abs.parent().map(Path::to_owned).unwrap_or_else(cwd)
}

fn has_no_real_directory(abs: &Path) -> bool {
    let parent = abs.parent();
    let fd_dir = parent == Some(Path::new("/dev/fd"))
        || parent.is_some_and(|p| {
            p.file_name() == Some(std::ffi::OsStr::new("fd"))
                && p.parent()
                    .and_then(Path::parent)
                    .is_some_and(|proc| proc == Path::new("/proc"))
        });
    let special = std::fs::metadata(abs).is_ok_and(|m| !m.is_file() && !m.is_dir());
    fd_dir || special
}

/// An absolute form of `path` without touching the filesystem beyond the current directory.
pub fn absolute(path: &Path) -> PathBuf {
    normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn domain_xml_is_told_by_its_first_element() {
        assert!(is_domain_xml("<domain type='kvm'>"));
        assert!(is_domain_xml(
            "\u{feff}<?xml version=\"1.0\"?>\n<!-- dumped -->\n<!DOCTYPE domain>\n  <domain>"
        ));
        assert!(is_domain_xml("<domain/>"));
        assert!(!is_domain_xml("<domainsnapshot>"));
        assert!(!is_domain_xml("<network>"));
        assert!(!is_domain_xml("{\"domain\": {}}"));
        assert!(!is_domain_xml("<!-- never closed <domain>"));
    }

    #[test]
    fn kinds_are_told_by_keys_only_one_kind_has() {
        let kind = |v: Value| recognise(&doc_of(v)).map(|(k, keys)| (k, keys.join(",")));
        assert_eq!(
            kind(json!({"vms": [], "batch_metadata": {}})),
            Some((DocumentKind::BatchManifest, "vms,batch_metadata".to_owned()))
        );
        assert_eq!(
            kind(json!({"disks": []})),
            Some((DocumentKind::Manifest, "disks".to_owned()))
        );
        assert_eq!(kind(json!({"manifest_version": "1.0", "vms": []})), None);
        assert_eq!(kind(json!({"output_dir": "/srv"})), None);
    }

    #[test]
    fn wrong_kind_says_what_it_is_and_what_to_run() {
        let batch = doc_of(json!({"vms": []}));
        let e = wrong_kind(
            Path::new("b.json"),
            "",
            Some(&batch),
            DocumentKind::Manifest,
        );
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some(
                "b.json is a batch manifest (it has \"vms\"), not a VM manifest: run hyper2kvm \
                 --batch-manifest b.json"
            )
        );
        // A config file may hold a VM manifest's content, but not a batch manifest.
        let vm = doc_of(json!({"manifest_version": "1.0"}));
        assert!(wrong_kind(Path::new("v.json"), "", Some(&vm), DocumentKind::Config).is_none());
        assert!(wrong_kind(Path::new("b.json"), "", Some(&batch), DocumentKind::Config).is_some());
        assert!(
            wrong_kind(
                Path::new("b.json"),
                "",
                Some(&batch),
                DocumentKind::BatchManifest
            )
            .is_none()
        );
    }

    fn doc_of(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn files_without_a_directory_resolve_against_the_current_one() {
        let cwd = std::env::current_dir().expect("cwd");
        for special in [
            "/dev/fd/63",
            "/proc/self/fd/5",
            "/proc/1234/fd/0",
            "/dev/stdin",
            "/dev/null",
        ] {
            assert_eq!(dir_of(Path::new(special)), cwd, "{special}");
        }
        assert_eq!(
            dir_of(Path::new("/etc/hyper2kvm/site.yaml")),
            Path::new("/etc/hyper2kvm")
        );
        assert_eq!(dir_of(Path::new("/proc/fd/x.yaml")), Path::new("/proc/fd"));
    }

    #[test]
    fn maps_recurse_lists_and_scalars_replace() {
        let mut base = json!({"a": {"x": 1, "y": [1, 2]}, "b": true, "c": 1});
        deep_merge(
            &mut base,
            json!({"a": {"y": [3], "z": "new"}, "b": null, "d": 4}),
        );
        assert_eq!(
            base,
            json!({"a": {"x": 1, "y": [3], "z": "new"}, "b": null, "c": 1, "d": 4})
        );
    }

    #[test]
    fn json_syntax_error_has_line_and_column() {
        let err = parse_document(Path::new("vm.json"), "{\n  \"a\": ,\n}").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("vm.json: invalid JSON:"), "{text}");
        assert!(text.contains("line 2 column"), "{text}");
    }

    #[test]
    fn yaml_syntax_error_has_line_and_column() {
        let err = parse_document(Path::new("vm.yaml"), "a: [1, 2\nb: 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("vm.yaml: invalid YAML:"), "{text}");
        assert!(text.contains("line"), "{text}");
    }

    #[test]
    fn unknown_extension_accepts_yaml() {
        let v = parse_document(Path::new("vm.conf"), "a: 1\n").expect("yaml");
        assert_eq!(v, json!({"a": 1}));
    }

    fn yaml_err(text: &str) -> String {
        parse_document(Path::new("vm.yaml"), text)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn yaml_keeps_the_core_schema() {
        let v = parse_document(
            Path::new("vm.yaml"),
            "a: yes\nb: 012\nc: 1_000\nd: true\ne: 0x10\nf: ~\n<<: {g: 1}\n",
        )
        .expect("yaml");
        assert_eq!(
            v,
            json!({"a": "yes", "b": "012", "c": "1_000", "d": true, "e": 16, "f": null,
                   "<<": {"g": 1}})
        );
    }

    #[test]
    fn yaml_refuses_duplicate_keys_and_second_documents() {
        let e = yaml_err("a: 1\na: 2\n");
        assert!(
            e.contains("line 2 column 1") && e.contains("duplicate"),
            "{e}"
        );
        let e = yaml_err("a: 1\n---\nb: 2\n");
        assert_eq!(
            e,
            "vm.yaml: invalid YAML: line 2 column 1: more than one YAML document (a file holds one)"
        );
    }

    #[test]
    fn deep_yaml_flow_nesting_is_refused_at_the_limit() {
        let ok = format!("a: {}{}\n", "[".repeat(63), "]".repeat(63));
        parse_document(Path::new("vm.yaml"), &ok).expect("63 levels under the top mapping");
        let deep = format!("a: {}{}\n", "[".repeat(40_000), "]".repeat(40_000));
        let e = yaml_err(&deep);
        assert_eq!(
            e,
            "vm.yaml: invalid YAML: line 1 column 68: nested more than 64 levels deep (the \
             limit on lists and mappings)"
        );
        let deep_maps = format!("a: {}1{}\n", "{a: ".repeat(20_000), "}".repeat(20_000));
        assert!(yaml_err(&deep_maps).contains("nested more than 64 levels"));
    }

    #[test]
    fn deep_json_is_refused_and_so_is_its_retry_as_yaml() {
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(65), "]".repeat(65));
        let e = parse_document(Path::new("vm.json"), &deep)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("nested more than 64 levels deep"), "{e}");
        let deeper = format!("{{\"a\": {}{}}}", "[".repeat(40_000), "]".repeat(40_000));
        let e = parse_document(Path::new("vm.conf"), &deeper)
            .expect_err("refused")
            .to_string();
        assert!(
            e.starts_with("vm.conf: neither valid JSON (recursion limit exceeded")
                && e.ends_with(
                    "nested more than 64 levels deep (the limit on lists and mappings))"
                ),
            "{e}"
        );
    }

    #[test]
    fn alias_bombs_are_refused_by_the_budget() {
        let long = "x".repeat(1000);
        let mut flat = format!("s: &s \"{long}\"\n");
        for i in 0..300 {
            flat.push_str(&format!("k{i}: [{}]\n", vec!["*s"; 50].join(", ")));
        }
        let e = yaml_err(&flat);
        assert!(e.contains("more than 1000 aliases (the limit)"), "{e}");
        let mut nested = format!("l0: &l0 \"{long}\"\n");
        for k in 1..10 {
            let refs = vec![format!("*l{}", k - 1); 10].join(", ");
            nested.push_str(&format!("l{k}: &l{k} [{refs}]\n"));
        }
        let e = yaml_err(&nested);
        assert!(
            e.contains("bytes of values, aliased copies included (the limit)"),
            "{e}"
        );
    }

    #[test]
    fn parser_messages_are_cut_short() {
        let key = "k".repeat(900);
        let e = yaml_err(&format!("{key}: 1\n{key}: 2\n"));
        assert!(e.len() < 300, "{e}");
        assert!(e.contains("more bytes)"), "{e}");
    }

    #[test]
    fn files_over_the_limit_are_refused_before_parsing_and_pipes_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, "a: 1\n".repeat(300_000)).expect("write");
        let e = load_document(&big).expect_err("refused").to_string();
        assert_eq!(
            e,
            format!(
                "{}: the file is 1500000 bytes; the limit is 1048576 bytes (1 MiB)",
                big.display()
            )
        );
        let fifo = dir.path().join("pipe.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let writer_path = fifo.clone();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(&writer_path)
                .expect("open fifo");
            // The reader stops after the limit and closes: the rest meets a broken pipe.
            let chunk = "a: 1\n".repeat(1000);
            for _ in 0..1000 {
                if w.write_all(chunk.as_bytes()).is_err() {
                    break;
                }
            }
        });
        let e = load_document(&fifo).expect_err("refused").to_string();
        writer.join().expect("writer");
        assert_eq!(
            e,
            format!(
                "{}: the file is more than 1048576 bytes; the limit is 1048576 bytes (1 MiB)",
                fifo.display()
            )
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        assert_eq!(
            resolve_relative(Path::new("/etc/h2k"), "disks/a.vmdk"),
            PathBuf::from("/etc/h2k/disks/a.vmdk")
        );
        assert_eq!(
            resolve_relative(Path::new("/etc/h2k"), "/abs/a.vmdk"),
            PathBuf::from("/abs/a.vmdk")
        );
        assert_eq!(
            resolve_relative(Path::new("/srv/vms/web"), "../converted/./web/d0.qcow2"),
            PathBuf::from("/srv/vms/converted/web/d0.qcow2")
        );
    }
}
