//! The per-VM plan: every decision made from a validated manifest before any disk is touched.
//!
//! Planning resolves paths (relative to the manifest), picks output files, decides compression
//! (zstd unless this qemu-img lacks it), checks that the tools exist, that outputs do not already
//! exist (unless `--overwrite`) and that the output directory can be created, and plans the
//! hooks (see [`crate::hooks::plan`]). Everything it finds wrong is reported together. The
//! pipeline reads only the plan, never the manifest.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config;
use crate::exec::{self, Watch};
use crate::guest::session::GuestEnv;
use crate::hooks::{self, HooksPlan};
use crate::libvirt::domain::{self as libvirt_domain, DomainInputs, DomainPlan};
use crate::manifest::{DiskType, Firmware, Loaded, OutputFormat, Problem, SourceFormat};
use crate::mapping::{MacAddr, Preallocation};
use crate::qemu_img::{Aio, Compression, ConvertSpec, QemuImg};

/// What the caller adds to a manifest when planning.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// `--output-dir`: beats the manifest's `output.directory`.
    pub output_dir_override: Option<PathBuf>,
    /// Used when neither the CLI nor the manifest names an output directory
    /// (a batch's `<shared output_directory>/<vm id>`); otherwise `<manifest dir>/output`.
    pub default_output_dir: Option<PathBuf>,
    pub overwrite: bool,
    pub dry_run: bool,
    /// The id reports and progress use for this VM.
    pub vm_id: Option<String>,
    /// The batch this VM runs in, when it runs in one.
    pub batch_id: Option<String>,
    /// libguestfs and the accelerator it may use; found (and KVM probed) when `None` and the
    /// manifest looks inside the guest. A batch passes one in so the probe runs once.
    pub guest_env: Option<GuestEnv>,
    /// MACs that other VMs of the same run already use. A regenerated MAC never repeats one, and
    /// a preserved or overridden MAC that repeats one is a problem. A batch plans its VMs in
    /// order and adds each plan's [`VmPlan::macs`] here before planning the next.
    pub reserved_macs: BTreeSet<MacAddr>,
}

/// Whether a manifest needs libguestfs.
pub fn needs_guest(m: &crate::manifest::Manifest) -> bool {
    m.pipeline.fix.enabled || (m.pipeline.inspect.enabled && m.pipeline.inspect.collect_guest_info)
}

/// Finds libguestfs and probes the accelerator.
pub fn guest_env() -> Result<GuestEnv, exec::ExecError> {
    let guestfish = exec::Tool::Guestfish.locate()?;
    let accel = match exec::Tool::QemuSystem.locate() {
        Ok(qemu) => crate::accel::probe(&qemu).accel,
        Err(_) => crate::accel::Accel::Tcg,
    };
    Ok(GuestEnv { guestfish, accel })
}

#[derive(Clone, Debug)]
pub struct VmPlan {
    pub vm_id: String,
    pub batch_id: Option<String>,
    pub vm_name: String,
    pub manifest_path: PathBuf,
    pub manifest_version: String,
    pub source_provider: Option<String>,
    pub source_vm_id: Option<String>,
    pub firmware: Firmware,
    pub os_hint: Option<String>,
    pub profile_chain: Vec<String>,
    pub output_dir: PathBuf,
    pub report_path: Option<PathBuf>,
    /// In boot order (`boot_order_hint`, ties in manifest order).
    pub disks: Vec<DiskPlan>,
    pub inspect: Option<InspectPlan>,
    pub fix: Option<FixPlan>,
    pub convert: Option<ConvertPlan>,
    pub validate: Option<ValidatePlan>,
    /// The libvirt domain written after a successful conversion.
    pub domain: Option<DomainPlan>,
    pub overwrite: bool,
    pub dry_run: bool,
    /// Things the admin should know that do not stop the run; they go into the report.
    pub notes: Vec<String>,
    pub qemu_img: QemuImg,
    pub guest_env: Option<GuestEnv>,
    pub hooks: HooksPlan,
}

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
    pub checksum: Option<String>,
    pub boot_order_hint: u32,
    pub disk_type: DiskType,
    /// Final output file (when converting).
    pub output: Option<PathBuf>,
}

impl DiskPlan {
    /// The temporary name the output has while it is being written.
    pub fn part_path(&self) -> Option<PathBuf> {
        self.output.as_ref().map(|o| part_path(o))
    }
}

/// `<output>.part`
pub fn part_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

