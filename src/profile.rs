//! Migration profiles: named bundles of pipeline settings that a manifest picks with `profile:`.
//!
//! Seven profiles are built in (`profiles/*.yaml`, embedded in the binary). A custom directory
//! (`custom_profile_path`, alias `profiles_directory`) is searched first, for the profile and for
//! every parent it `extends`, so a custom profile may extend a built-in or another custom one.
//! Resolution walks the whole `extends` chain before merging and reports a cycle with the full
//! chain (`a -> b -> a`), an unknown parent with the profile that named it, and an unknown
//! profile with the nearest name and the list of what exists.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::config::{self, ConfigError};
use crate::diag::suggest;

/// The built-in profiles, in the order they are listed to users.
pub const BUILTIN: [(&str, &str); 7] = [
    ("production", include_str!("../profiles/production.yaml")),
    ("testing", include_str!("../profiles/testing.yaml")),
    ("minimal", include_str!("../profiles/minimal.yaml")),
    ("fast", include_str!("../profiles/fast.yaml")),
    ("windows", include_str!("../profiles/windows.yaml")),
    ("archive", include_str!("../profiles/archive.yaml")),
    ("debug", include_str!("../profiles/debug.yaml")),
];

/// Top-level keys a profile may set: the per-VM settings, never the VM's identity or disks.
pub const PROFILE_KEYS: [&str; 9] = [
    "description",
    "extends",
    "pipeline",
    "output",
    "options",
    "hooks",
    "network_mapping",
    "storage_mapping",
    "libvirt_integration",
];

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown profile '{name}'{suggestion}; available profiles: {available}")]
    Unknown {
        name: String,
        suggestion: String,
        available: String,
    },
    #[error(
        "profile '{child}' extends '{parent}', which does not exist{suggestion}; available profiles: {available}"
    )]
    UnknownParent {
        child: String,
        parent: String,
        suggestion: String,
        available: String,
    },
    #[error("profile inheritance cycle: {}", chain.join(" -> "))]
    Cycle { chain: Vec<String> },
    #[error("profile '{name}' ({origin}): {message}")]
    Invalid {
        name: String,
        origin: String,
        message: String,
    },
    #[error(transparent)]
    File(#[from] ConfigError),
    #[error("custom profile directory {path} does not exist or is not a directory")]
    BadDirectory { path: PathBuf },
}

/// A profile's own settings, as read.
type Settings = Map<String, Value>;

/// Where a profile was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Builtin,
    Custom(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in"),
            Origin::Custom(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A fully resolved profile: its settings with every parent merged under it.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub name: String,
    /// The chain from this profile up to its root ancestor.
    pub chain: Vec<String>,
    pub settings: Map<String, Value>,
}

/// Looks profiles up by name: the custom directory first, then the built-ins.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    custom_dir: Option<PathBuf>,
}

impl Catalog {
    pub fn new(custom_dir: Option<PathBuf>) -> Result<Self, ProfileError> {
        if let Some(dir) = &custom_dir
            && !dir.is_dir()
        {
            return Err(ProfileError::BadDirectory { path: dir.clone() });
        }
        Ok(Self { custom_dir })
    }

