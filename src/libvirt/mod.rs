//! libvirt in both directions: domain XML in ([`import`]: an existing domain becomes a manifest)
//! and out ([`domain`] plans and [`emit`] writes the domain a converted VM is defined with).
//!
//! Both directions read and write XML with quick-xml; input goes through [`xml`], which refuses
//! DOCTYPEs and entities and bounds what it builds, because a domain XML handed to an
//! administrator's tool may come from anywhere.

pub mod domain;
pub mod emit;
pub mod import;
pub mod xml;

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

    #[test]
    fn uuids_are_normalised() {
        assert_eq!(
            parse_uuid("6B3C2A4E1F0D4C3A9B2E0123456789AB").as_deref(),
            Some("6b3c2a4e-1f0d-4c3a-9b2e-0123456789ab")
        );
        assert_eq!(parse_uuid("6b3c2a4e-1f0d-4c3a-9b2e-0123456789a"), None);
        assert_eq!(parse_uuid("not a uuid"), None);
    }
}
