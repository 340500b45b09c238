//! `--libvirt-xml`: an existing libvirt domain definition becomes an Artifact Manifest.
//!
//! The import runs in phases, and nothing is written unless all of them pass:
//! 1. read the file (at most [`MAX_XML_BYTES`], the limit `virsh define` itself applies) and parse
//!    it with the refusing reader of [`super::xml`];
//! 2. [`read_domain`], a pure function of the element tree, collects every fact and every
//!    problem at once (unknown memory unit, invalid MAC, no `<devices>`...), each problem named
//!    by its element path and line;
//! 3. each disk is looked at on disk: missing files are listed and skipped (an error when no disk
//!    remains), the size comes from the file or, for a block device, from the device itself, and
//!    the virtual size from `qemu-img info`;
//! 4. checksums are computed in parallel across disks (unless turned off, in which case the
//!    manifest has no `checksum` key at all);
//! 5. the manifest is validated with the same loader `--manifest` uses, then written atomically.
//!
//! Where this differs from the Python tool: libvirt's full unit table, `<boot order>` and
//! `<os><boot dev>`, block devices, volume/network disks reported instead of dropped, and a
//! manifest the loader accepts as it is (`vm.firmware`, `vm.os_hint`, no `null` checksum).

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::{Map, Value, json};

use super::xml::{self, Element, XmlError};
use crate::checksum;
use crate::config;
use crate::exec::{self, CancelToken, Watch};
use crate::manifest::domain::parse_uuid;
use crate::manifest::{
    self, Firmware, Layers, MacAddr, MacvtapMode, NativeMode, NicType, SourceFormat, VirtualPort,
    VirtualPortType, Vlan, VlanTag,
};
use crate::tools::qemu_img::{self, Aio, ImageInfo, QemuImg};

use crate::diag::Problem;
use crate::events::{Activity, Event, EventSink};
use crate::stage::Step;

/// `virsh define` reads at most 10 MiB (VSH_MAX_XML_FILE); a real domain is a few KiB. Larger
/// input is refused before it is read, so a huge or endless file cannot exhaust memory.
pub const MAX_XML_BYTES: u64 = 10 * 1024 * 1024;

const LIBOSINFO_NS: &str = "http://libosinfo.org/xmlns/libvirt/domain/1.0";
const MIB: u64 = 1024 * 1024;

/// What the caller asks of an import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub xml_path: PathBuf,
    /// Where the manifest goes, and the `output.directory` it names.
    pub output_dir: PathBuf,
    pub manifest_filename: String,
    pub compute_checksums: bool,
    pub overwrite: bool,
    /// Build and return the manifest, write nothing, hash nothing.
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("Domain XML not found: {}", path.display())]
    NotFound { path: PathBuf },
    #[error("Domain XML is not a file: {}", path.display())]
    NotAFile { path: PathBuf },
    #[error(
        "domain XML {} is {size} bytes; the limit is {MAX_XML_BYTES} bytes (virsh define's own \
         limit; a domain definition is a few KiB)",
        path.display()
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("Failed to read domain XML {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to parse domain XML {}: {err}", path.display())]
    Xml { path: PathBuf, err: XmlError },
    /// A manifest or batch manifest given as the domain XML.
    #[error(transparent)]
    WrongKind(config::ConfigError),
    #[error(
        "invalid domain XML {} ({} problem{}):\n{}",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        crate::diag::render_problems(problems)
    )]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("No disks found in domain XML {}{}", path.display(), listed(skipped))]
    NoDisks { path: PathBuf, skipped: Vec<String> },
    #[error(
        "the boot disk of domain XML {} cannot be imported: {dropped}; disk {next} would \
         become the boot disk and the VM would not start. Make the boot disk importable, or \
         give the disk the VM boots from <boot order='1'/>",
        path.display()
    )]
    BootDiskDropped {
        path: PathBuf,
        dropped: String,
        next: String,
    },
    #[error(
        "{} already exists; remove it or pass --overwrite",
        path.display()
    )]
    Exists { path: PathBuf },
    #[error(transparent)]
    Tool(#[from] exec::ExecError),
    #[error("could not compute the checksum of disk {disk}")]
    Checksum {
        disk: String,
        #[source]
        source: checksum::ChecksumError,
    },
    #[error("interrupted")]
    Interrupted,
    #[error(
        "the manifest generated from {} does not load (a defect of hyper2kvm; please report it)",
        path.display()
    )]
    SelfCheck {
        path: PathBuf,
        #[source]
        source: Box<manifest::ManifestError>,
    },
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
}

impl ImportError {
    /// Whether the machine, not the input, is at fault (a missing tool).
    pub fn is_environment(&self) -> bool {
        matches!(self, ImportError::Tool(_))
    }
}

