//! `source`: where the VM came from (provider, ids, export details).
//!
//! Upstream's schema allows any key here (`additionalProperties: true`), and importers keep
//! extras such as `uuid` in it, so only the keys upstream names are checked, and only that they
//! are strings. The rest belongs to the user and is carried through as it is.

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
