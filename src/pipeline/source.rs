//! What qemu-img says about a source disk: its format (probed, and reconciled with the
//! manifest's `source_format`), its size and backing file, and (when asked) whether
//! `qemu-img check` finds it sound. Learnt once per disk and shared by inspect, fix, convert
//! and validate.

use std::path::Path;

use super::{Run, StageFailure};
use crate::exec;
use crate::manifest::SourceFormat;
use crate::plan::DiskPlan;
use crate::stage::Stage;
use crate::tools::qemu_img::{self, Aio, CheckSummary, CheckVerdict, ImageInfo};

/// What we learnt about a source disk from qemu-img.
#[derive(Clone, Debug)]
pub(super) struct SourceFacts {
    pub driver: String,
    pub info: ImageInfo,
    pub checked: bool,
}

impl Run<'_> {
    /// Probes the format, reads size and backing file, and (when asked) checks the source.
    pub(super) fn source_facts(
        &mut self,
        idx: usize,
        check: bool,
    ) -> Result<SourceFacts, StageFailure> {
        if let Some(f) = &self.facts[idx]
            && (f.checked || !check)
        {
            return Ok(f.clone());
        }
        let disk = &self.plan.disks[idx];
        let q = self.plan.qemu_img.clone();
        let (driver, info) = match self.facts[idx].take() {
            Some(f) => (f.driver, f.info),
            None => {
                let out = self.probe_source(disk)?;
                if !out.record.success() {
                    return Err(StageFailure::new(format!(
                        "disk {}: qemu-img cannot open {}: {}",
                        disk.id,
                        disk.shown(),
                        out.record.stderr_tail.trim()
                    )));
                }
                let probed = ImageInfo::parse(&out.stdout)
                    .map_err(|e| StageFailure::new(format!("disk {}: {e}", disk.id)))?;
                let driver = self.resolve_driver(disk, &probed.format)?;
                if driver == probed.format {
                    (driver, probed)
                } else {
                    // The probe guessed wrong (fixed VHD): read the image as what it is.
                    let info = self.info_as(disk, &driver)?;
                    (driver, info)
                }
            }
        };
        if info.encrypted {
            return Err(StageFailure::new(format!(
                "disk {}: {} is an encrypted {} image (qemu-img info: encrypted); hyper2kvm does \
                 not take secrets and cannot read it: decrypt it first (qemu-img convert with \
                 --object secret,...) and point the manifest at the decrypted copy",
                disk.id,
                disk.shown(),
                info.format
            )));
        }
        match (&info.backing_filename, disk.backing_chain.is_empty()) {
            (None, true) => {}
            (Some(backing), true) => {
                return Err(StageFailure::new(format!(
                    "disk {}: {} has a backing file ({backing}) and the manifest declares no \
                     backing_chain; {}. A chain that is meant to be read as it is (a VMware \
                     snapshot's delta on its parents) is declared in disks[].backing_chain, \
                     nearest parent first, as hyper2kvm --vmx writes it: the current state is \
                     then converted through those files",
                    disk.id,
                    disk.shown(),
                    qemu_img::flatten_advice(&disk.source, &driver)
                )));
            }
            (None, false) => {
                return Err(StageFailure::new(format!(
                    "disk {}: the manifest's backing_chain lists {}, but qemu-img reports no \
                     backing file for {}: it is not the top of that chain (is local_path the \
                     base or a copy?); point local_path at the chain's newest file, or leave \
                     backing_chain out for a standalone image",
                    disk.id,
                    shown_paths(disk.backing_chain.iter().map(|(p, _)| p.as_path())),
                    disk.shown()
                )));
            }
            (Some(_), false) => self.check_chain(disk, &driver)?,
        }
        let mut checked = false;
        let format = SourceFormat::from_driver(&driver);
        if check && format.is_some_and(SourceFormat::checkable) {
            let out = self.exec(&q.check_cmd(disk.image(), &driver), None)?;
            let summary: CheckSummary = serde_json::from_slice(&out.stdout).unwrap_or_default();
            match CheckVerdict::from_exit_code(out.record.exit_code()) {
                CheckVerdict::Clean | CheckVerdict::Unsupported => {}
                CheckVerdict::LeaksOnly => self.warn(
                    Stage::Inspect,
                    format!(
                        "disk {}: qemu-img check found {} leaked cluster(s) in the source; they \
                         waste space but lose no data",
                        disk.id, summary.leaks
                    ),
                ),
                CheckVerdict::Corrupt => {
                    return Err(StageFailure::new(format!(
                        "disk {}: source {} is corrupt (qemu-img check: {} corruption(s)); \
                         refusing to convert it",
                        disk.id,
                        disk.shown(),
                        summary.corruptions
                    )));
                }
                CheckVerdict::Failed => {
                    return Err(StageFailure::new(format!(
                        "disk {}: source {} failed qemu-img check (truncated or damaged image, \
                         which would convert with missing data read as zeros): {}",
                        disk.id,
                        disk.shown(),
                        out.record.stderr_tail.trim()
                    )));
                }
            }
            checked = true;
        }
        let facts = SourceFacts {
            driver,
            info,
            checked,
        };
        self.facts[idx] = Some(facts.clone());
        Ok(facts)
    }

    /// Checks that a source is still the file that was pinned when the run was planned (same
    /// device and inode, size and mtime); `when` says at which point, for the message. A source
    /// that changed (truncated or rewritten by a hook, replaced) fails the VM: what was converted
    /// or compared is then not what the manifest named.
    pub(super) fn check_pinned(&self, idx: usize, when: &str) -> Result<(), StageFailure> {
        let disk = &self.plan.disks[idx];
        let files = std::iter::once((&disk.given_path, &disk.pinned, disk.allow_block_device))
            .chain(disk.backing_chain.iter().map(|(p, pin)| (p, pin, false)));
        for (n, (path, pinned, allow_block)) in files.enumerate() {
            let Some(pinned) = pinned else {
                continue;
            };
            let changes = match crate::files::source_identity(path, allow_block) {
                Ok(now) => pinned.changes(&now),
                Err(e) => vec![format!("it {e}")],
            };
            if changes.is_empty() {
                continue;
            }
            let what = if n == 0 {
                "source".to_owned()
            } else {
                format!("backing file {n} of the source (backing_chain[{}])", n - 1)
            };
            return Err(StageFailure::new(format!(
                "disk {}: {what} {} changed {when}: {}; it was pinned when the run was \
                 planned, and a changed source makes the result unreliable",
                disk.id,
                path.display(),
                changes.join(", ")
            )));
        }
        Ok(())
    }

    /// A source with a backing file and a declared `backing_chain`: the chain qemu-img follows
    /// (`info --backing-chain`) must be exactly the declared files, in order, and none of its
    /// images may be encrypted. Convert, compare and the guest tools then read the current
    /// state through the same files.
    fn check_chain(&mut self, disk: &DiskPlan, driver: &str) -> Result<(), StageFailure> {
        let out = self.exec(&self.plan.qemu_img.chain_cmd(disk.image(), driver), None)?;
        if !out.record.success() {
            return Err(StageFailure::new(format!(
                "disk {}: qemu-img cannot follow the backing chain of {}: {}",
                disk.id,
                disk.shown(),
                out.record.stderr_tail.trim()
            )));
        }
        let chain = ImageInfo::parse_chain(&out.stdout)
            .map_err(|e| StageFailure::new(format!("disk {}: {e}", disk.id)))?;
        if let Some(enc) = chain.iter().find(|i| i.encrypted) {
            return Err(StageFailure::new(format!(
                "disk {}: {} in the backing chain of {} is an encrypted {} image; hyper2kvm \
                 does not take secrets and cannot read it: flatten and decrypt the chain first \
                 (qemu-img convert from its top, with --object secret,...)",
                disk.id,
                enc.filename.as_deref().unwrap_or("an image"),
                disk.shown(),
                enc.format
            )));
        }
        let declared: Vec<&Path> = disk
            .backing_chain
            .iter()
            .map(|(p, _)| p.as_path())
            .collect();
        chain_matches(&chain[1..], &declared).map_err(|reported| {
            StageFailure::new(format!(
                "disk {}: qemu-img reads {} through {}, but the manifest's backing_chain is {}; \
                 the chain is not the one the manifest was written for, and converting it \
                 would not give the state it describes: import the VM again, or correct \
                 backing_chain (nearest parent first)",
                disk.id,
                disk.shown(),
                reported,
                shown_paths(declared.iter().copied())
            ))
        })
    }

    /// Checks every source with [`Run::check_pinned`].
    pub(super) fn check_all_pinned(&self, when: &str) -> Result<(), StageFailure> {
        (0..self.plan.disks.len()).try_for_each(|idx| self.check_pinned(idx, when))
    }

    /// The format probe. For a file that may be read through io_uring it tries io_uring first
    /// (while io_uring is not known to fail), which settles whether it works; when that probe
    /// fails the plain one decides: if it succeeds, io_uring was what failed.
    fn probe_source(&mut self, disk: &DiskPlan) -> Result<exec::Output, StageFailure> {
        let q = self.plan.qemu_img.clone();
        let candidate =
            self.io_uring != Some(false) && Aio::for_file(true, &disk.source) == Aio::IoUring;
        if candidate {
            let out = self.exec(&q.probe_cmd(disk.image(), Aio::IoUring), None)?;
            if out.record.success() {
                self.io_uring = Some(true);
                return Ok(out);
            }
            // A probe stopped at its time limit says nothing about io_uring; one wait is enough.
            if out.record.status == exec::Status::TimedOut {
                return Ok(out);
            }
        }
        let out = self.exec(&q.probe_cmd(disk.image(), Aio::Threads), None)?;
        if candidate && out.record.success() {
            self.io_uring = Some(false);
        }
        Ok(out)
    }

    /// How qemu-img should read `image`: through io_uring when a probe showed it works and the
    /// file's size allows it.
    pub(super) fn aio(&self, image: &Path) -> Aio {
        Aio::for_file(self.io_uring == Some(true), image)
    }

    /// `qemu-img info -f <driver>`.
    fn info_as(&mut self, disk: &DiskPlan, driver: &str) -> Result<ImageInfo, StageFailure> {
        let out = self.exec(&self.plan.qemu_img.info_cmd(disk.image(), driver), None)?;
        if !out.record.success() {
            return Err(StageFailure::new(format!(
                "disk {}: qemu-img cannot read {} as {}: {}",
                disk.id,
                disk.shown(),
                driver,
                out.record.stderr_tail.trim()
            )));
        }
        ImageInfo::parse(&out.stdout)
            .map_err(|e| StageFailure::new(format!("disk {}: {e}", disk.id)))
    }

    /// Reconciles the probed format with the manifest's `source_format`.
    fn resolve_driver(&mut self, disk: &DiskPlan, probed: &str) -> Result<String, StageFailure> {
        let declared = disk.declared.driver();
        if probed == declared {
            return Ok(probed.to_owned());
        }
        if probed == "raw"
            && disk.declared == SourceFormat::Vhd
            && disk.member.is_none()
            && qemu_img::has_vhd_footer(&disk.source)
        {
            // A fixed VHD: raw data plus a 512-byte footer that qemu-img probes as raw.
            return Ok(declared.to_owned());
        }
        if probed == "raw"
            && disk.declared == SourceFormat::Vmdk
            && disk.source.to_string_lossy().ends_with("-flat.vmdk")
        {
            self.warn(
                Stage::Inspect,
                format!(
                    "disk {}: {} is a flat VMDK extent without its descriptor; converting it as \
                     raw data",
                    disk.id,
                    disk.shown()
                ),
            );
            return Ok("raw".to_owned());
        }
        let detected = SourceFormat::from_driver(probed)
            .map(|f| f.name().to_owned())
            .unwrap_or_else(|| probed.to_owned());
        Err(StageFailure::new(format!(
            "disk {}: source_format is {} but qemu-img detects {} in {}; fix source_format in \
             the manifest",
            disk.id,
            disk.declared,
            detected,
            disk.shown()
        )))
    }
}

