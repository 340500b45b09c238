//! Network and storage mapping: where a migrated VM's NICs and disks land on the KVM host.
//!
//! `network_mapping` connects each source network (a vSphere port group, a libvirt network or
//! bridge) to a host bridge or libvirt network and decides every NIC's MAC address under the
//! `mac_address_policy`. `storage_mapping` places each disk's output in a directory, overrides the
//! output format and asks qemu-img to preallocate. The Python tool parses these sections but never
//! applies them; here [`plan_interfaces`] and the planner apply them, and everything is decided
//! before a disk is touched.
//!
//! Regenerated MACs are `52:54:00:xx:xx:xx` (the prefix libvirt and QEMU use for locally made
//! MACs). They are derived from the VM's identity and the NIC's position rather than drawn at
//! random, so a re-run or a resumed batch writes the same domain XML, and they are made unique
//! against every MAC this VM keeps and every MAC the caller reserves: a batch passes the MACs of
//! the VMs planned before this one ([`crate::plan::PlanOptions::reserved_macs`]) and adds this
//! VM's ([`crate::plan::VmPlan::macs`]) before planning the next.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::kind_of;
use crate::diag::{Problem, Problems, join};
use crate::manifest::schema::{self, Kind};
use crate::manifest::{MacAddr, Nic, NicType, OutputFormat};
use crate::spelling::spelled_enum;

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
// The manifest sections, typed. Validation ([`check_network_mapping`], [`check_storage_mapping`])
// runs on the raw document first, so deserialising these never fails on user input.

spelled_enum! {
    #[derive(Default)]
    pub enum MacPolicy {
        #[default]
        Preserve = "preserve",
        Regenerate = "regenerate",
        Custom = "custom",
    }
}

/// Where a source network goes: a bare name is a host bridge (upstream's form); `{bridge: X}` or
/// `{network: X}` says which explicitly.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum NetworkTarget {
    Bridge(String),
    Explicit(ExplicitTarget),
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExplicitTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

