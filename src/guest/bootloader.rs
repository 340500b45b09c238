//! Kernel command lines in bootloader configs: `root=` and `resume=` moved to stable ids.
//!
//! A kernel booted with `root=/dev/sda1` on KVM waits for a disk that is now `/dev/vda1` and
//! panics. Every place that feeds a command line to the kernel is rewritten, not only grub.cfg:
//! the guest regenerates grub.cfg from /etc/default/grub (so a stale default would come back at
//! the next kernel update), BLS entries and /etc/kernel/cmdline are read directly by GRUB's
//! blscfg and systemd-boot, and extlinux/syslinux have no generator at all.
//!
//! Only the lines that carry kernel parameters are touched (`linux`, `linux16`, `linuxefi`,
//! `kernel`, BLS `options`, extlinux `append`, `GRUB_CMDLINE_*=`, `kernelopts=`), so GRUB's own
//! `set root='hd0,msdos1'` is never mistaken for a kernel parameter. Every other byte is kept.

use crate::guest::fstab::{needs_stable_id, split_lines};
use crate::guest::{Devices, FileChange, Rewrite};

/// Guest files that may hold kernel command lines, and why each is here:
pub const CONFIG_PATHS: &[&str] = &[
    // The input of grub-mkconfig on every GRUB 2 distro; fixing only grub.cfg would be undone by
    // the next kernel update.
    "/etc/default/grub",
    // Generated GRUB 2 configs: Debian, Ubuntu, Arch use grub/, RHEL, Fedora, SUSE use grub2/.
    "/boot/grub/grub.cfg",
    "/boot/grub2/grub.cfg",
    // RHEL/CentOS up to 8 and Fedora up to 33 keep the real grub.cfg on the ESP when booted by
    // UEFI (later releases leave a stub there that only sources /boot/grub2/grub.cfg).
    "/boot/efi/EFI/redhat/grub.cfg",
    "/boot/efi/EFI/centos/grub.cfg",
    "/boot/efi/EFI/fedora/grub.cfg",
    "/boot/efi/EFI/rocky/grub.cfg",
    "/boot/efi/EFI/almalinux/grub.cfg",
    // RHEL 8's BLS entries say `options $kernelopts`; the value lives in grubenv (a symlink into
    // the ESP on UEFI, so one path covers both). Its 1024-byte size is kept.
    "/boot/grub2/grubenv",
    // GRUB legacy: RHEL/CentOS 6 (grub.conf) and older Debian/SUSE (menu.lst).
    "/boot/grub/grub.conf",
    "/boot/grub/menu.lst",
    // kernel-install's command line for new BLS entries and unified kernel images.
    "/etc/kernel/cmdline",
    // extlinux/syslinux: no generator, the config file is all there is.
    "/boot/extlinux/extlinux.conf",
    "/boot/extlinux.conf",
    "/extlinux.conf",
    "/boot/syslinux/syslinux.cfg",
    "/boot/syslinux.cfg",
    "/syslinux.cfg",
];

/// Boot Loader Specification entries (`*.conf`, one `options` line each), read by GRUB's blscfg
/// on Fedora/RHEL 8+ and by systemd-boot.
pub const BLS_DIR: &str = "/boot/loader/entries";

/// Drop-ins that grub-mkconfig sources after /etc/default/grub (`*.cfg`); Ubuntu cloud images
/// put their GRUB_CMDLINE_LINUX_DEFAULT here.
pub const GRUB_DEFAULTS_DIR: &str = "/etc/default/grub.d";

/// GRUB's BIOS-drive map. A map that names kernel devices makes grub-install and grub-probe fail
/// ("cannot find a GRUB drive for /dev/vda1") once the disk is renamed; GRUB 2 rebuilds the
/// mapping itself when the file is missing.
pub const DEVICE_MAP_PATHS: &[&str] = &[
    "/boot/grub/device.map",
    "/boot/grub2/device.map",
    "/etc/grub2-device.map",
];

