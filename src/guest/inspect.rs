//! What is inside a guest: its operating system, filesystems and boot setup, read through a
//! session with libguestfs's inspection.

use serde::Serialize;

use super::{DeviceIds, Devices};
use crate::manifest::Firmware;
use crate::tools::guestfish::{GuestError, Session};

/// The guest as inspection sees it; goes into the report as `guest`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GuestInfo {
    pub os_type: String,
    pub distro: String,
    pub product_name: String,
    pub major_version: u32,
    pub minor_version: u32,
    pub hostname: String,
    pub package_format: String,
    /// The device of the root filesystem (`/dev/sda1`, `/dev/vg/root`).
    pub root: String,
    /// Mount point → device, as the guest's fstab says (libguestfs's view).
    pub mountpoints: Vec<(String, String)>,
    /// Device → filesystem type, for every filesystem found.
    pub filesystems: Vec<(String, String)>,
    /// An EFI system partition exists (vfat mounted at /boot/efi, or a GPT ESP).
    pub esp_present: bool,
    /// `uefi` when an ESP is present, else `bios`.
    pub firmware_hint: &'static str,
    /// Kernel versions installed (`/lib/modules/*`), filled in once the guest is mounted.
    pub kernels: Vec<String>,
    /// Devices holding LUKS-encrypted volumes.
    pub encrypted: Vec<String>,
    /// Data filesystems of the guest's fstab that were not mounted, and why (a device that is
    /// not among the VM's disks, or that would not mount). Repairs never write there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_mounted: Vec<String>,
}

/// Mount points whose files a repair may read or write: these must mount. Any other
/// filesystem (`/data`, `/srv`, `/home`...) is mounted when it can be and skipped otherwise.
fn is_system_mountpoint(mp: &str) -> bool {
    const SYSTEM: &[&str] = &[
        "/",
        "/boot",
        "/boot/efi",
        "/etc",
        "/usr",
        "/var",
        "/lib",
        "/lib64",
    ];
    SYSTEM.contains(&mp) || mp.starts_with("/usr/")
}

impl GuestInfo {
    pub fn is_windows(&self) -> bool {
        self.os_type == "windows"
    }

    pub fn is_linux(&self) -> bool {
        self.os_type == "linux"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error(
        "no operating system was found on the disks{}; nothing was changed",
        encrypted_hint(encrypted)
    )]
    NoOs { encrypted: Vec<String> },
    #[error(
        "no operating system was found on the disks, and {} cannot be mounted: the filesystem \
         may be corrupt (check a copy with fsck); nothing was changed. {}",
        unmountable.iter().map(|(dev, fs, _)| format!("{dev} ({fs})")).collect::<Vec<_>>().join(", "),
        unmountable.iter().map(|(dev, _, msg)| format!("{dev}: {msg}")).collect::<Vec<_>>().join("; ")
    )]
    Unmountable {
        /// (device, filesystem type, mount error) of each filesystem that would not mount.
        unmountable: Vec<(String, String, String)>,
    },
    #[error(
        "several operating systems were found (roots: {}); hyper2kvm repairs one per VM, so \
         split the disks into one manifest per operating system",
        roots.join(", ")
    )]
    SeveralRoots { roots: Vec<String> },
    #[error(
        "the guest has encrypted (LUKS) volumes ({}) and no key was given; hyper2kvm cannot \
         open them, so it cannot repair this guest (nothing was changed)",
        devices.join(", ")
    )]
    Encrypted { devices: Vec<String> },
    #[error(
        "cannot mount {device} at {mountpoint} (the filesystem may be corrupt; check it with \
         fsck): {message}"
    )]
    Mount {
        device: String,
        mountpoint: String,
        message: String,
    },
}

fn encrypted_hint(devices: &[String]) -> String {
    if devices.is_empty() {
        String::new()
    } else {
        format!(
            " (encrypted LUKS volumes {} may hide it; no key was given)",
            devices.join(", ")
        )
    }
}

