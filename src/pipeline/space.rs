//! The free-space check of load_manifest: before the first byte is copied, every filesystem
//! that receives outputs must have room for all of them.
//!
//! Each disk's output is measured with `qemu-img measure` (the source read as its probed format,
//! the target asked as [`crate::plan::ConvertPlan::measure_target`] says), the outputs are
//! grouped by the filesystem (`st_dev`) of the directory they go into, and each group's sum is
//! compared with what `statvfs` says an unprivileged writer may still use there (`f_bavail *
//! f_frsize`). A batch shares one [`SpaceLedger`]: a VM that passed the check promises its bytes
//! to its filesystem until it finishes, so VMs converting at the same time to the same
//! filesystem add up; what a promised VM has already written is on the filesystem (and out of
//! its free space), so only the rest of its promise counts.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::{Run, StageFailure};
use crate::outcome::stages::OutputSpace;
use crate::tools::qemu_img::Measure;
use crate::units::{exact_bytes, human_bytes};

/// The bytes VMs running now were promised on each filesystem: one per run (a single VM has one
/// of its own; a batch shares one among its workers).
#[derive(Debug, Default)]
pub struct SpaceLedger {
    promises: Mutex<Vec<Promise>>,
}

#[derive(Clone, Debug)]
struct Promise {
    vm: String,
    dev: u64,
    bytes: u64,
    /// The files that take the space as they are written: each `.part` file, and each output
    /// name that did not exist at the check (an output replaced with `--overwrite` already
    /// held its old bytes, which say nothing about the new ones).
    files: Vec<PathBuf>,
}

impl Promise {
    /// What the VM has still to write: its promise less what its files already hold.
    fn outstanding(&self) -> u64 {
        let written: u64 = self
            .files
            .iter()
            .filter_map(|f| std::fs::symlink_metadata(f).ok())
            .map(|m| m.blocks().saturating_mul(512))
            .sum();
        self.bytes.saturating_sub(written)
    }
}

impl SpaceLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends a VM's promises (it finished: what it wrote is on the filesystem now).
    pub(super) fn release(&self, vm: &str) {
        self.promises
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|p| p.vm != vm);
    }
}

/// This VM's outputs on one filesystem.
#[derive(Debug, Default)]
struct Group {
    /// An existing directory on the filesystem (the nearest existing one of the first output's
    /// directory, which convert may still have to create).
    probe: PathBuf,
    directories: BTreeSet<PathBuf>,
    disks: Vec<String>,
    bytes: u64,
    files: Vec<PathBuf>,
}

/// Measures every output and checks, per filesystem, that it fits. Nothing is measured when
/// nothing is converted.
pub(super) fn check(run: &mut Run<'_>) -> Result<Vec<OutputSpace>, StageFailure> {
    let plan = run.plan;
    let Some(convert) = &plan.convert else {
        return Ok(Vec::new());
    };
    let target = convert.measure_target();
    let mut groups: BTreeMap<u64, Group> = BTreeMap::new();
    for idx in 0..plan.disks.len() {
        let Some(output) = plan.disks[idx].output.clone() else {
            continue;
        };
        let facts = run.source_facts(idx, false)?;
        let disk = &plan.disks[idx];
        let cmd = plan.qemu_img.measure_cmd(
            disk.image(),
            &facts.driver,
            target.format,
            target.options.as_deref(),
        );
        let out = run.exec(&cmd, None)?;
        if !out.record.success() {
            return Err(StageFailure::new(format!(
                "disk {}: qemu-img cannot measure the output {} would take: {}",
                disk.id,
                disk.shown(),
                out.record
            )));
        }
        let measured = Measure::parse(&out.stdout)
            .map_err(|e| StageFailure::new(format!("disk {}: {e}", disk.id)))?;
        let dir = output.parent().unwrap_or(Path::new("/")).to_owned();
        let probe = nearest_existing_dir(&dir).ok_or_else(|| {
            StageFailure::new(format!(
                "disk {}: no directory on the way to {} exists",
                disk.id,
                dir.display()
            ))
        })?;
        let dev = std::fs::metadata(&probe)
            .map_err(|e| StageFailure::new(format!("cannot read {}: {e}", probe.display())))?
            .dev();
        let group = groups.entry(dev).or_insert_with(|| Group {
            probe: probe.clone(),
            ..Group::default()
        });
        group.directories.insert(dir);
        group.disks.push(disk.id.clone());
        group.bytes = group.bytes.saturating_add(measured.required);
        if let Some(part) = disk.part_path() {
            group.files.push(part);
        }
        if !output.exists() {
            group.files.push(output);
        }
    }

    // Free space and the others' promises are read together, and this VM's promise is made
    // before the next VM may look.
    let mut promises = run
        .space
        .promises
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut checked = Vec::new();
    let mut short = Vec::new();
    for (&dev, g) in &groups {
        let free = free_bytes(&g.probe).map_err(|e| {
            StageFailure::new(format!(
                "cannot read the free space of {}: {e}",
                g.probe.display()
            ))
        })?;
        let others: Vec<&Promise> = promises
            .iter()
            .filter(|p| p.dev == dev && p.vm != plan.vm_id)
            .collect();
        let promised: u64 = others.iter().map(|p| p.outstanding()).sum();
        let mut promised_to: Vec<&str> = others.iter().map(|p| p.vm.as_str()).collect();
        promised_to.dedup();
        let space = OutputSpace {
            filesystem: mount_point(&g.probe),
            directories: g.directories.iter().cloned().collect(),
            disks: g.disks.clone(),
            required_bytes: g.bytes,
            free_bytes: free,
            promised_bytes: promised,
        };
        if g.bytes > free.saturating_sub(promised) {
            short.push(shortfall(&plan.vm_id, &space, &promised_to));
        }
        checked.push(space);
    }
    if !short.is_empty() {
        return Err(StageFailure::new(short.join("; and ")));
    }
    promises.extend(groups.into_iter().map(|(dev, g)| Promise {
        vm: plan.vm_id.clone(),
        dev,
        bytes: g.bytes,
        files: g.files,
    }));
    Ok(checked)
}

