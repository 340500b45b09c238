//! The text the modes print, built from typed outcomes: the run summary (with its boot test
//! line and the fix stage's fstab before and after), the dry run's guest repair preview, and
//! what an import found.

use std::path::PathBuf;

use serde_json::Value;

use crate::atomic::WriteError;
use crate::boot_test::{BootResult, BootTestOutcome};
use crate::events::VmStatus;
use crate::guest::repair::RepairOutcome;
use crate::libvirt::import::ImportOutcome;
use crate::outcome::VmOutcome;
use crate::plan::VmPlan;
use crate::units::human_bytes;

/// The short account printed after a run (the report has the details); `written` is each
/// report file (`report.json`, then its page) with whether it could be written.
pub fn summary(
    plan: &VmPlan,
    outcome: &VmOutcome,
    written: &[(PathBuf, Result<(), WriteError>)],
) -> String {
    let mut s = String::new();
    let status = match outcome.status {
        VmStatus::Succeeded => "succeeded",
        VmStatus::Failed => "FAILED",
        VmStatus::Interrupted => "INTERRUPTED",
    };
    s.push_str(&format!(
        "VM {}: {status} in {:.2}s\n",
        outcome.vm_id, outcome.duration_seconds
    ));
    for a in &outcome.artifacts {
        s.push_str(&format!(
            "  {} -> {} ({}, {})\n",
            if a.disk_id.is_empty() {
                a.kind.name()
            } else {
                &a.disk_id
            },
            a.path.display(),
            a.format,
            a.size_human
        ));
    }
    if let Some(boot_test) = outcome.validate_result().and_then(|v| v.boot_test.as_ref()) {
        s.push_str(&boot_test_line(boot_test));
    }
    if let Some(lv) = outcome.libvirt_result()
        && outcome
            .stage(crate::stage::Stage::Libvirt)
            .is_some_and(|st| st.success)
    {
        s.push_str(&libvirt_line(lv));
    }
    for w in &outcome.warnings {
        s.push_str(&format!("  warning ({}): {}\n", w.stage, w.message));
    }
    for e in &outcome.errors {
        s.push_str(&format!("  error ({}): {}\n", e.stage, e.message));
    }
    // print_fstab: the guest's fstab before and after the fix stage.
    if let Some(fix) = outcome.fix_result()
        && let (Some(before), Some(after)) = (&fix.repair.fstab_before, &fix.repair.fstab_after)
    {
        s.push_str("  /etc/fstab before:\n");
        for l in before.lines() {
            s.push_str(&format!("    {l}\n"));
        }
        s.push_str("  /etc/fstab after:\n");
        for l in after.lines() {
            s.push_str(&format!("    {l}\n"));
        }
    }
    match written {
        [] if plan.report_path.is_none() => {
            s.push_str("Report: disabled (options.report.enabled is false)\n")
        }
        [(json, Ok(())), (page, Ok(()))] => s.push_str(&format!(
            "Reports: {} and {}\n",
            json.display(),
            page.file_name().unwrap_or_default().to_string_lossy()
        )),
        _ => {
            for (path, result) in written {
                match result {
                    Ok(()) => s.push_str(&format!("Report: {}\n", path.display())),
                    Err(e) => s.push_str(&report_not_written(e)),
                }
            }
        }
    }
    s
}

/// The summary's line for a VM defined on a libvirt host: what was done there, and the boot.
fn libvirt_line(lv: &crate::outcome::stages::LibvirtResult) -> String {
    let mut what = match lv.action.as_str() {
        "not_defined" => format!("  libvirt: volumes in {}", lv.uri),
        action => format!("  libvirt: domain {} {action} on {}", lv.domain, lv.uri),
    };
    if let Some(p) = &lv.pool {
        what.push_str(&format!(
            ", disks in pool '{}'{}",
            p.name,
            if p.created { " (created)" } else { "" }
        ));
    }
    if let Some(snap) = &lv.snapshot {
        what.push_str(&format!(", snapshot '{snap}'"));
    }
    if lv.autostart {
        what.push_str(", autostart");
    }
    if let Some(b) = &lv.boot {
        what.push_str(&format!(", started and booted in {:.1} s", b.seconds));
    }
    if lv.virt_type == "qemu" {
        what.push_str(" (TCG: KVM cannot run a guest on this host)");
    }
    what.push('\n');
    what
}

/// The summary's line for a report that could not be written: the file and the reason.
pub fn report_not_written(e: &WriteError) -> String {
    format!(
        "Report: NOT WRITTEN to {}: {}\n",
        e.path.display(),
        crate::diag::error_chain(&e.source)
    )
}

/// The run summary's line for a VM's boot test.
pub fn boot_test_line(bt: &BootTestOutcome) -> String {
    let seconds = bt.seconds;
    let accel = bt.accel.name();
    match bt.result {
        BootResult::Passed => format!(
            "  boot test: passed in {seconds:.1}s ({accel}, {}): `{}`\n",
            bt.firmware,
            bt.matched_line.as_deref().unwrap_or_default()
        ),
        other => {
            let console = match &bt.console_log {
                None => String::new(),
                Some(p) => format!("; console: {}", p.display()),
            };
            format!(
                "  boot test: {} ({}) after {seconds:.1}s ({accel}, {}){console}\n",
                other.name().to_uppercase(),
                bt.reason.name(),
                bt.firmware
            )
        }
    }
}

