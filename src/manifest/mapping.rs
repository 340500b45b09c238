//! `network_mapping` and `storage_mapping`: where a migrated VM's NICs and disks land on the
//! KVM host, as the manifest says it.
//!
//! `network_mapping` connects each source network (a vSphere port group, a libvirt network or
//! bridge) to a host bridge or libvirt network and sets the MAC policy; `storage_mapping` places
//! each disk's output in a directory, overrides the output format and asks for preallocation.
//! Validation runs on the raw document first ([`check_network_mapping`],
//! [`check_storage_mapping`], [`check_disk_mapping_ids`]), so deserialising these types never
//! fails on user input. Applying them (connections, generated MACs) is the mapping service's job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::nics::MacAddr;
use super::output::OutputFormat;
use super::schema::{self, Kind};
use crate::config::kind_of;
use crate::diag::{Problems, join};
use crate::spelling::spelled_enum;

spelled_enum! {
    /// What happens to each NIC's MAC: kept, made anew, or taken from `mac_address_overrides`.
    #[derive(Default)]
    pub enum MacPolicy {
        #[default]
        Preserve = "preserve",
        Regenerate = "regenerate",
        Custom = "custom",
    }
}

/// Where a source network goes: a bare name is a host bridge (upstream's form); `{bridge: X}` or
/// `{network: X}` says which explicitly.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum NetworkTarget {
    Bridge(String),
    Explicit(ExplicitTarget),
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExplicitTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkMapping {
    pub source_networks: BTreeMap<String, NetworkTarget>,
    pub default_bridge: Option<String>,
    pub default_network: Option<String>,
    pub mac_address_policy: MacPolicy,
    pub mac_address_overrides: BTreeMap<String, String>,
    /// An unmapped source network is an error instead of a warning.
    pub strict: bool,
}

spelled_enum! {
    /// qemu-img's `preallocation` modes (`off` is the same as not asking).
    pub enum Preallocation {
        Off = "off",
        Metadata = "metadata",
        Falloc = "falloc",
        Full = "full",
    }
}

/// `preallocate: true|false` (upstream's form) or a qemu-img mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PreallocateSetting {
    Enabled(bool),
    Mode(Preallocation),
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageMapping {
    pub default_pool: Option<String>,
    /// Disk id → the directory its output is written to.
    pub disk_mappings: BTreeMap<String, String>,
    pub format_override: Option<OutputFormat>,
    pub preallocate: Option<PreallocateSetting>,
}

