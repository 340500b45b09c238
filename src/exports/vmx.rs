//! A VMware `.vmx` file as a source (`--vmx FILE`): the VM's configuration, read into
//! [`ExportFacts`], with its disks followed through their VMDK descriptors
//! ([`super::vmdk::resolve_chain`]) inside the VM's folder.
//!
//! A VMX is one `key = "value"` a line (`#` starts a comment). Keys are case-insensitive; a
//! value is always quoted, with `|XX` escaping a byte in hex (`|22` is `"`, `|7C` is `|`); when
//! a key is written twice the last one counts, as in VMware. Every problem is reported at once,
//! each at `web01.vmx: line N` (or at the key, when the key is missing).
//!
//! Disks are numbered `disk0`, `disk1`... in this order: first the devices `bios.hddOrder`
//! (then `bios.bootOrder`) names, in their order; then every other disk by controller family
//! (SCSI, SATA, NVMe, IDE), each by controller number, then unit.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use super::vmdk;
use super::{
    Collected, Controller, ExportDisk, ExportError, ExportFacts, ExportKind, ExportNic,
    os_hint_of_vmware,
};
use crate::diag::excerpt;
use crate::manifest::{Firmware, MacAddr, SourceFormat};

/// The largest VMX file read. Real ones are a few KiB.
pub const VMX_LIMIT: u64 = 4 * 1024 * 1024;

/// What an encrypted VM is refused with.
const ENCRYPTED: &str =
    "the VM is encrypted; decrypt it in vSphere or Workstation first (hyper2kvm takes no keys)";

/// The keys an encrypted VM's VMX has.
const ENCRYPTION_KEYS: &[&str] = &["encryption.keysafe", "encryption.data", "datafilekey"];

/// One `key = "value"` line.
#[derive(Clone, Debug)]
struct Entry {
    /// As written, for messages.
    key: String,
    /// Decoded.
    value: String,
    line: usize,
}

/// The parsed file: entries by lower-cased key.
struct Vmx {
    file: String,
    entries: HashMap<String, Entry>,
}

impl Vmx {
    fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|e| e.value.as_str())
    }

    /// A boolean key as VMware reads it: `TRUE` (or `yes`, `1`), any case.
    fn is_true(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("yes") || v == "1"
        })
    }

    /// Where a key is, for a problem: its line, or the key when it is not there.
    fn place(&self, key: &str) -> String {
        match self.entries.get(key) {
            Some(e) => format!("{}: line {}", self.file, e.line),
            None => format!("{}: {key}", self.file),
        }
    }

    /// The key as written in the file, or as given.
    fn written<'a>(&'a self, key: &'a str) -> &'a str {
        self.entries.get(key).map_or(key, |e| e.key.as_str())
    }
}

/// Decodes a quoted value's `|XX` escapes; a `|` not followed by two hex digits stays.
fn decode_value(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'|'
            && let Some(hex) = raw.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
            && hex.bytes().all(|c| c.is_ascii_hexdigit())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a declared `.encoding` is one whose bytes map one to one to code points.
fn is_latin1(encoding: &str) -> bool {
    matches!(
        encoding.to_ascii_lowercase().as_str(),
        "windows-1252" | "iso-8859-1" | "iso-8859-15" | "latin1" | "us-ascii"
    )
}

/// Parses the lines of a VMX, reporting each line that is not `key = "value"`.
fn parse(file: &str, bytes: &[u8], problems: &mut Collected) -> Vmx {
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut encoding: Option<String> = None;
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let place = format!("{file}: line {line_no}");
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t.to_owned(),
            Err(_) => match &encoding {
                Some(e) if is_latin1(e) => raw.iter().map(|&b| char::from(b)).collect(),
                other => {
                    problems.push(
                        place,
                        format!(
                            "is not valid UTF-8 (the file declares .encoding = {}); save the \
                             VMX as UTF-8",
                            other.as_deref().unwrap_or("nothing")
                        ),
                    );
                    continue;
                }
            },
        };
        let line = text.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line.split_once('=').and_then(|(key, rest)| {
            let key = key.trim();
            let rest = rest.trim().strip_prefix('"')?;
            let (value, after) = rest.split_once('"')?;
            let after = after.trim();
            let valid_key = !key.is_empty() && !key.contains(char::is_whitespace);
            (valid_key && (after.is_empty() || after.starts_with('#'))).then_some((key, value))
        });
        let Some((key, value)) = parsed else {
            problems.push(
                place,
                format!("expected key = \"value\", found '{}'", excerpt(line)),
            );
            continue;
        };
        let value = decode_value(value);
        let lower = key.to_ascii_lowercase();
        if lower == ".encoding" {
            encoding = Some(value.clone());
        }
        entries.insert(
            lower,
            Entry {
                key: key.to_owned(),
                value,
                line: line_no,
            },
        );
    }
    Vmx {
        file: file.to_owned(),
        entries,
    }
}

/// A VMware UUID (`56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc`) in libvirt's form
/// (`564d1234-5678-9abc-def0-123456789abc`), when it is 16 bytes of hex.
fn libvirt_uuid(value: &str) -> Option<String> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    crate::manifest::domain::parse_uuid(&compact)
}

