//! A Hyper-V `Export-VM` folder as a source (`--hyperv DIR`): the VM's XML configuration, read
//! into [`ExportFacts`], with its disks found by file name in the export's
//! `Virtual Hard Disks` folder.
//!
//! What Hyper-V writes depends on the host. Windows Server 2012 and 2012 R2 write
//! `Virtual Machines/<VM id>.xml`, an XML document (UTF-16 with a BOM as Hyper-V saves it;
//! UTF-8 is read too) whose root is `<configuration>` and whose leaves carry a `type`
//! attribute (`string`, `integer`, `bool`, `bytes`). Windows Server 2016 and later write a
//! binary `.vmcx` instead (with `.vmrs`, `.vmgs`), and 2008 R2 a binary `.exp`: both are
//! refused with what to do instead.
//!
//! Microsoft does not document the XML. What is read, and how it was confirmed:
//!
//! | XML | fact |
//! |---|---|
//! | `properties/name`, `properties/global_id` | the VM's name and id |
//! | `properties/subtype` (0: generation 1, BIOS; 1: generation 2, UEFI) | firmware |
//! | `properties/version` (1280 is configuration version 5.0) | hardware version |
//! | `settings/processors/count` | vCPUs |
//! | `settings/memory/bank/size` (MiB; the startup memory with dynamic memory) | memory |
//! | `_<BIOS>_/bios_guid`, `secure_boot_enabled` | BIOS UUID, Secure Boot |
//! | `_<IDE or SCSI>_/controllerN/driveM/pathname`, `type` (`VHD`, `ISO`, `NONE`, `VFD`) | disks |
//! | `_<NIC>_/MacAddress` (or `address`), `Connection/AltSwitchName` | NICs |
//!
//! A device is an element named by its instance GUID between underscores (`_<GUID>_`), and
//! `manifest/vdevNNN` says which device class each instance is (`device`, `instance`, `name`).
//! The emulated IDE controller's instance is its class GUID
//! (`83f8638b-8dca-4152-9eda-2ca8b33039b4`); a synthetic SCSI controller's (class
//! `d422512d-2bf2-4752-809d-7b82b5fcb1b4`) and a synthetic NIC's (class
//! `2fc216b0-d2e2-4967-9b6d-b8a5c9ca2778`) are their own GUIDs. These names and GUIDs are
//! Hyper-V's device classes as its WMI provider and published configuration dumps show them;
//! element names are matched case-insensitively, and an index suffix (`_<GUID>_0_`) is
//! accepted. Not confirmed by any public source, and handled as follows:
//! - the legacy (emulated, DEC 21140) NIC's class GUID: a device is one when its manifest name
//!   says "Emulated Ethernet" or "Legacy Network";
//! - the order of several SCSI controllers: the manifest's order (the order they were added);
//! - a generation 2 boot order: none is read; disks boot in controller order.
//!
//! Disk paths are the Hyper-V host's (`D:\VMs\web01\Virtual Hard Disks\web01.vhdx`); each is
//! found by its file name (case-insensitively) in the export's `Virtual Hard Disks` folder,
//! and must be a regular file there. Every problem is reported at once, each at
//! `<VM id>.xml: line N`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{
    Collected, Controller, DiskLocation, ExportDisk, ExportError, ExportFacts, ExportKind,
    ExportNic, ends_with_ci, file_name, open_error, read_small,
};
use crate::diag::excerpt;
use crate::libvirt::xml::{self, Element};
use crate::manifest::{Firmware, MacAddr, SourceFormat};

/// The largest configuration read. Real ones are some tens of KiB (UTF-16).
pub const CONFIG_LIMIT: u64 = 4 * 1024 * 1024;
/// Entries read from one of the export's folders.
pub const MAX_ENTRIES: usize = 4096;
/// A Hyper-V VM has at most 4 IDE and 256 SCSI disks.
pub const MAX_DISKS: usize = super::ovf::MAX_DISKS;
/// Hyper-V allows 12 NICs (8 synthetic, 4 legacy).
pub const MAX_NICS: usize = super::ovf::MAX_NICS;

const IDE: &str = "83f8638b-8dca-4152-9eda-2ca8b33039b4";
const SCSI: &str = "d422512d-2bf2-4752-809d-7b82b5fcb1b4";
const SYNTHETIC_NIC: &str = "2fc216b0-d2e2-4967-9b6d-b8a5c9ca2778";
const SERIAL: &str = "8e3a359f-559a-4b6a-98a9-1690a6100ed7";
const FLOPPY: &str = "8f0d2762-0b00-4e04-af4f-19010527cb93";
const BIOS: &str = "ac6b8dc1-3257-4a70-b1b2-a9c9215659ad";

/// The folders of an export, as Export-VM names them.
const VMS_DIR: &str = "Virtual Machines";
const DISKS_DIR: &str = "Virtual Hard Disks";
const SNAPSHOTS_DIR: &str = "Snapshots";

/// What to do with a configuration hyper2kvm does not read.
const BINARY_ADVICE: &str = "either export the VM from a host that writes the XML \
    configuration (Windows Server 2012 R2 or earlier), or write a manifest naming the .vhdx \
    files of its Virtual Hard Disks folder (docs/sources.md has an example, and the PowerShell \
    that lists what goes in it: Get-VM, Get-VMHardDiskDrive, Get-VMNetworkAdapter, \
    Get-VMFirmware)";

/// What a differencing disk is refused with.
const CHECKPOINT_ADVICE: &str = "on the Hyper-V host, delete the VM's checkpoints \
    (Remove-VMSnapshot -VMName <name> -IncludeAllChildSnapshots merges them into the parent \
    disks), then export the VM again";

