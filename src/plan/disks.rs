//! The disks of a plan: where each source is read from (a flat VMDK extent through its
//! descriptor), where its output goes (`storage_mapping.disk_mappings` or the output
//! directory), in boot order; and the checks that the outputs can be written without harming
//! anything (no existing output without `--overwrite`, never the source itself, directories
//! that exist or can be made).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::PlanOptions;
use crate::config;
use crate::diag::Problems;
use crate::exec::{self, Watch};
use crate::files::{self, Identity};
use crate::manifest::{DiskType, Loaded, OutputFormat, SourceFormat};
use crate::tools::qemu_img::{self, Aio, Image, ImageInfo, QemuImg};

#[derive(Clone, Debug)]
pub struct DiskPlan {
    pub id: String,
    pub label: String,
    pub declared: SourceFormat,
    /// The path the manifest names.
    pub given_path: PathBuf,
    /// The path qemu-img opens: `given_path`, or the descriptor of a flat VMDK extent.
    pub source: PathBuf,
    pub expected_bytes: u64,
    /// The values planning read from the disk because the manifest left them out
    /// (`source_format`, `bytes`), for `--dry-run` and the report.
    pub probed: Vec<&'static str>,
    pub checksum: Option<String>,
    pub boot_order_hint: u32,
    pub disk_type: DiskType,
    /// Final output file (when converting).
    pub output: Option<PathBuf>,
    /// `allow_block_device`: the source may be a block device.
    pub allow_block_device: bool,
    /// The source's identity when the run was planned (`None` only when it could not be read,
    /// which is a planning problem). Convert and validate check that it still holds.
    pub pinned: Option<Identity>,
    /// The disk is this member of the archive `source` (an OVA), read in place.
    pub member: Option<crate::manifest::TarMember>,
    /// `backing_chain`: the files `source` rests on, nearest parent first, each pinned like
    /// the source (`None` when it could not be read, a planning problem). qemu-img reads
    /// through them; the run checks they are the chain it follows.
    pub backing_chain: Vec<(PathBuf, Option<Identity>)>,
}

impl DiskPlan {
    /// What qemu-img opens: `source`, or the member's bytes in it.
    pub fn image(&self) -> Image<'_> {
        Image {
            path: &self.source,
            range: self.member.as_ref().map(|m| (m.offset, m.size)),
        }
    }

    /// The source as messages name it: its path, or `member in archive`.
    pub fn shown(&self) -> String {
        match &self.member {
            Some(m) => format!("{} in {}", m.name, self.source.display()),
            None => self.source.display().to_string(),
        }
    }

    /// The source's size in bytes: the member's for an archive member, else the file's as
    /// pinned (`None` when it could not be read).
    pub fn source_bytes(&self) -> Option<u64> {
        match &self.member {
            Some(m) => Some(m.size),
            None => self.pinned.as_ref().map(|p| p.size),
        }
    }

    /// The temporary name the output has while it is being written.
    pub fn part_path(&self) -> Option<PathBuf> {
        self.output.as_ref().map(|o| crate::atomic::part_path(o))
    }
}

/// The output directory: `--output-dir`, else the manifest's `output.directory`, else the
/// caller's default (a batch's), else `<manifest dir>/output`.
pub(super) fn output_dir(loaded: &Loaded, opts: &PlanOptions) -> PathBuf {
    opts.output_dir_override
        .clone()
        .map(|d| config::absolute(&d))
        .or_else(|| {
            loaded
                .manifest
                .output
                .directory
                .as_deref()
                .map(|d| config::resolve_relative(&loaded.dir, d))
        })
        .or_else(|| opts.default_output_dir.clone())
        .unwrap_or_else(|| loaded.dir.join("output"))
}

/// Whether a disk leaves out a value that planning must probe (so qemu-img is needed early).
pub(super) fn needs_probe(loaded: &Loaded) -> bool {
    loaded
        .manifest
        .disks
        .iter()
        .any(|d| d.source_format.is_none() || d.bytes.is_none())
}

