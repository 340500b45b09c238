//! `disks`: the exported disk files of the VM, the one section every manifest must have.
//!
//! Its checks are written by hand, in upstream's order and wording
//! (`disks[1].source_format unsupported: vmdkk. Supported: ['vmdk', ...]`), because those
//! messages are what users of the Python tool know; the field path and "did you mean" are added.
//! Whether `local_path` exists and is a disk (a regular, non-empty file, or a block device with
//! `allow_block_device`) is checked here too, so a typo in a path, or `/dev/zero`, a FIFO or a
//! directory, stops the run before anything is planned.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schema::{self, Kind};
use crate::config::{self, kind_of};
use crate::diag::Problems;
use crate::files;
use crate::spelling::spelled_enum;

spelled_enum! {
    /// A source image format, as the manifest names it.
    pub enum SourceFormat {
        Vmdk = "vmdk",
        Qcow2 = "qcow2",
        Raw = "raw",
        Vhd = "vhd",
        Vhdx = "vhdx",
        Vdi = "vdi",
    }
}

impl SourceFormat {
    /// The qemu block driver name (`-f`), which differs from the manifest name only for VHD.
    pub fn driver(self) -> &'static str {
        match self {
            SourceFormat::Vmdk => "vmdk",
            SourceFormat::Qcow2 => "qcow2",
            SourceFormat::Raw => "raw",
            SourceFormat::Vhd => "vpc",
            SourceFormat::Vhdx => "vhdx",
            SourceFormat::Vdi => "vdi",
        }
    }

    /// The manifest format for a qemu driver name.
    pub fn from_driver(driver: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.driver() == driver)
    }

    /// Whether `qemu-img check` can examine this format (raw and vpc answer "not supported").
    pub fn checkable(self) -> bool {
        !matches!(self, SourceFormat::Raw | SourceFormat::Vhd)
    }
}

spelled_enum! {
    /// What the disk holds; shown by `--dry-run`, otherwise not used.
    #[derive(Default)]
    pub enum DiskType {
        Boot = "boot",
        Data = "data",
        #[default]
        Unknown = "unknown",
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub id: String,
    /// Probed with qemu-img at planning when the manifest leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_format: Option<SourceFormat>,
    /// The file's size; read from the file at planning when the manifest leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    pub local_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default = "default_boot_order_hint")]
    pub boot_order_hint: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default)]
    pub disk_type: DiskType,
    /// Whether `local_path` may be a block device (a LUN, an LVM volume) instead of an image
    /// file; anything else that is not a regular file is always refused.
    #[serde(default)]
    pub allow_block_device: bool,
    /// The disk is this member of the tar archive `local_path` (an OVA), read in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_member: Option<TarMember>,
    /// The files `local_path` rests on (a snapshot's parents), nearest first, as `--vmx`
    /// writes them: the run converts the current state through them and refuses a chain that
    /// qemu-img resolves to other files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing_chain: Option<Vec<String>>,
}

/// `disks[].tar_member`: where a disk's bytes are inside an OVA, as `--ova` writes it. The
/// plan checks the tar header before `offset` still names this member with this size, so an
/// archive that was replaced is refused instead of read at the wrong place.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TarMember {
    pub name: String,
    /// Where the member's data starts in the archive (a multiple of 512).
    pub offset: u64,
    pub size: u64,
}

/// The keys of `disks[].tar_member`.
pub const TAR_MEMBER_KEYS: &[&str] = &["name", "offset", "size"];

/// The most files `disks[].backing_chain` may list (VMware's own limit on a snapshot chain, and
/// the VMX reader's).
pub const MAX_BACKING_CHAIN: usize = 64;

/// Upstream's default, so a disk without a hint sorts after those with the usual small hints.
fn default_boot_order_hint() -> u32 {
    999
}

impl Disk {
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.id)
    }
}

