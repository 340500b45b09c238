//! The per-VM plan: every decision made from a validated manifest before any disk is touched.
//!
//! Planning resolves paths (relative to the manifest), picks output files, decides compression
//! (zstd unless this qemu-img lacks it), checks that the tools exist, that outputs do not already
//! exist (unless `--overwrite`) and that the output directory can be created, and plans the
//! hooks (see [`crate::hooks::plan`]). Everything it finds wrong is reported together. The
//! pipeline reads only the plan, never the manifest.
//!
//! [`plan`] is the order of the decisions; each stage's part is in its own file (the disks and
//! their outputs, inspect, fix, convert, validate with the boot test, the libvirt domain), and
//! [`describe`] turns a plan into the `--dry-run` text.

mod convert;
mod describe;
mod disks;
pub mod domain;
mod fix;
mod inspect;
pub mod libvirt;
mod validate;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config;
use crate::diag::{Problem, Problems};
use crate::exec;
use crate::hooks::{self, HooksPlan};
use crate::libvirt::domain::DomainPlan;
use crate::manifest::{Firmware, Loaded, MacAddr, Preallocation};
use crate::tools::Tool;
use crate::tools::guestfish::GuestEnv;
use crate::tools::qemu_img::{Aio, ConvertSpec, Image, QemuImg};

pub use convert::{ConvertPlan, MeasureTarget};
pub use disks::{DiskPlan, same_file_key};
pub use fix::{FixMode, FixPlan, InPlaceConsent, backup_files, overlay_path};
pub use inspect::InspectPlan;
pub use validate::ValidatePlan;

/// The directory a VM's outputs go to when nothing on the command line names one: the
/// manifest's `output.directory`, else `default` (a batch's `<dir>/<vm id>`), else
/// `<manifest dir>/output`.
pub fn output_dir_for(loaded: &Loaded, default: Option<PathBuf>) -> PathBuf {
    disks::output_dir(
        loaded,
        &PlanOptions {
            default_output_dir: default,
            ..PlanOptions::default()
        },
    )
}

/// The MACs [`plan`] would give the VM's domain with `vm_id` as its id and `reserved` taken, read
/// from the manifest alone (no disk probed); none when it converts nothing (no domain).
pub fn macs_of(loaded: &Loaded, vm_id: &str, reserved: &BTreeSet<MacAddr>) -> Vec<MacAddr> {
    let m = &loaded.manifest;
    if !m.pipeline.convert.enabled {
        return Vec::new();
    }
    // The boot disk: the first in boot order (a stable sort, as the disk plan's).
    let boot = m
        .disks
        .iter()
        .enumerate()
        .min_by_key(|(i, d)| (d.boot_order_hint, *i))
        .map(|(_, d)| loaded.disk_path(d));
    domain::macs(
        m,
        vm_id,
        m.source.vm_name.as_deref().unwrap_or(vm_id),
        boot.as_deref(),
        reserved,
    )
}

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
    /// `--preview-guest`: a dry run may read the guest (read-only), so libguestfs is located
    /// and the accelerator probed as for a run. Without it a dry run starts nothing.
    pub preview_guest: bool,
    /// `--allow-in-place` and `--no-disk-backup`.
    pub in_place: InPlaceConsent,
    /// The id reports and progress use for this VM.
    pub vm_id: Option<String>,
    /// The batch this VM runs in, when it runs in one.
    pub batch_id: Option<String>,
    /// libguestfs and the accelerator it may use; found (and KVM probed) when `None` and the
    /// manifest looks inside the guest. A batch passes one in so the probe runs once.
    pub guest_env: Option<GuestEnv>,
    /// `--connect`: the libvirt host, over the manifest's `libvirt_integration.uri`.
    pub libvirt_uri: Option<String>,
    /// An explicit `--overwrite` (not a resumed batch's): another VM's libvirt domain may be
    /// replaced.
    pub replace_domains: bool,
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
    let guestfish = Tool::Guestfish.locate()?;
    let accel = match Tool::QemuSystem.locate() {
        Ok(qemu) => crate::tools::qemu_system::probe(&qemu).accel,
        Err(_) => crate::tools::qemu_system::Accel::Tcg,
    };
    Ok(GuestEnv::new(guestfish, accel))
}

/// Finds libguestfs without probing the accelerator, for a dry run: the probe boots a guest
/// with qemu-system and writes its image, which a dry run does not. The accelerator shown is
/// the one a run would try first.
pub fn guest_env_unprobed() -> Result<GuestEnv, exec::ExecError> {
    Ok(GuestEnv::new(Tool::Guestfish.locate()?, unprobed_accel()))
}

