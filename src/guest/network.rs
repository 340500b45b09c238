//! Network configs: remove MAC pinning so the guest's network comes up on a virtio NIC.
//!
//! On KVM the NIC has a new MAC address (and a new driver, and usually a new name). A config
//! bound to the VMware MAC applies to no interface and the guest boots without network. This
//! module removes those bindings from every config format a Linux guest may use, line by line so
//! that indentation, comments and ordering survive (YAML is never parsed and re-serialised), and
//! notes references to VMware NIC and disk drivers, which only a person can judge.
//!
//! The caller lists [`CONFIG_LOCATIONS`], keeps the files for which [`kind_of`] says something,
//! and writes back what [`strip_mac_pinning`] returns (deleting the file when the text is empty
//! and the rewrite changed something: that is how the udev persistent-net rules go).

use crate::guest::fstab::split_lines;
use crate::guest::{FileChange, Rewrite};

/// Files and directories to scan. Directories hold many files; [`kind_of`] says which count.
pub const CONFIG_LOCATIONS: &[&str] = &[
    // RHEL-family initscripts / NetworkManager ifcfg-rh: ifcfg-*.
    "/etc/sysconfig/network-scripts",
    // SUSE wicked: ifcfg-* (on RHEL this path is a plain file, which kind_of ignores).
    "/etc/sysconfig/network",
    // Ubuntu and cloud-init: *.yaml, *.yml.
    "/etc/netplan",
    // NetworkManager keyfiles: every file.
    "/etc/NetworkManager/system-connections",
    // systemd-networkd and udev's .link files: *.network, *.link, *.netdev.
    "/etc/systemd/network",
    // Debian ifupdown.
    "/etc/network/interfaces",
    "/etc/network/interfaces.d",
    // udev's generated naming rules (RHEL 6/7, Debian before 9, SLES 11/12).
    "/etc/udev/rules.d/70-persistent-net.rules",
];

/// The config formats [`strip_mac_pinning`] understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigKind {
    Ifcfg,
    Netplan,
    NetworkManager,
    Networkd,
    Interfaces,
    PersistentNetRules,
}

/// The format of a guest file, from its path; `None` for files that are not network configs
/// (`/etc/sysconfig/network/config`, a netplan README, ...).
pub fn kind_of(path: &str) -> Option<ConfigKind> {
    let (dir, name) = path.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    match dir {
        "/etc/sysconfig/network-scripts" | "/etc/sysconfig/network"
            if name.len() > "ifcfg-".len() && name.starts_with("ifcfg-") =>
        {
            Some(ConfigKind::Ifcfg)
        }
        "/etc/netplan" if name.ends_with(".yaml") || name.ends_with(".yml") => {
            Some(ConfigKind::Netplan)
        }
        "/etc/NetworkManager/system-connections" => Some(ConfigKind::NetworkManager),
        "/etc/systemd/network"
            if [".network", ".link", ".netdev"]
                .iter()
                .any(|ext| name.ends_with(ext)) =>
        {
            Some(ConfigKind::Networkd)
        }
        "/etc/network" if name == "interfaces" => Some(ConfigKind::Interfaces),
        "/etc/network/interfaces.d" => Some(ConfigKind::Interfaces),
        "/etc/udev/rules.d" if name == "70-persistent-net.rules" => {
            Some(ConfigKind::PersistentNetRules)
        }
        _ => None,
    }
}

/// Removes MAC pinning from one network config. A path that [`kind_of`] does not know is
/// returned unchanged.
pub fn strip_mac_pinning(path: &str, text: &str) -> Rewrite {
    match kind_of(path) {
        Some(ConfigKind::Ifcfg) => strip_ifcfg(path, text),
        Some(ConfigKind::Netplan) => strip_netplan(path, text),
        Some(ConfigKind::NetworkManager) => strip_keyfile(path, text),
        Some(ConfigKind::Networkd) => strip_networkd(path, text),
        Some(ConfigKind::Interfaces) => strip_interfaces(path, text),
        Some(ConfigKind::PersistentNetRules) => drop_persistent_rules(path, text),
        None => Rewrite {
            text: text.to_string(),
            ..Rewrite::default()
        },
    }
}

/// Drivers of VMware's virtual NICs and SCSI controller (and the Intel NICs VMware emulates).
const VMWARE_DRIVERS: &[&str] = &[
    "vmxnet3",
    "vmxnet",
    "e1000",
    "e1000e",
    "vlance",
    "pvscsi",
    "vmw_pvscsi",
];