/// Reads a VMX file into the facts of its VM: identity, CPUs, memory, firmware, guest OS, its
/// disks (each followed through its VMDK descriptor chain, inside the VMX's folder), its NICs,
/// and notes for what is not carried. Every problem is reported at once as
/// [`ExportError::Invalid`]; an encrypted VM is [`ExportError::Refused`].
pub fn read_vmx(path: &Path) -> Result<ExportFacts, ExportError> {
    let abs = std::path::absolute(path).map_err(|source| ExportError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bytes = super::read_small(
        ExportKind::Vmx,
        &abs,
        "the .vmx file in the VM's folder",
        VMX_LIMIT,
    )?;
    let file = abs.file_name().map_or_else(
        || abs.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut problems = Collected::default();
    let vmx = parse(&file, &bytes, &mut problems);
    if ENCRYPTION_KEYS.iter().any(|k| vmx.get(k).is_some()) {
        return Err(ExportError::Refused {
            path: abs,
            why: ENCRYPTED.to_owned(),
        });
    }
    let stem = abs
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.clone());
    let name = vmx
        .get("displayname")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map_or_else(|| stem.clone(), str::to_owned);
    let mut facts = ExportFacts::new(ExportKind::Vmx, abs.clone(), name);
    read_machine(&vmx, &mut facts, &mut problems);
    let folder = abs.parent().unwrap_or(Path::new("/")).to_owned();
    read_disks(&vmx, &folder, &mut facts, &mut problems);
    read_nics(&vmx, &mut facts, &mut problems);
    read_notes(&vmx, &folder, &stem, &mut facts);
    problems.into_result(ExportKind::Vmx, &abs, facts)
}

/// A number key, `None` when absent; a value that is not a positive number is a problem.
fn positive<T: std::str::FromStr + PartialOrd + Default>(
    vmx: &Vmx,
    key: &str,
    what: &str,
    problems: &mut Collected,
) -> Option<T> {
    let value = vmx.get(key)?;
    match value.trim().parse::<T>() {
        Ok(n) if n > T::default() => Some(n),
        _ => {
            problems.push(
                vmx.place(key),
                format!(
                    "{} \"{}\": expected {what}",
                    vmx.written(key),
                    excerpt(value)
                ),
            );
            None
        }
    }
}

/// Identity, CPUs, memory, firmware, guest OS, hardware version.
fn read_machine(vmx: &Vmx, facts: &mut ExportFacts, problems: &mut Collected) {
    if let Some(raw) = vmx.get("uuid.bios") {
        match libvirt_uuid(raw) {
            Some(u) => facts.uuid = Some(u),
            None => problems.push(
                vmx.place("uuid.bios"),
                format!(
                    "{} \"{}\": expected 16 bytes in hex (56 4d 12 34 56 78 9a bc-de f0 12 34 \
                     56 78 9a bc)",
                    vmx.written("uuid.bios"),
                    excerpt(raw)
                ),
            ),
        }
    }
    facts.vm_id = vmx
        .get("vc.uuid")
        .map(|v| libvirt_uuid(v).unwrap_or_else(|| v.trim().to_owned()))
        .or_else(|| facts.uuid.clone());
    facts.vcpus = Some(
        positive::<u32>(
            vmx,
            "numvcpus",
            "a number of virtual CPUs (1 or more)",
            problems,
        )
        .unwrap_or(1),
    );
    facts.cores_per_socket = positive::<u32>(
        vmx,
        "cpuid.corespersocket",
        "a number of cores per socket (1 or more)",
        problems,
    );
    facts.memory_mib = positive::<u64>(vmx, "memsize", "a memory size in MiB", problems);
    match vmx.get("firmware").map(|f| f.trim().to_ascii_lowercase()) {
        None => {}
        Some(f) if f == "bios" => {}
        Some(f) if f == "efi" => facts.firmware = Firmware::Uefi,
        Some(f) => problems.push(
            vmx.place("firmware"),
            format!(
                "{} \"{}\": expected \"bios\" or \"efi\"",
                vmx.written("firmware"),
                excerpt(&f)
            ),
        ),
    }
    if vmx.is_true("uefi.secureboot.enabled") {
        if facts.firmware == Firmware::Uefi {
            facts.secureboot = true;
        } else {
            facts.notes.push(format!(
                "{} says uefi.secureBoot.enabled but the firmware is BIOS; secure boot is off",
                vmx.file
            ));
        }
    }
    if let Some(os) = vmx.get("guestos").map(str::trim).filter(|o| !o.is_empty()) {
        facts.guest_os = Some(os.to_owned());
        facts.os_hint = os_hint_of_vmware(os);
    }
    if let Some(v) = vmx.get("virtualhw.version") {
        match v.trim().parse::<u32>() {
            Ok(n) => facts.hardware_version = Some(format!("vmx-{n:02}")),
            Err(_) => facts.notes.push(format!(
                "{}: virtualHW.version \"{}\" is not a number; the hardware version is not \
                 recorded",
                vmx.place("virtualhw.version"),
                excerpt(v)
            )),
        }
    }
}

/// The controller families, in the order disks are numbered after `bios.hddOrder`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Scsi,
    Sata,
    Nvme,
    Ide,
}

