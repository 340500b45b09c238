//! Reading JSON and YAML documents and merging them.
//!
//! Every input file (manifest, config, profile, batch manifest) comes through [`load_document`],
//! which picks the parser from the file name (`.json` is JSON, `.yaml`/`.yml` YAML, anything else
//! JSON first and then YAML) and reports syntax errors with the file, line and column. Documents
//! are kept as `serde_json::Value` until they have been merged and validated: the merge rule
//! ([`deep_merge`]) is that maps recurse and every other value, lists and `null` included, replaces.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

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
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: the top level must be a mapping (an object), found {found}")]
    NotAMapping { path: PathBuf, found: &'static str },
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
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::NotFound {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let value = parse_document(path, &text)?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ConfigError::NotAMapping {
            path: path.to_owned(),
            found: kind_of(&other),
        }),
    }
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

fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

fn parse_yaml(text: &str) -> Result<Value, String> {
    // An empty YAML document is null; treat it as an empty mapping's absence, i.e. an error below.
    serde_norway::from_str::<Value>(text).map_err(|e| e.to_string())
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