    /// Every profile name that exists, built-ins first, then custom ones not shadowing a built-in.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN.iter().map(|(n, _)| (*n).to_owned()).collect();
        let mut custom = self.custom_names();
        custom.retain(|n| !names.contains(n));
        custom.sort();
        names.extend(custom);
        names
    }

    fn custom_names(&self) -> Vec<String> {
        let Some(dir) = &self.custom_dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let path = e.path();
                let ext = path.extension()?.to_str()?;
                matches!(ext, "yaml" | "yml" | "json")
                    .then(|| path.file_stem()?.to_str().map(str::to_owned))?
            })
            .collect()
    }

    fn custom_file(&self, name: &str) -> Option<PathBuf> {
        let dir = self.custom_dir.as_ref()?;
        // A profile is a file *in* the custom directory: a name with a separator (`../x`,
        // `/etc/x`) would read a file outside it, so it names no custom profile.
        if name.is_empty() || name.contains(['/', '\\', '\0']) {
            return None;
        }
        ["yaml", "yml", "json"]
            .iter()
            .map(|ext| dir.join(format!("{name}.{ext}")))
            .find(|p| p.is_file())
    }

    /// Loads one profile's own settings (without its parents).
    fn load_one(&self, name: &str) -> Result<Option<(Settings, Origin)>, ProfileError> {
        if let Some(path) = self.custom_file(name) {
            let doc = config::load_document(&path)?;
            return Ok(Some((doc, Origin::Custom(path))));
        }
        let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name) else {
            return Ok(None);
        };
        let value = config::parse_document(Path::new(&format!("{name}.yaml")), text)
            .expect("built-in profiles are valid YAML (checked by tests)");
        match value {
            Value::Object(map) => Ok(Some((map, Origin::Builtin))),
            _ => unreachable!("built-in profiles are mappings (checked by tests)"),
        }
    }

    /// Resolves `name` and all its ancestors into one settings map (child wins, `extends` dropped).
    pub fn resolve(&self, name: &str) -> Result<Resolved, ProfileError> {
        let mut chain: Vec<String> = Vec::new();
        let mut layers: Vec<Map<String, Value>> = Vec::new();
        let mut current = name.to_owned();
        loop {
            if let Some(pos) = chain.iter().position(|n| *n == current) {
                let mut cycle = chain[pos..].to_vec();
                cycle.push(current);
                return Err(ProfileError::Cycle { chain: cycle });
            }
            let Some((mut settings, origin)) = self.load_one(&current)? else {
                let names = self.names();
                let suggestion = suggest(&current, &names)
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                let available = names.join(", ");
                return Err(match chain.last() {
                    None => ProfileError::Unknown {
                        name: current,
                        suggestion,
                        available,
                    },
                    Some(child) => ProfileError::UnknownParent {
                        child: child.clone(),
                        parent: current,
                        suggestion,
                        available,
                    },
                });
            };
            check_keys(&current, &origin, &settings)?;
            let parent = match settings.remove("extends") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) => Some(p),
                Some(other) => {
                    return Err(ProfileError::Invalid {
                        name: current,
                        origin: origin.to_string(),
                        message: format!(
                            "extends must be a profile name (a string), found {}",
                            config::kind_of(&other)
                        ),
                    });
                }
            };
            chain.push(current);
            layers.push(settings);
            match parent {
                Some(p) => current = p,
                None => break,
            }
        }
        let mut merged = Map::new();
        for layer in layers.into_iter().rev() {
            config::merge_maps(&mut merged, layer);
        }
        Ok(Resolved {
            name: name.to_owned(),
            chain,
            settings: merged,
        })
    }
}

