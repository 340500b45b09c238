//! `vm`: the source VM's hardware as far as a migration cares (CPUs, memory, firmware).
//!
//! The checks are written by hand rather than through a [`super::schema`] table because their
//! messages are upstream's (`vm.cpu must be an integer >= 1`), which scripts around the Python
//! tool may match on.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::schema::{self, Kind};
use crate::diag::Problems;
use crate::spelling::spelled_enum;

spelled_enum! {
    /// How the VM boots; `unknown` boots as BIOS.
    #[derive(Default)]
    pub enum Firmware {
        #[default]
        Bios = "bios",
        Uefi = "uefi",
        Unknown = "unknown",
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_gb: Option<u32>,
    /// The exact memory in MiB (this tool's extension: `mem_gb` cannot say 214 MiB). When both
    /// are set they must agree (`mem_gb` is `mem_mib` rounded up to whole GiB, which is what the
    /// import writes for the Python tool's readers), and the domain gets `mem_mib`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_mib: Option<u32>,
    #[serde(default)]
    pub firmware: Firmware,
    #[serde(default)]
    pub secureboot: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
}

const KEYS: &[&str] = &[
    "cpu",
    "mem_gb",
    "mem_mib",
    "firmware",
    "secureboot",
    "os_hint",
    "os_version",
];

/// Checks the `vm` section, in upstream's order and wording.
pub fn check(vm: &Value, problems: &mut Problems) {
    let Some(vm) = vm.as_object() else {
        problems.push("vm", "Field 'vm' must be an object");
        return;
    };
    if let Some(fw) = vm.get("firmware")
        && !fw.as_str().is_some_and(|s| Firmware::NAMES.contains(&s))
    {
        let shown = fw
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| fw.to_string());
        problems.push(
            "vm.firmware",
            format!(
                "vm.firmware must be one of: {} (got: '{shown}')",
                Firmware::NAMES.join(", ")
            ),
        );
    }
    if let Some(sb) = vm.get("secureboot")
        && !sb.is_boolean()
    {
        problems.push("vm.secureboot", "vm.secureboot must be a boolean");
    }
    for key in ["cpu", "mem_gb", "mem_mib"] {
        if let Some(v) = vm.get(key)
            && !v
                .as_u64()
                .is_some_and(|n| n >= 1 && n <= u64::from(u32::MAX))
        {
            problems.push(
                &format!("vm.{key}"),
                format!("vm.{key} must be an integer >= 1"),
            );
        }
    }
    let size = |key: &str| {
        vm.get(key)
            .and_then(Value::as_u64)
            .filter(|n| *n >= 1 && *n <= u64::from(u32::MAX))
    };
    if let (Some(gb), Some(mib)) = (size("mem_gb"), size("mem_mib"))
        && gb != mib.div_ceil(1024)
    {
        problems.push(
            "vm.mem_mib",
            format!(
                "vm.mem_gb ({gb}) and vm.mem_mib ({mib}) disagree: {mib} MiB rounds up to {} GiB; \
                 set mem_gb to {} or remove one of them (the domain gets mem_mib when both are \
                 set)",
                mib.div_ceil(1024),
                mib.div_ceil(1024)
            ),
        );
    }
    for key in ["os_hint", "os_version"] {
        if let Some(v) = vm.get(key)
            && !v.is_string()
            && !v.is_null()
        {
            schema::check_value(&format!("vm.{key}"), v, &Kind::Str, problems);
        }
    }
    problems.unknown_keys("vm", vm, KEYS);
}

const GIB: u64 = 1 << 30;

