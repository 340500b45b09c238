//! domain_xml: the libvirt domain for the converted disks, written atomically beside them.

use super::{Run, StageFailure};
use crate::diag::error_chain;
use crate::outcome::stages::DomainResult;
use crate::outcome::{Artifact, ArtifactKind};
use crate::units::human_bytes;

/// Writes the libvirt domain for the converted disks (atomically) and records it as an artifact.
pub(super) fn run(run: &mut Run<'_>) -> Result<DomainResult, StageFailure> {
    let plan = run.plan;
    let domain = plan.domain.as_ref().expect("stage runs only when planned");
    let xml = crate::libvirt::emit::domain_xml(domain);
    crate::atomic::write(&domain.path, xml.as_bytes())
        .map_err(|e| StageFailure::new(error_chain(&e)))?;
    let size = xml.len() as u64;
    run.bytes_written += size;
    run.artifacts.push(Artifact {
        kind: ArtifactKind::LibvirtDomain,
        path: domain.path.clone(),
        disk_id: String::new(),
        format: "xml".to_owned(),
        size_bytes: size,
        size_human: human_bytes(size),
        boot_order_hint: 0,
        compressed: false,
    });
    Ok(DomainResult {
        path: domain.path.clone(),
        name: domain.name.clone(),
        uuid: domain.uuid.clone(),
        uuid_origin: domain.uuid_origin,
        memory_kib: domain.memory_kib,
        vcpus: domain.vcpus,
        firmware: domain.firmware.clone(),
        disks: domain.disks.clone(),
        interfaces: domain.interfaces.clone(),
        define_with: format!(
            "virsh define {}",
            crate::exec::quote_argv(&[domain.path.display().to_string()])
        ),
    })
}