/// KVM where the device exists (a run probes it and falls back to TCG), else TCG.
fn unprobed_accel() -> crate::tools::qemu_system::Accel {
    use crate::tools::qemu_system::Accel;
    if Path::new("/dev/kvm").exists() {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
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
    /// The domain defined (and started) on a libvirt host.
    pub libvirt: Option<libvirt::LibvirtPlan>,
    pub overwrite: bool,
    pub dry_run: bool,
    /// A dry run that reads the guest read-only (`--preview-guest`).
    pub preview_guest: bool,
    /// Things the admin should know that do not stop the run; they go into the report.
    pub notes: Vec<String>,
    pub qemu_img: QemuImg,
    pub guest_env: Option<GuestEnv>,
    pub hooks: HooksPlan,
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
        crate::diag::render_problems(problems)
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

/// The warning for a manifest that enables no stage: such a run would read and convert nothing
/// and still "succeed".
pub const NO_STAGE: &str = "no stage is enabled (pipeline.inspect, pipeline.fix, pipeline.convert \
     and pipeline.validate are all off), so this run reads, repairs and converts nothing; set \
     pipeline.convert.enabled: true (and the other stages you want), or pick a profile such as \
     profile: production";

/// Builds the plan for one validated manifest.
pub fn plan(loaded: &Loaded, opts: &PlanOptions) -> Result<VmPlan, PlanError> {
    let m = &loaded.manifest;
    let mut problems = Problems::default();
    let mut notes = loaded.notes.clone();

    let p = &m.pipeline;
    if !(p.inspect.enabled || p.fix.enabled || p.convert.enabled || p.validate.enabled) {
        notes.push(NO_STAGE.to_owned());
    }
    let output_dir = disks::output_dir(loaded, opts);
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
    let format = convert::output_format(m, &mut notes);
    // A disk without source_format or bytes is probed now, read-only, so qemu-img is needed
    // before the rest of the plan.
    let early_qemu_img = if disks::needs_probe(loaded) {
        Some(QemuImg::locate()?)
    } else {
        None
    };
    let disks = disks::plan(
        loaded,
        &output_dir,
        converting.then_some(format),
        opts.overwrite,
        early_qemu_img.as_ref(),
        &mut notes,
        &mut problems,
    );
    disks::check_directories(loaded, &output_dir, converting, &mut problems);
    let preallocation = convert::preallocation(m, converting, format, &mut problems);

    let domain = converting.then(|| {
        let planned = domain::plan(&domain::DomainInputs {
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
        problems.0.extend(planned.problems);
        planned.domain
    });

    let libvirt = libvirt::plan(
        &libvirt::LibvirtInputs {
            manifest: m,
            uri_override: opts.libvirt_uri.as_deref(),
            overwrite: opts.replace_domains,
            converting,
            domain_name: domain.as_ref().map_or(vm_id.as_str(), |d| d.name.as_str()),
            disks: &disks,
            format,
        },
        &mut problems,
    );

    let boot_fixed = m
        .pipeline
        .fix
        .enabled
        .then(|| disks.first())
        .flatten()
        .map(|d| fix::repaired_path(&output_dir, &vm_id, converting, d));
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
            boot_fixed: boot_fixed.as_deref(),
            output_directory: &output_dir,
            output_format: format.name(),
            stages: hooks::EnabledStages {
                fix: m.pipeline.fix.enabled,
                convert: converting,
                validate: converting && m.pipeline.validate.enabled,
            },
        },
        &mut problems.0,
        &mut notes,
    );

    let fix = fix::plan(
        m,
        loaded.profile_chain.first().map(String::as_str),
        &output_dir,
        &vm_id,
        &disks,
        opts.in_place,
        &mut notes,
        &mut problems,
    );
    let in_place = fix
        .as_ref()
        .is_some_and(|f| matches!(f.mode, FixMode::InPlace { .. }));
    if in_place && !m.options.report.enabled {
        // A run that writes the sources always leaves the record of what it changed.
        notes.push(
            "options.report.enabled is false, but the report is written anyway: the fix stage \
             writes the source disks, and the report is the record of every change it makes"
                .to_owned(),
        );
    }
    let report_path = (m.options.report.enabled || in_place)
        .then(|| config::resolve_relative(&output_dir, &m.options.report.path));

    // A single VM's run writes the report's page beside it; a batch writes one for the batch.
    let report_page = report_path
        .as_deref()
        .filter(|_| opts.batch_id.is_none())
        .map(report_page_path);
    disks::check_collisions(
        loaded,
        &disks,
        report_path.as_deref(),
        report_page.as_deref(),
        domain.as_ref().map(|d| d.path.as_path()),
        &mut problems,
    );

    if !problems.is_empty() {
        return Err(PlanError::Invalid {
            path: loaded.path.clone(),
            problems: problems.0,
        });
    }

    let hooks = hooks?;
    let qemu_img = match early_qemu_img {
        Some(q) => q,
        None => QemuImg::locate()?,
    };
    let dry_run = opts.dry_run || m.options.dry_run;
    let guest_env = if needs_guest(m) {
        match &opts.guest_env {
            Some(env) => Some(env.clone()),
            None if dry_run && !opts.preview_guest => Some(guest_env_unprobed()?),
            None => Some(guest_env()?),
        }
    } else {
        None
    };
    let convert =
        converting.then(|| convert::plan(m, format, preallocation, dry_run, &qemu_img, &mut notes));
    let validate = validate::plan(
        m,
        converting,
        &disks,
        format,
        &output_dir,
        &vm_id,
        guest_env.as_ref(),
        dry_run && !opts.preview_guest,
        &mut notes,
    )?;

    let preview_guest = dry_run && opts.preview_guest && fix.is_some();
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
        inspect: inspect::plan(m),
        fix,
        convert,
        validate,
        domain,
        libvirt,
        overwrite: opts.overwrite,
        dry_run,
        preview_guest,
        notes,
        qemu_img,
        guest_env,
        hooks,
    })
}

