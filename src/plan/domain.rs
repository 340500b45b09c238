//! The libvirt domain's plan: name, UUID (derived from the VM's identity, or preserved on
//! request), memory and vCPUs (the manifest's or the defaults), firmware (BIOS, or OVMF with or
//! without Secure Boot), disk targets in boot order, and interfaces through
//! `network_mapping`. Problems (a name libvirt cannot take, a domain XML that would replace the
//! source's own, Secure Boot without UEFI) stop the run; the rest are notes.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::DiskPlan;
use crate::diag::Problem;
use crate::libvirt::domain::{
    DEFAULT_MEMORY_GIB, DEFAULT_VCPUS, DomainDisk, DomainPlan, FirmwarePlan, UuidOrigin,
    check_name, derive_uuid, disk_letters,
};
use crate::manifest::{Firmware, MacAddr, Manifest, Nic, NicType, OutputFormat};
use crate::mapping;
use crate::tools::ovmf;

/// What the planner knows when it plans the domain.
pub struct DomainInputs<'a> {
    pub manifest: &'a Manifest,
    /// The id the run uses for this VM (unique within a batch).
    pub vm_id: &'a str,
    pub vm_name: &'a str,
    pub output_dir: &'a Path,
    /// In boot order, with their planned outputs.
    pub disks: &'a [DiskPlan],
    pub format: OutputFormat,
    pub reserved_macs: &'a BTreeSet<MacAddr>,
    pub overwrite: bool,
}

/// The domain plan, plus notes for the report and problems that stop the run.
pub struct PlannedDomain {
    pub domain: DomainPlan,
    pub notes: Vec<String>,
    pub problems: Vec<Problem>,
}

