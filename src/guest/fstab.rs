//! `/etc/fstab` and `/etc/crypttab`: name every block device by something that survives the move
//! to virtio.
//!
//! A VMware or Hyper-V guest that mounts `/dev/sda1` or a `/dev/disk/by-path/...` link finds a
//! different name (or nothing) under virtio-blk and drops to an emergency shell. These functions
//! replace such specs by the device's stable id (UUID > PARTUUID > LABEL > PARTLABEL, from
//! `blkid` through [`Devices`]) and leave everything else byte for byte: comments, blank lines,
//! pseudo filesystems, network mounts and specs that are already stable. A spec that cannot be
//! resolved with certainty is left alone and reported as a note: a stale name fails to mount,
//! while a guessed UUID may mount the wrong filesystem.
//!
//! Kernel names resolve through [`Devices::lookup`]. The `/` line always resolves to
//! `devices.root`, whatever it says: inspection found the root filesystem there, which also
//! covers NVMe names and disks the guest enumerated in another order. By-path and by-id links
//! cannot be followed offline (their targets exist only under udev on the original hardware).
//! Like the Python tool, a `...-partN` link is inferred to be partition N of the root
//! filesystem's disk, but only when the link names the same disk as the `/` line itself; the
//! Python tool assumes every link is on the root disk, which maps a second disk's `/data` onto
//! the root partition.

use crate::guest::{Devices, FileChange, Rewrite, is_unstable_spec};
use crate::manifest::FstabMode;
use std::collections::BTreeSet;

/// Mountpoints of kernel filesystems: their "device" column is a placeholder, never a disk.
const PSEUDO_MOUNTPOINTS: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/dev/pts",
    "/dev/shm",
    "/sys/fs/cgroup",
];

/// Filesystem types that have no backing block device.
const PSEUDO_FSTYPES: &[&str] = &[
    "proc",
    "sysfs",
    "devpts",
    "tmpfs",
    "devtmpfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "mqueue",
    "hugetlbfs",
    "efivarfs",
    "binfmt_misc",
];

const BY_PATH: &str = "/dev/disk/by-path/";
const BY_ID: &str = "/dev/disk/by-id/";

/// by-id links that name a device-mapper, LVM or md object rather than a disk: they carry
/// their own UUID or name and do not change when the disk controller does.
const PERSISTENT_BY_ID_PREFIXES: &[&str] = &[
    "dm-name-",
    "dm-uuid-",
    "lvm-pv-uuid-",
    "md-name-",
    "md-uuid-",
];

/// [`is_unstable_spec`], except for by-id links to device-mapper, LVM and md objects, which are
/// stable (`/dev/disk/by-id/dm-name-vg-root` is as good as `/dev/mapper/vg-root`).
pub(crate) fn needs_stable_id(spec: &str) -> bool {
    if let Some(name) = spec.strip_prefix(BY_ID)
        && PERSISTENT_BY_ID_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
    {
        return false;
    }
    is_unstable_spec(spec)
}

/// Splits a text into lines that keep their terminator apart, so an untouched line can be
/// written back byte for byte and a rewritten one keeps its `\n` or `\r\n`.
pub(crate) fn split_lines(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split_inclusive('\n').map(|raw| {
        if let Some(content) = raw.strip_suffix("\r\n") {
            (content, "\r\n")
        } else if let Some(content) = raw.strip_suffix('\n') {
            (content, "\n")
        } else {
            (raw, "")
        }
    })
}

/// Rewrites `/etc/fstab` per `mode`. See the module documentation for what is left alone.
pub fn rewrite_fstab(text: &str, mode: FstabMode, devices: &Devices) -> Rewrite {
    rewrite_table(Table::Fstab, text, mode, devices)
}

/// Rewrites `/etc/crypttab` (device spec in column 2) per `mode`. Changed lines are re-joined
/// with single spaces, as the Python tool does.
pub fn rewrite_crypttab(text: &str, mode: FstabMode, devices: &Devices) -> Rewrite {
    rewrite_table(Table::Crypttab, text, mode, devices)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Fstab,
    Crypttab,
}