/// The names in a folder, at most [`MAX_ENTRIES`].
fn list(dir: &Path) -> Result<Vec<String>, ExportError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| open_error(ExportKind::HyperV, dir, e))? {
        let entry = entry.map_err(|e| open_error(ExportKind::HyperV, dir, e))?;
        if names.len() == MAX_ENTRIES {
            return Err(ExportError::Refused {
                path: dir.to_owned(),
                why: format!("it holds more than {MAX_ENTRIES} entries; this is not an export"),
            });
        }
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// A subfolder by name, any case (an export copied through another system may change it).
fn subdir(dir: &Path, name: &str) -> Result<Option<PathBuf>, ExportError> {
    let exact = dir.join(name);
    if exact.is_dir() {
        return Ok(Some(exact));
    }
    if !dir.is_dir() {
        return Ok(None);
    }
    Ok(list(dir)?
        .into_iter()
        .filter(|n| n.eq_ignore_ascii_case(name))
        .map(|n| dir.join(n))
        .find(|p| p.is_dir()))
}

fn binary_config(path: &Path, name: &str) -> ExportError {
    let why = if ends_with_ci(name, ".exp") {
        format!(
            "{name} is a Hyper-V 2008 R2 export, whose configuration is binary and not read by \
             hyper2kvm; {BINARY_ADVICE}"
        )
    } else {
        format!(
            "{name} is a binary configuration (.vmcx, written by Hyper-V 2016 and later), which \
             hyper2kvm does not read; {BINARY_ADVICE}"
        )
    };
    ExportError::Refused {
        path: path.to_owned(),
        why,
    }
}

/// The configuration file and the export folder, from what `--hyperv` names.
fn locate(abs: &Path) -> Result<(PathBuf, PathBuf), ExportError> {
    let meta = std::fs::metadata(abs).map_err(|e| open_error(ExportKind::HyperV, abs, e))?;
    if !meta.is_dir() {
        let name = file_name(abs);
        if ends_with_ci(&name, ".vmcx") || ends_with_ci(&name, ".exp") {
            return Err(binary_config(abs, &name));
        }
        let parent = abs.parent().unwrap_or(Path::new("/"));
        let export = if file_name(parent).eq_ignore_ascii_case(VMS_DIR) {
            parent.parent().unwrap_or(parent)
        } else {
            parent
        };
        return Ok((abs.to_owned(), export.to_owned()));
    }
    let Some(vms) = subdir(abs, VMS_DIR)? else {
        return Err(ExportError::Refused {
            path: abs.to_owned(),
            why: format!(
                "it has no {VMS_DIR} folder: --hyperv takes the folder Export-VM wrote (it \
                 holds {VMS_DIR} and {DISKS_DIR}), or the configuration .xml in it"
            ),
        });
    };
    let names = list(&vms)?;
    if let Some(binary) = names
        .iter()
        .find(|n| ends_with_ci(n, ".vmcx") || ends_with_ci(n, ".exp"))
    {
        return Err(binary_config(abs, &format!("{VMS_DIR}/{binary}")));
    }
    let xmls: Vec<&String> = names.iter().filter(|n| ends_with_ci(n, ".xml")).collect();
    match xmls.as_slice() {
        [one] => Ok((vms.join(one), abs.to_owned())),
        [] => Err(ExportError::Refused {
            path: abs.to_owned(),
            why: format!(
                "its {VMS_DIR} folder holds no configuration (no .xml, no .vmcx): is it the \
                 folder Export-VM wrote?"
            ),
        }),
        several => Err(ExportError::Refused {
            path: abs.to_owned(),
            why: format!(
                "its {VMS_DIR} folder holds {} configurations ({}); an export holds one VM: pass \
                 the .xml of the VM to import",
                several.len(),
                excerpt(
                    &several
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            ),
        }),
    }
}

/// The text of a configuration: UTF-16 (by its BOM, or its first `<` with a zero byte beside
/// it) or UTF-8 (with or without a BOM).
fn decode(bytes: &[u8]) -> Result<String, &'static str> {
    let utf16 = |body: &[u8], little: bool| {
        if !body.len().is_multiple_of(2) {
            return Err("is UTF-16 with an odd number of bytes: the file is truncated");
        }
        let units = body.chunks_exact(2).map(|c| {
            if little {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|_| "is not valid UTF-16 (it has an unpaired surrogate)")
    };
    match bytes {
        [0xff, 0xfe, rest @ ..] => utf16(rest, true),
        [0xfe, 0xff, rest @ ..] => utf16(rest, false),
        [0xef, 0xbb, 0xbf, rest @ ..] => {
            String::from_utf8(rest.to_vec()).map_err(|_| "is not valid UTF-8 (after its BOM)")
        }
        [b'<', 0, ..] => utf16(bytes, true),
        [0, b'<', ..] => utf16(bytes, false),
        _ => String::from_utf8(bytes.to_vec()).map_err(|_| "is neither UTF-16 nor UTF-8 text"),
    }
}

/// The text decoded, its declaration's `encoding="UTF-16"` (which Hyper-V writes) now says
/// UTF-8, as the text is; same lines, so every line number stays true.
fn declare_utf8(text: String) -> String {
    if !text.starts_with("<?xml") {
        return text;
    }
    let Some(end) = text.find("?>") else {
        return text;
    };
    let decl = &text[..end];
    let Some(at) = decl.find("encoding") else {
        return text;
    };
    let rest = &decl[at + "encoding".len()..];
    let Some(eq) = rest.find('=') else {
        return text;
    };
    let value = rest[eq + 1..].trim_start();
    let Some(quote) = value.chars().next().filter(|q| *q == '"' || *q == '\'') else {
        return text;
    };
    let Some(len) = value[1..].find(quote) else {
        return text;
    };
    let name = &value[1..1 + len];
    let lower = name.to_ascii_lowercase();
    if !(lower.starts_with("utf-16") || lower == "unicode") {
        return text;
    }
    // `value` ends the declaration's text: the name starts after its quote.
    let start = decl.len() - value.len() + 1;
    format!("{}UTF-8{}", &text[..start], &text[start + len..])
}

/// The first child of this name, any case.
fn child<'e>(el: &'e Element, name: &str) -> Option<&'e Element> {
    el.children
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(name))
}

fn at_path<'e>(el: &'e Element, names: &[&str]) -> Option<&'e Element> {
    names.iter().try_fold(el, |e, n| child(e, n))
}

/// A GUID as `{8-4-4-4-12}` or bare, lower-cased; `None` when it is not one.
fn guid(s: &str) -> Option<String> {
    let g = s.trim().trim_start_matches('{').trim_end_matches('}');
    let ok = g.len() == 36
        && g.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    ok.then(|| g.to_ascii_lowercase())
}

/// The instance GUID a device element is named by: `_<GUID>_`, or `_<GUID>_<N>_`.
fn device_guid(name: &str) -> Option<String> {
    let rest = name.strip_prefix('_')?;
    let g = guid(rest.get(..36)?)?;
    let tail = rest.get(36..)?;
    let index_ok = tail == "_"
        || tail
            .strip_prefix('_')
            .and_then(|t| t.strip_suffix('_'))
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    index_ok.then_some(g)
}

/// `controller3` → 3, for the given prefix.
fn numbered(name: &str, prefix: &str) -> Option<u32> {
    let lower = name.to_ascii_lowercase();
    let digits = lower.strip_prefix(prefix)?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The children named `<prefix>N`, by N.
fn numbered_children<'e>(el: &'e Element, prefix: &str) -> Vec<(u32, &'e Element)> {
    let mut v: Vec<(u32, &Element)> = el
        .children
        .iter()
        .filter_map(|c| numbered(&c.name, prefix).map(|n| (n, c)))
        .collect();
    v.sort_by_key(|(n, _)| *n);
    v
}

/// What a device element is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ide,
    Scsi,
    Nic(&'static str),
    Serial,
    Floppy,
    Bios,
    Other,
}

struct Device<'e> {
    el: &'e Element,
    kind: Kind,
    /// The manifest's position of the device (the order devices were added), then the
    /// document's.
    rank: (usize, usize),
}

/// The reader's state: the file's name for places, and what is collected.
struct Reader<'a> {
    file: &'a str,
    problems: Collected,
    notes: Vec<String>,
}

impl Reader<'_> {
    fn at(&self, el: &Element) -> String {
        format!("{}: line {}", self.file, el.line)
    }

    fn problem(&mut self, el: &Element, message: impl Into<String>) {
        let place = self.at(el);
        self.problems.push(place, message);
    }

    /// An integer leaf; a value that is not one is a problem.
    fn integer(&mut self, el: &Element, what: &str) -> Option<u64> {
        let text = el.text().unwrap_or_default();
        match text.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.problem(
                    el,
                    format!("<{}> \"{}\": expected {what}", el.name, excerpt(text)),
                );
                None
            }
        }
    }

    /// A `bool` leaf (`True`, `False`, any case).
    fn boolean(&mut self, el: &Element) -> Option<bool> {
        let text = el.text().unwrap_or_default();
        if text.eq_ignore_ascii_case("true") {
            Some(true)
        } else if text.eq_ignore_ascii_case("false") {
            Some(false)
        } else {
            self.problem(
                el,
                format!(
                    "<{}> \"{}\": expected True or False",
                    el.name,
                    excerpt(text)
                ),
            );
            None
        }
    }
}