fn check_keys(
    name: &str,
    origin: &Origin,
    settings: &Map<String, Value>,
) -> Result<(), ProfileError> {
    let unknown: Vec<String> = settings
        .keys()
        .filter(|k| !PROFILE_KEYS.contains(&k.as_str()))
        .map(|k| match suggest(k, &PROFILE_KEYS) {
            Some(s) => format!("'{k}' (did you mean '{s}'?)"),
            None => format!("'{k}'"),
        })
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ProfileError::Invalid {
        name: name.to_owned(),
        origin: origin.to_string(),
        message: format!(
            "unknown top-level key {}; a profile may set: {}",
            unknown.join(", "),
            PROFILE_KEYS.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn custom(files: &[(&str, &str)]) -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let catalog = Catalog::new(Some(dir.path().to_owned())).expect("catalog");
        (dir, catalog)
    }

    #[test]
    fn every_builtin_resolves() {
        let catalog = Catalog::default();
        for (name, _) in BUILTIN {
            let r = catalog.resolve(name).expect(name);
            assert!(!r.settings.contains_key("extends"));
            assert!(r.settings.contains_key("pipeline"), "{name}");
        }
    }

    #[test]
    fn child_wins_over_parent() {
        let r = Catalog::default().resolve("testing").expect("testing");
        assert_eq!(r.chain, ["testing", "production"]);
        assert_eq!(r.settings["pipeline"]["convert"]["compress"], json!(false));
        assert_eq!(
            r.settings["pipeline"]["convert"]["compress_level"],
            json!(6),
            "the parent's values stay"
        );
        assert_eq!(r.settings["output"]["format"], json!("raw"));
    }

    #[test]
    fn custom_profile_extends_custom_then_builtin() {
        let (_d, catalog) = custom(&[
            ("site.yaml", "extends: fast\noutput:\n  format: raw\n"),
            (
                "team.yaml",
                "extends: site\npipeline:\n  convert:\n    compress: true\n",
            ),
        ]);
        let r = catalog.resolve("team").expect("team");
        assert_eq!(r.chain, ["team", "site", "fast"]);
        assert_eq!(r.settings["output"]["format"], json!("raw"));
        assert_eq!(r.settings["pipeline"]["convert"]["compress"], json!(true));
        assert_eq!(r.settings["pipeline"]["fix"]["update_grub"], json!(false));
    }

    #[test]
    fn a_name_with_a_separator_reads_nothing_outside_the_directory() {
        let (d, _) = custom(&[]);
        std::fs::create_dir(d.path().join("inner")).expect("mkdir");
        std::fs::write(d.path().join("outside.yaml"), "output:\n  format: raw\n").expect("write");
        let catalog = Catalog::new(Some(d.path().join("inner"))).expect("catalog");
        let absolute = d.path().join("outside").display().to_string();
        for name in ["../outside", absolute.as_str()] {
            let err = catalog.resolve(name).expect_err(name);
            assert!(
                matches!(err, ProfileError::Unknown { .. }),
                "{name}: {err:?}"
            );
        }
    }

    #[test]
    fn custom_profile_shadows_builtin() {
        let (_d, catalog) = custom(&[("production.yaml", "output:\n  format: vdi\n")]);
        let r = catalog.resolve("production").expect("production");
        assert_eq!(r.settings["output"]["format"], json!("vdi"));
        assert!(!r.settings.contains_key("pipeline"));
    }

    #[test]
    fn cycle_reports_the_whole_chain() {
        let (_d, catalog) = custom(&[
            ("a.yaml", "extends: b\n"),
            ("b.yaml", "extends: c\n"),
            ("c.yaml", "extends: a\n"),
        ]);
        let err = catalog.resolve("a").unwrap_err();
        assert_eq!(
            err.to_string(),
            "profile inheritance cycle: a -> b -> c -> a"
        );
    }

    #[test]
    fn self_reference_is_a_cycle() {
        let (_d, catalog) = custom(&[("a.yaml", "extends: a\n")]);
        let err = catalog.resolve("a").unwrap_err();
        assert_eq!(err.to_string(), "profile inheritance cycle: a -> a");
    }

    #[test]
    fn unknown_profile_suggests_and_lists() {
        let err = Catalog::default().resolve("prodution").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown profile 'prodution' (did you mean 'production'?); available profiles: \
             production, testing, minimal, fast, windows, archive, debug"
        );
    }

    #[test]
    fn unknown_parent_names_the_child() {
        let (_d, catalog) = custom(&[("site.yaml", "extends: nope\n")]);
        let err = catalog.resolve("site").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("profile 'site' extends 'nope', which does not exist"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_in_profile_is_an_error() {
        let (_d, catalog) = custom(&[("site.yaml", "pipline:\n  fix: {}\n")]);
        let err = catalog.resolve("site").unwrap_err().to_string();
        assert!(
            err.contains("'pipline' (did you mean 'pipeline'?)"),
            "{err}"
        );
    }
}