impl Family {
    fn prefix(self) -> &'static str {
        match self {
            Family::Scsi => "scsi",
            Family::Sata => "sata",
            Family::Nvme => "nvme",
            Family::Ide => "ide",
        }
    }

    /// The most controllers of the family a VM has (`scsi0`..`scsi3`, `ide0`..`ide1`).
    fn controllers(self) -> u32 {
        match self {
            Family::Ide => 2,
            _ => 4,
        }
    }
}

/// A device slot (`scsi0:1`) named by a key (`scsi0:1.fileName`).
fn slot_of(key: &str) -> Option<(Family, u32, u32)> {
    let (device, _) = key.split_once('.')?;
    let (family, rest) = [Family::Scsi, Family::Sata, Family::Nvme, Family::Ide]
        .into_iter()
        .find_map(|f| device.strip_prefix(f.prefix()).map(|r| (f, r)))?;
    let (n, m) = rest.split_once(':')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(n) || !digits(m) {
        return None;
    }
    Some((family, n.parse().ok()?, m.parse().ok()?))
}

/// What a device slot holds, from its `deviceType`.
enum Holds {
    Disk,
    Cdrom,
    Passthrough,
    HostDisk,
    Unknown,
}

fn holds(device_type: Option<&str>) -> Holds {
    match device_type
        .map(|t| t.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "scsi-harddisk" | "disk" | "ata-harddisk" | "plaindisk") => Holds::Disk,
        Some("cdrom-image" | "cdrom-raw" | "atapi-cdrom") => Holds::Cdrom,
        Some("scsi-passthru") => Holds::Passthrough,
        Some("rawdisk") => Holds::HostDisk,
        Some(_) => Holds::Unknown,
    }
}

/// A disk found in the VMX, before its id is given.
struct Found {
    slot: (Family, u32, u32),
    device: String,
}

/// Every present hard disk, followed through its descriptor chain; CD-ROMs and other devices
/// on the disk controllers become notes.
fn read_disks(vmx: &Vmx, folder: &Path, facts: &mut ExportFacts, problems: &mut Collected) {
    let slots: BTreeSet<(Family, u32, u32)> =
        vmx.entries.keys().filter_map(|k| slot_of(k)).collect();
    let mut found = Vec::new();
    for slot in slots {
        let (family, n, m) = slot;
        let device = format!("{}{n}:{m}", family.prefix());
        if !vmx.is_true(&format!("{device}.present")) {
            continue;
        }
        let controller = format!("{}{n}", family.prefix());
        if n >= family.controllers() {
            facts.notes.push(format!(
                "{device} is on {controller}, which VMware does not have; it is ignored"
            ));
            continue;
        }
        if family != Family::Ide && !vmx.is_true(&format!("{controller}.present")) {
            facts.notes.push(format!(
                "{device} is on {controller}, which is not present; VMware ignores it, and so \
                 does the import"
            ));
            continue;
        }
        let type_key = format!("{device}.devicetype");
        let file = vmx
            .get(&format!("{device}.filename"))
            .map(str::trim)
            .filter(|f| !f.is_empty());
        let with_file = file
            .map(|f| format!(" ({})", excerpt(f)))
            .unwrap_or_default();
        match holds(vmx.get(&type_key)) {
            Holds::Disk => found.push(Found { slot, device }),
            Holds::Cdrom => facts
                .notes
                .push(format!("{device} is a CD-ROM{with_file}; not carried")),
            Holds::Passthrough => facts.notes.push(format!(
                "{device} is a passthrough SCSI device of the host{with_file}; not carried"
            )),
            Holds::HostDisk => problems.push(
                vmx.place(&type_key),
                format!(
                    "{device} is a physical disk of the host (deviceType rawDisk); copy it to a \
                     file first"
                ),
            ),
            Holds::Unknown => problems.push(
                vmx.place(&type_key),
                format!(
                    "{} \"{}\": expected a disk (scsi-hardDisk, ata-hardDisk, disk) or a CD-ROM \
                     (cdrom-image, cdrom-raw, atapi-cdrom)",
                    vmx.written(&type_key),
                    excerpt(vmx.get(&type_key).unwrap_or(""))
                ),
            ),
        }
    }
    if vmx.is_true("floppy0.present") {
        let file = vmx
            .get("floppy0.filename")
            .map(|f| format!(" ({})", excerpt(f)))
            .unwrap_or_default();
        facts
            .notes
            .push(format!("floppy0 is a floppy drive{file}; not carried"));
    }
    if found.is_empty() {
        problems.push(vmx.file.clone(), "no hard disk is present");
        return;
    }
    order_for_boot(vmx, &mut found);
    let folder_canon = match folder.canonicalize() {
        Ok(f) => f,
        Err(e) => {
            problems.push(
                vmx.file.clone(),
                format!("cannot resolve the VM's folder {}: {e}", folder.display()),
            );
            return;
        }
    };
    for (i, disk) in found.iter().enumerate() {
        let id = format!("disk{i}");
        if let Some(d) = read_disk(vmx, folder, &folder_canon, &id, disk, facts, problems) {
            facts.disks.push(d);
        }
    }
}

