//! Phony guests for the guest-repair tests: partitioned disks with real filesystems that look
//! like VMware Linux guests to libguestfs inspection (os-release, fstab naming /dev/sda1,
//! grub/BLS configs with root=/dev/sda1, MAC-pinned network configs, open-vm-tools), plus a
//! minimal userland (dash + libc from the host) so the guest's own tools can run: the fake
//! update-initramfs, dracut, grub-mkconfig and dpkg log their arguments to /var/log/h2k-tools.log.
//!
//! Building one takes an appliance launch (tens of seconds under TCG), so each is built once and
//! cached outside the checkout in `~/.cache/hyper2kvm-test/guests/<hash of the recipe>/disk.raw`;
//! tests copy it before use.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// Debian 12, ext4 root on sda1, swap on sda2, initramfs-tools, grub, netplan + ifupdown.
    Debian,
    /// Ubuntu 22.04, same layout as Debian.
    Ubuntu,
    /// Rocky Linux 9, xfs root on sda1, dracut, BLS entries, ifcfg, SELinux enforcing.
    Rhel,
    /// openSUSE Leap 15.5, ext4, dracut, ifcfg under /etc/sysconfig/network.
    Suse,
    /// A partitioned disk with a filesystem but no operating system.
    NoOs,
    /// Two Linux roots on one disk.
    TwoRoots,
    /// A Debian /boot and a LUKS-encrypted second partition.
    Luks,
    /// Windows as libguestfs inspection recognises it: an NTFS partition with
    /// `Windows/System32/config` and a 64-bit PE `cmd.exe` (no registry hives).
    Windows,
}

/// The smallest file `file(1)` calls "PE32+ executable (console) x86-64": a DOS header whose
/// e_lfanew points at a PE signature, an x86-64 COFF header and a PE32+ optional header.
fn pe32_plus() -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    b[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes()); // machine: x86-64
    b[0x94..0x96].copy_from_slice(&240u16.to_le_bytes()); // size of the optional header
    b[0x96..0x98].copy_from_slice(&0x0022u16.to_le_bytes()); // executable, large address aware
    b[0x98..0x9a].copy_from_slice(&0x020bu16.to_le_bytes()); // PE32+
    b[0x98 + 68..0x98 + 70].copy_from_slice(&3u16.to_le_bytes()); // subsystem: console
    b
}

const DASH: &str = "/usr/bin/dash";
const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
const LD: &str = "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";

/// A fake guest tool: logs its name and arguments, and for grub-mkconfig writes a config that
/// names the root by kernel device, as a real one does inside the appliance.
fn tool_script(name: &str) -> String {
    let mut s = format!("#!/bin/sh\necho \"{name} $*\" >> /var/log/h2k-tools.log\n");
    if name.ends_with("mkconfig") {
        s.push_str(
            "out=\"$2\"\nprintf 'menuentry \"Linux\" {\\n\\tlinux /boot/vmlinuz root=/dev/sda1 ro quiet\\n}\\n' > \"$out\"\n",
        );
    }
    s.push_str("exit 0\n");
    s
}

