//! The libvirt domain a converted VM gets, as planned: name, UUID, memory, vCPUs, firmware,
//! disk targets and interfaces. The planner (`plan::domain`) makes every choice, so `--dry-run`
//! shows exactly what will be written and [`super::emit`] only formats it. Defaults for memory
//! and vCPUs live here and only here; the firmware files are `tools::ovmf`'s.

use std::path::PathBuf;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::manifest::domain::format_uuid;
use crate::manifest::{CpuTopology, Hyperv, MacAddr, OutputFormat, Tpm};
use crate::mapping::InterfacePlan;

/// Memory for a VM whose manifest has no `vm.mem_gb` (the Python tool's `--memory` default).
pub const DEFAULT_MEMORY_GIB: u32 = 2;
/// vCPUs for a VM whose manifest has no `vm.cpu` (the Python tool's `--vcpus` default).
pub const DEFAULT_VCPUS: u32 = 2;

/// The XML namespace of the `<metadata>` element we add to domains. A URN, so it claims no
/// web domain.
pub const METADATA_NAMESPACE: &str = "urn:hyper2kvm:domain:1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FirmwarePlan {
    Bios,
    Uefi {
        loader: String,
        nvram_template: String,
        secure_boot: bool,
    },
}

/// How the domain runs its guest: `<domain type>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtType {
    /// Hardware virtualisation, the CPU passed through.
    #[default]
    Kvm,
    /// TCG emulation, for a host where KVM cannot run a guest (slow; the CPU is qemu's
    /// `maximum` model, as libvirt refuses host-passthrough without KVM).
    Qemu,
}

impl VirtType {
    pub fn name(self) -> &'static str {
        match self {
            VirtType::Kvm => "kvm",
            VirtType::Qemu => "qemu",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UuidOrigin {
    /// Derived from the VM's identity: new, but the same on every run.
    Derived,
    /// `source.uuid`, on request (`domain.preserve_uuid`).
    Preserved,
}

/// One converted disk as the domain sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DomainDisk {
    pub disk_id: String,
    pub path: PathBuf,
    pub format: OutputFormat,
    /// `vda`, `vdb`, … in boot order.
    pub target: String,
    /// 1-based; the boot disk is 1.
    pub boot_order: u32,
    /// `storage_mapping.default_pool`, recorded in the domain's metadata.
    pub pool: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DomainPlan {
    /// `<output_dir>/<name>.xml`
    pub path: PathBuf,
    pub name: String,
    pub uuid: String,
    pub uuid_origin: UuidOrigin,
    /// `kvm` as planned; the libvirt stage makes it `qemu` on a host where KVM cannot run.
    #[serde(skip)]
    pub virt_type: VirtType,
    pub memory_kib: u64,
    pub vcpus: u32,
    pub firmware: FirmwarePlan,
    /// Windows keeps its clock in local time.
    pub windows: bool,
    pub source_provider: Option<String>,
    pub source_vm_id: Option<String>,
    pub disks: Vec<DomainDisk>,
    pub interfaces: Vec<InterfacePlan>,
    /// `vm.tpm`, `vm.cpu_topology` and `vm.hyperv`, as the manifest has them.
    pub tpm: Option<Tpm>,
    pub cpu_topology: Option<CpuTopology>,
    pub hyperv: Option<Hyperv>,
}

impl DomainPlan {
    pub fn macs(&self) -> impl Iterator<Item = MacAddr> + '_ {
        self.interfaces.iter().map(|i| i.mac)
    }
}

/// The longest name a domain may have: the domain XML is written as `<name>.xml`, and a file
/// name has at most 255 bytes (as has libvirt's own `/etc/libvirt/qemu/<name>.xml`).
pub const MAX_NAME_BYTES: usize = 255 - ".xml".len();

/// Whether `name` can name a libvirt domain and its XML file: libvirt refuses a `/` in a name,
/// and the name is also our file name. The planner and the import both ask, so a name that the
/// run would refuse is refused at import, before any disk is converted.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("it is empty".to_owned());
    }
    if name.contains('/') {
        return Err("it contains '/'".to_owned());
    }
    if name.starts_with('.') {
        return Err("it starts with '.' (the domain XML file would be hidden)".to_owned());
    }
    if name.chars().any(char::is_control) {
        return Err("it contains control characters".to_owned());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "it is {} bytes long; the domain XML file <name>.xml allows at most {MAX_NAME_BYTES} \
             bytes (a file name has at most 255)",
            name.len()
        ));
    }
    Ok(())
}

/// `a`, …, `z`, `aa`, `ab`, … (libvirt's disk naming).
pub fn disk_letters(index: usize) -> String {
    let mut n = index + 1;
    let mut letters = Vec::new();
    while n > 0 {
        n -= 1;
        letters.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
    }
    letters.iter().rev().collect()
}

/// A UUID derived from the VM's identity (an RFC 9562 version 8 UUID over SHA-256): new, so it
/// cannot clash with the source VM's, yet the same on every run, so a re-run or a resumed batch
/// writes the same domain.
pub fn derive_uuid(identity: &str) -> String {
    let digest = Sha256::digest(format!("hyper2kvm uuid\0{identity}"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_letters_follow_libvirt() {
        assert_eq!(disk_letters(0), "a");
        assert_eq!(disk_letters(25), "z");
        assert_eq!(disk_letters(26), "aa");
        assert_eq!(disk_letters(27), "ab");
        assert_eq!(disk_letters(701), "zz");
        assert_eq!(disk_letters(702), "aaa");
    }

    #[test]
    fn names_that_cannot_be_domains() {
        assert!(check_name("web01").is_ok());
        assert!(check_name("a/b").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name(" ").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(check_name(&"x".repeat(MAX_NAME_BYTES + 1)).is_err());
        // Bytes, not characters: 126 two-byte characters are 252 bytes.
        assert!(check_name(&"é".repeat(126)).is_err());
    }

    #[test]
    fn derived_uuids_are_version_8_and_stable() {
        let u = derive_uuid("x");
        assert_eq!(u, derive_uuid("x"));
        assert_ne!(u, derive_uuid("y"));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "8");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert!(crate::manifest::domain::parse_uuid(&u).is_some());
    }
}