fn listed(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(
            "; every disk was skipped:\n{}",
            skipped
                .iter()
                .map(|s| format!("  - {s}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Phase 2: the element tree → facts.

/// How a disk's source is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    File,
    Block,
}

impl SourceKind {
    fn name(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Block => "block",
        }
    }
}

/// A disk's place in the boot order: disks with a `<boot order>` first, by that order, then the
/// rest by their index in the document.
type BootRank = (bool, Option<u32>, usize);

fn boot_rank(order: Option<u32>, index: usize) -> BootRank {
    (order.is_none(), order, index)
}

/// A disk the import can use, in the domain's boot order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskFacts {
    pub id: String,
    /// `/domain/devices/disk[N]` with its line, for messages.
    pub element: String,
    pub kind: SourceKind,
    pub path: PathBuf,
    pub format: SourceFormat,
    /// Whether `<driver type>` named the format. Without one (libvirt's ESX driver never
    /// writes it) the format is probed when the file is looked at, and [`Self::format`] is only
    /// the guess from the file's extension.
    pub format_declared: bool,
    pub bus: Option<String>,
    /// The domain's own `<boot order>`, when it has one.
    pub boot_order: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicFacts {
    pub id: String,
    pub kind: String,
    pub network: Option<String>,
    pub mac: Option<MacAddr>,
    pub model: Option<String>,
    pub macvtap_mode: Option<MacvtapMode>,
    pub virtualport: Option<VirtualPort>,
    pub vlan: Option<Vlan>,
    pub portgroup: Option<String>,
}

/// Everything read from the domain XML.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainFacts {
    pub name: String,
    pub uuid: Option<String>,
    pub domain_type: Option<String>,
    pub memory_bytes: Option<u64>,
    pub current_memory_bytes: Option<u64>,
    pub vcpus: Option<u32>,
    pub vcpus_max: Option<u32>,
    pub firmware: Option<Firmware>,
    pub secureboot: bool,
    pub libosinfo_id: Option<String>,
    /// The source VM's own UEFI variable store (its boot entries).
    pub nvram: Option<String>,
    pub os_hint: Option<String>,
    pub os_version: Option<String>,
    /// In boot order.
    pub disks: Vec<DiskFacts>,
    pub nics: Vec<NicFacts>,
    /// Disks that cannot be migrated, each with why (volume and network sources, unknown
    /// formats); they are listed, never silently dropped.
    pub unsupported: Vec<String>,
    /// Why the disk first in the domain's boot order is not among [`Self::disks`], when it is
    /// not: the first of those would otherwise silently become the boot disk.
    pub boot_disk_dropped: Option<String>,
    pub tpm: Option<manifest::Tpm>,
    pub cpu_topology: Option<manifest::CpuTopology>,
    pub hyperv: Option<manifest::Hyperv>,
    pub notes: Vec<String>,
}

/// An element for a message: its path and line.
fn at(el: &Element, path: &str) -> String {
    format!("{path}, line {}", el.line)
}

/// A problem's message, led by the line of the element it is about.
fn located(el: &Element, message: impl std::fmt::Display) -> String {
    format!("line {}: {message}", el.line)
}

/// Reads a domain element tree, reporting every problem at once.
pub fn read_domain(root: &Element, xml_dir: &Path) -> Result<DomainFacts, Vec<Problem>> {
    let mut problems: Vec<Problem> = Vec::new();
    let mut problem = |path: String, message: String| problems.push(Problem { path, message });
    let mut facts = DomainFacts::default();

    if root.name != "domain" {
        problem(
            format!("/{}", root.name),
            located(
                root,
                format!(
                    "the root element is <{}>, expected <domain> (a file written by virsh \
                     dumpxml)",
                    root.name
                ),
            ),
        );
        return Err(problems);
    }
    facts.domain_type = root.attr("type").map(str::to_owned);

    match root.child("name").and_then(Element::text) {
        Some(n) => {
            if let Err(why) = crate::libvirt::domain::check_name(n) {
                problem(
                    "/domain/name".to_owned(),
                    located(
                        root.child("name").unwrap_or(root),
                        format!(
                            "<name> '{}' cannot name the migrated domain: {why}",
                            crate::diag::excerpt(n)
                        ),
                    ),
                );
            }
            facts.name = n.to_owned();
        }
        None => problem(
            "/domain/name".to_owned(),
            located(root, "<domain> has no <name>; libvirt requires one"),
        ),
    }
    if let Some(u) = root.child("uuid") {
        match u.text().and_then(parse_uuid) {
            Some(uuid) => facts.uuid = Some(uuid),
            None => problem(
                "/domain/uuid".to_owned(),
                located(
                    u,
                    format!(
                        "<uuid> '{}' is not a UUID (expected 32 hex digits, like \
                         6b3c2a4e-1f0d-4c3a-9b2e-0123456789ab)",
                        u.text.trim()
                    ),
                ),
            ),
        }
    }

    for (tag, slot) in [("memory", 0), ("currentMemory", 1)] {
        let Some(el) = root.child(tag) else { continue };
        match memory_bytes(el) {
            Ok(bytes) => {
                if slot == 0 {
                    facts.memory_bytes = Some(bytes);
                } else {
                    facts.current_memory_bytes = Some(bytes);
                }
            }
            Err(message) => problem(format!("/domain/{tag}"), located(el, message)),
        }
    }

    if let Some(el) = root.child("vcpu") {
        let path = "/domain/vcpu".to_owned();
        let max = el.text().map(|t| t.parse::<u32>());
        match max {
            Some(Ok(n)) if n >= 1 => facts.vcpus_max = Some(n),
            _ => problem(
                path.clone(),
                located(
                    el,
                    format!(
                        "<vcpu> must be a whole number of vCPUs >= 1 (got '{}')",
                        el.text.trim()
                    ),
                ),
            ),
        }
        match el.attr("current").map(str::parse::<u32>) {
            None => facts.vcpus = facts.vcpus_max,
            Some(Ok(n)) if facts.vcpus_max.is_some_and(|m| n > m) => problem(
                path,
                located(
                    el,
                    format!(
                        "<vcpu current='{n}'> is more than the domain's maximum of {}: libvirt \
                         refuses such a domain (expected current <= the <vcpu> count)",
                        el.text.trim()
                    ),
                ),
            ),
            Some(Ok(n)) if n >= 1 => {
                facts.vcpus = Some(n);
                if facts.vcpus_max.is_some_and(|m| m != n) {
                    facts.notes.push(format!(
                        "<vcpu current='{n}'> of {}: vm.cpu is {n}, the count the guest runs with",
                        el.text.trim()
                    ));
                }
            }
            Some(_) => problem(
                path,
                located(
                    el,
                    format!(
                        "<vcpu current='{}'> must be a whole number >= 1",
                        el.attr("current").unwrap_or_default()
                    ),
                ),
            ),
        }
    }

    read_os(root, &mut facts, &mut problem);
    read_libosinfo(root, &mut facts);
    read_cpu_and_features(root, &mut facts, &mut problem);

    let Some(devices) = root.child("devices") else {
        problem(
            "/domain/devices".to_owned(),
            located(
                root,
                "<domain> has no <devices>: there are no disks to migrate",
            ),
        );
        return Err(problems);
    };
    read_disks(devices, xml_dir, &mut facts, &mut problem);
    read_interfaces(devices, &mut facts, &mut problem);
    read_tpm(devices, &mut facts, &mut problem);

    if problems.is_empty() {
        Ok(facts)
    } else {
        Err(problems)
    }
}

/// `<cpu><topology>` (which must multiply to the vCPU maximum, as libvirt requires) and
/// `<features><hyperv>`.
fn read_cpu_and_features(
    root: &Element,
    facts: &mut DomainFacts,
    problem: &mut impl FnMut(String, String),
) {
    if let Some(topo) = root.child("cpu").and_then(|c| c.child("topology")) {
        let count = |name: &str| -> Result<Option<u32>, ()> {
            match topo.attr(name) {
                None => Ok(None),
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(Some)
                    .ok_or(()),
            }
        };
        let parts = ["sockets", "dies", "cores", "threads"].map(|n| (n, count(n)));
        let bad: Vec<&str> = parts
            .iter()
            .filter(|(n, v)| v.is_err() || (*n != "dies" && matches!(v, Ok(None))))
            .map(|(n, _)| *n)
            .collect();
        let value = |i: usize| parts[i].1.ok().flatten();
        if !bad.is_empty() {
            problem(
                "/domain/cpu/topology".to_owned(),
                located(
                    topo,
                    format!("<topology> needs {} as whole numbers >= 1", bad.join(", ")),
                ),
            );
        } else if let (Some(sockets), Some(cores), Some(threads)) = (value(0), value(2), value(3)) {
            let t = manifest::CpuTopology {
                sockets,
                dies: value(1),
                cores,
                threads,
            };
            match facts.vcpus_max {
                Some(max) if t.vcpus() != u64::from(max) => problem(
                    "/domain/cpu/topology".to_owned(),
                    located(
                        topo,
                        format!(
                            "<topology> multiplies to {} vCPUs (sockets x dies x cores x threads) \
                             but <vcpu> is {max}: libvirt refuses such a domain (expected a \
                             product of {max})",
                            t.vcpus()
                        ),
                    ),
                ),
                // The domain we write has vm.cpu vCPUs, the current count: a topology of the
                // maximum would not fit it.
                Some(max) if facts.vcpus != Some(max) => facts.notes.push(format!(
                    "<cpu><topology> is for the maximum of {max} vCPUs, but vm.cpu is the current \
                     count {}; the topology is not carried (set vm.cpu and vm.cpu_topology \
                     together)",
                    facts.vcpus.unwrap_or(max)
                )),
                _ => facts.cpu_topology = Some(t),
            }
        }
    }
    let Some(hv) = root.child("features").and_then(|f| f.child("hyperv")) else {
        return;
    };
    let mut out = manifest::Hyperv::default();
    if let Some(mode) = hv.attr("mode") {
        match manifest::HypervMode::from_name(mode) {
            Some(m) => out.mode = m,
            None => problem(
                "/domain/features/hyperv/@mode".to_owned(),
                located(
                    hv,
                    format!("<hyperv mode='{mode}'> must be custom or passthrough"),
                ),
            ),
        }
    }
    let mut dropped = Vec::new();
    for child in &hv.children {
        let on = match child.attr("state") {
            Some("on") => true,
            Some("off") => false,
            other => {
                problem(
                    format!("/domain/features/hyperv/{}/@state", child.name),
                    located(
                        child,
                        format!(
                            "<{} state='{}'> must be on or off",
                            child.name,
                            other.unwrap_or_default()
                        ),
                    ),
                );
                continue;
            }
        };
        match child.name.as_str() {
            "vendor_id" => out.vendor_id = child.attr("value").filter(|_| on).map(str::to_owned),
            "spinlocks" => {
                out.spinlocks = Some(on);
                out.spinlocks_retries = child.attr("retries").and_then(|r| r.parse().ok());
            }
            "stimer" => {
                out.stimer = Some(on);
                out.stimer_direct = child
                    .child("direct")
                    .and_then(|d| d.attr("state"))
                    .map(|s| s == "on");
            }
            "stimer_direct" => dropped.push(child.name.clone()),
            name => {
                if !out.set(name, on) {
                    dropped.push(name.to_owned());
                }
            }
        }
    }
    if !dropped.is_empty() {
        facts.notes.push(format!(
            "<features><hyperv> children not carried (hyper2kvm does not know them): {}",
            dropped.join(", ")
        ));
    }
    facts.hyperv = Some(out);
}

/// `<devices><tpm>`: an emulated TPM is carried (the new domain gets a new, empty one); a
/// passthrough of the host's TPM becomes an emulated one, since the host changes.
fn read_tpm(devices: &Element, facts: &mut DomainFacts, problem: &mut impl FnMut(String, String)) {
    let Some(tpm) = devices.child("tpm") else {
        return;
    };
    let model = tpm.attr("model").unwrap_or("tpm-tis");
    let backend = tpm.child("backend");
    let kind = backend
        .and_then(|b| b.attr("type"))
        .unwrap_or("passthrough");
    let version = backend
        .and_then(|b| b.attr("version"))
        .unwrap_or(if model == "tpm-crb" { "2.0" } else { "1.2" });
    match (
        manifest::TpmModel::from_name(model),
        manifest::TpmVersion::from_name(version),
    ) {
        (Some(model), Some(version)) => {
            facts.tpm = Some(manifest::Tpm { model, version });
            facts.notes.push(format!(
                "the domain gets a new, empty emulated TPM ({model}, version {version}; the \
                 source's was {kind}): secrets sealed to the old TPM (BitLocker keys, for one) \
                 do not move, so have the BitLocker recovery key at hand"
            ));
        }
        _ => problem(
            "/domain/devices/tpm".to_owned(),
            located(
                tpm,
                format!(
                    "<tpm model='{model}'> version '{version}': expected model tpm-crb or \
                     tpm-tis, version 2.0 or 1.2"
                ),
            ),
        ),
    }
}

/// libvirt's scaled-integer rule (virScaleInteger): no unit is KiB; `b`, `byte`, `bytes` are
/// bytes; a bare letter or `<letter>iB` is a power of 1024; `<letter>B` is a power of 1000; all
/// case-insensitive; letters k, m, g, t, p, e.
pub fn memory_bytes(el: &Element) -> Result<u64, String> {
    let tag = &el.name;
    let text = el.text.trim();
    let value: u64 = text
        .parse()
        .map_err(|_| format!("<{tag}> must be a whole number (got '{text}')"))?;
    let unit = el.attr("unit").unwrap_or("KiB");
    let scale = unit_scale(unit).ok_or_else(|| {
        format!(
            "<{tag} unit='{unit}'>: unknown unit; libvirt's units are b, bytes, KB, k, KiB, MB, M, \
             MiB, GB, G, GiB, TB, T, TiB, PB, P, PiB, EB, E, EiB"
        )
    })?;
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("<{tag}> {value} {unit} does not fit in 64 bits"))
}

