//! Command-line definitions. They mirror the Python hyper2kvm's flags; no logic lives here.

use std::path::PathBuf;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

use crate::schemas::Schema;
use crate::tools::inventory;
use crate::ui::{LogFormat, ProgressMode};

// The headings `--help` groups the options under, in the order of their first option below.
const SINGLE: &str = "Single VM";
const BATCH: &str = "Batch";
const OUTPUT: &str = "Output";
const SAFETY: &str = "Dry run and consent";
const LOGGING: &str = "Logging and progress";
const IMPORT: &str = "Import (libvirt XML)";
const SCALE_OUT: &str = "Scale-out (shards, Kubernetes)";

/// Whether the Kubernetes Job's pods get /dev/kvm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KvmChoice {
    /// When this host has /dev/kvm.
    Auto,
    /// Always (the cluster's nodes have KVM).
    On,
    /// Never: unprivileged pods, TCG only.
    Off,
}

/// Migrate VMware, Hyper-V and libvirt virtual machines onto KVM.
///
/// A VM is described by an Artifact Manifest v1 (JSON or YAML): its disks, and the pipeline
/// (inspect, fix, convert, validate) to run on them, usually through a profile.
#[derive(Debug, Parser)]
#[command(
    name = "hyper2kvm",
    version,
    disable_version_flag = true,
    about,
    after_help = "Examples:\n  hyper2kvm --manifest vm.yaml\n  hyper2kvm --config site.yaml --config vm.json --output-dir /var/lib/libvirt/images\n  hyper2kvm --manifest vm.yaml --dry-run\n  hyper2kvm --manifest vm.yaml --dump-config\n  hyper2kvm --batch-manifest datacenter.json --batch-parallel 8\n  hyper2kvm --batch-manifest datacenter.json --batch-shard 2/8\n  hyper2kvm --libvirt-xml web01.xml --output-dir /srv/migrate/web01\n  hyper2kvm --ova web01.ova --output-dir /srv/migrate/web01\n  hyper2kvm --print-schema manifest > manifest.schema.json\n\nExit codes: 0 success, 1 the VM failed, 2 invalid input or usage, 3 some VMs of a batch failed, 4 a required tool is missing, 130 interrupted (see docs/exit-codes.md)."
)]
pub struct Cli {
    /// Print the version (--version: also the commit it was built from and the tools found on
    /// PATH).
    #[arg(short = 'V', long, action = ArgAction::Version)]
    version: Option<bool>,

    /// Print the JSON Schema (draft 2020-12) of a file hyper2kvm reads or writes, and exit.
    ///
    /// docs/schemas.md shows how to validate a file with one.
    #[arg(long, value_enum, value_name = "NAME", exclusive = true)]
    pub print_schema: Option<Schema>,

    /// Configuration or manifest file (JSON or YAML); repeatable, later files win. A file that
    /// holds `manifest_version` is a manifest.
    #[arg(long, value_name = "FILE", action = ArgAction::Append, help_heading = SINGLE)]
    pub config: Vec<PathBuf>,

    /// Artifact Manifest v1 file (JSON or YAML) describing one VM.
    #[arg(long, value_name = "FILE", help_heading = SINGLE)]
    pub manifest: Option<PathBuf>,

    /// Batch Manifest v1 (JSON or YAML): convert many VMs in parallel with per-VM isolation.
    #[arg(long, value_name = "FILE", conflicts_with = "manifest", help_heading = BATCH)]
    pub batch_manifest: Option<PathBuf>,

    /// Number of VMs converted at once (overrides batch_metadata.parallel_limit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..), help_heading = BATCH)]
    pub batch_parallel: Option<u16>,

    /// Keep converting the other VMs after one fails (overrides the batch manifest).
    #[arg(long, overrides_with = "no_batch_continue_on_error", help_heading = BATCH)]
    pub batch_continue_on_error: bool,

    /// Stop starting VMs after the first failure (overrides the batch manifest).
    #[arg(long, overrides_with = "batch_continue_on_error", help_heading = BATCH)]
    pub no_batch_continue_on_error: bool,

    /// Resume a batch from its checkpoint: VMs whose outputs are complete are not converted
    /// again; failed, interrupted and never-started VMs run.
    #[arg(long, help_heading = BATCH)]
    pub batch_resume: bool,

    /// Run only shard I of N of the batch (I from 0 to N-1), or env/N to take I from
    /// $JOB_COMPLETION_INDEX (what a Kubernetes Indexed Job sets in each pod).
    ///
    /// Each VM belongs to exactly one shard, chosen from its id and bounded by the bytes to copy
    /// (--dry-run prints the assignment). A shard writes its reports and checkpoint under
    /// <report dir>/shards/shard-I-of-N/ and resumes on its own; --batch-merge joins them.
    #[arg(long, value_name = "I/N", requires = "batch_manifest", help_heading = SCALE_OUT)]
    pub batch_shard: Option<String>,

