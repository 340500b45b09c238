//! VMware and Hyper-V exports as sources: an OVA, an OVF directory, a VMX datastore folder, a
//! Hyper-V `Export-VM` folder. Each reader turns what the hypervisor wrote into
//! [`ExportFacts`], a pure description of the VM (with every problem at once, each named by its
//! file and place in it); [`import`] looks at the disks on this machine, verifies digests, and
//! writes a manifest that `--manifest` runs as it is.
//!
//! The readers never extract or copy: an OVA's disks are tar members, addressed in place by
//! their offset and size (see [`crate::manifest::TarMember`]); a VMX's descriptor VMDKs are read
//! as qemu-img reads them, with their extents checked to be files inside the VM's folder.

pub mod hyperv;
pub mod import;
pub mod mf;
pub mod ova;
pub mod ovf;
pub mod vmdk;
pub mod vmx;

use std::path::{Path, PathBuf};

use crate::diag::Problem;
pub use crate::manifest::source::ExportKind;
use crate::manifest::{Firmware, MacAddr, SourceFormat};

/// The controller a disk hangs off in the source VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Controller {
    /// SCSI with the source's adapter model (`lsilogic`, `pvscsi`, `buslogic`, `lsisas1068`...).
    Scsi(Option<String>),
    Sata,
    Ide,
    Nvme,
}

impl Controller {
    pub fn bus(&self) -> &'static str {
        match self {
            Controller::Scsi(_) => "scsi",
            Controller::Sata => "sata",
            Controller::Ide => "ide",
            Controller::Nvme => "nvme",
        }
    }
}

/// Where a disk's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskLocation {
    /// A file qemu-img opens itself: a monolithic image, or a VMDK descriptor whose extents
    /// the reader has checked (`extents`: every data file it names, in order; empty for a
    /// monolithic image). For a snapshot, `path` is the current state (the newest delta,
    /// the one the VMX names) and `parents` the descriptors it rests on, nearest first; their
    /// extents are in `extents` too.
    File {
        path: PathBuf,
        extents: Vec<PathBuf>,
        parents: Vec<PathBuf>,
    },
    /// A member of a tar archive (an OVA), read in place.
    Member {
        archive: PathBuf,
        name: String,
        offset: u64,
        size: u64,
    },
}

/// One disk of the export, in the VM's boot order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportDisk {
    /// The manifest's disk id (`disk0`, `disk1`...).
    pub id: String,
    /// Where the export describes it, for messages: `scsi0:0 in web01.vmx`, `Item 8 (line 52)`.
    pub described_at: String,
    pub controller: Option<Controller>,
    /// The unit on the controller (`scsi0:3` → 3), when the export says.
    pub unit: Option<u32>,
    pub location: DiskLocation,
    pub format: SourceFormat,
    /// The capacity the export declares (bytes), compared with qemu-img's virtual size.
    pub capacity: Option<u64>,
    /// The file name the export's digest list (`.mf`) knows it by, for an OVA or OVF.
    pub digest_name: Option<String>,
}

/// One network adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportNic {
    pub id: String,
    pub mac: Option<MacAddr>,
    /// The source network or port group name, which `network_mapping` maps.
    pub network: Option<String>,
    /// The source's adapter type (`vmxnet3`, `e1000`, `e1000e`, `netvsc`...).
    pub adapter: Option<String>,
}

/// Everything read from an export, before any disk is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportFacts {
    pub kind: ExportKind,
    /// The file (or folder) given on the command line, absolute.
    pub path: PathBuf,
    pub name: String,
    /// The source's own VM id (`vc.uuid`, the OVF VirtualSystem id, the Hyper-V VM id).
    pub vm_id: Option<String>,
    /// The BIOS UUID the guest sees (`uuid.bios`), in libvirt's form.
    pub uuid: Option<String>,
    pub vcpus: Option<u32>,
    pub cores_per_socket: Option<u32>,
    pub memory_mib: Option<u64>,
    pub firmware: Firmware,
    pub secureboot: bool,
    /// The source's guest OS identifier (`guestOS` in a VMX, `vmw:osType` or the CIM id of an
    /// OVF), as written.
    pub guest_os: Option<String>,
    /// The manifest's `vm.os_hint` for it (`rhel9`, `windows2019`...), when it is known.
    pub os_hint: Option<String>,
    /// The virtual hardware version (`vmx-19`), informational.
    pub hardware_version: Option<String>,
    /// In boot order.
    pub disks: Vec<ExportDisk>,
    pub nics: Vec<ExportNic>,
    /// What the export holds that the manifest does not carry (CD-ROMs, USB, serial ports,
    /// snapshots metadata...), each said in a sentence.
    pub notes: Vec<String>,
}