fn unit_scale(unit: &str) -> Option<u64> {
    let lower = unit.to_ascii_lowercase();
    if matches!(lower.as_str(), "b" | "byte" | "bytes") {
        return Some(1);
    }
    let mut chars = lower.chars();
    let letter = chars.next()?;
    let base: u64 = match chars.as_str() {
        "" | "ib" => 1024,
        "b" => 1000,
        _ => return None,
    };
    let power = match letter {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        'p' => 5,
        'e' => 6,
        _ => return None,
    };
    Some(base.pow(power))
}

fn read_os(root: &Element, facts: &mut DomainFacts, problem: &mut impl FnMut(String, String)) {
    let Some(os) = root.child("os") else {
        return;
    };
    // A 32-bit x86 guest runs on qemu-system-x86_64 as it is; any other architecture would
    // become an x86_64 domain that cannot boot it.
    if let Some(ty) = os.child("type")
        && let Some(arch) = ty.attr("arch")
        && !matches!(arch, "x86_64" | "i686" | "i586" | "i486" | "i386")
    {
        problem(
            "/domain/os/type/@arch".to_owned(),
            located(
                ty,
                format!(
                    "<os><type arch='{arch}'>: hyper2kvm makes x86_64 KVM domains, which cannot \
                     boot a guest built for {arch} (expected x86_64 or i686)"
                ),
            ),
        );
    }
    if let Some(t) = os.child("type").and_then(Element::text)
        && t != "hvm"
    {
        problem(
            "/domain/os/type".to_owned(),
            located(
                os,
                format!(
                    "<os><type> is '{t}'; only full virtualisation (hvm) guests can move to KVM"
                ),
            ),
        );
    }
    let loader = os.child("loader");
    let loader_path = loader.and_then(Element::text).map(str::to_ascii_lowercase);
    let uefi = os
        .attr("firmware")
        .is_some_and(|f| f.eq_ignore_ascii_case("efi"))
        || loader
            .and_then(|l| l.attr("type"))
            .is_some_and(|t| t.eq_ignore_ascii_case("pflash"))
        || loader_path
            .as_deref()
            .is_some_and(|p| p.contains("ovmf") || p.contains("edk2"));
    facts.firmware = Some(if uefi { Firmware::Uefi } else { Firmware::Bios });
    let feature = os
        .child("firmware")
        .into_iter()
        .flat_map(|f| f.children_named("feature"))
        .find(|f| f.attr("name") == Some("secure-boot"))
        .and_then(|f| f.attr("enabled"));
    facts.secureboot = uefi
        && match feature {
            Some(v) => v == "yes",
            // Without the feature element, a secure (SMM-only) loader is libvirt's own sign of
            // a Secure Boot build.
            None => loader.and_then(|l| l.attr("secure")) == Some("yes"),
        };
    // `<nvram>PATH</nvram>`, or the newer `<nvram type='file'><source file='PATH'/></nvram>`.
    let nvram = os.child("nvram").and_then(|n| {
        n.text().or_else(|| {
            n.child("source")
                .and_then(|src| src.attr("file"))
                .filter(|f| !f.is_empty())
        })
    });
    if uefi && let Some(nvram) = nvram {
        facts.nvram = Some(nvram.to_owned());
        facts.notes.push(format!(
            "the source's UEFI variables (its boot entries) are in {nvram}; the new domain starts \
             from the firmware's template and boots the default path \\EFI\\BOOT\\BOOTX64.EFI. \
             If the guest does not boot, copy that file over the new domain's nvram"
        ));
    }
    let devs: Vec<&str> = os
        .children_named("boot")
        .filter_map(|b| b.attr("dev"))
        .collect();
    if !devs.is_empty() && !devs.contains(&"hd") {
        facts.notes.push(format!(
            "the domain boots from {} and never from a disk; its first disk is still marked as \
             the boot disk",
            devs.join(", ")
        ));
    }
}

fn read_libosinfo(root: &Element, facts: &mut DomainFacts) {
    let Some(meta) = root.child("metadata") else {
        return;
    };
    let id = meta
        .children_named("libosinfo")
        .filter(|l| l.namespace.as_deref().is_none_or(|n| n == LIBOSINFO_NS))
        .flat_map(|l| l.children_named("os"))
        .find_map(|os| os.attr("id"));
    let Some(id) = id else { return };
    facts.libosinfo_id = Some(id.to_owned());
    match os_hint_of(id) {
        Some((hint, version)) => {
            facts.os_hint = Some(hint);
            facts.os_version = version;
        }
        // An OS family this table does not know is not guessed into a hint: the id itself is
        // the hint, which is what the admin's libvirt says.
        None if os_family(id).is_some() => {
            facts.os_hint = Some(id.to_owned());
            facts.notes.push(format!(
                "libosinfo OS id '{id}' names an OS family hyper2kvm does not know; vm.os_hint \
                 keeps the id as it is (known: {})",
                KNOWN_OS_FAMILIES.join(", ")
            ));
        }
        None => facts.notes.push(format!(
            "libosinfo OS id '{id}' is not of the form http://<vendor>/<os>/<version>; vm.os_hint \
             is left unset"
        )),
    }
}

/// The libosinfo OS families a hint is made for (`win` becomes `windows`).
const KNOWN_OS_FAMILIES: &[&str] = &[
    "rhel",
    "centos",
    "centos-stream",
    "fedora",
    "rocky",
    "almalinux",
    "ol",
    "debian",
    "ubuntu",
    "sles",
    "sled",
    "opensuse",
    "archlinux",
    "alpinelinux",
    "gentoo",
    "freebsd",
    "win",
];

/// The OS part of a libosinfo id (`http://<vendor>/<os>/<version>`), lower-cased.
fn os_family(id: &str) -> Option<String> {
    let rest = id.split_once("://")?.1;
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    parts.next()?; // the vendor's host
    parts.next().map(str::to_ascii_lowercase)
}

/// `http://ubuntu.com/ubuntu/22.04` → (`ubuntu22`, `22.04`); `http://microsoft.com/win/2k19` →
/// (`windows2019`, `2019`), for the OS families in [`KNOWN_OS_FAMILIES`] only (`None` for any
/// other). The hint is the OS and its major version, the form upstream's
/// manifests use (`rhel9`, `ubuntu22`).
pub fn os_hint_of(id: &str) -> Option<(String, Option<String>)> {
    let rest = id.split_once("://")?.1;
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    parts.next()?; // the vendor's host
    let os = parts.next()?.to_ascii_lowercase();
    if !KNOWN_OS_FAMILIES.contains(&os.as_str()) {
        return None;
    }
    let version = parts.collect::<Vec<_>>().join(".");
    let family = if os == "win" {
        "windows".to_owned()
    } else {
        os
    };
    let version = (!version.is_empty()).then(|| {
        // Windows Server ids spell the year "2k19"; say what the admin would.
        match version.strip_prefix("2k") {
            Some(y) if family == "windows" => format!("20{y}"),
            _ => version,
        }
    });
    let major: String = version
        .as_deref()
        .unwrap_or("")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((format!("{family}{major}"), version))
}

