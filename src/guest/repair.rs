//! The fix stage inside the guest: read each file, let the pure transforms decide, write back
//! what changed, and run the guest's own tools (initramfs, bootloader, package manager), all in
//! one appliance launch.
//!
//! In a dry run the guest is mounted read-only and every change is computed and returned, but
//! nothing is written and no guest tool that writes runs (the initramfs listers only read).

use serde::Serialize;

use super::inspect::{self, GuestInfo, InspectError};
use super::{FileChange, Rewrite, bootloader, fstab, initramfs, network, vmware_tools};
use crate::manifest::{FixStage, FstabMode, InitramfsRebuild};
use crate::tools::guestfish::{GuestError, Session};

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("{step}: {message}")]
    Step { step: &'static str, message: String },
}

/// A program run inside the guest.
#[derive(Clone, Debug, Serialize)]
pub struct GuestCommand {
    pub step: &'static str,
    pub argv: Vec<String>,
    pub success: bool,
    pub output_tail: String,
}

/// One kernel's initramfs: rebuilt, or kept because it already serves KVM, and why.
#[derive(Clone, Debug, Serialize)]
pub struct InitramfsImage {
    pub kernel: String,
    /// The image the bootloader loads, when one of the distro's names for it exists.
    pub image: Option<String>,
    pub rebuilt: bool,
    pub reason: String,
}

/// Everything the fix stage did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairOutcome {
    pub dry_run: bool,
    pub guest: GuestInfo,
    pub changes: Vec<FileChange>,
    /// Guest files removed (stale device.map, persistent-net rules, VMware tools leftovers).
    pub removed: Vec<String>,
    /// Backups made inside the guest.
    pub backups: Vec<String>,
    pub guest_commands: Vec<GuestCommand>,
    /// Every kernel's initramfs, when `regen_initramfs` is on.
    pub initramfs: Vec<InitramfsImage>,
    pub notes: Vec<String>,
    /// Set when the Linux repairs were skipped (a Windows guest).
    pub skipped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fstab_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fstab_after: Option<String>,
}

struct Repair<'s, 'a> {
    session: &'s mut Session<'a>,
    settings: &'s FixStage,
    dry_run: bool,
    stamp: String,
    out: RepairOutcome,
    /// The package manager's argv, once VMware tools packages were removed (or would be).
    package_removal: Option<Vec<String>>,
}

/// Inspects, mounts and repairs the guest attached to `session`.
pub fn repair(
    session: &mut Session<'_>,
    settings: &FixStage,
    dry_run: bool,
) -> Result<RepairOutcome, RepairError> {
    let mut info = inspect::inspect(session)?;
    if info.is_windows() {
        return Ok(RepairOutcome {
            dry_run,
            skipped: Some(format!(
                "Windows guest ({}): the Linux repairs (fstab, bootloader, initramfs, network, \
                 VMware tools) do not apply and Windows virtio driver injection is not available \
                 in this version",
                // Inspection says "unknown" when the registry gave no product name.
                if matches!(info.product_name.as_str(), "" | "unknown") {
                    format!("root {}", info.root)
                } else {
                    format!("{}, root {}", info.product_name, info.root)
                }
            )),
            guest: info,
            ..RepairOutcome::default()
        });
    }
    if !info.is_linux() {
        return Err(RepairError::Step {
            step: "inspect",
            message: format!(
                "the guest's operating system is '{}'; only Linux guests can be repaired",
                info.os_type
            ),
        });
    }
    inspect::mount(session, &mut info, dry_run)?;
    let not_mounted: Vec<String> = info
        .not_mounted
        .iter()
        .map(|n| format!("guest filesystem {n}"))
        .collect();
    let devices = inspect::devices(session, &info)?;
    let stamp = crate::clock::now_utc_compact();
    let mut r = Repair {
        session,
        settings,
        dry_run,
        stamp,
        package_removal: None,
        out: RepairOutcome {
            dry_run,
            notes: not_mounted,
            ..RepairOutcome::default()
        },
    };
    if settings.fstab_mode != FstabMode::Noop {
        r.fstab(&devices)?;
    }
    if settings.update_grub {
        r.bootloader(&devices, &info)?;
    }
    if settings.network {
        r.network()?;
    }
    if settings.remove_vmware_tools {
        r.vmware_tools()?;
    }
    if settings.regen_initramfs {
        r.initramfs(&info)?;
    }
    if settings.update_grub {
        r.regenerate_grub(&devices, &info)?;
    }
    r.selinux()?;
    let mut out = r.out;
    out.guest = info;
    Ok(out)
}

