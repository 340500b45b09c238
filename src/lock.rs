//! One run per output directory, and what a killed run left behind.
//!
//! A run that writes into a directory holds an exclusive `flock` on [`LOCK_FILE`] inside it for
//! as long as it runs ([`take`]). A second run finds the lock held and stops before it touches
//! anything, naming the directory and the holder's pid, which the lock file holds on its first
//! line. The kernel drops the lock when its holder dies, however it dies, so a lock is never
//! stale; the file itself is removed when the run ends normally.
//!
//! Below the pid the lock file lists the scratch files the holder may create there (`.part`
//! images, fix work directories), relative to the directory. The next run that takes the lock
//! removes those of them that exist, together with its own scratch names: with the lock held, a
//! `.part` file or work directory cannot belong to a running conversion, so it is a leftover,
//! never an output. Only names that [`is_leftover_name`] recognises are ever removed, whatever
//! a lock file says.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file in each output directory.
pub const LOCK_FILE: &str = ".hyper2kvm.lock";
/// How a fix stage's work directory (its overlays) is named: the prefix, then the VM id.
pub const WORK_DIR_PREFIX: &str = ".hyper2kvm-work-";

/// Whether a file name is one of the scratch names a run creates and a killed run leaves
/// behind: a `.part` file ([`crate::atomic::part_path`]) or a work directory.
pub fn is_leftover_name(name: &str) -> bool {
    !name.contains('/')
        && name != LOCK_FILE
        && (crate::atomic::part_target(Path::new(name)).is_some()
            || name
                .strip_prefix(WORK_DIR_PREFIX)
                .is_some_and(|id| !id.is_empty()))
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "output directory {dir} is in use by another hyper2kvm run ({holder}, which holds the \
         lock on {lock_file}); wait for that run to finish, or choose another output directory",
        holder = match pid { Some(p) => format!("pid {p}"), None => "pid not known yet".to_owned() }
    )]
    Busy {
        dir: PathBuf,
        lock_file: PathBuf,
        pid: Option<u32>,
    },
    #[error("could not lock the output directory {dir}: {what}")]
    Io {
        dir: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// The directories a run will write into, and the scratch files it may create there.
#[derive(Clone, Debug, Default)]
pub struct Claim {
    dirs: BTreeSet<PathBuf>,
    scratch: BTreeSet<PathBuf>,
}

impl Claim {
    /// A directory the run writes into.
    pub fn dir(&mut self, dir: &Path) {
        self.dirs.insert(dir.to_owned());
    }

    /// A scratch file or directory the run may create under one of its directories.
    pub fn scratch(&mut self, path: &Path) {
        self.scratch.insert(path.to_owned());
    }

    /// Everything another claim holds, added to this one (the VMs of a batch).
    pub fn extend(&mut self, other: &Claim) {
        self.dirs.extend(other.dirs.iter().cloned());
        self.scratch.extend(other.scratch.iter().cloned());
    }

    /// The part of the claim whose directories exist already (a batch locks those up front and
    /// the others as each VM starts, so a VM that never runs leaves no directory behind).
    pub fn existing(&self) -> Claim {
        Claim {
            dirs: self.dirs.iter().filter(|d| d.is_dir()).cloned().collect(),
            scratch: self.scratch.clone(),
        }
    }

    /// Whether a cleaned-up leftover lies in one of this claim's directories.
    pub fn covers(&self, cleaned: &Cleaned) -> bool {
        self.dirs.iter().any(|d| cleaned.path.starts_with(d))
    }
}

/// A leftover of an earlier run, removed.
#[derive(Clone, Debug)]
pub struct Cleaned {
    pub path: PathBuf,
    /// What the log and the report say about it.
    pub note: String,
}

/// The locks of a run; dropping it releases them and removes the lock files.
#[derive(Debug, Default)]
pub struct Held {
    locks: Vec<DirLock>,
    /// The leftovers found and removed when the locks were taken.
    pub cleaned: Vec<Cleaned>,
}

impl Held {
    /// Locks the directories of `claim` not held yet, as [`take`] does, and returns the
    /// leftovers removed from them.
    pub fn take_more(&mut self, claim: &Claim) -> Result<Vec<Cleaned>, LockError> {
        let more = lock_and_clean(claim, &self.locks)?;
        self.locks.extend(more.locks);
        self.cleaned.extend(more.cleaned.iter().cloned());
        Ok(more.cleaned)
    }

    /// How many directories are locked.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }
}

#[derive(Debug)]
struct DirLock {
    /// The directory, canonical.
    dir: PathBuf,
    path: PathBuf,
    file: Flock<File>,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Removed while still locked, and only if it is still our file: a run that finds the
        // name gone creates a new file and locks that one.
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Locks every directory of `claim` (creating it, 0700, when missing), then removes the
/// leftovers of earlier runs in them. Fails without removing anything when any directory is
/// locked by another run.
pub fn take(claim: &Claim) -> Result<Held, LockError> {
    lock_and_clean(claim, &[])
}

/// [`take`], skipping the directories of `held`.
fn lock_and_clean(claim: &Claim, held: &[DirLock]) -> Result<Held, LockError> {
    // One lock per directory however it is spelt: two flocks of the same file from one process
    // would conflict with each other.
    let mut by_real: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for dir in &claim.dirs {
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| LockError::Io {
                dir: dir.clone(),
                what,
                source,
            }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("cannot create it"))?;
        let real = std::fs::canonicalize(dir).map_err(io("cannot resolve it"))?;
        if held.iter().all(|h| h.dir != real) {
            by_real.entry(real).or_default().push(dir.clone());
        }
    }

    let mut locks = Vec::new();
    let mut previous = Vec::new();
    for (real, spellings) in &by_real {
        let (lock, before) = acquire(real)?;
        locks.push(lock);
        previous.push((real, spellings, before));
    }

    let mut cleaned = Vec::new();
    for ((real, spellings, before), lock) in previous.into_iter().zip(&mut locks) {
        // This run's scratch names in the directory, relative to it.
        let mut names: BTreeSet<PathBuf> = claim
            .scratch
            .iter()
            .filter_map(|s| spellings.iter().find_map(|d| s.strip_prefix(d).ok()))
            .filter(|rel| safe_relative(rel))
            .map(Path::to_owned)
            .collect();
        let mine = names.clone();
        let pid = before.as_ref().and_then(|b| b.pid);
        if let Some(b) = &before {
            names.extend(b.scratch.iter().filter(|r| safe_relative(r)).cloned());
        }
        for rel in &names {
            let path = real.join(rel);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            // A run makes only plain files and directories under these names. Anything else (a
            // symlink planted at a `.part` name, a FIFO) is not ours to remove: it stays, and
            // the exclusive create of the `.part` file then fails that disk, naming it.
            if !meta.is_file() && !meta.is_dir() {
                continue;
            }
            let removed = if meta.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            let by = match pid {
                Some(p) => format!("an earlier run (pid {p}) that did not finish"),
                None => "an earlier run that did not finish".to_owned(),
            };
            let note = match removed {
                Ok(()) => format!("removed {}, left by {by}", path.display()),
                Err(e) => format!("could not remove {}, left by {by}: {e}", path.display()),
            };
            tracing::warn!("{note}");
            cleaned.push(Cleaned { path, note });
        }
        write_holder(&mut lock.file, &mine).map_err(|source| LockError::Io {
            dir: real.clone(),
            what: format!("cannot write {}", lock.path.display()),
            source,
        })?;
    }
    Ok(Held { locks, cleaned })
}

/// A relative path of plain components whose last one is a scratch name.
fn safe_relative(rel: &Path) -> bool {
    rel.components().all(|c| matches!(c, Component::Normal(_)))
        && rel
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_leftover_name)
}

