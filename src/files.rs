//! What we ask of files on the host: the size of a disk image, whether it is a regular file or
//! a block device.

use std::path::Path;

/// The size of a disk image file, or of a block device (whose file size is 0), in bytes.
pub fn disk_size(path: &Path) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    std::fs::File::open(path)?.seek(SeekFrom::End(0))
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