/// Moves the guide's generated-manifest shape onto ours, in one layer's document: top-level
/// `firmware: {type}` and `os_hint`, and `metadata.memory_bytes` and `metadata.vcpus`, become
/// `vm.firmware`, `vm.os_hint`, `vm.mem_gb` (rounded up to whole GiB) and `vm.cpu`. A value the
/// same document sets under `vm` wins. `metadata` itself is left as it is (its `networks` are
/// read by the domain planner when `nics` is empty).
pub fn adopt_guide_shape(doc: &mut Map<String, Value>, problems: &mut Problems) {
    let mut mapped: Vec<(&str, Value)> = Vec::new();
    if let Some(fw) = doc.remove("firmware") {
        let kind = match &fw {
            Value::Object(o) => {
                problems.unknown_keys("firmware", o, &["type"]);
                o.get("type").cloned()
            }
            Value::Null => None,
            other => Some(other.clone()),
        };
        match kind.as_ref().map(|k| (k, k.as_str())) {
            None => {}
            Some((_, Some(s))) if Firmware::NAMES.contains(&s) => {
                mapped.push(("firmware", Value::from(s)));
            }
            Some((k, _)) => problems.push(
                "firmware.type",
                format!(
                    "firmware.type must be one of: {} (got: {k}); it is the guide's spelling of \
                     vm.firmware",
                    Firmware::NAMES.join(", ")
                ),
            ),
        }
    }
    if let Some(hint) = doc.remove("os_hint") {
        match hint {
            Value::String(_) => mapped.push(("os_hint", hint)),
            Value::Null => {}
            other => problems.push(
                "os_hint",
                format!(
                    "os_hint must be a string (got {}); it is the guide's spelling of vm.os_hint",
                    crate::config::kind_of(&other)
                ),
            ),
        }
    }
    if let Some(Value::Object(meta)) = doc.get("metadata") {
        for (key, target) in [("memory_bytes", "mem_gb"), ("vcpus", "cpu")] {
            let Some(v) = meta.get(key).filter(|v| !v.is_null()) else {
                continue;
            };
            let n = v.as_u64().filter(|n| *n >= 1);
            match (key, n) {
                ("memory_bytes", Some(bytes)) => {
                    mapped.push((target, Value::from(bytes.div_ceil(GIB))));
                }
                (_, Some(n)) if n <= u64::from(u32::MAX) => mapped.push((target, Value::from(n))),
                _ => problems.push(
                    &format!("metadata.{key}"),
                    format!(
                        "metadata.{key} must be an integer >= 1 (got {}: {v}); it is the guide's \
                         spelling of vm.{target}",
                        crate::config::kind_of(v)
                    ),
                ),
            }
        }
    }
    if mapped.is_empty() {
        return;
    }
    let vm = doc.entry("vm").or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(vm) = vm {
        for (key, value) in mapped {
            vm.entry(key).or_insert(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems_of(vm: Value) -> Vec<String> {
        let mut problems = Problems::default();
        check(&vm, &mut problems);
        problems.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn upstream_messages() {
        assert!(problems_of(json!({"firmware": "uefi", "cpu": 2, "os_hint": null})).is_empty());
        assert_eq!(problems_of(json!([])), ["Field 'vm' must be an object"]);
        assert_eq!(
            problems_of(json!({"firmware": 1, "mem_gb": 0, "os_version": 12, "cpus": 2})),
            [
                "vm.firmware must be one of: bios, uefi, unknown (got: '1')",
                "vm.mem_gb must be an integer >= 1",
                "vm.os_version must be a string (got an integer: 12)",
                "vm.cpus: unknown key 'cpus' (did you mean 'cpu'?)",
            ]
        );
    }

    #[test]
    fn mem_mib_is_exact_and_must_agree_with_mem_gb() {
        assert!(problems_of(json!({"mem_mib": 214})).is_empty());
        assert!(problems_of(json!({"mem_mib": 214, "mem_gb": 1})).is_empty());
        assert!(problems_of(json!({"mem_mib": 2048, "mem_gb": 2})).is_empty());
        assert_eq!(
            problems_of(json!({"mem_mib": 0})),
            ["vm.mem_mib must be an integer >= 1"]
        );
        assert_eq!(
            problems_of(json!({"mem_mib": 2049, "mem_gb": 2})),
            [
                "vm.mem_gb (2) and vm.mem_mib (2049) disagree: 2049 MiB rounds up to \
                 3 GiB; set mem_gb to 3 or remove one of them (the domain gets mem_mib when both \
                 are set)"
            ]
        );
    }

    #[test]
    fn the_guides_shape_maps_onto_vm_and_vm_wins() {
        let mut doc = json!({
            "firmware": {"type": "uefi"}, "os_hint": "rhel9",
            "metadata": {"memory_bytes": 8_589_934_593_u64, "vcpus": 4, "networks": []},
            "vm": {"cpu": 8}
        })
        .as_object()
        .cloned()
        .expect("object");
        let mut problems = Problems::default();
        adopt_guide_shape(&mut doc, &mut problems);
        assert!(problems.is_empty());
        assert_eq!(
            Value::Object(doc),
            json!({
                "metadata": {"memory_bytes": 8_589_934_593_u64, "vcpus": 4, "networks": []},
                "vm": {"cpu": 8, "firmware": "uefi", "os_hint": "rhel9", "mem_gb": 9}
            })
        );
    }
}