pub(super) const KEYS: &[&str] = &[
    "id",
    "source_format",
    "bytes",
    "local_path",
    "checksum",
    "boot_order_hint",
    "label",
    "disk_type",
    "allow_block_device",
    "tar_member",
    "backing_chain",
];

/// Checks the `disks` value (`None` when the key is missing); `dir` resolves relative paths.
pub fn check(disks: Option<&Value>, dir: &Path, problems: &mut Problems) {
    match disks {
        None => problems.push(
            "disks",
            "Missing required field: disks[]. Artifact Manifest v1 requires at least one disk.",
        ),
        Some(Value::Array(disks)) if disks.is_empty() => {
            problems.push("disks", "Field 'disks' must contain at least one disk")
        }
        Some(Value::Array(disks)) => check_each(disks, dir, problems),
        Some(_) => problems.push("disks", "Field 'disks' must be an array"),
    }
}

fn check_each(disks: &[Value], dir: &Path, problems: &mut Problems) {
    let mut seen_ids = HashSet::new();
    for (i, disk) in disks.iter().enumerate() {
        let p = |field: &str| format!("disks[{i}].{field}");
        let Some(d) = disk.as_object() else {
            problems.push(
                &format!("disks[{i}]"),
                format!("disks[{i}] must be an object"),
            );
            continue;
        };
        // `source_format` and `bytes` may be left out (the guide's manifests do): planning
        // probes them. When given they are checked here and against the file later.
        for field in ["id", "local_path"] {
            if !d.contains_key(field) {
                problems.push(&p(field), format!("disks[{i}].{field} is required"));
            }
        }
        if let Some(id) = d.get("id") {
            match id.as_str() {
                Some(id) => {
                    if !seen_ids.insert(id.to_owned()) {
                        problems.push(
                            &p("id"),
                            format!("Duplicate disk ID: {}", crate::diag::excerpt(id)),
                        );
                    } else if !is_id(id) {
                        problems.push(
                            &p("id"),
                            format!(
                                "disks[{i}].id must match pattern: ^[a-zA-Z0-9_-]+$ (got: '{}')",
                                crate::diag::excerpt(id)
                            ),
                        );
                    }
                }
                None => problems.push(
                    &p("id"),
                    format!(
                        "disks[{i}].id must match pattern: ^[a-zA-Z0-9_-]+$ (got: {})",
                        crate::diag::excerpt_value(id)
                    ),
                ),
            }
        }
        if let Some(fmt) = d.get("source_format") {
            match fmt.as_str() {
                Some(s) if SourceFormat::NAMES.contains(&s) => {}
                _ => {
                    let shown = crate::diag::excerpt(
                        &fmt.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| fmt.to_string()),
                    );
                    let hint = fmt
                        .as_str()
                        .and_then(|s| crate::diag::suggest(s, SourceFormat::NAMES))
                        .map(|s| format!(" (did you mean '{s}'?)"))
                        .unwrap_or_default();
                    problems.push(
                        &p("source_format"),
                        format!(
                            "disks[{i}].source_format unsupported: {shown}. Supported: {}{hint}",
                            py_list(SourceFormat::NAMES)
                        ),
                    );
                }
            }
        }
        if let Some(bytes) = d.get("bytes")
            && bytes.as_u64().is_none()
        {
            problems.push(
                &p("bytes"),
                format!("disks[{i}].bytes must be a non-negative integer (got: {bytes})"),
            );
        }
        let allow_block = d
            .get("allow_block_device")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let Some(a) = d.get("allow_block_device")
            && !a.is_boolean()
        {
            schema::check_value(&p("allow_block_device"), a, &Kind::Bool, problems);
        }
        if let Some(lp) = d.get("local_path") {
            match lp.as_str() {
                Some(s) => {
                    let resolved = config::resolve_relative(dir, s);
                    if let Err(e) = files::open_source(&resolved, allow_block) {
                        problems.push(&p("local_path"), source_problem(i, &resolved, &e));
                    } else if let Some(m) = d.get("tar_member") {
                        check_tar_member(i, &resolved, m, problems);
                    }
                }
                None => problems.push(
                    &p("local_path"),
                    format!(
                        "disks[{i}].local_path must be a string path (got {})",
                        kind_of(lp)
                    ),
                ),
            }
        }
        // `null` is "no checksum": the Python importer writes it when checksums are skipped.
        if let Some(sum) = d.get("checksum").filter(|v| !v.is_null()) {
            let ok = sum.as_str().is_some_and(is_sha256_checksum);
            if !ok {
                let shown = sum
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| sum.to_string());
                problems.push(
                    &p("checksum"),
                    format!(
                        "disks[{i}].checksum must match format: sha256:<hexdigest>, with 64 \
                         lower-case hex digits (got: '{shown}'); leave it out or write null for \
                         no checksum"
                    ),
                );
            }
        }
        if let Some(h) = d.get("boot_order_hint")
            && h.as_u64().is_none_or(|n| n > u64::from(u32::MAX))
        {
            problems.push(
                &p("boot_order_hint"),
                format!("disks[{i}].boot_order_hint must be a non-negative integer"),
            );
        }
        if let Some(l) = d.get("label")
            && !l.is_string()
        {
            schema::check_value(&p("label"), l, &Kind::Str, problems);
        }
        if let Some(t) = d.get("disk_type")
            && !t.as_str().is_some_and(|s| DiskType::NAMES.contains(&s))
        {
            problems.push(
                &p("disk_type"),
                format!(
                    "disks[{i}].disk_type must be one of: {}",
                    DiskType::NAMES.join(", ")
                ),
            );
        }
        if let Some(chain) = d.get("backing_chain") {
            check_backing_chain(i, dir, chain, problems);
            if d.contains_key("tar_member") {
                problems.push(
                    &p("backing_chain"),
                    format!(
                        "disks[{i}] has both tar_member and backing_chain; an archive member is \
                         a standalone image, so leave backing_chain out"
                    ),
                );
            }
            if d.get("checksum").is_some_and(|c| !c.is_null()) {
                problems.push(
                    &p("checksum"),
                    format!(
                        "disks[{i}].checksum would cover local_path only, not the backing_chain \
                         files that hold the rest of the disk's data; leave it out (or write \
                         null) for a disk with a backing_chain"
                    ),
                );
            }
        }
        problems.unknown_keys(&format!("disks[{i}]"), d, KEYS);
    }
}

