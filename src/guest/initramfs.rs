//! The initramfs: make sure it carries the virtio drivers, and rebuild it with the guest's tool.
//!
//! A VMware guest's initramfs holds the drivers for the hardware it was built on (vmw_pvscsi,
//! mptsas, ata_piix); on KVM the root disk sits behind virtio_blk or virtio_scsi and the kernel
//! cannot find it. Distros build their initramfs with one of three tools, each configured
//! differently: dracut (RHEL, Fedora, SUSE) through a drop-in file that we own, initramfs-tools
//! (Debian, Ubuntu) through a list of modules, mkinitcpio (Arch) through a bash array. This
//! module picks the tool, computes the new config text and the argv that rebuilds one kernel's
//! image; running it inside the guest is the session's job.

use std::cmp::Ordering;

use serde::Serialize;

use crate::guest::fstab::split_lines;
use crate::guest::{FileChange, Rewrite};

/// What a KVM guest needs to find its disks, its NIC and its console. Where a kernel has one of
/// them built in, every tool below skips it quietly.
pub const VIRTIO_DRIVERS: [&str; 5] = [
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "virtio_pci",
    "virtio_console",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    Dracut,
    InitramfsTools,
    Mkinitcpio,
}

/// Every path [`detect`] may ask about.
pub const PROBE_PATHS: &[&str] = &[
    "/usr/sbin/update-initramfs",
    "/usr/share/initramfs-tools",
    "/etc/initramfs-tools",
    "/usr/bin/mkinitcpio",
    "/etc/mkinitcpio.conf",
    "/usr/bin/dracut",
    "/usr/sbin/dracut",
    "/sbin/dracut",
];

/// The guest's initramfs tool, from which of [`PROBE_PATHS`] exist.
///
/// Installed programs count before configuration, because configs outlive their package
/// (Debian keeps /etc/initramfs-tools after dracut replaced initramfs-tools). Among programs:
/// - initramfs-tools first: it is Debian's and Ubuntu's default, and dracut cannot be installed
///   beside it there; `/usr/share/initramfs-tools` (package data, removed with the package)
///   tells a real install from an `update-initramfs` left behind or provided by dracut.
/// - mkinitcpio next: Arch can have dracut installed beside it, but the kernel package's hooks
///   call mkinitcpio unless it is removed.
/// - dracut last: where it is the only tool it is the distro's (RHEL, Fedora, SUSE, and Debian
///   or Arch systems that switched to it).
///
/// Configuration alone is the last resort: the rebuild will then fail with "command not
/// found", which says more than "no initramfs tool".
pub fn detect(exists: &dyn Fn(&str) -> bool) -> Option<Tool> {
    let dracut = ["/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut"]
        .iter()
        .any(|p| exists(p));
    let update_initramfs = exists("/usr/sbin/update-initramfs");
    if update_initramfs && (exists("/usr/share/initramfs-tools") || !dracut) {
        return Some(Tool::InitramfsTools);
    }
    if exists("/usr/bin/mkinitcpio") {
        return Some(Tool::Mkinitcpio);
    }
    if dracut {
        return Some(Tool::Dracut);
    }
    if exists("/etc/initramfs-tools") {
        return Some(Tool::InitramfsTools);
    }
    if exists("/etc/mkinitcpio.conf") {
        return Some(Tool::Mkinitcpio);
    }
    None
}

/// The guest file that [`add_drivers`] rewrites for a tool.
pub fn config_path(tool: Tool) -> &'static str {
    match tool {
        Tool::Dracut => "/etc/dracut.conf.d/hyper2kvm-virtio.conf",
        Tool::InitramfsTools => "/etc/initramfs-tools/modules",
        Tool::Mkinitcpio => "/etc/mkinitcpio.conf",
    }
}

/// The dracut drop-in we own. dracut wants spaces inside the quotes of a `+=` value, so that
/// several drop-ins concatenate into one list.
const DRACUT_DROPIN: &str = "\
# Written by hyper2kvm: load the virtio drivers so that this guest boots on KVM.
add_drivers+=\" virtio_blk virtio_scsi virtio_net virtio_pci virtio_console \"
";

/// The new content of [`config_path`] with every [`VIRTIO_DRIVERS`] entry present; `current`
/// is the file's content, `None` when it does not exist. Unchanged (and no changes) when all
/// drivers are already there.
pub fn add_drivers(tool: Tool, current: Option<&str>) -> Rewrite {
    match tool {
        Tool::Dracut => dracut_dropin(current),
        Tool::InitramfsTools => initramfs_tools_modules(current),
        Tool::Mkinitcpio => mkinitcpio_modules(current),
    }
}

