//! VMDK descriptors: the small text file (or the text embedded in a sparse image) that names a
//! virtual disk's extents and, for a snapshot delta, its parent.
//!
//! A VMX names a disk by its descriptor; qemu-img opens the descriptor and, through it, every
//! extent and parent. [`resolve_chain`] checks all of them first, the way qemu-img will follow
//! them, so that the manifest names only regular files inside the VM's folder: no absolute path,
//! no `..` or link leading out of it, no raw device mapping, no encrypted disk, and a chain whose
//! every `parentCID` matches its parent's `CID`. The format is VMware's "Virtual Disk Format 1.1"
//! (text descriptor, `KDMV` sparse header); nothing here reads an extent's data.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::{Collected, DiskLocation, ExportError, ExportKind};
use crate::diag::{Problem, excerpt};

/// The most [`read_descriptor`] reads of a file, and the largest text descriptor it takes.
pub const DESCRIPTOR_LIMIT: u64 = 64 * 1024;

/// The most descriptors a snapshot chain may have (the top one included).
pub const MAX_CHAIN: usize = 64;

/// The magic of a hosted sparse extent (monolithicSparse, streamOptimized, a Workstation
/// snapshot delta): "KDMV" on disk, 0x564d444b read little-endian.
const SPARSE_MAGIC: &[u8; 4] = b"KDMV";
/// The magic of an ESX 2 sparse extent (COWD), which embeds no descriptor.
const COWD_MAGIC: &[u8; 4] = b"COWD";
/// `parentCID` of a disk that has no parent.
const NO_PARENT: &str = "ffffffff";

/// One extent line of a descriptor: `RW 8388608 VMFS "web01-flat.vmdk"`,
/// `RW 2048 FLAT "x-flat.vmdk" 0`, `RW 1024 ZERO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: String,
    /// The extent's size in 512-byte sectors.
    pub sectors: u64,
    /// `FLAT`, `SPARSE`, `ZERO`, `VMFS`, `VMFSSPARSE`, `SESPARSE`, `VMFSRDM`, `VMFSRAW`...
    /// upper-cased.
    pub kind: String,
    /// The extent's file, as written (relative to the descriptor); `None` for `ZERO`.
    pub file: Option<String>,
    /// The offset in sectors into the file, for a `FLAT` extent.
    pub offset: Option<u64>,
}

/// What a descriptor says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// `createType`: `monolithicFlat`, `twoGbMaxExtentSparse`, `vmfs`, `vmfsSparse`...
    pub create_type: String,
    /// `CID`, lower-cased.
    pub cid: Option<String>,
    /// `parentCID`, lower-cased; `None` when it is `ffffffff` (no parent) or absent.
    pub parent_cid: Option<String>,
    /// `parentFileNameHint`, as written.
    pub parent_hint: Option<String>,
    /// In order.
    pub extents: Vec<Extent>,
    /// `ddb.adapterType` (`lsilogic`, `ide`, `pvscsi`...).
    pub adapter_type: Option<String>,
    /// `encoding` (`UTF-8`, `windows-1252`...), as written.
    pub encoding: Option<String>,
    /// Whether the descriptor has any encryption key (`encryption.keySafe`, `encryption.data`,
    /// `ddb.encryption*`, `ddb.keySafe`) or an encrypted `createType`: qemu-img cannot read
    /// such a disk.
    pub encrypted: bool,
    /// Whether the descriptor was read from inside a sparse image rather than a text file.
    pub embedded: bool,
}

impl Descriptor {
    /// The disk's virtual size in bytes: the sum of its extents' sectors × 512, `None` when
    /// it overflows.
    pub fn capacity(&self) -> Option<u64> {
        self.extents
            .iter()
            .try_fold(0u64, |sum, e| sum.checked_add(e.sectors.checked_mul(512)?))
    }
}

/// The extent kinds whose data is a file qemu-img reads.
const FILE_KINDS: &[&str] = &["FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE"];
/// The extent kinds that are a device, not a file: raw device mappings.
const DEVICE_KINDS: &[&str] = &["VMFSRDM", "VMFSRDMP", "VMFSRAW", "VMFSPASSTHROUGHRAW"];