/// The header GRUB writes at the top of an environment block; grubenv files are recognised by it
/// rather than by path, because they also live on the ESP.
const GRUBENV_HEADER: &str = "# GRUB Environment Block\n";

/// Rewrites the kernel command lines in one bootloader file.
///
/// Every `root=` whose value is unstable becomes `root=<root_spec>` (e.g. `UUID=...`, the root
/// device's stable id as the caller computed it). Every `resume=` with an unstable value becomes
/// the stable id of that device, when [`Devices::lookup`] knows it; a by-id/by-path `resume=`
/// (SUSE's installer writes those) is taken to mean the guest's only swap device when it has
/// exactly one (`fstype` `swap`); otherwise it is left alone with a note. `path` names the file
/// in changes and notes; `/etc/kernel/cmdline` is treated as one bare command line.
pub fn rewrite_cmdlines(path: &str, text: &str, root_spec: &str, devices: &Devices) -> Rewrite {
    let mut out = Rewrite {
        text: String::with_capacity(text.len() + 128),
        ..Rewrite::default()
    };
    // A caller that could not find a stable id must not make root= worse.
    let root_spec = (!root_spec.is_empty() && !needs_stable_id(root_spec)).then_some(root_spec);
    let bare = path == "/etc/kernel/cmdline";
    for (index, (content, eol)) in split_lines(text).enumerate() {
        let line_no = index + 1;
        if disables_uuids(content) {
            out.notes.push(format!(
                "{path} line {line_no}: GRUB_DISABLE_LINUX_UUID=true makes grub-mkconfig write \
                 kernel device names, so regenerating grub.cfg brings root=/dev/... back"
            ));
        }
        if !((bare && !content.trim_start().starts_with('#')) || is_cmdline_line(content)) {
            out.text.push_str(content);
            out.text.push_str(eol);
            continue;
        }
        let edit = rewrite_params(content, root_spec, devices);
        for note in edit.notes {
            out.notes
                .push(format!("{path} line {line_no}: {note}; left unchanged"));
        }
        if edit.reasons.is_empty() {
            out.text.push_str(content);
        } else {
            out.text.push_str(&edit.line);
            out.changes.push(FileChange {
                path: path.to_string(),
                line: Some(line_no),
                before: content.to_string(),
                after: edit.line,
                reason: edit.reasons.join(", "),
            });
        }
        out.text.push_str(eol);
    }
    if out.changed() && text.starts_with(GRUBENV_HEADER) {
        return keep_grubenv_size(path, text, out);
    }
    out
}

/// Whether a line passes parameters to a kernel, in any of the formats in [`CONFIG_PATHS`].
fn is_cmdline_line(content: &str) -> bool {
    let trimmed = content.trim_start();
    let first = trimmed.split_whitespace().next().unwrap_or("");
    // extlinux keywords are case-insensitive; GRUB's are not, but nothing else is spelled so.
    let keyword = first.to_ascii_lowercase();
    matches!(
        keyword.as_str(),
        "linux" | "linux16" | "linuxefi" | "kernel" | "options" | "append"
    ) || trimmed.starts_with("GRUB_CMDLINE_")
        || trimmed.starts_with("export GRUB_CMDLINE_")
        || trimmed.starts_with("kernelopts=")
        || trimmed.starts_with("set kernelopts=")
}

/// `GRUB_DISABLE_LINUX_UUID=true` in /etc/default/grub: reported, not changed, because someone
/// chose it and grub-mkconfig's alternatives (PARTUUID, none) depend on the GRUB version.
fn disables_uuids(content: &str) -> bool {
    content
        .trim()
        .strip_prefix("GRUB_DISABLE_LINUX_UUID=")
        .is_some_and(|v| v.trim_matches(|c| c == '"' || c == '\'') == "true")
}

struct ParamEdit {
    line: String,
    reasons: Vec<String>,
    notes: Vec<String>,
}