/// Paths as messages list them: `[a, b]`.
fn shown_paths<'a>(paths: impl Iterator<Item = &'a Path>) -> String {
    let shown: Vec<String> = paths.map(|p| p.display().to_string()).collect();
    format!("[{}]", shown.join(", "))
}

/// Whether the backing files qemu-img reports (below the top, nearest first) are the declared
/// ones, file by file (as canonical paths) and as many; `Err` holds the reported list for the
/// message.
fn chain_matches(reported: &[ImageInfo], declared: &[&Path]) -> Result<(), String> {
    let canonical = |p: &Path| std::fs::canonicalize(p).ok();
    let same = reported.len() == declared.len()
        && reported.iter().zip(declared).all(|(r, d)| {
            let r = r.filename.as_deref().map(Path::new).and_then(canonical);
            r.is_some() && r == canonical(d)
        });
    if same {
        return Ok(());
    }
    let shown: Vec<&str> = reported
        .iter()
        .map(|r| r.filename.as_deref().unwrap_or("?"))
        .collect();
    Err(format!("[{}]", shown.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(filename: &Path) -> ImageInfo {
        ImageInfo::parse(
            serde_json::json!({"format": "vmdk", "virtual-size": 1, "filename": filename})
                .to_string()
                .as_bytes(),
        )
        .expect("info")
    }

    #[test]
    fn a_chain_matches_only_the_same_files_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.vmdk"), dir.path().join("b.vmdk"));
        std::fs::write(&a, b"a").expect("write");
        std::fs::write(&b, b"b").expect("write");
        let dotted = dir.path().join(".").join("a.vmdk");
        let reported = [info(&dotted), info(&b)];
        assert_eq!(chain_matches(&reported, &[&a, &b]), Ok(()));
        let listed = format!("[{}, {}]", dotted.display(), b.display());
        assert_eq!(chain_matches(&reported, &[&b, &a]), Err(listed.clone()));
        assert_eq!(chain_matches(&reported, &[&a]), Err(listed.clone()));
        assert_eq!(chain_matches(&reported, &[&a, &b, &a]), Err(listed));
        let gone = dir.path().join("gone.vmdk");
        assert!(chain_matches(&[info(&gone)], &[&gone]).is_err());
    }
}