/// Runs libguestfs inspection and returns the single root it finds.
pub fn inspect(session: &mut Session<'_>) -> Result<GuestInfo, InspectError> {
    let filesystems: Vec<(String, String)> = session
        .lines(&["list-filesystems"])?
        .iter()
        .filter_map(|l| {
            let (dev, fs) = l.split_once(':')?;
            Some((dev.trim().to_owned(), fs.trim().to_owned()))
        })
        .collect();
    // list-filesystems leaves LUKS containers out; ask each partition what it holds.
    let mut encrypted: Vec<String> = filesystems
        .iter()
        .filter(|(_, fs)| fs == "crypto_LUKS")
        .map(|(d, _)| d.clone())
        .collect();
    for part in session.lines(&["list-partitions"])? {
        if encrypted.contains(&part) {
            continue;
        }
        match session.call(&["vfs-type", &part]) {
            Ok(t) if t.trim() == "crypto_LUKS" => encrypted.push(part),
            Err(e) if e.ends_session() => return Err(e.into()),
            _ => {}
        }
    }
    let roots = session.lines(&["inspect-os"])?;
    let root = match roots.as_slice() {
        [] => {
            // Inspection skips filesystems it cannot mount, so a corrupt root looks like no
            // OS at all. Name the filesystems that would not mount instead.
            let unmountable = unmountable(session, &filesystems)?;
            if unmountable.is_empty() {
                return Err(InspectError::NoOs { encrypted });
            }
            return Err(InspectError::Unmountable { unmountable });
        }
        [one] => one.clone(),
        many => {
            return Err(InspectError::SeveralRoots {
                roots: many.to_vec(),
            });
        }
    };
    let get = |session: &mut Session<'_>, what: &str| -> Result<String, GuestError> {
        Ok(session
            .call(&[&format!("inspect-get-{what}"), &root])?
            .trim()
            .to_owned())
    };
    let os_type = get(session, "type")?;
    let distro = get(session, "distro")?;
    let product_name = get(session, "product-name")?;
    let major_version = get(session, "major-version")?.parse().unwrap_or(0);
    let minor_version = get(session, "minor-version")?.parse().unwrap_or(0);
    let hostname = get(session, "hostname")?;
    let package_format = get(session, "package-format")?;
    let mut mountpoints: Vec<(String, String)> = session
        .lines(&["inspect-get-mountpoints", &root])?
        .iter()
        .filter_map(|l| {
            let (mp, dev) = l.split_once(": ")?;
            Some((mp.trim().to_owned(), dev.trim().to_owned()))
        })
        .collect();
    mountpoints.sort_by_key(|(mp, _)| (mp.len(), mp.clone()));
    let esp_present = mountpoints.iter().any(|(mp, dev)| {
        mp == "/boot/efi" && filesystems.iter().any(|(d, fs)| d == dev && fs == "vfat")
    });
    Ok(GuestInfo {
        os_type,
        distro,
        product_name,
        major_version,
        minor_version,
        hostname,
        package_format,
        root,
        mountpoints,
        filesystems,
        esp_present,
        // The same spelling as vm.firmware, so a reader can compare the two in the report.
        firmware_hint: if esp_present {
            Firmware::Uefi.name()
        } else {
            Firmware::Bios.name()
        },
        kernels: Vec::new(),
        encrypted,
        not_mounted: Vec::new(),
    })
}

/// The filesystems (with a type that can hold an OS) that refuse to mount read-only, with the
/// error each gave.
fn unmountable(
    session: &mut Session<'_>,
    filesystems: &[(String, String)],
) -> Result<Vec<(String, String, String)>, GuestError> {
    let mut failed = Vec::new();
    for (dev, fs) in filesystems {
        if matches!(fs.as_str(), "" | "unknown" | "swap" | "crypto_LUKS") {
            continue;
        }
        match session.call(&["mount-ro", dev, "/"]) {
            Ok(_) => {
                session.call(&["umount-all"])?;
            }
            Err(e) if e.ends_session() => return Err(e),
            Err(e) => {
                let message = match e {
                    GuestError::Command { message, .. } => message,
                    other => other.to_string(),
                };
                failed.push((dev.clone(), fs.clone(), one_line(&message)));
            }
        }
    }
    Ok(failed)
}

/// The gist of a libguestfs error: the first line, without the `libguestfs: error:` prefix.
fn one_line(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default().trim();
    first
        .strip_prefix("libguestfs: error: ")
        .unwrap_or(first)
        .to_owned()
}

