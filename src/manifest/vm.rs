//! `vm`: the source VM's hardware as far as a migration cares (CPUs, memory, firmware).
//!
//! The checks are written by hand rather than through a [`super::schema`] table because their
//! messages are upstream's (`vm.cpu must be an integer >= 1`), which scripts around the Python
//! tool may match on.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::schema::{self, Field, Kind, f};
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

spelled_enum! {
    /// The TPM's interface: CRB (what Windows 11 expects) or TIS.
    pub enum TpmModel {
        Crb = "tpm-crb",
        Tis = "tpm-tis",
    }
}

spelled_enum! {
    pub enum TpmVersion {
        V2 = "2.0",
        V1_2 = "1.2",
    }
}

/// An emulated TPM (libvirt's swtpm backend): the domain gets a new, empty one.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tpm {
    pub model: TpmModel,
    pub version: TpmVersion,
}

pub const TPM: &[Field] = &[
    f("model", Kind::Enum(TpmModel::NAMES)),
    f("version", Kind::Enum(TpmVersion::NAMES)),
];

/// `<cpu><topology>`: sockets × dies × cores × threads must be the vCPU count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CpuTopology {
    pub sockets: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dies: Option<u32>,
    pub cores: u32,
    pub threads: u32,
}

impl CpuTopology {
    pub fn vcpus(&self) -> u64 {
        u64::from(self.sockets)
            * u64::from(self.dies.unwrap_or(1))
            * u64::from(self.cores)
            * u64::from(self.threads)
    }
}

const COUNT: Kind = Kind::Int {
    min: 1,
    max: u32::MAX as i64,
};

pub const CPU_TOPOLOGY: &[Field] = &[
    f("sockets", COUNT),
    f("dies", COUNT),
    f("cores", COUNT),
    f("threads", COUNT),
];

spelled_enum! {
    #[derive(Default)]
    pub enum HypervMode {
        #[default]
        Custom = "custom",
        Passthrough = "passthrough",
    }
}

/// `<features><hyperv>`: the Hyper-V enlightenments Windows guests run faster with. Each
/// switch is its element's `state` (unset: not written); `spinlocks_retries` and `vendor_id`
/// are the values of `<spinlocks retries>` and `<vendor_id value>`, and `stimer_direct` is
/// `<stimer><direct state>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hyperv {
    #[serde(default)]
    pub mode: HypervMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relaxed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vapic: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spinlocks: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpindex: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synic: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stimer: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stimer_direct: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequencies: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reenlightenment: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlbflush: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipi: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evmcs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avic: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spinlocks_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<String>,
}

/// The switches of [`Hyperv`], in the order they are written.
pub const HYPERV_SWITCHES: &[&str] = &[
    "relaxed",
    "vapic",
    "spinlocks",
    "vpindex",
    "runtime",
    "synic",
    "stimer",
    "stimer_direct",
    "reset",
    "frequencies",
    "reenlightenment",
    "tlbflush",
    "ipi",
    "evmcs",
    "avic",
];

pub const HYPERV: &[Field] = &[
    f("mode", Kind::Enum(HypervMode::NAMES)),
    f("relaxed", Kind::Bool),
    f("vapic", Kind::Bool),
    f("spinlocks", Kind::Bool),
    f("vpindex", Kind::Bool),
    f("runtime", Kind::Bool),
    f("synic", Kind::Bool),
    f("stimer", Kind::Bool),
    f("stimer_direct", Kind::Bool),
    f("reset", Kind::Bool),
    f("frequencies", Kind::Bool),
    f("reenlightenment", Kind::Bool),
    f("tlbflush", Kind::Bool),
    f("ipi", Kind::Bool),
    f("evmcs", Kind::Bool),
    f("avic", Kind::Bool),
    f(
        "spinlocks_retries",
        Kind::Int {
            min: 4095,
            max: u32::MAX as i64,
        },
    ),
    f("vendor_id", Kind::Str),
];

impl Hyperv {
    /// Each switch that is set, by name, in [`HYPERV_SWITCHES`] order.
    pub fn switches(&self) -> Vec<(&'static str, bool)> {
        let all = [
            self.relaxed,
            self.vapic,
            self.spinlocks,
            self.vpindex,
            self.runtime,
            self.synic,
            self.stimer,
            self.stimer_direct,
            self.reset,
            self.frequencies,
            self.reenlightenment,
            self.tlbflush,
            self.ipi,
            self.evmcs,
            self.avic,
        ];
        HYPERV_SWITCHES
            .iter()
            .zip(all)
            .filter_map(|(n, v)| v.map(|v| (*n, v)))
            .collect()
    }