/// Puts the disks `bios.hddOrder` and `bios.bootOrder` name first, in their order; the rest
/// stay in slot order.
fn order_for_boot(vmx: &Vmx, found: &mut Vec<Found>) {
    let named: Vec<String> = ["bios.hddorder", "bios.bootorder"]
        .iter()
        .filter_map(|k| vmx.get(k))
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    let mut ordered = Vec::with_capacity(found.len());
    for name in &named {
        if let Some(at) = found.iter().position(|f| &f.device == name) {
            ordered.push(found.remove(at));
        }
    }
    ordered.append(found);
    *found = ordered;
}

/// One hard disk: its file checked to be in the VM's folder and followed through its chain.
fn read_disk(
    vmx: &Vmx,
    folder: &Path,
    folder_canon: &Path,
    id: &str,
    disk: &Found,
    facts: &mut ExportFacts,
    problems: &mut Collected,
) -> Option<ExportDisk> {
    let (family, n, m) = disk.slot;
    let device = &disk.device;
    let file_key = format!("{device}.filename");
    let Some(file) = vmx.get(&file_key).map(str::trim).filter(|f| !f.is_empty()) else {
        problems.push(
            vmx.place(&file_key),
            format!("{device} is a hard disk without a fileName"),
        );
        return None;
    };
    let key = vmx.written(&file_key).to_owned();
    let path = match vmdk::inside_folder(folder, file, folder_canon) {
        Ok(p) => p,
        Err(why) => {
            problems.push(vmx.place(&file_key), format!("{key}: {why}"));
            return None;
        }
    };
    let is_vmdk = Path::new(file)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("vmdk"));
    if !is_vmdk {
        problems.push(
            vmx.place(&file_key),
            format!(
                "{key}: {} is not a .vmdk; a VMware hard disk is a VMDK descriptor or sparse \
                 image",
                excerpt(file)
            ),
        );
        return None;
    }
    let (location, descriptor) = vmdk::resolve(&path, folder_canon, problems)?;
    if let super::DiskLocation::File { parents, .. } = &location
        && !parents.is_empty()
    {
        facts.notes.push(format!(
            "{id} is the current state of a snapshot chain of {} files; the conversion reads \
             through it",
            parents.len() + 1
        ));
    }
    let mode_key = format!("{device}.mode");
    if vmx
        .get(&mode_key)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("independent-nonpersistent"))
    {
        facts.notes.push(format!(
            "{id} ({device}) is independent-nonpersistent: VMware discards its changes at power \
             off, and the conversion reads the disk as it is in the folder"
        ));
    }
    let controller = match family {
        Family::Scsi => Controller::Scsi(
            vmx.get(&format!("scsi{n}.virtualdev"))
                .map(|v| v.trim().to_ascii_lowercase())
                .filter(|v| !v.is_empty()),
        ),
        Family::Sata => Controller::Sata,
        Family::Nvme => Controller::Nvme,
        Family::Ide => Controller::Ide,
    };
    Some(ExportDisk {
        id: id.to_owned(),
        described_at: format!("{device} in {}", vmx.file),
        controller: Some(controller),
        unit: Some(m),
        location,
        format: SourceFormat::Vmdk,
        capacity: descriptor.as_ref().and_then(vmdk::Descriptor::capacity),
        digest_name: None,
    })
}

/// The `ethernetN` adapters that are present, by N.
fn read_nics(vmx: &Vmx, facts: &mut ExportFacts, problems: &mut Collected) {
    let numbers: BTreeSet<u32> = vmx
        .entries
        .keys()
        .filter_map(|k| {
            let (device, _) = k.split_once('.')?;
            let n = device.strip_prefix("ethernet")?;
            n.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| n.parse().ok())?
        })
        .collect();
    for n in numbers {
        let dev = format!("ethernet{n}");
        if !vmx.is_true(&format!("{dev}.present")) {
            continue;
        }
        let id = format!("nic{}", facts.nics.len());
        let address_type = vmx
            .get(&format!("{dev}.addresstype"))
            .map(|t| t.trim().to_ascii_lowercase());
        let mac_key = if address_type.as_deref() == Some("static") {
            format!("{dev}.address")
        } else {
            format!("{dev}.generatedaddress")
        };
        let mac = match vmx.get(&mac_key).map(str::trim) {
            Some(raw) => match MacAddr::parse(raw) {
                Some(m) => Some(m),
                None => {
                    problems.push(
                        vmx.place(&mac_key),
                        format!(
                            "{} \"{}\": expected a MAC address (00:50:56:ab:cd:ef)",
                            vmx.written(&mac_key),
                            excerpt(raw)
                        ),
                    );
                    None
                }
            },
            None if address_type.as_deref() == Some("static") => {
                problems.push(
                    vmx.place(&mac_key),
                    format!("{dev}.addressType is static but {dev}.address is missing"),
                );
                None
            }
            None => {
                facts.notes.push(format!(
                    "{id} ({dev}) has no generatedAddress (VMware assigns one at the first power \
                     on); the migrated NIC gets a new MAC"
                ));
                None
            }
        };
        let network = ["networkname", "vnet", "connectiontype"]
            .iter()
            .find_map(|k| vmx.get(&format!("{dev}.{k}")))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let adapter = match vmx
            .get(&format!("{dev}.virtualdev"))
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
        {
            Some(a) => a,
            None => {
                facts.notes.push(format!(
                    "{id} ({dev}) has no virtualDev; VMware's default, e1000, is assumed"
                ));
                "e1000".to_owned()
            }
        };
        facts.nics.push(ExportNic {
            id,
            mac,
            network,
            adapter: Some(adapter),
        });
    }
}