fn read_disks(
    devices: &Element,
    xml_dir: &Path,
    facts: &mut DomainFacts,
    problem: &mut impl FnMut(String, String),
) {
    let mut found: Vec<(usize, DiskFacts)> = Vec::new();
    let mut ids = BTreeSet::new();
    let mut media = Vec::new();
    // Every disk that could be the boot disk: its place in the boot order, and where its
    // `unsupported` line goes if it has one (a disk that is neither found nor unsupported is a
    // problem, which fails the whole import).
    let mut candidates: Vec<(BootRank, usize)> = Vec::new();
    for (i, disk) in devices.children_named("disk").enumerate() {
        let xpath = format!("/domain/devices/disk[{}]", i + 1);
        let element = at(disk, &xpath);
        let device = disk.attr("device").unwrap_or("disk");
        let target = disk.child("target").and_then(|t| t.attr("dev"));
        let label = target.map_or_else(|| element.clone(), |t| format!("{t} ({element})"));
        if matches!(device, "cdrom" | "floppy") {
            media.push(format!("{device} {}", target.unwrap_or("?")));
            continue;
        }
        let order = disk
            .child("boot")
            .and_then(|b| b.attr("order"))
            .and_then(|o| o.parse::<u32>().ok());
        candidates.push((boot_rank(order, i), facts.unsupported.len()));
        let kind = disk.attr("type").unwrap_or("file");
        let source = disk.child("source");
        let path = match (kind, source) {
            ("file", Some(s)) => s.attr("file"),
            ("block", Some(s)) => s.attr("dev"),
            ("volume", s) => {
                let (pool, vol) = s.map_or(("?", "?"), |s| {
                    (
                        s.attr("pool").unwrap_or("?"),
                        s.attr("volume").unwrap_or("?"),
                    )
                });
                facts.unsupported.push(format!(
                    "disk {label}: a storage pool volume (pool '{pool}', volume '{vol}') is not \
                     supported; find its file with `virsh vol-path --pool {pool} {vol}` and \
                     change the disk to <disk type='file'>"
                ));
                continue;
            }
            ("network", s) => {
                let proto = s.and_then(|s| s.attr("protocol")).unwrap_or("?");
                let name = s.and_then(|s| s.attr("name")).unwrap_or("?");
                facts.unsupported.push(format!(
                    "disk {label}: a network disk ({proto} '{name}') is not supported; export \
                     it to a local file first (qemu-img convert)"
                ));
                continue;
            }
            (other @ ("file" | "block"), None) => {
                facts
                    .unsupported
                    .push(format!("disk {label}: a {other} disk without a <source>"));
                continue;
            }
            (other, _) => {
                facts.unsupported.push(format!(
                    "disk {label}: <disk type='{other}'> is not supported (file and block disks \
                     are)"
                ));
                continue;
            }
        };
        let Some(path) = path.filter(|p| !p.trim().is_empty()) else {
            if kind == "block" && device == "lun" {
                // What libvirt's ESX driver writes for a CD-ROM set to auto-detect the host's
                // drive: a passthrough with nothing behind it.
                facts.unsupported.push(format!(
                    "disk {label}: a passthrough device (device='lun') with no source device, as \
                     an ESX CD-ROM set to auto-detect is written; there is nothing to migrate"
                ));
                continue;
            }
            let attr = if kind == "file" { "file" } else { "dev" };
            problem(
                format!("{xpath}/source/@{attr}"),
                located(
                    disk,
                    format!("<source> of disk {label} has no {attr} attribute"),
                ),
            );
            continue;
        };
        if kind == "file"
            && let Some(why) = datastore_path(path)
        {
            facts.unsupported.push(format!("disk {label}: {why}"));
            continue;
        }
        if let Some(why) = source.and_then(|s| slice_of(s, path, disk)) {
            facts.unsupported.push(format!("disk {label}: {why}"));
            continue;
        }
        if let Some(enc) = source.and_then(|s| s.child("encryption")) {
            facts.unsupported.push(format!(
                "disk {label}: {path} is encrypted (<source><encryption format='{}'>); {}",
                enc.attr("format").unwrap_or("?"),
                DECRYPT_ADVICE
            ));
            continue;
        }
        let driver = disk.child("driver").and_then(|d| d.attr("type"));
        // Without a driver type the format is probed later, when the file is looked at (what
        // libvirt's ESX driver writes has none, and its disks are VMDKs); until then it is the
        // guess from the extension.
        let format = match driver.map_or(Some(format_by_extension(path)), SourceFormat::from_driver)
        {
            Some(f) => f,
            None => {
                facts.unsupported.push(format!(
                    "disk {label}: format '{}' is not one hyper2kvm converts (raw, qcow2, vmdk, \
                     vpc, vhdx, vdi)",
                    driver.unwrap_or_default()
                ));
                continue;
            }
        };
        let boot_order = match disk.child("boot").and_then(|b| b.attr("order")) {
            None => None,
            Some(o) => match o.parse::<u32>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    problem(
                        format!("{xpath}/boot/@order"),
                        located(
                            disk,
                            format!(
                                "<boot order='{o}'> of disk {label} must be a whole number >= 1"
                            ),
                        ),
                    );
                    None
                }
            },
        };
        if disk.child("shareable").is_some() {
            facts.notes.push(format!(
                "disk {label} is shareable (used by several VMs at once); the migration makes \
                 this VM its own copy"
            ));
        }
        if disk.child("readonly").is_some() {
            facts.notes.push(format!(
                "disk {label} is read-only in the source domain; the migrated disk is writable"
            ));
        }
        let id = match target {
            Some(t) if manifest::is_id(t) && !ids.contains(t) => t.to_owned(),
            _ => format!("disk{i}"),
        };
        ids.insert(id.clone());
        found.push((
            i,
            DiskFacts {
                id,
                element,
                kind: if kind == "block" {
                    SourceKind::Block
                } else {
                    SourceKind::File
                },
                path: config::resolve_relative(xml_dir, path),
                format,
                format_declared: driver.is_some(),
                bus: disk
                    .child("target")
                    .and_then(|t| t.attr("bus"))
                    .map(str::to_owned),
                boot_order,
            },
        ));
    }
    if !media.is_empty() {
        facts.notes.push(format!(
            "removable media are not migrated: {}",
            media.join(", ")
        ));
    }
    // Disks with a <boot order> first, by that order; the rest in document order, which is the
    // order <os><boot dev='hd'/> tries them in.
    found.sort_by_key(|(i, d)| boot_rank(d.boot_order, *i));
    if let Some(((_, _, first), line)) = candidates.iter().min_by_key(|(rank, _)| *rank)
        && !found.iter().any(|(i, _)| i == first)
    {
        facts.boot_disk_dropped = facts.unsupported.get(*line).cloned();
    }
    facts.disks = found.into_iter().map(|(_, d)| d).collect();
}

/// An interface's port details: macvtap mode, Open vSwitch port, VLAN tags, port group.
#[derive(Default)]
struct Port {
    macvtap_mode: Option<MacvtapMode>,
    virtualport: Option<VirtualPort>,
    vlan: Option<Vlan>,
    portgroup: Option<String>,
}

fn read_port(
    iface: &Element,
    xpath: &str,
    id: &str,
    notes: &mut Vec<String>,
    problem: &mut impl FnMut(String, String),
) -> Port {
    let mut port = Port::default();
    let source = iface.child("source");
    if iface.attr("type") == Some("direct")
        && let Some(mode) = source.and_then(|s| s.attr("mode"))
    {
        match MacvtapMode::from_name(mode) {
            Some(m) => port.macvtap_mode = Some(m),
            None => problem(
                format!("{xpath}/source/@mode"),
                located(
                    iface,
                    format!(
                        "<source mode='{mode}'> is not a macvtap mode (expected one of: {})",
                        MacvtapMode::NAMES.join(", ")
                    ),
                ),
            ),
        }
    }
    if iface.attr("type") == Some("network") {
        port.portgroup = source
            .and_then(|s| s.attr("portgroup"))
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
    }
    if let Some(vp) = iface.child("virtualport") {
        let kind = vp.attr("type").unwrap_or("");
        match VirtualPortType::from_name(kind) {
            Some(kind) => {
                let interfaceid = vp
                    .child("parameters")
                    .and_then(|p| p.attr("interfaceid"))
                    .map(str::to_owned);
                if let Some(bad) = interfaceid.as_deref().filter(|i| parse_uuid(i).is_none()) {
                    problem(
                        format!("{xpath}/virtualport/parameters/@interfaceid"),
                        located(
                            vp,
                            format!(
                                "<parameters interfaceid='{bad}'> is not a UUID, as libvirt requires"
                            ),
                        ),
                    );
                }
                port.virtualport = Some(VirtualPort { kind, interfaceid });
            }
            None => notes.push(format!(
                "NIC {id}: <virtualport type='{kind}'> is not carried (only openvswitch is); the \
                 migrated NIC is a plain port of its bridge or network"
            )),
        }
    }
    if let Some(vlan) = iface.child("vlan") {
        let mut tags = Vec::new();
        for (t, tag) in vlan.children_named("tag").enumerate() {
            let here = format!("{xpath}/vlan/tag[{}]", t + 1);
            let tag_id = tag.attr("id").and_then(|i| i.parse::<u16>().ok());
            let native = tag.attr("nativeMode");
            let native_mode = native.map(NativeMode::from_name);
            match (tag_id, native_mode) {
                (Some(n), None | Some(Some(_))) if i64::from(n) <= manifest::nics::MAX_VLAN_ID => {
                    tags.push(VlanTag {
                        id: n,
                        native_mode: native_mode.flatten(),
                    })
                }
                (_, Some(None)) => problem(
                    format!("{here}/@nativeMode"),
                    located(
                        tag,
                        format!(
                            "<tag nativeMode='{}'> must be tagged or untagged",
                            native.unwrap_or_default()
                        ),
                    ),
                ),
                _ => problem(
                    format!("{here}/@id"),
                    located(
                        tag,
                        format!(
                            "<tag id='{}'> must be a VLAN id from 0 to 4095",
                            tag.attr("id").unwrap_or_default()
                        ),
                    ),
                ),
            }
        }
        if tags.is_empty() {
            problem(
                format!("{xpath}/vlan"),
                located(
                    vlan,
                    "<vlan> has no <tag id>: libvirt requires at least one",
                ),
            );
        } else {
            port.vlan = Some(Vlan {
                trunk: vlan.attr("trunk") == Some("yes"),
                tags,
            });
        }
    }
    port
}

/// What to do with an encrypted image: hyper2kvm never holds a secret.
const DECRYPT_ADVICE: &str = "hyper2kvm does not take secrets and cannot read it: decrypt it \
     first (qemu-img convert --object secret,id=s0,file=KEYFILE --image-opts \
     driver=qcow2,file.filename=IMAGE,encrypt.key-secret=s0 -O qcow2 plain.qcow2; for a LUKS \
     image driver=luks,key-secret=s0) and point the domain at the decrypted copy";

/// `[datastore1] web01/web01.vmdk`, the form libvirt's ESX driver writes: a file on an ESX
/// datastore, which is no path on this machine. Why it cannot be imported, when it is one.
fn datastore_path(path: &str) -> Option<String> {
    let (store, rest) = path.strip_prefix('[')?.split_once(']')?;
    let rest = rest.trim_start();
    let flat = rest
        .strip_suffix(".vmdk")
        .map(|stem| format!(" and its data file {stem}-flat.vmdk for a flat disk"))
        .unwrap_or_default();
    Some(format!(
        "'{path}' is a file on the ESX datastore '{store}' (/vmfs/volumes/{store}/{rest} on the \
         ESX host), not a path on this machine; copy the disk's files here (the descriptor \
         {rest}{flat}, e.g. with scp from the ESX host, or download them from the datastore \
         browser) and change <source file> to the local copy of the descriptor"
    ))
}

