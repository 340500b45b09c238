//! What we ask of files on the host: the size of a disk image, whether a source is a disk at
//! all (a regular file, or a block device where the manifest allows one), its identity (device,
//! inode, size, mtime) so a source that changes under a run is noticed, and the modes of what
//! we create (0600 files, 0700 directories, whatever the umask).
//!
//! A source is opened without blocking: its type is looked at on the path first, so a FIFO or
//! socket is never opened, and then again on the descriptor (opened `O_NONBLOCK`), so a path
//! swapped for a FIFO between the two cannot make `open` wait for a writer either.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every file we create: converted disks hold whole guest filesystems.
pub const FILE_MODE: u32 = 0o600;
/// The mode of every directory we create.
pub const DIR_MODE: u32 = 0o700;

/// What a source path turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
    Directory,
    Other,
}

impl FileKind {
    fn of(t: std::fs::FileType) -> Self {
        if t.is_file() {
            FileKind::Regular
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_dir() {
            FileKind::Directory
        } else {
            FileKind::Other
        }
    }

    /// As the messages say it: "a character device".
    pub fn described(self) -> &'static str {
        match self {
            FileKind::Regular => "a regular file",
            FileKind::BlockDevice => "a block device",
            FileKind::CharDevice => "a character device",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::Socket => "a socket",
            FileKind::Directory => "a directory",
            FileKind::Other => "not a regular file",
        }
    }

    /// As the report says it.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Regular => "file",
            FileKind::BlockDevice => "block_device",
            FileKind::CharDevice => "char_device",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::Directory => "directory",
            FileKind::Other => "other",
        }
    }
}

/// Who a source disk is: pinned when the run is planned and compared after convert and
/// validate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub kind: FileKind,
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

impl Identity {
    /// What changed from `self` (pinned) to `now`, one phrase per difference; empty when
    /// nothing did.
    pub fn changes(&self, now: &Identity) -> Vec<String> {
        let mut changes = Vec::new();
        if (self.device, self.inode) != (now.device, now.inode) {
            changes.push(format!(
                "inode {}:{} → {}:{} (the file was replaced)",
                self.device, self.inode, now.device, now.inode
            ));
        }
        if self.kind != now.kind {
            changes.push(format!(
                "type {} → {}",
                self.kind.described(),
                now.kind.described()
            ));
        }
        if self.size != now.size {
            changes.push(format!("size {} → {} bytes", self.size, now.size));
        }
        if (self.mtime_sec, self.mtime_nsec) != (now.mtime_sec, now.mtime_nsec) {
            changes.push(format!(
                "mtime {} → {} (the file was written)",
                crate::clock::utc_at(self.mtime_sec, self.mtime_nsec),
                crate::clock::utc_at(now.mtime_sec, now.mtime_nsec)
            ));
        }
        changes
    }

    /// The mtime as RFC 3339 in UTC, to the nanosecond.
    pub fn mtime(&self) -> String {
        crate::clock::utc_at(self.mtime_sec, self.mtime_nsec)
    }
}

/// Why a path cannot be a source disk.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("not found")]
    NotFound,
    #[error("cannot be read: {0}")]
    Io(#[source] io::Error),
    #[error("is {}", .0.described())]
    NotADisk(FileKind),
    #[error("is a block device, which is a source only where the disk allows it")]
    BlockDeviceNotAllowed,
    #[error("is empty (0 bytes)")]
    Empty,
}

/// Opens a source disk for reading without ever blocking, and pins its identity. Refused: what
/// is not a regular file (or a block device, with `allow_block`), and an empty one. Symlinks
/// are followed: the checks are on what they point to, made on the open descriptor.
pub fn open_source(path: &Path, allow_block: bool) -> Result<(File, Identity), SourceError> {
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => SourceError::NotFound,
        _ => SourceError::Io(e),
    };
    // The path first: a FIFO, socket or character device is refused without opening it.
    let meta = std::fs::metadata(path).map_err(io_err)?;
    check_kind(FileKind::of(meta.file_type()), allow_block)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_err)?;
    let identity = identify(&file)?;
    check_kind(identity.kind, allow_block)?;
    if identity.size == 0 {
        return Err(SourceError::Empty);
    }
    Ok((file, identity))
}

/// The identity of a source now, read on a fresh descriptor opened as [`open_source`] does.
pub fn source_identity(path: &Path, allow_block: bool) -> Result<Identity, SourceError> {
    match open_source(path, allow_block) {
        Ok((_, identity)) => Ok(identity),
        // An emptied source still has an identity to compare with the pinned one.
        Err(SourceError::Empty) => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path)
                .map_err(SourceError::Io)?;
            identify(&file)
        }
        Err(e) => Err(e),
    }
}

fn check_kind(kind: FileKind, allow_block: bool) -> Result<(), SourceError> {
    match kind {
        FileKind::Regular => Ok(()),
        FileKind::BlockDevice if allow_block => Ok(()),
        FileKind::BlockDevice => Err(SourceError::BlockDeviceNotAllowed),
        other => Err(SourceError::NotADisk(other)),
    }
}

