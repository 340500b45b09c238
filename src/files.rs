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
