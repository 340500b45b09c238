//! convert: each source (or its repair overlay) into the output format with qemu-img, written
//! to `<output>.part` and published under its final name only once it is whole, flushed, the
//! source's checksum (when verified alongside) is known to match, and the source is still the
//! file pinned at planning. The `.part` file is created here first, new, 0600 and never through
//! a symlink, and qemu-img writes into it; directories made for outputs are 0700.

use std::path::Path;

use super::{Run, StageFailure};
use crate::atomic;
use crate::events::{Activity, Event};
use crate::exec::{self, CommandRecord};
use crate::files;
use crate::manifest::SourceFormat;
use crate::outcome::stages::{ConvertResult, ConvertedDisk};
use crate::outcome::{Artifact, ArtifactKind};
use crate::tools::qemu_img::{self, Image};
use crate::units::human_bytes;

pub(super) fn run(run: &mut Run<'_>) -> Result<ConvertResult, StageFailure> {
    let plan = run.plan;
    let convert = plan.convert.as_ref().expect("stage runs only when planned");
    files::create_private_dir_all(&plan.output_dir).map_err(|e| {
        StageFailure::new(format!(
            "cannot create output directory {}: {e}",
            plan.output_dir.display()
        ))
    })?;
    let mut converted = Vec::new();
    for idx in 0..plan.disks.len() {
        let facts = run.source_facts(idx, convert.check_source)?;
        let disk = &plan.disks[idx];
        let (Some(output), Some(part)) = (disk.output.clone(), disk.part_path()) else {
            continue;
        };
        // storage_mapping.disk_mappings may place this disk outside the output directory.
        if let Some(dir) = output.parent() {
            files::create_private_dir_all(dir).map_err(|e| {
                StageFailure::new(format!(
                    "disk {}: cannot create directory {}: {e}",
                    disk.id,
                    dir.display()
                ))
            })?;
        }
        // With guest repairs, convert flattens the overlay (repairs plus the untouched source).
        let (source, range, driver) = match &run.overlays[idx] {
            Some(overlay) => (overlay.clone(), None, "qcow2".to_owned()),
            None => (
                disk.source.clone(),
                disk.image().range,
                facts.driver.clone(),
            ),
        };
        let total = facts.info.virtual_size;
        let spec = plan
            .convert_spec(
                Image {
                    path: &source,
                    range,
                },
                &driver,
                run.aio(&source),
                &part,
                run.io_uring == Some(true),
                Some(total),
            )
            .expect("convert is planned");
        // Ours alone: created new (never over a leftover, never through a symlink) and 0600;
        // qemu-img then writes into this file, keeping its inode and mode.
        let held = files::create_private_file(&part).map_err(|e| {
            StageFailure::new(format!(
                "disk {}: cannot create {} ({e}): something already has that name (a \
                 leftover of an interrupted run, or a link planted there); it is left as it is \
                 and nothing is written through it: remove it and run again",
                disk.id,
                part.display()
            ))
        })?;
        // The disk starts writing the output while qemu-img still produces it.
        let writeback = atomic::Writeback::start(part.clone());
        if let Some(create) = plan.qemu_img.create_target_cmd(&spec) {
            write_part(run, &create, None, &part, |record| {
                format!("disk {}: could not create the output: {record}", disk.id)
            })?;
        }
        let cmd = plan.qemu_img.convert_cmd(&spec);
        let (vm, disk_id, events) = (plan.vm_id.clone(), disk.id.clone(), run.events);
        let mut on_line = |piece: &str| {
            if let Some(fraction) = qemu_img::parse_progress(piece) {
                events.send(Event::Progress {
                    vm: vm.clone(),
                    disk: disk_id.clone(),
                    activity: Activity::Convert,
                    done: (fraction * total as f64) as u64,
                    total,
                });
            }
        };
        write_part(run, &cmd, Some(&mut on_line), &part, |record| {
            format!("disk {}: conversion failed: {record}", disk.id)
        })?;
        let kicked = writeback.finish();
        tracing::debug!("disk {}: {kicked} early writebacks", disk.id);
        // Only the file created above is published, not whatever took its name meanwhile.
        still_ours(&held, &part, &disk.id)?;
        drop(held);
        // What was converted must be the source that was planned, untouched.
        if let Err(f) = run.check_pinned(idx, "before its conversion was published") {
            atomic::remove_part(&part);
            return Err(f);
        }
        // Nothing is published before the source is known to be the one the manifest names.
        if let Err(f) = run.settle_checksums() {
            atomic::remove_part(&part);
            return Err(f);
        }
        if let Err(e) = atomic::publish(&part, &output, plan.overwrite) {
            atomic::remove_part(&part);
            return Err(StageFailure::new(format!("disk {}: {e}", disk.id)));
        }
        let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
        // qemu-img's actual size counts every extent of a multi-file VMDK, not just the
        // descriptor it was given.
        let source_size = disk.member.as_ref().map(|m| m.size);
        let source_size = source_size.or(facts.info.actual_size).unwrap_or_else(|| {
            std::fs::metadata(&disk.source)
                .map(|m| m.len())
                .unwrap_or(0)
        });
        run.bytes_read += source_size;
        run.bytes_written += size;
        run.artifacts.push(Artifact {
            kind: ArtifactKind::ConvertedDisk,
            path: output.clone(),
            disk_id: disk.id.clone(),
            format: convert.format.name().to_owned(),
            size_bytes: size,
            size_human: human_bytes(size),
            boot_order_hint: disk.boot_order_hint,
            compressed: convert.compression.is_some(),
        });
        converted.push(ConvertedDisk {
            disk_id: disk.id.clone(),
            input_format: SourceFormat::from_driver(&facts.driver).map(SourceFormat::name),
            output_format: convert.format,
            output_path: output,
            output_size_bytes: size,
            output_size_human: human_bytes(size),
            boot_order_hint: disk.boot_order_hint,
        });
    }
    // A source converted earlier may have been changed while a later one was converted.
    run.check_all_pinned("after convert")?;
    Ok(ConvertResult {
        disks_converted: converted.len(),
        output_format: convert.format,
        output_directory: plan.output_dir.clone(),
        compressed: convert.compression.is_some(),
        compression: convert.compression,
        converted_disks: converted,
    })
}

/// Whether `part` is still the file that was created for it (same device and inode, not a
/// symlink): a `.part` name replaced while qemu-img ran is refused, and left alone.
fn still_ours(held: &std::fs::File, part: &Path, disk_id: &str) -> Result<(), StageFailure> {
    use std::os::unix::fs::MetadataExt;
    let ours = held.metadata().ok().map(|m| (m.dev(), m.ino()));
    let now = std::fs::symlink_metadata(part)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|m| (m.dev(), m.ino()));
    if ours.is_some() && ours == now {
        return Ok(());
    }
    Err(StageFailure::new(format!(
        "disk {disk_id}: {} was replaced while it was being written; refusing to publish it",
        part.display()
    )))
}

/// Runs a command that writes `part`; when it cannot run or fails, `part` is removed and the
/// stage fails (with `failed`'s text for a command that ran and failed).
fn write_part(
    run: &mut Run<'_>,
    cmd: &exec::Command,
    on_line: Option<&mut dyn FnMut(&str)>,
    part: &Path,
    failed: impl FnOnce(&CommandRecord) -> String,
) -> Result<(), StageFailure> {
    let out = run
        .exec_progressing(cmd, on_line, Some(part))
        .inspect_err(|_| atomic::remove_part(part))?;
    if !out.record.success() {
        atomic::remove_part(part);
        return Err(StageFailure::new(failed(&out.record)));
    }
    Ok(())
}
