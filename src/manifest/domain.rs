//! `domain`: choices about the libvirt domain XML written after a conversion, and the UUID form
//! the manifest and libvirt share.
//!
//! `preserve_uuid` reuses `source.uuid`, so a manifest asking for it must carry a UUID that
//! libvirt will accept; that is checked at load time, like every other input. The UUID parser is
//! here, not with the libvirt writer, because the manifest is where UUIDs come in; the libvirt
//! reader and the domain planner use it from here.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::schema::{Field, Kind, f};
use crate::diag::Problems;

/// `domain`: choices about the libvirt domain XML written after a conversion.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainSection {
    /// Reuse `source.uuid` as the domain's UUID instead of deriving a new one. Only for a VM
    /// whose original will not run on the same libvirt host (libvirt refuses a second domain
    /// with the same UUID) and whose guest software is tied to the UUID.
    pub preserve_uuid: bool,
}

/// The `domain` section.
pub const DOMAIN: &[Field] = &[f("preserve_uuid", Kind::Bool)];

/// `domain.preserve_uuid` needs a UUID to preserve.
pub fn check_preserve_uuid(doc: &Map<String, Value>, problems: &mut Problems) {
    let wanted = doc
        .get("domain")
        .and_then(|d| d.get("preserve_uuid"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !wanted {
        return;
    }
    match doc.get("source").and_then(|s| s.get("uuid")) {
        None | Some(Value::Null) => problems.push(
            "domain.preserve_uuid",
            "domain.preserve_uuid is true but source.uuid is not set; add the source VM's UUID \
             as source.uuid, or remove domain.preserve_uuid",
        ),
        Some(u) if u.as_str().and_then(parse_uuid).is_none() => problems.push(
            "source.uuid",
            format!(
                "source.uuid must be a UUID like 6b3c2a4e-1f0d-4c3a-9b2e-0123456789ab (got {})",
                crate::diag::excerpt_value(u)
            ),
        ),
        Some(_) => {}
    }
}

/// Parses a UUID the way libvirt accepts it (32 hex digits, dashes anywhere between pairs) and
/// returns the canonical lower-case 8-4-4-4-12 form.
pub fn parse_uuid(s: &str) -> Option<String> {
    let hex: String = s.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(format_uuid(&b))
}

/// The canonical form [`parse_uuid`] returns, for UUIDs made from bytes.
pub fn format_uuid(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uuids_are_normalised() {
        assert_eq!(
            parse_uuid("6B3C2A4E1F0D4C3A9B2E0123456789AB").as_deref(),
            Some("6b3c2a4e-1f0d-4c3a-9b2e-0123456789ab")
        );
        assert_eq!(parse_uuid("6b3c2a4e-1f0d-4c3a-9b2e-0123456789a"), None);
        assert_eq!(parse_uuid("not a uuid"), None);
    }

    fn problems_of(v: Value) -> Vec<String> {
        let mut problems = Problems::default();
        let Value::Object(doc) = v else {
            panic!("test documents are objects")
        };
        check_preserve_uuid(&doc, &mut problems);
        problems.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn preserve_uuid_needs_a_valid_uuid() {
        assert!(problems_of(json!({"source": {"uuid": "x"}})).is_empty());
        assert_eq!(
            problems_of(json!({"domain": {"preserve_uuid": true}})),
            [
                "domain.preserve_uuid is true but source.uuid is not set; add the source VM's UUID as source.uuid, or remove domain.preserve_uuid"
            ]
        );
        assert_eq!(
            problems_of(json!({"domain": {"preserve_uuid": true}, "source": {"uuid": "x"}})),
            ["source.uuid must be a UUID like 6b3c2a4e-1f0d-4c3a-9b2e-0123456789ab (got \"x\")"]
        );
        assert!(
            problems_of(json!({"domain": {"preserve_uuid": true},
                "source": {"uuid": "6b3c2a4e-1f0d-4c3a-9b2e-0123456789ab"}}))
            .is_empty()
        );
    }
}