impl Table {
    fn path(self) -> &'static str {
        match self {
            Table::Fstab => "/etc/fstab",
            Table::Crypttab => "/etc/crypttab",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Table::Fstab => "fstab",
            Table::Crypttab => "crypttab",
        }
    }

    fn spec_column(self) -> usize {
        match self {
            Table::Fstab => 0,
            Table::Crypttab => 1,
        }
    }

    /// Shorter lines are malformed (fstab) or name no device (crypttab); mount and
    /// systemd-cryptsetup decide what they mean, not us.
    fn min_columns(self) -> usize {
        match self {
            Table::Fstab => 4,
            Table::Crypttab => 2,
        }
    }

    fn separator(self) -> &'static str {
        match self {
            Table::Fstab => "\t",
            Table::Crypttab => " ",
        }
    }
}

fn rewrite_table(table: Table, text: &str, mode: FstabMode, devices: &Devices) -> Rewrite {
    let mut out = Rewrite {
        text: String::with_capacity(text.len() + 256),
        ..Rewrite::default()
    };
    if mode == FstabMode::Noop {
        out.text = text.to_string();
        return out;
    }
    let resolver = Resolver {
        devices,
        root_link_disk: match table {
            Table::Fstab => root_link_disk(text),
            Table::Crypttab => None,
        },
        claimed: match table {
            Table::Fstab => claimed_devices(text, devices),
            Table::Crypttab => BTreeSet::new(),
        },
    };
    for (index, (content, eol)) in split_lines(text).enumerate() {
        let line_no = index + 1;
        match rewrite_line(table, content, mode, &resolver) {
            LineOutcome::Keep => out.text.push_str(content),
            LineOutcome::Note(note) => {
                out.text.push_str(content);
                out.notes.push(format!(
                    "{} line {line_no}: {note}; left unchanged",
                    table.label()
                ));
            }
            LineOutcome::Change { line, reason } => {
                out.text.push_str(&line);
                out.changes.push(FileChange {
                    path: table.path().to_string(),
                    line: Some(line_no),
                    before: content.to_string(),
                    after: line,
                    reason,
                });
            }
        }
        out.text.push_str(eol);
    }
    out
}

enum LineOutcome {
    Keep,
    Note(String),
    Change { line: String, reason: String },
}

fn rewrite_line(table: Table, content: &str, mode: FstabMode, resolver: &Resolver) -> LineOutcome {
    let mut columns: Vec<&str> = content.split_whitespace().collect();
    if columns.first().is_none_or(|c| c.starts_with('#')) || columns.len() < table.min_columns() {
        return LineOutcome::Keep;
    }
    let mountpoint = match table {
        Table::Fstab => {
            if PSEUDO_MOUNTPOINTS.contains(&columns[1]) || PSEUDO_FSTYPES.contains(&columns[2]) {
                return LineOutcome::Keep;
            }
            Some(columns[1])
        }
        Table::Crypttab => None,
    };
    let spec = columns[table.spec_column()];
    let wanted = match mode {
        FstabMode::Noop => false,
        FstabMode::BypathOnly => spec.starts_with(BY_PATH),
        FstabMode::StabilizeAll => needs_stable_id(spec),
    };
    if !wanted {
        return LineOutcome::Keep;
    }
    let fstype = match table {
        Table::Fstab => columns.get(2).copied(),
        Table::Crypttab => None,
    };
    let (device, how) = match resolver.resolve(spec, mountpoint, fstype) {
        Ok(found) => found,
        Err(why) => return LineOutcome::Note(format!("{spec} {why}")),
    };
    // Name the inferred device in notes, so the reader can tell which device was missing.
    let shown = if how.is_some() {
        format!("{spec} (inferred as {device})")
    } else {
        spec.to_string()
    };
    let Some(ids) = resolver.devices.by_name.get(&device) else {
        return LineOutcome::Note(format!("{shown} does not exist in the guest"));
    };
    let Some(stable) = ids.stable_spec() else {
        return LineOutcome::Note(format!("{shown} has no UUID, PARTUUID, LABEL or PARTLABEL"));
    };
    let kind = stable.split('=').next().unwrap_or("id");
    let reason = match how {
        Some(how) => format!("{spec} -> {kind} ({how})"),
        None => format!("{spec} -> {kind}"),
    };
    columns[table.spec_column()] = &stable;
    LineOutcome::Change {
        line: columns.join(table.separator()),
        reason,
    }
}