/// Files of the guest tree: (path, content, executable).
fn files(guest: Guest) -> Vec<(String, String, bool)> {
    let mut f: Vec<(String, String, bool)> = Vec::new();
    let mut add = |p: &str, c: &str| f.push((p.to_owned(), c.to_owned(), false));
    let (os_release, fs) = match guest {
        Guest::Debian | Guest::Luks | Guest::TwoRoots => (
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n",
            "ext4",
        ),
        Guest::Ubuntu => (
            "PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nID=ubuntu\nID_LIKE=debian\n",
            "ext4",
        ),
        Guest::Rhel => (
            "NAME=\"Rocky Linux\"\nVERSION=\"9.3 (Blue Onyx)\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.3\"\nPRETTY_NAME=\"Rocky Linux 9.3 (Blue Onyx)\"\n",
            "xfs",
        ),
        Guest::Suse => (
            "NAME=\"openSUSE Leap\"\nVERSION=\"15.5\"\nID=\"opensuse-leap\"\nID_LIKE=\"suse opensuse\"\nVERSION_ID=\"15.5\"\nPRETTY_NAME=\"openSUSE Leap 15.5\"\n",
            "ext4",
        ),
        Guest::NoOs => {
            add("/data/readme.txt", "not an operating system\n");
            return f;
        }
        Guest::Windows => {
            add("/Windows/System32/config/.keep", "");
            add(
                "/Windows/System32/drivers/etc/hosts",
                "127.0.0.1 localhost\r\n",
            );
            add("/Program Files/VMware/VMware Tools/vmtoolsd.exe", "");
            return f;
        }
    };
    add("/etc/os-release", os_release);
    add(
        "/etc/hostname",
        &format!("{guest:?}-guest\n").to_lowercase(),
    );
    add("/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    add(
        "/etc/fstab",
        &format!(
            "# /etc/fstab: static file system information.\n\
             # <file system> <mount point> <type> <options> <dump> <pass>\n\
             /dev/sda1  /  {fs}  defaults  0  1\n\
             /dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0-part2  none  swap  sw  0  0\n\
             /dev/sdb1  /data  xfs  defaults,nofail  0  2\n\
             UUID=2f9c1e4a-0000-4000-8000-00000000abcd  /srv  ext4  defaults,nofail  0  2\n\
             proc  /proc  proc  defaults  0  0\n\
             tmpfs  /tmp  tmpfs  defaults  0  0\n"
        ),
    );
    add("/var/log/.keep", "");
    match guest {
        Guest::Rhel | Guest::Suse => {
            let kernel = if guest == Guest::Rhel {
                "5.14.0-362.8.1.el9_3.x86_64"
            } else {
                "5.14.21-150500.55.39-default"
            };
            if guest == Guest::Rhel {
                add(
                    "/etc/redhat-release",
                    "Rocky Linux release 9.3 (Blue Onyx)\n",
                );
                add(
                    "/etc/selinux/config",
                    "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
                );
                add(
                    "/etc/default/grub",
                    "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"crashkernel=auto resume=/dev/sda2 rhgb quiet\"\nGRUB_ENABLE_BLSCFG=true\n",
                );
                add(
                    &format!("/boot/loader/entries/0123456789abcdef-{kernel}.conf"),
                    &format!(
                        "title Rocky Linux ({kernel}) 9.3 (Blue Onyx)\nversion {kernel}\nlinux /boot/vmlinuz-{kernel}\ninitrd /boot/initramfs-{kernel}.img\noptions root=/dev/sda1 ro crashkernel=auto resume=/dev/sda2 rhgb quiet\n"
                    ),
                );
                add("/boot/grub2/grub.cfg", "set default=0\nblscfg\n");
                add(
                    "/etc/sysconfig/network-scripts/ifcfg-ens192",
                    "TYPE=Ethernet\nBOOTPROTO=dhcp\nNAME=ens192\nDEVICE=ens192\nHWADDR=00:50:56:ab:cd:ef\nONBOOT=yes\n",
                );
                add("/var/lib/rpm/.keep", "");
                // rpm knows open-vm-tools (and no other VMware package) and logs removals.
                add(
                    "/usr/bin/rpm",
                    "#!/bin/sh\necho \"rpm $*\" >> /var/log/h2k-tools.log\n\
                     if [ \"$1\" = -q ]; then\n  shift 3\n  for p in \"$@\"; do\n    \
                     if [ \"$p\" = open-vm-tools ]; then echo open-vm-tools; \
                     else echo \"package $p is not installed\"; fi\n  done\n  exit 1\nfi\nexit 0\n",
                );
                add("/etc/vmware-tools/tools.conf", "[logging]\nlog = true\n");
                add(
                    "/usr/lib/systemd/system/vmtoolsd.service",
                    "[Unit]\nDescription=Service for virtual machines hosted on VMware\n",
                );
            } else {
                add(
                    "/etc/default/grub",
                    "GRUB_DEFAULT=saved\nGRUB_CMDLINE_LINUX_DEFAULT=\"splash=silent resume=/dev/sda2 quiet\"\n",
                );
                add(
                    "/boot/grub2/grub.cfg",
                    &format!(
                        "menuentry 'openSUSE Leap 15.5' {{\n\tlinux /boot/vmlinuz-{kernel} root=/dev/sda1 splash=silent quiet\n\tinitrd /boot/initrd-{kernel}\n}}\n"
                    ),
                );
                add(
                    "/etc/sysconfig/network/ifcfg-eth0",
                    "BOOTPROTO='dhcp'\nSTARTMODE='auto'\nLLADDR='00:50:56:11:22:33'\n",
                );
                add("/var/lib/rpm/.keep", "");
            }
            add(&format!("/lib/modules/{kernel}/modules.dep"), "");
            add(&format!("/boot/vmlinuz-{kernel}"), "kernel\n");
            add("/usr/bin/dracut", &tool_script("dracut"));
            add("/usr/sbin/grub2-mkconfig", &tool_script("grub2-mkconfig"));
        }
        _ => {
            let kernel = "6.1.0-13-amd64";
            add(
                "/etc/default/grub",
                "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"console=ttyS0 root=/dev/sda1\"\n",
            );
            add(
                "/boot/grub/grub.cfg",
                &format!(
                    "set default=0\nmenuentry 'Debian GNU/Linux' {{\n\tlinux\t/boot/vmlinuz-{kernel} root=/dev/sda1 ro quiet\n\tinitrd\t/boot/initrd.img-{kernel}\n}}\n"
                ),
            );
            add("/boot/grub/device.map", "(hd0)\t/dev/sda\n");
            add(&format!("/lib/modules/{kernel}/modules.dep"), "");
            add(&format!("/boot/vmlinuz-{kernel}"), "kernel\n");
            add(
                "/etc/initramfs-tools/modules",
                "# List of modules that you want to include in your initramfs.\nloop\n",
            );
            add(
                "/usr/sbin/update-initramfs",
                &tool_script("update-initramfs"),
            );
            add("/usr/sbin/grub-mkconfig", &tool_script("grub-mkconfig"));
            add("/usr/bin/dpkg", &tool_script("dpkg"));
            add(
                "/var/lib/dpkg/status",
                "Package: base-files\nStatus: install ok installed\nVersion: 12.4\n\nPackage: open-vm-tools\nStatus: install ok installed\nVersion: 2:12.2.0-1\n\n",
            );
            add(
                "/etc/network/interfaces",
                "auto lo\niface lo inet loopback\n\nauto ens192\niface ens192 inet dhcp\n    hwaddress ether 00:50:56:aa:bb:cc\n",
            );
            add(
                "/etc/netplan/01-netcfg.yaml",
                "network:\n  version: 2\n  ethernets:\n    lan0:\n      match:\n        macaddress: \"00:50:56:aa:bb:cc\"\n      set-name: lan0\n      dhcp4: true\n",
            );
            add(
                "/etc/udev/rules.d/70-persistent-net.rules",
                "SUBSYSTEM==\"net\", ACTION==\"add\", ATTR{address}==\"00:50:56:aa:bb:cc\", NAME=\"eth0\"\n",
            );
            add("/etc/vmware-tools/tools.conf", "[logging]\n");
            if guest == Guest::Ubuntu {
                add(
                    "/lib/systemd/system/open-vm-tools.service",
                    "[Unit]\nDescription=open-vm-tools\n",
                );
                // Cloud images set the console (and here a root=) in a drop-in that
                // grub-mkconfig reads after /etc/default/grub.
                add(
                    "/etc/default/grub.d/50-cloudimg-settings.cfg",
                    "GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0 root=/dev/sda1\"\n",
                );
            }
            // On Debian the unit file is already gone (a half-done uninstall): its
            // multi-user.target.wants link dangles.
        }
    }
    for (path, _, exec) in f.iter_mut() {
        if path.starts_with("/usr/bin/") || path.starts_with("/usr/sbin/") {
            *exec = true;
        }
    }
    f
}