/// The disks in boot order; `format` is the output format when converting. `qemu_img` probes
/// the formats the manifest leaves out (it is `Some` whenever [`needs_probe`] is true).
pub(super) fn plan(
    loaded: &Loaded,
    output_dir: &Path,
    format: Option<OutputFormat>,
    overwrite: bool,
    qemu_img: Option<&QemuImg>,
    notes: &mut Vec<String>,
    problems: &mut Problems,
) -> Vec<DiskPlan> {
    let m = &loaded.manifest;
    let mut disks: Vec<DiskPlan> = m
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let given = loaded.disk_path(d);
            // Pinned now, on the descriptor: what convert and validate must still find.
            let pinned = match files::open_source(&given, d.allow_block_device) {
                Ok((_, identity)) => Some(identity),
                Err(e) => {
                    problems.push(
                        &format!("disks[{i}].local_path"),
                        crate::manifest::disks::source_problem(i, &given, &e),
                    );
                    None
                }
            };
            let backing_chain = loaded
                .backing_chain(d)
                .into_iter()
                .enumerate()
                .map(|(j, path)| {
                    let pinned = match files::open_source(&path, false) {
                        Ok((_, identity)) => Some(identity),
                        Err(e) => {
                            problems.push(
                                &format!("disks[{i}].backing_chain[{j}]"),
                                format!(
                                    "disks[{i}].backing_chain[{j}] {} {e}; a backing file \
                                     is a regular, non-empty file",
                                    path.display()
                                ),
                            );
                            None
                        }
                    };
                    (path, pinned)
                })
                .collect();
            let mut probed = Vec::new();
            let declared = match (d.source_format, &pinned, qemu_img) {
                (Some(f), _, _) => f,
                (None, Some(_), Some(q)) => {
                    probed.push("source_format");
                    let image = Image {
                        path: &given,
                        range: d.tar_member.as_ref().map(|m| (m.offset, m.size)),
                    };
                    match probe_format(q, i, image) {
                        Ok(f) => {
                            notes.push(format!(
                                "disk {}: source_format is not in the manifest; qemu-img probed \
                                 {} in {}",
                                d.id,
                                f,
                                given.display()
                            ));
                            f
                        }
                        Err(why) => {
                            problems.push(&format!("disks[{i}].source_format"), why);
                            SourceFormat::Raw
                        }
                    }
                }
                // The source could not be opened (already a problem): nothing to probe.
                (None, _, _) => SourceFormat::Raw,
            };
            let expected_bytes = match (d.bytes, &d.tar_member, &pinned) {
                (Some(b), _, _) => b,
                (None, Some(m), _) => {
                    probed.push("bytes");
                    m.size
                }
                (None, None, Some(p)) => {
                    probed.push("bytes");
                    p.size
                }
                (None, None, None) => 0,
            };
            let source = match (declared, &d.tar_member) {
                (SourceFormat::Vmdk, None) => crate::tools::qemu_img::flat_vmdk_descriptor(&given)
                    .unwrap_or_else(|| given.clone()),
                _ => given.clone(),
            };
            let output = format.map(|format| {
                let name = match (&m.output.filename, m.disks.len()) {
                    (Some(f), 1) => f.clone(),
                    _ => format!("{}.{}", d.id, format.name()),
                };
                disk_output_dir(loaded, output_dir, &d.id).join(name)
            });
            DiskPlan {
                id: d.id.clone(),
                label: d.label().to_owned(),
                declared,
                given_path: given,
                source,
                expected_bytes,
                probed,
                checksum: d.checksum.clone(),
                boot_order_hint: d.boot_order_hint,
                disk_type: d.disk_type,
                output,
                allow_block_device: d.allow_block_device,
                pinned,
                member: d.tar_member.clone(),
                backing_chain,
            }
        })
        .collect();
    disks.sort_by_key(|d| d.boot_order_hint);

    for d in &disks {
        if d.source != d.given_path {
            notes.push(format!(
                "disk {}: {} is a flat VMDK extent; converting through its descriptor {}",
                d.id,
                d.given_path.display(),
                d.source.display()
            ));
        }
        let Some(out) = &d.output else { continue };
        if !overwrite && out.exists() {
            problems.push(
                "output",
                format!(
                    "disk {}: output {} already exists; remove it or pass --overwrite",
                    d.id,
                    out.display()
                ),
            );
        }
        if same_file(out, &d.source) || same_file(out, &d.given_path) {
            problems.push(
                "output",
                format!(
                    "disk {}: output {} is the source disk itself; choose another output directory",
                    d.id,
                    out.display()
                ),
            );
        }
    }
    disks
}

/// Probes the format of a disk whose manifest entry has no `source_format`: `qemu-img info`
/// without `-f`, read-only. A probed `raw` is refused where it is ambiguous (a VHD footer, a
/// flat VMDK extent), so the admin says what the file is; every later command passes `-f`.
fn probe_format(q: &QemuImg, i: usize, image: Image<'_>) -> Result<SourceFormat, String> {
    let path = image.path;
    let shown = image;
    let lead = format!("disks[{i}].source_format is not given, and");
    let out = exec::run(&q.probe_cmd(image, Aio::Threads), Watch::default())
        .map_err(|e| format!("{lead} qemu-img could not probe {shown}: {e}"))?;
    if !out.record.success() {
        return Err(format!(
            "{lead} qemu-img cannot open {shown}: {}; write source_format \
             (one of: {})",
            out.record.stderr_tail.trim(),
            SourceFormat::NAMES.join(", ")
        ));
    }
    let info = ImageInfo::parse(&out.stdout).map_err(|e| format!("{lead} {e}"))?;
    let hint = "write source_format in the manifest";
    match SourceFormat::from_driver(&info.format) {
        Some(SourceFormat::Raw) if image.range.is_none() && qemu_img::has_vhd_footer(path) => {
            Err(format!(
                "{lead} qemu-img probes {shown} as raw, but it ends with a VHD footer: it is a fixed \
             VHD or a raw disk whose last sector looks like one, and the content must not decide \
             which; {hint} (vhd or raw)"
            ))
        }
        Some(SourceFormat::Raw) if shown.to_string().ends_with("-flat.vmdk") => Err(format!(
            "{lead} qemu-img probes {shown} as raw, but its name is a flat VMDK extent's; {hint} \
             (vmdk, to convert it through its descriptor, or raw)"
        )),
        Some(f) => Ok(f),
        None => Err(format!(
            "{lead} qemu-img detects {} in {shown}, which hyper2kvm does not convert (supported: \
             {})",
            info.format,
            SourceFormat::NAMES.join(", ")
        )),
    }
}

