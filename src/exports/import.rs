//! `--ova`, `--ovf`, `--vmx`: reads an export, looks at its disks on this machine, verifies the
//! export's own digests, and writes a manifest that `--manifest` runs as it is.
//!
//! Phases, each finishing before the next starts, so a bad export writes nothing:
//! 1. the reader's facts ([`ExportFacts`]): every problem of the descriptor at once;
//! 2. each disk through qemu-img (`info` without `-f`, read-only): its real format and virtual
//!    size, encryption refused, a backing file accepted only for a snapshot chain the reader
//!    followed (written as `backing_chain`), the declared capacity compared;
//! 3. one read of each disk for every digest wanted (the `.mf`'s SHA1 or SHA256, and the
//!    manifest's SHA-256), in parallel;
//! 4. the manifest, loaded by the same code that will run it, then written atomically.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::mf::{self, Algorithm};
use super::ova::{self, Member};
use super::ovf::{self, Container};
use super::{
    Collected, DiskLocation, ExportDisk, ExportError, ExportFacts, ExportKind, ends_with_ci,
    read_small,
};
use crate::checksum::{self, Digests, Range};
use crate::config;
use crate::events::EventSink;
use crate::exec::{self, CancelToken, Watch};
use crate::libvirt::import::hash_with_events;
use crate::manifest::{self, Firmware, Layers, SourceFormat};
use crate::tools::qemu_img::{self, Aio, Image, ImageInfo, QemuImg};

const MIB: u64 = 1024 * 1024;
/// An OVF descriptor is a few KiB; the bound is the libvirt importer's.
const MAX_DESCRIPTOR_BYTES: u64 = crate::libvirt::import::MAX_XML_BYTES;
/// A `.mf` lists a handful of files.
const MAX_MF_BYTES: u64 = 1024 * 1024;

/// What the manifest is for, which decides what the import reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Written for the admin to run later (`--ova FILE --output-dir DIR`): every digest of the
    /// `.mf` is verified now, before the manifest is written.
    Write,
    /// Written, then run at once (`--ova FILE --run`). A disk's SHA256 digest from the `.mf`
    /// becomes its manifest `checksum`, which the run verifies in its own read of the disk
    /// before any output is kept, so the disk is read once less; SHA1 digests are verified now.
    Run,
    /// A batch entry that names the export: nothing is written, and the manifest has no
    /// `output.directory` (the batch's decides). SHA256 digests become checksums as for `Run`,
    /// so each VM verifies its own disks in its own worker; SHA1 digests are verified now. No
    /// other checksum is computed.
    Batch,
}

/// What the command line (or a batch entry) asks for.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub kind: ExportKind,
    pub path: PathBuf,
    pub output_dir: PathBuf,
    pub manifest_filename: String,
    pub compute_checksums: bool,
    pub overwrite: bool,
    pub dry_run: bool,
    pub purpose: Use,
    /// Whether the manifest carries the import's own `pipeline` (inspect, convert and validate
    /// on; fix off). Off when another layer names a profile or a pipeline: the manifest's
    /// pipeline would otherwise win over theirs (it is the upper layer), so the import leaves the
    /// choice to them.
    pub pipeline_defaults: bool,
}

impl ImportOptions {
    /// A batch entry's import: read in place, nothing written.
    pub fn for_batch(kind: ExportKind, path: PathBuf, pipeline_defaults: bool) -> Self {
        let dir = config::dir_of(&config::absolute(&path));
        Self {
            kind,
            path,
            output_dir: dir,
            manifest_filename: String::new(),
            compute_checksums: false,
            overwrite: false,
            dry_run: true,
            purpose: Use::Batch,
            pipeline_defaults,
        }
    }
}

/// Whether a layer under (or over) a generated manifest chooses the pipeline itself: a profile,
/// or pipeline settings. The import then writes no pipeline of its own, which would win over a
/// lower layer's.
pub fn names_pipeline(layer: &Map<String, Value>) -> bool {
    layer.contains_key("profile") || layer.contains_key("pipeline")
}

