//! validate: every output checked with `qemu-img check` (qcow2), compared with what was
//! converted (`qemu-img compare`, split in ranges across the cores for large images), and,
//! when asked, booted once (the boot test).

use super::{Run, StageFailure};
use crate::boot_test::{BootResult, BootTestPlan};
use crate::diag::error_chain;
use crate::events::Event;
use crate::exec::{self, CommandRecord, Status};
use crate::outcome::StageResult;
use crate::outcome::stages::{Check, ContentCheck, ValidateResult, ValidatedDisk};
use crate::stage::{Stage, Step};
use crate::tools::qemu_img::{self, Aio, CheckVerdict, Image};

pub(super) fn run(run: &mut Run<'_>) -> Result<ValidateResult, StageFailure> {
    let plan = run.plan;
    let validate = plan
        .validate
        .as_ref()
        .expect("stage runs only when planned");
    let format = plan
        .convert
        .as_ref()
        .expect("validate is planned only with convert")
        .format
        .name();
    let q = plan.qemu_img.clone();
    // Comparing with a source that changed since it was pinned would prove nothing.
    run.check_all_pinned("after convert, before validate compared it")?;
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for idx in 0..plan.disks.len() {
        let disk = &plan.disks[idx];
        let Some(output) = disk.output.clone() else {
            continue;
        };
        if !output.is_file() {
            failures.push(format!(
                "Disk {}: Output file missing: {}",
                disk.id,
                output.display()
            ));
            results.push(ValidatedDisk {
                disk_id: disk.id.clone(),
                output_path: output,
                exists: false,
                integrity_check: Check::Failed,
                content_check: ContentCheck::Skipped,
            });
            continue;
        }
        let mut integrity = Check::Skipped;
        if format == "qcow2" {
            let out = run.exec(&q.check_cmd(&output, format), None)?;
            match CheckVerdict::from_exit_code(out.record.exit_code()) {
                CheckVerdict::Clean => integrity = Check::Passed,
                CheckVerdict::LeaksOnly => {
                    integrity = Check::Passed;
                    run.warn(
                        Stage::Validate,
                        format!(
                            "disk {}: the output has leaked clusters (no data lost)",
                            disk.id
                        ),
                    );
                }
                _ => {
                    integrity = Check::Failed;
                    failures.push(format!(
                        "disk {}: qemu-img check failed on the output {}: {}",
                        disk.id,
                        output.display(),
                        out.record
                    ));
                }
            }
        }
        let mut content = ContentCheck::Skipped;
        if validate.compare {
            // The output must equal what was converted: the repaired overlay when fix ran.
            let (source, range, driver) = match run.overlays[idx].clone() {
                Some(overlay) => (overlay, None, "qcow2".to_owned()),
                None => {
                    let driver = match &run.facts[idx] {
                        Some(f) => f.driver.clone(),
                        None => run.source_facts(idx, false)?.driver,
                    };
                    let disk = &plan.disks[idx];
                    (disk.source.clone(), disk.image().range, driver)
                }
            };
            let virtual_size = match &run.facts[idx] {
                Some(f) => f.info.virtual_size,
                None => run.source_facts(idx, false)?.info.virtual_size,
            };
            // A repaired overlay is compared whole: a range window opened through a json: spec
            // does not open the overlay's backing file, so its unrepaired clusters read as zeros.
            let splittable = run.overlays[idx].is_none();
            let (verdict, detail) = compare_content(
                run,
                (
                    Image {
                        path: &source,
                        range,
                    },
                    &driver,
                    run.aio(&source),
                ),
                ((&output).into(), format, run.aio(&output)),
                virtual_size,
                splittable,
            )?;
            content = verdict;
            if let Some(detail) = detail {
                failures.push(format!("disk {}: {detail}", disk.id));
            }
        }
        let disk = &plan.disks[idx];
        results.push(ValidatedDisk {
            disk_id: disk.id.clone(),
            output_path: output,
            exists: true,
            integrity_check: integrity,
            content_check: content,
        });
    }
    if validate.compare
        && let Err(f) = run.check_all_pinned("while validate compared it with the output")
    {
        failures.push(f.message);
    }
    if !failures.is_empty() {
        return Err(StageFailure::new(failures.join("; ")));
    }
    let mut result = ValidateResult {
        disks_validated: results.len(),
        all_passed: true,
        validation_results: results,
        boot_test: None,
    };
    if let Some(boot_test) = &validate.boot_test {
        run_boot_test(run, boot_test, &mut result)?;
    }
    Ok(result)
}