    /// Merge the shard reports found under each DIR (searched recursively) into one
    /// batch_report.json, batch_summary.txt and batch_report.html, written to --output-dir
    /// (else the first DIR); says which shards are missing or failed. Merging again gives the
    /// same files.
    #[arg(long, value_name = "DIR", num_args = 1.., help_heading = SCALE_OUT,
          conflicts_with_all = ["batch_manifest", "manifest", "config", "batch_shard", "dry_run"])]
    pub batch_merge: Vec<PathBuf>,

    /// Print a Kubernetes Indexed Job (batch/v1, YAML) that runs the batch as N shards, one
    /// pod per shard index, and exit.
    #[arg(long, value_name = "N", requires = "batch_manifest", conflicts_with = "batch_shard",
          value_parser = clap::value_parser!(u16).range(1..), help_heading = SCALE_OUT)]
    pub batch_k8s_job: Option<u16>,

    /// With --batch-k8s-job: the container image that holds hyper2kvm, libguestfs and qemu
    /// (docs/scale-out.md shows how to build it).
    #[arg(long, value_name = "IMAGE", requires = "batch_k8s_job", help_heading = SCALE_OUT)]
    pub k8s_image: Option<String>,

    /// With --batch-k8s-job: how many shard pods run at once [default: N].
    #[arg(long, value_name = "P", requires = "batch_k8s_job",
          value_parser = clap::value_parser!(u16).range(1..), help_heading = SCALE_OUT)]
    pub k8s_parallelism: Option<u16>,

    /// With --batch-k8s-job: the PersistentVolumeClaim that holds the batch file, its manifests
    /// and the source disks, mounted read-only where they are on this host
    /// [default: hyper2kvm-sources].
    #[arg(long, value_name = "CLAIM", requires = "batch_k8s_job", help_heading = SCALE_OUT)]
    pub k8s_sources_claim: Option<String>,

    /// With --batch-k8s-job: the PersistentVolumeClaim for the outputs and reports, mounted at
    /// the batch's output directory [default: hyper2kvm-outputs].
    #[arg(long, value_name = "CLAIM", requires = "batch_k8s_job", help_heading = SCALE_OUT)]
    pub k8s_outputs_claim: Option<String>,

    /// With --batch-k8s-job: give the pods /dev/kvm (a privileged container) [default: auto,
    /// when this host has /dev/kvm]. The tool in each pod still probes that KVM works and
    /// falls back to TCG.
    #[arg(long, value_enum, value_name = "WHEN", requires = "batch_k8s_job", help_heading = SCALE_OUT)]
    pub k8s_kvm: Option<KvmChoice>,

    /// Directory for converted disks and the report (overrides the manifest's output.directory).
    /// In batch mode it replaces shared_config.output_directory: batch reports go to DIR and each
    /// VM writes under <DIR>/<vm id>/ unless its own manifest sets output.directory.
    #[arg(long, value_name = "DIR", help_heading = OUTPUT)]
    pub output_dir: Option<PathBuf>,

    /// Print the fully resolved configuration (profile, overrides and defaults applied) as JSON
    /// and exit.
    #[arg(long, help_heading = SINGLE)]
    pub dump_config: bool,

    /// Plan and print what would run; start nothing (no libguestfs appliance, no qemu-system)
    /// and write nothing.
    #[arg(long, help_heading = SAFETY)]
    pub dry_run: bool,

    /// With --dry-run on one manifest with pipeline.fix on: read the guest (read-only, in the
    /// libguestfs appliance) and print the repairs a run would make.
    #[arg(long, help_heading = SINGLE)]
    pub preview_guest: bool,

    /// Consent to repairing the source disks themselves, which pipeline.fix does when
    /// pipeline.convert is off (as pipeline.fix.allow_in_place: true). Each disk is first
    /// copied whole to <output dir>/backups/.
    #[arg(long, help_heading = SAFETY)]
    pub allow_in_place: bool,

    /// With in-place repairs, make no whole-disk backup first (as pipeline.fix.disk_backup:
    /// false).
    #[arg(long, help_heading = SAFETY)]
    pub no_disk_backup: bool,

    /// Replace output files that already exist (otherwise an existing output is an error),
    /// and, with libvirt_integration, another VM's domain of the same name or UUID.
    #[arg(long, help_heading = OUTPUT)]
    pub overwrite: bool,

    /// The libvirt host libvirt_integration defines the VM on (a libvirt URI, e.g.
    /// qemu:///system); beats the manifest's libvirt_integration.uri.
    #[arg(long, value_name = "URI", help_heading = OUTPUT)]
    pub connect: Option<String>,

    /// Progress display: live bars on a terminal, timestamped lines otherwise, or a JSON event
    /// stream on stdout (json).
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto, value_name = "MODE", help_heading = LOGGING)]
    pub progress: ProgressMode,

    /// Log lines as text, or as one JSON object per line (stderr and --log-file).
    #[arg(long, value_enum, value_name = "FORMAT", help_heading = LOGGING)]
    pub log_format: Option<LogFormat>,

    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = ArgAction::Count, help_heading = LOGGING)]
    pub verbose: u8,

    /// No progress display and only errors on stderr; nothing at all for a success.
    ///
    /// For scripts and cron. A VM, batch or import that succeeds prints nothing (the exit code
    /// and the report say how it went; a log file keeps its level); a failure still prints its
    /// summary on stdout. What was asked for (--dry-run, --dump-config) prints as usual.
    #[arg(short, long, conflicts_with_all = ["verbose", "progress"], help_heading = LOGGING)]
    pub quiet: bool,

    /// Also write the log to this file (appended).
    #[arg(long, value_name = "PATH", help_heading = LOGGING)]
    pub log_file: Option<PathBuf>,

    /// Import a libvirt domain XML (as written by `virsh dumpxml`): write a manifest for it into
    /// --output-dir instead of converting anything.
    #[arg(long, value_name = "FILE", visible_alias = "xml-path", help_heading = IMPORT)]
    pub libvirt_xml: Option<PathBuf>,

    /// Import a VMware OVA (a tar of an OVF descriptor, its .mf digests and disks), read in
    /// place: verify its digests and write a manifest into --output-dir.
    #[arg(long, value_name = "FILE", help_heading = IMPORT,
          conflicts_with_all = ["libvirt_xml", "ovf", "vmx"])]
    pub ova: Option<PathBuf>,

    /// Import an unpacked OVF export (the .ovf, with its .mf and disks beside it): write a
    /// manifest into --output-dir.
    #[arg(long, value_name = "FILE", help_heading = IMPORT,
          conflicts_with_all = ["libvirt_xml", "vmx"])]
    pub ovf: Option<PathBuf>,

    /// Import a VMware VM folder by its .vmx file (descriptor VMDKs and their extents beside
    /// it): write a manifest into --output-dir.
    #[arg(long, value_name = "FILE", help_heading = IMPORT, conflicts_with = "libvirt_xml")]
    pub vmx: Option<PathBuf>,

    /// Import a Hyper-V Export-VM folder (Virtual Machines/ with the XML configuration,
    /// Virtual Hard Disks/ with the VHDX files), or its configuration .xml: write a manifest
    /// into --output-dir.
    #[arg(long, value_name = "DIR", help_heading = IMPORT,
          conflicts_with_all = ["libvirt_xml", "ova", "ovf", "vmx"])]
    pub hyperv: Option<PathBuf>,

    /// With --ova, --ovf, --vmx or --hyperv: run the manifest right after writing it, in one
    /// step.
    ///
    /// The run is what `hyper2kvm --config FILE... --manifest DIR/manifest.json` would do: the
    /// --config files are the layer below the manifest, so a profile they name decides the
    /// pipeline (the import then writes none of its own), and --dry-run shows the plan.
    #[arg(long, help_heading = IMPORT)]
    pub run: bool,

    /// File name of the manifest an import (--libvirt-xml, --ova, --ovf, --vmx, --hyperv) writes
    /// [default: manifest.json].
    #[arg(long, value_name = "NAME", help_heading = IMPORT)]
    pub manifest_filename: Option<String>,

    /// With an import, record each disk's SHA-256 in the manifest (the default).
    #[arg(long, overrides_with = "no_compute_checksums", help_heading = IMPORT)]
    pub compute_checksums: bool,

    /// With an import, skip the checksums (the manifest then has no checksum keys; an OVA's
    /// .mf digests are still verified).
    #[arg(long, overrides_with = "compute_checksums", help_heading = IMPORT)]
    pub no_compute_checksums: bool,
}