impl NetworkTarget {
    fn connection(&self) -> Connection {
        match self {
            NetworkTarget::Bridge(b) => Connection::Bridge(b.clone()),
            NetworkTarget::Explicit(ExplicitTarget {
                network: Some(n), ..
            }) => Connection::Network(n.clone()),
            NetworkTarget::Explicit(ExplicitTarget { bridge, .. }) => {
                Connection::Bridge(bridge.clone().unwrap_or_default())
            }
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkMapping {
    pub source_networks: BTreeMap<String, NetworkTarget>,
    pub default_bridge: Option<String>,
    pub default_network: Option<String>,
    pub mac_address_policy: MacPolicy,
    pub mac_address_overrides: BTreeMap<String, String>,
    /// An unmapped source network is an error instead of a warning.
    pub strict: bool,
}

spelled_enum! {
    /// qemu-img's `preallocation` modes (`off` is the same as not asking).
    pub enum Preallocation {
        Off = "off",
        Metadata = "metadata",
        Falloc = "falloc",
        Full = "full",
    }
}

/// `preallocate: true|false` (upstream's form) or a qemu-img mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PreallocateSetting {
    Enabled(bool),
    Mode(Preallocation),
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageMapping {
    pub default_pool: Option<String>,
    /// Disk id → the directory its output is written to.
    pub disk_mappings: BTreeMap<String, String>,
    pub format_override: Option<OutputFormat>,
    pub preallocate: Option<PreallocateSetting>,
}

impl StorageMapping {
    /// The qemu-img mode to pass, if any. `true` means `falloc`: the space is reserved up front
    /// (what an admin asking for preallocation wants) without the time `full` spends writing zeros.
    pub fn preallocation(&self) -> Option<Preallocation> {
        match self.preallocate? {
            PreallocateSetting::Enabled(true) => Some(Preallocation::Falloc),
            PreallocateSetting::Enabled(false) | PreallocateSetting::Mode(Preallocation::Off) => {
                None
            }
            PreallocateSetting::Mode(mode) => Some(mode),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation of the raw sections (called through the manifest schema table).

const NETWORK_KEYS: &[&str] = &[
    "source_networks",
    "default_bridge",
    "default_network",
    "mac_address_policy",
    "mac_address_overrides",
    "strict",
];
const STORAGE_KEYS: &[&str] = &[
    "default_pool",
    "disk_mappings",
    "format_override",
    "preallocate",
];

fn non_empty_name(path: &str, value: &Value, what: &str, problems: &mut Problems) {
    match value.as_str() {
        Some(s) if !s.trim().is_empty() => {}
        _ => problems.push(
            path,
            format!(
                "{path} must be a non-empty {what} (got {}: {value})",
                kind_of(value)
            ),
        ),
    }
}

/// `network_mapping`: every problem, each with its field path.
pub fn check_network_mapping(path: &str, value: &Value, problems: &mut Problems) {
    let Some(map) = value.as_object() else {
        problems.push(
            path,
            format!("{path} must be a mapping (got {}: {value})", kind_of(value)),
        );
        return;
    };
    problems.unknown_keys(path, map, NETWORK_KEYS);
    if let Some(nets) = map.get("source_networks") {
        let here = join(path, "source_networks");
        match nets.as_object() {
            Some(nets) => {
                for (name, target) in nets {
                    check_target(&join(&here, name), target, problems);
                }
            }
            None => problems.push(
                &here,
                format!(
                    "{here} must be a mapping of source network name to bridge (got {}: {nets})",
                    kind_of(nets)
                ),
            ),
        }
    }
    for key in ["default_bridge", "default_network"] {
        if let Some(v) = map.get(key).filter(|v| !v.is_null()) {
            let what = if key == "default_bridge" {
                "bridge name"
            } else {
                "libvirt network name"
            };
            non_empty_name(&join(path, key), v, what, problems);
        }
    }
    let set = |k: &str| map.get(k).is_some_and(|v| !v.is_null());
    if set("default_bridge") && set("default_network") {
        problems.push(
            &join(path, "default_network"),
            "set default_bridge or default_network, not both (unmapped networks can go to only \
             one place)",
        );
    }
    let policy = map.get("mac_address_policy");
    if let Some(p) = policy {
        schema::check_value(
            &join(path, "mac_address_policy"),
            p,
            &Kind::Enum(MacPolicy::NAMES),
            problems,
        );
    }
    if let Some(overrides) = map.get("mac_address_overrides") {
        let here = join(path, "mac_address_overrides");
        match overrides.as_object() {
            Some(o) => {
                check_overrides(&here, o, problems);
                let shown = policy
                    .and_then(Value::as_str)
                    .unwrap_or(MacPolicy::default().name());
                // An invalid policy is reported on its own; say nothing more about it here.
                let named = MacPolicy::from_name(shown);
                if !o.is_empty() && named.is_some_and(|p| p != MacPolicy::Custom) {
                    problems.push(
                        &here,
                        format!(
                            "{here} is set but mac_address_policy is '{shown}'; overrides apply \
                             only with mac_address_policy: custom"
                        ),
                    );
                }
            }
            None => problems.push(
                &here,
                format!(
                    "{here} must be a mapping of source MAC to new MAC (got {}: {overrides})",
                    kind_of(overrides)
                ),
            ),
        }
    }
    if let Some(s) = map.get("strict") {
        schema::check_value(&join(path, "strict"), s, &Kind::Bool, problems);
    }
}

fn check_target(path: &str, target: &Value, problems: &mut Problems) {
    let expected = "a bridge name, {bridge: NAME} or {network: NAME}";
    match target {
        Value::String(s) if !s.trim().is_empty() => {}
        Value::Object(o) => {
            let names: Vec<&String> = o.keys().collect();
            let ok = o.len() == 1
                && matches!(names[0].as_str(), "bridge" | "network")
                && o.values()
                    .all(|v| v.as_str().is_some_and(|s| !s.trim().is_empty()));
            if !ok {
                problems.push(path, format!("{path} must be {expected} (got {target})"));
            }
        }
        _ => problems.push(path, format!("{path} must be {expected} (got {target})")),
    }
}

fn check_overrides(path: &str, overrides: &Map<String, Value>, problems: &mut Problems) {
    let mut sources = BTreeMap::new();
    let mut targets: BTreeMap<MacAddr, &str> = BTreeMap::new();
    for (from, to) in overrides {
        let here = join(path, from);
        match MacAddr::parse(from) {
            Some(mac) => {
                if let Some(earlier) = sources.insert(mac, from.as_str()) {
                    problems.push(
                        &here,
                        format!("{here}: the same source MAC as '{earlier}' is overridden twice"),
                    );
                }
            }
            None => problems.push(
                &here,
                format!(
                    "Invalid MAC address format: {from} (expected six hex pairs like \
                     00:50:56:aa:bb:cc)"
                ),
            ),
        }
        match to.as_str().map(|s| (s, MacAddr::parse(s))) {
            Some((_, Some(mac))) if !mac.is_unicast() => problems.push(
                &here,
                format!(
                    "{here}: {mac} is a multicast address; a NIC needs a unicast MAC (even first \
                     octet)"
                ),
            ),
            Some((_, Some(mac))) => {
                if let Some(other) = targets.insert(mac, from.as_str()) {
                    problems.push(
                        &here,
                        format!(
                            "{here}: {mac} is also the override for '{other}'; two NICs cannot \
                             share a MAC"
                        ),
                    );
                }
            }
            Some((s, None)) => problems.push(
                &here,
                format!(
                    "Invalid MAC address format: {s} (expected six hex pairs like \
                     52:54:00:12:34:56)"
                ),
            ),
            None => problems.push(
                &here,
                format!(
                    "{here} must be a MAC address string (got {}: {to})",
                    kind_of(to)
                ),
            ),
        }
    }
}

/// `storage_mapping`: every problem, each with its field path. Whether `disk_mappings` names
/// existing disks is checked by [`check_disk_mapping_ids`], which sees the whole manifest.
pub fn check_storage_mapping(path: &str, value: &Value, problems: &mut Problems) {
    let Some(map) = value.as_object() else {
        problems.push(
            path,
            format!("{path} must be a mapping (got {}: {value})", kind_of(value)),
        );
        return;
    };
    problems.unknown_keys(path, map, STORAGE_KEYS);
    if let Some(pool) = map.get("default_pool").filter(|v| !v.is_null()) {
        let here = join(path, "default_pool");
        non_empty_name(&here, pool, "libvirt storage pool name", problems);
        if pool.as_str().is_some_and(|s| s.contains('/')) {
            problems.push(
                &here,
                format!("{here} names a libvirt storage pool, not a path (got '{pool}')"),
            );
        }
    }
    if let Some(dm) = map.get("disk_mappings") {
        let here = join(path, "disk_mappings");
        match dm.as_object() {
            Some(dm) => {
                for (id, dir) in dm {
                    non_empty_name(&join(&here, id), dir, "directory path", problems);
                }
            }
            None => problems.push(
                &here,
                format!(
                    "{here} must be a mapping of disk id to directory (got {}: {dm})",
                    kind_of(dm)
                ),
            ),
        }
    }
    if let Some(f) = map.get("format_override").filter(|v| !v.is_null()) {
        schema::check_value(
            &join(path, "format_override"),
            f,
            &Kind::Enum(OutputFormat::NAMES),
            problems,
        );
    }
    if let Some(p) = map.get("preallocate").filter(|v| !v.is_null()) {
        let here = join(path, "preallocate");
        let ok = p.is_boolean()
            || p.as_str()
                .is_some_and(|s| Preallocation::NAMES.contains(&s));
        if !ok {
            problems.push(
                &here,
                format!(
                    "{here} must be true, false or one of: {} (got {}: {p})",
                    Preallocation::NAMES.join(", "),
                    kind_of(p)
                ),
            );
        }
    }
}

/// `storage_mapping.disk_mappings` may only name disks the manifest has.
pub fn check_disk_mapping_ids(doc: &Map<String, Value>, problems: &mut Problems) {
    let Some(dm) = doc
        .get("storage_mapping")
        .and_then(|s| s.get("disk_mappings"))
        .and_then(Value::as_object)
    else {
        return;
    };
    let ids: Vec<&str> = doc
        .get("disks")
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .filter_map(|d| d.get("id").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    for key in dm.keys() {
        if !ids.contains(&key.as_str()) {
            let hint = crate::diag::suggest(key, &ids)
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_else(|| format!("; the disks are: {}", ids.join(", ")));
            let here = format!("storage_mapping.disk_mappings.{key}");
            problems.push(&here, format!("{here}: no disk has the id '{key}'{hint}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Planning.

/// How an emitted interface is connected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "source", rename_all = "lowercase")]
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
            .map(NetworkTarget::connection);
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
    if !stale.is_empty() && mapping.mac_address_policy == MacPolicy::Custom {
        out.notes.push(format!(
            "network_mapping.mac_address_overrides names MACs no NIC of this VM has: {}",
            stale.join(", ")
        ));
    }
    out
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
    use serde_json::json;

    fn nic(id: &str, network: Option<&str>, mac: Option<&str>, kind: Option<NicType>) -> Nic {
        Nic {
            id: Some(id.to_owned()),
            mac: mac.map(str::to_owned),
            network: network.map(str::to_owned),
            kind,
            model: None,
        }
    }

    fn mapping(v: Value) -> NetworkMapping {
        let mut problems = Problems::default();
        check_network_mapping("network_mapping", &v, &mut problems);
        assert!(problems.is_empty(), "{:?}", problems.0);
        serde_json::from_value(v).expect("typed")
    }

    fn problems_of(f: fn(&str, &Value, &mut Problems), path: &str, v: Value) -> Vec<String> {
        let mut problems = Problems::default();
        f(path, &v, &mut problems);
        problems.0.iter().map(ToString::to_string).collect()
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

    #[test]
    fn network_mapping_validation_reports_everything() {
        let got = problems_of(
            check_network_mapping,
            "network_mapping",
            json!({"source_network": {}, "source_networks": {"a": 3, "b": {"bridge": "x", "network": "y"}},
                   "default_bridge": "br0", "default_network": "",
                   "mac_address_policy": "random", "strict": "yes",
                   "mac_address_overrides": {"zz": "01:00:5e:00:00:01", "00:50:56:00:00:01": "52:54:00:00:00:0"}}),
        );
        assert_eq!(
            got,
            [
                "network_mapping.source_network: unknown key 'source_network' (did you mean 'source_networks'?)",
                "network_mapping.source_networks.a must be a bridge name, {bridge: NAME} or {network: NAME} (got 3)",
                "network_mapping.source_networks.b must be a bridge name, {bridge: NAME} or {network: NAME} (got {\"bridge\":\"x\",\"network\":\"y\"})",
                "network_mapping.default_network must be a non-empty libvirt network name (got a string: \"\")",
                "network_mapping.default_network: set default_bridge or default_network, not both (unmapped networks can go to only one place)",
                "network_mapping.mac_address_policy must be one of: preserve, regenerate, custom (got: 'random')",
                "network_mapping.mac_address_overrides.zz: Invalid MAC address format: zz (expected six hex pairs like 00:50:56:aa:bb:cc)",
                "network_mapping.mac_address_overrides.zz: 01:00:5e:00:00:01 is a multicast address; a NIC needs a unicast MAC (even first octet)",
                "network_mapping.mac_address_overrides.00:50:56:00:00:01: Invalid MAC address format: 52:54:00:00:00:0 (expected six hex pairs like 52:54:00:12:34:56)",
                "network_mapping.strict must be a boolean (true or false) (got a string: \"yes\")",
            ]
        );
    }

    #[test]
    fn storage_mapping_validation_and_preallocation() {
        let got = problems_of(
            check_storage_mapping,
            "storage_mapping",
            json!({"default_pool": "/var/lib/x", "disk_mappings": {"d0": ""}, "format_override": "QCOW2",
                   "preallocate": "sometimes", "pool": 1}),
        );
        assert_eq!(
            got,
            [
                "storage_mapping.pool: unknown key 'pool'; expected one of: default_pool, disk_mappings, format_override, preallocate",
                "storage_mapping.default_pool names a libvirt storage pool, not a path (got '\"/var/lib/x\"')",
                "storage_mapping.disk_mappings.d0 must be a non-empty directory path (got a string: \"\")",
                "storage_mapping.format_override must be one of: qcow2, raw, vdi (got: 'QCOW2')",
                "storage_mapping.preallocate must be true, false or one of: off, metadata, falloc, full (got a string: \"sometimes\")",
            ]
        );
        let s: StorageMapping =
            serde_json::from_value(json!({"preallocate": true})).expect("typed");
        assert_eq!(s.preallocation(), Some(Preallocation::Falloc));
        let s: StorageMapping =
            serde_json::from_value(json!({"preallocate": "full"})).expect("typed");
        assert_eq!(s.preallocation(), Some(Preallocation::Full));
        let s: StorageMapping =
            serde_json::from_value(json!({"preallocate": false})).expect("typed");
        assert_eq!(s.preallocation(), None);
    }
}