/// Reads a Hyper-V export (the folder Export-VM wrote, or its configuration `.xml`) into the
/// facts of its VM. Every problem of the configuration and its disks is reported at once as
/// [`ExportError::Invalid`]; a binary configuration (`.vmcx`, `.exp`), a folder without a
/// configuration or with several is [`ExportError::Refused`].
pub fn read_hyperv(path: &Path) -> Result<ExportFacts, ExportError> {
    let abs = std::path::absolute(path).map_err(|source| ExportError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (config, export) = locate(&abs)?;
    let bytes = read_small(
        ExportKind::HyperV,
        &config,
        "a Hyper-V configuration .xml",
        CONFIG_LIMIT,
    )?;
    let file = file_name(&config);
    let invalid = |place: String, message: String| {
        let mut c = Collected::default();
        c.push(place, message);
        ExportError::Invalid {
            kind: ExportKind::HyperV,
            path: abs.clone(),
            problems: c.0,
        }
    };
    let text = decode(&bytes).map_err(|m| invalid(file.clone(), m.to_owned()))?;
    let text = declare_utf8(text);
    let root = xml::parse(&text).map_err(|e| {
        invalid(
            format!("{file}: line {}, column {}", e.line, e.column),
            e.message
                .replace("a domain definition", "a Hyper-V configuration")
                .replace("libvirt never writes one", "Hyper-V never writes one")
                .replace("libvirt writes UTF-8", "Hyper-V writes UTF-16"),
        )
    })?;
    let mut r = Reader {
        file: &file,
        problems: Collected::default(),
        notes: Vec::new(),
    };
    if root.name != "configuration" {
        r.problem(
            &root,
            format!(
                "the root element is <{}>; a Hyper-V configuration's is <configuration>",
                root.name
            ),
        );
        return r.problems.into_result(
            ExportKind::HyperV,
            &abs,
            ExportFacts::new(ExportKind::HyperV, abs.clone(), String::new()),
        );
    }

    let name = at_path(&root, &["properties", "name"])
        .and_then(Element::text)
        .map(str::to_owned);
    let stem = config
        .file_stem()
        .map_or_else(|| file.clone(), |s| s.to_string_lossy().into_owned());
    let name = name.unwrap_or_else(|| {
        r.notes.push(format!(
            "{file} has no properties/name; the VM is named after the file, {stem}"
        ));
        stem.clone()
    });
    let mut facts = ExportFacts::new(ExportKind::HyperV, abs.clone(), name);
    read_machine(&root, &mut r, &mut facts);
    let devices = devices(&root);
    read_firmware_device(&devices, &mut r, &mut facts);
    let disks_dir = subdir(&export, DISKS_DIR)?;
    read_disks(&root, &devices, disks_dir.as_deref(), &mut r, &mut facts);
    read_nics(&devices, &mut r, &mut facts);
    read_other_devices(&devices, &mut r);
    read_snapshots(&root, &export, &mut r)?;
    r.notes.push(
        "a Hyper-V configuration does not name the guest OS: the manifest has no vm.os_hint \
         (add one if you know it)"
            .to_owned(),
    );
    facts.notes.append(&mut r.notes);
    r.problems.into_result(ExportKind::HyperV, &abs, facts)
}

/// Identity, generation, CPUs, memory.
fn read_machine(root: &Element, r: &mut Reader<'_>, facts: &mut ExportFacts) {
    if let Some(el) = at_path(root, &["properties", "global_id"]) {
        match el.text().and_then(guid) {
            Some(g) => facts.vm_id = Some(g),
            None => r.problem(
                el,
                format!(
                    "<global_id> \"{}\": expected the VM's GUID",
                    excerpt(el.text().unwrap_or_default())
                ),
            ),
        }
    }
    match at_path(root, &["properties", "subtype"]).map(|el| (el, r.integer(el, "0 or 1"))) {
        None | Some((_, Some(0))) => {}
        Some((_, Some(1))) => facts.firmware = Firmware::Uefi,
        Some((el, Some(n))) => r.problem(
            el,
            format!("<subtype> {n}: expected 0 (generation 1, BIOS) or 1 (generation 2, UEFI)"),
        ),
        Some((_, None)) => {}
    }
    if let Some(el) = at_path(root, &["properties", "version"])
        && let Some(v) = el.text().and_then(|t| t.parse::<u32>().ok())
    {
        // The integer is the configuration version's major and minor in its two low bytes:
        // 1280 is 5.0 (2012 R2), as Get-VM shows it; inferred, not documented.
        facts.hardware_version = Some(format!("hyperv-{}.{}", v >> 8, v & 0xff));
    }
    facts.vcpus = Some(match at_path(root, &["settings", "processors", "count"]) {
        None => 1,
        Some(el) => match r.integer(el, "a number of virtual processors (1 or more)") {
            Some(0) => {
                r.problem(
                    el,
                    "<count> 0: expected a number of virtual processors (1 or more)",
                );
                1
            }
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
            None => 1,
        },
    });
    if let Some(bank) = at_path(root, &["settings", "memory", "bank"]) {
        if let Some(el) = child(bank, "size") {
            match r.integer(el, "a memory size in MiB") {
                Some(0) => r.problem(el, "<size> 0: expected a memory size in MiB"),
                Some(n) => facts.memory_mib = Some(n),
                None => {}
            }
        }
        let dynamic = child(bank, "dynamic_memory_enabled").and_then(|el| r.boolean(el));
        if dynamic == Some(true) {
            let num = |name: &str| {
                child(bank, name)
                    .and_then(Element::text)
                    .and_then(|t| t.parse::<u64>().ok())
            };
            facts.notes.push(format!(
                "the VM has dynamic memory (minimum {} MiB, maximum {} MiB); it gets its \
                 startup memory, {} MiB, fixed",
                num("reservation").map_or_else(|| "?".to_owned(), |n| n.to_string()),
                num("limit").map_or_else(|| "?".to_owned(), |n| n.to_string()),
                facts
                    .memory_mib
                    .map_or_else(|| "?".to_owned(), |n| n.to_string()),
            ));
        }
    }
}

/// Every device element, with what it is: by the manifest's class for its instance, else by
/// its own GUID (the IDE controller's instance is its class).
fn devices(root: &Element) -> Vec<Device<'_>> {
    let mut classes: HashMap<String, (String, String, usize)> = HashMap::new();
    if let Some(manifest) = child(root, "manifest") {
        for (i, vdev) in manifest.children.iter().enumerate() {
            let text = |n: &str| child(vdev, n).and_then(Element::text);
            if let (Some(class), Some(instance)) = (
                text("device").and_then(guid),
                text("instance").and_then(guid),
            ) {
                let name = text("name").unwrap_or_default().to_ascii_lowercase();
                classes.entry(instance).or_insert((class, name, i));
            }
        }
    }
    let mut out = Vec::new();
    for (doc, el) in root.children.iter().enumerate() {
        let Some(instance) = device_guid(&el.name) else {
            continue;
        };
        let (class, name, rank) = classes
            .get(&instance)
            .map_or((instance.as_str(), "", usize::MAX), |(c, n, i)| {
                (c.as_str(), n.as_str(), *i)
            });
        let kind = match class {
            IDE => Kind::Ide,
            SCSI => Kind::Scsi,
            SYNTHETIC_NIC => Kind::Nic("netvsc"),
            SERIAL => Kind::Serial,
            FLOPPY => Kind::Floppy,
            BIOS => Kind::Bios,
            _ if name.contains("emulated ethernet") || name.contains("legacy network") => {
                Kind::Nic("dec21140")
            }
            _ => Kind::Other,
        };
        out.push(Device {
            el,
            kind,
            rank: (rank, doc),
        });
    }
    out.sort_by_key(|d| d.rank);
    out
}

