//! `warnings`: problems the exporting tool recorded about the VM.
//!
//! They are checked for form and carried through `--dump-config`, not acted on: they describe
//! the export, and this tool's own warnings go into its report instead.

use serde::{Deserialize, Serialize};

use super::schema::{Field, Kind, f};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestWarning {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// One item of `warnings`.
pub const WARNING: &[Field] = &[
    f("stage", Kind::Str),
    f("message", Kind::Str),
    f("timestamp", Kind::Str),
];
