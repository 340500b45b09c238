//! Network and storage mapping applied: where a migrated VM's NICs and disks land on the KVM
//! host.
//!
//! The sections themselves (types, defaults, load-time checks) are
//! [`crate::manifest::mapping`]. Here [`plan_interfaces`] connects each NIC as `network_mapping`
//! says and decides its MAC address under the `mac_address_policy`; the planner applies
//! `storage_mapping`. The Python tool parses these sections but never applies them; this one
//! does, and decides everything before a disk is touched.
//!
//! Regenerated MACs are `52:54:00:xx:xx:xx` (the prefix libvirt and QEMU use for locally made
//! MACs). They are derived from the VM's identity and the NIC's position rather than drawn at
//! random, so a re-run or a resumed batch writes the same domain XML, and they are made unique
//! against every MAC this VM keeps and every MAC the caller reserves: a batch passes the MACs of
//! the VMs planned before this one ([`crate::plan::PlanOptions::reserved_macs`]) and adds this
//! VM's ([`crate::plan::VmPlan::macs`]) before planning the next.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::diag::Problem;
use crate::manifest::{
    ExplicitTarget, MacAddr, MacPolicy, MacvtapMode, NetworkMapping, NetworkTarget, Nic, NicModel,
    NicType, VirtualPort, Vlan,
};

// ---------------------------------------------------------------------------------------------
// MAC addresses.

/// The prefix of every MAC this tool makes.
pub const GENERATED_MAC_PREFIX: [u8; 3] = [0x52, 0x54, 0x00];

/// Candidate number `attempt` for the NIC at `index` of the VM known as `identity`.
fn generated_mac(identity: &str, index: usize, attempt: u32) -> MacAddr {
    let digest = Sha256::digest(format!("hyper2kvm mac\0{identity}\0{index}\0{attempt}"));
    let [a, b, c] = GENERATED_MAC_PREFIX;
    MacAddr([a, b, c, digest[0], digest[1], digest[2]])
}

// ---------------------------------------------------------------------------------------------
// Planning.

/// Where a mapped source network goes. Loading allowed only a bare name, `{bridge: X}` or
/// `{network: X}`, so the empty-bridge fallback is never taken.
fn connection_of(target: &NetworkTarget) -> Connection {
    match target {
        NetworkTarget::Bridge(b) => Connection::Bridge(b.clone()),
        NetworkTarget::Explicit(ExplicitTarget {
            network: Some(n), ..
        }) => Connection::Network(n.clone()),
        NetworkTarget::Explicit(ExplicitTarget { bridge, .. }) => {
            Connection::Bridge(bridge.clone().unwrap_or_default())
        }
    }
}

/// How an emitted interface is connected. Serialized as `{type, source}`, its type spelled as
/// the manifest's NIC `type` (both are libvirt's interface types).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// `<interface type='bridge'><source bridge=.../>`
    Bridge(String),
    /// `<interface type='network'><source network=.../>`
    Network(String),
    /// `<interface type='direct'><source dev=... mode='bridge'/>` (macvtap on a host NIC)
    Direct(String),
    /// `<interface type='user'>` (no host network)
    User,
}

impl Connection {
    /// The libvirt interface type.
    pub fn kind(&self) -> NicType {
        match self {
            Connection::Bridge(_) => NicType::Bridge,
            Connection::Network(_) => NicType::Network,
            Connection::Direct(_) => NicType::Direct,
            Connection::User => NicType::User,
        }
    }

    /// The bridge, network or host device; none for user-mode networking.
    pub fn source(&self) -> Option<&str> {
        match self {
            Connection::Bridge(s) | Connection::Network(s) | Connection::Direct(s) => Some(s),
            Connection::User => None,
        }
    }
}