struct Resolver<'a> {
    devices: &'a Devices,
    /// The by-path/by-id disk link (without `-partN`) that the `/` line uses, when it uses one:
    /// the only link whose disk is known offline.
    root_link_disk: Option<String>,
    /// Devices another fstab line already names (by kernel name, stable id, or as `/`).
    claimed: BTreeSet<String>,
}

impl Resolver<'_> {
    /// The appliance device a spec names, and how it was inferred when it was not a plain
    /// kernel name. `Err` explains why it cannot be known.
    fn resolve(
        &self,
        spec: &str,
        mountpoint: Option<&str>,
        fstype: Option<&str>,
    ) -> Result<(String, Option<String>), String> {
        let by_name = Devices::appliance_name(spec);
        // Whatever the `/` line says, the filesystem mounted there is the root device that
        // inspection found.
        if mountpoint == Some("/")
            && let Some(root) = &self.devices.root
        {
            return Ok(match by_name {
                Some(name) if name == *root => (name, None),
                _ => (
                    root.clone(),
                    Some(format!("inferred: the root filesystem is on {root}")),
                ),
            });
        }
        if let Some(name) = by_name {
            return Ok((name, None));
        }
        let Some((disk_link, part)) = split_link(spec) else {
            return Err("cannot be mapped to a device offline".to_string());
        };
        if self.root_link_disk.as_deref() != Some(disk_link) {
            // The link's disk is unknown, but its partition number and the line's filesystem
            // type may single out one device that no other line names.
            if let (Some(n), Some(fstype)) = (part, fstype)
                && let Some(device) = self.only_unclaimed(n, fstype)
            {
                return Ok((
                    device,
                    Some(format!(
                        "inferred: the only {fstype} partition {n} no other fstab line names"
                    )),
                ));
            }
            return Err(
                "is a link that cannot be followed offline (only links to the root filesystem's \
                 disk, or to the one unnamed partition of that number and type, can be inferred)"
                    .to_string(),
            );
        }
        let Some(disk) = self.devices.root.as_deref().and_then(root_disk) else {
            return Err(
                "cannot be inferred: the root device is unknown or not on a disk".to_string(),
            );
        };
        Ok(match part {
            Some(n) => (
                format!("{disk}{n}"),
                Some(format!("inferred: partition {n} of the root disk {disk}")),
            ),
            None => (
                disk.clone(),
                Some(format!("inferred: the root disk {disk}")),
            ),
        })
    }
}

impl Resolver<'_> {
    /// The one device that is partition `n` of some disk, holds `fstype`, and is not named by
    /// another line; `None` when there is no such device or more than one.
    fn only_unclaimed(&self, n: u32, fstype: &str) -> Option<String> {
        let mut candidates = self.devices.by_name.iter().filter(|(name, ids)| {
            partition_number(name) == Some(n)
                && ids.fstype.as_deref() == Some(fstype)
                && !self.claimed.contains(*name)
        });
        let (first, _) = candidates.next()?;
        candidates.next().is_none().then(|| first.clone())
    }
}

/// `/dev/sdb12` → 12; whole disks and other names → `None`.
fn partition_number(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("/dev/sd")?;
    let digits = rest.trim_start_matches(|c: char| c.is_ascii_lowercase());
    if digits.len() == rest.len() || digits.is_empty() {
        return None;
    }
    digits.parse().ok()
}

/// The devices an fstab already names in a way that can be known offline: kernel names,
/// stable ids (`UUID=`, `LABEL=` ...) and the root filesystem.
fn claimed_devices(text: &str, devices: &Devices) -> BTreeSet<String> {
    let mut claimed: BTreeSet<String> = devices.root.iter().cloned().collect();
    for (content, _) in split_lines(text) {
        let Some(spec) = content.split_whitespace().next() else {
            continue;
        };
        if spec.starts_with('#') {
            continue;
        }
        if let Some(name) = Devices::appliance_name(spec) {
            claimed.insert(name);
            continue;
        }
        let Some((key, value)) = spec.split_once('=') else {
            continue;
        };
        let value = value.trim_matches('"');
        for (name, ids) in &devices.by_name {
            let id = match key {
                "UUID" => &ids.uuid,
                "PARTUUID" => &ids.partuuid,
                "LABEL" => &ids.label,
                "PARTLABEL" => &ids.partlabel,
                _ => continue,
            };
            if id.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(value)) {
                claimed.insert(name.clone());
            }
        }
    }
    claimed
}