/// Notes for every non-comment line that names a VMware driver as a whole word (`e1000` does
/// not match inside `e1000e`, nor `pvscsi` inside `vmw_pvscsi`). Such lines (netplan
/// `driver: vmxnet3`, networkd `Driver=`, modprobe options) are not rewritten: what to replace
/// them with depends on what the line is for.
pub fn vmware_driver_notes(path: &str, text: &str) -> Vec<String> {
    let mut notes = Vec::new();
    for (index, (content, _)) in split_lines(text).enumerate() {
        let trimmed = content.trim_start();
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let lower = content.to_ascii_lowercase();
        let found: Vec<&str> = VMWARE_DRIVERS
            .iter()
            .copied()
            .filter(|driver| contains_word(&lower, driver))
            .collect();
        if !found.is_empty() {
            notes.push(format!(
                "{path} line {}: refers to the VMware driver {} (a KVM guest uses virtio_net \
                 and virtio_scsi/virtio_blk)",
                index + 1,
                found.join(", ")
            ));
        }
    }
    notes
}

fn contains_word(haystack: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    haystack.match_indices(word).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// A file's lines with a flag for the ones to drop, and the changes that explain them.
struct Lines<'a> {
    path: &'a str,
    lines: Vec<(&'a str, &'a str)>,
    /// For each line: `None` to keep it, `Some(replacement)` (empty string = delete).
    edits: Vec<Option<String>>,
    changes: Vec<FileChange>,
    notes: Vec<String>,
}

impl<'a> Lines<'a> {
    fn new(path: &'a str, text: &'a str) -> Self {
        let lines: Vec<_> = split_lines(text).collect();
        let edits = vec![None; lines.len()];
        Lines {
            path,
            lines,
            edits,
            changes: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn remove(&mut self, index: usize, reason: &str) {
        self.replace(index, String::new(), reason);
    }

    fn replace(&mut self, index: usize, new: String, reason: &str) {
        // A line removed earlier and now replaced is one change, not two.
        if let Some(change) = self.changes.iter_mut().find(|c| c.line == Some(index + 1)) {
            change.after.clone_from(&new);
            change.reason = reason.to_string();
            self.edits[index] = Some(new);
            return;
        }
        self.changes.push(FileChange {
            path: self.path.to_string(),
            line: Some(index + 1),
            before: self.lines[index].0.to_string(),
            after: new.clone(),
            reason: reason.to_string(),
        });
        self.edits[index] = Some(new);
    }

    fn removed(&self, index: usize) -> bool {
        self.edits[index].as_deref() == Some("")
    }

    fn finish(mut self) -> Rewrite {
        let mut text = String::new();
        for ((content, eol), edit) in self.lines.iter().zip(&self.edits) {
            match edit {
                None => {
                    text.push_str(content);
                    text.push_str(eol);
                }
                Some(new) if new.is_empty() => {}
                Some(new) => {
                    text.push_str(new);
                    text.push_str(eol);
                }
            }
        }
        self.changes.sort_by_key(|c| c.line);
        Rewrite {
            text,
            changes: self.changes,
            notes: self.notes,
        }
    }
}

/// `KEY=value` key of a shell-style or INI line, trimmed.
fn assignment_key(content: &str) -> Option<&str> {
    let (key, _) = content.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('#') && !key.starts_with(';')).then_some(key)
}

/// ifcfg: HWADDR binds the file to a NIC; MACADDR (RHEL) and LLADDR (SUSE) give the NIC the
/// VMware MAC, which collides with the source VM if it is ever started again.
fn strip_ifcfg(path: &str, text: &str) -> Rewrite {
    let mut lines = Lines::new(path, text);
    let mut has_device = false;
    let mut removed_hwaddr = false;
    for index in 0..lines.lines.len() {
        let key = assignment_key(lines.lines[index].0);
        match key {
            Some("HWADDR") => {
                lines.remove(index, "MAC pinning removed");
                removed_hwaddr = true;
            }
            Some("MACADDR" | "LLADDR") => lines.remove(index, "MAC address override removed"),
            Some("DEVICE") => has_device = true,
            _ => {}
        }
    }
    if removed_hwaddr && !has_device {
        lines.notes.push(format!(
            "{path}: no DEVICE= line; without HWADDR the interface is named by the file name \
             (and NetworkManager applies it to any ethernet interface)"
        ));
    }
    lines.finish()
}

/// NetworkManager keyfiles: the device binding and MAC override live in the [ethernet] or
/// [wifi] section (or their long 802-3-ethernet / 802-11-wireless names).
fn strip_keyfile(path: &str, text: &str) -> Rewrite {
    let mut lines = Lines::new(path, text);
    let mut in_device_section = false;
    for index in 0..lines.lines.len() {
        let trimmed = lines.lines[index].0.trim();
        if let Some(section) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            in_device_section = matches!(
                section,
                "ethernet" | "802-3-ethernet" | "wifi" | "802-11-wireless"
            );
            continue;
        }
        if !in_device_section {
            continue;
        }
        let value = trimmed.split_once('=').map_or("", |(_, v)| v.trim());
        match assignment_key(trimmed) {
            Some("mac-address" | "mac-address-blacklist" | "mac-address-denylist") => {
                lines.remove(index, "MAC pinning removed");
            }
            // `cloned-mac-address` may also be a policy (preserve, permanent, random, stable),
            // which is not pinning; only a literal address is.
            Some("cloned-mac-address") if value.contains(':') => {
                lines.remove(index, "MAC address override removed");
            }
            _ => {}
        }
    }
    lines.finish()
}