/// A disk as found on this machine.
#[derive(Clone, Debug)]
pub struct FoundDisk {
    pub disk: ExportDisk,
    /// What qemu-img reads it as.
    pub format: SourceFormat,
    /// Its bytes (the member's, or the file's).
    pub bytes: u64,
    pub virtual_size: u64,
    pub checksum: Option<String>,
}

/// The result of an import.
#[derive(Debug)]
pub struct ImportOutcome {
    pub manifest_path: PathBuf,
    pub manifest: Value,
    pub facts: ExportFacts,
    pub disks: Vec<FoundDisk>,
    /// The `.mf` lines verified, as `SHA256 web01-disk1.vmdk`.
    pub verified: Vec<String>,
    /// The `.mf` lines that became disk checksums, which the run verifies (`Use::Run`, `Batch`).
    pub deferred: Vec<String>,
    pub notes: Vec<String>,
    pub written: bool,
    pub purpose: Use,
}

/// The digest list of an export and where its files are.
struct DigestList {
    name: String,
    entries: Vec<mf::Entry>,
}

/// What was read before any disk is opened.
struct Read {
    facts: ExportFacts,
    digests: Option<DigestList>,
    /// The descriptor's own name and bytes, which the `.mf` lists too.
    descriptor: Option<(String, Vec<u8>)>,
}