/// Splits a by-path/by-id link into the disk's link and the partition number, if any:
/// `/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0-part2` →
/// (`/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0`, Some(2)).
fn split_link(spec: &str) -> Option<(&str, Option<u32>)> {
    if !spec.starts_with(BY_PATH) && !spec.starts_with(BY_ID) {
        return None;
    }
    if let Some((disk, part)) = spec.rsplit_once("-part")
        && !part.is_empty()
        && part.chars().all(|c| c.is_ascii_digit())
        && let Ok(n) = part.parse()
    {
        return Some((disk, Some(n)));
    }
    Some((spec, None))
}

/// The disk link of the `/` line, when that line names its device by a by-path/by-id link.
fn root_link_disk(text: &str) -> Option<String> {
    split_lines(text).find_map(|(content, _)| {
        let columns: Vec<&str> = content.split_whitespace().collect();
        if columns.len() < 4 || columns[0].starts_with('#') || columns[1] != "/" {
            return None;
        }
        split_link(columns[0]).map(|(disk, _)| disk.to_string())
    })
}

/// `/dev/sda1` → `/dev/sda`; a root filesystem on a whole disk (`/dev/sda`) is its own disk.
/// Anything that is not an appliance disk name (LVM, mapper) has no disk to infer from.
fn root_disk(root: &str) -> Option<String> {
    let name = Devices::appliance_name(root)?;
    Some(
        name.trim_end_matches(|c: char| c.is_ascii_digit())
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::DeviceIds;
    use proptest::prelude::*;

    fn ids(uuid: Option<&str>, partuuid: Option<&str>, label: Option<&str>) -> DeviceIds {
        DeviceIds {
            uuid: uuid.map(str::to_string),
            partuuid: partuuid.map(str::to_string),
            label: label.map(str::to_string),
            partlabel: None,
            fstype: None,
        }
    }

    /// A Debian-like guest: ext4 root on sda1, swap on the logical sda5, an EFI partition sda2
    /// with only a PARTUUID, and sda3 with nothing blkid can name.
    fn devices() -> Devices {
        let mut d = Devices {
            root: Some("/dev/sda1".to_string()),
            ..Devices::default()
        };
        d.by_name.insert(
            "/dev/sda1".into(),
            ids(
                Some("0f3a2c1e-7d5b-4a8e-9c61-2b4d8e7f1a90"),
                Some("8b2d-01"),
                None,
            ),
        );
        d.by_name
            .insert("/dev/sda2".into(), ids(None, Some("8b2d-02"), None));
        d.by_name.insert("/dev/sda3".into(), ids(None, None, None));
        d.by_name.insert(
            "/dev/sda5".into(),
            ids(
                Some("5c1e9a77-0b3d-4f2e-a8d4-3e6f9b1c2d45"),
                None,
                Some("swap"),
            ),
        );
        d.by_name.insert("/dev/sda".into(), ids(None, None, None));
        d
    }

    const DEBIAN: &str = "\
# /etc/fstab: static file system information.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
# / was on /dev/sda1 during installation
/dev/sda1       /               ext4    errors=remount-ro 0       1
# swap was on /dev/sda5 during installation
/dev/sda5       none            swap    sw              0       0
/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0
proc            /proc           proc    defaults        0       0
tmpfs           /tmp            tmpfs   defaults,size=2G 0      0
/dev/sdb1       /srv/data       xfs     defaults        0       2
";

    #[test]
    fn debian_fstab_kernel_names_become_uuids() {
        let r = rewrite_fstab(DEBIAN, FstabMode::StabilizeAll, &devices());
        let expected = DEBIAN
            .replace(
                "/dev/sda1       /               ext4    errors=remount-ro 0       1",
                "UUID=0f3a2c1e-7d5b-4a8e-9c61-2b4d8e7f1a90\t/\text4\terrors=remount-ro\t0\t1",
            )
            .replace(
                "/dev/sda5       none            swap    sw              0       0",
                "UUID=5c1e9a77-0b3d-4f2e-a8d4-3e6f9b1c2d45\tnone\tswap\tsw\t0\t0",
            );
        assert_eq!(r.text, expected);
        assert_eq!(r.changes.len(), 2);
        assert_eq!(
            r.changes[0],
            FileChange {
                path: "/etc/fstab".into(),
                line: Some(5),
                before: "/dev/sda1       /               ext4    errors=remount-ro 0       1"
                    .into(),
                after:
                    "UUID=0f3a2c1e-7d5b-4a8e-9c61-2b4d8e7f1a90\t/\text4\terrors=remount-ro\t0\t1"
                        .into(),
                reason: "/dev/sda1 -> UUID".into(),
            }
        );
        assert_eq!(r.changes[1].line, Some(7));
        assert_eq!(r.changes[1].reason, "/dev/sda5 -> UUID");
        assert_eq!(
            r.notes,
            vec!["fstab line 11: /dev/sdb1 does not exist in the guest; left unchanged"]
        );
    }

    const RHEL: &str = "\
#
# /etc/fstab
# Created by anaconda on Tue Mar  5 10:12:44 2024
#
/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part1 /     xfs     defaults        0 0
/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part2 /boot/efi vfat umask=0077,shortname=winnt 0 2
/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:1:0-part1 /data xfs defaults 0 0
UUID=5c1e9a77-0b3d-4f2e-a8d4-3e6f9b1c2d45 swap swap defaults 0 0
/dev/mapper/rhel-home   /home                   xfs     defaults        0 0
/dev/rhel/var           /var                    xfs     defaults        0 0
nfs01:/export/home /mnt/home nfs defaults,_netdev 0 0
";

    #[test]
    fn rhel_by_path_on_the_root_disk_is_inferred_and_other_disks_are_noted() {
        let r = rewrite_fstab(RHEL, FstabMode::StabilizeAll, &devices());
        assert_eq!(r.changes.len(), 2, "{r:#?}");
        assert_eq!(r.changes[0].line, Some(5));
        assert_eq!(
            r.changes[0].after,
            "UUID=0f3a2c1e-7d5b-4a8e-9c61-2b4d8e7f1a90\t/\txfs\tdefaults\t0\t0"
        );
        assert_eq!(
            r.changes[0].reason,
            "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part1 -> UUID \
             (inferred: the root filesystem is on /dev/sda1)"
        );
        assert_eq!(
            r.changes[1].after,
            "PARTUUID=8b2d-02\t/boot/efi\tvfat\tumask=0077,shortname=winnt\t0\t2"
        );
        assert_eq!(
            r.changes[1].reason,
            "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part2 -> PARTUUID \
             (inferred: partition 2 of the root disk /dev/sda)"
        );
        assert_eq!(r.notes.len(), 1);
        assert!(
            r.notes[0].starts_with(
                "fstab line 7: /dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:1:0-part1 is a link"
            ),
            "{}",
            r.notes[0]
        );
        // LVM, UUID and NFS lines are byte-identical.
        for line in [
            "UUID=5c1e9a77-0b3d-4f2e-a8d4-3e6f9b1c2d45 swap swap defaults 0 0\n",
            "/dev/mapper/rhel-home   /home                   xfs     defaults        0 0\n",
            "/dev/rhel/var           /var                    xfs     defaults        0 0\n",
            "nfs01:/export/home /mnt/home nfs defaults,_netdev 0 0\n",
        ] {
            assert!(r.text.contains(line), "{line}");
        }
    }

    /// A VMware guest with two disks: root and swap on sda, /data on sdb; the links of other
    /// disks are inferred when partition number and type single out one unnamed device.
    #[test]
    fn links_to_other_disks_are_inferred_only_when_unambiguous() {
        let typed = |uuid: &str, fstype: &str| DeviceIds {
            uuid: Some(uuid.to_string()),
            fstype: Some(fstype.to_string()),
            ..DeviceIds::default()
        };
        let mut d = Devices {
            root: Some("/dev/sda1".to_string()),
            ..Devices::default()
        };
        d.by_name.insert("/dev/sda1".into(), typed("aaaa", "ext4"));
        d.by_name.insert("/dev/sda2".into(), typed("bbbb", "swap"));
        d.by_name.insert("/dev/sdb1".into(), typed("cccc", "xfs"));
        let text = "/dev/sda1 / ext4 defaults 0 1\n\
                    /dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0-part2 none swap sw 0 0\n\
                    /dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:1:0-part1 /data xfs defaults 0 2\n\
                    /dev/disk/by-id/wwn-0x5000c500a1b2c3d4-part1 /old ext4 defaults 0 2\n";
        let r = rewrite_fstab(text, FstabMode::StabilizeAll, &d);
        let after: Vec<&str> = r.changes.iter().map(|c| c.after.as_str()).collect();
        assert_eq!(
            after,
            [
                "UUID=aaaa\t/\text4\tdefaults\t0\t1",
                "UUID=bbbb\tnone\tswap\tsw\t0\t0",
                "UUID=cccc\t/data\txfs\tdefaults\t0\t2"
            ]
        );
        assert_eq!(
            r.changes[1].reason,
            "/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0-part2 -> UUID (inferred: the only \
             swap partition 2 no other fstab line names)"
        );
        // No unnamed ext4 partition 1 is left (sda1 is /): that line stays, with a note.
        assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
        assert!(
            r.notes[0].starts_with("fstab line 4: /dev/disk/by-id/wwn-"),
            "{}",
            r.notes[0]
        );

        // Two unnamed swap partitions numbered 2: which one the link meant cannot be known.
        d.by_name.insert("/dev/sdb2".into(), typed("dddd", "swap"));
        let r = rewrite_fstab(text, FstabMode::StabilizeAll, &d);
        assert!(
            r.notes.iter().any(|n| n.starts_with("fstab line 2: ")),
            "{:?}",
            r.notes
        );
        // And a UUID line elsewhere claims its device: sdb2 is named, sda2 is the one left.
        let named = format!("{text}UUID=dddd none swap sw 0 0\n");
        let r = rewrite_fstab(&named, FstabMode::StabilizeAll, &d);
        assert!(
            r.changes
                .iter()
                .any(|c| c.after.starts_with("UUID=bbbb\tnone")),
            "{r:#?}"
        );
    }

    #[test]
    fn bypath_only_leaves_kernel_names() {
        let text = "/dev/sda1 / ext4 defaults 0 1\n\
                    /dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part5 none swap sw 0 0\n\
                    /dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part1 /x ext4 defaults 0 1\n";
        let r = rewrite_fstab(text, FstabMode::BypathOnly, &devices());
        // The `/` line names no link, so no link can be inferred: nothing changes.
        assert!(!r.changed());
        assert_eq!(r.text, text);
        assert_eq!(r.notes.len(), 2);

        let text = "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part1 / ext4 defaults 0 1\n\
                    /dev/sda5 none swap sw 0 0\n\
                    /dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part5 /swap2 swap sw 0 0";
        let r = rewrite_fstab(text, FstabMode::BypathOnly, &devices());
        assert_eq!(
            r.text,
            "UUID=0f3a2c1e-7d5b-4a8e-9c61-2b4d8e7f1a90\t/\text4\tdefaults\t0\t1\n\
             /dev/sda5 none swap sw 0 0\n\
             UUID=5c1e9a77-0b3d-4f2e-a8d4-3e6f9b1c2d45\t/swap2\tswap\tsw\t0\t0"
        );
        assert!(r.notes.is_empty());
    }

    #[test]
    fn noop_changes_nothing() {
        let r = rewrite_fstab(DEBIAN, FstabMode::Noop, &devices());
        assert_eq!(r.text, DEBIAN);
        assert!(r.changes.is_empty() && r.notes.is_empty());
    }

    #[test]
    fn pseudo_filesystems_short_lines_and_stable_specs_are_untouched() {
        let text = "\
/dev/sda1 /proc proc defaults 0 0
/dev/sda1 /mnt/t tmpfs defaults 0 0
devpts /dev/pts devpts gid=5,mode=620 0 0
/dev/sda1 /short ext4
LABEL=data /data ext4 defaults 0 2
PARTUUID=8b2d-01 /p ext4 defaults 0 2
PARTLABEL=x /q ext4 defaults 0 2
/dev/disk/by-uuid/abcd /u ext4 defaults 0 2
/dev/disk/by-label/data /l ext4 defaults 0 2
/dev/disk/by-id/dm-name-vg-root /dm ext4 defaults 0 2
/dev/disk/by-id/lvm-pv-uuid-Ab12 /pv ext4 defaults 0 2
    # indented comment /dev/sda1 / ext4 defaults 0 1
";
        let r = rewrite_fstab(text, FstabMode::StabilizeAll, &devices());
        assert_eq!(r.text, text);
        assert!(r.changes.is_empty() && r.notes.is_empty(), "{r:#?}");
    }

    #[test]
    fn device_without_stable_id_and_other_names() {
        let text = "/dev/sda3 /var ext4 defaults 0 2\r\n/dev/hda5 none swap sw 0 0\r\n/dev/nvme0n1p3 /opt ext4 defaults 0 2\r\n";
        let r = rewrite_fstab(text, FstabMode::StabilizeAll, &devices());
        assert_eq!(
            r.text,
            "/dev/sda3 /var ext4 defaults 0 2\r\nUUID=5c1e9a77-0b3d-4f2e-a8d4-3e6f9b1c2d45\tnone\tswap\tsw\t0\t0\r\n/dev/nvme0n1p3 /opt ext4 defaults 0 2\r\n"
        );
        assert_eq!(
            r.notes,
            vec![
                "fstab line 1: /dev/sda3 has no UUID, PARTUUID, LABEL or PARTLABEL; left unchanged",
                "fstab line 3: /dev/nvme0n1p3 cannot be mapped to a device offline; left unchanged",
            ]
        );
    }

    #[test]
    fn root_line_resolves_to_the_root_device_whatever_its_name() {
        let text = "/dev/nvme0n1p1 / ext4 defaults 0 1\n/dev/sdb1 / ext4 defaults 0 1\n";
        let r = rewrite_fstab(text, FstabMode::StabilizeAll, &devices());
        assert_eq!(r.changes.len(), 2);
        assert!(r.changes.iter().all(|c| {
            c.after
                .starts_with("UUID=0f3a2c1e-7d5b-4a8e-9c61-2b4d8e7f1a90\t/\t")
        }));
        assert_eq!(
            r.changes[1].reason,
            "/dev/sdb1 -> UUID (inferred: the root filesystem is on /dev/sda1)"
        );
    }

    #[test]
    fn missing_trailing_newline_is_preserved() {
        let r = rewrite_fstab(
            "/dev/sda1 / ext4 defaults 0 1",
            FstabMode::StabilizeAll,
            &devices(),
        );
        assert_eq!(
            r.text,
            "UUID=0f3a2c1e-7d5b-4a8e-9c61-2b4d8e7f1a90\t/\text4\tdefaults\t0\t1"
        );
        assert_eq!(
            rewrite_fstab("", FstabMode::StabilizeAll, &devices()).text,
            ""
        );
    }

    #[test]
    fn crypttab_column_two_joined_with_spaces() {
        let text = "\
# <target name> <source device> <key file> <options>
sda5_crypt /dev/sda5 none luks,discard
cryptdata UUID=1111-2222 /etc/keys/data.key luks
cryptswap\t/dev/sdb2\t/dev/urandom\tswap,cipher=aes-xts-plain64
short
";
        let r = rewrite_crypttab(text, FstabMode::StabilizeAll, &devices());
        assert_eq!(
            r.text,
            text.replace(
                "sda5_crypt /dev/sda5 none luks,discard",
                "sda5_crypt UUID=5c1e9a77-0b3d-4f2e-a8d4-3e6f9b1c2d45 none luks,discard"
            )
        );
        assert_eq!(r.changes[0].path, "/etc/crypttab");
        assert_eq!(r.changes[0].line, Some(2));
        assert_eq!(
            r.notes,
            vec!["crypttab line 4: /dev/sdb2 does not exist in the guest; left unchanged"]
        );
    }

    #[test]
    fn crypttab_links_are_not_inferred() {
        let text = "luks-root /dev/disk/by-id/scsi-36000c29a1b2c3d4-part3 none luks\n";
        let r = rewrite_crypttab(text, FstabMode::StabilizeAll, &devices());
        assert_eq!(r.text, text);
        assert_eq!(r.notes.len(), 1);
    }

    #[test]
    fn split_link_parts() {
        assert_eq!(
            split_link("/dev/disk/by-id/scsi-36000c29-part12"),
            Some(("/dev/disk/by-id/scsi-36000c29", Some(12)))
        );
        assert_eq!(
            split_link("/dev/disk/by-id/ata-VMware_Virtual_SATA"),
            Some(("/dev/disk/by-id/ata-VMware_Virtual_SATA", None))
        );
        assert_eq!(split_link("/dev/sda1"), None);
        assert_eq!(root_disk("/dev/sda12").as_deref(), Some("/dev/sda"));
        assert_eq!(root_disk("/dev/vdb").as_deref(), Some("/dev/sdb"));
        assert_eq!(root_disk("/dev/mapper/vg-root"), None);
    }

    #[test]
    fn whole_disk_link_on_the_root_disk() {
        let text = "/dev/disk/by-id/wwn-0x6000c29-part1 / ext4 defaults 0 1\n\
                    /dev/disk/by-id/wwn-0x6000c29 /raw ext4 defaults 0 0\n";
        let r = rewrite_fstab(text, FstabMode::StabilizeAll, &devices());
        assert_eq!(r.changes.len(), 1);
        assert_eq!(
            r.notes,
            vec![
                "fstab line 2: /dev/disk/by-id/wwn-0x6000c29 (inferred as /dev/sda) has no UUID, \
                 PARTUUID, LABEL or PARTLABEL; left unchanged"
            ]
        );
    }

    fn fstab_line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/dev/sda1 / ext4 errors=remount-ro 0 1".to_string()),
            Just("/dev/sda5 none swap sw 0 0".to_string()),
            Just("/dev/sdb1 /data xfs defaults 0 2".to_string()),
            Just("/dev/sda3 /var ext4 defaults 0 2".to_string()),
            Just("/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part1 / xfs defaults 0 0".to_string()),
            Just("/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part2 /boot/efi vfat umask=0077 0 2".to_string()),
            Just("/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:1:0-part1 /data xfs defaults 0 0".to_string()),
            Just("UUID=abcd-1234 /home ext4 defaults 0 2".to_string()),
            Just("proc /proc proc defaults 0 0".to_string()),
            Just("tmpfs /tmp tmpfs defaults 0 0".to_string()),
            Just("/dev/mapper/vg-root / ext4 defaults 0 1".to_string()),
            Just("/dev/sda1 /short ext4".to_string()),
            Just(String::new()),
            Just("   ".to_string()),
            "#[ -~]{0,40}".prop_map(|s| s),
            "[ \t]{0,3}#[ -~]{0,40}".prop_map(|s| s),
            "[ -~]{0,60}".prop_map(|s| s),
        ]
    }

    fn fstab_text() -> impl Strategy<Value = String> {
        (prop::collection::vec(fstab_line(), 0..12), any::<bool>()).prop_map(|(lines, trailing)| {
            let mut text = lines.join("\n");
            if trailing && !text.is_empty() {
                text.push('\n');
            }
            text
        })
    }

    proptest! {
        #[test]
        fn fstab_rewrite_is_idempotent(text in fstab_text(), bypath in any::<bool>()) {
            let mode = if bypath { FstabMode::BypathOnly } else { FstabMode::StabilizeAll };
            let once = rewrite_fstab(&text, mode, &devices());
            let twice = rewrite_fstab(&once.text, mode, &devices());
            prop_assert_eq!(&twice.text, &once.text);
            prop_assert!(twice.changes.is_empty());
        }

        #[test]
        fn fstab_rewrite_keeps_comments_and_blank_lines(text in fstab_text()) {
            let out = rewrite_fstab(&text, FstabMode::StabilizeAll, &devices());
            let before: Vec<&str> = text.split('\n').collect();
            let after: Vec<&str> = out.text.split('\n').collect();
            prop_assert_eq!(before.len(), after.len());
            for (b, a) in before.iter().zip(&after) {
                let t = b.trim();
                if t.is_empty() || t.starts_with('#') {
                    prop_assert_eq!(b, a);
                }
            }
            for change in &out.changes {
                prop_assert_eq!(before[change.line.unwrap_or(0) - 1], change.before.as_str());
            }
        }
    }
}
