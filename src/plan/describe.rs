//! The `--dry-run` text: what a run of this plan would do, with the exact commands.

use std::fmt::Write as _;
use std::path::Path;

use super::VmPlan;
use crate::libvirt::domain::{DomainPlan, FirmwarePlan, UuidOrigin};
use crate::mapping::MacOrigin;
use crate::tools::qemu_img::Aio;

impl VmPlan {
    /// A human-readable account of what a run would do, for `--dry-run`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if self.preview_guest {
            let _ = writeln!(
                s,
                "Dry run: the guest is read read-only (--preview-guest); nothing will be \
                 written or converted."
            );
        } else if self
            .disks
            .iter()
            .any(|d| d.probed.contains(&"source_format"))
        {
            let _ = writeln!(
                s,
                "Dry run: the formats the manifest leaves out were probed (qemu-img info, \
                 read-only); nothing else will be read, and nothing written or converted."
            );
        } else {
            let _ = writeln!(s, "Dry run: nothing will be read, written or converted.");
        }
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
            let probed = |field: &str| {
                if d.probed.contains(&field) {
                    " probed"
                } else {
                    ""
                }
            };
            let _ = writeln!(
                s,
                "  disk {} ({}, {}{}, {} bytes{}): {}",
                d.id,
                d.disk_type,
                d.declared,
                probed("source_format"),
                d.expected_bytes,
                probed("bytes"),
                d.image()
            );
            if let Some(sum) = &d.checksum {
                let _ = writeln!(s, "    verify {sum}");
            }
            let _ = writeln!(s, "    $ {}", q.probe_cmd(d.image(), aio(&d.source)));
            if !d.backing_chain.is_empty() {
                for (p, _) in &d.backing_chain {
                    let _ = writeln!(s, "    through {}", p.display());
                }
                let _ = writeln!(s, "    $ {}", q.chain_cmd(d.image(), driver));
            }
            if let (Some(_), Some(c)) = (&d.output, &self.convert) {
                let target = c.measure_target();
                let measure =
                    q.measure_cmd(d.image(), driver, target.format, target.options.as_deref());
                let _ = writeln!(s, "    $ {measure}");
            }
            let check =
                self.inspect.is_some() || self.convert.as_ref().is_some_and(|c| c.check_source);
            if check && d.declared.checkable() {
                let _ = writeln!(s, "    $ {}", q.check_cmd(d.image(), driver));
            }
            if let (Some(out), Some(part)) = (&d.output, d.part_path())
                && let Some(spec) =
                    self.convert_spec(d.image(), driver, aio(&d.source), &part, true, None)
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
                            (d.image(), driver, aio(&d.source)),
                            (out.into(), fmt, Aio::Threads),
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
        if let (Some(lv), Some(dom)) = (&self.libvirt, &self.domain) {
            for line in lv.describe(&dom.name) {
                let _ = writeln!(s, "  {line}");
            }
        }
        s
    }
}

fn describe_domain(s: &mut String, dom: &DomainPlan) {
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
            "    nic {}: {}, model {}, mac {} ({})",
            i.nic_id,
            i.connection,
            i.model,
            i.mac,
            match i.mac_origin {
                MacOrigin::Preserved => "preserved",
                MacOrigin::Override => "override",
                MacOrigin::Generated => "new",
            }
        );
    }
}