#[derive(Clone, Debug)]
pub struct InspectPlan {
    /// `qemu-img check` on sources whose format supports it.
    pub check_source: bool,
    /// Look inside the guest with libguestfs (OS, filesystems, kernels).
    pub guest_info: bool,
}

/// Offline guest repair.
#[derive(Clone, Debug)]
pub struct FixPlan {
    pub settings: crate::manifest::FixStage,
    pub mode: FixMode,
}

/// Where guest repairs are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FixMode {
    /// Into qcow2 overlays backed by the read-only sources (convert flattens them); the
    /// overlays live in `work_dir` and are removed when the VM finishes.
    Overlay { work_dir: PathBuf },
    /// Into the source disks themselves (convert is off), after a copy into `backup_dir`.
    InPlace { backup_dir: Option<PathBuf> },
}

#[derive(Clone, Debug)]
pub struct ConvertPlan {
    pub format: OutputFormat,
    pub compression: Option<Compression>,
    pub parallel_writes: bool,
    /// Check the source with `qemu-img check` first (when inspect did not).
    pub check_source: bool,
    /// `storage_mapping.preallocate`, passed to qemu-img as `-o preallocation=`.
    pub preallocation: Option<Preallocation>,
}

#[derive(Clone, Debug)]
pub struct ValidatePlan {
    /// `qemu-img compare` source against output.
    pub compare: bool,
    /// Boot the outputs once (`pipeline.validate.boot_test`).
    pub boot_test: Option<crate::boot_test::BootTestPlan>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Tool(#[from] exec::ExecError),
    #[error(transparent)]
    BootTest(#[from] crate::boot_test::BootTestError),
    #[error(
        "cannot plan {path} ({} problem{}):\n{}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        crate::manifest::render_problems(problems)
    )]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl PlanError {
    /// Whether the problem is the machine's (a missing tool) rather than the input's.
    pub fn is_environment(&self) -> bool {
        match self {
            PlanError::Tool(_) => true,
            PlanError::BootTest(e) => e.is_environment(),
            PlanError::Invalid { .. } => false,
        }
    }
}

/// Builds the plan for one validated manifest.
pub fn plan(loaded: &Loaded, opts: &PlanOptions) -> Result<VmPlan, PlanError> {
    let m = &loaded.manifest;
    let mut problems: Vec<Problem> = Vec::new();
    let mut problem = |path: &str, message: String| {
        problems.push(Problem {
            path: path.to_owned(),
            message,
        })
    };
    let mut notes = Vec::new();

    let output_dir = opts
        .output_dir_override
        .clone()
        .map(|d| config::absolute(&d))
        .or_else(|| {
            m.output
                .directory
                .as_deref()
                .map(|d| config::resolve_relative(&loaded.dir, d))
        })
        .or_else(|| opts.default_output_dir.clone())
        .unwrap_or_else(|| loaded.dir.join("output"));

    let stem = loaded
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vm".to_owned());
    let vm_name = m
        .source
        .vm_name
        .clone()
        .unwrap_or_else(|| "unknown".to_owned());
    let vm_id = opts
        .vm_id
        .clone()
        .or_else(|| m.source.vm_name.clone())
        .unwrap_or(stem);

    let converting = m.pipeline.convert.enabled;
    let format = m.storage_mapping.format_override.unwrap_or(m.output.format);
    if converting && format != m.output.format {
        notes.push(format!(
            "storage_mapping.format_override writes {format} instead of output.format {}",
            m.output.format
        ));
    }
    let mut disks: Vec<DiskPlan> =
        m.disks
            .iter()
            .map(|d| {
                let given = loaded.disk_path(d);
                let source = match d.source_format {
                    SourceFormat::Vmdk => crate::qemu_img::flat_vmdk_descriptor(&given)
                        .unwrap_or_else(|| given.clone()),
                    _ => given.clone(),
                };
                let output = converting.then(|| {
                    let name = match (&m.output.filename, m.disks.len()) {
                        (Some(f), 1) => f.clone(),
                        _ => format!("{}.{}", d.id, format.name()),
                    };
                    disk_output_dir(loaded, &output_dir, &d.id).join(name)
                });
                DiskPlan {
                    id: d.id.clone(),
                    label: d.label().to_owned(),
                    declared: d.source_format,
                    given_path: given,
                    source,
                    expected_bytes: d.bytes,
                    checksum: d.checksum.clone(),
                    boot_order_hint: d.boot_order_hint,
                    disk_type: d.disk_type,
                    output,
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
        if !opts.overwrite && out.exists() {
            problem(
                "output",
                format!(
                    "disk {}: output {} already exists; remove it or pass --overwrite",
                    d.id,
                    out.display()
                ),
            );
        }
        if same_file(out, &d.source) || same_file(out, &d.given_path) {
            problem(
                "output",
                format!(
                    "disk {}: output {} is the source disk itself; choose another output directory",
                    d.id,
                    out.display()
                ),
            );
        }
    }

    if let Err(message) = check_dir_writable(&output_dir) {
        problem("output.directory", message);
    }
    let mapped_dirs: BTreeSet<PathBuf> = m
        .storage_mapping
        .disk_mappings
        .keys()
        .map(|id| disk_output_dir(loaded, &output_dir, id))
        .filter(|d| *d != output_dir)
        .collect();
    if converting {
        for dir in &mapped_dirs {
            if let Err(message) = check_dir_writable(dir) {
                problem("storage_mapping.disk_mappings", message);
            }
        }
    }

    let preallocation = m.storage_mapping.preallocation();
    if let (true, Some(mode)) = (converting, preallocation) {
        let refused = match (format, mode) {
            _ if m.pipeline.convert.compress && format == OutputFormat::Qcow2 => Some(
                "qemu-img cannot compress and preallocate at once; turn off \
                 pipeline.convert.compress or storage_mapping.preallocate"
                    .to_owned(),
            ),
            (OutputFormat::Vdi, _) => Some(
                "qemu-img ignores preallocation for vdi output; remove storage_mapping.preallocate \
                 or write qcow2 or raw"
                    .to_owned(),
            ),
            (OutputFormat::Raw, Preallocation::Metadata) => Some(
                "raw output has no metadata to preallocate; use falloc or full".to_owned(),
            ),
            _ => None,
        };
        if let Some(why) = refused {
            problem(
                "storage_mapping.preallocate",
                format!("storage_mapping.preallocate {}: {why}", mode.name()),
            );
        }
    }

    let domain = if converting {
        let planned = libvirt_domain::plan_domain(&DomainInputs {
            manifest: m,
            vm_id: &vm_id,
            vm_name: m.source.vm_name.as_deref().unwrap_or(&vm_id),
            output_dir: &output_dir,
            disks: &disks,
            format,
            reserved_macs: &opts.reserved_macs,
            overwrite: opts.overwrite,
        });
        notes.extend(planned.notes);
        for p in planned.problems {
            problem(&p.path, p.message);
        }
        Some(planned.domain)
    } else {
        None
    };

    let hooks = hooks::plan(
        &m.hooks,
        &hooks::VmFacts {
            manifest_path: &loaded.path,
            manifest_dir: &loaded.dir,
            vm_name: &vm_name,
            vm_id: &vm_id,
            batch_id: opts.batch_id.as_deref(),
            boot_source: disks.first().map(|d| d.given_path.as_path()),
            boot_output: disks.first().and_then(|d| d.output.as_deref()),
            output_directory: &output_dir,
            output_format: format.name(),
            stages: hooks::EnabledStages {
                fix: m.pipeline.fix.enabled,
                convert: converting,
                validate: converting && m.pipeline.validate.enabled,
            },
        },
        &mut problems,
        &mut notes,
    );

    let report_path = m
        .options
        .report
        .enabled
        .then(|| config::resolve_relative(&output_dir, &m.options.report.path));

    if !problems.is_empty() {
        return Err(PlanError::Invalid {
            path: loaded.path.clone(),
            problems,
        });
    }

    let hooks = hooks?;
    let qemu_img = QemuImg::locate()?;
    let dry_run = opts.dry_run || m.options.dry_run;
    let guest_env = if needs_guest(m) {
        match &opts.guest_env {
            Some(env) => Some(env.clone()),
            None => Some(guest_env()?),
        }
    } else {
        None
    };
    let fix = m.pipeline.fix.enabled.then(|| FixPlan {
        settings: m.pipeline.fix.clone(),
        mode: if converting {
            FixMode::Overlay {
                work_dir: output_dir.join(format!(".hyper2kvm-work-{vm_id}")),
            }
        } else {
            FixMode::InPlace {
                backup_dir: m.pipeline.fix.backup.then(|| output_dir.join("backups")),
            }
        },
    });
    if fix
        .as_ref()
        .is_some_and(|f| matches!(f.mode, FixMode::InPlace { .. }))
    {
        notes.push(
            "pipeline.convert is off, so guest repairs are written into the source disks \
             themselves"
                .to_owned(),
        );
    }

    let convert = if converting {
        let c = &m.pipeline.convert;
        let compression = match (c.compress, format) {
            (true, OutputFormat::Qcow2) => {
                // A dry run touches nothing, not even a scratch file for the probe.
                let zstd = dry_run || zstd_supported(&qemu_img);
                if !zstd {
                    notes.push(
                        "this qemu-img has no zstd support; compressing with zlib (several \
                         times slower)"
                            .to_owned(),
                    );
                }
                if c.compress_level != 6 {
                    notes.push(format!(
                        "compress_level {} is not adjustable through qemu-img; qcow2 uses its \
                         codec's built-in level",
                        c.compress_level
                    ));
                }
                Some(if zstd {
                    Compression::Zstd
                } else {
                    Compression::Zlib
                })
            }
            (true, other) => {
                notes.push(format!(
                    "pipeline.convert.compress applies to qcow2 only; {other} output is written \
                     uncompressed"
                ));
                None
            }
            (false, _) => None,
        };
        Some(ConvertPlan {
            format,
            compression,
            parallel_writes: matches!(format, OutputFormat::Qcow2 | OutputFormat::Raw),
            check_source: c.check_image_integrity && !m.pipeline.inspect.enabled,
            preallocation,
        })
    } else {
        None
    };

    let validate = if m.pipeline.validate.enabled {
        if !converting {
            notes.push(
                "pipeline.validate is enabled but convert is not; there is no output to validate"
                    .to_owned(),
            );
            None
        } else {
            let boot_test = m.pipeline.validate.boot_test.enabled.then(|| {
                crate::boot_test::plan(
                    crate::boot_test::PlanInput {
                        settings: &m.pipeline.validate.boot_test,
                        vm: &m.vm,
                        disks: boot_disks(&disks, format),
                        console_log: output_dir.join(format!("{vm_id}.boot-test-console.log")),
                        accel: guest_env.as_ref().map(|g| g.accel),
                    },
                    &mut notes,
                )
            });
            Some(ValidatePlan {
                compare: m.pipeline.validate.check_image_integrity,
                boot_test: boot_test.transpose()?,
            })
        }
    } else {
        if m.pipeline.validate.boot_test.enabled {
            notes.push(
                "pipeline.validate.boot_test is enabled but validate is not; no boot test runs"
                    .to_owned(),
            );
        }
        None
    };

    Ok(VmPlan {
        vm_id,
        batch_id: opts.batch_id.clone(),
        vm_name,
        manifest_path: loaded.path.clone(),
        manifest_version: m.manifest_version.clone(),
        source_provider: m.source.provider.clone(),
        source_vm_id: m.source.vm_id.clone(),
        firmware: m.vm.firmware,
        os_hint: m.vm.os_hint.clone(),
        profile_chain: loaded.profile_chain.clone(),
        output_dir,
        report_path,
        disks,
        inspect: m.pipeline.inspect.enabled.then_some(InspectPlan {
            check_source: true,
            guest_info: m.pipeline.inspect.collect_guest_info,
        }),
        fix,
        convert,
        validate,
        domain,
        overwrite: opts.overwrite,
        dry_run,
        notes,
        qemu_img,
        guest_env,
        hooks,
    })
}

/// Where a disk's output goes: its `storage_mapping.disk_mappings` directory (relative to the
/// manifest), else the output directory.
fn disk_output_dir(loaded: &Loaded, output_dir: &Path, disk_id: &str) -> PathBuf {
    match loaded.manifest.storage_mapping.disk_mappings.get(disk_id) {
        Some(dir) => config::resolve_relative(&loaded.dir, dir),
        None => output_dir.to_owned(),
    }
}

/// The outputs the boot test attaches, in boot order.
fn boot_disks(disks: &[DiskPlan], format: OutputFormat) -> Vec<crate::boot_test::BootDisk> {
    disks
        .iter()
        .filter_map(|d| {
            d.output.as_ref().map(|o| crate::boot_test::BootDisk {
                id: d.id.clone(),
                path: o.clone(),
                format: format.name(),
            })
        })
        .collect()
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

fn zstd_supported(qemu_img: &QemuImg) -> bool {
    let Ok(scratch) = tempfile::tempdir() else {
        return false;
    };
    let cmd = qemu_img.zstd_probe_cmd(&scratch.path().join("probe.qcow2"));
    exec::run(&cmd, Watch::default()).is_ok_and(|o| o.record.success())
}

impl VmPlan {
    /// The convert command for one disk (writing to its `.part` file), reading the source with
    /// `source_aio`; the target is written through io_uring where `io_uring_usable` and
    /// [`Aio::for_target`] allow it.
    pub fn convert_spec<'a>(
        &'a self,
        source: &'a Path,
        source_driver: &'a str,
        source_aio: Aio,
        dest: &'a Path,
        io_uring_usable: bool,
        virtual_size: Option<u64>,
    ) -> Option<ConvertSpec<'a>> {
        let c = self.convert.as_ref()?;
        let target_aio = Aio::for_target(
            io_uring_usable,
            c.format.name(),
            c.compression.is_some(),
            virtual_size,
            dest,
        );
        Some(ConvertSpec {
            source,
            source_driver,
            dest,
            output_format: c.format.name(),
            compression: c.compression,
            parallel_writes: c.parallel_writes,
            preallocation: c.preallocation.map(Preallocation::name),
            source_aio,
            target_aio,
            virtual_size,
        })
    }

    /// The MACs this VM's domain uses (for [`PlanOptions::reserved_macs`] of the next VM).
    pub fn macs(&self) -> Vec<MacAddr> {
        self.domain
            .as_ref()
            .map(|d| d.macs().collect())
            .unwrap_or_default()
    }

    /// A human-readable account of what a run would do, for `--dry-run`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Dry run: nothing will be read, written or converted.");
        let _ = writeln!(
            s,
            "VM {} (manifest {})",
            self.vm_id,
            self.manifest_path.display()
        );
        if !self.profile_chain.is_empty() {
            let _ = writeln!(s, "  profile: {}", self.profile_chain.join(" <- "));
        }
        let stages: Vec<&str> = [
            ("inspect", self.inspect.is_some()),
            ("fix", self.fix.is_some()),
            ("convert", self.convert.is_some()),
            ("validate", self.validate.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect();
        let _ = writeln!(
            s,
            "  stages: {}",
            if stages.is_empty() {
                "none (load and validate only)".to_owned()
            } else {
                stages.join(", ")
            }
        );
        let _ = writeln!(s, "  output directory: {}", self.output_dir.display());
        match &self.report_path {
            Some(p) => {
                let _ = writeln!(s, "  report: {}", p.display());
            }
            None => {
                let _ = writeln!(s, "  report: disabled");
            }
        }
        for note in &self.notes {
            let _ = writeln!(s, "  note: {note}");
        }
        let hook_lines = self.hooks.describe();
        if !hook_lines.is_empty() {
            let _ = writeln!(s, "  hooks (a dry run does not run them):");
        }
        for line in hook_lines {
            let _ = writeln!(s, "    {line}");
        }
        let q = &self.qemu_img;
        // A dry run runs no probe: it shows io_uring reads as if the format probe finds them
        // usable (as it assumes zstd), for the files whose size allows them.
        let aio = |path: &Path| Aio::for_file(true, path);
        for d in &self.disks {
            let driver = d.declared.driver();
            let _ = writeln!(
                s,
                "  disk {} ({}, {}, {} bytes): {}",
                d.id,
                disk_type_name(d.disk_type),
                d.declared,
                d.expected_bytes,
                d.source.display()
            );
            if let Some(sum) = &d.checksum {
                let _ = writeln!(s, "    verify {sum}");
            }
            let _ = writeln!(s, "    $ {}", q.probe_cmd(&d.source, aio(&d.source)));
            let check =
                self.inspect.is_some() || self.convert.as_ref().is_some_and(|c| c.check_source);
            if check && d.declared.checkable() {
                let _ = writeln!(s, "    $ {}", q.check_cmd(&d.source, driver));
            }
            if let (Some(out), Some(part)) = (&d.output, d.part_path())
                && let Some(spec) =
                    self.convert_spec(&d.source, driver, aio(&d.source), &part, true, None)
            {
                if let Some(create) = q.create_target_cmd(&spec) {
                    let _ = writeln!(s, "    $ {create}");
                }
                let _ = writeln!(s, "    $ {}", q.convert_cmd(&spec));
                let _ = writeln!(s, "    rename {} -> {}", part.display(), out.display());
                if let Some(v) = &self.validate {
                    let fmt = self.convert.as_ref().map_or("qcow2", |c| c.format.name());
                    if fmt == "qcow2" {
                        let _ = writeln!(s, "    $ {}", q.check_cmd(out, fmt));
                    }
                    if v.compare {
                        // The output does not exist yet: shown as read without io_uring,
                        // which the run uses when the finished file's size allows it.
                        let cmd = q.compare_cmd(
                            (&d.source, driver, aio(&d.source)),
                            (out, fmt, Aio::Threads),
                        );
                        let _ = writeln!(s, "    $ {cmd}");
                    }
                }
            }
        }
        if let Some(dom) = &self.domain {
            describe_domain(&mut s, dom);
        }
        if let Some(bt) = self.validate.as_ref().and_then(|v| v.boot_test.as_ref()) {
            for line in bt.describe() {
                let _ = writeln!(s, "  {line}");
            }
        }
        s
    }
}

fn describe_domain(s: &mut String, dom: &DomainPlan) {
    use crate::libvirt::domain::{FirmwarePlan, UuidOrigin};
    let firmware = match &dom.firmware {
        FirmwarePlan::Bios => "BIOS".to_owned(),
        FirmwarePlan::Uefi {
            loader,
            secure_boot,
            ..
        } => format!(
            "UEFI{} ({loader})",
            if *secure_boot {
                " with Secure Boot"
            } else {
                ""
            }
        ),
    };
    let _ = writeln!(s, "  domain {} -> {}", dom.name, dom.path.display());
    let _ = writeln!(
        s,
        "    uuid {} ({}), {} vCPUs, {} MiB, q35, {firmware}",
        dom.uuid,
        match dom.uuid_origin {
            UuidOrigin::Derived => "new",
            UuidOrigin::Preserved => "preserved",
        },
        dom.vcpus,
        dom.memory_kib / 1024
    );
    for d in &dom.disks {
        let pool = d
            .pool
            .as_deref()
            .map(|p| format!(", pool {p}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "    {}: disk {}, boot order {}{pool}: {}",
            d.target,
            d.disk_id,
            d.boot_order,
            d.path.display()
        );
    }
    for i in &dom.interfaces {
        let _ = writeln!(
            s,
            "    nic {}: {}, mac {} ({})",
            i.nic_id,
            i.connection,
            i.mac,
            match i.mac_origin {
                crate::mapping::MacOrigin::Preserved => "preserved",
                crate::mapping::MacOrigin::Override => "override",
                crate::mapping::MacOrigin::Generated => "new",
            }
        );
    }
}

pub fn disk_type_name(t: DiskType) -> &'static str {
    match t {
        DiskType::Boot => "boot",
        DiskType::Data => "data",
        DiskType::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Two VMs of a batch that both ask for regenerated MACs: the second is planned with the
    /// first's MACs reserved and gets different ones, even from the same identity.
    #[test]
    fn reserved_macs_keep_a_batch_unique() {
        if which::which("qemu-img").is_err() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.raw"), b"x").expect("write");
        let doc = json!({"manifest_version": "1.0",
            "source": {"vm_name": "web01"},
            "disks": [{"id": "d0", "source_format": "raw", "bytes": 1, "local_path": "a.raw"}],
            "nics": [{"network": "lan"}, {"network": "lan"}],
            "network_mapping": {"default_bridge": "br0", "mac_address_policy": "regenerate"},
            "pipeline": {"convert": {"enabled": true}}});
        let serde_json::Value::Object(doc) = doc else {
            panic!("an object")
        };
        let loaded = crate::manifest::resolve(
            &dir.path().join("vm.json"),
            doc,
            &crate::manifest::Layers::default(),
        )
        .expect("valid");
        let mut opts = PlanOptions {
            dry_run: true,
            ..PlanOptions::default()
        };
        let first = plan(&loaded, &opts).expect("plans");
        let first_macs = first.macs();
        assert_eq!(first_macs.len(), 2);
        opts.reserved_macs.extend(first_macs.iter().copied());
        let second = plan(&loaded, &opts).expect("plans");
        for mac in second.macs() {
            assert!(
                !first_macs.contains(&mac),
                "{mac} repeated across the batch"
            );
        }
        let again = plan(&loaded, &PlanOptions::default()).expect("plans");
        assert_eq!(again.macs(), first_macs, "the same run plans the same MACs");
    }
}
