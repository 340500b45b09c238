//! The OVF descriptor (DMTF DSP0243, versions 1.x and 2.x, with VMware's `vmw:` extensions):
//! what `--ova` and `--ovf` read from it.
//!
//! Read through the same bounded XML reader as libvirt domains (no DOCTYPE, no entities, caps on
//! depth, elements and attributes). Elements are matched by local name and attributes by the
//! part after their prefix, so a descriptor that binds the OVF namespace to another prefix reads
//! the same. What is read:
//!
//! | OVF | fact |
//! |---|---|
//! | `References/File` `id`, `href`, `size` | the file behind each disk |
//! | `DiskSection/Disk` `diskId`, `fileRef`, `capacity`, `capacityAllocationUnits`, `format` | a disk |
//! | `VirtualSystem` `id`, `Name` | the VM's id and name |
//! | `OperatingSystemSection` `id` (CIM), `vmw:osType` | guest OS, `os_hint` |
//! | `System/VirtualSystemType` | hardware version |
//! | Item ResourceType 3: `VirtualQuantity`, `vmw:CoresPerSocket` | vCPUs, cores per socket |
//! | Item ResourceType 4: `VirtualQuantity`, `AllocationUnits` | memory |
//! | Item ResourceType 5 (IDE), 6 (SCSI, `ResourceSubType` the model), 20 (SATA, NVMe) | controllers |
//! | Item ResourceType 17: `HostResource` `ovf:/disk/<id>`, `Parent`, `AddressOnParent` | disk placement |
//! | Item ResourceType 10: `Connection`, `Address`, `ResourceSubType` | NIC network, MAC, adapter |
//! | `vmw:Config` `firmware`, `uefi.secureBoot.enabled`; `vmw:ExtraConfig` `uuid.bios` | firmware, Secure Boot, BIOS UUID |
//!
//! Everything else in the hardware section (CD/DVD drives, floppies, USB, sound, video) becomes
//! a note.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ova::Member;
use super::{
    Collected, Controller, DiskLocation, ExportDisk, ExportError, ExportFacts, ExportKind,
    ExportNic,
};
use crate::libvirt::xml::{self, Element};
use crate::manifest::{Firmware, MacAddr, SourceFormat};

/// A VM has far fewer disks (VMware's maximum is a few hundred over every controller); a
/// descriptor naming more is refused before anything is opened.
pub const MAX_DISKS: usize = 256;
/// The same for network adapters (VMware allows 10).
pub const MAX_NICS: usize = 64;

/// Where the descriptor's `href`s point.
#[derive(Clone, Copy, Debug)]
pub enum Container<'a> {
    /// Members of this OVA.
    Ova {
        archive: &'a Path,
        members: &'a [Member],
    },
    /// Files in this directory (the `.ovf`'s own); an `href` must stay inside it.
    Dir(&'a Path),
}

/// The local name of a qualified attribute or element name.
fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
}

/// An attribute by local name, whatever its prefix.
fn attr<'e>(el: &'e Element, name: &str) -> Option<&'e str> {
    el.attrs
        .iter()
        .find(|(k, _)| local(k) == name)
        .map(|(_, v)| v.trim())
}

fn child_text<'e>(el: &'e Element, name: &str) -> Option<&'e str> {
    el.child(name).and_then(Element::text)
}

/// Bytes in one unit of a DSP0004 programmatic unit (`byte * 2^20`) or a unit name (`MegaBytes`,
/// which exporters use for MiB).
pub fn unit_bytes(unit: &str) -> Option<u64> {
    let u: String = unit
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let pow = |base: u64, exp: &str| exp.parse::<u32>().ok().and_then(|e| base.checked_pow(e));
    if let Some(rest) = u.strip_prefix("byte*2^") {
        return pow(2, rest);
    }
    if let Some(rest) = u.strip_prefix("byte*10^") {
        return pow(10, rest);
    }
    Some(match u.as_str() {
        "" | "byte" | "bytes" => 1,
        "kilobyte" | "kilobytes" | "kb" | "kib" => 1 << 10,
        "megabyte" | "megabytes" | "mb" | "mib" => 1 << 20,
        "gigabyte" | "gigabytes" | "gb" | "gib" => 1 << 30,
        "terabyte" | "terabytes" | "tb" | "tib" => 1 << 40,
        _ => return None,
    })
}

struct Controllers {
    /// InstanceID → (controller, its bus number among controllers of its kind, document rank).
    by_id: HashMap<String, (Controller, u32, usize)>,
}