impl Repair<'_, '_> {
    /// Writes a changed file (after an in-guest backup when asked), or only records it in a dry
    /// run.
    fn apply(&mut self, path: &str, rewrite: Rewrite) -> Result<(), RepairError> {
        self.out.notes.extend(rewrite.notes.iter().cloned());
        if !rewrite.changed() {
            return Ok(());
        }
        self.out.changes.extend(rewrite.changes.iter().cloned());
        if self.dry_run {
            return Ok(());
        }
        if self.settings.backup {
            self.backup(path)?;
        }
        Ok(self.session.write(path, &rewrite.text)?)
    }

    /// Copies a guest file next to itself (`cp -a`: owner, mode, times and extended attributes
    /// kept) and reads both back: the backup is listed only once its checksum is the
    /// original's. A file changed twice in one run keeps its first backup, the original.
    fn backup(&mut self, path: &str) -> Result<(), RepairError> {
        let backup = format!("{path}.backup.hyper2kvm.{}", self.stamp);
        if self.out.backups.contains(&backup) {
            return Ok(());
        }
        self.session.call(&["cp-a", path, &backup])?;
        let original = self.session.call(&["checksum", "sha256", path])?;
        let copy = self.session.call(&["checksum", "sha256", &backup])?;
        let (original, copy) = (original.trim(), copy.trim());
        if original.is_empty() || original != copy {
            return Err(RepairError::Step {
                step: "backup",
                message: format!(
                    "the backup {backup} does not read back as {path} (sha256 {} against {}); \
                     {path} was left unchanged",
                    if copy.is_empty() { "(none)" } else { copy },
                    if original.is_empty() {
                        "(none)"
                    } else {
                        original
                    },
                ),
            });
        }
        self.out.backups.push(backup);
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), GuestError> {
        if !self.dry_run {
            self.session.call(&["rm-rf", path])?;
        }
        self.out.removed.push(path.to_owned());
        Ok(())
    }

    fn fstab(&mut self, devices: &super::Devices) -> Result<(), RepairError> {
        if let Some(text) = self.session.read("/etc/fstab")? {
            let rewrite = fstab::rewrite_fstab(&text, self.settings.fstab_mode, devices);
            if self.settings.print_fstab {
                self.out.fstab_before = Some(text.clone());
                self.out.fstab_after = Some(rewrite.text.clone());
            }
            self.apply("/etc/fstab", rewrite)?;
        } else {
            self.out
                .notes
                .push("the guest has no /etc/fstab".to_owned());
        }
        if let Some(text) = self.session.read("/etc/crypttab")? {
            let rewrite = fstab::rewrite_crypttab(&text, self.settings.fstab_mode, devices);
            self.apply("/etc/crypttab", rewrite)?;
        }
        Ok(())
    }

    fn root_spec(devices: &super::Devices, info: &GuestInfo) -> Option<String> {
        devices
            .by_name
            .get(&info.root)
            .and_then(super::DeviceIds::stable_spec)
    }

    fn bootloader(
        &mut self,
        devices: &super::Devices,
        info: &GuestInfo,
    ) -> Result<(), RepairError> {
        let Some(root_spec) = Self::root_spec(devices, info) else {
            self.out.notes.push(format!(
                "the root device {} has no UUID, PARTUUID or LABEL; kernel command lines were \
                 left unchanged",
                info.root
            ));
            return Ok(());
        };
        let mut paths: Vec<String> = bootloader::CONFIG_PATHS
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        for entry in self.session.ls(bootloader::BLS_DIR)? {
            if entry.ends_with(".conf") {
                paths.push(format!("{}/{entry}", bootloader::BLS_DIR));
            }
        }
        // grub-mkconfig sources these after /etc/default/grub, so a root= there wins.
        let mut dropins: Vec<String> = self
            .session
            .ls(bootloader::GRUB_DEFAULTS_DIR)?
            .into_iter()
            .filter(|e| e.ends_with(".cfg"))
            .collect();
        dropins.sort();
        paths.extend(
            dropins
                .into_iter()
                .map(|e| format!("{}/{e}", bootloader::GRUB_DEFAULTS_DIR)),
        );
        for path in paths {
            if let Some(text) = self.session.read(&path)? {
                let rewrite = bootloader::rewrite_cmdlines(&path, &text, &root_spec, devices);
                self.apply(&path, rewrite)?;
            }
        }
        for path in bootloader::DEVICE_MAP_PATHS {
            if let Some(text) = self.session.read(path)?
                && bootloader::device_map_is_stale(&text)
            {
                self.remove(path)?;
            }
        }
        Ok(())
    }