/// systemd-networkd `.network` and udev `.link` files: `MACAddress=`/`PermanentMACAddress=` in
/// [Match] select the NIC, `MACAddress=` in [Link] sets its address.
///
/// A [Match] section left empty is not left empty: systemd ignores such a file ("To match all
/// interfaces, add Name=* in the [Match] section"), which would take the network down. Its
/// first removed line becomes `Name=en* eth*` (`.network`) or `OriginalName=en* eth*` (`.link`):
/// every ethernet NIC a KVM guest can get (predictable names or net.ifnames=0), but not the
/// loopback, bridges or veths that `Name=*` would also catch. A guest with one NIC, the usual
/// case, keeps working; a note says so, because with several such files the first one wins for
/// every NIC.
fn strip_networkd(path: &str, text: &str) -> Rewrite {
    let mut lines = Lines::new(path, text);
    let is_link = path.ends_with(".link");
    let mut section = String::new();
    // Start of the current [Match] section, the first line removed in it, and whether it still
    // has a condition.
    let mut matches: Vec<(usize, Option<usize>, bool)> = Vec::new();
    for index in 0..lines.lines.len() {
        let trimmed = lines.lines[index].0.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.to_string();
            if section == "Match" {
                matches.push((index, None, false));
            }
            continue;
        }
        let Some(key) = assignment_key(trimmed) else {
            continue;
        };
        match (section.as_str(), key) {
            ("Match", "MACAddress" | "PermanentMACAddress") => {
                lines.remove(index, "MAC pinning removed");
                if let Some(last) = matches.last_mut() {
                    last.1.get_or_insert(index);
                }
            }
            ("Match", _) => {
                if let Some(last) = matches.last_mut() {
                    last.2 = true;
                }
            }
            ("Link", "MACAddress") => lines.remove(index, "MAC address override removed"),
            _ => {}
        }
    }
    let key = if is_link { "OriginalName" } else { "Name" };
    for (_, first_removed, has_condition) in matches {
        let Some(first) = first_removed else { continue };
        if has_condition {
            continue;
        }
        lines.replace(
            first,
            format!("{key}=en* eth*"),
            "MAC match replaced by a match on ethernet names (an empty [Match] matches nothing)",
        );
        lines.notes.push(format!(
            "{path}: matched its NIC by MAC address only; it now applies to every ethernet \
             interface ({key}=en* eth*); with several NICs, give each file its interface name"
        ));
    }
    lines.finish()
}

/// ifupdown: `hwaddress [ether] <mac>` gives the NIC the VMware MAC.
fn strip_interfaces(path: &str, text: &str) -> Rewrite {
    let mut lines = Lines::new(path, text);
    for index in 0..lines.lines.len() {
        if lines.lines[index].0.split_whitespace().next() == Some("hwaddress") {
            lines.remove(index, "MAC address override removed");
        }
    }
    lines.finish()
}