impl Serialize for Connection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let source = self.source();
        let mut st = s.serialize_struct("Connection", 1 + usize::from(source.is_some()))?;
        st.serialize_field("type", &self.kind())?;
        if let Some(source) = source {
            st.serialize_field("source", source)?;
        }
        st.end()
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Connection::Bridge(b) => write!(f, "bridge {b}"),
            Connection::Network(n) => write!(f, "libvirt network {n}"),
            Connection::Direct(d) => write!(f, "direct (macvtap) on {d}"),
            Connection::User => f.write_str("user-mode networking"),
        }
    }
}

/// Where an interface's MAC came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MacOrigin {
    /// The source NIC's own MAC.
    Preserved,
    /// `mac_address_overrides`.
    Override,
    /// Made here (regenerate, or a source NIC without a MAC).
    Generated,
}

/// One NIC of the domain, fully decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InterfacePlan {
    pub nic_id: String,
    /// The source network name the mapping was looked up by.
    pub source_network: Option<String>,
    pub connection: Connection,
    /// Whether `network_mapping` decided the connection (rather than the source's own shape).
    pub mapped: bool,
    pub mac: MacAddr,
    pub mac_origin: MacOrigin,
    /// The source NIC's MAC, when it had one.
    pub source_mac: Option<MacAddr>,
    /// The emitted model; virtio until the planner applies its model policy.
    pub model: NicModel,
    /// The macvtap mode of a `direct` connection (libvirt's default, `vepa`, when unset; we
    /// write `bridge` then, as before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macvtap_mode: Option<MacvtapMode>,
    /// Port details the planner carries from the source while the NIC stays on the source's
    /// own bridge or network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtualport: Option<VirtualPort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<Vlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portgroup: Option<String>,
}

/// The interfaces of one VM plus what the admin should know about them.
#[derive(Clone, Debug, Default)]
pub struct NetworkPlan {
    pub interfaces: Vec<InterfacePlan>,
    pub notes: Vec<String>,
    pub problems: Vec<Problem>,
}