/// `disks[i].backing_chain`: a list of at most [`MAX_BACKING_CHAIN`] paths, each an existing
/// regular file. Whether they are the chain qemu-img follows is checked when the disk is read.
fn check_backing_chain(i: usize, dir: &Path, chain: &Value, problems: &mut Problems) {
    let at = format!("disks[{i}].backing_chain");
    let Some(list) = chain.as_array() else {
        problems.push(
            &at,
            format!(
                "{at} must be a list of the files local_path rests on, nearest parent first \
                 (got {})",
                kind_of(chain)
            ),
        );
        return;
    };
    if list.is_empty() {
        problems.push(
            &at,
            format!(
                "{at} is empty; leave it out for a standalone image, or list the files \
                 local_path rests on, nearest parent first"
            ),
        );
        return;
    }
    if list.len() > MAX_BACKING_CHAIN {
        problems.push(
            &at,
            format!(
                "{at} lists {} files; at most {MAX_BACKING_CHAIN} are read (flatten the chain \
                 first: qemu-img convert from its top)",
                list.len()
            ),
        );
        return;
    }
    for (j, entry) in list.iter().enumerate() {
        let here = format!("{at}[{j}]");
        let Some(s) = entry.as_str().filter(|s| !s.is_empty()) else {
            problems.push(
                &here,
                format!(
                    "{here} must be a non-empty string path (got {})",
                    crate::diag::excerpt_value(entry)
                ),
            );
            continue;
        };
        let resolved = config::resolve_relative(dir, s);
        let shown = resolved.display();
        let why = match files::open_source(&resolved, false) {
            Ok(_) => continue,
            Err(files::SourceError::NotFound) => {
                problems.push(&here, format!("{here} not found: {shown}"));
                continue;
            }
            Err(files::SourceError::Io(e)) => format!("cannot be read ({e})"),
            Err(files::SourceError::NotADisk(kind)) => format!("is {}", kind.described()),
            Err(files::SourceError::BlockDeviceNotAllowed) => "is a block device".to_owned(),
            Err(files::SourceError::Empty) => "is empty (0 bytes)".to_owned(),
        };
        problems.push(
            &here,
            format!("{here} {shown} {why}; a backing file is a regular, non-empty file"),
        );
    }
}

