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
use crate::manifest::{Firmware, MacAddr, Manifest, Nic, NicModel, NicType, OutputFormat};
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

    // Two VMs may share a name and even a source id (`vm-42` exists in every vCenter): the
    // identity also holds the source's UUID and the boot disk's path, which no two VMs share,
    // so their domains never get the same UUID (and libvirt never takes one for the other).
    let source_uuid = m.source.extra.get("uuid").and_then(Value::as_str);
    let identity = identity_of(
        m.source.vm_id.as_deref(),
        &name,
        input.vm_id,
        source_uuid,
        input.disks.first().map(|d| d.source.as_path()),
    );
    debug_assert_eq!(
        identity,
        vm_identity(
            m,
            input.vm_id,
            input.vm_name,
            input.disks.first().map(|d| d.source.as_path())
        )
    );
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
            "the domain uses virtio disks: a Windows guest boots from them only with the virtio \
             drivers installed"
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
    let mut network =
        mapping::plan_interfaces(&nics, &m.network_mapping, input.reserved_macs, &identity);
    for (iface, nic) in network.interfaces.iter_mut().zip(&nics) {
        let (model, note) = nic_model(nic, &iface.nic_id, m.vm.os_hint.as_deref());
        iface.model = model;
        notes.extend(note);
        notes.extend(carry_port(iface, nic));
    }
    notes.extend(network.notes);
    problems.extend(network.problems);

    PlannedDomain {
        domain: DomainPlan {
            path,
            name,
            uuid,
            uuid_origin,
            virt_type: Default::default(),
            memory_kib,
            vcpus,
            firmware,
            windows,
            source_provider: m.source.provider.clone(),
            source_vm_id: m.source.vm_id.clone(),
            disks,
            interfaces: network.interfaces,
            tpm: m.vm.tpm.clone(),
            cpu_topology: m.vm.cpu_topology,
            hyperv: m.vm.hyperv.clone(),
        },
        notes,
        problems,
    }
}

/// A VM's identity as [`plan`] makes it, from the manifest, the run's VM id, the domain name and
/// the boot disk's source.
fn vm_identity(m: &Manifest, vm_id: &str, vm_name: &str, boot_source: Option<&Path>) -> String {
    identity_of(
        m.source.vm_id.as_deref(),
        vm_name,
        vm_id,
        m.source.extra.get("uuid").and_then(Value::as_str),
        boot_source,
    )
}

/// The MACs [`plan`] gives the domain's NICs, without planning the rest: what a sharded batch
/// needs of the VMs other shards plan, so that MACs stay unique across the whole batch.
pub fn macs(
    m: &Manifest,
    vm_id: &str,
    vm_name: &str,
    boot_source: Option<&Path>,
    reserved: &BTreeSet<MacAddr>,
) -> Vec<MacAddr> {
    let identity = vm_identity(m, vm_id, vm_name, boot_source);
    let (nics, _, _) = nics_of(m);
    mapping::plan_interfaces(&nics, &m.network_mapping, reserved, &identity)
        .interfaces
        .iter()
        .map(|i| i.mac)
        .collect()
}

/// What a derived UUID (and a regenerated MAC) is made from: the same for the same VM from the
/// same manifest, different for two VMs that share a name.
fn identity_of(
    source_vm_id: Option<&str>,
    name: &str,
    run_vm_id: &str,
    source_uuid: Option<&str>,
    boot_source: Option<&Path>,
) -> String {
    // The source's UUID tells VMs apart by itself; without one, the boot disk's path does.
    let distinct = match (source_uuid, boot_source) {
        (Some(u), _) => format!("uuid:{u}"),
        (None, Some(p)) => format!("disk:{}", p.display()),
        (None, None) => String::new(),
    };
    format!(
        "{}\0{name}\0{run_vm_id}\0{distinct}",
        source_vm_id.unwrap_or("")
    )
}