impl ExportFacts {
    pub fn new(kind: ExportKind, path: PathBuf, name: String) -> Self {
        Self {
            kind,
            path,
            name,
            vm_id: None,
            uuid: None,
            vcpus: None,
            cores_per_socket: None,
            memory_mib: None,
            firmware: Firmware::Bios,
            secureboot: false,
            guest_os: None,
            os_hint: None,
            hardware_version: None,
            disks: Vec::new(),
            nics: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// Why an export cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{kind} not found: {}", path.display())]
    NotFound { kind: ExportKind, path: PathBuf },
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is {size} bytes; the limit for {what} is {limit} bytes", path.display())]
    TooLarge {
        path: PathBuf,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error(
        "invalid {kind} {} ({} problem{}):\n{}",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        crate::diag::render_problems(problems)
    )]
    Invalid {
        kind: ExportKind,
        path: PathBuf,
        problems: Vec<Problem>,
    },
    /// Refused as a whole, with what to do (an encrypted VM, a compressed OVA, a `.vmcx`).
    #[error("{} cannot be imported: {why}", path.display())]
    Refused { path: PathBuf, why: String },
    #[error(
        "{} already exists; remove it or pass --overwrite",
        path.display()
    )]
    Exists { path: PathBuf },
    #[error(transparent)]
    Tool(#[from] crate::exec::ExecError),
    #[error("could not compute the checksum of disk {disk}")]
    Checksum {
        disk: String,
        #[source]
        source: crate::checksum::ChecksumError,
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
        source: Box<crate::manifest::ManifestError>,
    },
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
}

impl ExportError {
    /// Whether the machine, not the input, is at fault (a missing tool).
    pub fn is_environment(&self) -> bool {
        matches!(self, ExportError::Tool(_))
    }
}

/// The error for a file that cannot be opened or listed: `NotFound` names the export kind.
pub(crate) fn open_error(kind: ExportKind, path: &Path, source: std::io::Error) -> ExportError {
    if source.kind() == std::io::ErrorKind::NotFound {
        ExportError::NotFound {
            kind,
            path: path.to_owned(),
        }
    } else {
        ExportError::Read {
            path: path.to_owned(),
            source,
        }
    }
}

/// Reads a small file whole: a regular file of at most `limit` bytes, `what` it is said to be
/// in the refusals. The file is opened once and checked through that handle, so the file
/// checked is the file read.
pub(crate) fn read_small(
    kind: ExportKind,
    path: &Path,
    what: &'static str,
    limit: u64,
) -> Result<Vec<u8>, ExportError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| open_error(kind, path, e))?;
    let read = |source| ExportError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = file.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(ExportError::Refused {
            path: path.to_owned(),
            why: format!("it is not a regular file (expected {what})"),
        });
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(read)?;
    if bytes.len() as u64 > limit {
        return Err(ExportError::TooLarge {
            path: path.to_owned(),
            what,
            size: meta.len().max(bytes.len() as u64),
            limit,
        });
    }
    Ok(bytes)
}

/// Whether a file name ends with `ext`, in any case (`.OVF`, `.Vhdx`).
pub(crate) fn ends_with_ci(name: &str, ext: &str) -> bool {
    name.len() >= ext.len()
        && name.is_char_boundary(name.len() - ext.len())
        && name[name.len() - ext.len()..].eq_ignore_ascii_case(ext)
}

/// A path's last component as text, for messages (the whole path when it has none).
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Collects problems as `file: place: message`, the way every reader reports them.
#[derive(Debug, Default)]
pub struct Collected(pub Vec<Problem>);

impl Collected {
    pub fn push(&mut self, place: impl Into<String>, message: impl Into<String>) {
        let mut p = crate::diag::Problems::default();
        p.push(&place.into(), message);
        self.0.extend(p.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result<T>(
        self,
        kind: ExportKind,
        path: &std::path::Path,
        value: T,
    ) -> Result<T, ExportError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ExportError::Invalid {
                kind,
                path: path.to_owned(),
                problems: self.0,
            })
        }
    }
}

/// The manifest's `vm.os_hint` for a VMware guest OS identifier (`guestOS` in a VMX,
/// `vmw:osType` in an OVF): `rhel9_64Guest` → `rhel9`, `windows2019srv_64Guest` →
/// `windows2019`, `debian12_64Guest` → `debian12`, `ubuntu64Guest` → `ubuntu`. `None` for an
/// identifier this table does not know (`otherLinux64Guest`), which the import notes.
pub fn os_hint_of_vmware(guest_os: &str) -> Option<String> {
    let id = guest_os.to_ascii_lowercase();
    let id = id.strip_suffix("guest").unwrap_or(&id);
    let id = id.strip_suffix("-64").unwrap_or(id);
    let id = id.strip_suffix("_64").unwrap_or(id);
    let id = id.strip_suffix("64").unwrap_or(id);
    let families: &[(&str, &str)] = &[
        ("rhel", "rhel"),
        ("centos", "centos"),
        ("rockylinux", "rocky"),
        ("almalinux", "almalinux"),
        ("oraclelinux", "ol"),
        ("debian", "debian"),
        ("ubuntu", "ubuntu"),
        ("sles", "sles"),
        ("opensuse", "opensuse"),
        ("fedora", "fedora"),
        ("amazonlinux", "amazonlinux"),
        ("windows", "windows"),
        ("freebsd", "freebsd"),
    ];
    let (prefix, family) = families.iter().find(|(p, _)| id.starts_with(p))?;
    let rest = &id[prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if *family == "windows" {
        // windows9 is Windows 10/11 (VMware's id); windows2019srv, windows2022srvnext...
        return match digits.as_str() {
            "9" => Some("windows10".to_owned()),
            "" => None,
            d => Some(format!("windows{d}")),
        };
    }
    Some(format!("{family}{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmware_guest_os_ids_map_to_hints() {
        for (id, hint) in [
            ("rhel9_64Guest", Some("rhel9")),
            ("rhel7-64", Some("rhel7")),
            ("debian12_64Guest", Some("debian12")),
            ("ubuntu64Guest", Some("ubuntu")),
            ("windows2019srv_64Guest", Some("windows2019")),
            ("windows9-64", Some("windows10")),
            ("sles15_64Guest", Some("sles15")),
            ("otherLinux64Guest", None),
            ("windows7Server64Guest", Some("windows7")),
        ] {
            assert_eq!(os_hint_of_vmware(id).as_deref(), hint, "{id}");
        }
    }
}
