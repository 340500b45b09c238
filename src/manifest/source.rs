//! `source`: where the VM came from (provider, ids, export details).
//!
//! Upstream's schema allows any key here (`additionalProperties: true`), and importers keep
//! extras such as `uuid` in it, so only the keys upstream names are checked, and only that they
//! are strings. The rest belongs to the user and is carried through as it is.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::schema::{self, Kind};
use crate::diag::Problems;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Source {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_method: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The keys upstream knows, which must be strings (or null); any other key is the user's.
pub const STRING_KEYS: &[&str] = &[
    "provider",
    "vm_id",
    "vm_name",
    "datacenter",
    "export_timestamp",
    "export_method",
];

/// Checks the known keys of `source`; that it is a mapping at all is the top-level table's job.
pub fn check(source: Option<&Value>, problems: &mut Problems) {
    let Some(Value::Object(source)) = source else {
        return;
    };
    for key in STRING_KEYS {
        if let Some(v) = source.get(*key)
            && !v.is_string()
            && !v.is_null()
        {
            schema::check_value(&format!("source.{key}"), v, &Kind::Str, problems);
        }
    }
}

/// What kind of export a VM comes from (`source.export_method`), read by `crate::exports`
/// and named by batch entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    Ova,
    Ovf,
    Vmx,
    HyperV,
}

impl ExportKind {
    /// The option that reads it, and the manifest's `source.export_method`.
    pub fn option(self) -> &'static str {
        match self {
            ExportKind::Ova => "--ova",
            ExportKind::Ovf => "--ovf",
            ExportKind::Vmx => "--vmx",
            ExportKind::HyperV => "--hyperv",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ExportKind::Ova => "ova",
            ExportKind::Ovf => "ovf",
            ExportKind::Vmx => "vmx",
            ExportKind::HyperV => "hyperv",
        }
    }

    /// What the manifest's `source.provider` says.
    pub fn provider(self) -> &'static str {
        match self {
            ExportKind::HyperV => "hyperv",
            _ => "vmware",
        }
    }
}

impl fmt::Display for ExportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExportKind::Ova => "OVA",
            ExportKind::Ovf => "OVF",
            ExportKind::Vmx => "VMX",
            ExportKind::HyperV => "Hyper-V export",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_keys_are_strings_and_the_rest_is_free() {
        let mut problems = Problems::default();
        let source = json!({"provider": "vsphere", "vm_id": 42, "vm_name": null,
            "uuid": "anything", "tags": {"a": [1]}});
        check(Some(&source), &mut problems);
        let got: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["source.vm_id must be a string (got an integer: 42)"]);
        let source = json!({"provider": "vsphere", "uuid": "anything", "tags": {"a": [1]}});
        let typed: Source = serde_json::from_value(source).expect("typed");
        assert_eq!(typed.provider.as_deref(), Some("vsphere"));
        assert!(typed.extra.contains_key("uuid") && typed.extra.contains_key("tags"));
    }
}