/// A file's name as messages say it: its name, or its path when it has none.
fn shown(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// An I/O error on a file of the VM: [`ExportError::NotFound`] when it is missing.
pub(crate) fn read_error(path: &Path, source: std::io::Error) -> ExportError {
    super::open_error(ExportKind::Vmx, path, source)
}

fn invalid(path: &Path, problems: Vec<Problem>) -> ExportError {
    ExportError::Invalid {
        kind: ExportKind::Vmx,
        path: path.to_owned(),
        problems,
    }
}

/// Reads the descriptor of a VMDK: a text descriptor file, or the descriptor a sparse image
/// embeds (at sector `descriptorOffset` of its `KDMV` header). `Ok(None)` for a sparse image
/// that embeds none and for an ESX 2 `COWD` sparse file. At most [`DESCRIPTOR_LIMIT`] bytes of
/// the file's head are read, and as much again of an embedded descriptor.
///
/// A file that is neither (a raw `-flat.vmdk` named in place of its descriptor, a VHD...) is
/// [`ExportError::Invalid`] "not a VMDK descriptor", as is a descriptor with a malformed line,
/// each such line a problem.
pub fn read_descriptor(path: &Path) -> Result<Option<Descriptor>, ExportError> {
    let mut file = File::open(path).map_err(|e| read_error(path, e))?;
    let size = file.metadata().map_err(|e| read_error(path, e))?.len();
    let mut head = Vec::new();
    (&mut file)
        .take(DESCRIPTOR_LIMIT)
        .read_to_end(&mut head)
        .map_err(|e| read_error(path, e))?;
    let name = shown(path);
    if head.starts_with(COWD_MAGIC) {
        return Ok(None);
    }
    if head.starts_with(SPARSE_MAGIC) {
        let Some((offset, sectors)) = embedded_at(&head) else {
            return Ok(None);
        };
        let len = sectors.saturating_mul(512).min(DESCRIPTOR_LIMIT);
        let start = offset.saturating_mul(512);
        let mut text = Vec::new();
        file.seek(SeekFrom::Start(start))
            .map_err(|e| read_error(path, e))?;
        (&mut file)
            .take(len)
            .read_to_end(&mut text)
            .map_err(|e| read_error(path, e))?;
        // The descriptor area is padded with NULs after the text.
        if let Some(end) = text.iter().position(|&b| b == 0) {
            text.truncate(end);
        }
        let mut d = parse_descriptor(&name, &text).map_err(|p| invalid(path, p))?;
        d.embedded = true;
        return Ok(Some(d));
    }
    if size > DESCRIPTOR_LIMIT {
        return Err(invalid(
            path,
            vec![problem(
                &name,
                format!(
                    "not a VMDK descriptor: it is {size} bytes and has no sparse header (KDMV); \
                     a descriptor is a small text file (is this a -flat.vmdk data file named in \
                     place of its descriptor?)"
                ),
            )],
        ));
    }
    parse_descriptor(&name, &head)
        .map(Some)
        .map_err(|p| invalid(path, p))
}

/// The embedded descriptor's (offset, size) in sectors from a `KDMV` header, when it has one.
fn embedded_at(head: &[u8]) -> Option<(u64, u64)> {
    let u64_at = |at: usize| -> Option<u64> {
        let bytes: [u8; 8] = head.get(at..at + 8)?.try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    };
    // magic u32, version u32, flags u32, capacity u64, grainSize u64, then descriptorOffset
    // u64 (byte 28) and descriptorSize u64 (byte 36).
    let offset = u64_at(28)?;
    let sectors = u64_at(36)?;
    (offset > 0 && sectors > 0).then_some((offset, sectors))
}

fn problem(path: &str, message: impl Into<String>) -> Problem {
    let mut p = crate::diag::Problems::default();
    p.push(path, message);
    p.0.remove(0)
}

/// A value without its surrounding double quotes.
fn unquoted(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// Parses a text descriptor; `name` is the file's name, for messages.
fn parse_descriptor(name: &str, bytes: &[u8]) -> Result<Descriptor, Vec<Problem>> {
    let text = String::from_utf8_lossy(bytes);
    let mut problems = Vec::new();
    let mut d = Descriptor {
        create_type: String::new(),
        cid: None,
        parent_cid: None,
        parent_hint: None,
        extents: Vec::new(),
        adapter_type: None,
        encoding: None,
        encrypted: false,
        embedded: false,
    };
    let mut headed = false;
    let mut seen_content = false;
    let mut version = false;
    let mut create_type = None;
    for (i, raw) in text.lines().enumerate() {
        // Descriptors are padded to whole sectors with NULs (qemu-img, VMware's own tools).
        let line = raw.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        let place = format!("{name}: line {}", i + 1);
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if !seen_content
                && line
                    .trim_start_matches('#')
                    .trim()
                    .eq_ignore_ascii_case("Disk DescriptorFile")
            {
                headed = true;
            }
            continue;
        }
        seen_content = true;
        let first = line.split_whitespace().next().unwrap_or("");
        if ["RW", "RDONLY", "NOACCESS"].contains(&first) {
            match parse_extent(line) {
                Ok(e) => d.extents.push(e),
                Err(why) => problems.push(problem(&place, why)),
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            problems.push(problem(
                &place,
                format!(
                    "expected key=\"value\" or an extent line (RW 2048 FLAT \"x-flat.vmdk\" 0), \
                     found '{}'",
                    excerpt(line)
                ),
            ));
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = unquoted(value.trim()).to_owned();
        match key.as_str() {
            "version" => version = true,
            "createtype" => create_type = Some(value.clone()),
            "cid" => d.cid = Some(value.to_ascii_lowercase()),
            "parentcid" => {
                let v = value.to_ascii_lowercase();
                d.parent_cid = (v != NO_PARENT).then_some(v);
            }
            "parentfilenamehint" => d.parent_hint = Some(value.clone()),
            "encoding" => d.encoding = Some(value.clone()),
            "ddb.adaptertype" => d.adapter_type = Some(value.clone()),
            _ => {}
        }
        if key.starts_with("encryption.")
            || key == "encryption"
            || key.starts_with("ddb.encryption")
            || key == "ddb.keysafe"
        {
            d.encrypted = true;
        }
    }
    let looks_like = headed || (version && create_type.is_some());
    if !looks_like {
        return Err(vec![problem(
            name,
            "not a VMDK descriptor: it neither starts with '# Disk DescriptorFile' nor has \
             version= and createType=",
        )]);
    }
    match create_type {
        Some(t) => {
            if t.to_ascii_lowercase().contains("encrypted") {
                d.encrypted = true;
            }
            d.create_type = t;
        }
        None => problems.push(problem(name, "the descriptor has no createType")),
    }
    if problems.is_empty() {
        Ok(d)
    } else {
        Err(problems)
    }
}

/// Parses `ACCESS SECTORS KIND ["FILE" [OFFSET]]`.
fn parse_extent(line: &str) -> Result<Extent, String> {
    let expected = "expected an extent line ACCESS SECTORS TYPE \"FILE\" [OFFSET] \
                    (RW 2048 FLAT \"x-flat.vmdk\" 0)";
    let bad = || format!("{expected}, found '{}'", excerpt(line));
    let mut words = line.splitn(3, char::is_whitespace);
    let access = words.next().unwrap_or("").to_owned();
    let sectors = words
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(bad)?;
    let rest = words.next().unwrap_or("").trim_start();
    let (kind, rest) = rest
        .split_once(char::is_whitespace)
        .map_or((rest, ""), |(k, r)| (k, r.trim()));
    if kind.is_empty() {
        return Err(bad());
    }
    let kind = kind.to_ascii_uppercase();
    let (file, rest) = if let Some(quoted) = rest.strip_prefix('"') {
        let (file, after) = quoted.split_once('"').ok_or_else(bad)?;
        (Some(file.to_owned()), after.trim())
    } else if rest.is_empty() {
        (None, "")
    } else {
        return Err(bad());
    };
    let offset = match rest {
        "" => None,
        o => Some(o.parse::<u64>().map_err(|_| bad())?),
    };
    Ok(Extent {
        access,
        sectors,
        kind,
        file,
        offset,
    })
}

/// Where a name written in a VMX or descriptor (relative to `dir`) leads, checked to be a
/// regular file inside `folder` (canonical): the path as qemu-img opens it (`dir` joined with
/// `name`), or why it cannot be used, said after the name
/// (`../x-flat.vmdk leads out of the VM's folder`).
pub fn inside_folder(dir: &Path, name: &str, folder: &Path) -> Result<PathBuf, String> {
    let quoted = excerpt(name);
    if name.is_empty() {
        return Err("an empty file name".to_owned());
    }
    let as_path = Path::new(name);
    if as_path.is_absolute() {
        return Err(if name.starts_with("/vmfs/") {
            format!(
                "{quoted} is an ESX datastore path; copy the disk into the VM's folder and \
                 name it relative to it"
            )
        } else {
            format!(
                "{quoted} is an absolute path; the disk must be in the VM's folder, named \
                 relative to it (copy the disk into the VM's folder)"
            )
        });
    }
    let dir_canon = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve the folder of {quoted}: {e}"))?;
    // Lexically first, so that a name leading out is refused whether or not it exists there.
    let mut lexical = dir_canon.clone();
    for c in as_path.components() {
        match c {
            Component::Normal(part) => lexical.push(part),
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{quoted} is not a relative name"));
            }
        }
    }
    if !lexical.starts_with(folder) {
        return Err(format!(
            "{quoted} leads out of the VM's folder ({}); copy the disk into it",
            folder.display()
        ));
    }
    let joined = dir.join(as_path);
    let canon = match joined.canonicalize() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{quoted} does not exist"));
        }
        Err(e) => return Err(format!("cannot read {quoted}: {e}")),
    };
    if !canon.starts_with(folder) {
        return Err(format!(
            "{quoted} is a link to {}, outside the VM's folder ({}); copy the file into it",
            canon.display(),
            folder.display()
        ));
    }
    match std::fs::metadata(&canon) {
        Ok(m) if m.is_file() => Ok(joined),
        Ok(_) => Err(format!("{quoted} is not a regular file")),
        Err(e) => Err(format!("cannot read {quoted}: {e}")),
    }
}