/// udev's persistent-net rules name NICs by the VMware MACs; under KVM the new NIC gets the
/// next free name (eth1) while every config still says eth0. The whole file goes (udev writes a
/// new one on the distros that still generate it).
fn drop_persistent_rules(path: &str, text: &str) -> Rewrite {
    let rules: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    if rules.is_empty() {
        return Rewrite {
            text: text.to_string(),
            ..Rewrite::default()
        };
    }
    Rewrite {
        text: String::new(),
        changes: vec![FileChange {
            path: path.to_string(),
            line: None,
            before: rules.join("\n"),
            after: String::new(),
            reason: "file removed: its rules pin interface names to VMware MAC addresses"
                .to_string(),
        }],
        notes: Vec::new(),
    }
}

/// One YAML line's indentation and mapping key (`None` for blank lines, comments, list items
/// and continuation lines).
fn yaml_key(content: &str) -> Option<(usize, &str)> {
    let trimmed = content.trim_start_matches(' ');
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let indent = content.len() - trimmed.len();
    let colon = trimmed.find(':')?;
    let rest = &trimmed[colon + 1..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let key = trimmed[..colon]
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    Some((indent, key))
}

/// Whether a YAML line has content (not blank, not a comment).
fn yaml_content(content: &str) -> Option<usize> {
    let trimmed = content.trim_start_matches(' ');
    if trimmed.trim().is_empty() || trimmed.starts_with('#') {
        return None;
    }
    Some(content.len() - trimmed.len())
}

/// The value after a YAML key on its own line, without a trailing comment.
fn yaml_inline_value(content: &str) -> &str {
    let after = content.split_once(':').map_or("", |(_, v)| v);
    let value = match after.find(" #") {
        Some(at) => &after[..at],
        None => after,
    };
    value.trim()
}

/// netplan: `macaddress:` under `match:` selects the NIC, at interface level it sets the MAC.
/// A `match:` left empty goes, with its sibling `set-name:` (a rename needs a match), and the
/// interface is then configured by its id as an interface name, which a note points out.
fn strip_netplan(path: &str, text: &str) -> Rewrite {
    let mut lines = Lines::new(path, text);
    let count = lines.lines.len();
    let parent_of = |lines: &Lines, index: usize, indent: usize| -> Option<usize> {
        (0..index)
            .rev()
            .find(|&i| yaml_content(lines.lines[i].0).is_some_and(|ind| ind < indent))
    };
    let mut touched_matches: Vec<usize> = Vec::new();
    for index in 0..count {
        let content = lines.lines[index].0;
        match yaml_key(content) {
            Some((indent, "macaddress")) => {
                let parent = parent_of(&lines, index, indent);
                let under_match = parent
                    .is_some_and(|p| yaml_key(lines.lines[p].0).is_some_and(|(_, k)| k == "match"));
                if under_match {
                    lines.remove(index, "MAC pinning removed");
                    if let Some(p) = parent
                        && !touched_matches.contains(&p)
                    {
                        touched_matches.push(p);
                    }
                } else {
                    lines.remove(index, "MAC address override removed");
                }
            }
            _ if yaml_content(content).is_some()
                && content
                    .split(" #")
                    .next()
                    .is_some_and(|code| code.contains("macaddress")) =>
            {
                lines.notes.push(format!(
                    "{path} line {}: macaddress in flow-style YAML; left unchanged",
                    index + 1
                ));
            }
            _ => {}
        }
    }
    for m in touched_matches {
        let Some((indent, _)) = yaml_key(lines.lines[m].0) else {
            continue;
        };
        if !yaml_inline_value(lines.lines[m].0).is_empty() {
            continue;
        }
        let block_end = (m + 1..count)
            .find(|&i| yaml_content(lines.lines[i].0).is_some_and(|ind| ind <= indent))
            .unwrap_or(count);
        let still_has_conditions = (m + 1..block_end)
            .any(|i| yaml_content(lines.lines[i].0).is_some() && !lines.removed(i));
        if still_has_conditions {
            continue;
        }
        lines.remove(m, "empty match removed");
        // Siblings of `match:` are the lines at its indentation inside its parent's block.
        let parent = parent_of(&lines, m, indent);
        let start = parent.map_or(0, |p| p + 1);
        let parent_indent = parent.and_then(|p| yaml_content(lines.lines[p].0));
        let end = (start..count)
            .find(|&i| {
                yaml_content(lines.lines[i].0)
                    .is_some_and(|ind| parent_indent.is_some_and(|p| ind <= p))
            })
            .unwrap_or(count);
        let mut set_name = None;
        for i in start..end {
            if yaml_key(lines.lines[i].0) == Some((indent, "set-name")) {
                set_name = Some(yaml_inline_value(lines.lines[i].0).to_string());
                lines.remove(i, "set-name removed (it needs a match)");
            }
        }
        let id = parent
            .and_then(|p| yaml_key(lines.lines[p].0))
            .map_or("?", |(_, key)| key);
        let renamed = match set_name {
            Some(name) => format!(" and was renamed to {name}"),
            None => String::new(),
        };
        lines.notes.push(format!(
            "{path}: interface {id} was matched by MAC address{renamed}; netplan now applies it \
             to an interface named {id}, and under virtio the NIC is likely named differently \
             (e.g. enp1s0): check the interface id"
        ));
    }
    lines.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_path() {
        let cases = [
            (
                "/etc/sysconfig/network-scripts/ifcfg-ens192",
                Some(ConfigKind::Ifcfg),
            ),
            ("/etc/sysconfig/network/ifcfg-eth0", Some(ConfigKind::Ifcfg)),
            ("/etc/sysconfig/network/config", None),
            ("/etc/sysconfig/network-scripts/ifcfg-", None),
            ("/etc/sysconfig/network-scripts/route-eth0", None),
            ("/etc/sysconfig/network", None),
            ("/etc/netplan/50-cloud-init.yaml", Some(ConfigKind::Netplan)),
            ("/etc/netplan/01-netcfg.yml", Some(ConfigKind::Netplan)),
            ("/etc/netplan/README", None),
            ("/etc/netplan/sub/x.yaml", None),
            (
                "/etc/NetworkManager/system-connections/Wired connection 1.nmconnection",
                Some(ConfigKind::NetworkManager),
            ),
            (
                "/etc/systemd/network/10-eth0.network",
                Some(ConfigKind::Networkd),
            ),
            (
                "/etc/systemd/network/10-lan.link",
                Some(ConfigKind::Networkd),
            ),
            (
                "/etc/systemd/network/br0.netdev",
                Some(ConfigKind::Networkd),
            ),
            ("/etc/systemd/network/README", None),
            ("/etc/network/interfaces", Some(ConfigKind::Interfaces)),
            (
                "/etc/network/interfaces.d/eth0",
                Some(ConfigKind::Interfaces),
            ),
            ("/etc/network/if-up.d/x", None),
            (
                "/etc/udev/rules.d/70-persistent-net.rules",
                Some(ConfigKind::PersistentNetRules),
            ),
            ("/etc/udev/rules.d/80-net.rules", None),
        ];
        for (path, kind) in cases {
            assert_eq!(kind_of(path), kind, "{path}");
        }
    }

    #[test]
    fn ifcfg_hwaddr_and_macaddr() {
        let text = "\
TYPE=Ethernet
BOOTPROTO=none
NAME=ens192
DEVICE=ens192
HWADDR=00:50:56:8a:3b:1c
MACADDR=\"00:50:56:8a:3b:1c\"
#HWADDR=00:50:56:00:00:01
ONBOOT=yes
IPADDR=10.0.0.5
PREFIX=24
";
        let path = "/etc/sysconfig/network-scripts/ifcfg-ens192";
        let r = strip_mac_pinning(path, text);
        assert_eq!(
            r.text,
            "TYPE=Ethernet\nBOOTPROTO=none\nNAME=ens192\nDEVICE=ens192\n\
             #HWADDR=00:50:56:00:00:01\nONBOOT=yes\nIPADDR=10.0.0.5\nPREFIX=24\n"
        );
        assert_eq!(r.changes.len(), 2);
        assert_eq!(r.changes[0].line, Some(5));
        assert_eq!(r.changes[0].before, "HWADDR=00:50:56:8a:3b:1c");
        assert_eq!(r.changes[0].after, "");
        assert_eq!(r.changes[1].reason, "MAC address override removed");
        assert!(r.notes.is_empty());
    }

    #[test]
    fn suse_ifcfg_without_device() {
        let text = "BOOTPROTO='dhcp'\nSTARTMODE='auto'\nLLADDR='00:50:56:aa:bb:cc'\nHWADDR=00:50:56:aa:bb:cc";
        let r = strip_mac_pinning("/etc/sysconfig/network/ifcfg-eth0", text);
        assert_eq!(r.text, "BOOTPROTO='dhcp'\nSTARTMODE='auto'\n");
        assert_eq!(r.changes.len(), 2);
        assert_eq!(r.notes.len(), 1);
    }

    const NETPLAN: &str = "\
# This file is generated from information provided by the datasource.
network:
    version: 2
    ethernets:
        eth0:
            match:
                macaddress: 00:50:56:8a:3b:1c   # VMware NIC
            set-name: eth0
            dhcp4: true
        lan1:
            # pinned by MAC and driver
            match:
                macaddress: \"00:50:56:8a:3b:1d\"
                driver: vmxnet3
            set-name: lan1
            addresses:
              - 10.0.0.5/24
        ens224:
            macaddress: 02:00:00:00:00:01
            dhcp4: false
";

    #[test]
    fn netplan_match_and_set_name() {
        let path = "/etc/netplan/50-cloud-init.yaml";
        let r = strip_mac_pinning(path, NETPLAN);
        assert_eq!(
            r.text,
            "\
# This file is generated from information provided by the datasource.
network:
    version: 2
    ethernets:
        eth0:
            dhcp4: true
        lan1:
            # pinned by MAC and driver
            match:
                driver: vmxnet3
            set-name: lan1
            addresses:
              - 10.0.0.5/24
        ens224:
            dhcp4: false
"
        );
        let reasons: Vec<(Option<usize>, &str)> = r
            .changes
            .iter()
            .map(|c| (c.line, c.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (Some(6), "empty match removed"),
                (Some(7), "MAC pinning removed"),
                (Some(8), "set-name removed (it needs a match)"),
                (Some(13), "MAC pinning removed"),
                (Some(19), "MAC address override removed"),
            ]
        );
        assert_eq!(r.notes.len(), 1);
        assert!(
            r.notes[0]
                .contains("interface eth0 was matched by MAC address and was renamed to eth0"),
            "{}",
            r.notes[0]
        );
        assert_eq!(vmware_driver_notes(path, &r.text).len(), 1);
    }

    #[test]
    fn netplan_two_space_indent_and_flow_style() {
        let text = "\
network:
  ethernets:
    id0:
      match: {macaddress: \"00:50:56:00:00:01\"}
      dhcp4: yes  # not by macaddress
    id1:
      match:
        macaddress: 00:50:56:00:00:02
      wakeonlan: true
  version: 2";
        let r = strip_mac_pinning("/etc/netplan/01-netcfg.yaml", text);
        assert_eq!(
            r.text,
            "network:\n  ethernets:\n    id0:\n      match: {macaddress: \"00:50:56:00:00:01\"}\n      \
             dhcp4: yes  # not by macaddress\n    id1:\n      wakeonlan: true\n  version: 2"
        );
        assert_eq!(r.notes.len(), 2, "{:#?}", r.notes);
        assert!(r.notes[0].contains("line 4: macaddress in flow-style YAML"));
        assert!(r.notes[1].contains("interface id1 was matched by MAC address;"));
    }

    #[test]
    fn networkmanager_keyfile() {
        let text = "\
[connection]
id=Wired connection 1
uuid=6f1b2a3c-1111-2222-3333-444455556666
type=ethernet
interface-name=ens192

[ethernet]
mac-address=00:50:56:8A:3B:1C
cloned-mac-address=stable
mac-address-blacklist=00:50:56:00:00:01;

[wifi]
cloned-mac-address=00:50:56:00:00:02

[ipv4]
method=auto
mac-address=not-a-device-key
";
        let r = strip_mac_pinning(
            "/etc/NetworkManager/system-connections/Wired connection 1.nmconnection",
            text,
        );
        assert_eq!(
            r.text,
            "[connection]\nid=Wired connection 1\nuuid=6f1b2a3c-1111-2222-3333-444455556666\n\
             type=ethernet\ninterface-name=ens192\n\n[ethernet]\ncloned-mac-address=stable\n\n\
             [wifi]\n\n[ipv4]\nmethod=auto\nmac-address=not-a-device-key\n"
        );
        assert_eq!(
            r.changes.iter().map(|c| c.line).collect::<Vec<_>>(),
            vec![Some(8), Some(10), Some(13)]
        );
    }

    #[test]
    fn networkd_network_with_empty_match() {
        let text = "\
[Match]
# the VMware NIC
MACAddress=00:50:56:8a:3b:1c

[Link]
MACAddress=00:50:56:8a:3b:1c
MTUBytes=9000

[Network]
DHCP=ipv4
";
        let path = "/etc/systemd/network/10-lan.network";
        let r = strip_mac_pinning(path, text);
        assert_eq!(
            r.text,
            "[Match]\n# the VMware NIC\nName=en* eth*\n\n[Link]\nMTUBytes=9000\n\n[Network]\nDHCP=ipv4\n"
        );
        assert_eq!(r.changes.len(), 2);
        assert_eq!(r.changes[0].after, "Name=en* eth*");
        assert_eq!(r.notes.len(), 1);
        // Applying it again changes nothing.
        assert!(!strip_mac_pinning(path, &r.text).changed());
    }

    #[test]
    fn networkd_match_with_other_conditions_and_link_files() {
        let text = "[Match]\nType=ether\nMACAddress=00:50:56:8a:3b:1c\n\n[Network]\nDHCP=yes\n";
        let r = strip_mac_pinning("/etc/systemd/network/20.network", text);
        assert_eq!(r.text, "[Match]\nType=ether\n\n[Network]\nDHCP=yes\n");
        assert!(r.notes.is_empty());

        let text = "[Match]\nPermanentMACAddress=00:50:56:8a:3b:1c\n\n[Link]\nName=lan0\n";
        let r = strip_mac_pinning("/etc/systemd/network/10-lan0.link", text);
        assert_eq!(
            r.text,
            "[Match]\nOriginalName=en* eth*\n\n[Link]\nName=lan0\n"
        );

        // .netdev MACAddress= chooses a virtual device's own address: not pinning.
        let text = "[NetDev]\nName=br0\nKind=bridge\nMACAddress=02:00:00:00:00:01\n";
        assert!(!strip_mac_pinning("/etc/systemd/network/br0.netdev", text).changed());
    }

    #[test]
    fn ifupdown_hwaddress() {
        let text = "\
auto lo
iface lo inet loopback

allow-hotplug ens192
iface ens192 inet static
    address 10.0.0.5/24
    gateway 10.0.0.1
    hwaddress ether 00:50:56:8a:3b:1c
    # hwaddress ether 00:50:56:00:00:01
";
        let r = strip_mac_pinning("/etc/network/interfaces", text);
        assert_eq!(
            r.text,
            text.replace("    hwaddress ether 00:50:56:8a:3b:1c\n", "")
        );
        assert_eq!(r.changes.len(), 1);
        assert_eq!(r.changes[0].line, Some(8));
    }

    #[test]
    fn persistent_net_rules_are_dropped() {
        let text = "\
# This file was automatically generated by the /lib/udev/write_net_rules
# program, run by the persistent-net-generator.rules rules file.

# PCI device 0x15ad:0x07b0 (vmxnet3)
SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:50:56:8a:3b:1c\", ATTR{dev_id}==\"0x0\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"
";
        let path = "/etc/udev/rules.d/70-persistent-net.rules";
        let r = strip_mac_pinning(path, text);
        assert_eq!(r.text, "");
        assert_eq!(r.changes.len(), 1);
        assert_eq!(r.changes[0].line, None);
        assert!(r.changes[0].before.starts_with("SUBSYSTEM==\"net\""));
        let r = strip_mac_pinning(path, "# empty\n");
        assert!(!r.changed());
        assert_eq!(r.text, "# empty\n");
    }

    #[test]
    fn unknown_path_is_unchanged() {
        let r = strip_mac_pinning("/etc/hosts", "HWADDR=1\n");
        assert_eq!(r.text, "HWADDR=1\n");
        assert!(!r.changed());
    }

    #[test]
    fn driver_notes_are_word_bounded() {
        let text = "\
# vmxnet3 in a comment is fine
[Match]
Driver=vmxnet3
alias eth0 e1000e
options vmw_pvscsi cmd_per_lun=254
e1000x vmxnet30 pvscsi_foo
VMXNET driver, E1000
";
        let notes = vmware_driver_notes("/etc/x", text);
        assert_eq!(notes.len(), 4, "{notes:#?}");
        assert!(notes[0].starts_with("/etc/x line 3: refers to the VMware driver vmxnet3 ("));
        assert!(notes[1].contains("line 4: refers to the VMware driver e1000e ("));
        assert!(notes[2].contains("driver vmw_pvscsi ("));
        assert!(notes[3].contains("line 7: refers to the VMware driver vmxnet, e1000 ("));
    }
}