/// Decides each NIC's connection and MAC. `identity` seeds generated MACs (stable per VM);
/// `reserved` holds MACs other VMs of the run already use.
pub fn plan_interfaces(
    nics: &[Nic],
    mapping: &NetworkMapping,
    reserved: &BTreeSet<MacAddr>,
    identity: &str,
) -> NetworkPlan {
    let mut out = NetworkPlan::default();
    let overrides: BTreeMap<MacAddr, MacAddr> = mapping
        .mac_address_overrides
        .iter()
        .filter_map(|(k, v)| Some((MacAddr::parse(k)?, MacAddr::parse(v)?)))
        .collect();
    let mut unmapped: Vec<String> = Vec::new();

    // First the connection and any MAC the policy keeps, so generated MACs can avoid them all.
    let mut decided: Vec<Pending> = Vec::new();
    for (i, nic) in nics.iter().enumerate() {
        let id = nic.id.clone().unwrap_or_else(|| format!("net{i}"));
        let network = nic.network.clone().filter(|n| !n.is_empty());
        let mapped = network
            .as_ref()
            .and_then(|n| mapping.source_networks.get(n))
            .map(connection_of);
        let default = mapping
            .default_bridge
            .clone()
            .map(Connection::Bridge)
            .or_else(|| mapping.default_network.clone().map(Connection::Network));
        let (connection, is_mapped) = match (mapped, default, nic.kind) {
            (Some(c), _, _) => (c, true),
            // A user-mode NIC has no network to map.
            (None, _, Some(NicType::User)) => (Connection::User, false),
            (None, Some(d), _) => (d, true),
            (None, None, kind) => {
                let (c, described) = unmapped_connection(network.as_deref(), kind);
                unmapped.push(format!("{id} ({described})"));
                (c, false)
            }
        };
        let source_mac = nic.mac.as_deref().and_then(MacAddr::parse);
        let kept = match (mapping.mac_address_policy, source_mac) {
            (_, None) | (MacPolicy::Regenerate, _) => None,
            (MacPolicy::Preserve, Some(m)) => Some((m, MacOrigin::Preserved)),
            (MacPolicy::Custom, Some(m)) => Some(match overrides.get(&m) {
                Some(o) => (*o, MacOrigin::Override),
                None => (m, MacOrigin::Preserved),
            }),
        };
        decided.push(Pending {
            id,
            network,
            connection,
            mapped: is_mapped,
            kept,
        });
    }

    if !unmapped.is_empty() {
        let text = format!(
            "network_mapping does not map the network of {} {}; an unmapped NIC keeps the \
             source's connection, which must exist on the KVM host (map it in \
             network_mapping.source_networks, or set default_bridge)",
            if unmapped.len() == 1 { "NIC" } else { "NICs" },
            unmapped.join(", "),
        );
        if mapping.strict {
            out.problems.push(Problem {
                path: "network_mapping.source_networks".to_owned(),
                message: format!("{text}; network_mapping.strict is true"),
            });
        } else {
            out.notes.push(text);
        }
    }

    out.notes.extend(unused_mapping(nics, mapping));

    // Every MAC that is not ours to choose: this VM's source MACs (a regenerated MAC must not
    // repeat the original VM's, which may still be running) and the run's reserved set.
    let mut taken: BTreeSet<MacAddr> = reserved.clone();
    taken.extend(
        nics.iter()
            .filter_map(|n| n.mac.as_deref().and_then(MacAddr::parse)),
    );
    let mut kept_seen: BTreeMap<MacAddr, String> = BTreeMap::new();
    for Pending { id, kept, .. } in &decided {
        let Some((mac, _)) = kept else { continue };
        if let Some(other) = kept_seen.insert(*mac, id.clone()) {
            out.problems.push(Problem {
                path: "nics".to_owned(),
                message: format!(
                    "NICs {other} and {id} would both use MAC {mac}; use mac_address_policy: \
                     regenerate, or custom with mac_address_overrides"
                ),
            });
        } else if reserved.contains(mac) {
            out.problems.push(Problem {
                path: "nics".to_owned(),
                message: format!(
                    "NIC {id}: MAC {mac} is already used by another VM of this run; use \
                     mac_address_policy: regenerate, or custom with mac_address_overrides"
                ),
            });
        }
        taken.insert(*mac);
    }

    for (i, p) in decided.into_iter().enumerate() {
        let Pending {
            id,
            network,
            connection,
            mapped,
            kept,
        } = p;
        let source_mac = nics[i].mac.as_deref().and_then(MacAddr::parse);
        let (mac, origin) = match kept {
            Some(k) => k,
            None => {
                let mut attempt = 0;
                let mut mac = generated_mac(identity, i, attempt);
                while taken.contains(&mac) {
                    attempt += 1;
                    mac = generated_mac(identity, i, attempt);
                }
                taken.insert(mac);
                if source_mac.is_none() && mapping.mac_address_policy != MacPolicy::Regenerate {
                    out.notes.push(format!(
                        "NIC {id} has no MAC address in the manifest; it gets the new MAC {mac}"
                    ));
                }
                (mac, MacOrigin::Generated)
            }
        };
        out.interfaces.push(InterfacePlan {
            nic_id: id,
            source_network: network,
            connection,
            mapped,
            mac,
            mac_origin: origin,
            source_mac,
            model: NicModel::Virtio,
            macvtap_mode: None,
            virtualport: None,
            vlan: None,
            portgroup: None,
        });
    }

    let used: BTreeSet<MacAddr> = nics
        .iter()
        .filter_map(|n| n.mac.as_deref().and_then(MacAddr::parse))
        .collect();
    let stale: Vec<String> = overrides
        .keys()
        .filter(|m| !used.contains(m))
        .map(ToString::to_string)
        .collect();
    if !overrides.is_empty() && mapping.mac_address_policy != MacPolicy::Custom {
        out.notes.push(format!(
            "network_mapping.mac_address_overrides is set but mac_address_policy is '{}'; the \
             overrides are not applied (they apply only with mac_address_policy: custom)",
            mapping.mac_address_policy.name()
        ));
    }
    if !stale.is_empty() && mapping.mac_address_policy == MacPolicy::Custom {
        out.notes.push(format!(
            "network_mapping.mac_address_overrides names MACs no NIC of this VM has: {}",
            stale.join(", ")
        ));
    }
    out
}

