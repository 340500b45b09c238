//! `nics`: the source VM's network interfaces, and the MAC address they are identified by.
//!
//! A NIC is looked up by its source network in `network_mapping` and keeps or replaces its MAC
//! under the MAC policy, so its MAC must be well-formed and unicast and its id unique before
//! anything is planned. [`MacAddr`] lives here, with the NICs, because the manifest is where MACs
//! enter: the mapping's overrides, the planner and the libvirt reader all parse them with it.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schema::{Field, Kind, f};
use crate::diag::Problems;
use crate::spelling::spelled_enum;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The source network (port group, libvirt network, bridge or host device) that
    /// `network_mapping.source_networks` is looked up by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// How the source connected it, when known (libvirt's interface type).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<NicType>,
    /// The source's NIC model (e1000, vmxnet3, virtio...). The planner keeps it for a guest
    /// that may lack virtio drivers (Windows) and uses virtio otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The model the emitted domain uses, named by the admin: always honoured, over the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_model: Option<NicModel>,
    /// The macvtap mode of a `direct` NIC (`<source dev mode>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvtap_mode: Option<MacvtapMode>,
    /// `<virtualport type='openvswitch'>`: the NIC is a port of an Open vSwitch bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtualport: Option<VirtualPort>,
    /// `<vlan>`: the VLAN tags of the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<Vlan>,
    /// `<source network portgroup>`: the port group of a libvirt network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portgroup: Option<String>,
}

spelled_enum! {
    /// The NIC models of qemu's x86 machines that a domain may name.
    pub enum NicModel {
        Virtio = "virtio",
        E1000 = "e1000",
        E1000e = "e1000e",
        Igb = "igb",
        Rtl8139 = "rtl8139",
        Vmxnet3 = "vmxnet3",
        Pcnet = "pcnet",
        Ne2kPci = "ne2k_pci",
    }
}

spelled_enum! {
    /// libvirt's macvtap modes (`<interface type='direct'><source mode>`).
    pub enum MacvtapMode {
        Vepa = "vepa",
        Bridge = "bridge",
        Private = "private",
        Passthrough = "passthrough",
    }
}

spelled_enum! {
    /// The virtual port types carried (others are dropped at import, with a note).
    pub enum VirtualPortType {
        Openvswitch = "openvswitch",
    }
}