/// The model policy: the admin's `domain_model` always; else virtio for a guest whose
/// `vm.os_hint` names an OS that is not Windows (Linux kernels carry virtio_net, and so do the
/// BSDs); else, for Windows, which may have no virtio network driver, and for a guest of
/// unknown OS, the source's own model when qemu has it (VMware's `vlance` is qemu's `pcnet`; a
/// VMware model qemu lacks becomes `e1000`, whose driver Windows ships), and virtio when the
/// source named none.
fn nic_model(nic: &Nic, id: &str, os_hint: Option<&str>) -> (NicModel, Option<String>) {
    let windows = os_hint.is_some_and(|h| h.to_ascii_lowercase().starts_with("win"));
    if let Some(m) = nic.domain_model {
        return (m, None);
    }
    let source = nic.model.as_deref().map(str::to_ascii_lowercase);
    let Some(source) = source.filter(|s| !s.is_empty()) else {
        return (NicModel::Virtio, None);
    };
    if source == "virtio" {
        return (NicModel::Virtio, None);
    }
    if os_hint.is_some() && !windows {
        return (
            NicModel::Virtio,
            Some(format!(
                "NIC {id}: the source's model {source} becomes virtio (the guest is not Windows, \
                 and its kernel carries virtio_net); set nics[].domain_model to keep another \
                 model"
            )),
        );
    }
    let (model, how) = match NicModel::from_name(&source) {
        Some(m) => (m, "keeps the source's model".to_owned()),
        None if source == "vlance" => (
            NicModel::Pcnet,
            "gets pcnet, qemu's model of the source's vlance".to_owned(),
        ),
        None => (
            NicModel::E1000,
            format!("gets e1000 (qemu has no {source}; Windows ships an e1000 driver)"),
        ),
    };
    let why = if windows {
        "a Windows guest may have no virtio network driver; set nics[].domain_model: virtio \
         once the virtio drivers are installed"
    } else {
        "vm.os_hint is not set, so the guest may have no virtio network driver; set vm.os_hint \
         (a Linux guest gets virtio) or nics[].domain_model"
    };
    (model, Some(format!("NIC {id} {how}: {why}")))
}

