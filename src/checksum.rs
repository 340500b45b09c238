//! Disk digests: `sha256:<hex>` as manifests write them, computed by streaming the file.
//!
//! The sha2 crate picks SHA-NI at run time, so one core hashes at about openssl's speed; reads
//! are large (4 MiB) to keep the disk busy. Cancellation is checked between reads.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::exec::CancelToken;

const READ_SIZE: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    #[error("could not read {path} to compute its checksum")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("checksum of {path} cancelled")]
    Cancelled { path: String },
}

/// Streams `path` through SHA-256 and returns `sha256:<lower-case hex>`.
/// `on_bytes` is told how many bytes have been hashed so far.
pub fn sha256_file(
    path: &Path,
    cancel: Option<&CancelToken>,
    mut on_bytes: impl FnMut(u64),
) -> Result<String, ChecksumError> {
    let io_err = |source| ChecksumError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_SIZE];
    let mut done: u64 = 0;
    loop {
        if cancel.is_some_and(CancelToken::is_cancelled) {
            return Err(ChecksumError::Cancelled {
                path: path.display().to_string(),
            });
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        hasher.update(&buf[..n]);
        done += n as u64;
        on_bytes(done);
    }
    Ok(format!("sha256:{}", hex(&hasher.finalize())))
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").expect("write");
        let sum = sha256_file(&path, None, |_| {}).expect("hash");
        assert_eq!(
            sum,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn cancelled_before_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x");
        std::fs::write(&path, b"x").expect("write");
        let token = CancelToken::new();
        token.cancel();
        assert!(matches!(
            sha256_file(&path, Some(&token), |_| {}),
            Err(ChecksumError::Cancelled { .. })
        ));
    }
}
