//! The names of the steps of a VM's run, written once: the pipeline's [`Stage`]s, the
//! [`HookStage`]s between them, and the [`Step`]s a progress display shows.
//!
//! Reports key stage results by [`Stage::name`], manifests name hook stages by
//! [`HookStage::name`], and nothing else spells them.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::spelling::spelled_enum;

spelled_enum! {
    /// A stage of the per-VM pipeline, in the order they run. The names are the ones reports
    /// and messages use (upstream's for the first five).
    #[derive(PartialOrd, Ord)]
    pub enum Stage {
        /// Read the manifest's facts and verify the checksums.
        Load = "load_manifest",
        Inspect = "inspect",
        Fix = "fix",
        Convert = "convert",
        Validate = "validate",
        /// Write the libvirt domain XML.
        Domain = "domain_xml",
        /// Define (and start) the domain on a libvirt host (upstream's name).
        Libvirt = "libvirt_integration",
    }
}

impl Stage {
    /// The hook stages fired before and after this stage.
    pub fn hooks(self) -> (Option<HookStage>, Option<HookStage>) {
        use HookStage as H;
        match self {
            Stage::Load => (Some(H::PreExtraction), Some(H::PostExtraction)),
            Stage::Inspect | Stage::Domain | Stage::Libvirt => (None, None),
            Stage::Fix => (Some(H::PreFix), Some(H::PostFix)),
            Stage::Convert => (Some(H::PreConvert), Some(H::PostConvert)),
            Stage::Validate => (None, Some(H::PostValidate)),
        }
    }
}

spelled_enum! {
    /// Where in the pipeline a hook runs; declared in pipeline order.
    #[derive(PartialOrd, Ord)]
    pub enum HookStage {
        PreExtraction = "pre_extraction",
        PostExtraction = "post_extraction",
        PreFix = "pre_fix",
        PostFix = "post_fix",
        PreConvert = "pre_convert",
        PostConvert = "post_convert",
        PostValidate = "post_validate",
    }
}

impl HookStage {
    /// The pipeline stage that must be enabled for this hook stage to fire; extraction hooks
    /// always fire (load_manifest always runs).
    pub fn pipeline_stage(self) -> Stage {
        match self {
            HookStage::PreExtraction | HookStage::PostExtraction => Stage::Load,
            HookStage::PreFix | HookStage::PostFix => Stage::Fix,
            HookStage::PreConvert | HookStage::PostConvert => Stage::Convert,
            HookStage::PostValidate => Stage::Validate,
        }
    }
}

/// What a progress display shows a VM doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Stage(Stage),
    /// The hooks of one hook stage.
    Hooks(HookStage),
    /// The boot test, inside validate.
    BootTest,
    /// Hashing disks outside a pipeline (`--libvirt-xml` writing checksums).
    Checksums,
}

impl Step {
    /// The stage or hook stage the step belongs to, as reports spell it (`stage` in events).
    pub fn stage_name(self) -> &'static str {
        match self {
            Step::Stage(s) => s.name(),
            Step::Hooks(h) => h.name(),
            Step::BootTest => Stage::Validate.name(),
            Step::Checksums => "import",
        }
    }

    /// The step's own name (`step` in events).
    pub fn step_name(self) -> &'static str {
        match self {
            Step::Stage(s) => s.name(),
            Step::Hooks(_) => "hooks",
            Step::BootTest => "boot_test",
            Step::Checksums => "checksum",
        }
    }

    pub fn label(self) -> String {
        match self {
            Step::Stage(s) => s.name().to_owned(),
            Step::Hooks(h) => format!("{} hooks", h.name()),
            Step::BootTest => "boot_test".to_owned(),
            Step::Checksums => "checksum".to_owned(),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// Which part of a run a warning or an error belongs to (`stage` in reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Planning, before any stage ran.
    Plan,
    Stage(Stage),
    Hooks(HookStage),
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Plan => "plan",
            Origin::Stage(s) => s.name(),
            Origin::Hooks(h) => h.name(),
        }
    }
}

impl From<Stage> for Origin {
    fn from(s: Stage) -> Self {
        Origin::Stage(s)
    }
}

impl From<HookStage> for Origin {
    fn from(h: HookStage) -> Self {
        Origin::Hooks(h)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Origin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &s in Stage::ALL {
            assert_eq!(Stage::from_name(s.name()), Some(s));
        }
        for &h in HookStage::ALL {
            assert_eq!(HookStage::from_name(h.name()), Some(h));
            let (before, after) = h.pipeline_stage().hooks();
            assert!(before == Some(h) || after == Some(h), "{h}");
        }
        assert_eq!(Step::Hooks(HookStage::PreFix).label(), "pre_fix hooks");
    }
}