/// The guest changes a dry run found, one per line.
pub fn fix_preview(p: &RepairOutcome) -> String {
    let mut s =
        String::from("  fix (computed read-only from the source disks; nothing was written):\n");
    if let Some(skipped) = &p.skipped {
        s.push_str(&format!("    {skipped}\n"));
    }
    s.push_str(&format!(
        "    guest: {} ({} {}), root {}\n",
        p.guest.product_name, p.guest.os_type, p.guest.distro, p.guest.root
    ));
    for c in &p.changes {
        let line = c.line.map(|l| format!(":{l}")).unwrap_or_default();
        s.push_str(&format!("    {}{line} ({})\n", c.path, c.reason));
        if !c.before.is_empty() {
            s.push_str(&format!(
                "      - {}\n",
                c.before.trim_end().replace('\t', "  ")
            ));
        }
        if !c.after.is_empty() {
            s.push_str(&format!(
                "      + {}\n",
                c.after.trim_end().replace('\t', "  ")
            ));
        }
    }
    for r in &p.removed {
        s.push_str(&format!("    remove {r}\n"));
    }
    for i in &p.initramfs {
        let verb = if i.rebuilt { "rebuild" } else { "keep" };
        let image = i.image.as_deref().unwrap_or("its initramfs");
        s.push_str(&format!(
            "    {verb} {image} (kernel {}): {}\n",
            i.kernel, i.reason
        ));
    }
    for n in &p.notes {
        s.push_str(&format!("    note: {n}\n"));
    }
    if p.changes.is_empty() && p.removed.is_empty() && p.skipped.is_none() {
        s.push_str("    no changes needed\n");
    }
    s
}

/// What an import found, and the command to run next.
pub fn import_summary(o: &ImportOutcome) -> String {
    let f = &o.facts;
    let mut s = String::new();
    let xml = o
        .manifest
        .pointer("/source/libvirt_xml_path")
        .and_then(Value::as_str)
        .unwrap_or_default();
    s.push_str(&format!("Imported libvirt domain {} from {xml}\n", f.name));
    s.push_str(&vm_line(&o.manifest, f.secureboot));
    for (i, d) in o.disks.iter().enumerate() {
        s.push_str(&format!(
            "  disk {}: {}, {}, {} (virtual {}){}: {}\n",
            d.facts.id,
            if i == 0 { "boot" } else { "data" },
            d.facts.format,
            human_bytes(d.bytes),
            human_bytes(d.virtual_size),
            if d.checksum.is_some() {
                ", checksummed"
            } else {
                ""
            },
            d.facts.path.display()
        ));
    }
    for n in &f.nics {
        s.push_str(&format!(
            "  nic {}: {}{}{}{}\n",
            n.id,
            n.kind,
            n.network
                .as_deref()
                .map(|net| format!(" {net}"))
                .unwrap_or_default(),
            n.mac.map(|m| format!(", mac {m}")).unwrap_or_default(),
            n.model
                .as_deref()
                .map(|m| format!(", model {m}"))
                .unwrap_or_default()
        ));
    }
    for skipped in &o.skipped {
        s.push_str(&format!("  warning: not imported: {skipped}\n"));
    }
    for note in &o.notes {
        s.push_str(&format!("  note: {note}\n"));
    }
    s.push_str(&next_steps(&o.manifest_path, o.written));
    s
}

/// `  vm: 2 vCPUs, 4 GiB, firmware uefi (Secure Boot), os_hint debian12`, from a manifest.
fn vm_line(manifest: &Value, secureboot: bool) -> String {
    let vm = manifest.get("vm").cloned().unwrap_or_default();
    let text = |k: &str| {
        vm.get(k)
            .map(|v| v.to_string().trim_matches('"').to_owned())
    };
    format!(
        "  vm: {} vCPUs, {}, firmware {}{}{}\n",
        text("cpu").unwrap_or_else(|| "?".to_owned()),
        match vm.get("mem_mib").and_then(Value::as_u64) {
            Some(mib) if mib % 1024 == 0 => format!("{} GiB", mib / 1024),
            Some(mib) => format!("{mib} MiB"),
            None => format!("{} GiB", text("mem_gb").unwrap_or_else(|| "?".to_owned())),
        },
        text("firmware").unwrap_or_default(),
        if secureboot { " (Secure Boot)" } else { "" },
        text("os_hint")
            .map(|h| format!(", os_hint {h}"))
            .unwrap_or_default()
    )
}

