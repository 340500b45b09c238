//! `libvirt_integration`: define the converted VM on a libvirt host, put its disks into a
//! storage pool as volumes, and optionally snapshot it before its first boot, mark it to
//! autostart and start it (the guide's "Phase 6: Direct Libvirt Integration").
//!
//! The keys are the Python tool's (`libvirt/libvirt_manager.py`, `pool_manager.py`) plus `uri`,
//! the libvirt connection, which the command line's `--connect` overrides. Where upstream's
//! defaults would surprise an admin they are ours and documented: `vm_name` defaults to the
//! domain's name, not `"vm"` (upstream would name every VM's volumes `vm-<disk>`), and
//! `import_to_pool` defaults to `storage_mapping.default_pool`, which names the same pool.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::schema::{Field, Kind, f};
use crate::diag::Problems;

/// Where a VM goes when the manifest names no connection.
pub const DEFAULT_URI: &str = "qemu:///system";
/// libvirt's own default image directory, upstream's `pool_path` default.
pub const DEFAULT_POOL_PATH: &str = "/var/lib/libvirt/images";
/// Upstream's snapshot name.
pub const DEFAULT_SNAPSHOT_NAME: &str = "pre-first-boot";
/// Upstream's snapshot description.
pub const SNAPSHOT_DESCRIPTION: &str = "Snapshot created by hyper2kvm before first boot";

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibvirtIntegration {
    pub enabled: bool,
    /// The libvirt connection URI (`virsh -c`).
    pub uri: String,
    pub define_domain: bool,
    /// Replace a domain of the same name or UUID that belongs to another VM.
    pub overwrite_domain: bool,
    pub create_snapshot: bool,
    pub snapshot_name: String,
    /// `virsh autostart`: start the domain when the host boots.
    pub autostart: bool,
    /// Start the domain now, and prove it boots (serial console, the boot test's patterns).
    pub auto_start: bool,
    /// The storage pool the disks become volumes of (a directory pool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_to_pool: Option<String>,
    /// The pool's directory, used when the pool does not exist yet.
    pub pool_path: String,
    /// Volumes are named `<vm_name>-<disk id>.<format>`; the domain's name when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_name: Option<String>,
    /// Copy the converted disks into the pool (true) or move them there (false).
    pub copy_disks: bool,
    /// Replace volumes of the same names that this VM's domain does not already use.
    pub overwrite_volumes: bool,
}

impl Default for LibvirtIntegration {
    fn default() -> Self {
        Self {
            enabled: false,
            uri: DEFAULT_URI.to_owned(),
            define_domain: true,
            overwrite_domain: false,
            create_snapshot: false,
            snapshot_name: DEFAULT_SNAPSHOT_NAME.to_owned(),
            autostart: false,
            auto_start: false,
            import_to_pool: None,
            pool_path: DEFAULT_POOL_PATH.to_owned(),
            vm_name: None,
            copy_disks: true,
            overwrite_volumes: false,
        }
    }
}

/// The `libvirt_integration` section.
pub const LIBVIRT_INTEGRATION: &[Field] = &[
    f("enabled", Kind::Bool),
    f("uri", Kind::RequiredStr),
    f("define_domain", Kind::Bool),
    f("overwrite_domain", Kind::Bool),
    f("create_snapshot", Kind::Bool),
    f("snapshot_name", Kind::RequiredStr),
    f("autostart", Kind::Bool),
    f("auto_start", Kind::Bool),
    f("import_to_pool", Kind::Str),
    f("pool_path", Kind::RequiredStr),
    f("vm_name", Kind::Str),
    f("copy_disks", Kind::Bool),
    f("overwrite_volumes", Kind::Bool),
];