/// `disks[i].tar_member`: its shape, and that the archive's header before `offset` names the
/// member with this size.
fn check_tar_member(i: usize, archive: &Path, m: &Value, problems: &mut Problems) {
    let at = format!("disks[{i}].tar_member");
    let Some(obj) = m.as_object() else {
        problems.push(
            &at,
            format!(
                "{at} must be a mapping with name, offset and size (got {})",
                kind_of(m)
            ),
        );
        return;
    };
    problems.unknown_keys(&at, obj, TAR_MEMBER_KEYS);
    let name = obj.get("name").and_then(Value::as_str);
    let offset = obj.get("offset").and_then(Value::as_u64);
    let size = obj.get("size").and_then(Value::as_u64);
    let (Some(name), Some(offset), Some(size)) = (name, offset, size) else {
        problems.push(
            &at,
            format!(
                "{at} needs name (a string), offset and size (non-negative integers), as \
                 hyper2kvm --ova writes them"
            ),
        );
        return;
    };
    if let Err(why) = files::check_tar_member(archive, name, offset, size) {
        problems.push(
            &at,
            format!(
                "{at}: {} does not hold member {name} at byte {offset}: {why}; import the \
                 archive again",
                archive.display()
            ),
        );
    }
}

/// Why `disks[i].local_path` cannot be read as a source disk, and what was expected.
pub fn source_problem(i: usize, path: &Path, e: &files::SourceError) -> String {
    let shown = path.display();
    let expected = "expected a disk image file (a regular file, not empty)";
    match e {
        files::SourceError::NotFound => format!("disks[{i}].local_path not found: {shown}"),
        files::SourceError::Io(e) => {
            format!("disks[{i}].local_path {shown} cannot be read ({e}); {expected}")
        }
        files::SourceError::NotADisk(files::FileKind::Directory) => {
            format!("disks[{i}].local_path is a directory, expected a disk image file: {shown}")
        }
        files::SourceError::NotADisk(kind) => format!(
            "disks[{i}].local_path {shown} is {}; {expected}",
            kind.described()
        ),
        files::SourceError::BlockDeviceNotAllowed => format!(
            "disks[{i}].local_path {shown} is a block device; {expected}, or set \
             disks[{i}].allow_block_device: true to convert the device itself"
        ),
        files::SourceError::Empty => {
            format!("disks[{i}].local_path {shown} is empty (0 bytes); {expected}")
        }
    }
}