/// The BIOS device: the UUID the guest sees, Secure Boot.
fn read_firmware_device(devices: &[Device<'_>], r: &mut Reader<'_>, facts: &mut ExportFacts) {
    let Some(bios) = devices.iter().find(|d| d.kind == Kind::Bios) else {
        return;
    };
    if let Some(el) = child(bios.el, "bios_guid") {
        match el.text().and_then(guid) {
            Some(g) => facts.uuid = Some(g),
            None => r.notes.push(format!(
                "{}: <bios_guid> \"{}\" is not a GUID; the BIOS UUID is not carried",
                r.at(el),
                excerpt(el.text().unwrap_or_default())
            )),
        }
    }
    if let Some(el) = child(bios.el, "secure_boot_enabled")
        && r.boolean(el) == Some(true)
    {
        if facts.firmware == Firmware::Uefi {
            facts.secureboot = true;
        } else {
            r.notes.push(format!(
                "{} says secure_boot_enabled but the VM is generation 1 (BIOS); secure boot is \
                 off",
                r.file
            ));
        }
    }
}

/// A drive slot found on a controller, before its id is given.
struct Slot<'e> {
    slot: String,
    controller: Controller,
    unit: u32,
    drive: &'e Element,
}

/// The disks' folder, read once: lower-cased name → names as written.
struct DiskFolder {
    dir: PathBuf,
    canonical: PathBuf,
    names: HashMap<String, Vec<String>>,
}

impl DiskFolder {
    fn open(dir: &Path) -> Result<Self, String> {
        let canonical = dir
            .canonicalize()
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let mut names: HashMap<String, Vec<String>> = HashMap::new();
        for n in list(dir).map_err(|e| e.to_string())? {
            names.entry(n.to_lowercase()).or_default().push(n);
        }
        Ok(Self {
            dir: dir.to_owned(),
            canonical,
            names,
        })
    }

    /// The file of this name in the folder: a regular file, not a link leading out.
    fn find(&self, name: &str) -> Result<PathBuf, String> {
        let actual = match self.names.get(&name.to_lowercase()).map(Vec::as_slice) {
            None | Some([]) => {
                return Err(format!(
                    "{name} is not in the export's {DISKS_DIR} folder ({})",
                    self.dir.display()
                ));
            }
            Some([one]) => one.clone(),
            Some(several) => match several.iter().find(|n| *n == name) {
                Some(exact) => exact.clone(),
                None => {
                    return Err(format!(
                        "{name} matches {} files of {DISKS_DIR} that differ only in case ({}); \
                         keep the one the VM uses",
                        several.len(),
                        several.join(", ")
                    ));
                }
            },
        };
        let joined = self.dir.join(&actual);
        let canon = joined
            .canonicalize()
            .map_err(|e| format!("{actual} cannot be read: {e}"))?;
        if canon.parent() != Some(self.canonical.as_path()) {
            return Err(format!(
                "{actual} leads outside the export's {DISKS_DIR} folder ({}); copy the disk \
                 into it",
                canon.display()
            ));
        }
        if !canon.is_file() {
            return Err(format!("{actual} is not a regular file"));
        }
        Ok(joined)
    }
}