    /// Runs the guest's own grub configuration generator, then rewrites what it produced: inside
    /// the appliance the disk is also `/dev/sda` and no by-uuid links exist, so the generator can
    /// write `root=/dev/sda1` straight back.
    fn regenerate_grub(
        &mut self,
        devices: &super::Devices,
        info: &GuestInfo,
    ) -> Result<(), RepairError> {
        let candidates: [(&str, &[&str], &str); 3] = [
            (
                "/usr/sbin/grub-mkconfig",
                &["grub-mkconfig", "-o"],
                "/boot/grub/grub.cfg",
            ),
            (
                "/usr/sbin/grub2-mkconfig",
                &["grub2-mkconfig", "-o"],
                "/boot/grub2/grub.cfg",
            ),
            (
                "/sbin/grub2-mkconfig",
                &["grub2-mkconfig", "-o"],
                "/boot/grub2/grub.cfg",
            ),
        ];
        let mut regenerated = None;
        for (tool, argv, cfg) in candidates {
            if self.session.exists(tool)? && self.session.is_file(cfg)? {
                let mut full: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
                full.push(cfg.to_owned());
                regenerated = Some((full, cfg));
                break;
            }
        }
        let Some((argv, cfg)) = regenerated else {
            return Ok(());
        };
        if self.dry_run {
            self.out.notes.push(format!(
                "would regenerate {cfg} with `{}` and re-check its root=",
                argv.join(" ")
            ));
            return Ok(());
        }
        let result = self.session.run_in_guest(&argv);
        let ok = result.is_ok();
        self.out.guest_commands.push(GuestCommand {
            step: "bootloader",
            argv: argv.clone(),
            success: ok,
            output_tail: tail(&match &result {
                Ok(s) => s.clone(),
                Err(e) => e.to_string(),
            }),
        });
        if let Err(e) = result {
            if e.ends_session() {
                return Err(e.into());
            }
            // The edited grub.cfg is still correct; regeneration only refreshes it.
            self.out.notes.push(format!(
                "regenerating {cfg} in the guest failed ({e}); the edited {cfg} was kept"
            ));
            return Ok(());
        }
        if let (Some(root_spec), Some(text)) =
            (Self::root_spec(devices, info), self.session.read(cfg)?)
        {
            let rewrite = bootloader::rewrite_cmdlines(cfg, &text, &root_spec, devices);
            if rewrite.changed() {
                self.out.notes.push(format!(
                    "{cfg} as regenerated in the appliance named the root by its kernel device; \
                     rewritten to {root_spec}"
                ));
                // No second backup: the first one holds the guest's original file.
                self.out.changes.extend(rewrite.changes.iter().cloned());
                self.session.write(cfg, &rewrite.text)?;
            }
        }
        Ok(())
    }

    fn network(&mut self) -> Result<(), RepairError> {
        let mut files = Vec::new();
        for location in network::CONFIG_LOCATIONS {
            if self.session.is_dir(location)? {
                for entry in self.session.ls(location)? {
                    let path = format!("{location}/{entry}");
                    if network::kind_of(&path).is_some() {
                        files.push(path);
                    }
                }
            } else if self.session.is_file(location)? {
                files.push((*location).to_owned());
            }
        }
        for path in files {
            let Some(text) = self.session.read(&path)? else {
                continue;
            };
            self.out
                .notes
                .extend(network::vmware_driver_notes(&path, &text));
            let rewrite = network::strip_mac_pinning(&path, &text);
            if rewrite.changed() && rewrite.text.is_empty() {
                // A file whose whole purpose was pinning (persistent-net rules): remove it.
                self.out.changes.extend(rewrite.changes.iter().cloned());
                self.remove(&path)?;
            } else {
                self.apply(&path, rewrite)?;
            }
        }
        Ok(())
    }