/// The identity of an open file, from `fstat` on its descriptor.
fn identify(file: &File) -> Result<Identity, SourceError> {
    let meta = file.metadata().map_err(SourceError::Io)?;
    let kind = FileKind::of(meta.file_type());
    let size = if kind == FileKind::BlockDevice {
        let mut f = file;
        let size = f.seek(SeekFrom::End(0)).map_err(SourceError::Io)?;
        f.seek(SeekFrom::Start(0)).map_err(SourceError::Io)?;
        size
    } else {
        meta.len()
    };
    Ok(Identity {
        kind,
        device: meta.dev(),
        inode: meta.ino(),
        size,
        mtime_sec: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
    })
}

/// The size of a disk image file, or of a block device (whose file size is 0), in bytes.
/// Opened without blocking; anything else is an error.
pub fn disk_size(path: &Path) -> io::Result<u64> {
    match open_source(path, true) {
        Ok((_, identity)) => Ok(identity.size),
        Err(SourceError::Empty) => Ok(0),
        Err(SourceError::NotFound) => Err(io::Error::from(io::ErrorKind::NotFound)),
        Err(SourceError::Io(e)) => Err(e),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string())),
    }
}

/// Members a tar archive may have before [`check_tar_member`] gives up looking.
const MAX_TAR_MEMBERS: usize = 4096;

/// Whether the tar archive at `path` has a member `name` whose data is `size` bytes at
/// `offset`: listed again from the start (headers only; the data is skipped with a seek), so
/// long names (GNU, PAX) and large sizes read as tar itself reads them.
pub fn check_tar_member(path: &Path, name: &str, offset: u64, size: u64) -> Result<(), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(file);
    let entries = archive
        .entries_with_seek()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_TAR_MEMBERS {
            break;
        }
        let entry = entry.map_err(|e| format!("not a readable tar archive: {e}"))?;
        let raw = entry.path_bytes();
        let this = String::from_utf8_lossy(&raw);
        if this.trim_start_matches("./") != name {
            continue;
        }
        let (at, len) = (entry.raw_file_position(), entry.size());
        return if (at, len) == (offset, size) {
            Ok(())
        } else {
            Err(format!("the member is now {len} bytes at byte {at}"))
        };
    }
    Err("no member of that name".to_owned())
}

/// Creates `dir` and its missing parents as 0700 whatever the umask; directories that exist
/// already keep their mode.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        create_private_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `path` as a new, empty 0600 file, never through a symlink and never over anything
/// already there (`O_CREAT|O_EXCL|O_NOFOLLOW`); the mode is set whatever the umask.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// The bytes a file takes on its filesystem (a sparse file's holes take none): at most what a
/// sparse copy of it needs.
pub fn allocated_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks().saturating_mul(512))
}

/// The bytes an unprivileged writer may still use on the filesystem that holds `path`, or that
/// would hold it once created (its nearest existing ancestor is asked).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let mut probe = path;
    while !probe.exists() {
        match probe.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => probe = parent,
            _ => break,
        }
    }
    let st = nix::sys::statvfs::statvfs(probe).map_err(std::io::Error::from)?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_regular_non_empty_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = dir.path().join("disk.raw");
        std::fs::write(&disk, b"data").expect("write");
        let (_, id) = open_source(&disk, false).expect("a disk");
        assert_eq!((id.kind, id.size), (FileKind::Regular, 4));
        let empty = dir.path().join("empty.raw");
        std::fs::write(&empty, b"").expect("write");
        assert!(matches!(
            open_source(&empty, false),
            Err(SourceError::Empty)
        ));
        assert!(matches!(
            open_source(dir.path(), false),
            Err(SourceError::NotADisk(FileKind::Directory))
        ));
        assert!(matches!(
            open_source(Path::new("/dev/zero"), true),
            Err(SourceError::NotADisk(FileKind::CharDevice))
        ));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        assert!(matches!(
            open_source(&fifo, false),
            Err(SourceError::NotADisk(FileKind::Fifo))
        ));
        assert!(matches!(
            open_source(&dir.path().join("missing"), false),
            Err(SourceError::NotFound)
        ));
    }

    #[test]
    fn changes_say_what_changed() {
        let pinned = Identity {
            kind: FileKind::Regular,
            device: 1,
            inode: 2,
            size: 100,
            mtime_sec: 0,
            mtime_nsec: 5,
        };
        assert!(pinned.changes(&pinned).is_empty());
        let now = Identity {
            size: 0,
            mtime_nsec: 6,
            ..pinned.clone()
        };
        assert_eq!(
            pinned.changes(&now),
            [
                "size 100 → 0 bytes",
                "mtime 1970-01-01T00:00:00.000000005Z → 1970-01-01T00:00:00.000000006Z (the \
                 file was written)"
            ]
        );
    }

    #[test]
    fn created_files_and_directories_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a/b");
        create_private_dir_all(&nested).expect("mkdir");
        for d in [dir.path().join("a"), nested.clone()] {
            let mode = std::fs::metadata(&d).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, DIR_MODE, "{}", d.display());
        }
        let part = nested.join("x.part");
        create_private_file(&part).expect("create");
        let mode = std::fs::metadata(&part).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, FILE_MODE);
        assert!(create_private_file(&part).is_err(), "created twice");
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").expect("write");
        let link = nested.join("y.part");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(create_private_file(&link).is_err(), "followed a symlink");
        assert_eq!(std::fs::read(&target).expect("read"), b"keep");
    }
}