/// Puts a descriptor's read error into `problems`, each under the descriptor's name.
fn collect(problems: &mut Collected, name: &str, e: ExportError) {
    match e {
        ExportError::Invalid { problems: list, .. } => problems.0.extend(list),
        ExportError::NotFound { .. } => problems.push(name, format!("{name} does not exist")),
        other => problems.push(name, crate::diag::error_chain(&other)),
    }
}

/// Follows the disk whose descriptor is `top` (a file inside `folder`) through its extents and
/// its parents, the way qemu-img will: every extent must be a regular file inside `folder`
/// (see [`inside_folder`]), none a raw device mapping, no descriptor encrypted, and every
/// `parentCID` the `CID` of the file its `parentFileNameHint` names, up to [`MAX_CHAIN`] files.
/// Every problem goes to `problems` under the descriptor's name (`web01.vmdk: extent 2`);
/// `None` when there is any.
///
/// `extents` of the result lists the data files of `top` and of its parents, in chain order;
/// a sparse file whose extent is itself is not listed again (it is `path` or a parent).
pub fn resolve_chain(top: &Path, folder: &Path, problems: &mut Collected) -> Option<DiskLocation> {
    resolve(top, folder, problems).map(|(location, _)| location)
}

/// [`resolve_chain`], with the top descriptor (`None` for a sparse image that embeds none).
pub(crate) fn resolve(
    top: &Path,
    folder: &Path,
    problems: &mut Collected,
) -> Option<(DiskLocation, Option<Descriptor>)> {
    let before = problems.0.len();
    let folder = match folder.canonicalize() {
        Ok(f) => f,
        Err(e) => {
            problems.push(
                shown(top),
                format!("cannot resolve the VM's folder {}: {e}", folder.display()),
            );
            return None;
        }
    };
    let mut extents = Vec::new();
    let mut parents = Vec::new();
    let mut visited = HashSet::new();
    let mut top_descriptor = None;
    let mut current = top.to_owned();
    // The CID the current file must have, and who says so: (child's name, parentCID).
    let mut expected: Option<(String, String)> = None;
    for depth in 0.. {
        let name = current
            .canonicalize()
            .ok()
            .and_then(|c| {
                c.strip_prefix(&folder)
                    .ok()
                    .map(|r| r.display().to_string())
            })
            .unwrap_or_else(|| shown(&current));
        if depth >= MAX_CHAIN {
            problems.push(
                name,
                format!("the snapshot chain is longer than {MAX_CHAIN} files"),
            );
            break;
        }
        let canon = match current.canonicalize() {
            Ok(c) if c.starts_with(&folder) => c,
            Ok(c) => {
                problems.push(name, format!("{} is outside the VM's folder", c.display()));
                break;
            }
            Err(e) => {
                problems.push(&name, format!("cannot read {name}: {e}"));
                break;
            }
        };
        if !visited.insert(canon.clone()) {
            problems.push(name, "the snapshot chain loops back to this file");
            break;
        }
        let descriptor = match read_descriptor(&current) {
            Ok(d) => d,
            Err(e) => {
                collect(problems, &name, e);
                break;
            }
        };
        if depth == 0 {
            top_descriptor = descriptor.clone();
        }
        let Some(d) = descriptor else {
            if let Some((child, cid)) = expected {
                problems.push(
                    format!("{child}: parentCID"),
                    format!(
                        "the chain cannot be checked: parentCID {cid} but {name} is a sparse \
                         image with no descriptor (no CID)"
                    ),
                );
            }
            break;
        };
        if let Some((child, cid)) = expected.take() {
            let actual = d.cid.as_deref().unwrap_or("(none)");
            if actual != cid {
                problems.push(
                    format!("{child}: parentCID"),
                    format!("the chain is broken: parentCID {cid} but {name} has CID {actual}"),
                );
            }
        }
        if d.encrypted {
            problems.push(
                &name,
                "encrypted VMDK; decrypt the VM in vSphere/Workstation first",
            );
            break;
        }
        let dir = current.parent().unwrap_or(Path::new(".")).to_owned();
        let create = d.create_type.to_ascii_lowercase();
        if create.contains("rawdevicemap") || create == "vmfsraw" {
            problems.push(
                &name,
                format!(
                    "createType {} is a raw device mapping; copy the LUN to a file first",
                    d.create_type
                ),
            );
        } else if create == "fulldevice" || create == "partitioneddevice" {
            problems.push(
                &name,
                format!(
                    "createType {} is a physical disk of the host; copy it to a file first",
                    d.create_type
                ),
            );
        }
        if d.extents.is_empty() {
            problems.push(&name, "the descriptor has no extent");
        }
        for (i, e) in d.extents.iter().enumerate() {
            let place = format!("{name}: extent {}", i + 1);
            if e.kind == "ZERO" {
                continue;
            }
            if DEVICE_KINDS.contains(&e.kind.as_str()) {
                problems.push(
                    place,
                    format!(
                        "{} is a raw device mapping; copy the LUN to a file first",
                        e.kind
                    ),
                );
                continue;
            }
            if !FILE_KINDS.contains(&e.kind.as_str()) {
                problems.push(
                    place,
                    format!(
                        "unknown extent type {}; expected one of {}, ZERO",
                        excerpt(&e.kind),
                        FILE_KINDS.join(", ")
                    ),
                );
                continue;
            }
            let Some(file) = &e.file else {
                problems.push(place, format!("a {} extent without a file name", e.kind));
                continue;
            };
            match inside_folder(&dir, file, &folder) {
                Ok(path) => {
                    let is_self = path.canonicalize().is_ok_and(|c| c == canon);
                    if !is_self && !extents.contains(&path) {
                        extents.push(path);
                    }
                }
                Err(why) => problems.push(place, why),
            }
        }
        let Some(cid) = d.parent_cid else {
            break;
        };
        let Some(hint) = d.parent_hint else {
            problems.push(
                format!("{name}: parentCID"),
                format!("parentCID {cid} but no parentFileNameHint names the parent"),
            );
            break;
        };
        match inside_folder(&dir, &hint, &folder) {
            Ok(parent) => {
                parents.push(parent.clone());
                expected = Some((name, cid));
                current = parent;
            }
            Err(why) => {
                problems.push(format!("{name}: parentFileNameHint"), why);
                break;
            }
        }
    }
    if problems.0.len() > before {
        return None;
    }
    Some((
        DiskLocation::File {
            path: top.to_owned(),
            extents,
            parents,
        },
        top_descriptor,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes `text` to `dir/name`.
    pub(crate) fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write fixture");
        path
    }

    /// A text descriptor as VMware writes it.
    pub(crate) fn descriptor(
        create_type: &str,
        cid: &str,
        parent: Option<(&str, &str)>,
        extents: &[&str],
    ) -> String {
        let (parent_cid, hint) = match parent {
            Some((cid, hint)) => (cid, format!("parentFileNameHint=\"{hint}\"\n")),
            None => ("ffffffff", String::new()),
        };
        format!(
            "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID={cid}\n\
             parentCID={parent_cid}\ncreateType=\"{create_type}\"\n{hint}\n\
             # Extent description\n{}\n\n# The Disk Data Base\n#DDB\n\n\
             ddb.adapterType = \"lsilogic\"\nddb.virtualHWVersion = \"19\"\n",
            extents.join("\n")
        )
    }

    /// Writes a text descriptor (see [`descriptor`]) to `dir/name`.
    pub(crate) fn write_descriptor(
        dir: &Path,
        name: &str,
        create_type: &str,
        cid: &str,
        parent: Option<(&str, &str)>,
        extents: &[&str],
    ) -> PathBuf {
        write(
            dir,
            name,
            descriptor(create_type, cid, parent, extents).as_bytes(),
        )
    }

    /// A `KDMV` sparse header, with a descriptor embedded at sector 1 when one is given.
    pub(crate) fn sparse(embedded: Option<&str>) -> Vec<u8> {
        let mut image = vec![0u8; 512];
        image[..4].copy_from_slice(b"KDMV");
        image[4..8].copy_from_slice(&1u32.to_le_bytes());
        image[12..20].copy_from_slice(&2048u64.to_le_bytes());
        image[20..28].copy_from_slice(&128u64.to_le_bytes());
        if let Some(text) = embedded {
            image[28..36].copy_from_slice(&1u64.to_le_bytes());
            image[36..44].copy_from_slice(&20u64.to_le_bytes());
            image.extend_from_slice(text.as_bytes());
            image.resize(512 * 21, 0);
        }
        image
    }

    fn problems(c: &Collected) -> Vec<String> {
        c.0.iter().map(ToString::to_string).collect()
    }

    fn chain(top: &Path, folder: &Path) -> (Option<DiskLocation>, Vec<String>) {
        let mut c = Collected::default();
        let location = resolve_chain(top, folder, &mut c);
        (location, problems(&c))
    }

    fn invalid_problems(r: Result<Option<Descriptor>, ExportError>) -> Vec<String> {
        match r {
            Err(ExportError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_monolithic_flat_descriptor_names_its_flat_extent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let top = write_descriptor(
            dir.path(),
            "x.vmdk",
            "monolithicFlat",
            "fffffffe",
            None,
            &[r#"RW 2048 FLAT "x-flat.vmdk" 0"#],
        );
        write(dir.path(), "x-flat.vmdk", b"data");
        let d = read_descriptor(&top)
            .expect("read")
            .expect("a text descriptor");
        assert_eq!(d.create_type, "monolithicFlat");
        assert_eq!(d.cid.as_deref(), Some("fffffffe"));
        assert_eq!(d.parent_cid, None);
        assert_eq!(d.adapter_type.as_deref(), Some("lsilogic"));
        assert_eq!(d.encoding.as_deref(), Some("UTF-8"));
        assert!(!d.encrypted && !d.embedded);
        assert_eq!(
            d.extents,
            [Extent {
                access: "RW".into(),
                sectors: 2048,
                kind: "FLAT".into(),
                file: Some("x-flat.vmdk".into()),
                offset: Some(0),
            }]
        );
        assert_eq!(d.capacity(), Some(2048 * 512));
        let (location, problems) = chain(&top, dir.path());
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(
            location,
            Some(DiskLocation::File {
                path: top.clone(),
                extents: vec![dir.path().join("x-flat.vmdk")],
                parents: vec![],
            })
        );
    }

    #[test]
    fn split_sparse_extents_are_all_listed_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = descriptor(
            "twoGbMaxExtentSparse",
            "1a2b3c4d",
            None,
            &[
                r#"RW 4192256 SPARSE "web01-s001.vmdk""#,
                r#"RW 4192256 SPARSE "web01-s002.vmdk""#,
                "RW 4096 ZERO",
            ],
        );
        let top = write(dir.path(), "web01.vmdk", text.as_bytes());
        write(dir.path(), "web01-s001.vmdk", b"KDMV");
        write(dir.path(), "web01-s002.vmdk", b"KDMV");
        let d = read_descriptor(&top).expect("read").expect("descriptor");
        assert_eq!(d.extents[2].kind, "ZERO");
        assert_eq!(d.extents[2].file, None);
        assert_eq!(d.capacity(), Some((4192256 * 2 + 4096) * 512));
        let (location, problems) = chain(&top, dir.path());
        assert_eq!(problems, Vec::<String>::new());
        let Some(DiskLocation::File { extents, .. }) = location else {
            panic!("no location");
        };
        assert_eq!(
            extents,
            [
                dir.path().join("web01-s001.vmdk"),
                dir.path().join("web01-s002.vmdk")
            ]
        );

        std::fs::remove_file(dir.path().join("web01-s002.vmdk")).expect("remove");
        let (location, problems) = chain(&top, dir.path());
        assert_eq!(location, None);
        assert_eq!(
            problems,
            ["web01.vmdk: extent 2: web01-s002.vmdk does not exist"]
        );
    }

    #[test]
    fn an_esx_vmfs_descriptor_is_read_and_a_raw_device_mapping_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let top = write_descriptor(
            dir.path(),
            "web01.vmdk",
            "vmfs",
            "aaaa0001",
            None,
            &[r#"RW 8388608 VMFS "web01-flat.vmdk""#],
        );
        write(dir.path(), "web01-flat.vmdk", b"");
        let (location, problems) = chain(&top, dir.path());
        assert_eq!(problems, Vec::<String>::new());
        assert!(location.is_some());

        let rdm = write_descriptor(
            dir.path(),
            "lun.vmdk",
            "vmfsRawDeviceMap",
            "aaaa0002",
            None,
            &[r#"RW 8388608 VMFSRDM "lun-rdm.vmdk""#],
        );
        write(dir.path(), "lun-rdm.vmdk", b"");
        let (location, problems) = chain(&rdm, dir.path());
        assert_eq!(location, None);
        assert_eq!(
            problems,
            [
                "lun.vmdk: createType vmfsRawDeviceMap is a raw device mapping; copy the LUN to \
                 a file first",
                "lun.vmdk: extent 1: VMFSRDM is a raw device mapping; copy the LUN to a file \
                 first"
            ]
        );
    }

    #[test]
    fn a_snapshot_chain_is_followed_to_its_base_nearest_parent_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write_descriptor(
            d,
            "web01.vmdk",
            "vmfs",
            "abcd1234",
            None,
            &[r#"RW 8388608 VMFS "web01-flat.vmdk""#],
        );
        write(d, "web01-flat.vmdk", b"");
        write_descriptor(
            d,
            "web01-000001.vmdk",
            "vmfsSparse",
            "0000beef",
            Some(("ABCD1234", "web01.vmdk")),
            &[r#"RW 8388608 VMFSSPARSE "web01-000001-delta.vmdk""#],
        );
        write(d, "web01-000001-delta.vmdk", b"COWD");
        let top = write_descriptor(
            d,
            "web01-000002.vmdk",
            "vmfsSparse",
            "0000cafe",
            Some(("0000beef", "web01-000001.vmdk")),
            &[r#"RW 8388608 VMFSSPARSE "web01-000002-delta.vmdk""#],
        );
        write(d, "web01-000002-delta.vmdk", b"COWD");
        let (location, problems) = chain(&top, d);
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(
            location,
            Some(DiskLocation::File {
                path: top.clone(),
                extents: vec![
                    d.join("web01-000002-delta.vmdk"),
                    d.join("web01-000001-delta.vmdk"),
                    d.join("web01-flat.vmdk"),
                ],
                parents: vec![d.join("web01-000001.vmdk"), d.join("web01.vmdk")],
            })
        );

        // The base rewritten (a new CID): the delta no longer rests on it.
        write_descriptor(
            d,
            "web01.vmdk",
            "vmfs",
            "12345678",
            None,
            &[r#"RW 8388608 VMFS "web01-flat.vmdk""#],
        );
        let (location, problems) = chain(&top, d);
        assert_eq!(location, None);
        assert_eq!(
            problems,
            [
                "web01-000001.vmdk: parentCID: the chain is broken: parentCID abcd1234 but \
                 web01.vmdk has CID 12345678"
            ]
        );
    }

    #[test]
    fn a_chain_that_loops_or_whose_parent_is_missing_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let top = write_descriptor(
            d,
            "a.vmdk",
            "monolithicFlat",
            "00000001",
            Some(("00000001", "a.vmdk")),
            &[r#"RW 16 FLAT "a-flat.vmdk" 0"#],
        );
        write(d, "a-flat.vmdk", b"");
        let (_, problems) = chain(&top, d);
        assert_eq!(
            problems,
            ["a.vmdk: the snapshot chain loops back to this file"]
        );

        let top = write_descriptor(
            d,
            "b.vmdk",
            "monolithicFlat",
            "00000002",
            Some(("00000003", "gone.vmdk")),
            &[r#"RW 16 FLAT "a-flat.vmdk" 0"#],
        );
        let (_, problems) = chain(&top, d);
        assert_eq!(
            problems,
            ["b.vmdk: parentFileNameHint: gone.vmdk does not exist"]
        );
    }

    #[test]
    fn extents_leading_out_of_the_folder_are_refused() {
        let outer = tempfile::tempdir().expect("tempdir");
        let vm = outer.path().join("vm");
        std::fs::create_dir(&vm).expect("mkdir");
        write(outer.path(), "x-flat.vmdk", b"");
        std::os::unix::fs::symlink(outer.path().join("x-flat.vmdk"), vm.join("link-flat.vmdk"))
            .expect("symlink");
        let top = write_descriptor(
            &vm,
            "x.vmdk",
            "twoGbMaxExtentFlat",
            "00000001",
            None,
            &[
                r#"RW 16 FLAT "../x-flat.vmdk" 0"#,
                r#"RW 16 FLAT "/srv/x-flat.vmdk" 0"#,
                r#"RW 16 FLAT "/vmfs/volumes/ds1/web01/x-flat.vmdk" 0"#,
                r#"RW 16 FLAT "link-flat.vmdk" 0"#,
            ],
        );
        let (location, problems) = chain(&top, &vm);
        assert_eq!(location, None);
        let canon = vm.canonicalize().expect("canonical");
        let target = outer
            .path()
            .join("x-flat.vmdk")
            .canonicalize()
            .expect("canonical");
        assert_eq!(
            problems,
            [
                format!(
                    "x.vmdk: extent 1: ../x-flat.vmdk leads out of the VM's folder ({}); copy \
                     the disk into it",
                    canon.display()
                ),
                "x.vmdk: extent 2: /srv/x-flat.vmdk is an absolute path; the disk must be in \
                 the VM's folder, named relative to it (copy the disk into the VM's folder)"
                    .to_owned(),
                "x.vmdk: extent 3: /vmfs/volumes/ds1/web01/x-flat.vmdk is an ESX datastore \
                 path; copy the disk into the VM's folder and name it relative to it"
                    .to_owned(),
                format!(
                    "x.vmdk: extent 4: link-flat.vmdk is a link to {}, outside the VM's folder \
                     ({}); copy the file into it",
                    target.display(),
                    canon.display()
                ),
            ]
        );
    }

    #[test]
    fn an_encrypted_descriptor_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\n\
                    createType=\"monolithicSparse\"\nencryption.keySafe = \"vmware:key/list/x\"\n\
                    encryption.data = \"AAAA\"\n";
        let top = write(dir.path(), "e.vmdk", text.as_bytes());
        assert!(
            read_descriptor(&top)
                .expect("read")
                .expect("text")
                .encrypted
        );
        let (location, problems) = chain(&top, dir.path());
        assert_eq!(location, None);
        assert_eq!(
            problems,
            ["e.vmdk: encrypted VMDK; decrypt the VM in vSphere/Workstation first"]
        );
    }

    #[test]
    fn a_sparse_image_is_a_leaf_unless_its_embedded_descriptor_has_a_parent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let base = write(d, "base.vmdk", &sparse(None));
        assert_eq!(read_descriptor(&base).expect("read"), None);
        let (location, problems) = chain(&base, d);
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(
            location,
            Some(DiskLocation::File {
                path: base.clone(),
                extents: vec![],
                parents: vec![],
            })
        );
        assert_eq!(
            read_descriptor(&write(d, "old.vmdk", b"COWD\x01\0\0\0")).expect("read"),
            None
        );

        // A Workstation snapshot delta: monolithicSparse, its descriptor inside the image.
        write(
            d,
            "web01.vmdk",
            &sparse(Some(&descriptor(
                "monolithicSparse",
                "11112222",
                None,
                &[r#"RW 2048 SPARSE "web01.vmdk""#],
            ))),
        );
        let top = write(
            d,
            "web01-000001.vmdk",
            &sparse(Some(&descriptor(
                "monolithicSparse",
                "33334444",
                Some(("11112222", "web01.vmdk")),
                &[r#"RW 2048 SPARSE "web01-000001.vmdk""#],
            ))),
        );
        let desc = read_descriptor(&top).expect("read").expect("embedded");
        assert!(desc.embedded);
        assert_eq!(desc.parent_cid.as_deref(), Some("11112222"));
        assert_eq!(desc.parent_hint.as_deref(), Some("web01.vmdk"));
        let (location, problems) = chain(&top, d);
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(
            location,
            Some(DiskLocation::File {
                path: top.clone(),
                extents: vec![],
                parents: vec![d.join("web01.vmdk")],
            })
        );

        // A parent with no descriptor has no CID to check.
        write(d, "web01.vmdk", &sparse(None));
        let (_, problems) = chain(&top, d);
        assert_eq!(
            problems,
            [
                "web01-000001.vmdk: parentCID: the chain cannot be checked: parentCID 11112222 \
                 but web01.vmdk is a sparse image with no descriptor (no CID)"
            ]
        );
    }

    #[test]
    fn what_is_not_a_descriptor_is_said_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = write(dir.path(), "notes.vmdk", b"hello\nworld = 1\n");
        let shown = invalid_problems(read_descriptor(&text));
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert!(
            shown[0].starts_with("notes.vmdk: not a VMDK descriptor"),
            "{shown:?}"
        );

        let flat = write(dir.path(), "x-flat.vmdk", &vec![0u8; 70 * 1024]);
        let shown = invalid_problems(read_descriptor(&flat));
        assert!(
            shown[0].contains("71680 bytes and has no sparse header"),
            "{shown:?}"
        );

        // Headed as a descriptor, with a malformed extent line.
        let bad = write(
            dir.path(),
            "bad.vmdk",
            b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW lots FLAT \"x\"\n",
        );
        let shown = invalid_problems(read_descriptor(&bad));
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert!(
            shown[0].starts_with("bad.vmdk: line 4: expected an extent line"),
            "{shown:?}"
        );

        assert!(matches!(
            read_descriptor(&dir.path().join("gone.vmdk")),
            Err(ExportError::NotFound { .. })
        ));
    }
}