/// Replaces the values of `root=` and `resume=` parameters in one line. A parameter starts after
/// whitespace, a quote (`GRUB_CMDLINE_LINUX="root=..."`) or `=` (`kernelopts=root=...`), and its
/// value ends at whitespace or a quote.
fn rewrite_params(content: &str, root_spec: Option<&str>, devices: &Devices) -> ParamEdit {
    let mut edit = ParamEdit {
        line: String::with_capacity(content.len() + 64),
        reasons: Vec::new(),
        notes: Vec::new(),
    };
    let mut rest = content;
    let mut previous: Option<char> = None;
    while !rest.is_empty() {
        let at_boundary =
            previous.is_none_or(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '='));
        let name = ["root=", "resume="]
            .into_iter()
            .find(|name| at_boundary && rest.starts_with(name));
        let Some(name) = name else {
            let Some(c) = rest.chars().next() else { break };
            edit.line.push(c);
            previous = Some(c);
            rest = &rest[c.len_utf8()..];
            continue;
        };
        let after_name = &rest[name.len()..];
        let end = after_name
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\''))
            .unwrap_or(after_name.len());
        let value = &after_name[..end];
        // The new value, and how it was inferred when it was not looked up by name.
        let replacement: Option<(String, Option<String>)> = if !needs_stable_id(value) {
            None
        } else if name == "root=" {
            if root_spec.is_none() {
                edit.notes.push(format!(
                    "root={value} has no stable replacement (the root device has no UUID, \
                     PARTUUID, LABEL or PARTLABEL)"
                ));
            }
            root_spec.map(|spec| (spec.to_string(), None))
        } else {
            match resume_spec(value, devices) {
                Ok(found) => Some(found),
                Err(why) => {
                    edit.notes.push(format!("resume={value} {why}"));
                    None
                }
            }
        };
        edit.line.push_str(name);
        match replacement {
            Some((new, how)) if new != value => {
                let kind = new.split('=').next().unwrap_or("id");
                edit.reasons.push(match how {
                    Some(how) => format!("{name}{value} -> {kind} ({how})"),
                    None => format!("{name}{value} -> {kind}"),
                });
                edit.line.push_str(&new);
            }
            _ => edit.line.push_str(value),
        }
        // The value was consumed whole, so a `=` inside it (`UUID=...`) starts nothing.
        previous = value.chars().last().or(Some('='));
        rest = &after_name[end..];
    }
    edit
}

/// The stable id of the swap device a `resume=` names, and how it was inferred when the name
/// itself could not be looked up.
fn resume_spec(value: &str, devices: &Devices) -> Result<(String, Option<String>), &'static str> {
    let no_id = "has no UUID, PARTUUID, LABEL or PARTLABEL";
    if Devices::appliance_name(value).is_some() {
        let ids = devices.lookup(value).ok_or("does not exist in the guest")?;
        return Ok((ids.stable_spec().ok_or(no_id)?, None));
    }
    // resume= can only name a swap device; with one in the guest there is nothing to guess.
    let mut swaps = devices
        .by_name
        .iter()
        .filter(|(_, ids)| ids.fstype.as_deref() == Some("swap"));
    match (swaps.next(), swaps.next()) {
        (Some((name, ids)), None) => Ok((
            ids.stable_spec().ok_or(no_id)?,
            Some(format!("inferred: the guest's only swap device, {name}")),
        )),
        _ => Err("cannot be mapped to a device offline"),
    }
}

/// A grubenv file must stay exactly as long as it was (GRUB reads a fixed-size block and pads it
/// with `#`), so a longer `kernelopts=` eats padding. When the padding is too short the file is
/// left alone: grub2-mkconfig rewrites kernelopts from /etc/default/grub anyway.
fn keep_grubenv_size(path: &str, original: &str, mut out: Rewrite) -> Rewrite {
    let body_end = out.text.trim_end_matches('#').len();
    let padding = out.text.len() - body_end;
    let grown = out.text.len() as isize - original.len() as isize;
    if grown > padding as isize {
        return Rewrite {
            text: original.to_string(),
            changes: Vec::new(),
            notes: vec![format!(
                "{path}: the new kernelopts does not fit in the environment block; left unchanged"
            )],
        };
    }
    let new_padding = (padding as isize - grown) as usize;
    out.text.truncate(body_end);
    out.text.push_str(&"#".repeat(new_padding));
    out
}