/// What a network mapping says that matches nothing: a mapping for a VM without NICs, and
/// `source_networks` entries no NIC is on (they must match `nics[].network` exactly).
fn unused_mapping(nics: &[Nic], mapping: &NetworkMapping) -> Option<String> {
    let given = !mapping.source_networks.is_empty()
        || mapping.default_bridge.is_some()
        || mapping.default_network.is_some();
    if !given {
        return None;
    }
    if nics.is_empty() {
        return Some(
            "network_mapping is set, but the VM has no network interface (the manifest lists              no nics), so nothing is mapped and the domain gets no network; list the VM's NICs              under nics (with network and mac) to have them mapped"
                .to_owned(),
        );
    }
    let on: BTreeSet<&str> = nics.iter().filter_map(|n| n.network.as_deref()).collect();
    let unmatched: Vec<String> = mapping
        .source_networks
        .keys()
        .filter(|k| !on.contains(k.as_str()))
        .map(|k| format!("'{k}'"))
        .collect();
    if unmatched.is_empty() {
        return None;
    }
    let actual: Vec<String> = nics
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let id = n.id.clone().unwrap_or_else(|| format!("net{i}"));
            match n.network.as_deref().filter(|n| !n.is_empty()) {
                Some(net) => format!("{id} on '{net}'"),
                None => format!("{id} on no network"),
            }
        })
        .collect();
    Some(format!(
        "network_mapping.source_networks maps {} {}, which no NIC of this VM is on (the NICs: \
         {}); use the NICs' network names as the keys (they must match nics[].network exactly), \
         or remove the {}",
        if unmatched.len() == 1 {
            "the network"
        } else {
            "the networks"
        },
        unmatched.join(", "),
        actual.join(", "),
        if unmatched.len() == 1 {
            "entry"
        } else {
            "entries"
        },
    ))
}

/// A NIC whose connection is decided and whose MAC may still have to be made.
struct Pending {
    id: String,
    network: Option<String>,
    connection: Connection,
    mapped: bool,
    /// The MAC the policy keeps (preserved or overridden); `None` means make one.
    kept: Option<(MacAddr, MacOrigin)>,
}