/// A file this VM writes: what it is (for messages) and the field that decides its name.
struct Written<'a> {
    what: String,
    field: &'a str,
    path: PathBuf,
}

/// No two files this VM writes may be one: each converted disk and its `.part` file, the
/// report, its page and the domain XML. Otherwise the later write destroys the earlier (a report
/// over the converted disk) while the run "succeeds".
pub(super) fn check_collisions(
    loaded: &Loaded,
    disks: &[DiskPlan],
    report: Option<&Path>,
    report_page: Option<&Path>,
    domain_xml: Option<&Path>,
    problems: &mut Problems,
) {
    let disk_field = if loaded.manifest.output.filename.is_some() {
        "output.filename"
    } else {
        "disks"
    };
    let mut written: Vec<Written> = Vec::new();
    written.extend(report.map(|p| Written {
        what: "the report".to_owned(),
        field: "options.report.path",
        path: p.to_owned(),
    }));
    written.extend(report_page.map(|p| Written {
        what: "the report's page".to_owned(),
        field: "options.report.path",
        path: p.to_owned(),
    }));
    written.extend(domain_xml.map(|p| Written {
        what: "the domain XML".to_owned(),
        field: "output.directory",
        path: p.to_owned(),
    }));
    for d in disks {
        if let Some(out) = &d.output {
            written.push(Written {
                what: format!("disk {}'s output", d.id),
                field: disk_field,
                path: out.clone(),
            });
        }
        if let Some(part) = d.part_path() {
            written.push(Written {
                what: format!("disk {}'s unfinished output", d.id),
                field: disk_field,
                path: part,
            });
        }
    }
    let keys: Vec<PathBuf> = written.iter().map(|w| same_file_key(&w.path)).collect();
    for (j, later) in written.iter().enumerate() {
        if let Some(i) = (0..j).find(|&i| keys[i] == keys[j]) {
            let earlier = &written[i];
            problems.push(
                later.field,
                format!(
                    "{} and {} would both be {}; give them different names",
                    earlier.what,
                    later.what,
                    later.path.display()
                ),
            );
        }
    }
}

/// A path as a key for "the same file": its directory resolved (symlinks, `..`) where it
/// exists, its name as given.
pub fn same_file_key(path: &Path) -> PathBuf {
    let normal = config::absolute(path);
    match (normal.parent(), normal.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_owned())
            .join(name),
        _ => normal,
    }
}

/// The output directory, and (when converting) every `disk_mappings` directory, must be
/// writable or creatable.
pub(super) fn check_directories(
    loaded: &Loaded,
    output_dir: &Path,
    converting: bool,
    problems: &mut Problems,
) {
    if let Err(message) = check_dir_writable(output_dir) {
        problems.push("output.directory", message);
    }
    let mapped_dirs: BTreeSet<PathBuf> = loaded
        .manifest
        .storage_mapping
        .disk_mappings
        .keys()
        .map(|id| disk_output_dir(loaded, output_dir, id))
        .filter(|d| d != output_dir)
        .collect();
    if converting {
        for dir in &mapped_dirs {
            if let Err(message) = check_dir_writable(dir) {
                problems.push("storage_mapping.disk_mappings", message);
            }
        }
    }
}

/// Where a disk's output goes: its `storage_mapping.disk_mappings` directory (relative to the
/// manifest), else the output directory.
fn disk_output_dir(loaded: &Loaded, output_dir: &Path, disk_id: &str) -> PathBuf {
    match loaded.manifest.storage_mapping.disk_mappings.get(disk_id) {
        Some(dir) => config::resolve_relative(&loaded.dir, dir),
        None => output_dir.to_owned(),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The output directory must exist as a writable directory, or be creatable.
fn check_dir_writable(dir: &Path) -> Result<(), String> {
    let mut probe = dir;
    loop {
        match std::fs::metadata(probe) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(format!(
                    "output directory {} cannot be used: {} is not a directory",
                    dir.display(),
                    probe.display()
                ));
            }
            Err(_) => match probe.parent() {
                Some(parent) => probe = parent,
                None => break,
            },
        }
    }
    nix::unistd::access(
        probe,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .map_err(|e| {
        format!(
            "output directory {} cannot be written: {} is not writable ({e})",
            dir.display(),
            probe.display()
        )
    })
}