    fn vmware_tools(&mut self) -> Result<(), RepairError> {
        let existing = self.existing(&[
            "/var/lib/dpkg/status",
            "/var/lib/rpm",
            "/usr/lib/sysimage/rpm",
        ])?;
        let pm = vmware_tools::package_manager(&|p| existing.iter().any(|e| e == p));
        if pm == Some(vmware_tools::PackageManager::Dpkg)
            && let Some(status) = self.session.read("/var/lib/dpkg/status")?
        {
            let packages = vmware_tools::installed_dpkg_packages(&status);
            if !packages.is_empty() {
                let argv =
                    vmware_tools::removal_command(vmware_tools::PackageManager::Dpkg, &packages);
                self.package_removal = Some(argv.clone());
                self.run_tool("vmware_tools", argv)?;
            }
        }
        if pm == Some(vmware_tools::PackageManager::Rpm) {
            self.rpm_remove_vmware_tools()?;
        }
        // A `.wants` link whose unit the package removal took is dangling, and still a leftover.
        let mut leftovers_exist = self.existing(vmware_tools::LEFTOVER_PATHS)?;
        for p in vmware_tools::LEFTOVER_PATHS {
            let link = p.contains(".wants/") || p.contains(".requires/");
            if link && !leftovers_exist.iter().any(|e| e == p) && self.session.is_symlink(p)? {
                leftovers_exist.push((*p).to_owned());
            }
        }
        for path in vmware_tools::leftovers(&|p| leftovers_exist.iter().any(|e| e == p)) {
            self.remove(&path)?;
        }
        Ok(())
    }

    /// Removes the VMware tools packages with the guest's own rpm, so its database stays true.
    /// Without an rpm binary in the guest only the files go (see `vmware_tools`), and the
    /// report says the database still lists them.
    fn rpm_remove_vmware_tools(&mut self) -> Result<(), RepairError> {
        if self.existing(vmware_tools::RPM_BINARIES)?.is_empty() {
            self.out.notes.push(
                "the guest has an rpm database but no rpm binary: the VMware tools files are \
                 removed, and the database still lists their packages until `rpm -e` runs in \
                 the guest"
                    .to_owned(),
            );
            return Ok(());
        }
        let listed = self
            .session
            .call(&["sh", &vmware_tools::rpm_query_script()])?;
        let packages = vmware_tools::installed_rpm_packages(&listed);
        if !packages.is_empty() {
            let argv = vmware_tools::removal_command(vmware_tools::PackageManager::Rpm, &packages);
            self.package_removal = Some(argv.clone());
            self.run_tool("vmware_tools", argv)?;
        }
        Ok(())
    }

    fn initramfs(&mut self, info: &GuestInfo) -> Result<(), RepairError> {
        let existing = self.existing(initramfs::PROBE_PATHS)?;
        let Some(tool) = initramfs::detect(&|p| existing.iter().any(|e| e == p)) else {
            self.out.notes.push(
                "no initramfs tool (dracut, initramfs-tools, mkinitcpio) was found in the guest; \
                 the initramfs was not rebuilt"
                    .to_owned(),
            );
            return Ok(());
        };
        let path = initramfs::config_path(tool);
        let current = self.session.read(path)?;
        let rewrite = initramfs::add_drivers(tool, current.as_deref());
        if current.is_none() && rewrite.changed() && !self.dry_run {
            // A drop-in we own: nothing to back up, and upload needs the directory.
            if let Some(dir) = path.rsplit_once('/').map(|(d, _)| d) {
                self.session.call(&["mkdir-p", dir])?;
            }
            self.out.changes.extend(rewrite.changes.iter().cloned());
            self.session.write(path, &rewrite.text)?;
        } else {
            self.apply(path, rewrite)?;
        }
        let kernels = initramfs::kernels(&info.kernels);
        if kernels.is_empty() {
            self.out
                .notes
                .push("no kernels were found under /lib/modules; nothing to rebuild".to_owned());
        }
        let stale = self.initramfs_inputs_changed(tool);
        let mut done: Vec<Vec<String>> = Vec::new();
        for kernel in kernels {
            // Check and rebuild the image the bootloader loads, where the distro's name for it
            // exists.
            let candidates = initramfs::image_candidates(&kernel);
            let mut image = None;
            for candidate in &candidates {
                if self.session.is_file(candidate)? {
                    image = Some(candidate.clone());
                    break;
                }
            }
            let verdict = if self.settings.initramfs_rebuild == InitramfsRebuild::Always {
                Err("fix.initramfs_rebuild is always".to_owned())
            } else if let Some(reason) = &stale {
                Err(reason.clone())
            } else if let Some(image) = &image {
                self.check_image(tool, &kernel, image)?
            } else {
                Err(format!("no image was found at {}", candidates.join(", ")))
            };
            let rebuilt = verdict.is_err();
            self.out.initramfs.push(InitramfsImage {
                kernel: kernel.clone(),
                image: image.clone(),
                rebuilt,
                reason: verdict.unwrap_or_else(|e| e),
            });
            if !rebuilt {
                continue;
            }
            let argv = initramfs::rebuild_command(tool, &kernel, image.as_deref());
            // mkinitcpio -P covers every kernel at once.
            if done.contains(&argv) {
                continue;
            }
            self.run_tool("initramfs", argv.clone())?;
            done.push(argv);
        }
        Ok(())
    }

