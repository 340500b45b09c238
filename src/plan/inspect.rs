//! inspect's plan: check every source, and look inside the guest when asked.

use crate::manifest::Manifest;

#[derive(Clone, Debug)]
pub struct InspectPlan {
    /// `qemu-img check` on sources whose format supports it.
    pub check_source: bool,
    /// Look inside the guest with libguestfs (OS, filesystems, kernels).
    pub guest_info: bool,
}

pub(super) fn plan(m: &Manifest) -> Option<InspectPlan> {
    m.pipeline.inspect.enabled.then_some(InspectPlan {
        check_source: true,
        guest_info: m.pipeline.inspect.collect_guest_info,
    })
}
