//! Offline guest repair: what to change inside a guest so it boots on KVM, and the libguestfs
//! session that reads and applies it.
//!
//! The text transforms (fstab, bootloader, network configs, initramfs drivers, VMware tools) are
//! pure functions over file contents and a description of the guest's block devices; they never
//! touch a disk and are unit-tested on their own. The session module is the only part that talks
//! to libguestfs (through `exec`), and the pipeline's inspect and fix stages drive it.

pub mod bootloader;
pub mod fstab;
pub mod initramfs;
pub mod inspect;
pub mod network;
pub mod repair;
pub mod vmware_tools;

use std::collections::BTreeMap;

use serde::Serialize;

/// One edit to one file inside the guest, as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// Guest path, e.g. `/etc/fstab`.
    pub path: String,
    /// 1-based line number in the original file, when the change is to one line.
    pub line: Option<usize>,
    /// The original line (or empty when a line is added).
    pub before: String,
    /// The new line (or empty when a line is removed).
    pub after: String,
    /// Why, in a few words ("/dev/sda1 -> UUID", "MAC pinning removed").
    pub reason: String,
}

/// The result of transforming one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// The whole new file content (equal to the input when nothing changed).
    pub text: String,
    pub changes: Vec<FileChange>,
    /// Things noticed and deliberately left alone (reported, e.g. an fstab device that does not
    /// exist in the guest).
    pub notes: Vec<String>,
}

impl Rewrite {
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }
}

/// Stable identifiers of one block device, as `blkid` reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceIds {
    pub uuid: Option<String>,
    pub partuuid: Option<String>,
    pub label: Option<String>,
    pub partlabel: Option<String>,
    /// Filesystem type (`ext4`, `xfs`, `swap`, `crypto_LUKS`, ...).
    pub fstype: Option<String>,
}

impl DeviceIds {
    /// The most stable way to name this device in fstab or on a kernel command line:
    /// UUID > PARTUUID > LABEL > PARTLABEL.
    pub fn stable_spec(&self) -> Option<String> {
        if let Some(v) = &self.uuid {
            return Some(format!("UUID={v}"));
        }
        if let Some(v) = &self.partuuid {
            return Some(format!("PARTUUID={v}"));
        }
        if let Some(v) = &self.label {
            return Some(format!("LABEL={v}"));
        }
        self.partlabel.as_ref().map(|v| format!("PARTLABEL={v}"))
    }
}

/// The guest's block devices as the libguestfs appliance names them (`/dev/sda1`, ...), which is
/// also how a VMware or Hyper-V guest named them (SCSI/SATA disks in the same order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    /// Appliance device name → its identifiers. Partitions and whole disks alike.
    pub by_name: BTreeMap<String, DeviceIds>,
    /// The device holding the guest's root filesystem (`/dev/sda1`), when known.
    pub root: Option<String>,
}

impl Devices {
    /// Maps a device name as the guest wrote it to the appliance name, when it can be known
    /// offline: `/dev/sdXN`, `/dev/hdXN`, `/dev/vdXN`, `/dev/xvdXN` all become `/dev/sdXN`;
    /// anything else (by-path, by-id, LVM, `UUID=`) is not a kernel name and returns `None`.
    pub fn appliance_name(guest: &str) -> Option<String> {
        for prefix in ["/dev/sd", "/dev/hd", "/dev/vd", "/dev/xvd"] {
            if let Some(rest) = guest.strip_prefix(prefix) {
                let letters: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                let digits = &rest[letters.len()..];
                if letters.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                return Some(format!("/dev/sd{letters}{digits}"));
            }
        }
        None
    }

    /// The identifiers of a device named as the guest wrote it, when it exists.
    pub fn lookup(&self, guest: &str) -> Option<&DeviceIds> {
        let name = Self::appliance_name(guest)?;
        self.by_name.get(&name)
    }
}

/// Whether a device spec names a device by something that changes when the disk moves from a
/// VMware/Hyper-V controller to virtio: kernel names and by-path/by-id links.
pub fn is_unstable_spec(spec: &str) -> bool {
    Devices::appliance_name(spec).is_some()
        || spec.starts_with("/dev/nvme")
        || spec.starts_with("/dev/disk/by-path/")
        || spec.starts_with("/dev/disk/by-id/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_spec_prefers_uuid() {
        let mut ids = DeviceIds {
            partlabel: Some("root".into()),
            ..DeviceIds::default()
        };
        assert_eq!(ids.stable_spec().as_deref(), Some("PARTLABEL=root"));
        ids.label = Some("ROOT".into());
        assert_eq!(ids.stable_spec().as_deref(), Some("LABEL=ROOT"));
        ids.partuuid = Some("1234-01".into());
        assert_eq!(ids.stable_spec().as_deref(), Some("PARTUUID=1234-01"));
        ids.uuid = Some("abcd".into());
        assert_eq!(ids.stable_spec().as_deref(), Some("UUID=abcd"));
    }

    #[test]
    fn guest_names_map_to_appliance_names() {
        assert_eq!(
            Devices::appliance_name("/dev/sda1").as_deref(),
            Some("/dev/sda1")
        );
        assert_eq!(
            Devices::appliance_name("/dev/hda3").as_deref(),
            Some("/dev/sda3")
        );
        assert_eq!(
            Devices::appliance_name("/dev/vdb").as_deref(),
            Some("/dev/sdb")
        );
        assert_eq!(
            Devices::appliance_name("/dev/xvdc2").as_deref(),
            Some("/dev/sdc2")
        );
        assert_eq!(Devices::appliance_name("/dev/sda1x"), None);
        assert_eq!(Devices::appliance_name("/dev/mapper/vg-root"), None);
        assert_eq!(Devices::appliance_name("UUID=abcd"), None);
    }

    #[test]
    fn unstable_specs() {
        assert!(is_unstable_spec("/dev/sda1"));
        assert!(is_unstable_spec(
            "/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0-part1"
        ));
        assert!(is_unstable_spec("/dev/disk/by-id/scsi-36000c29-part1"));
        assert!(!is_unstable_spec("/dev/mapper/vg-root"));
        assert!(!is_unstable_spec("UUID=abcd"));
        assert!(!is_unstable_spec("/dev/disk/by-uuid/abcd"));
    }
}