/// What an earlier holder wrote in the lock file.
struct Holder {
    pid: Option<u32>,
    scratch: Vec<PathBuf>,
}

fn parse_holder(text: &str) -> Holder {
    let mut lines = text.lines();
    let pid = lines.next().and_then(|l| l.trim().parse().ok());
    Holder {
        pid,
        scratch: lines
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .collect(),
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    // A lock file is a few lines; anything longer was not written by us.
    file.take(64 * 1024).read_to_string(&mut text).ok()?;
    (!text.trim().is_empty()).then(|| parse_holder(&text))
}

fn write_holder(file: &mut File, scratch: &BTreeSet<PathBuf>) -> std::io::Result<()> {
    let mut text = format!("{}\n", std::process::id());
    for rel in scratch {
        text.push_str(&rel.to_string_lossy());
        text.push('\n');
    }
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(text.as_bytes())
}

/// Locks `dir`'s lock file; returns the lock and what the previous holder wrote in it.
fn acquire(dir: &Path) -> Result<(DirLock, Option<Holder>), LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |what: String| {
        move |source| LockError::Io {
            dir: dir.to_owned(),
            what,
            source,
        }
    };
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            // Never through a symlink, and never blocking on a FIFO planted at the name.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io(format!("cannot open {}", path.display())))?;
        let meta = file
            .metadata()
            .map_err(io(format!("cannot read {}", path.display())))?;
        if !meta.is_file() {
            return Err(LockError::Io {
                dir: dir.to_owned(),
                what: format!("{} is not a regular file", path.display()),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        }
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                // The holder before us may have removed the name after we opened it; then our
                // lock is on a file nobody else will ever open: start again.
                if !same_file(&locked, &path) {
                    continue;
                }
                let before = read_holder(&mut locked);
                return Ok((
                    DirLock {
                        dir: dir.to_owned(),
                        path,
                        file: locked,
                    },
                    before,
                ));
            }
            Err((mut file, Errno::EWOULDBLOCK)) => {
                // The holder writes its pid right after it got the lock; give it a moment.
                let mut pid = None;
                for _ in 0..20 {
                    pid = read_holder(&mut file).and_then(|h| h.pid);
                    if pid.is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Err(LockError::Busy {
                    dir: dir.to_owned(),
                    lock_file: path,
                    pid,
                });
            }
            Err((_, errno)) => {
                return Err(LockError::Io {
                    dir: dir.to_owned(),
                    what: format!("cannot lock {}", path.display()),
                    source: std::io::Error::from(errno),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names_are_only_ours() {
        assert!(is_leftover_name("d0.qcow2.part"));
        assert!(is_leftover_name(".hyper2kvm-work-vm1"));
        assert!(!is_leftover_name(".hyper2kvm-work-"));
        assert!(!is_leftover_name(".part"));
        assert!(!is_leftover_name("d0.qcow2"));
        assert!(!is_leftover_name("report.json"));
        assert!(!is_leftover_name(LOCK_FILE));
        assert!(!safe_relative(Path::new("../x.part")));
        assert!(!safe_relative(Path::new("/etc/x.part")));
        assert!(safe_relative(Path::new("backups/d0.img.part")));
    }

    #[test]
    fn a_second_lock_is_refused_and_leftovers_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let mut claim = Claim::default();
        claim.dir(&out);
        claim.scratch(&out.join("d0.qcow2.part"));
        let held = take(&claim).expect("first");
        let text = std::fs::read_to_string(out.join(LOCK_FILE)).expect("lock file");
        assert_eq!(text, format!("{}\nd0.qcow2.part\n", std::process::id()));
        // The same process again stands for another run: flock is per open file.
        match take(&claim) {
            Err(LockError::Busy { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(held);
        assert!(!out.join(LOCK_FILE).exists(), "the lock file is removed");

        // A killed run's lock file and leftovers: the next run removes what it listed.
        std::fs::write(
            out.join(LOCK_FILE),
            "999999\nold.raw.part\n../escape.part\n",
        )
        .expect("w");
        std::fs::write(out.join("old.raw.part"), "x").expect("w");
        std::fs::write(out.join("d0.qcow2.part"), "x").expect("w");
        std::fs::write(out.join("keep.qcow2"), "x").expect("w");
        std::fs::write(dir.path().join("escape.part"), "x").expect("w");
        let held = take(&claim).expect("again");
        let mut cleaned: Vec<_> = held.cleaned.iter().map(|c| c.path.clone()).collect();
        cleaned.sort();
        let real = std::fs::canonicalize(&out).expect("real");
        assert_eq!(
            cleaned,
            [real.join("d0.qcow2.part"), real.join("old.raw.part")]
        );
        assert!(held.cleaned[0].note.contains("pid 999999"));
        assert!(out.join("keep.qcow2").exists());

        // More directories for the same run: those held already are skipped, not refused.
        let mut held = held;
        let mut more = Claim::default();
        more.dir(&out);
        more.dir(&dir.path().join("second"));
        assert!(more.existing().dirs.len() == 1);
        held.take_more(&more).expect("more");
        assert_eq!(held.len(), 2);
        assert!(dir.path().join("escape.part").exists());
    }
}