/// Module names as the tools compare them: `virtio-blk` and `virtio_blk` are the same module.
fn normalise(module: &str) -> String {
    module.replace('-', "_")
}

fn missing(present: &[String]) -> Vec<&'static str> {
    VIRTIO_DRIVERS
        .iter()
        .copied()
        .filter(|d| !present.iter().any(|p| p == d))
        .collect()
}

fn unchanged(current: Option<&str>) -> Rewrite {
    Rewrite {
        text: current.unwrap_or("").to_string(),
        ..Rewrite::default()
    }
}

fn dracut_dropin(current: Option<&str>) -> Rewrite {
    let present: Vec<String> = current
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter_map(|line| {
            line.strip_prefix("add_drivers+=")
                .or_else(|| line.strip_prefix("add_drivers="))
        })
        .flat_map(|value| value.split(|c: char| c.is_whitespace() || c == '"' || c == '\''))
        .filter(|word| !word.is_empty())
        .map(normalise)
        .collect();
    if missing(&present).is_empty() {
        return unchanged(current);
    }
    let after = DRACUT_DROPIN
        .lines()
        .find(|l| l.starts_with("add_drivers"))
        .unwrap_or(DRACUT_DROPIN)
        .to_string();
    Rewrite {
        text: DRACUT_DROPIN.to_string(),
        changes: vec![FileChange {
            path: config_path(Tool::Dracut).to_string(),
            line: None,
            before: current.unwrap_or("").trim_end().to_string(),
            after,
            reason: "virtio drivers added to the dracut configuration".to_string(),
        }],
        notes: Vec::new(),
    }
}

fn initramfs_tools_modules(current: Option<&str>) -> Rewrite {
    let text = current.unwrap_or("");
    let present: Vec<String> = text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| !word.starts_with('#'))
        .map(normalise)
        .collect();
    let missing = missing(&present);
    if missing.is_empty() {
        return unchanged(current);
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let mut changes = Vec::new();
    for module in missing {
        out.push_str(module);
        out.push('\n');
        changes.push(FileChange {
            path: config_path(Tool::InitramfsTools).to_string(),
            line: None,
            before: String::new(),
            after: module.to_string(),
            reason: "virtio driver added to the initramfs".to_string(),
        });
    }
    Rewrite {
        text: out,
        changes,
        notes: Vec::new(),
    }
}

/// mkinitcpio.conf is sourced by bash, so the last `MODULES=` assignment is the one that counts;
/// that is the one edited. Forms: `MODULES=(a b)`, a multi-line array, the old `MODULES="a b"`,
/// or a bare `MODULES=`.
fn mkinitcpio_modules(current: Option<&str>) -> Rewrite {
    let text = current.unwrap_or("");
    let lines: Vec<(&str, &str)> = split_lines(text).collect();
    let assignment = lines
        .iter()
        .rposition(|(content, _)| content.trim_start().starts_with("MODULES="));
    let Some(at) = assignment else {
        // No MODULES at all: add the whole assignment at the end.
        let line = format!("MODULES=({})", VIRTIO_DRIVERS.join(" "));
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&line);
        out.push('\n');
        return mkinitcpio_rewrite(out, None, String::new(), line, &VIRTIO_DRIVERS);
    };
    let content = lines[at].0;
    let (head, value) = content.split_at(content.find("MODULES=").unwrap_or(0) + "MODULES=".len());
    let (present, new_content) = if let Some(inner) = value.strip_prefix('(') {
        match inner.find(')') {
            Some(close) => {
                let present = array_words(&inner[..close]);
                let existing = inner[..close].trim();
                let names = missing(&present);
                let sep = if existing.is_empty() { "" } else { " " };
                let line = format!(
                    "{head}({existing}{sep}{}){}",
                    names.join(" "),
                    &inner[close + 1..]
                );
                (present, line)
            }
            None => {
                // A multi-line array: the words run until the line holding `)`.
                let mut words = inner.to_string();
                for (content, _) in &lines[at + 1..] {
                    words.push(' ');
                    match content.find(')') {
                        Some(close) => {
                            words.push_str(&content[..close]);
                            break;
                        }
                        None => words.push_str(content),
                    }
                }
                let present = array_words(&words);
                let names = missing(&present);
                let line = format!("{head}({} {}", names.join(" "), inner.trim_start());
                (present, line.trim_end().to_string())
            }
        }
    } else if let Some(inner) = value.strip_prefix('"') {
        let close = inner.find('"').unwrap_or(inner.len());
        let present = array_words(&inner[..close]);
        let existing = inner[..close].trim();
        let names = missing(&present);
        let sep = if existing.is_empty() { "" } else { " " };
        let rest = inner.get(close + 1..).unwrap_or("");
        let line = format!("{head}\"{existing}{sep}{}\"{rest}", names.join(" "));
        (present, line)
    } else {
        let (word, rest) = value.split_at(value.find(char::is_whitespace).unwrap_or(value.len()));
        let present = array_words(word);
        let names = missing(&present);
        let words: Vec<&str> = [word]
            .into_iter()
            .filter(|w| !w.is_empty())
            .chain(names)
            .collect();
        (present, format!("{head}({}){rest}", words.join(" ")))
    };
    let names = missing(&present);
    if names.is_empty() {
        return unchanged(current);
    }
    let mut out = String::with_capacity(text.len() + 80);
    for (index, (content, eol)) in lines.iter().enumerate() {
        out.push_str(if index == at { &new_content } else { content });
        out.push_str(eol);
    }
    mkinitcpio_rewrite(out, Some(at + 1), content.to_string(), new_content, &names)
}