/// Boots the outputs once; a guest that does not boot fails the stage, with the console in its
/// result.
fn run_boot_test(
    run: &mut Run<'_>,
    plan: &BootTestPlan,
    result: &mut ValidateResult,
) -> Result<(), StageFailure> {
    let vm = run.plan.vm_id.clone();
    run.events.send(Event::StepStarted {
        vm: vm.clone(),
        step: Step::BootTest,
    });
    run.step = Step::BootTest;
    run.substep(format!(
        "booting under {}, waiting up to {} s for /{}/",
        plan.accel.name(),
        plan.timeout.as_secs(),
        plan.success.as_str()
    ));
    let ran = crate::boot_test::run(plan, run.cancel)
        .map_err(|e| StageFailure::new(format!("boot test: {e}")));
    let ran = match ran {
        Ok(r) => r,
        Err(f) => {
            run.events.send(Event::StepFinished {
                vm,
                step: Step::BootTest,
                success: false,
            });
            return Err(f);
        }
    };
    run.commands.extend(ran.record);
    let outcome = ran.outcome;
    run.events.send(Event::StepFinished {
        vm,
        step: Step::BootTest,
        success: outcome.result == BootResult::Passed,
    });
    let verdict = outcome.result;
    let message = format!("boot test failed: {}", outcome.message);
    result.boot_test = Some(outcome);
    match verdict {
        BootResult::Passed => Ok(()),
        BootResult::Interrupted => Err(StageFailure::interrupted()),
        BootResult::Failed => {
            result.all_passed = false;
            Err(StageFailure {
                message,
                interrupted: false,
                result: Some(Box::new(StageResult::Validate(result.clone()))),
                stage: None,
            })
        }
    }
}

/// Images at least this large are compared in ranges, one process per core.
const SPLIT_COMPARE_MIN: u64 = 1 << 30;
/// Range boundaries fall on multiples of this (qemu-img compare reads 2 MiB at a time).
const COMPARE_ALIGN: u64 = 2 << 20;

/// Compares the guest-visible content of source and output: identical, different, or an error,
/// with the failure's text. `qemu-img compare` runs on one core; on a machine with more,
/// a large image is split into that many ranges (at most 4) compared at once, so this pass takes
/// a fraction of the time. A mismatch names its offset in the whole image.
fn compare_content(
    run: &mut Run<'_>,
    source: (Image<'_>, &str, Aio),
    output: (Image<'_>, &str, Aio),
    virtual_size: u64,
    splittable: bool,
) -> Result<(ContentCheck, Option<String>), StageFailure> {
    let q = run.plan.qemu_img.clone();
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) as u64;
    let mut ranges = Vec::new();
    if splittable && parts > 1 && virtual_size >= SPLIT_COMPARE_MIN {
        let chunk = (virtual_size / parts).div_ceil(COMPARE_ALIGN) * COMPARE_ALIGN;
        let mut offset = 0;
        while offset < virtual_size {
            let last = offset + chunk >= virtual_size;
            let size = (!last).then_some(chunk);
            match q.compare_range_cmd(source, output, offset, size) {
                Some(cmd) => ranges.push((offset, cmd)),
                None => {
                    ranges.clear();
                    break;
                }
            }
            offset += chunk;
        }
    }
    if ranges.len() < 2 {
        ranges = vec![(0, q.compare_cmd(source, output))];
    }
    let cancel = run.cancel;
    let limits = *q.limits();
    let outs: Vec<Result<exec::Output, exec::ExecError>> = std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|(_, cmd)| {
                s.spawn(move || {
                    let note = limits.timed_out_note(&cmd.argv());
                    super::stall::run(cmd, cancel, None, None, limits.stall, &note)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("exec::run does not panic"))
            .collect()
    });
    let mut verdict = (ContentCheck::Identical, None);
    for ((offset, _), out) in ranges.iter().zip(outs) {
        let out = out.map_err(|e| StageFailure::new(error_chain(&e)))?;
        run.commands.push(out.record.clone());
        if out.record.status == Status::Cancelled {
            return Err(StageFailure::interrupted());
        }
        let found = match out.record.exit_code() {
            Some(0) => continue,
            Some(1) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let text = match qemu_img::mismatch_offset(&stdout) {
                    Some(at) => format!("Content mismatch at offset {}!", offset + at),
                    None => out.record.stdout_summary(&out.stdout),
                };
                (
                    ContentCheck::Different,
                    Some(format!(
                        "the output's content differs from the source: {text}"
                    )),
                )
            }
            _ => (
                ContentCheck::Error,
                Some(format!(
                    "could not compare the output with the source: {}",
                    out.record
                )),
            ),
        };
        // The first range in disk order that failed names the failure; an error beats a
        // difference found elsewhere.
        if verdict.0 == ContentCheck::Identical
            || (found.0 == ContentCheck::Error && verdict.0 != ContentCheck::Error)
        {
            verdict = found;
        }
    }
    Ok(verdict)
}

trait StdoutSummary {
    fn stdout_summary(&self, stdout: &[u8]) -> String;
}

impl StdoutSummary for CommandRecord {
    /// `qemu-img compare` says where content differs on stdout ("Content mismatch at offset N!").
    fn stdout_summary(&self, stdout: &[u8]) -> String {
        let text = String::from_utf8_lossy(stdout);
        // `-p` puts its progress steps before the verdict, each ended by `\r`.
        let line = text
            .split(['\n', '\r'])
            .map(str::trim)
            .rfind(|l| !l.is_empty() && qemu_img::parse_progress(l).is_none())
            .unwrap_or("")
            .to_owned();
        if line.is_empty() {
            self.to_string()
        } else {
            line
        }
    }
}