/// Runs the whole import.
pub fn run(
    opts: &ImportOptions,
    cancel: &CancelToken,
    events: &EventSink,
) -> Result<ImportOutcome, ExportError> {
    let path = config::absolute(&opts.path);
    let Read {
        facts,
        digests,
        descriptor,
    } = read(opts.kind, &path)?;
    let mut notes = facts.notes.clone();

    let output_dir = config::absolute(&opts.output_dir);
    // A batch entry's manifest is the export itself: relative paths resolve beside it.
    let manifest_path = match opts.purpose {
        Use::Batch => path.clone(),
        _ => output_dir.join(&opts.manifest_filename),
    };
    let writes = !opts.dry_run && opts.purpose != Use::Batch;
    if writes && !opts.overwrite && manifest_path.exists() {
        return Err(ExportError::Exists {
            path: manifest_path,
        });
    }

    // Phase 2: each disk as qemu-img reads it.
    let qemu_img = QemuImg::locate()?;
    let mut problems = Collected::default();
    let mut found = Vec::new();
    for d in &facts.disks {
        if let Some(disk) = look_at(&qemu_img, d, cancel, &mut problems, &mut notes)? {
            found.push(disk);
        }
    }

    // The digest list: every line must name a file of the export; the descriptor is checked
    // now, the disks with their one read below.
    let mut verified = Vec::new();
    let mut wanted: Vec<Option<&mf::Entry>> = vec![None; found.len()];
    match &digests {
        None if matches!(opts.kind, ExportKind::Ova | ExportKind::Ovf) => notes.push(
            "the export has no .mf digest list: its files' integrity is not verified".to_owned(),
        ),
        None => {}
        Some(list) => {
            for e in &list.entries {
                let place = format!("{}: line {}", list.name, e.line);
                if let Some((name, bytes)) = &descriptor
                    && &e.file == name
                {
                    let d = digest_bytes(e.algorithm, bytes);
                    if d == e.digest {
                        verified.push(format!("{} {}", e.algorithm.name(), e.file));
                    } else {
                        problems.push(place, mismatch(e, &d));
                    }
                    continue;
                }
                match found
                    .iter()
                    .position(|f| f.disk.digest_name.as_deref() == Some(e.file.as_str()))
                {
                    Some(i) => wanted[i] = Some(e),
                    None => notes.push(format!(
                        "{} lists {}, which is not a disk of the VM; its digest is not checked",
                        list.name, e.file
                    )),
                }
            }
            for (f, w) in found.iter().zip(&wanted) {
                if w.is_none() {
                    notes.push(format!(
                        "disk {} ({}) is not listed in {}; its integrity is not verified",
                        f.disk.id,
                        f.disk.digest_name.as_deref().unwrap_or("?"),
                        list.name
                    ));
                }
            }
        }
    }
    problems.into_result(opts.kind, &path, ())?;
    // A SHA256 line the run will verify as the disk's checksum is not read now.
    let mut deferred = Vec::new();
    if opts.purpose != Use::Write {
        for (f, w) in found.iter_mut().zip(wanted.iter_mut()) {
            if let Some(e) = w
                && e.algorithm == Algorithm::Sha256
            {
                f.checksum = Some(format!("sha256:{}", e.digest));
                deferred.push(format!("{} {}", e.algorithm.name(), e.file));
                *w = None;
            }
        }
    }
    if found.is_empty() {
        return Err(ExportError::Refused {
            path,
            why: "none of its disks can be imported".to_owned(),
        });
    }

    // Phase 3: one read per disk for every digest it needs.
    // A descriptor VMDK's checksum would cover the descriptor, not the extents that hold the
    // data: such a disk gets none rather than one that protects nothing.
    let sha256: Vec<bool> = found
        .iter()
        .map(|f| {
            let extents = matches!(&f.disk.location, DiskLocation::File { extents, .. } if !extents.is_empty());
            // A snapshot's data is in its parents too; the manifest refuses a checksum there.
            let chain = matches!(&f.disk.location, DiskLocation::File { parents, .. } if !parents.is_empty());
            if chain && opts.compute_checksums {
                notes.push(format!(
                    "disk {}: no checksum (its data is also in the backing_chain files, which a \
                     checksum of the newest delta would not cover)",
                    f.disk.id
                ));
            } else if extents && opts.compute_checksums {
                notes.push(format!(
                    "disk {}: no checksum (its data is in extent files beside the descriptor, \
                     which a checksum of the descriptor would not cover)",
                    f.disk.id
                ));
            }
            opts.compute_checksums
                && !opts.dry_run
                && !extents
                && !chain
                && opts.purpose != Use::Batch
                && f.checksum.is_none()
        })
        .collect();
    let need_read = found
        .iter()
        .zip(&wanted)
        .any(|(_, w)| w.is_some() && (!opts.dry_run || opts.purpose == Use::Batch))
        || sha256.contains(&true);
    if opts.dry_run && opts.purpose != Use::Batch && wanted.iter().any(Option::is_some) {
        notes.push(
            "dry run: the disks' digests in the .mf are not verified (that reads every disk)"
                .to_owned(),
        );
    }
    if need_read {
        let results = hash_all(&facts.name, &found, &wanted, &sha256, cancel, events)?;
        let mut problems = Collected::default();
        let list_name = digests.as_ref().map_or("", |l| l.name.as_str());
        for (((f, w), d), sha256) in found.iter_mut().zip(&wanted).zip(results).zip(&sha256) {
            if let Some(e) = w {
                let got = match e.algorithm {
                    Algorithm::Sha1 => d.sha1.clone().unwrap_or_default(),
                    Algorithm::Sha256 => d.sha256.trim_start_matches("sha256:").to_owned(),
                };
                if got == e.digest {
                    verified.push(format!("{} {}", e.algorithm.name(), e.file));
                } else {
                    problems.push(format!("{list_name}: line {}", e.line), mismatch(e, &got));
                }
            }
            if *sha256 {
                f.checksum = Some(d.sha256);
            }
        }
        problems.into_result(opts.kind, &path, ())?;
    }

    // Phase 4: the manifest, checked by the loader that will read it.
    if !deferred.is_empty() {
        notes.push(format!(
            "the .mf digests of {} became the disks' checksums: the run verifies them in its own \
             read of each disk, before any output is kept",
            deferred.join(", ")
        ));
    }
    let mut doc = build_manifest(opts.purpose, &facts, &found, &notes, &output_dir);
    if !opts.pipeline_defaults {
        doc.remove("pipeline");
    }
    if opts.purpose == Use::Batch
        && let Some(Value::Object(output)) = doc.get_mut("output")
    {
        output.remove("directory");
    }
    manifest::resolve(&manifest_path, doc.clone(), &Layers::default()).map_err(|e| {
        ExportError::SelfCheck {
            path: path.clone(),
            source: Box::new(e),
        }
    })?;
    let manifest = Value::Object(doc);
    if writes {
        crate::atomic::write_json(&manifest_path, &manifest)?;
    }
    Ok(ImportOutcome {
        manifest_path,
        manifest,
        facts,
        disks: found,
        verified,
        deferred,
        notes,
        written: writes,
        purpose: opts.purpose,
    })
}

