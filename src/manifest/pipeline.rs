//! `pipeline`: which stages run and how each is set up.
//!
//! Every stage is off unless a layer turns it on, and every other setting has its default here,
//! in the `Default` impls, so the model, `--dump-config` and the planner agree on what an unset
//! key means. The field tables beside the types are what validation checks the raw document
//! against before it is typed.

use serde::{Deserialize, Serialize};

use super::boot_test::{BOOT_TEST, BootTestSettings};
use super::schema::{Field, Kind, f};
use crate::spelling::spelled_enum;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pipeline {
    pub inspect: InspectStage,
    pub fix: FixStage,
    pub convert: ConvertStage,
    pub validate: ValidateStage,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectStage {
    pub enabled: bool,
    pub collect_guest_info: bool,
}

spelled_enum! {
    /// Which fstab (and crypttab) entries the repair rewrites to stable ids.
    #[derive(Default)]
    pub enum FstabMode {
        #[default]
        StabilizeAll = "stabilize-all",
        BypathOnly = "bypath-only",
        Noop = "noop",
    }
}

spelled_enum! {
    /// When `regen_initramfs` rebuilds an image: `auto` when it lacks the virtio drivers or the
    /// repairs changed a file it carries a copy of, `always` for every kernel.
    #[derive(Default)]
    pub enum InitramfsRebuild {
        #[default]
        Auto = "auto",
        Always = "always",
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FixStage {
    pub enabled: bool,
    /// The admin's consent to write the source disks themselves, which fix does when convert
    /// is off. Without it such a manifest is refused at plan time.
    pub allow_in_place: bool,
    /// Copy each source disk whole before an in-place repair writes it.
    pub disk_backup: bool,
    /// Copy each changed file inside the guest before it is rewritten.
    pub backup: bool,
    pub update_grub: bool,
    pub regen_initramfs: bool,
    pub initramfs_rebuild: InitramfsRebuild,
    pub fstab_mode: FstabMode,
    pub remove_vmware_tools: bool,
    pub print_fstab: bool,
    /// Remove MAC pinning from the guest's network configuration.
    pub network: bool,
}

impl Default for FixStage {
    fn default() -> Self {
        Self {
            enabled: false,
            allow_in_place: false,
            disk_backup: true,
            backup: true,
            update_grub: true,
            regen_initramfs: true,
            initramfs_rebuild: InitramfsRebuild::Auto,
            fstab_mode: FstabMode::StabilizeAll,
            remove_vmware_tools: false,
            print_fstab: false,
            network: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConvertStage {
    pub enabled: bool,
    pub compress: bool,
    pub compress_level: u8,
    /// Run `qemu-img check` on the source before converting, when inspect has not already.
    pub check_image_integrity: bool,
}

impl Default for ConvertStage {
    fn default() -> Self {
        Self {
            enabled: false,
            compress: false,
            compress_level: 6,
            check_image_integrity: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidateStage {
    pub enabled: bool,
    /// Compare the output's content with the source (`qemu-img compare`).
    pub check_image_integrity: bool,
    /// Boot the outputs once and read the serial console.
    pub boot_test: BootTestSettings,
}

impl Default for ValidateStage {
    fn default() -> Self {
        Self {
            enabled: false,
            check_image_integrity: true,
            boot_test: BootTestSettings::default(),
        }
    }
}

const INSPECT: &[Field] = &[
    f("enabled", Kind::Bool),
    f("collect_guest_info", Kind::Bool),
];
const FIX: &[Field] = &[
    f("enabled", Kind::Bool),
    f("allow_in_place", Kind::Bool),
    f("disk_backup", Kind::Bool),
    f("backup", Kind::Bool),
    f("update_grub", Kind::Bool),
    f("regen_initramfs", Kind::Bool),
    f("initramfs_rebuild", Kind::Enum(InitramfsRebuild::NAMES)),
    f("fstab_mode", Kind::Enum(FstabMode::NAMES)),
    f("remove_vmware_tools", Kind::Bool),
    f("print_fstab", Kind::Bool),
    f("network", Kind::Bool),
];
const CONVERT: &[Field] = &[
    f("enabled", Kind::Bool),
    f("compress", Kind::Bool),
    f("compress_level", Kind::Int { min: 1, max: 9 }),
    f("check_image_integrity", Kind::Bool),
];
const VALIDATE: &[Field] = &[
    f("enabled", Kind::Bool),
    f("check_image_integrity", Kind::Bool),
    f("boot_test", Kind::Object(BOOT_TEST)),
];

/// The `pipeline` section.
pub const PIPELINE: &[Field] = &[
    f("inspect", Kind::Object(INSPECT)),
    f("fix", Kind::Object(FIX)),
    f("convert", Kind::Object(CONVERT)),
    f("validate", Kind::Object(VALIDATE)),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Problems;
    use serde_json::json;

    #[test]
    fn stage_tables_check_enums_and_ranges() {
        let mut problems = Problems::default();
        let v = json!({"fix": {"fstab_mode": "stabilise-all", "initramfs_rebuild": "never"},
            "convert": {"compress_level": 0}, "validate": {"boot_test": {"timeout": 0}}});
        let map = v.as_object().expect("mapping");
        super::super::schema::check_object("pipeline", map, PIPELINE, &[], &mut problems);
        let got: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "pipeline.fix.fstab_mode must be one of: stabilize-all, bypath-only, noop (got: 'stabilise-all') (did you mean 'stabilize-all'?)",
                "pipeline.fix.initramfs_rebuild must be one of: auto, always (got: 'never')",
                "pipeline.convert.compress_level must be an integer from 1 to 9 (got an integer: 0)",
                "pipeline.validate.boot_test.timeout must be an integer from 1 to 86400 (got an integer: 0)",
            ]
        );
    }

    #[test]
    fn defaults_and_spellings() {
        let p: Pipeline =
            serde_json::from_value(json!({"fix": {"fstab_mode": "bypath-only"}})).expect("typed");
        assert_eq!(p.fix.fstab_mode, FstabMode::BypathOnly);
        assert!(p.fix.backup && p.fix.regen_initramfs && p.fix.network);
        assert!(p.fix.disk_backup && !p.fix.allow_in_place);
        assert_eq!(p.fix.initramfs_rebuild, InitramfsRebuild::Auto);
        assert_eq!(p.convert.compress_level, 6);
        assert!(p.convert.check_image_integrity && p.validate.check_image_integrity);
        assert!(!p.inspect.enabled && !p.fix.enabled && !p.validate.boot_test.enabled);
        assert_eq!(
            serde_json::to_value(p.fix.fstab_mode).expect("json"),
            json!("bypath-only")
        );
    }
}