    /// Why every existing image is stale: a file the tool copies into its images was changed or
    /// removed by this run (other than its own configuration, whose only change is the drivers
    /// each image is checked for), or packages were removed, whose files may be among them.
    fn initramfs_inputs_changed(&self, tool: initramfs::Tool) -> Option<String> {
        let own = initramfs::config_path(tool);
        let mut paths: Vec<&str> = self
            .out
            .changes
            .iter()
            .map(|c| c.path.as_str())
            .chain(self.out.removed.iter().map(String::as_str))
            .filter(|p| *p != own && initramfs::embeds(tool, p))
            .collect();
        paths.sort_unstable();
        paths.dedup();
        if !paths.is_empty() {
            return Some(format!(
                "{} changed, and the initramfs carries a copy",
                paths.join(", ")
            ));
        }
        self.package_removal.as_ref().map(|argv| {
            format!(
                "`{}` removed packages whose files the initramfs may carry",
                argv.join(" ")
            )
        })
    }

    /// Lists `image` with the guest's own lister and reads the kernel's built-in modules:
    /// `Ok(why it can stay)` or `Err(why it must be rebuilt)`. A lister that fails or is missing
    /// means a rebuild, never a guess.
    fn check_image(
        &mut self,
        tool: initramfs::Tool,
        kernel: &str,
        image: &str,
    ) -> Result<Result<String, String>, RepairError> {
        let argv = initramfs::list_command(tool, image);
        let (verdict, success, output_tail) = match self.session.run_in_guest(&argv) {
            Ok(listing) => {
                let mut builtin = String::new();
                for dir in ["/lib/modules", "/usr/lib/modules"] {
                    if let Some(text) = self
                        .session
                        .read(&format!("{dir}/{kernel}/modules.builtin"))?
                    {
                        builtin = text;
                        break;
                    }
                }
                let verdict = initramfs::image_verdict(kernel, &listing, &builtin);
                let summary = match &verdict {
                    Ok(why) | Err(why) => format!("{} entries; {why}", listing.lines().count()),
                };
                (verdict, true, summary)
            }
            Err(e) if e.ends_session() => return Err(e.into()),
            Err(e) => (
                Err(format!("`{}` failed: {e}", argv.join(" "))),
                false,
                tail(&e.to_string()),
            ),
        };
        self.out.guest_commands.push(GuestCommand {
            step: "initramfs",
            argv,
            success,
            output_tail,
        });
        Ok(verdict)
    }

    /// SELinux guests relabel on their next boot, so files written here get proper labels.
    fn selinux(&mut self) -> Result<(), GuestError> {
        if self.out.changes.is_empty() && self.out.removed.is_empty() {
            return Ok(());
        }
        let Some(config) = self.session.read("/etc/selinux/config")? else {
            return Ok(());
        };
        let enforcing = config.lines().any(|l| {
            l.trim().replace(' ', "") == "SELINUX=enforcing"
                || l.trim().replace(' ', "") == "SELINUX=permissive"
        });
        if enforcing {
            if !self.dry_run {
                self.session.call(&["touch", "/.autorelabel"])?;
            }
            self.out.notes.push(
                "SELinux is enabled in the guest: /.autorelabel was created so files changed \
                 here are relabelled on first boot"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// Which of `paths` exist in the guest.
    fn existing(&mut self, paths: &[&str]) -> Result<Vec<String>, GuestError> {
        let mut found = Vec::new();
        for p in paths {
            if self.session.exists(p)? {
                found.push((*p).to_owned());
            }
        }
        Ok(found)
    }

    /// Runs a guest tool; a failure fails the stage (the guest would not boot as expected).
    fn run_tool(&mut self, step: &'static str, argv: Vec<String>) -> Result<(), RepairError> {
        if self.dry_run {
            self.out
                .notes
                .push(format!("would run in the guest: {}", argv.join(" ")));
            return Ok(());
        }
        let result = self.session.run_in_guest(&argv);
        self.out.guest_commands.push(GuestCommand {
            step,
            argv: argv.clone(),
            success: result.is_ok(),
            output_tail: tail(&match &result {
                Ok(s) => s.clone(),
                Err(e) => e.to_string(),
            }),
        });
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.ends_session() => Err(e.into()),
            Err(e) => Err(RepairError::Step {
                step,
                message: format!("`{}` failed in the guest: {e}", argv.join(" ")),
            }),
        }
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    lines[start..].join("\n")
}