pub fn plan(input: &DomainInputs<'_>) -> PlannedDomain {
    let m = input.manifest;
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    let mut problem = |path: &str, message: String| {
        problems.push(Problem {
            path: path.to_owned(),
            message,
        })
    };

    let name = input.vm_name.to_owned();
    if let Err(why) = check_name(&name) {
        problem(
            "source.vm_name",
            format!("source.vm_name '{name}' cannot name a libvirt domain: {why}"),
        );
    }
    let path = input.output_dir.join(format!("{name}.xml"));
    if !input.overwrite && path.exists() {
        problem(
            "output",
            format!(
                "domain XML {} already exists; remove it or pass --overwrite",
                path.display()
            ),
        );
    }
    if let Some(src) = m
        .source
        .extra
        .get("libvirt_xml_path")
        .and_then(Value::as_str)
        && crate::config::absolute(Path::new(src)) == crate::config::absolute(&path)
    {
        problem(
            "output",
            format!(
                "the domain XML would be written over the source definition {src}; choose \
                 another output directory"
            ),
        );
    }

    let identity = format!(
        "{}\0{}\0{}",
        m.source.vm_id.as_deref().unwrap_or(""),
        name,
        input.vm_id
    );
    let source_uuid = m.source.extra.get("uuid").and_then(Value::as_str);
    let (uuid, uuid_origin) = match (
        m.domain.preserve_uuid,
        source_uuid.and_then(crate::manifest::domain::parse_uuid),
    ) {
        (true, Some(u)) => (u, UuidOrigin::Preserved),
        _ => (derive_uuid(&identity), UuidOrigin::Derived),
    };

    // vm.mem_mib is exact; vm.mem_gb (whole GiB) is what older manifests have.
    let memory_kib = match (m.vm.mem_mib, m.vm.mem_gb) {
        (Some(mib), _) => u64::from(mib) * 1024,
        (None, gib) => u64::from(gib.unwrap_or(DEFAULT_MEMORY_GIB)) * 1024 * 1024,
    };
    let vcpus = m.vm.cpu.unwrap_or(DEFAULT_VCPUS);
    let unset: Vec<String> = [
        (m.vm.mem_gb.is_none() && m.vm.mem_mib.is_none())
            .then(|| format!("vm.mem_gb (the domain gets {DEFAULT_MEMORY_GIB} GiB of memory)")),
        m.vm.cpu
            .is_none()
            .then(|| format!("vm.cpu (the domain gets {DEFAULT_VCPUS} vCPUs)")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !unset.is_empty() {
        notes.push(format!("not set in the manifest: {}", unset.join(" and ")));
    }

    let firmware = match (m.vm.firmware, m.vm.secureboot) {
        (Firmware::Uefi, secure) => {
            let (loader, vars) = if secure {
                (ovmf::CODE_SECURE, ovmf::VARS_SECURE)
            } else {
                (ovmf::CODE, ovmf::VARS)
            };
            for file in [loader, vars] {
                if !Path::new(file).exists() {
                    notes.push(format!(
                        "UEFI firmware {file} is not installed on this machine (Debian package \
                         ovmf); the host that runs the domain needs it"
                    ));
                }
            }
            FirmwarePlan::Uefi {
                loader: loader.to_owned(),
                nvram_template: vars.to_owned(),
                secure_boot: secure,
            }
        }
        (Firmware::Bios, true) | (Firmware::Unknown, true) => {
            problem(
                "vm.secureboot",
                "vm.secureboot is true but vm.firmware is not uefi; Secure Boot needs UEFI \
                 (set vm.firmware: uefi)"
                    .to_owned(),
            );
            FirmwarePlan::Bios
        }
        (Firmware::Unknown, false) => {
            notes.push(
                "vm.firmware is unknown; the domain boots with BIOS (set vm.firmware: uefi if \
                 the guest was installed for UEFI)"
                    .to_owned(),
            );
            FirmwarePlan::Bios
        }
        (Firmware::Bios, false) => FirmwarePlan::Bios,
    };

    let windows =
        m.vm.os_hint
            .as_deref()
            .is_some_and(|h| h.to_ascii_lowercase().starts_with("win"));
    if windows {
        notes.push(
            "the domain uses virtio disks and NICs: a Windows guest boots from them only with \
             the virtio drivers installed"
                .to_owned(),
        );
    }

    let disks = input
        .disks
        .iter()
        .filter_map(|d| Some((d, d.output.clone()?)))
        .enumerate()
        .map(|(i, (d, path))| DomainDisk {
            disk_id: d.id.clone(),
            path,
            format: input.format,
            target: format!("vd{}", disk_letters(i)),
            boot_order: u32::try_from(i + 1).unwrap_or(u32::MAX),
            pool: m.storage_mapping.default_pool.clone(),
        })
        .collect();

    let (nics, nic_notes, nic_problems) = nics_of(m);
    notes.extend(nic_notes);
    problems.extend(nic_problems);
    let network =
        mapping::plan_interfaces(&nics, &m.network_mapping, input.reserved_macs, &identity);
    notes.extend(network.notes);
    problems.extend(network.problems);

    PlannedDomain {
        domain: DomainPlan {
            path,
            name,
            uuid,
            uuid_origin,
            memory_kib,
            vcpus,
            firmware,
            windows,
            source_provider: m.source.provider.clone(),
            source_vm_id: m.source.vm_id.clone(),
            disks,
            interfaces: network.interfaces,
        },
        notes,
        problems,
    }
}

/// The manifest's NICs; a manifest written by the Python tool's libvirt import has none and
/// lists them under `metadata.networks` instead, which is read as a fallback.
fn nics_of(m: &Manifest) -> (Vec<Nic>, Vec<String>, Vec<Problem>) {
    if !m.nics.is_empty() {
        return (m.nics.clone(), Vec::new(), Vec::new());
    }
    let Some(networks) = m.metadata.get("networks").and_then(Value::as_array) else {
        return (Vec::new(), Vec::new(), Vec::new());
    };
    let mut nics = Vec::new();
    let mut problems = Vec::new();
    for (i, n) in networks.iter().enumerate() {
        let text = |k: &str| n.get(k).and_then(Value::as_str).map(str::to_owned);
        let mac = text("mac");
        if let Some(bad) = mac.as_deref().filter(|m| MacAddr::parse(m).is_none()) {
            problems.push(Problem {
                path: format!("metadata.networks[{i}].mac"),
                message: format!("Invalid MAC address format: {bad}"),
            });
            continue;
        }
        let kind = text("type").as_deref().and_then(NicType::from_name);
        nics.push(Nic {
            id: Some(format!("net{i}")),
            mac,
            network: text("source").filter(|s| s != "unknown"),
            kind,
            model: text("model"),
        });
    }
    let notes = if nics.is_empty() {
        Vec::new()
    } else {
        vec![
            "the manifest has no nics; its interfaces come from metadata.networks (as the \
             Python hyper2kvm's libvirt import writes them)"
                .to_owned(),
        ]
    };
    (nics, notes, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nics_fall_back_to_the_python_tools_metadata_networks() {
        let m: Manifest = serde_json::from_value(serde_json::json!({
            "manifest_version": "1.0",
            "disks": [],
            "metadata": {"networks": [
                {"type": "bridge", "source": "br0", "mac": "52:54:00:00:00:01", "model": "e1000"},
                {"type": "vhostuser", "source": "unknown", "mac": null}
            ]}
        }))
        .expect("typed");
        let (nics, notes, problems) = nics_of(&m);
        assert!(problems.is_empty());
        assert_eq!(notes.len(), 1);
        assert_eq!(nics.len(), 2);
        assert_eq!(nics[0].kind, Some(NicType::Bridge));
        assert_eq!(nics[0].network.as_deref(), Some("br0"));
        assert_eq!(nics[1].network, None, "upstream's 'unknown' is no network");
    }
}