/// Why a disk that shows the guest only a slice of its file cannot be imported, when it does:
/// the conversion reads whole files, so the guest would see a different disk.
fn slice_of(source: &Element, path: &str, disk: &Element) -> Option<String> {
    let slice = source
        .child("slices")?
        .children_named("slice")
        .find(|s| s.attr("type") == Some("storage"))?;
    let offset = slice.attr("offset").unwrap_or("0");
    let size = slice.attr("size").unwrap_or("?");
    let driver = disk
        .child("driver")
        .and_then(|d| d.attr("type"))
        .unwrap_or("raw");
    let sliced = format!(
        r#"{{"driver":"raw","offset":{offset},"size":{size},"file":{{"driver":"file","filename":"{path}"}}}}"#
    );
    let spec = if driver == "raw" {
        sliced
    } else {
        format!(r#"{{"driver":"{driver}","file":{sliced}}}"#)
    };
    Some(format!(
        "<source><slices><slice type='storage' offset='{offset}' size='{size}'> shows the guest \
         only {size} bytes of {path} from byte {offset}; hyper2kvm converts whole files, and the \
         guest would see a different disk. Extract the slice first (qemu-img convert -O raw \
         'json:{spec}' slice.raw) and point the disk at slice.raw without <slices>"
    ))
}

/// The format a file's name suggests, for a disk without `<driver type>` whose file cannot be
/// probed; raw (libvirt's own default) for any other name.
fn format_by_extension(path: &str) -> SourceFormat {
    let ext = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("vmdk") => SourceFormat::Vmdk,
        Some("qcow2" | "qcow") => SourceFormat::Qcow2,
        Some("vhd") => SourceFormat::Vhd,
        Some("vhdx") => SourceFormat::Vhdx,
        Some("vdi") => SourceFormat::Vdi,
        _ => SourceFormat::Raw,
    }
}