/// The guestfish script that partitions, formats and fills the disk from `tree`.
fn script(guest: Guest, tree: &Path) -> String {
    let t = tree.display();
    let fs = if guest == Guest::Rhel { "xfs" } else { "ext4" };
    let mut s = String::from("run\npart-init /dev/sda mbr\n");
    match guest {
        Guest::TwoRoots => {
            s.push_str("part-add /dev/sda p 2048 204799\npart-add /dev/sda p 204800 -2048\n");
            s.push_str("mkfs ext4 /dev/sda1\nmkfs ext4 /dev/sda2\n");
            for dev in ["/dev/sda1", "/dev/sda2"] {
                s.push_str(&format!(
                    "mount {dev} /\ncopy-in {t}/etc {t}/usr {t}/boot {t}/var /\n\
                     ln-s usr/bin /bin\nln-s usr/sbin /sbin\nln-s usr/lib /lib\numount /\n"
                ));
            }
            return s;
        }
        Guest::Windows => {
            s.push_str("part-add /dev/sda p 2048 -2048\nmkfs ntfs /dev/sda1\nmount /dev/sda1 /\n");
            s.push_str(&format!(
                "copy-in {t}/Windows \"{t}/Program Files\" /\numount-all\n"
            ));
            return s;
        }
        Guest::Luks => {
            s.push_str("part-add /dev/sda p 2048 204799\npart-add /dev/sda p 204800 -2048\n");
            // Fill /boot first: after luks-format the appliance loses the mount.
            s.push_str("mkfs ext4 /dev/sda1\n");
            s.push_str(&format!(
                "mount /dev/sda1 /\ncopy-in {t}/boot /\numount /\n"
            ));
            // The LUKS header is written into sda2 from the host afterwards (see `build`).
            return s;
        }
        _ => {}
    }
    s.push_str("part-add /dev/sda p 2048 917503\npart-add /dev/sda p 917504 -2048\n");
    s.push_str(&format!(
        "mkfs {fs} /dev/sda1\nmkswap /dev/sda2\nmount /dev/sda1 /\n"
    ));
    if guest == Guest::NoOs {
        s.push_str(&format!("copy-in {t}/data /\n"));
    } else {
        s.push_str(&format!(
            "copy-in {t}/etc {t}/usr {t}/var {t}/boot /\n\
             ln-s usr/bin /bin\nln-s usr/sbin /sbin\nln-s usr/lib /lib\nln-s usr/lib64 /lib64\n\
             mkdir-p /tmp\nchmod 01777 /tmp\nmkdir-p /proc\nmkdir-p /sys\nmkdir-p /dev\nmkdir-p /run\n"
        ));
        if matches!(guest, Guest::Debian | Guest::Ubuntu) {
            s.push_str(
                "mkdir-p /etc/systemd/system/multi-user.target.wants\n\
                 ln-s /lib/systemd/system/open-vm-tools.service /etc/systemd/system/multi-user.target.wants/open-vm-tools.service\n",
            );
        }
    }
    s.push_str("umount-all\n");
    s
}