/// Notes for what the VM has that the manifest does not carry.
fn read_notes(vmx: &Vmx, folder: &Path, stem: &str, facts: &mut ExportFacts) {
    let vmsd = folder.join(format!("{stem}.vmsd"));
    let snapshot_keys = vmx.entries.keys().any(|k| k.starts_with("snapshot."));
    if std::fs::metadata(&vmsd).is_ok_and(|m| m.len() > 0) || snapshot_keys {
        facts.notes.push(format!(
            "{} has snapshots ({stem}.vmsd); only the current state is carried",
            vmx.file
        ));
    }
    let mut devices = |present: bool, what: &str| {
        if present {
            facts.notes.push(format!("{what}; not carried"));
        }
    };
    devices(vmx.is_true("sound.present"), "the VM has a sound card");
    devices(
        vmx.is_true("usb.present")
            || vmx.is_true("usb_xhci.present")
            || vmx.is_true("ehci.present"),
        "the VM has a USB controller",
    );
    let numbered = |prefix: &str| -> Vec<String> {
        let mut names: Vec<String> = vmx
            .entries
            .keys()
            .filter_map(|k| {
                let device = k.strip_suffix(".present")?;
                let n = device.strip_prefix(prefix)?;
                (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && vmx.is_true(k))
                    .then(|| device.to_owned())
            })
            .collect();
        names.sort();
        names
    };
    for (prefix, what) in [
        ("serial", "a serial port"),
        ("parallel", "a parallel port"),
        ("sharedfolder", "a shared folder"),
    ] {
        for device in numbered(prefix) {
            facts.notes.push(format!("{device} is {what}; not carried"));
        }
    }
    let mut sched: Vec<String> = vmx
        .entries
        .iter()
        .filter(|(k, e)| {
            let v = e.value.trim();
            (k.starts_with("sched.") && k.ends_with(".min") && v != "0")
                || (k.starts_with("sched.")
                    && k.ends_with(".shares")
                    && !v.eq_ignore_ascii_case("normal"))
        })
        .map(|(_, e)| format!("{} = \"{}\"", e.key, excerpt(&e.value)))
        .collect();
    if !sched.is_empty() {
        sched.sort();
        facts.notes.push(format!(
            "resource reservations and shares ({}) are not carried",
            sched.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exports::DiskLocation;
    use crate::exports::vmdk::tests::{sparse, write, write_descriptor};

    /// A VM folder with `web01.vmx` (the given lines after a common head) and a flat disk
    /// `web01.vmdk`.
    fn vm(lines: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        write_descriptor(
            dir.path(),
            "web01.vmdk",
            "vmfs",
            "abcd1234",
            None,
            &[r#"RW 8388608 VMFS "web01-flat.vmdk""#],
        );
        write(dir.path(), "web01-flat.vmdk", b"");
        let text = format!(
            ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\n{lines}"
        );
        let vmx = write(dir.path(), "web01.vmx", text.as_bytes());
        (dir, vmx)
    }

    const DISK: &str = "scsi0.present = \"TRUE\"\nscsi0.virtualDev = \"pvscsi\"\n\
                        scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"web01.vmdk\"\n";

    fn invalid(r: Result<ExportFacts, ExportError>) -> Vec<String> {
        match r {
            Err(ExportError::Invalid { kind, problems, .. }) => {
                assert_eq!(kind, ExportKind::Vmx);
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_workstation_vm_gives_its_facts() {
        let (dir, path) = vm(&format!(
            "displayName = \"web |22prod|22 |7C 01\"\nguestOS = \"rhel9-64\"\n\
             numvcpus = \"4\"\ncpuid.coresPerSocket = \"2\"\nmemsize = \"4096\"\n\
             firmware = \"efi\"\nuefi.secureBoot.enabled = \"TRUE\"\n\
             uuid.bios = \"56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc\"\n\
             vc.uuid = \"52 11 22 33 44 55 66 77-88 99 aa bb cc dd ee ff\"\n\
             # a comment\n\n{DISK}\
             ide1:0.present = \"TRUE\"\nide1:0.deviceType = \"cdrom-image\"\n\
             ide1:0.fileName = \"rhel9.iso\"\n\
             ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\n\
             ethernet0.networkName = \"VM Network\"\nethernet0.addressType = \"generated\"\n\
             ethernet0.generatedAddress = \"00:0c:29:ab:cd:ef\"\n\
             memsize = \"8192\"\n"
        ));
        let facts = read_vmx(&path).expect("valid");
        assert_eq!(facts.kind, ExportKind::Vmx);
        assert_eq!(facts.name, "web \"prod\" | 01");
        assert_eq!(facts.guest_os.as_deref(), Some("rhel9-64"));
        assert_eq!(facts.os_hint.as_deref(), Some("rhel9"));
        assert_eq!(facts.vcpus, Some(4));
        assert_eq!(facts.cores_per_socket, Some(2));
        // Written twice: the last one counts.
        assert_eq!(facts.memory_mib, Some(8192));
        assert_eq!(facts.firmware, Firmware::Uefi);
        assert!(facts.secureboot);
        assert_eq!(
            facts.uuid.as_deref(),
            Some("564d1234-5678-9abc-def0-123456789abc")
        );
        assert_eq!(
            facts.vm_id.as_deref(),
            Some("52112233-4455-6677-8899-aabbccddeeff")
        );
        assert_eq!(facts.hardware_version.as_deref(), Some("vmx-19"));
        assert_eq!(
            facts.disks,
            [ExportDisk {
                id: "disk0".into(),
                described_at: "scsi0:0 in web01.vmx".into(),
                controller: Some(Controller::Scsi(Some("pvscsi".into()))),
                unit: Some(0),
                location: DiskLocation::File {
                    path: dir.path().join("web01.vmdk"),
                    extents: vec![dir.path().join("web01-flat.vmdk")],
                    parents: vec![],
                },
                format: SourceFormat::Vmdk,
                capacity: Some(8388608 * 512),
                digest_name: None,
            }]
        );
        assert_eq!(
            facts.nics,
            [ExportNic {
                id: "nic0".into(),
                mac: MacAddr::parse("00:0c:29:ab:cd:ef"),
                network: Some("VM Network".into()),
                adapter: Some("vmxnet3".into()),
            }]
        );
        assert_eq!(facts.notes, ["ide1:0 is a CD-ROM (rhel9.iso); not carried"]);
    }

    #[test]
    fn defaults_when_the_vmx_says_little() {
        let (_dir, path) = vm(DISK);
        let facts = read_vmx(&path).expect("valid");
        assert_eq!(facts.name, "web01");
        assert_eq!(facts.vcpus, Some(1));
        assert_eq!(facts.firmware, Firmware::Bios);
        assert!(!facts.secureboot);
        assert_eq!(facts.uuid, None);
        assert_eq!(facts.vm_id, None);
        assert!(facts.path.is_absolute());
    }

    #[test]
    fn an_encrypted_vm_is_refused_as_a_whole() {
        for key in ["encryption.keySafe", "encryption.data", "dataFileKey"] {
            let (_dir, path) = vm(&format!(
                "{DISK}{key} = \"vmware:key/list/x\"\nbroken line\n"
            ));
            match read_vmx(&path) {
                Err(ExportError::Refused { why, .. }) => assert_eq!(why, ENCRYPTED, "{key}"),
                other => panic!("{key}: expected Refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_bad_line_is_a_problem_with_its_number() {
        let (_dir, path) = vm(&format!(
            "{DISK}memsize 4096\nnumvcpus = 2\nguestOS = \"rhel9\" trailing\n\
             numvcpus = \"many\"\nfirmware = \"coreboot\"\n"
        ));
        assert_eq!(
            invalid(read_vmx(&path)),
            [
                "web01.vmx: line 8: expected key = \"value\", found 'memsize 4096'",
                "web01.vmx: line 9: expected key = \"value\", found 'numvcpus = 2'",
                "web01.vmx: line 10: expected key = \"value\", found 'guestOS = \"rhel9\" \
                 trailing'",
                "web01.vmx: line 11: numvcpus \"many\": expected a number of virtual CPUs (1 or \
                 more)",
                "web01.vmx: line 12: firmware \"coreboot\": expected \"bios\" or \"efi\"",
            ]
        );
    }

    #[test]
    fn a_snapshot_is_read_through_its_chain_and_noted() {
        let (dir, path) = vm("scsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\n\
             scsi0:0.fileName = \"web01-000001.vmdk\"\nscsi0:0.mode = \"independent-nonpersistent\"\n");
        let d = dir.path();
        write_descriptor(
            d,
            "web01-000001.vmdk",
            "vmfsSparse",
            "0000beef",
            Some(("abcd1234", "web01.vmdk")),
            &[r#"RW 8388608 VMFSSPARSE "web01-000001-delta.vmdk""#],
        );
        write(d, "web01-000001-delta.vmdk", b"COWD");
        write(
            d,
            "web01.vmsd",
            b".encoding = \"UTF-8\"\nsnapshot.numSnapshots = \"1\"\n",
        );
        let facts = read_vmx(&path).expect("valid");
        assert_eq!(
            facts.disks[0].location,
            DiskLocation::File {
                path: d.join("web01-000001.vmdk"),
                extents: vec![d.join("web01-000001-delta.vmdk"), d.join("web01-flat.vmdk")],
                parents: vec![d.join("web01.vmdk")],
            }
        );
        assert_eq!(facts.disks[0].controller, Some(Controller::Scsi(None)));
        assert_eq!(
            facts.notes,
            [
                "disk0 is the current state of a snapshot chain of 2 files; the conversion \
                 reads through it",
                "disk0 (scsi0:0) is independent-nonpersistent: VMware discards its changes at \
                 power off, and the conversion reads the disk as it is in the folder",
                "web01.vmx has snapshots (web01.vmsd); only the current state is carried",
            ]
        );

        // The base replaced since the snapshot was taken.
        write_descriptor(
            d,
            "web01.vmdk",
            "vmfs",
            "99999999",
            None,
            &[r#"RW 8388608 VMFS "web01-flat.vmdk""#],
        );
        assert_eq!(
            invalid(read_vmx(&path)),
            [
                "web01-000001.vmdk: parentCID: the chain is broken: parentCID abcd1234 but \
                 web01.vmdk has CID 99999999"
            ]
        );
    }

    #[test]
    fn disk_files_outside_the_folder_or_not_vmdk_are_problems() {
        let (dir, path) = vm("scsi0.present = \"TRUE\"\n\
             scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"/vmfs/volumes/ds1/web01/web01.vmdk\"\n\
             scsi0:1.present = \"TRUE\"\nscsi0:1.fileName = \"../other/web01.vmdk\"\n\
             sata0.present = \"TRUE\"\nsata0:0.present = \"TRUE\"\nsata0:0.fileName = \"d.vhd\"\n\
             nvme0.present = \"TRUE\"\nnvme0:0.present = \"TRUE\"\n\
             nvme0:0.fileName = \"gone.vmdk\"\n");
        write(dir.path(), "d.vhd", b"conectix");
        assert_eq!(
            invalid(read_vmx(&path)),
            [
                "web01.vmx: line 6: scsi0:0.fileName: /vmfs/volumes/ds1/web01/web01.vmdk is an \
                 ESX datastore path; copy the disk into the VM's folder and name it relative to \
                 it",
                format!(
                    "web01.vmx: line 8: scsi0:1.fileName: ../other/web01.vmdk leads out of the \
                     VM's folder ({}); copy the disk into it",
                    dir.path().canonicalize().expect("canonical").display()
                )
                .as_str(),
                "web01.vmx: line 11: sata0:0.fileName: d.vhd is not a .vmdk; a VMware hard disk \
                 is a VMDK descriptor or sparse image",
                "web01.vmx: line 14: nvme0:0.fileName: gone.vmdk does not exist",
            ]
        );
    }

    #[test]
    fn disks_are_numbered_hdd_order_first_then_by_controller_family() {
        let (dir, path) = vm("bios.hddOrder = \"sata0:1\"\n\
             ide0:0.present = \"TRUE\"\nide0:0.fileName = \"ide.vmdk\"\n\
             sata0.present = \"TRUE\"\nsata0:1.present = \"TRUE\"\nsata0:1.fileName = \"boot.vmdk\"\n\
             nvme0.present = \"TRUE\"\nnvme0:0.present = \"TRUE\"\nnvme0:0.fileName = \"nvme.vmdk\"\n\
             scsi1.present = \"TRUE\"\nscsi1:0.present = \"TRUE\"\nscsi1:0.fileName = \"s10.vmdk\"\n\
             scsi0.present = \"TRUE\"\nscsi0:2.present = \"TRUE\"\nscsi0:2.fileName = \"s02.vmdk\"\n\
             scsi0:2.deviceType = \"scsi-hardDisk\"\n\
             scsi2:0.present = \"TRUE\"\nscsi2:0.fileName = \"nocontroller.vmdk\"\n\
             sata0:2.present = \"FALSE\"\nsata0:2.fileName = \"absent.vmdk\"\n");
        for name in ["ide.vmdk", "boot.vmdk", "nvme.vmdk", "s10.vmdk", "s02.vmdk"] {
            write(dir.path(), name, &sparse(None));
        }
        let facts = read_vmx(&path).expect("valid");
        let order: Vec<(&str, &str)> = facts
            .disks
            .iter()
            .map(|d| (d.id.as_str(), d.described_at.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("disk0", "sata0:1 in web01.vmx"),
                ("disk1", "scsi0:2 in web01.vmx"),
                ("disk2", "scsi1:0 in web01.vmx"),
                ("disk3", "nvme0:0 in web01.vmx"),
                ("disk4", "ide0:0 in web01.vmx"),
            ]
        );
        assert_eq!(facts.disks[0].controller, Some(Controller::Sata));
        assert_eq!(facts.disks[0].unit, Some(1));
        // A sparse image without a descriptor declares no capacity.
        assert_eq!(facts.disks[0].capacity, None);
        assert_eq!(facts.disks[4].controller, Some(Controller::Ide));
        assert_eq!(
            facts.notes,
            [
                "scsi2:0 is on scsi2, which is not present; VMware ignores it, and so does the \
                 import"
            ]
        );
    }

    #[test]
    fn nic_addresses_static_generated_or_missing() {
        let (_dir, path) = vm(&format!(
            "{DISK}\
             ethernet0.present = \"TRUE\"\nethernet0.addressType = \"static\"\n\
             ethernet0.address = \"00:50:56:3F:00:01\"\n\
             ethernet0.generatedAddress = \"00:0c:29:00:00:99\"\nethernet0.virtualDev = \"e1000e\"\n\
             ethernet0.vnet = \"vmnet8\"\n\
             ethernet2.present = \"TRUE\"\nethernet2.addressType = \"vpx\"\n\
             ethernet2.generatedAddress = \"00:50:56:aa:bb:cc\"\nethernet2.connectionType = \"nat\"\n\
             ethernet1.present = \"TRUE\"\n\
             ethernet3.present = \"FALSE\"\nethernet3.generatedAddress = \"zz\"\n"
        ));
        let facts = read_vmx(&path).expect("valid");
        let nic = |id: &str, mac: Option<&str>, network: Option<&str>, adapter: &str| ExportNic {
            id: id.to_owned(),
            mac: mac.and_then(MacAddr::parse),
            network: network.map(str::to_owned),
            adapter: Some(adapter.to_owned()),
        };
        assert_eq!(
            facts.nics,
            [
                nic("nic0", Some("00:50:56:3f:00:01"), Some("vmnet8"), "e1000e"),
                nic("nic1", None, None, "e1000"),
                nic("nic2", Some("00:50:56:aa:bb:cc"), Some("nat"), "e1000"),
            ]
        );
        assert_eq!(
            facts.notes,
            [
                "nic1 (ethernet1) has no generatedAddress (VMware assigns one at the first power \
                 on); the migrated NIC gets a new MAC",
                "nic1 (ethernet1) has no virtualDev; VMware's default, e1000, is assumed",
                "nic2 (ethernet2) has no virtualDev; VMware's default, e1000, is assumed",
            ]
        );

        let (_dir, path) = vm(&format!(
            "{DISK}ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\n\
             ethernet0.generatedAddress = \"00:50:56\"\n\
             ethernet1.present = \"TRUE\"\nethernet1.virtualDev = \"vmxnet3\"\n\
             ethernet1.addressType = \"static\"\n"
        ));
        assert_eq!(
            invalid(read_vmx(&path)),
            [
                "web01.vmx: line 10: ethernet0.generatedAddress \"00:50:56\": expected a MAC \
                 address (00:50:56:ab:cd:ef)",
                "web01.vmx: ethernet1.address: ethernet1.addressType is static but \
                 ethernet1.address is missing",
            ]
        );
    }

    #[test]
    fn devices_not_carried_are_noted() {
        let (_dir, path) = vm(&format!(
            "{DISK}sound.present = \"TRUE\"\nusb.present = \"TRUE\"\nserial0.present = \"TRUE\"\n\
             serial1.present = \"FALSE\"\nfloppy0.present = \"TRUE\"\n\
             floppy0.fileName = \"boot.flp\"\nsharedFolder0.present = \"TRUE\"\n\
             sched.mem.min = \"2048\"\nsched.cpu.min = \"0\"\nsched.cpu.shares = \"normal\"\n\
             scsi0:1.present = \"TRUE\"\nscsi0:1.deviceType = \"cdrom-raw\"\n"
        ));
        let facts = read_vmx(&path).expect("valid");
        assert_eq!(
            facts.notes,
            [
                "scsi0:1 is a CD-ROM; not carried",
                "floppy0 is a floppy drive (boot.flp); not carried",
                "the VM has a sound card; not carried",
                "the VM has a USB controller; not carried",
                "serial0 is a serial port; not carried",
                "sharedfolder0 is a shared folder; not carried",
                "resource reservations and shares (sched.mem.min = \"2048\") are not carried",
            ]
        );
    }

    #[test]
    fn no_disk_too_large_and_missing() {
        let (_dir, path) = vm("displayName = \"empty\"\n");
        assert_eq!(
            invalid(read_vmx(&path)),
            ["web01.vmx: no hard disk is present"]
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big.vmx");
        let file = std::fs::File::create(&big).expect("create");
        file.set_len(VMX_LIMIT + 1).expect("set_len");
        assert!(matches!(
            read_vmx(&big),
            Err(ExportError::TooLarge { size, limit: VMX_LIMIT, .. }) if size == VMX_LIMIT + 1
        ));
        assert!(matches!(
            read_vmx(&dir.path().join("gone.vmx")),
            Err(ExportError::NotFound {
                kind: ExportKind::Vmx,
                ..
            })
        ));
    }

    #[test]
    fn a_latin1_vmx_is_decoded_and_stray_bytes_elsewhere_are_a_problem() {
        let (dir, _) = vm(DISK);
        let latin = |encoding: &str| {
            let mut text = format!(".encoding = \"{encoding}\"\ndisplayName = \"M").into_bytes();
            text.push(0xfc);
            text.extend_from_slice(b"ller\"\n");
            text.extend_from_slice(DISK.as_bytes());
            write(dir.path(), "latin.vmx", &text)
        };
        let path = latin("windows-1252");
        assert_eq!(read_vmx(&path).expect("valid").name, "M\u{fc}ller");

        let path = latin("UTF-8");
        assert_eq!(
            invalid(read_vmx(&path)),
            [
                "latin.vmx: line 2: is not valid UTF-8 (the file declares .encoding = UTF-8); \
                 save the VMX as UTF-8"
            ]
        );
    }

    #[test]
    fn values_decode_their_escapes() {
        assert_eq!(decode_value("a |22b|22 |7c c |7C"), "a \"b\" | c |");
        assert_eq!(decode_value("50|25 |zz |2"), "50% |zz |2");
        assert_eq!(decode_value("caf|C3|A9"), "café");
        assert_eq!(
            libvirt_uuid("56 4D 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc").as_deref(),
            Some("564d1234-5678-9abc-def0-123456789abc")
        );
        assert_eq!(libvirt_uuid("56 4d 12"), None);
    }
}