/// Where the manifest is and what to run next, or that a dry run wrote nothing.
fn next_steps(manifest_path: &std::path::Path, written: bool) -> String {
    let path = crate::exec::quote_argv(&[manifest_path.display().to_string()]);
    if written {
        format!(
            "Manifest: {path}\nNext steps: hyper2kvm --manifest {path}   (add --dry-run to see the \
             plan first)\n"
        )
    } else {
        format!("Dry run: {path} was not written; the manifest follows.\n")
    }
}

/// What `--ova`, `--ovf` and `--vmx` print: the VM, its disks and NICs, the digests verified,
/// what was not carried, and the next step.
pub fn export_summary(o: &crate::exports::import::ImportOutcome) -> String {
    let f = &o.facts;
    let mut s = format!("Imported {} {} from {}\n", f.kind, f.name, f.path.display());
    s.push_str(&vm_line(&o.manifest, f.secureboot));
    for (i, d) in o.disks.iter().enumerate() {
        let place = match &d.disk.location {
            crate::exports::DiskLocation::File { path, .. } => path.display().to_string(),
            crate::exports::DiskLocation::Member { name, .. } => format!("{name} (in place)"),
        };
        s.push_str(&format!(
            "  disk {}: {}, {}{}, {} (virtual {}){}: {place}\n",
            d.disk.id,
            if i == 0 { "boot" } else { "data" },
            d.format,
            d.disk
                .controller
                .as_ref()
                .map(|c| format!(" on {}", c.bus()))
                .unwrap_or_default(),
            human_bytes(d.bytes),
            human_bytes(d.virtual_size),
            if d.checksum.is_some() {
                ", checksummed"
            } else {
                ""
            },
        ));
    }
    for n in &f.nics {
        s.push_str(&format!(
            "  nic {}: {}{}{}\n",
            n.id,
            n.network.as_deref().unwrap_or("(no network)"),
            n.mac.map(|m| format!(", mac {m}")).unwrap_or_default(),
            n.adapter
                .as_deref()
                .map(|m| format!(", adapter {m}"))
                .unwrap_or_default()
        ));
    }
    if !o.verified.is_empty() {
        s.push_str(&format!("  verified: {}\n", o.verified.join(", ")));
    }
    for note in &o.notes {
        s.push_str(&format!("  note: {note}\n"));
    }
    match o.purpose {
        crate::exports::import::Use::Run => {
            let path = crate::exec::quote_argv(&[o.manifest_path.display().to_string()]);
            s.push_str(&if o.written {
                format!("Manifest: {path}\nRunning it now (--run).\n")
            } else {
                format!("Dry run: {path} was not written; the plan of its run follows.\n")
            });
        }
        _ => s.push_str(&next_steps(&o.manifest_path, o.written)),
    }
    s
}

/// The command that resumes a batch that did not finish: this run's own command line with
/// `--batch-resume` (once), shell-quoted so it can be pasted.
pub fn resume_command(argv: &[String]) -> String {
    let mut words: Vec<String> = argv.to_vec();
    if !words.iter().any(|w| w == "--batch-resume") {
        words.push("--batch-resume".to_owned());
    }
    format!(
        "To run the failed, interrupted and not started VMs again (finished ones are kept):\n  {}\n",
        crate::exec::quote_argv(&words)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot_test::Reason;
    use crate::tools::qemu_system::Accel;

    fn boot(result: BootResult, reason: Reason) -> BootTestOutcome {
        BootTestOutcome {
            result,
            reason,
            message: String::new(),
            matched_line: None,
            time_to_pass_seconds: None,
            seconds: 0.0,
            started_at: String::new(),
            accel: Accel::Tcg,
            accel_reason: String::new(),
            firmware: "bios",
            machine: "q35",
            timeout_seconds: 30,
            command_line: String::new(),
            console_log: None,
            console_tail: Vec::new(),
        }
    }

    #[test]
    fn boot_test_lines() {
        let mut passed = boot(BootResult::Passed, Reason::SuccessPattern);
        passed.seconds = 81.2;
        passed.matched_line = Some("h2k login:".to_owned());
        assert_eq!(
            boot_test_line(&passed),
            "  boot test: passed in 81.2s (tcg, bios): `h2k login:`\n"
        );
        let mut failed = boot(BootResult::Failed, Reason::Timeout);
        failed.seconds = 30.0;
        failed.firmware = "uefi";
        failed.console_log = Some("/o/c.log".into());
        assert_eq!(
            boot_test_line(&failed),
            "  boot test: FAILED (timeout) after 30.0s (tcg, uefi); console: /o/c.log\n"
        );
    }

    #[test]
    fn the_resume_command_is_the_run_again_with_batch_resume_once() {
        let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let text = super::resume_command(&argv(&["hyper2kvm", "--batch-manifest", "my wave.json"]));
        assert!(
            text.ends_with("  hyper2kvm --batch-manifest 'my wave.json' --batch-resume\n"),
            "{text}"
        );
        let again = super::resume_command(&argv(&[
            "hyper2kvm",
            "--batch-resume",
            "--batch-manifest",
            "b.json",
        ]));
        assert_eq!(again.matches("--batch-resume").count(), 1, "{again}");
    }
}