/// Words of a bash array or string, unquoted, with mkinitcpio's `?` (optional) suffix removed.
fn array_words(words: &str) -> Vec<String> {
    words
        .split_whitespace()
        .take_while(|w| !w.starts_with('#'))
        .map(|w| {
            normalise(
                w.trim_matches(|c| c == '"' || c == '\'')
                    .trim_end_matches('?'),
            )
        })
        .collect()
}

fn mkinitcpio_rewrite(
    text: String,
    line: Option<usize>,
    before: String,
    after: String,
    added: &[&str],
) -> Rewrite {
    Rewrite {
        text,
        changes: vec![FileChange {
            path: config_path(Tool::Mkinitcpio).to_string(),
            line,
            before,
            after,
            reason: format!("virtio drivers added: {}", added.join(", ")),
        }],
        notes: Vec::new(),
    }
}

/// Where distros keep the initramfs of `kernel`: RHEL/Fedora `initramfs-<k>.img`, SUSE
/// `initrd-<k>`, Debian and Ubuntu `initrd.img-<k>` (also when they build it with dracut). The
/// caller passes the first that exists to [`rebuild_command`], so the image rebuilt is the one
/// the bootloader loads. Arch names its images after the kernel package and BLS layouts put
/// them under `/boot/<machine-id>/`; neither is listed, and both are handled by passing `None`.
pub fn image_candidates(kernel: &str) -> Vec<String> {
    vec![
        format!("/boot/initramfs-{kernel}.img"),
        format!("/boot/initrd-{kernel}"),
        format!("/boot/initrd.img-{kernel}"),
    ]
}

/// The argv, run inside the guest, that rebuilds the initramfs of one kernel version.
///
/// `image` is the existing initramfs of that kernel, when one of [`image_candidates`] exists.
/// No default output path is right everywhere: dracut writes `/boot/initramfs-<k>.img`
/// upstream, `/boot/initrd-<k>` on SUSE, and Debian's kernel hook passes `/boot/initrd.img-<k>`
/// explicitly; Arch's presets name images after the package (`initramfs-linux.img`). So:
/// - dracut rebuilds `image` when given, else chooses its own default (which also knows the
///   BLS `/boot/<machine-id>/<k>/initrd` layout);
/// - update-initramfs always knows its image and ignores `image`;
/// - mkinitcpio rebuilds `image` when given, else runs every preset (`-P`), which writes
///   exactly the images the bootloader entries name. That argv is the same for every kernel:
///   run it once.
pub fn rebuild_command(tool: Tool, kernel: &str, image: Option<&str>) -> Vec<String> {
    let argv: Vec<&str> = match (tool, image) {
        (Tool::Dracut, Some(image)) => vec!["dracut", "-f", image, kernel],
        (Tool::Dracut, None) => vec!["dracut", "-f", "--kver", kernel],
        (Tool::InitramfsTools, _) => vec!["update-initramfs", "-u", "-k", kernel],
        (Tool::Mkinitcpio, Some(image)) => vec!["mkinitcpio", "-k", kernel, "-g", image],
        (Tool::Mkinitcpio, None) => vec!["mkinitcpio", "-P"],
    };
    argv.into_iter().map(str::to_string).collect()
}

/// What the kernel needs in its initramfs to find its root disk on KVM: the disk drivers for
/// either virtio bus, and the PCI transport they sit on. (`virtio_net` and `virtio_console`
/// load from the root filesystem, as every other NIC and console driver does.)
pub const BOOT_DRIVERS: [&str; 3] = ["virtio_blk", "virtio_scsi", "virtio_pci"];