/// Mounts the guest's filesystems (shortest mount point first) and lists its kernels.
pub fn mount(
    session: &mut Session<'_>,
    info: &mut GuestInfo,
    readonly: bool,
) -> Result<(), InspectError> {
    if !info.encrypted.is_empty() {
        return Err(InspectError::Encrypted {
            devices: info.encrypted.clone(),
        });
    }
    let verb = if readonly { "mount-ro" } else { "mount" };
    let present: Vec<String> = info.filesystems.iter().map(|(d, _)| d.clone()).collect();
    let mut skipped_under: Vec<String> = Vec::new();
    for (mp, dev) in info.mountpoints.clone() {
        let system = is_system_mountpoint(&mp);
        if skipped_under
            .iter()
            .any(|s| mp.starts_with(&format!("{s}/")))
        {
            info.not_mounted.push(format!(
                "{mp} ({dev}): under {mp}'s parent, which was not mounted"
            ));
            continue;
        }
        if !system && !present.contains(&dev) {
            // libguestfs maps an fstab line to a device name even when no disk of this VM
            // holds it (a `nofail` data disk that was not migrated, say).
            info.not_mounted.push(format!(
                "{mp} ({dev}): no disk of this VM holds {dev}; not mounted"
            ));
            skipped_under.push(mp);
            continue;
        }
        if let Err(e) = session.call(&[verb, &dev, &mp]) {
            if e.ends_session() {
                return Err(e.into());
            }
            let message = match e {
                GuestError::Command { message, .. } => message,
                other => other.to_string(),
            };
            if !system {
                info.not_mounted.push(format!(
                    "{mp} ({dev}): not mounted, so nothing there is read or changed: {}",
                    one_line(&message)
                ));
                skipped_under.push(mp);
                continue;
            }
            // The root and the system filesystems must mount: their files are what is repaired.
            return Err(InspectError::Mount {
                device: dev,
                mountpoint: mp,
                message,
            });
        }
    }
    info.kernels = session
        .ls("/lib/modules")?
        .into_iter()
        .filter(|k| k.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    info.kernels.sort();
    Ok(())
}

/// Stable identifiers of every filesystem and partition, from `blkid`.
pub fn devices(session: &mut Session<'_>, info: &GuestInfo) -> Result<Devices, GuestError> {
    let mut names: Vec<String> = session.lines(&["list-partitions"])?;
    for (dev, _) in &info.filesystems {
        if !names.contains(dev) {
            names.push(dev.clone());
        }
    }
    let mut by_name = std::collections::BTreeMap::new();
    for name in names {
        // blkid fails on devices without a signature (an empty partition): no ids, not an error.
        let text = match session.call(&["blkid", &name]) {
            Ok(t) => t,
            Err(e) if e.ends_session() => return Err(e),
            Err(_) => String::new(),
        };
        by_name.insert(name, parse_blkid(&text));
    }
    Ok(Devices {
        by_name,
        root: Some(info.root.clone()),
    })
}

/// Parses guestfish `blkid` output (`KEY: value` lines).
pub fn parse_blkid(text: &str) -> DeviceIds {
    let mut ids = DeviceIds::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let slot = match key.trim() {
            "UUID" => &mut ids.uuid,
            "PARTUUID" => &mut ids.partuuid,
            "LABEL" => &mut ids.label,
            "PART_ENTRY_NAME" | "PARTLABEL" => &mut ids.partlabel,
            "TYPE" => &mut ids.fstype,
            _ => continue,
        };
        *slot = Some(value.to_owned());
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkid_output() {
        let ids = parse_blkid(
            "UUID: 0e6f2c1b-6f3e-4d55-9c8a-2c2b1f6e3a10\nBLOCK_SIZE: 4096\nTYPE: ext4\nPARTUUID: 5f2d4a6e-01\nLABEL: root\n",
        );
        assert_eq!(
            ids.uuid.as_deref(),
            Some("0e6f2c1b-6f3e-4d55-9c8a-2c2b1f6e3a10")
        );
        assert_eq!(ids.partuuid.as_deref(), Some("5f2d4a6e-01"));
        assert_eq!(ids.label.as_deref(), Some("root"));
        assert_eq!(ids.fstype.as_deref(), Some("ext4"));
        assert_eq!(
            ids.stable_spec().as_deref(),
            Some("UUID=0e6f2c1b-6f3e-4d55-9c8a-2c2b1f6e3a10")
        );
    }
}