fn mismatch(e: &mf::Entry, got: &str) -> String {
    format!(
        "the {} digest of {} is {got}, but the digest list says {}: the file is damaged or was \
         changed after the export; export the VM again",
        e.algorithm.name(),
        e.file,
        e.digest
    )
}

fn digest_bytes(algorithm: Algorithm, bytes: &[u8]) -> String {
    use sha2::Digest;
    match algorithm {
        Algorithm::Sha1 => checksum::hex(&sha1::Sha1::digest(bytes)),
        Algorithm::Sha256 => checksum::hex(&sha2::Sha256::digest(bytes)),
    }
}

/// Phase 1 for each kind of export.
fn read(kind: ExportKind, path: &Path) -> Result<Read, ExportError> {
    match kind {
        ExportKind::Ova => read_ova(path),
        ExportKind::Ovf => read_ovf(path),
        ExportKind::Vmx => Ok(Read {
            facts: super::vmx::read_vmx(path)?,
            digests: None,
            descriptor: None,
        }),
        ExportKind::HyperV => Ok(Read {
            facts: super::hyperv::read_hyperv(path)?,
            digests: None,
            descriptor: None,
        }),
    }
}

fn utf8(path: &Path, name: &str, bytes: Vec<u8>) -> Result<String, ExportError> {
    String::from_utf8(bytes).map_err(|_| {
        let mut c = Collected::default();
        c.push(
            name,
            "is not UTF-8 text (an OVF descriptor and its .mf are)",
        );
        ExportError::Invalid {
            kind: ExportKind::Ova,
            path: path.to_owned(),
            problems: c.0,
        }
    })
}