fn read_interfaces(
    devices: &Element,
    facts: &mut DomainFacts,
    problem: &mut impl FnMut(String, String),
) {
    // Every MAC seen, with the interface that has it: the planner refuses two NICs with one MAC.
    let mut seen: std::collections::BTreeMap<MacAddr, String> = std::collections::BTreeMap::new();
    for (i, iface) in devices.children_named("interface").enumerate() {
        let xpath = format!("/domain/devices/interface[{}]", i + 1);
        let element = at(iface, &xpath);
        let kind = iface.attr("type").unwrap_or("unknown");
        let source = iface.child("source");
        let network = match NicType::from_name(kind) {
            Some(NicType::Network) => source.and_then(|s| s.attr("network")),
            Some(NicType::Bridge) => source.and_then(|s| s.attr("bridge")),
            Some(NicType::Direct) => source.and_then(|s| s.attr("dev")),
            Some(NicType::User) => None,
            None => {
                facts.notes.push(format!(
                    "interface {element}: type '{kind}' cannot be migrated as it is; it is left \
                     out (add a NIC to the manifest's nics to connect one)"
                ));
                continue;
            }
        };
        let mac = match iface.child("mac").and_then(|m| m.attr("address")) {
            None => None,
            Some(text) => match MacAddr::parse(text) {
                Some(mac) if mac.is_unicast() => Some(mac),
                Some(mac) => {
                    problem(
                        format!("{xpath}/mac/@address"),
                        located(
                            iface,
                            format!(
                                "<mac address='{text}'>: {mac} is a multicast address; a NIC \
                                 needs a unicast MAC"
                            ),
                        ),
                    );
                    None
                }
                None => {
                    problem(
                        format!("{xpath}/mac/@address"),
                        located(
                            iface,
                            format!(
                                "<mac address='{text}'> is not a MAC address (expected six hex \
                                 pairs like 52:54:00:12:34:56)"
                            ),
                        ),
                    );
                    None
                }
            },
        };
        if let Some(mac) = mac {
            match seen.get(&mac) {
                Some(first) => problem(
                    format!("{xpath}/mac/@address"),
                    located(
                        iface,
                        format!(
                            "<mac address='{mac}'> is also the MAC of {first}; two NICs of one VM \
                             cannot share a MAC (expected a unique address per interface)"
                        ),
                    ),
                ),
                None => {
                    seen.insert(mac, element.clone());
                }
            }
        }
        let id = format!("net{}", facts.nics.len());
        let port = read_port(iface, &xpath, &id, &mut facts.notes, problem);
        facts.nics.push(NicFacts {
            id,
            kind: kind.to_owned(),
            network: network.map(str::to_owned),
            mac,
            model: iface
                .child("model")
                .and_then(|m| m.attr("type"))
                .map(str::to_owned),
            macvtap_mode: port.macvtap_mode,
            virtualport: port.virtualport,
            vlan: port.vlan,
            portgroup: port.portgroup,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Phases 1, 3, 4, 5.

/// A disk as found on this machine.
#[derive(Clone, Debug)]
pub struct FoundDisk {
    pub facts: DiskFacts,
    pub bytes: u64,
    pub virtual_size: u64,
    pub checksum: Option<String>,
}

/// The result of an import.
#[derive(Debug)]
pub struct ImportOutcome {
    pub manifest_path: PathBuf,
    pub manifest: Value,
    pub facts: DomainFacts,
    pub disks: Vec<FoundDisk>,
    /// Disks that were listed but not imported (missing files, unsupported sources).
    pub skipped: Vec<String>,
    pub notes: Vec<String>,
    pub written: bool,
}

/// Reads at most [`MAX_XML_BYTES`] of a regular file.
pub fn read_xml(path: &Path) -> Result<String, ImportError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImportError::NotFound {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(ImportError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.is_file() {
        return Err(ImportError::NotAFile {
            path: path.to_owned(),
        });
    }
    if meta.len() > MAX_XML_BYTES {
        return Err(ImportError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
        });
    }
    let read_err = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    // The file may grow between stat and read; never read past the limit.
    let mut bytes = Vec::new();
    file.take(MAX_XML_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_XML_BYTES {
        return Err(ImportError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let prefix = std::str::from_utf8(&e.as_bytes()[..valid]).unwrap_or_default();
        let (line, column) = xml::line_col(prefix, valid);
        ImportError::Xml {
            path: path.to_owned(),
            err: XmlError {
                line,
                column,
                message: "the file is not UTF-8; libvirt writes UTF-8 (convert it with iconv)"
                    .to_owned(),
            },
        }
    })
}

/// Runs the whole import.
pub fn run(
    opts: &ImportOptions,
    cancel: &CancelToken,
    events: &EventSink,
) -> Result<ImportOutcome, ImportError> {
    let xml_path = config::absolute(&opts.xml_path);
    let text = read_xml(&xml_path)?;
    let root = xml::parse(&text).map_err(|err| {
        match config::recognise_file(&opts.xml_path, &text, config::DocumentKind::DomainXml) {
            Some(kind) => ImportError::WrongKind(kind),
            None => ImportError::Xml {
                path: xml_path.clone(),
                err,
            },
        }
    })?;
    let xml_dir = config::dir_of(&xml_path);
    let facts = read_domain(&root, &xml_dir).map_err(|problems| ImportError::Invalid {
        path: xml_path.clone(),
        problems,
    })?;
    let mut skipped = facts.unsupported.clone();
    if facts.disks.is_empty() {
        return Err(ImportError::NoDisks {
            path: xml_path,
            skipped,
        });
    }

    let output_dir = config::absolute(&opts.output_dir);
    let manifest_path = output_dir.join(&opts.manifest_filename);
    if !opts.dry_run && !opts.overwrite && manifest_path.exists() {
        return Err(ImportError::Exists {
            path: manifest_path,
        });
    }

    // Phase 3: what is actually on this machine.
    let qemu_img = QemuImg::locate()?;
    let mut present = Vec::new();
    let mut problems = Vec::new();
    let mut notes = facts.notes.clone();
    // Why the boot disk (the first in boot order) is not here, when it is not.
    let mut dropped = facts.boot_disk_dropped.clone();
    for (n, d) in facts.disks.iter().enumerate() {
        let mut d = d.clone();
        let missing = match std::fs::metadata(&d.path) {
            Err(_) => Some("does not exist"),
            Ok(m) if m.is_dir() => Some("is a directory"),
            Ok(_) => None,
        };
        if let Some(why) = missing {
            let line = format!("disk {} ({}): {} {why}", d.id, d.element, d.path.display());
            if n == 0 {
                dropped.get_or_insert_with(|| line.clone());
            }
            skipped.push(line);
            continue;
        }
        let bytes = match crate::files::disk_size(&d.path) {
            Ok(b) => b,
            Err(e) => {
                problems.push(Problem {
                    path: d.element.clone(),
                    message: format!(
                        "disk {}: cannot read the size of {}: {e}",
                        d.id,
                        d.path.display()
                    ),
                });
                continue;
            }
        };
        if !d.format_declared {
            match probe(&qemu_img, &d, cancel)? {
                Probe::Format(f) => {
                    notes.push(format!(
                        "disk {} has no <driver type> (libvirt's ESX driver writes none); \
                         qemu-img probes {} as {f}, and source_format is {f}",
                        d.id,
                        d.path.display()
                    ));
                    d.format = f;
                }
                Probe::Unreadable(why) => notes.push(format!(
                    "disk {} has no <driver type>, and qemu-img cannot probe {} ({why}); \
                     source_format is {} from its name",
                    d.id,
                    d.path.display(),
                    d.format
                )),
                Probe::Refused(why) => {
                    problems.push(Problem {
                        path: d.element.clone(),
                        message: format!("disk {}: {why}", d.id),
                    });
                    continue;
                }
            }
        }
        let cmd = qemu_img.info_cmd(&d.path, d.format.driver());
        let out = exec::run(
            &cmd,
            Watch {
                cancel: Some(cancel),
                ..Watch::default()
            },
        )?;
        if out.record.status == exec::Status::Cancelled {
            return Err(ImportError::Interrupted);
        }
        if !out.record.success() {
            problems.push(Problem {
                path: d.element.clone(),
                message: format!(
                    "disk {}: qemu-img cannot read {} as {}: {}",
                    d.id,
                    d.path.display(),
                    d.format,
                    out.record
                ),
            });
            continue;
        }
        let info = match ImageInfo::parse(&out.stdout) {
            Ok(i) => i,
            Err(e) => {
                problems.push(Problem {
                    path: d.element.clone(),
                    message: format!("disk {}: {e}", d.id),
                });
                continue;
            }
        };
        if info.encrypted {
            problems.push(Problem {
                path: d.element.clone(),
                message: format!(
                    "disk {}: {} is an encrypted {} image; {DECRYPT_ADVICE}",
                    d.id,
                    d.path.display(),
                    d.format
                ),
            });
            continue;
        }
        if let Some(backing) = &info.backing_filename {
            // The conversion refuses chains (only the top file is pinned), so the import does
            // too, rather than write a manifest whose run fails.
            problems.push(Problem {
                path: d.element.clone(),
                message: format!(
                    "disk {}: {} has a backing file ({backing}); {}",
                    d.id,
                    d.path.display(),
                    qemu_img::flatten_advice(&d.path, d.format.driver())
                ),
            });
            continue;
        }
        present.push(FoundDisk {
            facts: d.clone(),
            bytes,
            virtual_size: info.virtual_size,
            checksum: None,
        });
    }
    if !problems.is_empty() {
        return Err(ImportError::Invalid {
            path: xml_path,
            problems,
        });
    }
    if present.is_empty() {
        return Err(ImportError::NoDisks {
            path: xml_path,
            skipped,
        });
    }
    // The boot disk, unsupported or missing here: the next disk must not take its place.
    if let Some(dropped) = dropped {
        return Err(ImportError::BootDiskDropped {
            path: xml_path,
            dropped,
            next: present[0].facts.id.clone(),
        });
    }

    // Phase 4: checksums, one disk per worker.
    if opts.compute_checksums && !opts.dry_run {
        checksum_all(&facts.name, &mut present, cancel, events)?;
    }

    // Phase 5: the manifest, checked by the loader that will read it.
    let doc = build_manifest(&facts, &present, &skipped, &notes, &xml_path, &output_dir);
    manifest::resolve(&manifest_path, doc.clone(), &Layers::default()).map_err(|e| {
        ImportError::SelfCheck {
            path: xml_path.clone(),
            source: Box::new(e),
        }
    })?;
    let manifest = Value::Object(doc);
    if !opts.dry_run {
        crate::atomic::write_json(&manifest_path, &manifest)?;
    }
    Ok(ImportOutcome {
        manifest_path,
        manifest,
        facts,
        disks: present,
        skipped,
        notes,
        written: !opts.dry_run,
    })
}

/// What probing a disk without `<driver type>` found.
enum Probe {
    /// A format hyper2kvm converts.
    Format(SourceFormat),
    /// qemu-img could not open the file (why): the format stays the extension's guess.
    Unreadable(String),
    /// Something the import must refuse (encrypted, a format not converted).
    Refused(String),
}

/// `qemu-img info` without `-f`, read-only: the one place the import probes a format.
fn probe(q: &QemuImg, d: &DiskFacts, cancel: &CancelToken) -> Result<Probe, ImportError> {
    let out = exec::run(
        &q.probe_cmd(&d.path, Aio::Threads),
        Watch {
            cancel: Some(cancel),
            ..Watch::default()
        },
    )?;
    if out.record.status == exec::Status::Cancelled {
        return Err(ImportError::Interrupted);
    }
    if !out.record.success() {
        return Ok(Probe::Unreadable(out.record.stderr_tail.trim().to_owned()));
    }
    let info = match ImageInfo::parse(&out.stdout) {
        Ok(i) => i,
        Err(e) => return Ok(Probe::Unreadable(e)),
    };
    let shown = d.path.display();
    if info.encrypted {
        return Ok(Probe::Refused(format!(
            "{shown} is an encrypted {} image; {DECRYPT_ADVICE}",
            info.format
        )));
    }
    Ok(match SourceFormat::from_driver(&info.format) {
        Some(f) => Probe::Format(f),
        None => Probe::Refused(format!(
            "qemu-img detects {} in {shown}, which hyper2kvm does not convert (raw, qcow2, \
             vmdk, vpc, vhdx, vdi)",
            info.format
        )),
    })
}

fn checksum_all(
    vm: &str,
    disks: &mut [FoundDisk],
    cancel: &CancelToken,
    events: &EventSink,
) -> Result<(), ImportError> {
    let sizes: Vec<(String, u64)> = disks
        .iter()
        .map(|d| (d.facts.id.clone(), d.bytes))
        .collect();
    let results = hash_with_events(vm, &sizes, cancel, events, |i, progress| {
        checksum::sha256_file(&disks[i].facts.path, None, Some(cancel), None, progress)
    });
    for (d, r) in disks.iter_mut().zip(results) {
        match r {
            Ok(sum) => d.checksum = Some(sum),
            Err(checksum::ChecksumError::Cancelled { .. }) => return Err(ImportError::Interrupted),
            Err(source) => {
                return Err(ImportError::Checksum {
                    disk: d.facts.id.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Hashes an import's disks in parallel (`hash(i, progress)` for disk `i` of `disks`, given as
/// id and size) and tells the display as a run of one VM would: started, the checksum step
/// with each disk's progress, finished with the first failure. Shared by every import.
pub fn hash_with_events<T: Send>(
    vm: &str,
    disks: &[(String, u64)],
    cancel: &CancelToken,
    events: &EventSink,
    hash: impl Fn(usize, &mut dyn FnMut(u64)) -> Result<T, checksum::ChecksumError> + Sync,
) -> Vec<Result<T, checksum::ChecksumError>> {
    events.send(Event::VmStarted {
        vm: vm.to_owned(),
        disks: disks.to_vec(),
    });
    events.send(Event::StepStarted {
        vm: vm.to_owned(),
        step: Step::Checksums,
    });
    let results: Vec<Result<T, checksum::ChecksumError>> = (0..disks.len())
        .into_par_iter()
        .map(|i| {
            let (id, total) = &disks[i];
            hash(i, &mut |done| {
                events.send(Event::Progress {
                    vm: vm.to_owned(),
                    disk: id.clone(),
                    activity: Activity::Checksum,
                    done,
                    total: *total,
                })
            })
        })
        .collect();
    let ok = results.iter().all(Result::is_ok);
    events.send(Event::StepFinished {
        vm: vm.to_owned(),
        step: Step::Checksums,
        success: ok,
    });
    events.send(Event::VmFinished {
        vm: vm.to_owned(),
        status: if ok {
            crate::events::VmStatus::Succeeded
        } else if cancel.is_cancelled() {
            crate::events::VmStatus::Interrupted
        } else {
            crate::events::VmStatus::Failed
        },
        failure: results
            .iter()
            .find_map(|r| r.as_ref().err())
            .map(|e| crate::events::Failure {
                stage: Step::Checksums.stage_name().to_owned(),
                message: crate::diag::error_chain(e),
            }),
        report: None,
    });
    results
}

/// The manifest, keys in the order an admin reads them.
pub fn build_manifest(
    facts: &DomainFacts,
    disks: &[FoundDisk],
    skipped: &[String],
    notes: &[String],
    xml_path: &Path,
    output_dir: &Path,
) -> Map<String, Value> {
    let mut source = Map::new();
    source.insert("provider".into(), json!("libvirt"));
    source.insert(
        "vm_id".into(),
        json!(facts.uuid.clone().unwrap_or_else(|| facts.name.clone())),
    );
    source.insert("vm_name".into(), json!(facts.name));
    if let Some(u) = &facts.uuid {
        source.insert("uuid".into(), json!(u));
    }
    if let Some(t) = &facts.domain_type {
        source.insert("hypervisor".into(), json!(t));
    }
    source.insert("export_method".into(), json!("libvirt-xml"));
    source.insert("export_timestamp".into(), json!(crate::clock::now_utc()));
    source.insert("libvirt_xml_path".into(), json!(xml_path));

    let mut all_notes: Vec<String> = Vec::new();
    let mut vm = Map::new();
    if let Some(c) = facts.vcpus {
        vm.insert("cpu".into(), json!(c));
    }
    if let Some(bytes) = facts.memory_bytes.or(facts.current_memory_bytes) {
        // vm.mem_mib is what the domain gets; vm.mem_gb (whole GiB, rounded up so it is never
        // less) stays for the Python tool's readers. libvirt counts in KiB, so a size that is
        // not whole MiB is rounded up too, and said.
        let mib = bytes.div_ceil(MIB).max(1);
        let gib = mib.div_ceil(1024);
        if bytes % MIB != 0 {
            all_notes.push(format!(
                "memory is {bytes} bytes; vm.mem_mib rounds it up to {mib} MiB (the exact size \
                 is in metadata.memory_bytes)"
            ));
        }
        vm.insert("mem_gb".into(), json!(gib));
        vm.insert("mem_mib".into(), json!(mib));
    }
    vm.insert(
        "firmware".into(),
        json!(match facts.firmware {
            Some(Firmware::Uefi) => Firmware::Uefi,
            _ => Firmware::Bios,
        }),
    );
    vm.insert("secureboot".into(), json!(facts.secureboot));
    if let Some(h) = &facts.os_hint {
        vm.insert("os_hint".into(), json!(h));
    }
    if let Some(v) = &facts.os_version {
        vm.insert("os_version".into(), json!(v));
    }
    if let Some(t) = &facts.tpm {
        vm.insert("tpm".into(), json!(t));
    }
    if let Some(t) = &facts.cpu_topology {
        vm.insert("cpu_topology".into(), json!(t));
    }
    if let Some(h) = &facts.hyperv {
        vm.insert("hyperv".into(), json!(h));
    }

    let mut disk_meta = Map::new();
    let disk_entries: Vec<Value> = disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut e = Map::new();
            e.insert("id".into(), json!(d.facts.id));
            e.insert("source_format".into(), json!(d.facts.format.name()));
            e.insert("bytes".into(), json!(d.bytes));
            e.insert("local_path".into(), json!(d.facts.path));
            if let Some(sum) = &d.checksum {
                e.insert("checksum".into(), json!(sum));
            }
            e.insert("boot_order_hint".into(), json!(i));
            e.insert(
                "disk_type".into(),
                json!(if i == 0 { "boot" } else { "data" }),
            );
            // The domain names a block device: converting it is what the admin asked for.
            if d.facts.kind == SourceKind::Block {
                e.insert("allow_block_device".into(), json!(true));
            }
            let mut m = Map::new();
            m.insert("virtual_size".into(), json!(d.virtual_size));
            m.insert("source_type".into(), json!(d.facts.kind.name()));
            if let Some(b) = &d.facts.bus {
                m.insert("bus".into(), json!(b));
            }
            if let Some(o) = d.facts.boot_order {
                m.insert("boot_order".into(), json!(o));
            }
            disk_meta.insert(d.facts.id.clone(), Value::Object(m));
            Value::Object(e)
        })
        .collect();

    let nics: Vec<Value> = facts
        .nics
        .iter()
        .map(|n| {
            let mut e = Map::new();
            e.insert("id".into(), json!(n.id));
            if let Some(m) = n.mac {
                e.insert("mac".into(), json!(m.to_string()));
            }
            if let Some(net) = &n.network {
                e.insert("network".into(), json!(net));
            }
            e.insert("type".into(), json!(n.kind));
            if let Some(model) = &n.model {
                e.insert("model".into(), json!(model));
            }
            if let Some(mode) = n.macvtap_mode {
                e.insert("macvtap_mode".into(), json!(mode));
            }
            if let Some(vp) = &n.virtualport {
                e.insert("virtualport".into(), json!(vp));
            }
            if let Some(vlan) = &n.vlan {
                e.insert("vlan".into(), json!(vlan));
            }
            if let Some(pg) = &n.portgroup {
                e.insert("portgroup".into(), json!(pg));
            }
            Value::Object(e)
        })
        .collect();

    all_notes.extend(notes.iter().cloned());
    all_notes.extend(skipped.iter().map(|s| format!("not imported: {s}")));

    let mut metadata = Map::new();
    if let Some(b) = facts.memory_bytes {
        metadata.insert("memory_bytes".into(), json!(b));
    }
    if let Some(b) = facts.current_memory_bytes {
        metadata.insert("current_memory_bytes".into(), json!(b));
    }
    if let Some(v) = facts.vcpus_max {
        metadata.insert("vcpus".into(), json!(v));
    }
    if let Some(id) = &facts.libosinfo_id {
        metadata.insert("libosinfo_id".into(), json!(id));
    }
    if let Some(nvram) = &facts.nvram {
        metadata.insert("nvram".into(), json!(nvram));
    }
    metadata.insert("disks".into(), Value::Object(disk_meta));

    assemble(Sections {
        source,
        vm,
        disks: disk_entries,
        nics,
        notes: all_notes,
        metadata,
        output_dir,
    })
}

/// The sections an import has read, for [`assemble`].
pub struct Sections<'a> {
    pub source: Map<String, Value>,
    pub vm: Map<String, Value>,
    pub disks: Vec<Value>,
    pub nics: Vec<Value>,
    pub notes: Vec<String>,
    pub metadata: Map<String, Value>,
    pub output_dir: &'a Path,
}

/// An imported VM's manifest, keys in the order an admin reads them, with the pipeline every
/// import writes. Guest repair writes into the guest, which the admin should ask for (a
/// profile, or pipeline.fix.enabled), so the manifest leaves it off; compression is off
/// because the output is meant to run, not to be archived.
pub fn assemble(s: Sections<'_>) -> Map<String, Value> {
    let mut doc = Map::new();
    doc.insert("manifest_version".into(), json!("1.0"));
    doc.insert("source".into(), Value::Object(s.source));
    doc.insert("vm".into(), Value::Object(s.vm));
    doc.insert("disks".into(), Value::Array(s.disks));
    doc.insert("nics".into(), Value::Array(s.nics));
    doc.insert("notes".into(), json!(s.notes));
    doc.insert("metadata".into(), Value::Object(s.metadata));
    doc.insert(
        "pipeline".into(),
        json!({
            "inspect": {"enabled": true},
            "fix": {"enabled": false},
            "convert": {"enabled": true, "compress": false},
            "validate": {"enabled": true, "check_image_integrity": true}
        }),
    );
    doc.insert(
        "output".into(),
        json!({"directory": s.output_dir, "format": "qcow2"}),
    );
    doc
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(tag: &str, unit: Option<&str>, text: &str) -> Element {
        Element {
            name: tag.to_owned(),
            attrs: unit
                .map(|u| vec![("unit".to_owned(), u.to_owned())])
                .unwrap_or_default(),
            text: text.to_owned(),
            line: 1,
            ..Element::default()
        }
    }

    #[test]
    fn libvirt_unit_table() {
        let cases: &[(&str, u64)] = &[
            ("b", 1),
            ("bytes", 1),
            ("byte", 1),
            ("KB", 1000),
            ("k", 1024),
            ("KiB", 1024),
            ("MB", 1000 * 1000),
            ("M", 1 << 20),
            ("MiB", 1 << 20),
            ("GB", 1_000_000_000),
            ("G", 1 << 30),
            ("GiB", 1 << 30),
            ("TB", 1_000_000_000_000),
            ("T", 1 << 40),
            ("TiB", 1 << 40),
            ("PB", 1_000_000_000_000_000),
            ("P", 1 << 50),
            ("PiB", 1 << 50),
            ("EB", 1_000_000_000_000_000_000),
            ("E", 1 << 60),
            ("EiB", 1 << 60),
            ("gib", 1 << 30),
            ("kb", 1000),
        ];
        for (unit, scale) in cases {
            assert_eq!(
                memory_bytes(&el("memory", Some(unit), "2")),
                Ok(2 * scale),
                "{unit}"
            );
        }
        assert_eq!(memory_bytes(&el("memory", None, " 1024 ")), Ok(1 << 20));
        for bad in ["KiBs", "Q", "", "kbb", "iB"] {
            assert!(
                memory_bytes(&el("memory", Some(bad), "1"))
                    .expect_err(bad)
                    .contains("unknown unit"),
                "{bad}"
            );
        }
        assert!(
            memory_bytes(&el("memory", Some("EiB"), "16")).is_err(),
            "overflow"
        );
        assert!(
            memory_bytes(&el("memory", None, "4G")).is_err(),
            "text with a unit"
        );
    }

    #[test]
    fn libosinfo_ids_become_hints() {
        let cases = [
            ("http://ubuntu.com/ubuntu/22.04", "ubuntu22", Some("22.04")),
            ("http://redhat.com/rhel/9.2", "rhel9", Some("9.2")),
            ("http://debian.org/debian/12", "debian12", Some("12")),
            ("http://microsoft.com/win/10", "windows10", Some("10")),
            ("http://microsoft.com/win/2k19", "windows2019", Some("2019")),
            (
                "http://fedoraproject.org/fedora/rawhide",
                "fedora",
                Some("rawhide"),
            ),
            (
                "http://centos.org/centos-stream/9",
                "centos-stream9",
                Some("9"),
            ),
            ("http://archlinux.org/archlinux", "archlinux", None),
        ];
        for (id, hint, version) in cases {
            assert_eq!(
                os_hint_of(id),
                Some((hint.to_owned(), version.map(str::to_owned))),
                "{id}"
            );
        }
        assert_eq!(os_hint_of("ubuntu22.04"), None);
        assert_eq!(
            os_hint_of("http://example.com/unknown/1"),
            None,
            "an unknown family is not made into a hint ('unknown1')"
        );
        assert_eq!(
            os_family("http://example.com/unknown/1").as_deref(),
            Some("unknown")
        );
    }

    fn facts_of(xml: &str) -> Result<DomainFacts, Vec<String>> {
        let root = xml::parse(xml).expect("well-formed");
        read_domain(&root, Path::new("/images"))
            .map_err(|p| p.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn boot_order_elements_decide_the_disk_order() {
        let f = facts_of(
            "<domain type='kvm'><name>vm</name><devices>
               <disk type='file' device='disk'><source file='data.qcow2'/><driver type='qcow2'/><target dev='vda'/></disk>
               <disk type='file' device='cdrom'><target dev='sda'/></disk>
               <disk type='file'><source file='/img/boot.raw'/><target dev='vdb'/><boot order='1'/></disk>
               <disk type='block' device='lun'><source dev='/dev/sdz'/><target dev='sdb'/><boot order='2'/></disk>
             </devices></domain>",
        )
        .expect("valid");
        let order: Vec<(&str, &str)> = f
            .disks
            .iter()
            .map(|d| (d.id.as_str(), d.path.to_str().unwrap_or_default()))
            .collect();
        assert_eq!(
            order,
            [
                ("vdb", "/img/boot.raw"),
                ("sdb", "/dev/sdz"),
                ("vda", "/images/data.qcow2")
            ]
        );
        assert_eq!(f.disks[0].format, SourceFormat::Raw);
        assert_eq!(f.disks[1].kind, SourceKind::Block);
        assert!(f.notes.iter().any(|n| n.contains("cdrom sda")));
    }

    #[test]
    fn every_problem_is_named_by_its_element() {
        let got = facts_of(
            "<domain>\n<uuid>nope</uuid>\n<memory unit='KiBs'>1</memory>\n<currentMemory>x</currentMemory>\n<vcpu>0</vcpu>\n<devices>\n<interface type='bridge'><mac address='52:54:00:zz:00:01'/></interface>\n<interface type='network'><mac address='01:00:5e:00:00:01'/></interface>\n</devices></domain>",
        )
        .expect_err("invalid");
        assert_eq!(
            got,
            [
                "/domain/name: line 1: <domain> has no <name>; libvirt requires one",
                "/domain/uuid: line 2: <uuid> 'nope' is not a UUID (expected 32 hex digits, like 6b3c2a4e-1f0d-4c3a-9b2e-0123456789ab)",
                "/domain/memory: line 3: <memory unit='KiBs'>: unknown unit; libvirt's units are b, bytes, KB, k, KiB, MB, M, MiB, GB, G, GiB, TB, T, TiB, PB, P, PiB, EB, E, EiB",
                "/domain/currentMemory: line 4: <currentMemory> must be a whole number (got 'x')",
                "/domain/vcpu: line 5: <vcpu> must be a whole number of vCPUs >= 1 (got '0')",
                "/domain/devices/interface[1]/mac/@address: line 7: <mac address='52:54:00:zz:00:01'> is not a MAC address (expected six hex pairs like 52:54:00:12:34:56)",
                "/domain/devices/interface[2]/mac/@address: line 8: <mac address='01:00:5e:00:00:01'>: 01:00:5e:00:00:01 is a multicast address; a NIC needs a unicast MAC",
            ]
        );
        let got = facts_of("<domain><name>x</name></domain>").expect_err("no devices");
        assert_eq!(
            got,
            ["/domain/devices: line 1: <domain> has no <devices>: there are no disks to migrate"]
        );
    }

    #[test]
    fn non_utf8_input_names_the_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.xml");
        std::fs::write(&path, b"<domain>\n  <name>caf\xe9</name>\n</domain>").expect("write");
        let err = read_xml(&path).expect_err("latin-1");
        assert!(
            err.to_string().ends_with("line 2, column 12: the file is not UTF-8; libvirt writes UTF-8 (convert it with iconv)"),
            "{err}"
        );
    }

    #[test]
    fn a_dropped_boot_disk_is_named() {
        let f = facts_of(
            "<domain><name>x</name><devices>
               <disk type='network' device='disk'><source protocol='rbd' name='pool/boot'/><target dev='vda'/></disk>
               <disk type='file' device='disk'><source file='/img/data.raw'/><target dev='vdb'/></disk>
             </devices></domain>",
        )
        .expect("valid");
        assert_eq!(f.disks.len(), 1);
        assert!(
            f.boot_disk_dropped.as_deref().is_some_and(
                |d| d.starts_with("disk vda (/domain/devices/disk[1], line 2): a network disk")
            ),
            "{:?}",
            f.boot_disk_dropped
        );
        // A boot order puts the imported disk first: nothing is dropped that boots.
        let f = facts_of(
            "<domain><name>x</name><devices>
               <disk type='network' device='disk'><source protocol='rbd' name='pool/boot'/><target dev='vda'/></disk>
               <disk type='file' device='disk'><source file='/img/data.raw'/><target dev='vdb'/><boot order='1'/></disk>
             </devices></domain>",
        )
        .expect("valid");
        assert_eq!(f.boot_disk_dropped, None);
    }

    #[test]
    fn an_esx_auto_detect_cdrom_is_skipped() {
        let f = facts_of(
            "<domain><name>x</name><devices>
               <disk type='file' device='disk'><source file='/img/boot.vmdk'/><target dev='sda'/></disk>
               <disk type='block' device='lun'><source/><target dev='hdc' bus='ide'/></disk>
             </devices></domain>",
        )
        .expect("valid");
        assert_eq!(f.disks.len(), 1);
        assert!(
            f.unsupported.iter().any(|u| u
                .starts_with("disk hdc (/domain/devices/disk[2], line 3): a passthrough device")),
            "{:?}",
            f.unsupported
        );
        assert_eq!(f.boot_disk_dropped, None);
    }

    #[test]
    fn only_x86_guests_are_imported() {
        let arch = |a: &str| {
            facts_of(&format!(
                "<domain><name>x</name><os><type arch='{a}' machine='virt'>hvm</type></os><devices/></domain>"
            ))
        };
        assert!(arch("x86_64").is_ok());
        assert!(arch("i686").is_ok());
        for other in ["aarch64", "s390x", "ppc64le", "riscv64", "armv7l"] {
            assert_eq!(
                arch(other).expect_err(other),
                [format!(
                    "/domain/os/type/@arch: line 1: <os><type arch='{other}'>: hyper2kvm makes \
                     x86_64 KVM domains, which cannot boot a guest built for {other} (expected \
                     x86_64 or i686)"
                )]
            );
        }
    }

    #[test]
    fn current_vcpus_above_the_maximum_are_refused() {
        let got = facts_of("<domain><name>x</name><vcpu current='8'>4</vcpu><devices/></domain>")
            .expect_err("over");
        assert_eq!(
            got,
            [
                "/domain/vcpu: line 1: <vcpu current='8'> is more than the domain's maximum of 4: \
              libvirt refuses such a domain (expected current <= the <vcpu> count)"
            ]
        );
        let f = facts_of("<domain><name>x</name><vcpu current='2'>4</vcpu><devices/></domain>")
            .expect("under");
        assert_eq!((f.vcpus, f.vcpus_max), (Some(2), Some(4)));
    }

    #[test]
    fn both_nvram_forms_are_read() {
        let nvram = |el: &str| {
            facts_of(&format!(
                "<domain><name>x</name><os firmware='efi'>{el}</os><devices/></domain>"
            ))
            .expect("valid")
            .nvram
        };
        assert_eq!(
            nvram("<nvram>/var/lib/libvirt/qemu/nvram/x_VARS.fd</nvram>").as_deref(),
            Some("/var/lib/libvirt/qemu/nvram/x_VARS.fd")
        );
        assert_eq!(
            nvram("<nvram type='file'><source file='/srv/nvram/x_VARS.fd'/></nvram>").as_deref(),
            Some("/srv/nvram/x_VARS.fd")
        );
        assert_eq!(nvram("<nvram type='file'><source/></nvram>"), None);
    }

    #[test]
    fn firmware_detection() {
        let fw = |os: &str| {
            let f =
                facts_of(&format!("<domain><name>x</name>{os}<devices/></domain>")).expect("valid");
            (f.firmware, f.secureboot)
        };
        assert_eq!(fw(""), (None, false));
        assert_eq!(
            fw("<os><type>hvm</type></os>"),
            (Some(Firmware::Bios), false)
        );
        assert_eq!(fw("<os firmware='efi'/>"), (Some(Firmware::Uefi), false));
        assert_eq!(
            fw(
                "<os firmware='efi'><firmware><feature enabled='yes' name='secure-boot'/></firmware></os>"
            ),
            (Some(Firmware::Uefi), true)
        );
        assert_eq!(
            fw(
                "<os><loader readonly='yes' type='pflash' secure='yes'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader></os>"
            ),
            (Some(Firmware::Uefi), true)
        );
        assert_eq!(
            fw("<os><loader>/usr/share/edk2/ovmf/OVMF_CODE.fd</loader></os>"),
            (Some(Firmware::Uefi), false)
        );
    }
}