/// Whether a GRUB device.map ties a BIOS drive to a kernel device name or a by-path link, which
/// no longer exist once the disk is on virtio. Maps by id or UUID, and maps with only floppy or
/// comment lines, are not stale.
pub fn device_map_is_stale(text: &str) -> bool {
    text.lines().any(|line| {
        let mut words = line.split_whitespace();
        let (Some(drive), Some(device)) = (words.next(), words.next()) else {
            return false;
        };
        if drive.starts_with('#') || drive.starts_with("(fd") {
            return false;
        }
        Devices::appliance_name(device).is_some()
            || device.starts_with("/dev/nvme")
            || device.starts_with("/dev/disk/by-path/")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::DeviceIds;
    use proptest::prelude::*;

    const ROOT: &str = "UUID=0f3a2c1e-7d5b-4a8e-9c61-2b4d8e7f1a90";

    fn devices() -> Devices {
        let mut d = Devices {
            root: Some("/dev/sda1".to_string()),
            ..Devices::default()
        };
        d.by_name.insert(
            "/dev/sda1".into(),
            DeviceIds {
                uuid: Some("0f3a2c1e-7d5b-4a8e-9c61-2b4d8e7f1a90".into()),
                ..DeviceIds::default()
            },
        );
        d.by_name.insert(
            "/dev/sda5".into(),
            DeviceIds {
                uuid: Some("5c1e9a77-0b3d-4f2e-a8d4-3e6f9b1c2d45".into()),
                fstype: Some("swap".into()),
                ..DeviceIds::default()
            },
        );
        d.by_name.insert("/dev/sda6".into(), DeviceIds::default());
        d
    }

    const GRUB_CFG: &str = "\
### BEGIN /etc/grub.d/10_linux ###
function gfxmode {
\tset gfxpayload=\"${1}\"
}
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-0f3a2c1e' {
\tload_video
\tinsmod part_msdos
\tinsmod ext2
\tset root='hd0,msdos1'
\tif [ x$feature_platform_search_hint = xy ]; then
\t  search --no-floppy --fs-uuid --set=root --hint-bios=hd0,msdos1 0f3a2c1e-7d5b-4a8e-9c61-2b4d8e7f1a90
\tfi
\techo\t'Loading Linux 6.1.0-13-amd64 ...'
\tlinux\t/boot/vmlinuz-6.1.0-13-amd64 root=/dev/sda1 ro quiet resume=/dev/sda5
\techo\t'Loading initial ramdisk ...'
\tinitrd\t/boot/initrd.img-6.1.0-13-amd64
}
menuentry 'Debian GNU/Linux, with Linux 6.1.0-12-amd64' {
\tlinux\t/boot/vmlinuz-6.1.0-12-amd64 root=UUID=0f3a2c1e-7d5b-4a8e-9c61-2b4d8e7f1a90 ro quiet
}
menuentry 'CentOS' {
\tlinux16 /vmlinuz-3.10.0 root=/dev/sda1 ro crashkernel=auto rhgb
\tlinuxefi /vmlinuz-3.10.0 root=/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part1 ro
}
";

    #[test]
    fn grub_cfg_linux_lines() {
        let r = rewrite_cmdlines("/boot/grub/grub.cfg", GRUB_CFG, ROOT, &devices());
        let expected = GRUB_CFG
            .replace(
                "root=/dev/sda1 ro quiet resume=/dev/sda5",
                "root=UUID=0f3a2c1e-7d5b-4a8e-9c61-2b4d8e7f1a90 ro quiet \
                 resume=UUID=5c1e9a77-0b3d-4f2e-a8d4-3e6f9b1c2d45",
            )
            .replace(
                "root=/dev/sda1 ro crashkernel",
                &format!("root={ROOT} ro crashkernel"),
            )
            .replace(
                "root=/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part1",
                &format!("root={ROOT}"),
            );
        assert_eq!(r.text, expected);
        assert_eq!(r.changes.len(), 3);
        assert_eq!(r.changes[0].line, Some(14));
        assert_eq!(r.changes[0].path, "/boot/grub/grub.cfg");
        assert_eq!(
            r.changes[0].reason,
            "root=/dev/sda1 -> UUID, resume=/dev/sda5 -> UUID"
        );
        assert_eq!(
            r.changes[0].before,
            "\tlinux\t/boot/vmlinuz-6.1.0-13-amd64 root=/dev/sda1 ro quiet resume=/dev/sda5"
        );
        assert!(r.notes.is_empty());
        // `set root='hd0,msdos1'` and `--set=root` are GRUB's, not the kernel's.
        assert!(r.text.contains("\tset root='hd0,msdos1'\n"));
    }

    #[test]
    fn etc_default_grub_quoted_values() {
        let text = "\
# If you change this file, run 'update-grub' afterwards to update
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_CMDLINE_LINUX_DEFAULT=\"quiet resume=/dev/sda6\"
GRUB_CMDLINE_LINUX=\"root=/dev/sda1 console=ttyS0\"
#GRUB_CMDLINE_LINUX=\"root=/dev/sda1\"
GRUB_CMDLINE_LINUX_RECOVERY='root=/dev/hda1'
GRUB_DEVICE=/dev/sda1
";
        let r = rewrite_cmdlines("/etc/default/grub", text, ROOT, &devices());
        assert_eq!(
            r.text,
            text.replace(
                "GRUB_CMDLINE_LINUX=\"root=/dev/sda1 console",
                &format!("GRUB_CMDLINE_LINUX=\"root={ROOT} console")
            )
            .replace("'root=/dev/hda1'", &format!("'root={ROOT}'"))
        );
        assert_eq!(r.changes.len(), 2);
        assert_eq!(r.changes[0].line, Some(5));
        assert_eq!(
            r.notes,
            vec![
                "/etc/default/grub line 4: resume=/dev/sda6 has no UUID, PARTUUID, LABEL or \
                 PARTLABEL; left unchanged"
            ]
        );
    }

    #[test]
    fn suse_resume_by_id_means_the_only_swap() {
        let text = "\
GRUB_CMDLINE_LINUX_DEFAULT=\"splash=silent resume=/dev/disk/by-id/scsi-36000c29d1e2f3a4b-part3 quiet mitigations=auto\"
GRUB_DISABLE_LINUX_UUID=\"true\"
";
        let r = rewrite_cmdlines("/etc/default/grub", text, ROOT, &devices());
        assert_eq!(
            r.text,
            text.replace(
                "resume=/dev/disk/by-id/scsi-36000c29d1e2f3a4b-part3",
                "resume=UUID=5c1e9a77-0b3d-4f2e-a8d4-3e6f9b1c2d45"
            )
        );
        assert_eq!(
            r.changes[0].reason,
            "resume=/dev/disk/by-id/scsi-36000c29d1e2f3a4b-part3 -> UUID \
             (inferred: the guest's only swap device, /dev/sda5)"
        );
        assert_eq!(r.notes.len(), 1);
        assert!(r.notes[0].starts_with("/etc/default/grub line 2: GRUB_DISABLE_LINUX_UUID=true"));

        // Two swap devices: no guess.
        let mut two = devices();
        two.by_name.insert(
            "/dev/sdb1".into(),
            DeviceIds {
                uuid: Some("aaaa".into()),
                fstype: Some("swap".into()),
                ..DeviceIds::default()
            },
        );
        let r = rewrite_cmdlines("/etc/default/grub", text, ROOT, &two);
        assert!(!r.changed());
        assert!(r.notes[0].ends_with("cannot be mapped to a device offline; left unchanged"));
    }

    #[test]
    fn stable_roots_are_untouched() {
        let text = "\
GRUB_CMDLINE_LINUX=\"root=UUID=abcd ro\"
linux /vmlinuz root=/dev/mapper/rhel-root ro rd.lvm.lv=rhel/root
linux /vmlinuz root=LABEL=cloudimg-rootfs ro
linux /vmlinuz root=PARTUUID=8b2d-01 rootfstype=ext4 real_root=/dev/sda1
options root=/dev/disk/by-id/dm-uuid-LVM-abc ro
append root=/dev/disk/by-uuid/abcd
";
        let r = rewrite_cmdlines("/boot/grub2/grub.cfg", text, ROOT, &devices());
        assert_eq!(r.text, text);
        assert!(r.changes.is_empty() && r.notes.is_empty());
    }

    #[test]
    fn bls_entry_options() {
        let text = "\
title Red Hat Enterprise Linux (5.14.0-362.8.1.el9_3.x86_64) 9.3 (Plow)
version 5.14.0-362.8.1.el9_3.x86_64
linux /vmlinuz-5.14.0-362.8.1.el9_3.x86_64
initrd /initramfs-5.14.0-362.8.1.el9_3.x86_64.img $tuned_initrd
options root=/dev/sda2 ro crashkernel=1G-4G:192M,4G-64G:256M resume=/dev/sdb1 $tuned_params
grub_users $grub_users
grub_arg --unrestricted
grub_class rhel";
        let path = "/boot/loader/entries/a1b2c3-5.14.0-362.8.1.el9_3.x86_64.conf";
        let r = rewrite_cmdlines(path, text, ROOT, &devices());
        assert_eq!(
            r.text,
            text.replace("root=/dev/sda2", &format!("root={ROOT}"))
        );
        assert_eq!(r.changes.len(), 1);
        assert_eq!(r.changes[0].line, Some(5));
        assert_eq!(
            r.notes,
            vec![format!(
                "{path} line 5: resume=/dev/sdb1 does not exist in the guest; left unchanged"
            )]
        );
    }

    #[test]
    fn extlinux_append_any_case() {
        let text = "\
DEFAULT linux
LABEL linux
  KERNEL /boot/vmlinuz-lts
  APPEND root=/dev/sda1 ro modules=sd-mod,usb-storage,ext4 quiet
LABEL old
  kernel /boot/vmlinuz-old
  append initrd=/boot/initramfs-old root=/dev/xvda1
";
        let r = rewrite_cmdlines("/boot/extlinux/extlinux.conf", text, ROOT, &devices());
        assert_eq!(
            r.text,
            text.replace("root=/dev/sda1", &format!("root={ROOT}"))
                .replace("root=/dev/xvda1", &format!("root={ROOT}"))
        );
        assert_eq!(r.changes.len(), 2);
        assert_eq!(r.changes[1].reason, "root=/dev/xvda1 -> UUID");
    }

    #[test]
    fn kernel_cmdline_file_is_one_bare_line() {
        let text = "root=/dev/sda1 ro quiet splash\n";
        let r = rewrite_cmdlines("/etc/kernel/cmdline", text, ROOT, &devices());
        assert_eq!(r.text, format!("root={ROOT} ro quiet splash\n"));
        // Elsewhere a bare line is not a command line.
        let r = rewrite_cmdlines("/boot/grub/grub.cfg", text, ROOT, &devices());
        assert!(!r.changed());
    }

    #[test]
    fn unstable_root_spec_is_refused() {
        let text = "linux /vmlinuz root=/dev/sda1 ro\n";
        for spec in ["", "/dev/sda1"] {
            let r = rewrite_cmdlines("/boot/grub/grub.cfg", text, spec, &devices());
            assert_eq!(r.text, text);
            assert_eq!(r.notes.len(), 1, "{spec}");
        }
    }

    #[test]
    fn grubenv_keeps_its_size() {
        let body = "# GRUB Environment Block\n\
                    saved_entry=a1b2c3-5.14.0-362.el9.x86_64\n\
                    kernelopts=root=/dev/sda2 ro crashkernel=auto\n\
                    boot_success=0\n";
        let text = format!("{body}{}", "#".repeat(1024 - body.len()));
        let r = rewrite_cmdlines("/boot/grub2/grubenv", &text, ROOT, &devices());
        assert_eq!(r.text.len(), 1024);
        assert!(
            r.text
                .contains(&format!("kernelopts=root={ROOT} ro crashkernel=auto\n"))
        );
        assert!(r.text.ends_with('#'));
        assert_eq!(r.changes.len(), 1);

        // No room: left alone.
        let tight = format!("{body}{}", "#".repeat(3));
        let r = rewrite_cmdlines("/boot/grub2/grubenv", &tight, ROOT, &devices());
        assert_eq!(r.text, tight);
        assert!(r.changes.is_empty());
        assert_eq!(r.notes.len(), 1);
    }

    #[test]
    fn device_maps() {
        assert!(device_map_is_stale("(hd0)\t/dev/sda\n"));
        assert!(device_map_is_stale(
            "# this device map was generated by anaconda\n(hd0)      /dev/vda\n"
        ));
        assert!(device_map_is_stale("(hd0) /dev/nvme0n1\n"));
        assert!(device_map_is_stale(
            "(hd1) /dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:1:0\n"
        ));
        assert!(device_map_is_stale("(fd0) /dev/fd0\n(hd0) /dev/hda\n"));
        assert!(!device_map_is_stale("(fd0) /dev/fd0\n"));
        assert!(!device_map_is_stale(
            "(hd0) /dev/disk/by-id/ata-VMware_Virtual_SATA_Hard_Drive\n"
        ));
        assert!(!device_map_is_stale("(hd0) /dev/disk/by-uuid/0f3a2c1e\n"));
        assert!(!device_map_is_stale(""));
        assert!(!device_map_is_stale("# (hd0) /dev/sda\n\n"));
    }

    fn cmdline_line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("\tlinux /boot/vmlinuz-6.1.0-13-amd64 root=/dev/sda1 ro quiet".to_string()),
            Just("\tlinux /boot/vmlinuz root=UUID=abcd ro resume=/dev/sda5".to_string()),
            Just(
                "linuxefi /vmlinuz root=/dev/disk/by-id/scsi-36000c29-part1 resume=/dev/sdb2"
                    .to_string()
            ),
            Just("GRUB_CMDLINE_LINUX=\"root=/dev/sda1 resume=/dev/sda6\"".to_string()),
            Just("kernelopts=root=/dev/nvme0n1p2 ro".to_string()),
            Just("options root=/dev/hda1 resume=/dev/sda5".to_string()),
            Just("  APPEND root=/dev/sda1".to_string()),
            Just("\tset root='hd0,msdos1'".to_string()),
            Just("# linux root=/dev/sda1".to_string()),
            Just(String::new()),
            "(linux|options|append|kernel) [ -~]{0,50}".prop_map(|s| s),
            "[ -~]{0,50}".prop_map(|s| s),
        ]
    }

    proptest! {
        #[test]
        fn cmdline_rewrite_is_idempotent(
            lines in prop::collection::vec(cmdline_line(), 0..10),
            bare in any::<bool>(),
        ) {
            let text = lines.join("\n");
            let path = if bare { "/etc/kernel/cmdline" } else { "/boot/grub/grub.cfg" };
            let once = rewrite_cmdlines(path, &text, ROOT, &devices());
            let twice = rewrite_cmdlines(path, &once.text, ROOT, &devices());
            prop_assert_eq!(&twice.text, &once.text);
            prop_assert!(twice.changes.is_empty());
            prop_assert_eq!(once.text.lines().count(), text.lines().count());
        }
    }
}