impl StorageMapping {
    /// The qemu-img mode to pass, if any. `true` means `falloc`: the space is reserved up front
    /// (what an admin asking for preallocation wants) without the time `full` spends writing zeros.
    pub fn preallocation(&self) -> Option<Preallocation> {
        match self.preallocate? {
            PreallocateSetting::Enabled(true) => Some(Preallocation::Falloc),
            PreallocateSetting::Enabled(false) | PreallocateSetting::Mode(Preallocation::Off) => {
                None
            }
            PreallocateSetting::Mode(mode) => Some(mode),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation of the raw sections (called through the top-level table).

pub(super) const NETWORK_KEYS: &[&str] = &[
    "source_networks",
    "default_bridge",
    "default_network",
    "mac_address_policy",
    "mac_address_overrides",
    "strict",
];
pub(super) const STORAGE_KEYS: &[&str] = &[
    "default_pool",
    "disk_mappings",
    "format_override",
    "preallocate",
];

fn non_empty_name(path: &str, value: &Value, what: &str, problems: &mut Problems) {
    match value.as_str() {
        Some(s) if !s.trim().is_empty() => {}
        _ => problems.push(
            path,
            format!(
                "{path} must be a non-empty {what} (got {}: {})",
                kind_of(value),
                crate::diag::excerpt_value(value)
            ),
        ),
    }
}

/// `network_mapping`: every problem, each with its field path.
pub fn check_network_mapping(path: &str, value: &Value, problems: &mut Problems) {
    let Some(map) = value.as_object() else {
        problems.push(
            path,
            format!(
                "{path} must be a mapping (got {}: {})",
                kind_of(value),
                crate::diag::excerpt_value(value)
            ),
        );
        return;
    };
    problems.unknown_keys(path, map, NETWORK_KEYS);
    if let Some(nets) = map.get("source_networks") {
        let here = join(path, "source_networks");
        match nets.as_object() {
            Some(nets) => {
                for (name, target) in nets {
                    check_target(&join(&here, name), target, problems);
                }
            }
            None => problems.push(
                &here,
                format!(
                    "{here} must be a mapping of source network name to bridge (got {}: {})",
                    kind_of(nets),
                    crate::diag::excerpt_value(nets)
                ),
            ),
        }
    }
    for key in ["default_bridge", "default_network"] {
        if let Some(v) = map.get(key).filter(|v| !v.is_null()) {
            let what = if key == "default_bridge" {
                "bridge name"
            } else {
                "libvirt network name"
            };
            non_empty_name(&join(path, key), v, what, problems);
        }
    }
    let set = |k: &str| map.get(k).is_some_and(|v| !v.is_null());
    if set("default_bridge") && set("default_network") {
        problems.push(
            &join(path, "default_network"),
            "set default_bridge or default_network, not both (unmapped networks can go to only \
             one place)",
        );
    }
    let policy = map.get("mac_address_policy");
    if let Some(p) = policy {
        schema::check_value(
            &join(path, "mac_address_policy"),
            p,
            &Kind::Enum(MacPolicy::NAMES),
            problems,
        );
    }
    if let Some(overrides) = map.get("mac_address_overrides") {
        let here = join(path, "mac_address_overrides");
        match overrides.as_object() {
            // Overrides under another policy are not applied (as in the Python tool, which
            // keeps or drops the source MAC by the policy alone): the plan notes it.
            Some(o) => check_overrides(&here, o, problems),
            None => problems.push(
                &here,
                format!(
                    "{here} must be a mapping of source MAC to new MAC (got {}: {})",
                    kind_of(overrides),
                    crate::diag::excerpt_value(overrides)
                ),
            ),
        }
    }
    if let Some(s) = map.get("strict") {
        schema::check_value(&join(path, "strict"), s, &Kind::Bool, problems);
    }
}

fn check_target(path: &str, target: &Value, problems: &mut Problems) {
    let expected = "a bridge name, {bridge: NAME} or {network: NAME}";
    match target {
        Value::String(s) if !s.trim().is_empty() => {}
        Value::Object(o) => {
            let names: Vec<&String> = o.keys().collect();
            let ok = o.len() == 1
                && matches!(names[0].as_str(), "bridge" | "network")
                && o.values()
                    .all(|v| v.as_str().is_some_and(|s| !s.trim().is_empty()));
            if !ok {
                problems.push(
                    path,
                    format!(
                        "{path} must be {expected} (got {})",
                        crate::diag::excerpt_value(target)
                    ),
                );
            }
        }
        _ => problems.push(
            path,
            format!(
                "{path} must be {expected} (got {})",
                crate::diag::excerpt_value(target)
            ),
        ),
    }
}

fn check_overrides(path: &str, overrides: &Map<String, Value>, problems: &mut Problems) {
    let mut sources = BTreeMap::new();
    let mut targets: BTreeMap<MacAddr, &str> = BTreeMap::new();
    for (from, to) in overrides {
        let here = join(path, from);
        match MacAddr::parse(from) {
            Some(mac) => {
                if let Some(earlier) = sources.insert(mac, from.as_str()) {
                    problems.push(
                        &here,
                        format!("{here}: the same source MAC as '{earlier}' is overridden twice"),
                    );
                }
            }
            None => problems.push(
                &here,
                format!(
                    "Invalid MAC address format: {from} (expected six hex pairs like \
                     00:50:56:aa:bb:cc)"
                ),
            ),
        }
        match to.as_str().map(|s| (s, MacAddr::parse(s))) {
            Some((_, Some(mac))) if !mac.is_unicast() => problems.push(
                &here,
                format!(
                    "{here}: {mac} is a multicast address; a NIC needs a unicast MAC (even first \
                     octet)"
                ),
            ),
            Some((_, Some(mac))) => {
                if let Some(other) = targets.insert(mac, from.as_str()) {
                    problems.push(
                        &here,
                        format!(
                            "{here}: {mac} is also the override for '{other}'; two NICs cannot \
                             share a MAC"
                        ),
                    );
                }
            }
            Some((s, None)) => problems.push(
                &here,
                format!(
                    "Invalid MAC address format: {s} (expected six hex pairs like \
                     52:54:00:12:34:56)"
                ),
            ),
            None => problems.push(
                &here,
                format!(
                    "{here} must be a MAC address string (got {}: {})",
                    kind_of(to),
                    crate::diag::excerpt_value(to)
                ),
            ),
        }
    }
}

/// `storage_mapping`: every problem, each with its field path. Whether `disk_mappings` names
/// existing disks is checked by [`check_disk_mapping_ids`], which sees the whole manifest.
pub fn check_storage_mapping(path: &str, value: &Value, problems: &mut Problems) {
    let Some(map) = value.as_object() else {
        problems.push(
            path,
            format!(
                "{path} must be a mapping (got {}: {})",
                kind_of(value),
                crate::diag::excerpt_value(value)
            ),
        );
        return;
    };
    problems.unknown_keys(path, map, STORAGE_KEYS);
    if let Some(pool) = map.get("default_pool").filter(|v| !v.is_null()) {
        let here = join(path, "default_pool");
        non_empty_name(&here, pool, "libvirt storage pool name", problems);
        if pool.as_str().is_some_and(|s| s.contains('/')) {
            problems.push(
                &here,
                format!("{here} names a libvirt storage pool, not a path (got '{pool}')"),
            );
        }
    }
    if let Some(dm) = map.get("disk_mappings") {
        let here = join(path, "disk_mappings");
        match dm.as_object() {
            Some(dm) => {
                for (id, dir) in dm {
                    non_empty_name(&join(&here, id), dir, "directory path", problems);
                }
            }
            None => problems.push(
                &here,
                format!(
                    "{here} must be a mapping of disk id to directory (got {}: {})",
                    kind_of(dm),
                    crate::diag::excerpt_value(dm)
                ),
            ),
        }
    }
    if let Some(f) = map.get("format_override").filter(|v| !v.is_null()) {
        schema::check_value(
            &join(path, "format_override"),
            f,
            &Kind::Enum(OutputFormat::NAMES),
            problems,
        );
    }
    if let Some(p) = map.get("preallocate").filter(|v| !v.is_null()) {
        let here = join(path, "preallocate");
        let ok = p.is_boolean()
            || p.as_str()
                .is_some_and(|s| Preallocation::NAMES.contains(&s));
        if !ok {
            problems.push(
                &here,
                format!(
                    "{here} must be true, false or one of: {} (got {}: {})",
                    Preallocation::NAMES.join(", "),
                    kind_of(p),
                    crate::diag::excerpt_value(p)
                ),
            );
        }
    }
}

/// The keys of a document's `storage_mapping.disk_mappings`.
pub fn disk_mapping_keys(doc: &Map<String, Value>) -> std::collections::BTreeSet<String> {
    doc.get("storage_mapping")
        .and_then(|s| s.get("disk_mappings"))
        .and_then(Value::as_object)
        .map(|dm| dm.keys().cloned().collect())
        .unwrap_or_default()
}

/// Removes from the merged document the `disk_mappings` keys that name no disk of this VM and
/// that its own manifest does not write (they come from a profile, `profile_overrides`, a
/// config file or a batch's `shared_config`, shared by VMs with other disks). Returns a note
/// for each; `origin` says which layer a key came from.
pub fn drop_shared_disk_mappings(
    doc: &mut Map<String, Value>,
    own: &std::collections::BTreeSet<String>,
    origin: impl Fn(&str) -> String,
) -> Vec<String> {
    let ids: Vec<String> = doc
        .get("disks")
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .filter_map(|d| d.get("id").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let Some(dm) = doc
        .get_mut("storage_mapping")
        .and_then(|s| s.get_mut("disk_mappings"))
        .and_then(Value::as_object_mut)
    else {
        return Vec::new();
    };
    let unused: Vec<String> = dm
        .keys()
        .filter(|k| !ids.contains(k) && !own.contains(*k))
        .cloned()
        .collect();
    unused
        .into_iter()
        .map(|key| {
            dm.remove(&key);
            format!(
                "storage_mapping.disk_mappings.{key} from {} names no disk of this VM (its \
                 disks: {}); it is not used for this VM",
                origin(&key),
                ids.join(", ")
            )
        })
        .collect()
}

/// `storage_mapping.disk_mappings` may only name disks the manifest has.
pub fn check_disk_mapping_ids(doc: &Map<String, Value>, problems: &mut Problems) {
    let Some(dm) = doc
        .get("storage_mapping")
        .and_then(|s| s.get("disk_mappings"))
        .and_then(Value::as_object)
    else {
        return;
    };
    let ids: Vec<&str> = doc
        .get("disks")
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .filter_map(|d| d.get("id").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    for key in dm.keys() {
        if !ids.contains(&key.as_str()) {
            let hint = crate::diag::suggest(key, &ids)
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_else(|| format!("; the disks are: {}", ids.join(", ")));
            let here = format!("storage_mapping.disk_mappings.{key}");
            problems.push(&here, format!("{here}: no disk has the id '{key}'{hint}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems_of(f: fn(&str, &Value, &mut Problems), path: &str, v: Value) -> Vec<String> {
        let mut problems = Problems::default();
        f(path, &v, &mut problems);
        problems.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn network_mapping_validation_reports_everything() {
        let got = problems_of(
            check_network_mapping,
            "network_mapping",
            json!({"source_network": {}, "source_networks": {"a": 3, "b": {"bridge": "x", "network": "y"}},
                   "default_bridge": "br0", "default_network": "",
                   "mac_address_policy": "random", "strict": "yes",
                   "mac_address_overrides": {"zz": "01:00:5e:00:00:01", "00:50:56:00:00:01": "52:54:00:00:00:0"}}),
        );
        assert_eq!(
            got,
            [
                "network_mapping.source_network: unknown key 'source_network' (did you mean 'source_networks'?)",
                "network_mapping.source_networks.a must be a bridge name, {bridge: NAME} or {network: NAME} (got 3)",
                "network_mapping.source_networks.b must be a bridge name, {bridge: NAME} or {network: NAME} (got {\"bridge\":\"x\",\"network\":\"y\"})",
                "network_mapping.default_network must be a non-empty libvirt network name (got a string: \"\")",
                "network_mapping.default_network: set default_bridge or default_network, not both (unmapped networks can go to only one place)",
                "network_mapping.mac_address_policy must be one of: preserve, regenerate, custom (got: 'random')",
                "network_mapping.mac_address_overrides.zz: Invalid MAC address format: zz (expected six hex pairs like 00:50:56:aa:bb:cc)",
                "network_mapping.mac_address_overrides.zz: 01:00:5e:00:00:01 is a multicast address; a NIC needs a unicast MAC (even first octet)",
                "network_mapping.mac_address_overrides.00:50:56:00:00:01: Invalid MAC address format: 52:54:00:00:00:0 (expected six hex pairs like 52:54:00:12:34:56)",
                "network_mapping.strict must be a boolean (true or false) (got a string: \"yes\")",
            ]
        );
    }

    #[test]
    fn storage_mapping_validation_and_preallocation() {
        let got = problems_of(
            check_storage_mapping,
            "storage_mapping",
            json!({"default_pool": "/var/lib/x", "disk_mappings": {"d0": ""}, "format_override": "QCOW2",
                   "preallocate": "sometimes", "pool": 1}),
        );
        assert_eq!(
            got,
            [
                "storage_mapping.pool: unknown key 'pool'; expected one of: default_pool, disk_mappings, format_override, preallocate",
                "storage_mapping.default_pool names a libvirt storage pool, not a path (got '\"/var/lib/x\"')",
                "storage_mapping.disk_mappings.d0 must be a non-empty directory path (got a string: \"\")",
                "storage_mapping.format_override must be one of: qcow2, raw, vdi (got: 'QCOW2')",
                "storage_mapping.preallocate must be true, false or one of: off, metadata, falloc, full (got a string: \"sometimes\")",
            ]
        );
        let s: StorageMapping =
            serde_json::from_value(json!({"preallocate": true})).expect("typed");
        assert_eq!(s.preallocation(), Some(Preallocation::Falloc));
        let s: StorageMapping =
            serde_json::from_value(json!({"preallocate": "full"})).expect("typed");
        assert_eq!(s.preallocation(), Some(Preallocation::Full));
        let s: StorageMapping =
            serde_json::from_value(json!({"preallocate": false})).expect("typed");
        assert_eq!(s.preallocation(), None);
    }
}
