//! libvirt in both directions: domain XML in ([`import`]: an existing domain becomes a manifest)
//! and out ([`domain`] plans and [`emit`] writes the domain a converted VM is defined with).
//!
//! Both directions read and write XML with quick-xml; input goes through [`xml`], which refuses
//! DOCTYPEs and entities and bounds what it builds, because a domain XML handed to an
//! administrator's tool may come from anywhere. UUIDs are read and written in the form
//! [`crate::manifest::domain::parse_uuid`] gives, the parser `domain.preserve_uuid` is checked
//! with when the manifest is loaded.

pub mod domain;
pub mod emit;
pub mod import;
pub mod xml;