/// The guest's own lister for its tool's images. Each knows the guest's compressors and an
/// early microcode archive in front of the main one.
pub fn list_command(tool: Tool, image: &str) -> Vec<String> {
    let lister = match tool {
        Tool::Dracut => "lsinitrd",
        Tool::InitramfsTools => "lsinitramfs",
        Tool::Mkinitcpio => "lsinitcpio",
    };
    vec![lister.to_string(), image.to_string()]
}

/// Why an existing image can serve `kernel` on KVM as it is, or why it must be rebuilt.
///
/// `listing` is the output of [`list_command`] (bare paths or `ls -l` lines; every word is
/// looked at), `builtin` the kernel's `modules.builtin`. The image is kept only when:
/// - every [`BOOT_DRIVERS`] entry is a module of this kernel version in the image, or built
///   into the kernel;
/// - it runs udev, which loads those drivers for the devices it finds. A rebuild would also
///   list them in the tool's configuration, which loads them without udev;
/// - it carries no kernel command line of its own (dracut's `etc/cmdline.d`, written by
///   `--hostonly-cmdline`), which may name the disks by their VMware names.
pub fn image_verdict(kernel: &str, listing: &str, builtin: &str) -> Result<String, String> {
    let words: Vec<&str> = listing.split_whitespace().collect();
    let in_kernel_dir = format!("/modules/{kernel}/");
    let in_image: Vec<String> = words
        .iter()
        .filter(|w| w.contains(&in_kernel_dir))
        .filter_map(|w| module_name(w))
        .collect();
    let in_kernel: Vec<String> = builtin.split_whitespace().filter_map(module_name).collect();
    let mut missing = Vec::new();
    let mut built_in = Vec::new();
    for driver in BOOT_DRIVERS {
        if in_image.iter().any(|m| m == driver) {
            continue;
        }
        if in_kernel.iter().any(|m| m == driver) {
            built_in.push(driver);
        } else {
            missing.push(driver);
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "the image lacks {} for kernel {kernel}",
            missing.join(", ")
        ));
    }
    let udev = words
        .iter()
        .any(|w| matches!(w.rsplit('/').next(), Some("systemd-udevd" | "udevd")));
    if !udev {
        return Err("the image has no udev to load the virtio drivers".to_string());
    }
    if words
        .iter()
        .any(|w| w.trim_start_matches("./").starts_with("etc/cmdline.d/"))
    {
        return Err(
            "the image carries its own kernel command line (etc/cmdline.d), which may name the \
             VMware disks"
                .to_string(),
        );
    }
    let built_in = if built_in.is_empty() {
        String::new()
    } else {
        format!(" ({} built into the kernel)", built_in.join(", "))
    };
    Ok(format!(
        "the image already carries {}{built_in} and udev",
        BOOT_DRIVERS.join(", ")
    ))
}

/// `virtio_blk` for `.../virtio_blk.ko`, `.ko.xz`, `.ko.gz` or `.ko.zst`; `None` for a word
/// that is not a module file.
fn module_name(word: &str) -> Option<String> {
    let file = word.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.gz", ".ko.zst"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    Some(normalise(stem))
}

/// Whether `tool` copies the guest file `path` into the images it builds (configuration,
/// hooks, modules, and what the early boot reads: crypttab, modprobe and udev rules, link
/// files, RAID and LVM configuration, and for dracut and mkinitcpio also fstab and network
/// profiles). A repair that changed such a file makes every existing image stale.
pub fn embeds(tool: Tool, path: &str) -> bool {
    const COMMON: &[&str] = &[
        "/etc/crypttab",
        "/etc/modprobe.d/",
        "/etc/modules-load.d/",
        "/etc/udev/",
        "/etc/systemd/network/",
        "/etc/mdadm",
        "/etc/lvm/",
        "/etc/multipath",
        "/lib/modules/",
        "/usr/lib/modules/",
        "/lib/firmware/",
        "/usr/lib/firmware/",
    ];
    let own: &[&str] = match tool {
        Tool::InitramfsTools => &["/etc/initramfs-tools/", "/usr/share/initramfs-tools/"],
        Tool::Dracut => &[
            "/etc/dracut.conf",
            "/usr/lib/dracut/",
            "/etc/fstab",
            "/etc/cmdline.d/",
            "/etc/sysconfig/network-scripts/",
            "/etc/sysconfig/network/",
            "/etc/NetworkManager/",
        ],
        Tool::Mkinitcpio => &[
            "/etc/mkinitcpio.conf",
            "/etc/mkinitcpio.d/",
            "/etc/initcpio/",
            "/usr/lib/initcpio/",
            "/etc/fstab",
        ],
    };
    COMMON
        .iter()
        .chain(own)
        .any(|prefix| path.starts_with(prefix))
}

