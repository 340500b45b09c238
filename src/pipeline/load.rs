//! load_manifest: what the manifest says about the VM, room for its outputs (see
//! [`super::space`]), and its checksums verified (now, or in the background while the next
//! stages run; see [`super::checksums`]).

use super::{Run, StageFailure, checksums, libvirt, space};
use crate::outcome::stages::LoadResult;

pub(super) fn run(run: &mut Run<'_>) -> Result<LoadResult, StageFailure> {
    // A libvirt host that cannot take the VM stops it now, not after the conversion.
    libvirt::preflight(run)?;
    // Outputs that cannot fit stop the VM before a byte is copied (or a checksum computed).
    let output_space = space::check(run)?;
    let verified = checksums::start(run)?;
    let plan = run.plan;
    Ok(LoadResult {
        manifest_version: plan.manifest_version.clone(),
        manifest_path: plan.manifest_path.clone(),
        source_provider: plan.source_provider.clone(),
        source_vm_id: plan.source_vm_id.clone(),
        source_vm_name: plan.vm_name.clone(),
        disks_count: plan.disks.len(),
        firmware: plan.firmware,
        os_hint: plan.os_hint.clone(),
        profile: plan.profile_chain.first().cloned(),
        checksums_verified: !verified.is_empty(),
        verified_checksums: verified,
        checksums_verified_during_convert: None,
        checksum_seconds: None,
        output_space,
    })
}