impl Cli {
    /// The export an import option names (`--ova`, `--ovf`, `--vmx`, `--hyperv`), if any.
    pub fn export_source(&self) -> Option<(crate::exports::ExportKind, PathBuf)> {
        use crate::exports::ExportKind;
        [
            (ExportKind::Ova, &self.ova),
            (ExportKind::Ovf, &self.ovf),
            (ExportKind::Vmx, &self.vmx),
            (ExportKind::HyperV, &self.hyperv),
        ]
        .into_iter()
        .find_map(|(kind, path)| path.clone().map(|p| (kind, p)))
    }
}

/// Parses the command line as `Cli::parse` does (exiting after `--help`, `--version` or a usage
/// error). `-V` prints the version; `--version` also the commit the binary was built from and
/// the tools found on PATH, which runs each of them, so that text is made only when
/// `--version` is on the command line.
pub fn parse() -> Cli {
    let mut cmd = Cli::command();
    if std::env::args_os().skip(1).any(|a| a == "--version") {
        cmd = cmd.long_version(long_version(&inventory::survey()));
    }
    let mut matches = cmd.get_matches();
    Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit())
}

/// What `--version` prints after the program's name.
fn long_version(found: &[inventory::Found]) -> &'static str {
    let text = format!(
        "{}\ncommit {}\n{}",
        env!("CARGO_PKG_VERSION"),
        env!("HYPER2KVM_GIT_COMMIT"),
        inventory::render(found)
    );
    // clap keeps the text for the life of the process, which ends right after printing it.
    Box::leak(text.trim_end().to_owned().into_boxed_str())
}
