//! `vm`: the source VM's hardware as far as a migration cares (CPUs, memory, firmware).
//!
//! The checks are written by hand rather than through a [`super::schema`] table because their
//! messages are upstream's (`vm.cpu must be an integer >= 1`), which scripts around the Python
//! tool may match on.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    for key in ["cpu", "mem_gb"] {
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
}