/// The drive slots of every IDE and SCSI controller, in boot order: generation 1 boots from
/// IDE (0:0 first), then SCSI; generation 2 has SCSI only (any IDE after it).
fn slots<'e>(devices: &[Device<'e>], uefi: bool) -> Vec<Slot<'e>> {
    let mut ide = Vec::new();
    let mut scsi = Vec::new();
    let mut scsi_controllers = 0u32;
    for d in devices {
        match d.kind {
            Kind::Ide => {
                for (n, controller) in numbered_children(d.el, "controller") {
                    for (m, drive) in numbered_children(controller, "drive") {
                        ide.push(Slot {
                            slot: format!("ide{n}:{m}"),
                            controller: Controller::Ide,
                            unit: m,
                            drive,
                        });
                    }
                }
            }
            Kind::Scsi => {
                for (_, controller) in numbered_children(d.el, "controller") {
                    let k = scsi_controllers;
                    scsi_controllers += 1;
                    for (m, drive) in numbered_children(controller, "drive") {
                        scsi.push(Slot {
                            slot: format!("scsi{k}:{m}"),
                            controller: Controller::Scsi(None),
                            unit: m,
                            drive,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    if uefi {
        scsi.append(&mut ide);
        scsi
    } else {
        ide.append(&mut scsi);
        ide
    }
}

/// The base name of a Windows path (`D:\VMs\x.vhdx` → `x.vhdx`).
fn windows_basename(path: &str) -> &str {
    path.rsplit('\\').next().unwrap_or(path)
}

/// Every attached hard disk, found in the disks folder; DVD and floppy drives become notes.
fn read_disks(
    root: &Element,
    devices: &[Device<'_>],
    disks_dir: Option<&Path>,
    r: &mut Reader<'_>,
    facts: &mut ExportFacts,
) {
    let folder = disks_dir.map(DiskFolder::open);
    let mut seen: HashMap<PathBuf, String> = HashMap::new();
    let all = slots(devices, facts.firmware == Firmware::Uefi);
    let mut counted = 0usize;
    for s in &all {
        let pathname_el = child(s.drive, "pathname");
        let pathname = pathname_el.and_then(Element::text);
        let ty = child(s.drive, "type")
            .and_then(Element::text)
            .map(str::to_ascii_uppercase);
        let is_disk_file = pathname.is_some_and(|p| {
            [".vhdx", ".vhd", ".avhdx", ".avhd"]
                .iter()
                .any(|e| ends_with_ci(p, e))
        });
        match (ty.as_deref(), pathname) {
            (Some("NONE") | None, None) => continue,
            (Some("ISO"), None) => continue,
            (Some("ISO"), Some(p)) => {
                r.notes.push(format!(
                    "{} is a DVD drive ({}); not carried",
                    s.slot,
                    windows_basename(p)
                ));
                continue;
            }
            (Some("VFD"), p) => {
                if let Some(p) = p {
                    r.notes.push(format!(
                        "{} is a floppy drive ({}); not carried",
                        s.slot,
                        windows_basename(p)
                    ));
                }
                continue;
            }
            (Some("VHD"), None) => {
                r.notes.push(format!(
                    "{} is a hard drive with no file; not carried",
                    s.slot
                ));
                continue;
            }
            (Some("VHD"), Some(_)) => {}
            (None | Some("NONE"), Some(_)) if is_disk_file => {}
            (Some(other), _) => {
                let el = child(s.drive, "type").unwrap_or(s.drive);
                r.problem(
                    el,
                    format!(
                        "{} type \"{}\": expected VHD (a virtual hard disk), ISO or NONE; a \
                         physical (pass-through) disk must be copied into a VHDX first",
                        s.slot,
                        excerpt(other)
                    ),
                );
                continue;
            }
            (None, Some(p)) => {
                let el = pathname_el.unwrap_or(s.drive);
                r.problem(
                    el,
                    format!(
                        "{} pathname {}: the drive has no <type> and the file is not a virtual \
                         hard disk",
                        s.slot,
                        excerpt(p)
                    ),
                );
                continue;
            }
        }
        let (Some(el), Some(p)) = (pathname_el, pathname) else {
            continue;
        };
        counted += 1;
        if counted > MAX_DISKS {
            continue;
        }
        let here = |m: String| format!("{} pathname {}: {m}", s.slot, excerpt(p));
        let base = windows_basename(p);
        if base.contains('/')
            || base.is_empty()
            || base == "."
            || base == ".."
            || base.contains('\0')
        {
            r.problem(
                el,
                here(format!(
                    "the file name {} is not a plain name (after the Windows folders)",
                    excerpt(base)
                )),
            );
            continue;
        }
        let format = if ends_with_ci(base, ".vhdx") {
            SourceFormat::Vhdx
        } else if ends_with_ci(base, ".vhd") {
            SourceFormat::Vhd
        } else if ends_with_ci(base, ".avhdx") || ends_with_ci(base, ".avhd") {
            r.problem(
                el,
                here(format!(
                    "{base} is a differencing disk (a checkpoint); the VM's current state is \
                     spread over it and its parents: {CHECKPOINT_ADVICE}"
                )),
            );
            continue;
        } else {
            r.problem(
                el,
                here(format!(
                    "{base} is not a .vhdx or .vhd; a Hyper-V hard disk is one"
                )),
            );
            continue;
        };
        let found = match &folder {
            None => Err(format!(
                "the export has no {DISKS_DIR} folder to find {base} in"
            )),
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(f)) => f.find(base),
        };
        let local = match found {
            Ok(p) => p,
            Err(m) => {
                r.problem(el, here(m));
                continue;
            }
        };
        if let Some(first) = seen.get(&local) {
            r.problem(
                el,
                here(format!("{base} is attached twice (also as {first})")),
            );
            continue;
        }
        seen.insert(local.clone(), s.slot.clone());
        facts.disks.push(ExportDisk {
            id: format!("disk{}", facts.disks.len()),
            described_at: format!("{} in {}", s.slot, r.file),
            controller: Some(s.controller.clone()),
            unit: Some(s.unit),
            location: DiskLocation::File {
                path: local,
                extents: Vec::new(),
                parents: Vec::new(),
            },
            format,
            capacity: None,
            digest_name: None,
        });
    }
    if counted > MAX_DISKS {
        r.problem(
            root,
            format!("the VM has {counted} disks; more than {MAX_DISKS} are refused"),
        );
    } else if counted == 0 && r.problems.is_empty() {
        r.problems.push(
            r.file.to_owned(),
            "no hard disk is attached (no VHD or VHDX on the IDE or SCSI controllers)",
        );
    }
}

/// A MAC as Hyper-V writes it (`00155D0107DC`, `00-15-5D-01-07-DC`); `Ok(None)` for all zeros
/// (a dynamic address not assigned yet).
fn hyperv_mac(text: &str) -> Result<Option<MacAddr>, ()> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(());
    }
    if hex.bytes().all(|b| b == b'0') {
        return Ok(None);
    }
    let colons: Vec<&str> = (0..6).map(|i| &hex[i * 2..i * 2 + 2]).collect();
    MacAddr::parse(&colons.join(":").to_ascii_lowercase())
        .map(Some)
        .ok_or(())
}

/// Every network adapter, synthetic (`netvsc`) or legacy (`dec21140`).
fn read_nics(devices: &[Device<'_>], r: &mut Reader<'_>, facts: &mut ExportFacts) {
    let nics: Vec<(&Device<'_>, &'static str)> = devices
        .iter()
        .filter_map(|d| match d.kind {
            Kind::Nic(model) => Some((d, model)),
            _ => None,
        })
        .collect();
    if nics.len() > MAX_NICS {
        let first = nics[0].0.el;
        r.problem(
            first,
            format!(
                "the VM has {} network adapters; more than {MAX_NICS} are refused",
                nics.len()
            ),
        );
        return;
    }
    for (d, model) in nics {
        let id = format!("nic{}", facts.nics.len());
        let mac_el = child(d.el, "MacAddress").or_else(|| child(d.el, "address"));
        let mac = match mac_el {
            None => {
                r.notes.push(format!(
                    "{id} has no MacAddress; the migrated NIC gets a new MAC"
                ));
                None
            }
            Some(el) => {
                let text = el.text().unwrap_or_default();
                match hyperv_mac(text) {
                    Ok(Some(m)) if m.is_unicast() => Some(m),
                    Ok(Some(m)) => {
                        r.problem(
                            el,
                            format!("<{}> {m} is a multicast address, not a NIC's", el.name),
                        );
                        None
                    }
                    Ok(None) => {
                        r.notes.push(format!(
                            "{id} has no MAC yet (Hyper-V assigns a dynamic one at the first \
                             start); the migrated NIC gets a new MAC"
                        ));
                        None
                    }
                    Err(()) => {
                        r.problem(
                            el,
                            format!(
                                "<{}> \"{}\": expected a MAC address of 12 hex digits \
                                 (00155D0107DC)",
                                el.name,
                                excerpt(text)
                            ),
                        );
                        None
                    }
                }
            }
        };
        let network = at_path(d.el, &["Connection", "AltSwitchName"])
            .and_then(Element::text)
            .map(str::to_owned);
        if network.is_none() {
            r.notes.push(format!(
                "{id} is not connected to a virtual switch; it has no network to map"
            ));
        }
        facts.nics.push(ExportNic {
            id,
            mac,
            network,
            adapter: Some(model.to_owned()),
        });
    }
}

/// Serial ports and floppy drives in use, as notes.
fn read_other_devices(devices: &[Device<'_>], r: &mut Reader<'_>) {
    for d in devices {
        match d.kind {
            Kind::Serial => {
                for (n, port) in numbered_children(d.el, "port") {
                    if let Some(c) = child(port, "connection").and_then(Element::text) {
                        r.notes.push(format!(
                            "COM{} is connected to {}; not carried",
                            n + 1,
                            excerpt(c)
                        ));
                    }
                }
            }
            Kind::Floppy => {
                for (_, controller) in numbered_children(d.el, "controller") {
                    for (_, drive) in numbered_children(controller, "drive") {
                        if let Some(p) = child(drive, "pathname").and_then(Element::text) {
                            r.notes.push(format!(
                                "the floppy drive holds {}; not carried",
                                windows_basename(p)
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Checkpoints the export carries (its `Snapshots` folder, the configuration's list).
fn read_snapshots(root: &Element, export: &Path, r: &mut Reader<'_>) -> Result<(), ExportError> {
    let files = match subdir(export, SNAPSHOTS_DIR)? {
        Some(dir) => list(&dir)?.len(),
        None => 0,
    };
    let listed = at_path(root, &["global_settings", "snapshots", "list", "size"])
        .and_then(Element::text)
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0);
    if files > 0 || listed > 0 {
        r.notes.push(format!(
            "the export holds checkpoints ({SNAPSHOTS_DIR}/: {files} entries; the configuration \
             lists {listed}); only the VM's current state, the disks its configuration names, is \
             carried"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM_ID: &str = "6A7E1E2B-3C4D-4E5F-8A9B-0C1D2E3F4A5B";
    const SCSI0: &str = "D7A36E9B-9256-4F0D-BE2C-3A13887F7B03";
    const SCSI1: &str = "0B1C2D3E-4F50-4617-8293-A4B5C6D7E8F9";
    const NIC0: &str = "55225880-49C0-4438-9CE2-5A01402FD8CB";
    const NIC1: &str = "9A8B7C6D-5E4F-4031-9213-243546576879";

    /// A drive element.
    fn drive(n: u32, ty: &str, path: &str) -> String {
        format!(
            "<drive{n}><pathname type=\"string\">{path}</pathname>\
             <type type=\"string\">{ty}</type></drive{n}>"
        )
    }

    /// A configuration as Hyper-V 2012 R2 writes it, with `devices` (elements named by
    /// instance), `vdevs` (manifest entries: class, instance, name) and `settings` inside
    /// `<settings>`.
    fn config(subtype: u32, secure: bool, devices: &str, vdevs: &[(&str, &str, &str)]) -> String {
        let mut manifest = String::new();
        for (i, (class, instance, name)) in vdevs.iter().enumerate() {
            manifest.push_str(&format!(
                "<vdev{:03}><device type=\"string\">{class}</device><flags \
                 type=\"integer\">1</flags><instance type=\"string\">{instance}</instance>\
                 <name type=\"string\">{name}</name></vdev{:03}>\n",
                i + 1,
                i + 1
            ));
        }
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-16\" standalone=\"yes\"?>\n\
             <configuration>\n\
             <_ac6b8dc1-3257-4a70-b1b2-a9c9215659ad_>\n\
             <bios_guid type=\"string\">{{7FFEE066-9755-4950-9A16-4C94AC67AD00}}</bios_guid>\n\
             <secure_boot_enabled type=\"bool\">{}</secure_boot_enabled>\n\
             </_ac6b8dc1-3257-4a70-b1b2-a9c9215659ad_>\n\
             {devices}\n\
             <global_settings><snapshots><list><size type=\"integer\">0</size></list>\
             </snapshots></global_settings>\n\
             <manifest>\n<size type=\"integer\">{}</size>\n{manifest}</manifest>\n\
             <properties>\n\
             <global_id type=\"string\">{VM_ID}</global_id>\n\
             <name type=\"string\">web02</name>\n\
             <subtype type=\"integer\">{subtype}</subtype>\n\
             <version type=\"integer\">1280</version>\n\
             </properties>\n\
             <settings>\n\
             <memory><bank><dynamic_memory_enabled type=\"bool\">False</dynamic_memory_enabled>\
             <limit type=\"integer\">1048576</limit><reservation type=\"integer\">512</reservation>\
             <size type=\"integer\">2048</size></bank></memory>\n\
             <processors><count type=\"integer\">2</count></processors>\n\
             </settings>\n\
             </configuration>\n",
            if secure { "True" } else { "False" },
            vdevs.len()
        )
    }

    fn ide(drives: &str) -> String {
        format!(
            "<_83f8638b-8dca-4152-9eda-2ca8b33039b4_>{drives}</_83f8638b-8dca-4152-9eda-2ca8b33039b4_>"
        )
    }

    fn device(instance: &str, body: &str) -> String {
        format!("<_{instance}_>{body}</_{instance}_>")
    }

    fn nic(instance: &str, mac: &str, switch: &str) -> String {
        device(
            instance,
            &format!(
                "<Connection><AltPortName type=\"string\">Dynamic Ethernet Switch Port\
                 </AltPortName><AltSwitchName type=\"string\">{switch}</AltSwitchName>\
                 </Connection><FriendlyName type=\"string\">Network Adapter</FriendlyName>\
                 <MacAddress type=\"string\">{mac}</MacAddress>"
            ),
        )
    }

    const HOST: &str = "D:\\Hyper-V\\web02\\Virtual Hard Disks\\";

    /// The generation 1 VM: a boot disk on IDE 0:0, a DVD on IDE 1:0, a data disk on SCSI,
    /// a synthetic and a legacy NIC, COM1 on a pipe.
    fn gen1() -> String {
        let devices = format!(
            "{}\n{}\n{}\n{}\n{}",
            ide(&format!(
                "<controller0>{}{}</controller0><controller1>{}</controller1>",
                drive(0, "VHD", &format!("{HOST}web02.vhdx")),
                drive(1, "NONE", ""),
                drive(0, "ISO", "C:\\iso\\rhel9.iso"),
            )),
            device(
                SCSI0,
                &format!(
                    "<ChannelInstanceGuid type=\"string\">{{x}}</ChannelInstanceGuid>\
                     <controller0>{}</controller0>",
                    drive(0, "VHD", &format!("{HOST}Data.VHDX"))
                )
            ),
            nic(NIC0, "00155D0107DC", "External"),
            nic(NIC1, "00-15-5D-01-07-DD", "Internal"),
            "<_8e3a359f-559a-4b6a-98a9-1690a6100ed7_><port0><connection type=\"string\">\
             \\\\.\\pipe\\web02-com1</connection></port0><port1><connection type=\"string\">\
             </connection></port1></_8e3a359f-559a-4b6a-98a9-1690a6100ed7_>",
        );
        config(
            0,
            false,
            &devices,
            &[
                (
                    IDE,
                    "83F8638B-8DCA-4152-9EDA-2CA8B33039B4",
                    "Microsoft Emulated IDE Controller",
                ),
                (SYNTHETIC_NIC, NIC0, "Synthetic Ethernet Port"),
                (SCSI, SCSI0, "Synthetic SCSI Controller"),
                (
                    "11111111-2222-4333-8444-555555555555",
                    NIC1,
                    "Emulated Ethernet Port",
                ),
            ],
        )
    }

    /// An export folder with the configuration (as `bytes`) and these disk files.
    fn export(bytes: &[u8], disks: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let vms = dir.path().join(VMS_DIR);
        let vhds = dir.path().join(DISKS_DIR);
        std::fs::create_dir_all(&vms).expect("mkdir");
        std::fs::create_dir_all(&vhds).expect("mkdir");
        std::fs::write(vms.join(format!("{VM_ID}.xml")), bytes).expect("write");
        for d in disks {
            std::fs::write(vhds.join(d), b"vhdxfile").expect("write");
        }
        let path = dir.path().to_owned();
        (dir, path)
    }

    fn utf16le_bom(text: &str) -> Vec<u8> {
        let mut out = vec![0xff, 0xfe];
        for u in text.encode_utf16() {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out
    }

    fn invalid(r: Result<ExportFacts, ExportError>) -> Vec<String> {
        match r {
            Err(ExportError::Invalid { problems, .. }) => {
                problems.iter().map(|p| p.to_string()).collect()
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn refused(r: Result<ExportFacts, ExportError>) -> String {
        match r {
            Err(ExportError::Refused { why, .. }) => why,
            other => panic!("expected Refused, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_generation_1_export_in_utf16() {
        let (dir, path) = export(&utf16le_bom(&gen1()), &["web02.vhdx", "data.vhdx"]);
        let facts = read_hyperv(&path).expect("valid");
        let vhds = dir.path().join(DISKS_DIR);
        assert_eq!(facts.kind, ExportKind::HyperV);
        assert_eq!(facts.path, path);
        assert_eq!(facts.name, "web02");
        assert_eq!(
            facts.vm_id.as_deref(),
            Some("6a7e1e2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b")
        );
        assert_eq!(
            facts.uuid.as_deref(),
            Some("7ffee066-9755-4950-9a16-4c94ac67ad00")
        );
        assert_eq!(facts.vcpus, Some(2));
        assert_eq!(facts.memory_mib, Some(2048));
        assert_eq!(facts.firmware, Firmware::Bios);
        assert!(!facts.secureboot);
        assert_eq!(facts.os_hint, None);
        assert_eq!(facts.hardware_version.as_deref(), Some("hyperv-5.0"));
        let disk = |id: &str, at: &str, c: Controller, file: &str| ExportDisk {
            id: id.into(),
            described_at: format!("{at} in {VM_ID}.xml"),
            controller: Some(c),
            unit: Some(0),
            location: DiskLocation::File {
                path: vhds.join(file),
                extents: vec![],
                parents: vec![],
            },
            format: SourceFormat::Vhdx,
            capacity: None,
            digest_name: None,
        };
        assert_eq!(
            facts.disks,
            [
                disk("disk0", "ide0:0", Controller::Ide, "web02.vhdx"),
                // Data.VHDX in the configuration, data.vhdx in the folder.
                disk("disk1", "scsi0:0", Controller::Scsi(None), "data.vhdx"),
            ]
        );
        let nic = |id: &str, mac: &str, net: &str, model: &str| ExportNic {
            id: id.into(),
            mac: MacAddr::parse(mac),
            network: Some(net.into()),
            adapter: Some(model.into()),
        };
        assert_eq!(
            facts.nics,
            [
                nic("nic0", "00:15:5d:01:07:dc", "External", "netvsc"),
                nic("nic1", "00:15:5d:01:07:dd", "Internal", "dec21140"),
            ]
        );
        assert_eq!(
            facts.notes,
            [
                "ide1:0 is a DVD drive (rhel9.iso); not carried",
                "COM1 is connected to \\\\.\\pipe\\web02-com1; not carried",
                "a Hyper-V configuration does not name the guest OS: the manifest has no \
                 vm.os_hint (add one if you know it)",
            ]
        );

        // The same configuration in UTF-8 (no BOM), in UTF-16 big-endian, and in UTF-16
        // without a BOM reads the same.
        let text = gen1();
        let mut be = vec![0xfe, 0xff];
        let mut bare = Vec::new();
        for u in text.encode_utf16() {
            be.extend_from_slice(&u.to_be_bytes());
            bare.extend_from_slice(&u.to_le_bytes());
        }
        for bytes in [text.into_bytes(), be, bare] {
            let (_d, p) = export(&bytes, &["web02.vhdx", "data.vhdx"]);
            let other = read_hyperv(&p).expect("valid");
            assert_eq!(other.disks.len(), 2);
            assert_eq!(other.nics, facts.nics);
        }
    }

    #[test]
    fn generation_2_boots_from_scsi_in_manifest_order_with_secure_boot() {
        // SCSI1 comes first in the document (elements are sorted by GUID) but was added
        // second.
        let devices = format!(
            "{}\n{}",
            device(
                SCSI1,
                &format!(
                    "<controller0>{}</controller0>",
                    drive(0, "VHD", &format!("{HOST}logs.vhd"))
                )
            ),
            device(
                SCSI0,
                &format!(
                    "<controller0>{}{}{}</controller0>",
                    drive(0, "VHD", &format!("{HOST}boot.vhdx")),
                    drive(1, "ISO", ""),
                    drive(2, "VHD", &format!("{HOST}data.vhdx"))
                )
            ),
        );
        let text = config(
            1,
            true,
            &devices,
            &[
                (SCSI, SCSI0, "Synthetic SCSI Controller"),
                (SCSI, SCSI1, "Synthetic SCSI Controller"),
            ],
        );
        let (dir, path) = export(text.as_bytes(), &["boot.vhdx", "data.vhdx", "logs.vhd"]);
        let facts = read_hyperv(&path).expect("valid");
        assert_eq!(facts.firmware, Firmware::Uefi);
        assert!(facts.secureboot);
        let order: Vec<(&str, &str, SourceFormat)> = facts
            .disks
            .iter()
            .map(|d| (d.id.as_str(), d.described_at.as_str(), d.format))
            .collect();
        let at = |s: &str| format!("{s} in {VM_ID}.xml");
        assert_eq!(
            order,
            [
                ("disk0", at("scsi0:0").as_str(), SourceFormat::Vhdx),
                ("disk1", at("scsi0:2").as_str(), SourceFormat::Vhdx),
                ("disk2", at("scsi1:0").as_str(), SourceFormat::Vhd),
            ]
        );
        assert_eq!(facts.disks[1].unit, Some(2));
        assert!(facts.nics.is_empty());

        // Given as the configuration file itself, the export is the folder above it.
        let xml = dir.path().join(VMS_DIR).join(format!("{VM_ID}.xml"));
        let direct = read_hyperv(&xml).expect("valid");
        assert_eq!(direct.disks, facts.disks);
        assert_eq!(direct.path, xml);
    }

    #[test]
    fn secure_boot_on_generation_1_is_a_note_and_dynamic_memory_too() {
        let text = config(
            0,
            true,
            &ide(&format!(
                "<controller0>{}</controller0>",
                drive(0, "VHD", "C:\\vm\\boot.vhdx")
            )),
            &[],
        )
        .replace(
            "<dynamic_memory_enabled type=\"bool\">False",
            "<dynamic_memory_enabled type=\"bool\">TRUE",
        );
        let (_dir, path) = export(text.as_bytes(), &["boot.vhdx"]);
        std::fs::create_dir_all(path.join("Snapshots")).expect("mkdir");
        std::fs::write(path.join("Snapshots/x.xml"), b"<configuration/>").expect("write");
        let facts = read_hyperv(&path).expect("valid");
        assert!(!facts.secureboot);
        assert_eq!(
            facts.notes,
            [
                "the VM has dynamic memory (minimum 512 MiB, maximum 1048576 MiB); it gets its \
                 startup memory, 2048 MiB, fixed",
                format!(
                    "{VM_ID}.xml says secure_boot_enabled but the VM is generation 1 (BIOS); \
                     secure boot is off"
                )
                .as_str(),
                "the export holds checkpoints (Snapshots/: 1 entries; the configuration lists \
                 0); only the VM's current state, the disks its configuration names, is carried",
                "a Hyper-V configuration does not name the guest OS: the manifest has no \
                 vm.os_hint (add one if you know it)",
            ]
        );
    }

    #[test]
    fn every_bad_disk_is_a_problem_with_its_line() {
        let drives = [
            drive(0, "VHD", &format!("{HOST}gone.vhdx")),
            drive(1, "VHD", "C:\\vm\\..\\sub/evil.vhdx"),
            drive(2, "VHD", &format!("{HOST}web02_6A7E1E2B.avhdx")),
            drive(3, "VHD", &format!("{HOST}disk.vmdk")),
            drive(4, "VHD", &format!("{HOST}link.vhdx")),
            drive(5, "VHD", &format!("{HOST}ok.vhdx")),
            drive(6, "VHD", "E:\\other\\OK.vhdx"),
            drive(7, "PHYSICAL", "\\\\.\\PHYSICALDRIVE2"),
        ]
        .join("\n");
        let text = config(
            1,
            false,
            &device(SCSI0, &format!("<controller0>\n{drives}\n</controller0>")),
            &[(SCSI, SCSI0, "Synthetic SCSI Controller")],
        );
        let (dir, path) = export(text.as_bytes(), &["ok.vhdx", "web02_6A7E1E2B.avhdx"]);
        let outside = dir.path().join("outside.vhdx");
        std::fs::write(&outside, b"x").expect("write");
        std::os::unix::fs::symlink(&outside, dir.path().join(DISKS_DIR).join("link.vhdx"))
            .expect("symlink");
        let line = |n: usize| {
            let at = text
                .lines()
                .position(|l| l.contains(&format!("<drive{n}>")))
                .expect("line");
            format!("{VM_ID}.xml: line {}", at + 1)
        };
        let vhds = dir.path().join(DISKS_DIR);
        assert_eq!(
            invalid(read_hyperv(&path)),
            [
                format!(
                    "{}: scsi0:0 pathname {HOST}gone.vhdx: gone.vhdx is not in the export's \
                     Virtual Hard Disks folder ({})",
                    line(0),
                    vhds.display()
                ),
                format!(
                    "{}: scsi0:1 pathname C:\\vm\\..\\sub/evil.vhdx: the file name sub/evil.vhdx \
                     is not a plain name (after the Windows folders)",
                    line(1)
                ),
                format!(
                    "{}: scsi0:2 pathname {HOST}web02_6A7E1E2B.avhdx: web02_6A7E1E2B.avhdx is a \
                     differencing disk (a checkpoint); the VM's current state is spread over it \
                     and its parents: {CHECKPOINT_ADVICE}",
                    line(2)
                ),
                format!(
                    "{}: scsi0:3 pathname {HOST}disk.vmdk: disk.vmdk is not a .vhdx or .vhd; a \
                     Hyper-V hard disk is one",
                    line(3)
                ),
                format!(
                    "{}: scsi0:4 pathname {HOST}link.vhdx: link.vhdx leads outside the export's \
                     Virtual Hard Disks folder ({}); copy the disk into it",
                    line(4),
                    outside.canonicalize().expect("canonical").display()
                ),
                format!(
                    "{}: scsi0:6 pathname E:\\other\\OK.vhdx: OK.vhdx is attached twice (also as \
                     scsi0:5)",
                    line(6)
                ),
                format!(
                    "{}: scsi0:7 type \"PHYSICAL\": expected VHD (a virtual hard disk), ISO or \
                     NONE; a physical (pass-through) disk must be copied into a VHDX first",
                    line(7)
                ),
            ]
        );
    }

    #[test]
    fn bad_values_are_problems_at_once() {
        let text = gen1()
            .replace("<subtype type=\"integer\">0", "<subtype type=\"integer\">2")
            .replace("<count type=\"integer\">2", "<count type=\"integer\">many")
            .replace("00155D0107DC", "00155D01")
            .replace("00-15-5D-01-07-DD", "000000000000")
            .replace(VM_ID, "web02-id");
        let (_dir, path) = export(text.as_bytes(), &["web02.vhdx", "data.vhdx"]);
        let line = |needle: &str| {
            let at = text.lines().position(|l| l.contains(needle)).expect("line");
            format!("{}: line {}", "web02-id.xml", at + 1)
        };
        // The file keeps its name; only its contents say web02-id.
        let problems = invalid(read_hyperv(&path))
            .into_iter()
            .map(|p| p.replace(&format!("{VM_ID}.xml"), "web02-id.xml"))
            .collect::<Vec<_>>();
        assert_eq!(
            problems,
            [
                format!(
                    "{}: <global_id> \"web02-id\": expected the VM's GUID",
                    line("<global_id")
                ),
                format!(
                    "{}: <subtype> 2: expected 0 (generation 1, BIOS) or 1 (generation 2, UEFI)",
                    line("<subtype")
                ),
                format!(
                    "{}: <count> \"many\": expected a number of virtual processors (1 or more)",
                    line("<count")
                ),
                format!(
                    "{}: <MacAddress> \"00155D01\": expected a MAC address of 12 hex digits \
                     (00155D0107DC)",
                    line("00155D01<")
                ),
            ]
        );
    }

    #[test]
    fn binary_missing_and_several_configurations_are_refused() {
        let (dir, path) = export(gen1().as_bytes(), &["web02.vhdx", "data.vhdx"]);
        let vms = dir.path().join(VMS_DIR);
        std::fs::write(vms.join(format!("{VM_ID}.vmcx")), b"\x01\x02").expect("write");
        let why = refused(read_hyperv(&path));
        assert!(
            why.starts_with(&format!(
                "Virtual Machines/{VM_ID}.vmcx is a binary configuration (.vmcx, written by \
                 Hyper-V 2016 and later), which hyper2kvm does not read; either export the VM"
            )),
            "{why}"
        );
        assert!(why.contains("Get-VMHardDiskDrive"), "{why}");
        let why = refused(read_hyperv(&vms.join(format!("{VM_ID}.vmcx"))));
        assert!(why.contains("binary configuration"), "{why}");
        std::fs::remove_file(vms.join(format!("{VM_ID}.vmcx"))).expect("rm");

        std::fs::write(vms.join("0000.exp"), b"\x01").expect("write");
        assert!(refused(read_hyperv(&path)).contains("Hyper-V 2008 R2 export"));
        std::fs::remove_file(vms.join("0000.exp")).expect("rm");

        std::fs::write(vms.join("other.XML"), gen1()).expect("write");
        assert_eq!(
            refused(read_hyperv(&path)),
            format!(
                "its Virtual Machines folder holds 2 configurations ({VM_ID}.xml, other.XML); an \
                 export holds one VM: pass the .xml of the VM to import"
            )
        );
        std::fs::remove_file(vms.join("other.XML")).expect("rm");
        std::fs::remove_file(vms.join(format!("{VM_ID}.xml"))).expect("rm");
        assert!(refused(read_hyperv(&path)).contains("holds no configuration"));
        std::fs::remove_dir(&vms).expect("rmdir");
        assert!(refused(read_hyperv(&path)).starts_with("it has no Virtual Machines folder"));
        assert!(matches!(
            read_hyperv(&path.join("gone")),
            Err(ExportError::NotFound {
                kind: ExportKind::HyperV,
                ..
            })
        ));
    }

    #[test]
    fn doctype_garbage_and_other_roots_are_refused_with_their_place() {
        let text = gen1().replacen(
            "<configuration>",
            "<!DOCTYPE configuration [<!ENTITY x \"xx\">]>\n<configuration>",
            1,
        );
        let (_dir, path) = export(&utf16le_bom(&text), &[]);
        let p = invalid(read_hyperv(&path));
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with(&format!(
                "{VM_ID}.xml: line 2, column 1: a DOCTYPE declaration is refused"
            )),
            "{p:?}"
        );
        assert!(p[0].contains("Hyper-V never writes one"), "{p:?}");

        let (_dir, path) = export(b"<domain type='kvm'/>", &[]);
        assert_eq!(
            invalid(read_hyperv(&path)),
            [format!(
                "{VM_ID}.xml: line 1: the root element is <domain>; a Hyper-V configuration's is \
                 <configuration>"
            )]
        );

        let (_dir, path) = export(&[0xff, 0xfe, b'<', 0, b'a'], &[]);
        assert_eq!(
            invalid(read_hyperv(&path)),
            [format!(
                "{VM_ID}.xml: is UTF-16 with an odd number of bytes: the file is truncated"
            )]
        );
        let (_dir, path) = export(&[b'<', b'a', 0xff, b'>'], &[]);
        assert_eq!(
            invalid(read_hyperv(&path)),
            [format!("{VM_ID}.xml: is neither UTF-16 nor UTF-8 text")]
        );

        let text = config(0, false, "", &[]);
        let (_dir, path) = export(text.as_bytes(), &[]);
        assert_eq!(
            invalid(read_hyperv(&path)),
            [format!(
                "{VM_ID}.xml: no hard disk is attached (no VHD or VHDX on the IDE or SCSI \
                 controllers)"
            )]
        );
    }

    #[test]
    fn a_configuration_over_the_limit_is_refused() {
        let (dir, path) = export(b"", &[]);
        let xml = dir.path().join(VMS_DIR).join(format!("{VM_ID}.xml"));
        std::fs::File::create(&xml)
            .expect("create")
            .set_len(CONFIG_LIMIT + 1)
            .expect("set_len");
        assert!(matches!(
            read_hyperv(&path),
            Err(ExportError::TooLarge { size, limit: CONFIG_LIMIT, .. }) if size == CONFIG_LIMIT + 1
        ));
    }

    #[test]
    fn names_guids_and_macs_read_as_hyperv_writes_them() {
        assert_eq!(
            device_guid("_83F8638B-8DCA-4152-9EDA-2CA8B33039B4_").as_deref(),
            Some(IDE)
        );
        assert_eq!(
            device_guid("_83f8638b-8dca-4152-9eda-2ca8b33039b4_0_").as_deref(),
            Some(IDE)
        );
        assert_eq!(device_guid("_83f8638b-8dca-4152-9eda-2ca8b33039b4"), None);
        assert_eq!(
            device_guid("_83f8638b-8dca-4152-9eda-2ca8b33039b4_x_"),
            None
        );
        assert_eq!(device_guid("properties"), None);
        assert_eq!(
            guid("{7FFEE066-9755-4950-9A16-4C94AC67AD00}").as_deref(),
            Some("7ffee066-9755-4950-9a16-4c94ac67ad00")
        );
        assert_eq!(guid("7ffee066-9755-4950-9a16-4c94ac67ad0"), None);
        assert_eq!(
            hyperv_mac("00-15-5D-01-07-DC"),
            Ok(MacAddr::parse("00:15:5d:01:07:dc"))
        );
        assert_eq!(hyperv_mac("000000000000"), Ok(None));
        assert_eq!(hyperv_mac("00155D0107"), Err(()));
        assert_eq!(windows_basename("C:\\a b\\c.vhdx"), "c.vhdx");
        assert_eq!(
            declare_utf8(
                "<?xml version=\"1.0\" encoding=\"UTF-16\" standalone=\"yes\"?>\n<a/>".into()
            ),
            "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<a/>"
        );
        assert_eq!(
            declare_utf8("<?xml version='1.0' encoding='utf-16le'?><a/>".into()),
            "<?xml version='1.0' encoding='UTF-8'?><a/>"
        );
        let latin = "<?xml version='1.0' encoding='ISO-8859-1'?><a/>";
        assert_eq!(declare_utf8(latin.into()), latin);
    }
}