fn read_ova(path: &Path) -> Result<Read, ExportError> {
    let members = ova::list(path)?;
    let ovfs: Vec<&Member> = members
        .iter()
        .filter(|m| ends_with_ci(&m.name, ".ovf"))
        .collect();
    let descriptor = match ovfs.as_slice() {
        [one] => *one,
        [] => {
            return Err(ExportError::Refused {
                path: path.to_owned(),
                why: "it holds no .ovf descriptor, so it is not an OVA (list it with tar tvf)"
                    .to_owned(),
            });
        }
        several => {
            return Err(ExportError::Refused {
                path: path.to_owned(),
                why: format!(
                    "it holds {} .ovf descriptors ({}); an OVA has one",
                    several.len(),
                    crate::diag::excerpt(
                        &several
                            .iter()
                            .map(|m| m.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                ),
            });
        }
    };
    let bytes = ova::read_member(path, descriptor, "an OVF descriptor", MAX_DESCRIPTOR_BYTES)?;
    let text = utf8(path, &descriptor.name, bytes.clone())?;
    let mut facts = ovf::read(
        &text,
        &descriptor.name,
        ExportKind::Ova,
        path,
        Container::Ova {
            archive: path,
            members: &members,
        },
    )?;
    if members.first().map(|m| &m.name) != Some(&descriptor.name) {
        facts.notes.push(format!(
            "{} is not the archive's first member, as the OVF specification requires; it was \
             read anyway",
            descriptor.name
        ));
    }
    if let Some(cert) = members.iter().find(|m| ends_with_ci(&m.name, ".cert")) {
        facts.notes.push(format!(
            "the package is signed ({}); the signature is not checked (the .mf digests are)",
            cert.name
        ));
    }
    let digests = match members.iter().find(|m| ends_with_ci(&m.name, ".mf")) {
        None => None,
        Some(m) => {
            let text = utf8(
                path,
                &m.name,
                ova::read_member(path, m, "an OVF digest list", MAX_MF_BYTES)?,
            )?;
            Some(digest_list(path, ExportKind::Ova, &m.name, &text)?)
        }
    };
    Ok(Read {
        facts,
        digests,
        descriptor: Some((descriptor.name.clone(), bytes)),
    })
}

fn digest_list(
    path: &Path,
    kind: ExportKind,
    name: &str,
    text: &str,
) -> Result<DigestList, ExportError> {
    let mut problems = Collected::default();
    let entries = mf::parse(text, name, &mut problems);
    problems.into_result(
        kind,
        path,
        DigestList {
            name: name.to_owned(),
            entries,
        },
    )
}

fn read_ovf(path: &Path) -> Result<Read, ExportError> {
    let bytes = read_small(
        ExportKind::Ovf,
        path,
        "an OVF descriptor",
        MAX_DESCRIPTOR_BYTES,
    )?;
    if ova::list(path).is_ok() {
        return Err(ExportError::Refused {
            path: path.to_owned(),
            why: "it is a tar archive (an OVA): import it with --ova".to_owned(),
        });
    }
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let text = utf8(path, &name, bytes.clone())?;
    let dir = config::dir_of(path);
    let facts = ovf::read(&text, &name, ExportKind::Ovf, path, Container::Dir(&dir))?;
    let mf_path = path.with_extension("mf");
    let digests = if mf_path.is_file() {
        let mf_name = mf_path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let text = utf8(
            path,
            &mf_name,
            read_small(
                ExportKind::Ovf,
                &mf_path,
                "an OVF digest list",
                MAX_MF_BYTES,
            )?,
        )?;
        Some(digest_list(path, ExportKind::Ovf, &mf_name, &text)?)
    } else {
        None
    };
    Ok(Read {
        facts,
        digests,
        descriptor: Some((name, bytes)),
    })
}

/// The image qemu-img opens for a disk, and the bytes it occupies.
fn image_of(d: &ExportDisk) -> (Image<'_>, Result<u64, std::io::Error>) {
    match &d.location {
        DiskLocation::File { path, .. } => (path.into(), crate::files::disk_size(path)),
        DiskLocation::Member {
            archive,
            offset,
            size,
            ..
        } => (
            Image {
                path: archive,
                range: Some((*offset, *size)),
            },
            Ok(*size),
        ),
    }
}

/// Phase 2 for one disk: `None` (and a problem) when it cannot be imported.
fn look_at(
    q: &QemuImg,
    d: &ExportDisk,
    cancel: &CancelToken,
    problems: &mut Collected,
    notes: &mut Vec<String>,
) -> Result<Option<FoundDisk>, ExportError> {
    let (image, bytes) = image_of(d);
    let place = d.described_at.clone();
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            problems.push(place, format!("{}: cannot read its size: {e}", d.id));
            return Ok(None);
        }
    };
    let out = exec::run(
        &q.probe_cmd(image, Aio::Threads),
        Watch {
            cancel: Some(cancel),
            ..Watch::default()
        },
    )?;
    if out.record.status == exec::Status::Cancelled {
        return Err(ExportError::Interrupted);
    }
    if !out.record.success() {
        problems.push(
            place,
            format!(
                "{}: qemu-img cannot open {image}: {}",
                d.id,
                out.record.stderr_tail.trim()
            ),
        );
        return Ok(None);
    }
    let info = match ImageInfo::parse(&out.stdout) {
        Ok(i) => i,
        Err(e) => {
            problems.push(place, format!("{}: {e}", d.id));
            return Ok(None);
        }
    };
    let Some(format) = SourceFormat::from_driver(&info.format) else {
        problems.push(
            place,
            format!(
                "{}: qemu-img detects {} in {image}, which hyper2kvm does not convert",
                d.id, info.format
            ),
        );
        return Ok(None);
    };
    if format != d.format {
        notes.push(format!(
            "disk {}: the export calls it {}, qemu-img reads {}; source_format is {}",
            d.id, d.format, format, format
        ));
    }
    if info.encrypted {
        problems.push(
            place,
            format!(
                "{}: {image} is an encrypted {format} image; decrypt the VM on its hypervisor \
                 first (hyper2kvm takes no keys)",
                d.id
            ),
        );
        return Ok(None);
    }
    // A snapshot the reader followed (every parent in the folder, every parentCID its
    // parent's CID) is converted from its current state, with the chain in the manifest; a
    // backing file the reader did not find is refused.
    let parents = match &d.location {
        DiskLocation::File { parents, .. } => parents.as_slice(),
        DiskLocation::Member { .. } => &[],
    };
    match &info.backing_filename {
        Some(backing) if parents.is_empty() => {
            problems.push(
                place,
                format!(
                    "{}: {image} has a backing file ({backing}), a snapshot; {}",
                    d.id,
                    qemu_img::flatten_advice(image.path, format.driver())
                ),
            );
            return Ok(None);
        }
        Some(_) => notes.push(format!(
            "disk {}: converted from its current state through {} snapshot file{} \
             (backing_chain, nearest first); a run checks qemu-img follows exactly these, never \
             the base alone",
            d.id,
            parents.len() + 1,
            if parents.is_empty() { "" } else { "s" }
        )),
        None => {}
    }
    if let Some(cap) = d.capacity
        && cap != info.virtual_size
    {
        problems.push(
            place,
            format!(
                "{}: the export declares a capacity of {cap} bytes, but {image} holds a disk of \
                 {} bytes: the descriptor and the image do not belong together",
                d.id, info.virtual_size
            ),
        );
        return Ok(None);
    }
    Ok(Some(FoundDisk {
        disk: d.clone(),
        format,
        bytes,
        virtual_size: info.virtual_size,
        checksum: None,
    }))
}