/// Kernel versions among the entries of `/lib/modules` (bare names or full paths), oldest
/// first. Entries that are not versions (`extramodules-6.6-arch1`, `weak-updates`) are dropped.
pub fn kernels(module_dirs: &[String]) -> Vec<String> {
    let mut versions: Vec<String> = module_dirs
        .iter()
        .map(|entry| entry.trim_end_matches('/'))
        .map(|entry| entry.rsplit('/').next().unwrap_or(entry))
        .filter(|name| looks_like_version(name))
        .map(str::to_string)
        .collect();
    versions.sort_by(|a, b| compare_versions(a, b));
    versions.dedup();
    versions
}

/// `<digits>.<digits>` at the start, as every kernel release string has.
fn looks_like_version(name: &str) -> bool {
    let major = name.chars().take_while(char::is_ascii_digit).count();
    major > 0
        && name[major..].starts_with('.')
        && name[major + 1..].starts_with(|c: char| c.is_ascii_digit())
}

/// Orders version strings by their runs of digits as numbers and the rest as text, so that
/// `5.14.0-70` < `5.14.0-362` and `6.1.0-9` < `6.1.0-13`.
fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a_chunks, mut b_chunks) = (chunks(a), chunks(b));
    loop {
        match (a_chunks.next(), b_chunks.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let x_num = x.starts_with(|c: char| c.is_ascii_digit());
                let y_num = y.starts_with(|c: char| c.is_ascii_digit());
                let order = match (x_num, y_num) {
                    (true, true) => {
                        let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                        x.len().cmp(&y.len()).then_with(|| x.cmp(y))
                    }
                    // A number sorts after text at the same place: 6.1.0 < 6.1.0.1, rc < 1.
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    (false, false) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// Splits a string into maximal runs of digits and of non-digits.
fn chunks(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let digit = first.is_ascii_digit();
        let end = rest
            .find(|c: char| c.is_ascii_digit() != digit)
            .unwrap_or(rest.len());
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exists_in<'a>(paths: &'a [&'a str]) -> impl Fn(&str) -> bool + 'a {
        move |p| paths.contains(&p)
    }

    #[test]
    fn detection_order() {
        let cases: &[(&[&str], Option<Tool>)] = &[
            (
                &[
                    "/usr/sbin/update-initramfs",
                    "/usr/share/initramfs-tools",
                    "/etc/initramfs-tools",
                ],
                Some(Tool::InitramfsTools),
            ),
            (&["/usr/bin/dracut", "/sbin/dracut"], Some(Tool::Dracut)),
            (&["/usr/sbin/dracut"], Some(Tool::Dracut)),
            (
                &["/usr/bin/mkinitcpio", "/etc/mkinitcpio.conf"],
                Some(Tool::Mkinitcpio),
            ),
            // Arch with dracut installed beside mkinitcpio.
            (
                &["/usr/bin/mkinitcpio", "/usr/bin/dracut"],
                Some(Tool::Mkinitcpio),
            ),
            // Debian that switched to dracut: old conffiles and a compatibility update-initramfs.
            (
                &[
                    "/usr/sbin/update-initramfs",
                    "/etc/initramfs-tools",
                    "/usr/bin/dracut",
                ],
                Some(Tool::Dracut),
            ),
            (&["/etc/initramfs-tools"], Some(Tool::InitramfsTools)),
            (&["/etc/mkinitcpio.conf"], Some(Tool::Mkinitcpio)),
            (&[], None),
        ];
        for (paths, expected) in cases {
            assert_eq!(detect(&exists_in(paths)), *expected, "{paths:?}");
            for p in *paths {
                assert!(PROBE_PATHS.contains(p), "{p} missing from PROBE_PATHS");
            }
        }
    }

    #[test]
    fn serialises_with_tool_names() {
        let names: Vec<String> = [Tool::Dracut, Tool::InitramfsTools, Tool::Mkinitcpio]
            .iter()
            .map(|t| serde_json::to_string(t).unwrap())
            .collect();
        assert_eq!(
            names,
            ["\"dracut\"", "\"initramfs-tools\"", "\"mkinitcpio\""]
        );
    }

    #[test]
    fn dracut_dropin_is_written_once() {
        let r = add_drivers(Tool::Dracut, None);
        assert_eq!(r.text, DRACUT_DROPIN);
        assert_eq!(r.changes.len(), 1);
        assert_eq!(
            r.changes[0].path,
            "/etc/dracut.conf.d/hyper2kvm-virtio.conf"
        );
        assert_eq!(
            r.changes[0].after,
            "add_drivers+=\" virtio_blk virtio_scsi virtio_net virtio_pci virtio_console \""
        );
        let again = add_drivers(Tool::Dracut, Some(&r.text));
        assert!(!again.changed());
        assert_eq!(again.text, r.text);

        let partial = "add_drivers+=\" virtio_blk \"\n";
        let r = add_drivers(Tool::Dracut, Some(partial));
        assert_eq!(r.text, DRACUT_DROPIN);
        assert_eq!(r.changes[0].before, "add_drivers+=\" virtio_blk \"");
    }

    const DEBIAN_MODULES: &str = "\
# List of modules that you want to include in your initramfs.
# They will be loaded at boot time in the order below.
#
# Syntax:  module_name [args ...]
#
# You must run update-initramfs(8) to effect this change.
#
# Examples:
#
# raid1
# sd_mod
virtio-blk
vmw_pvscsi";

    #[test]
    fn initramfs_tools_appends_missing_modules() {
        let r = add_drivers(Tool::InitramfsTools, Some(DEBIAN_MODULES));
        assert_eq!(
            r.text,
            format!("{DEBIAN_MODULES}\nvirtio_scsi\nvirtio_net\nvirtio_pci\nvirtio_console\n")
        );
        assert_eq!(r.changes.len(), 4);
        assert_eq!(r.changes[0].after, "virtio_scsi");
        assert_eq!(r.changes[0].path, "/etc/initramfs-tools/modules");
        assert!(!add_drivers(Tool::InitramfsTools, Some(&r.text)).changed());

        let r = add_drivers(Tool::InitramfsTools, None);
        assert_eq!(
            r.text,
            "virtio_blk\nvirtio_scsi\nvirtio_net\nvirtio_pci\nvirtio_console\n"
        );
    }

    #[test]
    fn mkinitcpio_arrays() {
        let conf = "\
# vim:set ft=sh
# MODULES
# The following modules are loaded before any boot hooks are
# run.
#MODULES=(piix ide_disk reiserfs)
MODULES=()

BINARIES=()
HOOKS=(base udev autodetect microcode modconf kms keyboard keymap consolefont block filesystems fsck)
";
        let r = add_drivers(Tool::Mkinitcpio, Some(conf));
        assert_eq!(
            r.text,
            conf.replace(
                "\nMODULES=()\n",
                "\nMODULES=(virtio_blk virtio_scsi virtio_net virtio_pci virtio_console)\n"
            )
        );
        assert_eq!(r.changes.len(), 1);
        assert_eq!(r.changes[0].line, Some(6));
        assert_eq!(r.changes[0].before, "MODULES=()");
        assert!(!add_drivers(Tool::Mkinitcpio, Some(&r.text)).changed());

        let r = add_drivers(
            Tool::Mkinitcpio,
            Some("MODULES=(ext4 virtio_blk? \"virtio-net\") # mine\n"),
        );
        assert_eq!(
            r.text,
            "MODULES=(ext4 virtio_blk? \"virtio-net\" virtio_scsi virtio_pci virtio_console) # mine\n"
        );
        assert_eq!(
            r.changes[0].reason,
            "virtio drivers added: virtio_scsi, virtio_pci, virtio_console"
        );

        let r = add_drivers(Tool::Mkinitcpio, Some("MODULES=\"ext4\"\n"));
        assert_eq!(
            r.text,
            "MODULES=\"ext4 virtio_blk virtio_scsi virtio_net virtio_pci virtio_console\"\n"
        );
        let r = add_drivers(Tool::Mkinitcpio, Some("MODULES=\"\"\n"));
        assert_eq!(
            r.text,
            "MODULES=\"virtio_blk virtio_scsi virtio_net virtio_pci virtio_console\"\n"
        );
        let r = add_drivers(Tool::Mkinitcpio, Some("MODULES=\nHOOKS=(base)"));
        assert_eq!(
            r.text,
            "MODULES=(virtio_blk virtio_scsi virtio_net virtio_pci virtio_console)\nHOOKS=(base)"
        );
    }

    #[test]
    fn mkinitcpio_multiline_and_missing() {
        let conf = "MODULES=(\n  ext4\n  virtio_blk\n)\n";
        let r = add_drivers(Tool::Mkinitcpio, Some(conf));
        assert_eq!(
            r.text,
            "MODULES=(virtio_scsi virtio_net virtio_pci virtio_console\n  ext4\n  virtio_blk\n)\n"
        );
        assert!(!add_drivers(Tool::Mkinitcpio, Some(&r.text)).changed());

        let r = add_drivers(Tool::Mkinitcpio, Some("HOOKS=(base udev)"));
        assert_eq!(
            r.text,
            "HOOKS=(base udev)\nMODULES=(virtio_blk virtio_scsi virtio_net virtio_pci virtio_console)\n"
        );
        assert_eq!(r.changes[0].line, None);
    }

    #[test]
    fn rebuild_commands() {
        let k = "5.14.0-362.8.1.el9_3.x86_64";
        assert_eq!(
            rebuild_command(
                Tool::Dracut,
                k,
                Some("/boot/initramfs-5.14.0-362.8.1.el9_3.x86_64.img")
            ),
            [
                "dracut",
                "-f",
                "/boot/initramfs-5.14.0-362.8.1.el9_3.x86_64.img",
                k
            ]
        );
        assert_eq!(
            rebuild_command(
                Tool::Dracut,
                "6.4.0-150600.23.7-default",
                Some("/boot/initrd-6.4.0-150600.23.7-default")
            ),
            [
                "dracut",
                "-f",
                "/boot/initrd-6.4.0-150600.23.7-default",
                "6.4.0-150600.23.7-default"
            ]
        );
        assert_eq!(
            rebuild_command(Tool::Dracut, k, None),
            ["dracut", "-f", "--kver", k]
        );
        assert_eq!(
            rebuild_command(Tool::InitramfsTools, "6.1.0-13-amd64", Some("/boot/x")),
            ["update-initramfs", "-u", "-k", "6.1.0-13-amd64"]
        );
        assert_eq!(
            rebuild_command(
                Tool::Mkinitcpio,
                "6.6.1-arch1-1",
                Some("/boot/initramfs-linux.img")
            ),
            [
                "mkinitcpio",
                "-k",
                "6.6.1-arch1-1",
                "-g",
                "/boot/initramfs-linux.img"
            ]
        );
        assert_eq!(
            rebuild_command(Tool::Mkinitcpio, "6.6.1-arch1-1", None),
            ["mkinitcpio", "-P"]
        );
        assert_eq!(
            image_candidates("6.4.0-150600.23.7-default"),
            [
                "/boot/initramfs-6.4.0-150600.23.7-default.img",
                "/boot/initrd-6.4.0-150600.23.7-default",
                "/boot/initrd.img-6.4.0-150600.23.7-default",
            ]
        );
    }

    #[test]
    fn kernel_versions_sorted() {
        let entries: Vec<String> = [
            "5.14.0-362.8.1.el9_3.x86_64",
            "/lib/modules/5.14.0-70.13.1.el9_0.x86_64/",
            "extramodules-6.6-arch1",
            "weak-updates",
            "6.1.0-13-amd64",
            "6.1.0-9-amd64",
            "5.14.0-362.8.1.el9_3.x86_64",
            "6.1.0-13-amd64+debug",
            "6.1",
            "10.0.0",
            "4.12.14-122.37-default",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(
            kernels(&entries),
            [
                "4.12.14-122.37-default",
                "5.14.0-70.13.1.el9_0.x86_64",
                "5.14.0-362.8.1.el9_3.x86_64",
                "6.1",
                "6.1.0-9-amd64",
                "6.1.0-13-amd64",
                "6.1.0-13-amd64+debug",
                "10.0.0",
            ]
        );
    }

    /// Lines as Debian's lsinitramfs prints them (bare paths, early microcode first).
    const LSINITRAMFS: &str = "\
kernel/x86/microcode/GenuineIntel.bin
.
usr/lib/modules/6.1.0-50-amd64/kernel/drivers/block/virtio_blk.ko
usr/lib/modules/6.1.0-50-amd64/kernel/drivers/scsi/virtio_scsi.ko
usr/lib/modules/6.1.0-50-amd64/kernel/drivers/virtio/virtio_pci.ko
usr/lib/modules/6.1.0-50-amd64/kernel/drivers/virtio/virtio_ring.ko
usr/lib/systemd/systemd-udevd
scripts/init-top/udev
";

    /// Lines as dracut's lsinitrd prints them (`ls -l` style, compressed modules, a symlink).
    const LSINITRD: &str = "\
Image: /boot/initramfs-5.14.0-362.el9.x86_64.img: 31M
========================================================================
-rw-r--r--   1 root     root         9000 Oct  3 12:00 usr/lib/modules/5.14.0-362.el9.x86_64/kernel/drivers/block/virtio_blk.ko.xz
-rw-r--r--   1 root     root         9000 Oct  3 12:00 usr/lib/modules/5.14.0-362.el9.x86_64/kernel/drivers/scsi/virtio_scsi.ko.xz
-rwxr-xr-x   1 root     root       200000 Oct  3 12:00 usr/lib/systemd/systemd-udevd
lrwxrwxrwx   1 root     root           17 Oct  3 12:00 usr/sbin/udevd -> ../lib/systemd/systemd-udevd
";

    #[test]
    fn an_image_with_the_drivers_and_udev_is_kept() {
        let why = image_verdict("6.1.0-50-amd64", LSINITRAMFS, "").expect("kept");
        assert_eq!(
            why,
            "the image already carries virtio_blk, virtio_scsi, virtio_pci and udev"
        );
        // virtio_pci built in, the rest as xz modules in ls -l lines.
        let why = image_verdict(
            "5.14.0-362.el9.x86_64",
            LSINITRD,
            "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_pci.ko\n",
        )
        .expect("kept");
        assert!(
            why.ends_with("(virtio_pci built into the kernel) and udev"),
            "{why}"
        );
    }

    #[test]
    fn an_image_is_rebuilt_for_what_it_lacks() {
        // Modules of another kernel version do not count.
        assert_eq!(
            image_verdict("6.1.0-51-amd64", LSINITRAMFS, ""),
            Err(
                "the image lacks virtio_blk, virtio_scsi, virtio_pci for kernel 6.1.0-51-amd64"
                    .to_owned()
            )
        );
        // A VMware hostonly image: pvscsi, no virtio.
        let hostonly = "usr/lib/modules/6.1.0-50-amd64/kernel/drivers/scsi/vmw_pvscsi.ko\n\
                        usr/lib/systemd/systemd-udevd\n";
        assert!(
            image_verdict("6.1.0-50-amd64", hostonly, "")
                .unwrap_err()
                .starts_with("the image lacks virtio_blk")
        );
        // A name that only contains a driver's name is not that driver.
        let lookalike = LSINITRAMFS.replace("virtio_pci.ko", "virtio_pci_modern_dev.ko");
        assert_eq!(
            image_verdict("6.1.0-50-amd64", &lookalike, ""),
            Err("the image lacks virtio_pci for kernel 6.1.0-50-amd64".to_owned())
        );
        let no_udev = LSINITRAMFS.replace("systemd-udevd", "systemd-journald");
        assert_eq!(
            image_verdict("6.1.0-50-amd64", &no_udev, ""),
            Err("the image has no udev to load the virtio drivers".to_owned())
        );
        let cmdline = format!("{LSINITRAMFS}etc/cmdline.d/01-default.conf\n");
        assert!(
            image_verdict("6.1.0-50-amd64", &cmdline, "")
                .unwrap_err()
                .contains("etc/cmdline.d")
        );
    }

    #[test]
    fn module_names_from_paths() {
        assert_eq!(
            module_name("a/b/virtio-blk.ko.zst").as_deref(),
            Some("virtio_blk")
        );
        assert_eq!(
            module_name("virtio_net.ko.gz").as_deref(),
            Some("virtio_net")
        );
        assert_eq!(module_name("usr/lib/modules/x/modules.dep"), None);
        assert_eq!(module_name("virtio_blk.kox"), None);
    }

    #[test]
    fn what_each_tool_copies_into_its_images() {
        for tool in [Tool::InitramfsTools, Tool::Dracut, Tool::Mkinitcpio] {
            assert!(embeds(tool, "/etc/crypttab"), "{tool:?}");
            assert!(embeds(tool, "/etc/udev/rules.d/70-persistent-net.rules"));
            assert!(embeds(tool, config_path(tool)), "{tool:?}");
            assert!(!embeds(tool, "/etc/default/grub"));
            assert!(!embeds(tool, "/boot/grub/grub.cfg"));
            assert!(!embeds(tool, "/etc/netplan/50-cloud-init.yaml"));
        }
        // initramfs-tools writes an empty etc/fstab of its own; dracut and mkinitcpio may copy it.
        assert!(!embeds(Tool::InitramfsTools, "/etc/fstab"));
        assert!(embeds(Tool::Dracut, "/etc/fstab"));
        assert!(embeds(Tool::Mkinitcpio, "/etc/fstab"));
        assert!(embeds(
            Tool::Dracut,
            "/etc/sysconfig/network-scripts/ifcfg-eth0"
        ));
        assert!(!embeds(Tool::InitramfsTools, "/etc/network/interfaces"));
    }

    #[test]
    fn each_tool_lists_with_its_own_lister() {
        assert_eq!(
            list_command(Tool::InitramfsTools, "/boot/initrd.img-6.1.0-50-amd64"),
            ["lsinitramfs", "/boot/initrd.img-6.1.0-50-amd64"]
        );
        assert_eq!(list_command(Tool::Dracut, "/boot/i.img")[0], "lsinitrd");
        assert_eq!(
            list_command(Tool::Mkinitcpio, "/boot/i.img")[0],
            "lsinitcpio"
        );
    }
}