/// The format an OVF `Disk@format` URI names.
fn format_of_uri(uri: &str, href: &str) -> SourceFormat {
    let u = uri.to_ascii_lowercase();
    if u.contains("vmdk") {
        SourceFormat::Vmdk
    } else if u.contains("qcow") {
        SourceFormat::Qcow2
    } else if u.contains("vhdx") {
        SourceFormat::Vhdx
    } else if u.contains("vhd") {
        SourceFormat::Vhd
    } else {
        match Path::new(href)
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .as_deref()
        {
            Some("qcow2") => SourceFormat::Qcow2,
            Some("vhdx") => SourceFormat::Vhdx,
            Some("vhd") => SourceFormat::Vhd,
            Some("img" | "raw") => SourceFormat::Raw,
            _ => SourceFormat::Vmdk,
        }
    }
}

/// Reads the descriptor `text` (named `descriptor` in messages) of the export at `path`.
pub fn read(
    text: &str,
    descriptor: &str,
    kind: ExportKind,
    path: &Path,
    container: Container<'_>,
) -> Result<ExportFacts, ExportError> {
    let root = xml::parse(text).map_err(|e| {
        let mut c = Collected::default();
        c.push(
            format!("{descriptor}: line {}, column {}", e.line, e.column),
            e.message
                .replace("a domain definition", "an OVF descriptor"),
        );
        ExportError::Invalid {
            kind,
            path: path.to_owned(),
            problems: c.0,
        }
    })?;
    let mut p = Collected::default();
    let at = |el: &Element| format!("{descriptor}: line {}", el.line);
    if root.name != "Envelope" {
        p.push(
            at(&root),
            format!(
                "the root element is <{}>; an OVF descriptor's is <Envelope>",
                root.name
            ),
        );
        return p.into_result(
            kind,
            path,
            ExportFacts::new(kind, path.to_owned(), String::new()),
        );
    }

    // References: file id → (href, declared size).
    let mut files: HashMap<&str, (&str, Option<u64>, &Element)> = HashMap::new();
    if let Some(refs) = root.child("References") {
        for f in refs.children_named("File") {
            let (Some(id), Some(href)) = (attr(f, "id"), attr(f, "href")) else {
                p.push(at(f), "<File> needs ovf:id and ovf:href");
                continue;
            };
            if attr(f, "compression").is_some_and(|c| !c.is_empty() && c != "identity") {
                p.push(
                    at(f),
                    format!(
                        "file {href} is stored compressed (ovf:compression=\"{}\"); hyper2kvm \
                         reads disks in place: re-export without compression",
                        attr(f, "compression").unwrap_or_default()
                    ),
                );
            }
            if attr(f, "chunkSize").is_some() {
                p.push(
                    at(f),
                    format!("file {href} is split into chunks (ovf:chunkSize); re-export it whole"),
                );
            }
            let size = attr(f, "size").and_then(|s| s.parse().ok());
            files.insert(id, (href, size, f));
        }
    }

    let systems: Vec<&Element> = root.children_named("VirtualSystem").collect();
    if root.child("VirtualSystemCollection").is_some() {
        return Err(ExportError::Refused {
            path: path.to_owned(),
            why: "it is a vApp (a VirtualSystemCollection of several VMs); export each VM as its \
                  own OVF or OVA and import them one by one"
                .to_owned(),
        });
    }
    let Some(system) = systems.first().copied() else {
        p.push(
            at(&root),
            "no <VirtualSystem>: the descriptor describes no VM",
        );
        return p.into_result(
            kind,
            path,
            ExportFacts::new(kind, path.to_owned(), String::new()),
        );
    };
    if systems.len() > 1 {
        p.push(
            at(systems[1]),
            format!(
                "{} <VirtualSystem> elements; an import reads one VM",
                systems.len()
            ),
        );
    }
    let name = child_text(system, "Name")
        .or_else(|| attr(system, "id"))
        .unwrap_or("vm")
        .to_owned();
    let mut facts = ExportFacts::new(kind, path.to_owned(), name);
    facts.vm_id = attr(system, "id").map(str::to_owned);

    if let Some(os) = system.child("OperatingSystemSection") {
        match attr(os, "osType") {
            Some(t) => {
                facts.guest_os = Some(t.to_owned());
                facts.os_hint = super::os_hint_of_vmware(t);
                if facts.os_hint.is_none() {
                    facts.notes.push(format!(
                        "the guest OS {t} has no os_hint here; set vm.os_hint if the guest needs one"
                    ));
                }
            }
            None => {
                let cim = attr(os, "id").unwrap_or("?");
                let desc = child_text(os, "Description").unwrap_or("no description");
                facts.guest_os = Some(format!("CIM {cim} ({desc})"));
                facts.notes.push(format!(
                    "the guest OS is given only as CIM id {cim} ({desc}); vm.os_hint is not set"
                ));
            }
        }
    }

    let Some(hw) = system.child("VirtualHardwareSection") else {
        p.push(
            at(system),
            "no <VirtualHardwareSection>: the VM has no hardware",
        );
        return p.into_result(kind, path, facts);
    };
    if let Some(sys) = hw.child("System") {
        facts.hardware_version = child_text(sys, "VirtualSystemType").map(str::to_owned);
    }
    for cfg in hw
        .children
        .iter()
        .filter(|c| c.name == "Config" || c.name == "ExtraConfig")
    {
        let (Some(key), value) = (attr(cfg, "key"), attr(cfg, "value").unwrap_or("")) else {
            continue;
        };
        match key {
            "firmware" if value.eq_ignore_ascii_case("efi") => facts.firmware = Firmware::Uefi,
            "firmware" => facts.firmware = Firmware::Bios,
            "uefi.secureBoot.enabled" => facts.secureboot = value.eq_ignore_ascii_case("true"),
            "uuid.bios" => {
                facts.uuid = crate::manifest::domain::parse_uuid(&value.replace(' ', ""));
            }
            _ => {}
        }
    }

    // Items (OVF 1.x) and their 2.x forms.
    let items: Vec<&Element> = hw
        .children
        .iter()
        .filter(|c| matches!(c.name.as_str(), "Item" | "StorageItem" | "EthernetPortItem"))
        .collect();
    let rtype = |it: &Element| child_text(it, "ResourceType").and_then(|t| t.parse::<u32>().ok());
    let mut controllers = Controllers {
        by_id: HashMap::new(),
    };
    let mut buses: HashMap<&'static str, u32> = HashMap::new();
    for (rank, it) in items.iter().enumerate() {
        let sub = child_text(it, "ResourceSubType")
            .unwrap_or("")
            .to_ascii_lowercase();
        let controller = match rtype(it) {
            Some(5) => Some(Controller::Ide),
            Some(6) => Some(Controller::Scsi(Some(match sub.as_str() {
                "virtualscsi" => "pvscsi".to_owned(),
                "" => "lsilogic".to_owned(),
                s => s.to_owned(),
            }))),
            Some(20) if sub.contains("nvme") => Some(Controller::Nvme),
            Some(20) => Some(Controller::Sata),
            _ => None,
        };
        if let (Some(c), Some(id)) = (controller, child_text(it, "InstanceID")) {
            let n = buses.entry(c.bus()).or_insert(0);
            let bus = child_text(it, "Address")
                .and_then(|a| a.parse().ok())
                .unwrap_or(*n);
            *n += 1;
            controllers.by_id.insert(id.to_owned(), (c, bus, rank));
        }
    }

    let disk_section: HashMap<&str, &Element> = root
        .child("DiskSection")
        .map(|s| {
            s.children_named("Disk")
                .filter_map(|d| attr(d, "diskId").map(|id| (id, d)))
                .collect()
        })
        .unwrap_or_default();

    struct Placed {
        rank: (u32, u32, u32, usize),
        disk: ExportDisk,
    }
    let mut placed: Vec<Placed> = Vec::new();
    let mut nics = Vec::new();
    let disk_items = items.iter().filter(|it| rtype(it) == Some(17)).count();
    if disk_items > MAX_DISKS {
        p.push(
            at(hw),
            format!(
                "the VM has {disk_items} disks; more than {MAX_DISKS} is not a VM hyper2kvm imports"
            ),
        );
        return p.into_result(kind, path, facts);
    }
    for (doc_rank, it) in items.iter().enumerate() {
        let label = child_text(it, "ElementName").unwrap_or("");
        match rtype(it) {
            Some(3) => {
                facts.vcpus = child_text(it, "VirtualQuantity").and_then(|q| q.parse().ok());
                if facts.vcpus.is_none() {
                    p.push(at(it), "the CPU item needs a whole VirtualQuantity");
                }
                facts.cores_per_socket =
                    child_text(it, "CoresPerSocket").and_then(|c| c.parse().ok());
            }
            Some(4) => {
                let qty = child_text(it, "VirtualQuantity").and_then(|q| q.parse::<u64>().ok());
                let unit = child_text(it, "AllocationUnits").unwrap_or("byte * 2^20");
                match (qty, unit_bytes(unit)) {
                    (Some(q), Some(b)) => match q.checked_mul(b) {
                        Some(bytes) if bytes > 0 => {
                            facts.memory_mib = Some(bytes.div_ceil(1 << 20));
                        }
                        _ => p.push(at(it), format!("memory of {q} × {unit} is out of range")),
                    },
                    (None, _) => p.push(at(it), "the memory item needs a whole VirtualQuantity"),
                    (_, None) => p.push(
                        at(it),
                        format!("memory AllocationUnits \"{unit}\" is not a unit hyper2kvm knows (byte * 2^20, MegaBytes...)"),
                    ),
                }
            }
            Some(17) => {
                let Some(host) = child_text(it, "HostResource") else {
                    facts.notes.push(format!(
                        "disk item \"{label}\" ({}) names no HostResource; not carried",
                        at(it)
                    ));
                    continue;
                };
                let disk_id = host
                    .strip_prefix("ovf:/disk/")
                    .or_else(|| host.strip_prefix("/disk/"));
                let Some(disk_id) = disk_id else {
                    p.push(at(it), format!("HostResource {host}: hyper2kvm reads ovf:/disk/<id> (a disk of the DiskSection)"));
                    continue;
                };
                let Some(d) = disk_section.get(disk_id) else {
                    p.push(at(it), format!("HostResource {host}: no <Disk ovf:diskId=\"{disk_id}\"> in the DiskSection"));
                    continue;
                };
                if attr(d, "parentRef").is_some() {
                    p.push(at(d), format!("disk {disk_id} is a delta of another disk (ovf:parentRef); export the VM with its snapshots consolidated"));
                    continue;
                }
                let Some(file_ref) = attr(d, "fileRef") else {
                    facts.notes.push(format!(
                        "disk {disk_id} has no file (a blank disk the importer would create); not carried"
                    ));
                    continue;
                };
                let Some((href, declared, file_el)) = files.get(file_ref).copied() else {
                    p.push(at(d), format!("disk {disk_id}: ovf:fileRef {file_ref} is not a <File> of the References"));
                    continue;
                };
                let capacity = match attr(d, "capacity") {
                    Some(c) if c.starts_with("${") => {
                        p.push(at(d), format!("disk {disk_id}: its capacity is a property ({c}); hyper2kvm needs a number"));
                        continue;
                    }
                    Some(c) => {
                        let unit = attr(d, "capacityAllocationUnits").unwrap_or("byte");
                        match (c.parse::<u64>().ok(), unit_bytes(unit)) {
                            (Some(n), Some(b)) => n.checked_mul(b),
                            _ => {
                                p.push(at(d), format!("disk {disk_id}: capacity \"{c}\" in \"{unit}\" is not a size"));
                                continue;
                            }
                        }
                    }
                    None => None,
                };
                let location = match locate(href, declared, container) {
                    Ok(l) => l,
                    Err(why) => {
                        p.push(at(file_el), format!("file {href}: {why}"));
                        continue;
                    }
                };
                let parent = child_text(it, "Parent");
                let ctl = parent.and_then(|id| controllers.by_id.get(id));
                if parent.is_some() && ctl.is_none() {
                    p.push(
                        at(it),
                        format!(
                            "disk {disk_id}: Parent {} is not a disk controller item",
                            parent.unwrap_or_default()
                        ),
                    );
                    continue;
                }
                let unit = child_text(it, "AddressOnParent").and_then(|a| a.parse::<u32>().ok());
                let kind_rank = |c: &Controller| match c {
                    Controller::Scsi(_) => 0,
                    Controller::Sata => 1,
                    Controller::Nvme => 2,
                    Controller::Ide => 3,
                };
                let rank = match ctl {
                    Some((c, bus, _)) => (kind_rank(c), *bus, unit.unwrap_or(u32::MAX), doc_rank),
                    None => (4, 0, unit.unwrap_or(u32::MAX), doc_rank),
                };
                placed.push(Placed {
                    rank,
                    disk: ExportDisk {
                        id: String::new(),
                        described_at: format!("disk {disk_id} ({})", at(it)),
                        controller: ctl.map(|(c, _, _)| c.clone()),
                        unit,
                        location,
                        format: format_of_uri(attr(d, "format").unwrap_or(""), href),
                        capacity,
                        digest_name: Some(href.to_owned()),
                    },
                });
            }
            Some(10) => {
                if nics.len() >= MAX_NICS {
                    p.push(at(it), format!("more than {MAX_NICS} network adapters"));
                    break;
                }
                let mac = match child_text(it, "Address") {
                    Some(a) => {
                        match MacAddr::parse(a) {
                            Some(m) => Some(m),
                            None => {
                                p.push(at(it), format!("network adapter \"{label}\": Address {a} is not a MAC address"));
                                None
                            }
                        }
                    }
                    None => None,
                };
                nics.push(ExportNic {
                    id: format!("nic{}", nics.len()),
                    mac,
                    network: child_text(it, "Connection").map(str::to_owned),
                    adapter: child_text(it, "ResourceSubType").map(str::to_ascii_lowercase),
                });
            }
            Some(5 | 6 | 20) => {}
            Some(t) => {
                let what = match t {
                    14 => "a floppy drive",
                    15 | 16 => "a CD/DVD drive",
                    23 => "a USB controller",
                    24 => "a video card",
                    35 => "a sound card",
                    _ => "a device",
                };
                facts.notes.push(format!(
                    "{what} (\"{label}\", ResourceType {t}, {}) is not carried",
                    at(it)
                ));
            }
            None => p.push(at(it), "an Item without a numeric ResourceType"),
        }
    }
    placed.sort_by_key(|pl| pl.rank);
    for (n, pl) in placed.iter_mut().enumerate() {
        pl.disk.id = format!("disk{n}");
    }
    facts.disks = placed.into_iter().map(|pl| pl.disk).collect();
    facts.nics = nics;
    if facts.disks.is_empty() && p.is_empty() {
        p.push(at(hw), "the VM has no disk with a file: nothing to convert");
    }
    p.into_result(kind, path, facts)
}