spelled_enum! {
    /// How a trunk's native VLAN is sent (`<tag nativeMode>`).
    pub enum NativeMode {
        Tagged = "tagged",
        Untagged = "untagged",
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualPort {
    #[serde(rename = "type")]
    pub kind: VirtualPortType,
    /// `<parameters interfaceid>`: the port's id in Open vSwitch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaceid: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Vlan {
    /// `<vlan trunk='yes'>`: the port carries several VLANs, tagged.
    #[serde(default)]
    pub trunk: bool,
    pub tags: Vec<VlanTag>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VlanTag {
    pub id: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_mode: Option<NativeMode>,
}

/// The highest VLAN id (802.1Q's 12 bits).
pub const MAX_VLAN_ID: i64 = 4095;

spelled_enum! {
    /// The libvirt interface types a migrated NIC can keep.
    pub enum NicType {
        Bridge = "bridge",
        Network = "network",
        Direct = "direct",
        User = "user",
    }
}

/// One item of `nics`.
pub const NIC: &[Field] = &[
    f("id", Kind::Str),
    f("mac", Kind::Str),
    f("network", Kind::Str),
    f("type", Kind::Enum(NicType::NAMES)),
    f("model", Kind::Str),
    f("domain_model", Kind::Enum(NicModel::NAMES)),
    f("macvtap_mode", Kind::Enum(MacvtapMode::NAMES)),
    f(
        "virtualport",
        Kind::Object(&[
            f("type", Kind::Enum(VirtualPortType::NAMES)),
            f("interfaceid", Kind::Str),
        ]),
    ),
    f(
        "vlan",
        Kind::Object(&[
            f("trunk", Kind::Bool),
            f(
                "tags",
                Kind::ObjectList(&[
                    f(
                        "id",
                        Kind::Int {
                            min: 0,
                            max: MAX_VLAN_ID,
                        },
                    ),
                    f("native_mode", Kind::Enum(NativeMode::NAMES)),
                ]),
            ),
        ]),
    ),
    f("portgroup", Kind::Str),
];

/// A MAC address, shown lower-case with colons (the form libvirt writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`, any case.
    pub fn parse(s: &str) -> Option<Self> {
        if !is_mac(s) {
            return None;
        }
        let mut bytes = [0u8; 6];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[i * 3..i * 3 + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// A NIC address must be unicast: libvirt refuses a multicast bit in the first octet.
    pub fn is_unicast(self) -> bool {
        self.0[0] & 1 == 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("not a MAC address: '{}'", crate::diag::excerpt(&s)))
        })
    }
}

/// `^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$`
pub fn is_mac(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 17
        && b.iter().enumerate().all(|(i, c)| {
            if i % 3 == 2 {
                *c == b':' || *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// What the [`NIC`] table cannot say: unique ids and unicast MACs, then well-formed MACs. Each
/// is a pass over every NIC, so the problems come in the order they always have.
pub fn check(nics: &[Value], problems: &mut Problems) {
    let mut ids = BTreeSet::new();
    for (i, nic) in nics.iter().enumerate() {
        if let Some(id) = nic.get("id").and_then(Value::as_str)
            && !ids.insert(id)
        {
            problems.push(&format!("nics[{i}].id"), format!("Duplicate NIC id: {id}"));
        }
        if let Some(mac) = nic
            .get("mac")
            .and_then(Value::as_str)
            .and_then(MacAddr::parse)
            && !mac.is_unicast()
        {
            problems.push(
                &format!("nics[{i}].mac"),
                format!(
                    "nics[{i}].mac {mac} is a multicast address; a NIC needs a unicast MAC (even \
                     first octet)"
                ),
            );
        }
    }
    // What the table cannot say: the keys these objects must have.
    for (i, nic) in nics.iter().enumerate() {
        if let Some(vp) = nic.get("virtualport").and_then(Value::as_object) {
            if !vp.contains_key("type") {
                problems.push(
                    &format!("nics[{i}].virtualport.type"),
                    format!("nics[{i}].virtualport needs a type (one of: openvswitch)"),
                );
            }
            if let Some(id) = vp.get("interfaceid").and_then(Value::as_str)
                && super::domain::parse_uuid(id).is_none()
            {
                problems.push(
                    &format!("nics[{i}].virtualport.interfaceid"),
                    format!(
                        "nics[{i}].virtualport.interfaceid must be a UUID, as libvirt requires \
                         (got: '{}')",
                        crate::diag::excerpt(id)
                    ),
                );
            }
        }
        if let Some(vlan) = nic.get("vlan").and_then(Value::as_object) {
            match vlan.get("tags").and_then(Value::as_array) {
                Some(tags) if !tags.is_empty() => {
                    for (t, tag) in tags.iter().enumerate() {
                        if tag.is_object() && tag.get("id").is_none() {
                            problems.push(
                                &format!("nics[{i}].vlan.tags[{t}].id"),
                                format!("nics[{i}].vlan.tags[{t}] needs an id (0 to 4095)"),
                            );
                        }
                    }
                }
                _ => problems.push(
                    &format!("nics[{i}].vlan.tags"),
                    format!("nics[{i}].vlan needs tags: a list of at least one {{id: 0 to 4095}}"),
                ),
            }
        }
    }
    for (i, nic) in nics.iter().enumerate() {
        if let Some(mac) = nic.get("mac").and_then(Value::as_str)
            && !is_mac(mac)
        {
            problems.push(
                &format!("nics[{i}].mac"),
                format!(
                    "nics[{i}].mac must be a MAC address like 00:50:56:aa:bb:cc (got: '{mac}')"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mac_pattern() {
        assert!(is_mac("00:50:56:AA:bb:cc"));
        assert!(is_mac("00-50-56-aa-bb-cc"));
        assert!(!is_mac("00:50:56:aa:bb"));
    }

    #[test]
    fn mac_parsing_and_display() {
        let m = MacAddr::parse("00-50-56-AB-CD-EF").expect("valid");
        assert_eq!(m.to_string(), "00:50:56:ab:cd:ef");
        assert!(m.is_unicast());
        assert!(
            !MacAddr::parse("01:00:5e:00:00:01")
                .expect("valid")
                .is_unicast()
        );
        assert_eq!(MacAddr::parse("00:50:56:ab:cd"), None);
        assert_eq!(MacAddr::parse("zz:50:56:ab:cd:ef"), None);
    }

    #[test]
    fn duplicate_ids_multicast_and_malformed_macs() {
        let nics = json!([
            {"id": "a", "mac": "01:00:5e:00:00:01"},
            {"id": "a", "mac": "00:50:56:aa:bb"},
        ]);
        let mut problems = Problems::default();
        check(nics.as_array().expect("list"), &mut problems);
        let got: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "nics[0].mac 01:00:5e:00:00:01 is a multicast address; a NIC needs a unicast MAC (even first octet)",
                "nics[1].id: Duplicate NIC id: a",
                "nics[1].mac must be a MAC address like 00:50:56:aa:bb:cc (got: '00:50:56:aa:bb')",
            ]
        );
    }
}