/// What the table cannot say: names libvirt and our volume files can take, an absolute pool
/// directory, and the steps that need a defined domain.
pub fn check(doc: &Map<String, Value>, problems: &mut Problems) {
    let Some(section) = doc.get("libvirt_integration").and_then(Value::as_object) else {
        return;
    };
    let text = |k: &str| section.get(k).and_then(Value::as_str);
    let flag = |k: &str| section.get(k).and_then(Value::as_bool);
    for key in ["import_to_pool", "vm_name", "snapshot_name"] {
        if let Some(name) = text(key)
            && let Err(why) = plain_name(name)
        {
            problems.push(
                &format!("libvirt_integration.{key}"),
                format!(
                    "libvirt_integration.{key} must be a plain name, {why} (got: '{}')",
                    crate::diag::excerpt(name)
                ),
            );
        }
    }
    if let Some(path) = text("pool_path")
        && !path.starts_with('/')
    {
        problems.push(
            "libvirt_integration.pool_path",
            format!(
                "libvirt_integration.pool_path must be an absolute directory on the libvirt \
                 host (got: '{}')",
                crate::diag::excerpt(path)
            ),
        );
    }
    let uefi = doc
        .get("vm")
        .and_then(|v| v.get("firmware"))
        .and_then(Value::as_str)
        == Some("uefi");
    if uefi && flag("create_snapshot") == Some(true) {
        // libvirt: "internal snapshots of a VM with pflash based firmware are not supported".
        problems.push(
            "libvirt_integration.create_snapshot",
            "libvirt_integration.create_snapshot is true but vm.firmware is uefi: libvirt takes \
             no internal snapshot of a VM with UEFI (pflash) firmware; turn create_snapshot off",
        );
    }
    if flag("define_domain") == Some(false) {
        for key in ["create_snapshot", "autostart", "auto_start"] {
            if flag(key) == Some(true) {
                problems.push(
                    &format!("libvirt_integration.{key}"),
                    format!(
                        "libvirt_integration.{key} needs a defined domain, but \
                         libvirt_integration.define_domain is false"
                    ),
                );
            }
        }
    }
}

/// Why `name` cannot name a pool, a volume prefix or a snapshot, if it cannot.
fn plain_name(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        Err("not empty")
    } else if name.contains('/') {
        Err("without '/'")
    } else if name.starts_with('.') {
        Err("not starting with '.'")
    } else if name.chars().any(char::is_control) {
        Err("without control characters")
    } else if name.len() > 200 {
        Err("at most 200 bytes")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems_of(section: Value) -> Vec<String> {
        let mut problems = Problems::default();
        let Value::Object(doc) = json!({ "libvirt_integration": section }) else {
            panic!("an object")
        };
        check(&doc, &mut problems);
        problems.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_are_upstreams_except_where_documented() {
        let s: LibvirtIntegration = serde_json::from_value(json!({})).expect("typed");
        assert!(!s.enabled && s.define_domain && s.copy_disks);
        assert!(!s.overwrite_domain && !s.overwrite_volumes && !s.auto_start && !s.autostart);
        assert_eq!(s.uri, "qemu:///system");
        assert_eq!(s.pool_path, "/var/lib/libvirt/images");
        assert_eq!(s.snapshot_name, "pre-first-boot");
        assert_eq!(s.vm_name, None);
        assert_eq!(s.import_to_pool, None);
    }

    #[test]
    fn names_paths_and_dependent_steps_are_checked() {
        assert!(problems_of(json!({"import_to_pool": "default", "vm_name": "web01"})).is_empty());
        assert_eq!(
            problems_of(json!({"import_to_pool": "../etc", "pool_path": "images"})),
            [
                "libvirt_integration.import_to_pool must be a plain name, without '/' (got: '../etc')",
                "libvirt_integration.pool_path must be an absolute directory on the libvirt host (got: 'images')",
            ]
        );
        assert_eq!(
            problems_of(json!({"define_domain": false, "auto_start": true})),
            [
                "libvirt_integration.auto_start needs a defined domain, but libvirt_integration.define_domain is false"
            ]
        );
    }
}