/// Phase 3: each disk read once for the digests it needs, one disk per worker.
fn hash_all(
    vm: &str,
    disks: &[FoundDisk],
    wanted: &[Option<&mf::Entry>],
    sha256: &[bool],
    cancel: &CancelToken,
    events: &EventSink,
) -> Result<Vec<Digests>, ExportError> {
    let sizes: Vec<(String, u64)> = disks.iter().map(|d| (d.disk.id.clone(), d.bytes)).collect();
    let results = hash_with_events(vm, &sizes, cancel, events, |i, progress| {
        let (d, w) = (&disks[i], wanted[i]);
        if !sha256[i] && w.is_none() {
            return Ok(Digests {
                sha256: String::new(),
                sha1: None,
                bytes: 0,
            });
        }
        let (path, offset) = match &d.disk.location {
            DiskLocation::File { path, .. } => (path.as_path(), 0),
            DiskLocation::Member {
                archive, offset, ..
            } => (archive.as_path(), *offset),
        };
        let range = Range {
            offset,
            limit: Some(d.bytes),
            sha1: w.is_some_and(|e| e.algorithm == Algorithm::Sha1),
        };
        checksum::digests(path, range, Some(cancel), None, progress)
    });
    disks
        .iter()
        .zip(results)
        .map(|(d, r)| match r {
            Ok(digests) => Ok(digests),
            Err(checksum::ChecksumError::Cancelled { .. }) => Err(ExportError::Interrupted),
            Err(source) => Err(ExportError::Checksum {
                disk: d.disk.id.clone(),
                source,
            }),
        })
        .collect()
}