/// The location of an `href`, or why it is refused.
fn locate(
    href: &str,
    declared: Option<u64>,
    container: Container<'_>,
) -> Result<DiskLocation, String> {
    if href.contains("://") {
        return Err(
            "is a URL; hyper2kvm reads only files of the export (download it first)".to_owned(),
        );
    }
    let rel = Path::new(href);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err("must be a plain name inside the export (no absolute path, no ..)".to_owned());
    }
    match container {
        Container::Ova { archive, members } => {
            let name = href.trim_start_matches("./");
            let Some(m) = members.iter().find(|m| m.name == name) else {
                return Err(format!("is not a member of {}", archive.display()));
            };
            if let Some(size) = declared
                && size != m.size
            {
                return Err(format!(
                    "the descriptor says {size} bytes, but the archive's member has {}",
                    m.size
                ));
            }
            Ok(DiskLocation::Member {
                archive: archive.to_owned(),
                name: m.name.clone(),
                offset: m.offset,
                size: m.size,
            })
        }
        Container::Dir(dir) => {
            let path: PathBuf = dir.join(rel);
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|_| format!("{} does not exist", path.display()))?;
            // A link may point anywhere: the file itself must be inside the folder.
            let real =
                std::fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let real_dir =
                std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            if !real.starts_with(&real_dir) {
                return Err(format!(
                    "{} leads outside the export's folder ({})",
                    path.display(),
                    real.display()
                ));
            }
            if !(meta.is_file() || std::fs::metadata(&real).is_ok_and(|m| m.is_file())) {
                return Err(format!("{} is not a regular file", path.display()));
            }
            if let Some(size) = declared
                && let Ok(m) = std::fs::metadata(&real)
                && m.len() != size
            {
                return Err(format!(
                    "the descriptor says {size} bytes, but {} has {}",
                    path.display(),
                    m.len()
                ));
            }
            Ok(DiskLocation::File {
                path,
                extents: Vec::new(),
                parents: Vec::new(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(unit_bytes("byte * 2^20"), Some(1 << 20));
        assert_eq!(unit_bytes("byte*2^30"), Some(1 << 30));
        assert_eq!(unit_bytes("MegaBytes"), Some(1 << 20));
        assert_eq!(unit_bytes("byte"), Some(1));
        assert_eq!(unit_bytes("byte * 10^3"), Some(1000));
        assert_eq!(unit_bytes("furlongs"), None);
        assert_eq!(unit_bytes("byte * 2^99"), None);
    }
}