/// The recipe a cached image is keyed by.
fn recipe(guest: Guest) -> String {
    let mut r = format!("v3 {guest:?}\n{}\n", script(guest, Path::new("/TREE")));
    if guest == Guest::Windows {
        r.push_str(&format!("cmd.exe {:?}\n", pe32_plus()));
    }
    for (p, c, x) in files(guest) {
        r.push_str(&format!("{p} {x} {c}\n"));
    }
    r
}

fn cache_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/hyper2kvm-test/guests")
}

/// Builds (or takes from the cache) a phony guest and copies it to `dest` as raw.
pub fn phony_guest(guest: Guest, dest: &Path) {
    use sha2::{Digest, Sha256};
    let key: String = Sha256::digest(recipe(guest).as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache_dir().join(format!("{guest:?}-{key}").to_lowercase());
    let image = dir.join("disk.raw");
    if !image.is_file() {
        build(guest, &dir);
    }
    run_ok(
        Command::new("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(&image)
            .arg(dest),
    );
}

fn build(guest: Guest, dir: &Path) {
    let staging = tempfile::Builder::new()
        .prefix("h2k-guest-build-")
        .tempdir()
        .expect("tempdir");
    let tree = staging.path().join("tree");
    for (path, content, exec) in files(guest) {
        // The guest is usrmerged: /lib is a link to usr/lib made after the copy.
        let path = match path.strip_prefix("/lib/") {
            Some(rest) => format!("/usr/lib/{rest}"),
            None => path,
        };
        let p = tree.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
        if exec {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
    }
    if guest == Guest::Windows {
        std::fs::write(tree.join("Windows/System32/cmd.exe"), pe32_plus()).expect("cmd.exe");
    }
    if !matches!(guest, Guest::NoOs | Guest::Windows) {
        for (src, dst) in [
            (DASH, "usr/bin/dash"),
            (LIBC, "usr/lib/x86_64-linux-gnu/libc.so.6"),
            (LD, "usr/lib64/ld-linux-x86-64.so.2"),
        ] {
            let d = tree.join(dst);
            std::fs::create_dir_all(d.parent().expect("parent")).expect("mkdir");
            std::fs::copy(src, &d).expect("copy host binary");
        }
        std::os::unix::fs::symlink("dash", tree.join("usr/bin/sh")).expect("symlink");
        std::fs::create_dir_all(tree.join("usr/lib/x86_64-linux-gnu")).expect("mkdir");
        std::os::unix::fs::symlink(
            "/usr/lib64/ld-linux-x86-64.so.2",
            tree.join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        )
        .expect("symlink");
    }
    let disk = staging.path().join("disk.raw");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(&disk)
            .arg("512M"),
    );
    let script_path = staging.path().join("build.fish");
    std::fs::write(&script_path, script(guest, &tree)).expect("write script");
    let mut cmd = Command::new("guestfish");
    cmd.env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        .args(["--format=raw", "-a"])
        .arg(&disk)
        .arg("-f")
        .arg(&script_path);
    run_ok(&mut cmd);
    if guest == Guest::Luks {
        // guestfish asks for LUKS keys on a terminal; cryptsetup formats a plain file instead,
        // which is then copied over partition 2 (it starts at sector 204800).
        let header = staging.path().join("luks.img");
        run_ok(Command::new("truncate").args(["-s", "32M"]).arg(&header));
        let mut luks = Command::new("cryptsetup");
        luks.args([
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
        ])
        .arg(staging.path().join("key"))
        .arg(&header);
        std::fs::write(staging.path().join("key"), "fixture-passphrase").expect("key");
        run_ok(&mut luks);
        run_ok(
            Command::new("dd")
                .arg(format!("if={}", header.display()))
                .arg(format!("of={}", disk.display()))
                .args(["bs=512", "seek=204800", "conv=notrunc", "status=none"]),
        );
    }
    std::fs::create_dir_all(dir.parent().expect("parent")).expect("mkdir cache");
    let tmp_dir = dir.with_extension(format!("tmp{}", std::process::id()));
    std::fs::create_dir_all(&tmp_dir).expect("mkdir");
    std::fs::rename(&disk, tmp_dir.join("disk.raw")).expect("move image");
    // Another test may have finished the same fixture first; either copy is fine.
    if std::fs::rename(&tmp_dir, dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp_dir);
    }
}

/// Reads guest files back from an image with one read-only appliance launch.
/// Returns (path → content) for the files that exist, plus `blkid` of /dev/sda1 and /dev/sda2.
pub fn read_back(
    image: &Path,
    format: &str,
    paths: &[&str],
) -> std::collections::BTreeMap<String, String> {
    let mut script = String::from("run\nmount-ro /dev/sda1 /\n");
    for p in paths {
        script.push_str(&format!(
            "echo ==H2K== {p}\n-exists {p}\n-cat {p}\necho ==H2K== link:{p}\n-is-symlink {p}\n"
        ));
    }
    for dev in ["/dev/sda1", "/dev/sda2"] {
        script.push_str(&format!("echo ==H2K== blkid:{dev}\n-blkid {dev}\n"));
    }
    let out = Command::new("guestfish")
        .env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        .args(["--ro", &format!("--format={format}"), "-a"])
        .arg(image)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(script.as_bytes())?;
            c.wait_with_output()
        })
        .expect("guestfish");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut files = std::collections::BTreeMap::new();
    for chunk in text.split("==H2K== ").skip(1) {
        let (name, body) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let name = name.trim().to_owned();
        if name.starts_with("blkid:") {
            files.insert(name, body.to_owned());
            continue;
        }
        // `link:<path>` is there when the path is a symbolic link, even a dangling one.
        if name.starts_with("link:") {
            if body.trim() == "true" {
                files.insert(name, String::new());
            }
            continue;
        }
        // `exists` prints true/false before the content.
        if let Some(content) = body.strip_prefix("true\n") {
            files.insert(name, content.to_owned());
        }
    }
    files
}