/// What an unprivileged writer may still use on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> nix::Result<u64> {
    let s = nix::sys::statvfs::statvfs(dir)?;
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    let (avail, frsize) = (
        u64::from(s.blocks_available()),
        u64::from(s.fragment_size()),
    );
    Ok(avail.saturating_mul(frsize))
}

/// `dir`, or its nearest ancestor that exists as a directory.
fn nearest_existing_dir(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| std::fs::metadata(d).is_ok_and(|m| m.is_dir()))
        .map(Path::to_owned)
}

/// The top of the filesystem holding `dir`: its highest ancestor on the same device, named
/// for the message (`/srv` for `/srv/out`).
fn mount_point(dir: &Path) -> PathBuf {
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let dev = |p: &Path| std::fs::metadata(p).ok().map(|m| m.dev());
    let Some(own) = dev(&real) else {
        return real;
    };
    let mut top = real.as_path();
    while let Some(parent) = top.parent() {
        if dev(parent) != Some(own) {
            break;
        }
        top = parent;
    }
    top.to_owned()
}

/// The refusal for one filesystem.
fn shortfall(vm: &str, space: &OutputSpace, promised_to: &[&str]) -> String {
    let dirs: Vec<String> = space
        .directories
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let disks = match space.disks.as_slice() {
        [one] => format!("disk {one}"),
        many => format!("disks {}", many.join(", ")),
    };
    let mut text = format!(
        "not enough space for {vm}'s output in {} (filesystem {}): needs {} for {disks}; {} free",
        dirs.join(", "),
        space.filesystem.display(),
        sized(space.required_bytes),
        sized(space.free_bytes),
    );
    if space.promised_bytes > 0 {
        text.push_str(&format!(
            ", of which {} is still to be written by {}, converting to the same filesystem now",
            sized(space.promised_bytes),
            promised_to.join(", ")
        ));
    }
    text.push_str(
        "; nothing was written: free some space there, or write the outputs elsewhere \
         (output.directory or --output-dir)",
    );
    text
}

/// `64.0 MiB (67,108,864 bytes)`.
fn sized(n: u64) -> String {
    format!("{} ({} bytes)", human_bytes(n), exact_bytes(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(disks: &[&str], required: u64, free: u64, promised: u64) -> OutputSpace {
        OutputSpace {
            filesystem: PathBuf::from("/srv"),
            directories: vec![PathBuf::from("/srv/out")],
            disks: disks.iter().map(|d| (*d).to_owned()).collect(),
            required_bytes: required,
            free_bytes: free,
            promised_bytes: promised,
        }
    }

    #[test]
    fn shortfall_names_bytes_filesystem_and_disks() {
        let mib = 1024 * 1024;
        insta::assert_snapshot!(
            shortfall("web01", &space(&["root", "data"], 64 * mib, 20 * mib, 0), &[]),
            @"not enough space for web01's output in /srv/out (filesystem /srv): needs 64.0 MiB (67,108,864 bytes) for disks root, data; 20.0 MiB (20,971,520 bytes) free; nothing was written: free some space there, or write the outputs elsewhere (output.directory or --output-dir)"
        );
        insta::assert_snapshot!(
            shortfall("web02", &space(&["root"], 12 * mib, 20 * mib, 12 * mib), &["web01"]),
            @"not enough space for web02's output in /srv/out (filesystem /srv): needs 12.0 MiB (12,582,912 bytes) for disk root; 20.0 MiB (20,971,520 bytes) free, of which 12.0 MiB (12,582,912 bytes) is still to be written by web01, converting to the same filesystem now; nothing was written: free some space there, or write the outputs elsewhere (output.directory or --output-dir)"
        );
    }

    #[test]
    fn a_promise_counts_what_is_not_written_yet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("d0.qcow2.part");
        let p = Promise {
            vm: "web01".to_owned(),
            dev: 0,
            bytes: 1 << 20,
            files: vec![part.clone(), dir.path().join("d0.qcow2")],
        };
        assert_eq!(p.outstanding(), 1 << 20, "nothing written yet");
        std::fs::write(&part, vec![1u8; 256 * 1024]).expect("write");
        let left = p.outstanding();
        assert!(left <= (1 << 20) - 256 * 1024, "{left}");
        std::fs::write(&part, vec![1u8; 2 << 20]).expect("write");
        assert_eq!(p.outstanding(), 0, "written past the promise");
    }

    #[test]
    fn the_filesystem_of_a_directory_not_made_yet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let later = dir.path().join("out/web01");
        assert_eq!(
            nearest_existing_dir(&later).as_deref(),
            Some(dir.path()),
            "the nearest directory that exists"
        );
        let real = dir.path().canonicalize().expect("canonicalize");
        assert!(real.starts_with(mount_point(dir.path())));
    }
}
