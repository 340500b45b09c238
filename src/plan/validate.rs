//! validate's plan: compare outputs with their sources, and the boot test (qemu, KVM or TCG,
//! firmware, patterns) when it is on.

use std::path::Path;

use super::{DiskPlan, PlanError};
use crate::boot_test::{self, BootDisk};
use crate::manifest::{Manifest, OutputFormat};
use crate::tools::guestfish::GuestEnv;

#[derive(Clone, Debug)]
pub struct ValidatePlan {
    /// `qemu-img compare` source against output.
    pub compare: bool,
    /// Boot the outputs once (`pipeline.validate.boot_test`).
    pub boot_test: Option<crate::boot_test::BootTestPlan>,
}

#[expect(
    clippy::too_many_arguments,
    reason = "the facts of the plan validate depends on"
)]
pub(super) fn plan(
    m: &Manifest,
    converting: bool,
    disks: &[DiskPlan],
    format: OutputFormat,
    output_dir: &Path,
    vm_id: &str,
    guest_env: Option<&GuestEnv>,
    unprobed: bool,
    notes: &mut Vec<String>,
) -> Result<Option<ValidatePlan>, PlanError> {
    let v = &m.pipeline.validate;
    if !v.enabled {
        if v.boot_test.enabled {
            notes.push(
                "pipeline.validate.boot_test is enabled but validate is not; no boot test runs"
                    .to_owned(),
            );
        }
        return Ok(None);
    }
    if !converting {
        notes.push(
            "pipeline.validate is enabled but convert is not; there is no output to validate"
                .to_owned(),
        );
        return Ok(None);
    }
    let boot_test = v
        .boot_test
        .enabled
        .then(|| {
            boot_test::plan(
                boot_test::PlanInput {
                    settings: &v.boot_test,
                    vm: &m.vm,
                    disks: boot_disks(disks, format),
                    console_log: output_dir.join(format!("{vm_id}.boot-test-console.log")),
                    accel: match guest_env {
                        Some(g) => Some(g.accel),
                        // A dry run boots nothing, not even the KVM probe.
                        None if unprobed => Some(super::unprobed_accel()),
                        None => None,
                    },
                    accel_probed: !unprobed,
                },
                notes,
            )
        })
        .transpose()?;
    if let Some(bt) = boot_test.as_ref().filter(|_| unprobed) {
        notes.push(format!(
            "the dry run did not probe KVM (that starts qemu-system); the boot test is shown \
             with {}, which a run tries first",
            crate::tools::qemu_system::Accel::name(bt.accel)
        ));
    }
    Ok(Some(ValidatePlan {
        compare: v.check_image_integrity,
        boot_test,
    }))
}

/// The outputs the boot test attaches, in boot order.
fn boot_disks(disks: &[DiskPlan], format: OutputFormat) -> Vec<BootDisk> {
    disks
        .iter()
        .filter_map(|d| {
            d.output.as_ref().map(|o| BootDisk {
                id: d.id.clone(),
                path: o.clone(),
                format: format.name(),
            })
        })
        .collect()
}