/// Where the HTML page of a VM's report goes: beside it, its extension `.html`.
pub fn report_page_path(report: &Path) -> PathBuf {
    let page = report.with_extension("html");
    if page == report {
        // The report itself is named `*.html`: never write over it.
        let mut name = report.as_os_str().to_owned();
        name.push(".html");
        return PathBuf::from(name);
    }
    page
}

impl VmPlan {
    /// Whether the plan enables no stage at all (see [`NO_STAGE`]).
    pub fn runs_no_stage(&self) -> bool {
        self.notes.iter().any(|n| n == NO_STAGE)
    }

    /// The convert command for one disk (writing to its `.part` file), reading the source with
    /// `source_aio`; the target is written through io_uring where `io_uring_usable` and
    /// [`Aio::for_target`] allow it.
    pub fn convert_spec<'a>(
        &'a self,
        source: Image<'a>,
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

    /// What this VM's run claims (see [`crate::lock`]): every directory it writes into, and
    /// the scratch files it may leave there if it is killed (`.part` outputs and backups, the
    /// fix stage's work directory).
    pub fn claim(&self) -> crate::lock::Claim {
        let mut claim = crate::lock::Claim::default();
        claim.dir(&self.output_dir);
        let in_dir = |file: &Path, claim: &mut crate::lock::Claim| {
            if let Some(dir) = file.parent() {
                claim.dir(dir);
            }
        };
        for d in &self.disks {
            if let Some(out) = &d.output {
                in_dir(out, &mut claim);
                claim.scratch(&crate::atomic::part_path(out));
            }
        }
        if let Some(report) = &self.report_path {
            in_dir(report, &mut claim);
        }
        if let Some(domain) = &self.domain {
            in_dir(&domain.path, &mut claim);
        }
        match self.fix.as_ref().map(|f| &f.mode) {
            Some(FixMode::Overlay { work_dir }) => claim.scratch(work_dir),
            Some(FixMode::InPlace {
                backup_dir: Some(backups),
            }) => {
                for file in self.disks.iter().flat_map(backup_files) {
                    if let Some(name) = file.file_name() {
                        claim.scratch(&crate::atomic::part_path(&backups.join(name)));
                    }
                }
            }
            _ => {}
        }
        claim
    }

    /// The MACs this VM's domain uses (for [`PlanOptions::reserved_macs`] of the next VM).
    pub fn macs(&self) -> Vec<MacAddr> {
        self.domain
            .as_ref()
            .map(|d| d.macs().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_report_page_goes_beside_the_report() {
        let page = |p: &str| report_page_path(Path::new(p));
        assert_eq!(page("/o/report.json"), Path::new("/o/report.html"));
        assert_eq!(page("/o/r"), Path::new("/o/r.html"));
        assert_eq!(page("/o/r.html"), Path::new("/o/r.html.html"));
    }

    /// Two VMs of a batch that both ask for regenerated MACs: the second is planned with the
    /// first's MACs reserved and gets different ones, even from the same identity.
    #[test]
    #[cfg_attr(
        missing_tool = "qemu-img",
        ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
    )]
    fn reserved_macs_keep_a_batch_unique() {
        // Planning a conversion looks qemu-img up. build.rs ignores this test where it is
        // missing, except under CI, where it fails.
        assert!(which::which("qemu-img").is_ok(), "qemu-img is not on PATH");
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
        // What a sharded batch reads of the VMs other shards plan: the same MACs, without a
        // plan, for the same reserved set.
        // Without a batch id, the run's VM id is source.vm_name.
        let stem = "web01";
        assert_eq!(
            macs_of(&loaded, stem, &BTreeSet::new()),
            plan(&loaded, &PlanOptions::default())
                .expect("plans")
                .macs()
        );
        assert_eq!(macs_of(&loaded, stem, &opts.reserved_macs), second.macs());
        let with_id = PlanOptions {
            vm_id: Some("web-01".to_owned()),
            ..PlanOptions::default()
        };
        assert_eq!(
            macs_of(&loaded, "web-01", &BTreeSet::new()),
            plan(&loaded, &with_id).expect("plans").macs()
        );
    }
}