/// The manifest, keys in the order an admin reads them.
pub fn build_manifest(
    purpose: Use,
    facts: &ExportFacts,
    disks: &[FoundDisk],
    notes: &[String],
    output_dir: &Path,
) -> Map<String, Value> {
    let mut source = Map::new();
    source.insert("provider".into(), json!(facts.kind.provider()));
    source.insert(
        "vm_id".into(),
        json!(
            facts
                .vm_id
                .clone()
                .or_else(|| facts.uuid.clone())
                .unwrap_or_else(|| facts.name.clone())
        ),
    );
    source.insert("vm_name".into(), json!(facts.name));
    if let Some(u) = &facts.uuid {
        source.insert("uuid".into(), json!(u));
    }
    source.insert("export_method".into(), json!(facts.kind.name()));
    // A batch entry's manifest is generated at every run and fingerprinted for resume: it
    // holds nothing that changes from one run to the next.
    if purpose != Use::Batch {
        source.insert("export_timestamp".into(), json!(crate::clock::now_utc()));
    }
    source.insert("export_path".into(), json!(facts.path));

    let mut vm = Map::new();
    if let Some(c) = facts.vcpus {
        vm.insert("cpu".into(), json!(c));
    }
    if let Some(mib) = facts.memory_mib {
        vm.insert("mem_gb".into(), json!(mib.div_ceil(1024)));
        vm.insert("mem_mib".into(), json!(mib));
    }
    vm.insert(
        "firmware".into(),
        json!(match facts.firmware {
            Firmware::Uefi => Firmware::Uefi,
            _ => Firmware::Bios,
        }),
    );
    vm.insert("secureboot".into(), json!(facts.secureboot));
    if let Some(h) = &facts.os_hint {
        vm.insert("os_hint".into(), json!(h));
    }
    let mut all_notes: Vec<String> = notes.to_vec();
    if let (Some(cpus), Some(cores)) = (facts.vcpus, facts.cores_per_socket) {
        if cores > 0 && cpus % cores == 0 {
            vm.insert(
                "cpu_topology".into(),
                json!({"sockets": cpus / cores, "cores": cores, "threads": 1}),
            );
        } else {
            all_notes.push(format!(
                "{cores} cores per socket do not divide {cpus} vCPUs; the topology is not carried"
            ));
        }
    }

    let mut disk_meta = Map::new();
    let disk_entries: Vec<Value> = disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut e = Map::new();
            e.insert("id".into(), json!(d.disk.id));
            e.insert("source_format".into(), json!(d.format.name()));
            e.insert("bytes".into(), json!(d.bytes));
            match &d.disk.location {
                DiskLocation::File { path, parents, .. } => {
                    e.insert("local_path".into(), json!(path));
                    if !parents.is_empty() {
                        e.insert("backing_chain".into(), json!(parents));
                    }
                }
                DiskLocation::Member {
                    archive,
                    name,
                    offset,
                    size,
                } => {
                    e.insert("local_path".into(), json!(archive));
                    e.insert(
                        "tar_member".into(),
                        json!({"name": name, "offset": offset, "size": size}),
                    );
                }
            }
            if let Some(sum) = &d.checksum {
                e.insert("checksum".into(), json!(sum));
            }
            e.insert("boot_order_hint".into(), json!(i));
            e.insert(
                "disk_type".into(),
                json!(if i == 0 { "boot" } else { "data" }),
            );
            let mut m = Map::new();
            m.insert("virtual_size".into(), json!(d.virtual_size));
            m.insert("described_at".into(), json!(d.disk.described_at));
            if let Some(c) = &d.disk.controller {
                m.insert("bus".into(), json!(c.bus()));
                if let super::Controller::Scsi(Some(model)) = c {
                    m.insert("controller_model".into(), json!(model));
                }
            }
            if let Some(u) = d.disk.unit {
                m.insert("unit".into(), json!(u));
            }
            disk_meta.insert(d.disk.id.clone(), Value::Object(m));
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
            if let Some(model) = &n.adapter {
                e.insert("model".into(), json!(model));
            }
            Value::Object(e)
        })
        .collect();

    let mut metadata = Map::new();
    if let Some(g) = &facts.guest_os {
        metadata.insert("guest_os".into(), json!(g));
    }
    if let Some(h) = &facts.hardware_version {
        metadata.insert("hardware_version".into(), json!(h));
    }
    if let Some(mib) = facts.memory_mib {
        metadata.insert("memory_bytes".into(), json!(mib * MIB));
    }
    metadata.insert("disks".into(), Value::Object(disk_meta));

    crate::libvirt::import::assemble(crate::libvirt::import::Sections {
        source,
        vm,
        disks: disk_entries,
        nics,
        notes: all_notes,
        metadata,
        output_dir,
    })
}