/// Carries the source's port details (macvtap mode, Open vSwitch port, VLAN tags, port group)
/// while the NIC stays where the source had it: unmapped, or mapped to the same bridge or
/// network. On another bridge or network they are dropped, with a note: they describe the
/// source's switch, and libvirt refuses an Open vSwitch port or a VLAN on a plain Linux bridge.
fn carry_port(iface: &mut mapping::InterfacePlan, nic: &Nic) -> Option<String> {
    let same_place = !iface.mapped
        || (nic.kind == Some(iface.connection.kind())
            && nic.network.as_deref() == iface.connection.source());
    if let mapping::Connection::Direct(_) = iface.connection {
        iface.macvtap_mode = nic.macvtap_mode;
    }
    let details: Vec<&str> = [
        nic.virtualport.as_ref().map(|_| "its Open vSwitch port"),
        nic.vlan.as_ref().map(|_| "its VLAN tags"),
        nic.portgroup.as_ref().map(|_| "its port group"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if details.is_empty() {
        return None;
    }
    if same_place {
        iface.virtualport = nic.virtualport.clone();
        iface.vlan = nic.vlan.clone();
        // A port group belongs to a libvirt network.
        if let mapping::Connection::Network(_) = iface.connection {
            iface.portgroup = nic.portgroup.clone();
        }
        return None;
    }
    Some(format!(
        "NIC {} is mapped to {}, so {} from the source's {} {} not carried (they describe the \
         source's switch); add them to the domain if the new network needs them",
        iface.nic_id,
        iface.connection,
        details.join(", "),
        nic.network.as_deref().unwrap_or("network"),
        if details.len() == 1 { "is" } else { "are" }
    ))
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
            ..Nic::default()
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
    fn port_details_stay_with_the_source_network_only() {
        let vlan = crate::manifest::Vlan {
            trunk: false,
            tags: vec![crate::manifest::VlanTag {
                id: 42,
                native_mode: None,
            }],
        };
        let nic = Nic {
            id: Some("net0".to_owned()),
            network: Some("prod".to_owned()),
            kind: Some(NicType::Network),
            vlan: Some(vlan.clone()),
            portgroup: Some("web".to_owned()),
            ..Nic::default()
        };
        let iface = |connection: mapping::Connection, mapped: bool| mapping::InterfacePlan {
            nic_id: "net0".to_owned(),
            source_network: Some("prod".to_owned()),
            connection,
            mapped,
            mac: MacAddr([0x52, 0x54, 0, 0, 0, 1]),
            mac_origin: mapping::MacOrigin::Preserved,
            source_mac: None,
            model: NicModel::Virtio,
            macvtap_mode: None,
            virtualport: None,
            vlan: None,
            portgroup: None,
        };
        // Unmapped, or mapped to the same network: carried.
        for mapped in [false, true] {
            let mut i = iface(mapping::Connection::Network("prod".to_owned()), mapped);
            assert_eq!(carry_port(&mut i, &nic), None);
            assert_eq!(i.vlan.as_ref(), Some(&vlan));
            assert_eq!(i.portgroup.as_deref(), Some("web"));
        }
        // Moved to another bridge: dropped, and said.
        let mut i = iface(mapping::Connection::Bridge("br0".to_owned()), true);
        let note = carry_port(&mut i, &nic).expect("a note");
        assert_eq!((i.vlan, i.portgroup), (None, None));
        assert_eq!(
            note,
            "NIC net0 is mapped to bridge br0, so its VLAN tags, its port group from the \
             source's prod are not carried (they describe the source's switch); add them to the \
             domain if the new network needs them"
        );
    }

    #[test]
    fn nic_model_policy() {
        let nic = |model: Option<&str>, domain_model: Option<NicModel>| Nic {
            model: model.map(str::to_owned),
            domain_model,
            ..Nic::default()
        };
        let model = |n: &Nic, hint: Option<&str>| nic_model(n, "net0", hint).0;
        // Linux: virtio, whatever the source had.
        assert_eq!(
            model(&nic(Some("e1000"), None), Some("debian12")),
            NicModel::Virtio
        );
        // Windows, or an unknown OS: the source's model, in qemu's spelling.
        assert_eq!(
            model(&nic(Some("e1000"), None), Some("windows2019")),
            NicModel::E1000
        );
        assert_eq!(model(&nic(Some("vmxnet3"), None), None), NicModel::Vmxnet3);
        assert_eq!(
            model(&nic(Some("vlance"), None), Some("win10")),
            NicModel::Pcnet
        );
        assert_eq!(
            model(&nic(Some("vmxnet2"), None), Some("win10")),
            NicModel::E1000
        );
        assert_eq!(model(&nic(None, None), Some("windows10")), NicModel::Virtio);
        // The admin's choice beats the policy both ways.
        assert_eq!(
            model(
                &nic(Some("e1000"), Some(NicModel::E1000e)),
                Some("ubuntu22")
            ),
            NicModel::E1000e
        );
        assert_eq!(
            model(
                &nic(Some("e1000"), Some(NicModel::Virtio)),
                Some("windows2019")
            ),
            NicModel::Virtio
        );
    }

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

    #[test]
    fn two_vms_named_alike_from_two_sources_get_different_uuids() {
        let a = Path::new("/srv/vcenter-a/web01/web01.vmdk");
        let b = Path::new("/srv/vcenter-b/web01/web01.vmdk");
        let uuid = |id: String| derive_uuid(&id);
        // The same name and moref in two vCenters, different disks.
        assert_ne!(
            uuid(identity_of(Some("vm-42"), "web01", "web01", None, Some(a))),
            uuid(identity_of(Some("vm-42"), "web01", "web01", None, Some(b)))
        );
        // Different source UUIDs.
        assert_ne!(
            uuid(identity_of(None, "web01", "web01", Some("1"), Some(a))),
            uuid(identity_of(None, "web01", "web01", Some("2"), Some(a)))
        );
        // The same VM again: the same UUID.
        assert_eq!(
            uuid(identity_of(Some("vm-42"), "web01", "web01", None, Some(a))),
            uuid(identity_of(Some("vm-42"), "web01", "web01", None, Some(a)))
        );
    }
}