/// Formats a list the way upstream's Python messages do: `['a', 'b']`.
fn py_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// `^[a-zA-Z0-9_-]+$`: a disk id, which names its output file (batch VM ids follow it too).
pub fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `^sha256:[a-f0-9]{64}$`
pub fn is_sha256_checksum(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems_of(disks: Option<Value>) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.raw"), b"x").expect("write");
        let mut problems = Problems::default();
        check(disks.as_ref(), dir.path(), &mut problems);
        problems.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_list_itself() {
        assert_eq!(
            problems_of(None),
            ["Missing required field: disks[]. Artifact Manifest v1 requires at least one disk."]
        );
        assert_eq!(
            problems_of(Some(json!([]))),
            ["Field 'disks' must contain at least one disk"]
        );
        assert_eq!(
            problems_of(Some(json!({}))),
            ["Field 'disks' must be an array"]
        );
    }

    #[test]
    fn null_checksum_is_no_checksum() {
        let disks = json!([
            {"id": "d0", "source_format": "raw", "bytes": 1, "local_path": "a.raw", "checksum": null}
        ]);
        assert!(problems_of(Some(disks)).is_empty());
    }

    #[test]
    fn format_and_size_may_be_left_out() {
        let disks = json!([{"id": "d0", "local_path": "a.raw"}]);
        assert!(problems_of(Some(disks)).is_empty());
    }

    #[test]
    fn types_and_enums_use_the_names() {
        let disks = json!([
            {"id": "d0", "source_format": 3, "bytes": 1, "local_path": "a.raw",
             "disk_type": "Boot", "label": 7}
        ]);
        assert_eq!(
            problems_of(Some(disks)),
            [
                "disks[0].source_format unsupported: 3. Supported: ['vmdk', 'qcow2', 'raw', 'vhd', 'vhdx', 'vdi']",
                "disks[0].label must be a string (got an integer: 7)",
                "disks[0].disk_type must be one of: boot, data, unknown",
            ]
        );
    }

    #[test]
    fn a_backing_chain_is_files_and_takes_no_checksum_or_member() {
        let ok = json!([{"id": "d0", "local_path": "a.raw", "backing_chain": ["a.raw"]}]);
        assert!(problems_of(Some(ok)).is_empty());
        let sum = format!("sha256:{}", "a".repeat(64));
        let disks = json!([
            {"id": "d0", "local_path": "a.raw", "backing_chain": ["a.raw", "", "gone.vmdk", "/"],
             "checksum": sum},
            {"id": "d1", "local_path": "a.raw", "backing_chain": "a.raw"},
            {"id": "d2", "local_path": "a.raw", "backing_chain": []},
            {"id": "d3", "local_path": "a.raw", "backing_chain": vec!["a.raw"; 65]},
        ]);
        let got = problems_of(Some(disks));
        let got: Vec<String> = got
            .iter()
            .map(|p| {
                regex_lite::Regex::new(r"/\S*/")
                    .expect("regex")
                    .replace_all(p, "<dir>/")
                    .into_owned()
            })
            .collect();
        assert_eq!(
            got,
            [
                "disks[0].backing_chain[1] must be a non-empty string path (got \"\")",
                "disks[0].backing_chain[2] not found: <dir>/gone.vmdk",
                "disks[0].backing_chain[3] / is a directory; a backing file is a regular, \
                 non-empty file",
                "disks[0].checksum would cover local_path only, not the backing_chain files that \
                 hold the rest of the disk's data; leave it out (or write null) for a disk with \
                 a backing_chain",
                "disks[1].backing_chain must be a list of the files local_path rests on, nearest \
                 parent first (got a string)",
                "disks[2].backing_chain is empty; leave it out for a standalone image, or list \
                 the files local_path rests on, nearest parent first",
                "disks[3].backing_chain lists 65 files; at most 64 are read (flatten the chain \
                 first: qemu-img convert from its top)",
            ]
        );
    }

    #[test]
    fn patterns() {
        assert!(is_id("disk-0_A"));
        assert!(!is_id("disk 0"));
        assert!(!is_id(""));
        assert!(is_sha256_checksum(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_sha256_checksum(&format!("sha256:{}", "A".repeat(64))));
    }

    #[test]
    fn drivers_map_both_ways() {
        for &f in SourceFormat::ALL {
            assert_eq!(SourceFormat::from_driver(f.driver()), Some(f));
        }
        assert_eq!(SourceFormat::Vhd.driver(), "vpc");
        assert_eq!(
            SourceFormat::from_driver("vhd"),
            None,
            "vhd is not a driver"
        );
        assert_eq!(SourceFormat::from_driver("parallels"), None);
    }
}