    /// Sets a switch by its name; false for a name that is not one.
    pub fn set(&mut self, name: &str, on: bool) -> bool {
        let slot = match name {
            "relaxed" => &mut self.relaxed,
            "vapic" => &mut self.vapic,
            "spinlocks" => &mut self.spinlocks,
            "vpindex" => &mut self.vpindex,
            "runtime" => &mut self.runtime,
            "synic" => &mut self.synic,
            "stimer" => &mut self.stimer,
            "stimer_direct" => &mut self.stimer_direct,
            "reset" => &mut self.reset,
            "frequencies" => &mut self.frequencies,
            "reenlightenment" => &mut self.reenlightenment,
            "tlbflush" => &mut self.tlbflush,
            "ipi" => &mut self.ipi,
            "evmcs" => &mut self.evmcs,
            "avic" => &mut self.avic,
            _ => return false,
        };
        *slot = Some(on);
        true
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
    /// This tool's extension: an emulated TPM for the domain (Windows 11 needs one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Tpm>,
    /// This tool's extension: the guest's CPU topology; it must multiply to `cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_topology: Option<CpuTopology>,
    /// This tool's extension: Hyper-V enlightenments for the domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperv: Option<Hyperv>,
}

pub(super) const KEYS: &[&str] = &[
    "cpu",
    "mem_gb",
    "mem_mib",
    "firmware",
    "secureboot",
    "os_hint",
    "os_version",
    "tpm",
    "cpu_topology",
    "hyperv",
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
    for (key, table) in [
        ("tpm", TPM),
        ("cpu_topology", CPU_TOPOLOGY),
        ("hyperv", HYPERV),
    ] {
        if let Some(v) = vm.get(key).filter(|v| !v.is_null()) {
            schema::check_value(&format!("vm.{key}"), v, &Kind::Object(table), problems);
        }
    }
    for (key, required) in [
        ("tpm", &["model", "version"][..]),
        ("cpu_topology", &["sockets", "cores", "threads"][..]),
    ] {
        if let Some(obj) = vm.get(key).and_then(Value::as_object) {
            for r in required {
                if !obj.contains_key(*r) {
                    problems.push(&format!("vm.{key}.{r}"), format!("vm.{key} needs {r}"));
                }
            }
        }
    }
    if let (Some(t), Some(cpu)) = (
        vm.get("cpu_topology")
            .and_then(|t| serde_json::from_value::<CpuTopology>(t.clone()).ok()),
        vm.get("cpu").and_then(Value::as_u64),
    ) && t.vcpus() != cpu
    {
        problems.push(
            "vm.cpu_topology",
            format!(
                "vm.cpu_topology multiplies to {} vCPUs (sockets x dies x cores x threads) but \
                 vm.cpu is {cpu}; libvirt refuses a topology that is not the vCPU count",
                t.vcpus()
            ),
        );
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
    fn tpm_topology_and_hyperv_are_checked() {
        assert!(
            problems_of(json!({
                "cpu": 4,
                "tpm": {"model": "tpm-crb", "version": "2.0"},
                "cpu_topology": {"sockets": 1, "cores": 2, "threads": 2},
                "hyperv": {"mode": "custom", "relaxed": true, "spinlocks": true,
                           "spinlocks_retries": 8191, "vendor_id": "KVM Hv"}
            }))
            .is_empty()
        );
        assert_eq!(
            problems_of(json!({
                "cpu": 4,
                "tpm": {"model": "tpm-spapr"},
                "cpu_topology": {"sockets": 2, "cores": 4, "threads": 1},
                "hyperv": {"relaxd": true, "spinlocks_retries": 10}
            })),
            [
                "vm.tpm.model must be one of: tpm-crb, tpm-tis (got: 'tpm-spapr') (did you mean 'tpm-tis'?)",
                "vm.hyperv.relaxd: unknown key 'relaxd' (did you mean 'relaxed'?)",
                "vm.hyperv.spinlocks_retries must be an integer from 4095 to 4294967295 (got an integer: 10)",
                "vm.tpm.version: vm.tpm needs version",
                "vm.cpu_topology multiplies to 8 vCPUs (sockets x dies x cores x threads) but vm.cpu is 4; libvirt refuses a topology that is not the vCPU count",
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