/// The connection an unmapped NIC keeps, and how to name it in the warning.
fn unmapped_connection(network: Option<&str>, kind: Option<NicType>) -> (Connection, String) {
    match (network, kind) {
        (Some(n), Some(NicType::Bridge)) => {
            (Connection::Bridge(n.to_owned()), format!("bridge '{n}'"))
        }
        (Some(n), Some(NicType::Direct)) => (
            Connection::Direct(n.to_owned()),
            format!("direct on host device '{n}'"),
        ),
        (Some(n), Some(NicType::Network)) => (
            Connection::Network(n.to_owned()),
            format!("libvirt network '{n}'"),
        ),
        (Some(n), _) => (
            Connection::Network(n.to_owned()),
            format!("network '{n}', emitted as the libvirt network '{n}'"),
        ),
        (None, _) => (
            Connection::Network("default".to_owned()),
            "no source network, emitted on the libvirt network 'default'".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Problems;
    use crate::manifest::mapping::check_network_mapping;
    use serde_json::{Value, json};

    fn nic(id: &str, network: Option<&str>, mac: Option<&str>, kind: Option<NicType>) -> Nic {
        Nic {
            id: Some(id.to_owned()),
            mac: mac.map(str::to_owned),
            network: network.map(str::to_owned),
            kind,
            ..Nic::default()
        }
    }

    fn mapping(v: Value) -> NetworkMapping {
        let mut problems = Problems::default();
        check_network_mapping("network_mapping", &v, &mut problems);
        assert!(problems.is_empty(), "{:?}", problems.0);
        serde_json::from_value(v).expect("typed")
    }

    #[test]
    fn connections_serialize_as_type_and_source() {
        assert_eq!(
            serde_json::to_value(Connection::Bridge("br0".into())).expect("json"),
            json!({"type": "bridge", "source": "br0"})
        );
        assert_eq!(
            serde_json::to_value(Connection::Direct("eth0".into())).expect("json"),
            json!({"type": "direct", "source": "eth0"})
        );
        assert_eq!(
            serde_json::to_value(Connection::User).expect("json"),
            json!({"type": "user"})
        );
    }

    #[test]
    fn preserve_keeps_source_macs_and_maps_networks() {
        let nics = [
            nic("net0", Some("VM Network"), Some("00:50:56:aa:bb:01"), None),
            nic("net1", Some("DMZ"), Some("00:50:56:aa:bb:02"), None),
        ];
        let m =
            mapping(json!({"source_networks": {"VM Network": "br0", "DMZ": {"network": "dmz"}}}));
        let plan = plan_interfaces(&nics, &m, &BTreeSet::new(), "vm");
        assert!(plan.problems.is_empty() && plan.notes.is_empty());
        assert_eq!(
            plan.interfaces[0].connection,
            Connection::Bridge("br0".into())
        );
        assert_eq!(
            plan.interfaces[1].connection,
            Connection::Network("dmz".into())
        );
        assert_eq!(plan.interfaces[0].mac.to_string(), "00:50:56:aa:bb:01");
        assert_eq!(plan.interfaces[0].mac_origin, MacOrigin::Preserved);
    }

    #[test]
    fn regenerate_makes_unique_stable_local_macs() {
        let nics: Vec<Nic> = (0..4)
            .map(|i| {
                nic(
                    &format!("n{i}"),
                    Some("lan"),
                    Some("00:50:56:aa:bb:01"),
                    None,
                )
            })
            .collect();
        let m = mapping(json!({"mac_address_policy": "regenerate", "default_bridge": "br0"}));
        let a = plan_interfaces(&nics, &m, &BTreeSet::new(), "vm-a");
        let again = plan_interfaces(&nics, &m, &BTreeSet::new(), "vm-a");
        assert_eq!(a.interfaces, again.interfaces, "stable across runs");
        let macs: BTreeSet<MacAddr> = a.interfaces.iter().map(|i| i.mac).collect();
        assert_eq!(macs.len(), 4);
        for i in &a.interfaces {
            assert_eq!(i.mac.0[..3], GENERATED_MAC_PREFIX);
            assert_eq!(i.mac_origin, MacOrigin::Generated);
        }
        // A batch reserves what earlier VMs use: the same identity must then move elsewhere.
        let reserved: BTreeSet<MacAddr> = macs.clone();
        let b = plan_interfaces(&nics, &m, &reserved, "vm-a");
        assert!(b.interfaces.iter().all(|i| !reserved.contains(&i.mac)));
        assert!(b.problems.is_empty());
    }

    #[test]
    fn custom_uses_overrides_and_keeps_the_rest() {
        let nics = [
            nic("a", Some("lan"), Some("00:50:56:aa:bb:01"), None),
            nic("b", Some("lan"), Some("00:50:56:aa:bb:02"), None),
        ];
        let m = mapping(
            json!({"mac_address_policy": "custom", "default_bridge": "br0",
            "mac_address_overrides": {"00:50:56:AA:BB:01": "52:54:00:12:34:56",
                                       "00:50:56:aa:bb:99": "52:54:00:12:34:57"}}),
        );
        let plan = plan_interfaces(&nics, &m, &BTreeSet::new(), "vm");
        assert_eq!(plan.interfaces[0].mac.to_string(), "52:54:00:12:34:56");
        assert_eq!(plan.interfaces[0].mac_origin, MacOrigin::Override);
        assert_eq!(plan.interfaces[1].mac.to_string(), "00:50:56:aa:bb:02");
        assert_eq!(plan.interfaces[1].mac_origin, MacOrigin::Preserved);
        assert_eq!(
            plan.notes,
            [
                "network_mapping.mac_address_overrides names MACs no NIC of this VM has: 00:50:56:aa:bb:99"
            ]
        );
    }

    #[test]
    fn unmapped_networks_warn_or_fail_when_strict() {
        let nics = [
            nic("net0", Some("VM Network"), None, None),
            nic("net1", Some("br-old"), None, Some(NicType::Bridge)),
            nic("net2", Some("mapped"), None, None),
        ];
        let m = mapping(json!({"source_networks": {"mapped": "br0"}}));
        let plan = plan_interfaces(&nics, &m, &BTreeSet::new(), "vm");
        assert!(plan.problems.is_empty());
        assert_eq!(
            plan.interfaces[0].connection,
            Connection::Network("VM Network".into())
        );
        assert_eq!(
            plan.interfaces[1].connection,
            Connection::Bridge("br-old".into())
        );
        assert!(!plan.interfaces[0].mapped && plan.interfaces[2].mapped);
        let warning = plan
            .notes
            .iter()
            .find(|n| n.contains("does not map"))
            .expect("warned");
        assert!(warning.contains("net0 (network 'VM Network'"), "{warning}");
        assert!(warning.contains("net1 (bridge 'br-old')"), "{warning}");
        assert!(!warning.contains("net2"), "{warning}");

        let unused = plan
            .notes
            .iter()
            .find(|n| n.contains("no NIC of this VM is on"))
            .map(String::as_str);
        assert_eq!(unused, None, "every entry matches a NIC: {:?}", plan.notes);
        let typo = mapping(json!({"source_networks": {"VM Netwrk": "br0", "mapped": "br1"}}));
        let plan = plan_interfaces(&nics, &typo, &BTreeSet::new(), "vm");
        let unused = plan
            .notes
            .iter()
            .find(|n| n.contains("no NIC of this VM is on"))
            .expect("the unmatched entry is named");
        assert!(unused.contains("the network 'VM Netwrk'"), "{unused}");
        assert!(!unused.contains("'mapped',"), "{unused}");
        assert!(unused.contains("net0 on 'VM Network'"), "{unused}");
        let plan = plan_interfaces(&[], &typo, &BTreeSet::new(), "vm");
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("no network interface")),
            "{:?}",
            plan.notes
        );
        let plan = plan_interfaces(&[], &NetworkMapping::default(), &BTreeSet::new(), "vm");
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);

        let strict = mapping(json!({"source_networks": {"mapped": "br0"}, "strict": true}));
        let plan = plan_interfaces(&nics, &strict, &BTreeSet::new(), "vm");
        assert_eq!(plan.problems.len(), 1);
        assert!(plan.problems[0].message.contains("'VM Network'"));
    }

    #[test]
    fn preserved_duplicates_and_reserved_macs_are_problems() {
        let nics = [
            nic("a", Some("lan"), Some("00:50:56:aa:bb:01"), None),
            nic("b", Some("lan"), Some("00:50:56:aa:bb:01"), None),
        ];
        let m = mapping(json!({"default_bridge": "br0"}));
        let plan = plan_interfaces(&nics, &m, &BTreeSet::new(), "vm");
        assert_eq!(plan.problems.len(), 1, "{:?}", plan.problems);
        let reserved = BTreeSet::from([MacAddr::parse("00:50:56:aa:bb:01").expect("mac")]);
        let plan = plan_interfaces(&nics[..1], &m, &reserved, "vm");
        assert!(
            plan.problems[0]
                .message
                .contains("already used by another VM")
        );
    }
}
