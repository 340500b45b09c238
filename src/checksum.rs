//! Disk digests: `sha256:<hex>` as manifests write them, computed by streaming the file.
//!
//! The sha2 crate picks SHA-NI at run time, so one core hashes at about openssl's speed. A
//! reader thread fills the next buffer while the current one is hashed, so the copy out of the
//! page cache (or the wait for the disk) overlaps the hashing instead of adding to it; buffers
//! are 1 MiB, small enough to stay in cache between the read and the hash. Cancellation is
//! checked between buffers.
//!
//! A checksum that runs beside a conversion does so at a [`Background`] priority: it takes the
//! CPU the conversion leaves idle instead of slowing the conversion down, and gets its normal
//! priority back once something waits for it.

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use sha2::{Digest, Sha256};

use crate::exec::CancelToken;
use crate::files;

const BUF_SIZE: usize = 1024 * 1024;
/// Buffers in circulation: one being hashed, the rest being filled or queued.
const BUFFERS: usize = 4;

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

/// The lowest CPU priority (the highest nice value) on Linux.
const LOWEST_PRIORITY: i32 = 19;

/// Lets hashing run at the lowest CPU priority until [`Background::hurry`] is called.
///
/// A conversion leaves part of the CPU idle (qemu-img's main thread is its critical path); a
/// checksum at the same priority competes with it for the cores and stretches it instead of
/// filling the gaps. At the lowest priority the checksum gets what the conversion does not use.
/// When the pipeline has to wait for the checksum, `hurry` asks the hashing threads to return
/// to the priority they started with. Raising a priority again needs `CAP_SYS_NICE` (root, as
/// conversions normally run); without it the threads stay low, which costs time only when
/// other work keeps every core busy.
#[derive(Debug, Default)]
pub struct Background {
    hurry: AtomicBool,
}

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the hashing threads to return to their normal priority.
    pub fn hurry(&self) {
        self.hurry.store(true, Ordering::Relaxed);
    }
}

/// One thread's stay at the lowest priority: entered when the thread starts hashing, left when
/// the pipeline hurries or the hashing ends.
struct Lowered<'a> {
    background: &'a Background,
    /// The priority to return to, while the thread runs lowered.
    normal: Option<i32>,
}

impl<'a> Lowered<'a> {
    fn enter(background: Option<&'a Background>) -> Option<Self> {
        let background = background?;
        let mut lowered = Self {
            background,
            normal: None,
        };
        if !background.hurry.load(Ordering::Relaxed)
            && let Ok(normal) = rustix::process::getpriority_process(None)
            && normal < LOWEST_PRIORITY
            && rustix::process::setpriority_process(None, LOWEST_PRIORITY).is_ok()
        {
            lowered.normal = Some(normal);
        }
        Some(lowered)
    }

    /// Returns to the normal priority once the pipeline is waiting.
    fn check(&mut self) {
        if self.normal.is_some() && self.background.hurry.load(Ordering::Relaxed) {
            self.restore();
        }
    }

    fn restore(&mut self) {
        if let Some(normal) = self.normal.take()
            && let Err(e) = rustix::process::setpriority_process(None, normal)
        {
            tracing::debug!("the checksum stays at the lowest CPU priority: {e}");
        }
    }
}

impl Drop for Lowered<'_> {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Streams `path` through SHA-256 and returns `sha256:<lower-case hex>`, reading at most
/// `limit` bytes (a source's pinned size: a file that grows, or a device that never ends, is
/// hashed as it was planned). `on_bytes` gets the running total. With `background`, the
/// threads run at the lowest CPU priority until it hurries them (see [`Background`]).
pub fn sha256_file(
    path: &Path,
    limit: Option<u64>,
    cancel: Option<&CancelToken>,
    background: Option<&Background>,
    on_bytes: impl FnMut(u64),
) -> Result<String, ChecksumError> {
    let range = Range {
        offset: 0,
        limit,
        sha1: false,
    };
    digests(path, range, cancel, background, on_bytes).map(|d| d.sha256)
}

/// Which bytes of a file [`digests`] reads, and whether it also computes SHA-1.
#[derive(Clone, Copy, Debug, Default)]
pub struct Range {
    /// Where the bytes start (a tar member's data offset; 0 for a whole file).
    pub offset: u64,
    /// At most this many bytes from `offset`.
    pub limit: Option<u64>,
    /// Also compute SHA-1 (an OVA's `.mf` may list SHA1 digests) in the same pass.
    pub sha1: bool,
}

/// The digests of one pass over a file's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// `sha256:<hex>`, as manifests write it.
    pub sha256: String,
    /// Lower-case hex, when asked for.
    pub sha1: Option<String>,
    /// How many bytes were hashed.
    pub bytes: u64,
}

/// Streams `range` of `path` through SHA-256 (and SHA-1 when asked): one read of the bytes
/// for both digests. See [`sha256_file`] for `cancel`, `background` and `on_bytes`.
pub fn digests(
    path: &Path,
    range: Range,
    cancel: Option<&CancelToken>,
    background: Option<&Background>,
    mut on_bytes: impl FnMut(u64),
) -> Result<Digests, ChecksumError> {
    let io_err = |source| ChecksumError::Io {
        path: path.display().to_string(),
        source,
    };
    let cancelled = || ChecksumError::Cancelled {
        path: path.display().to_string(),
    };
    if cancel.is_some_and(CancelToken::is_cancelled) {
        return Err(cancelled());
    }
    let mut sha1 = range.sha1.then(sha1::Sha1::new);
    let finish = |sha256: Sha256, sha1: Option<sha1::Sha1>, bytes| Digests {
        sha256: format!("sha256:{}", hex(&sha256.finalize())),
        sha1: sha1.map(|h| hex(&h.finalize())),
        bytes,
    };
    let mut file = match files::open_source(path, true) {
        Ok((file, _)) => file,
        // Nothing to read: the digest of no bytes.
        Err(files::SourceError::Empty) => return Ok(finish(Sha256::new(), sha1, 0)),
        Err(files::SourceError::Io(e)) => return Err(io_err(e)),
        Err(files::SourceError::NotFound) => {
            return Err(io_err(io::Error::from(io::ErrorKind::NotFound)));
        }
        Err(e) => {
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                e.to_string(),
            )));
        }
    };
    if range.offset > 0 {
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(range.offset))
            .map_err(io_err)?;
    }
    let file = file.take(range.limit.unwrap_or(u64::MAX));
    // Full buffers travel to the hasher, empty ones back to the reader. The hashing closure
    // owns its ends of both channels, so when it returns (at the end, on an error or on
    // cancellation) they close and the reader stops before the scope joins it.
    let (full_tx, full_rx) = sync_channel::<io::Result<(Vec<u8>, usize)>>(BUFFERS);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(BUFFERS);
    for _ in 0..BUFFERS {
        empty_tx
            .send(vec![0u8; BUF_SIZE])
            .expect("the channel holds BUFFERS buffers and its receiver is alive");
    }
    let (hasher, sha1, done) = std::thread::scope(move |s| {
        s.spawn(move || {
            let mut lowered = Lowered::enter(background);
            read_ahead(file, &empty_rx, &full_tx, || {
                if let Some(lowered) = lowered.as_mut() {
                    lowered.check();
                }
            });
        });
        let mut lowered = Lowered::enter(background);
        let mut hasher = Sha256::new();
        let mut done: u64 = 0;
        loop {
            if cancel.is_some_and(CancelToken::is_cancelled) {
                return Err(cancelled());
            }
            if let Some(lowered) = lowered.as_mut() {
                lowered.check();
            }
            let (buf, n) = match full_rx.recv() {
                Ok(Ok((_, 0))) | Err(_) => break,
                Ok(Ok(filled)) => filled,
                Ok(Err(e)) => return Err(io_err(e)),
            };
            hasher.update(&buf[..n]);
            if let Some(h) = sha1.as_mut() {
                h.update(&buf[..n]);
            }
            done += n as u64;
            on_bytes(done);
            // The reader is gone only after the end of the file or an error it has sent.
            let _ = empty_tx.send(buf);
        }
        Ok((hasher, sha1, done))
    })?;
    Ok(finish(hasher, sha1, done))
}

/// The reader side of [`digests`]: fills empty buffers and sends them on, ending after an
/// empty read (end of file), an error, or when the hasher has hung up. `each_buffer` runs
/// before each buffer is filled.
fn read_ahead(
    mut file: impl Read,
    empty: &Receiver<Vec<u8>>,
    full: &SyncSender<io::Result<(Vec<u8>, usize)>>,
    mut each_buffer: impl FnMut(),
) {
    while let Ok(mut buf) = empty.recv() {
        each_buffer();
        let mut filled = 0;
        let result = loop {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        let last = filled < buf.len() || result.is_err();
        let message = result.map(|()| (buf, filled));
        if full.send(message).is_err() || last {
            return;
        }
    }
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
        let sum = sha256_file(&path, None, None, None, |_| {}).expect("hash");
        assert_eq!(
            sum,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_range_is_hashed_with_both_digests_in_one_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("member");
        std::fs::write(&path, b"xxabcyy").expect("write");
        let range = Range {
            offset: 2,
            limit: Some(3),
            sha1: true,
        };
        let d = digests(&path, range, None, None, |_| {}).expect("hash");
        assert_eq!(
            d.sha256,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            d.sha1.as_deref(),
            Some("a9993e364706816aba3e25717850c26c9cd0d89d")
        );
        assert_eq!(d.bytes, 3);
    }

    /// A background checksum hashes at the lowest priority, returns to the thread's own once
    /// hurried (where the process may raise a priority again, as root may), and leaves the
    /// calling thread as it found it.
    #[test]
    fn background_hashing_yields_until_hurried() {
        use rustix::process::getpriority_process;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk");
        let data = vec![7u8; BUF_SIZE * 4];
        std::fs::write(&path, &data).expect("write");
        // A thread of its own, so that nothing else of the test runner is reniced.
        std::thread::spawn(move || {
            let normal = getpriority_process(None).expect("getpriority");
            assert!(
                normal < LOWEST_PRIORITY,
                "the test runs at nice {normal} already"
            );
            let background = Background::new();
            let mut seen = Vec::new();
            let sum = sha256_file(&path, None, None, Some(&background), |_| {
                seen.push(getpriority_process(None).expect("getpriority"));
                background.hurry();
            })
            .expect("hash");
            assert_eq!(sum, format!("sha256:{}", hex(&Sha256::digest(&data))));
            assert_eq!(seen[0], LOWEST_PRIORITY, "before hurrying: {seen:?}");
            // Whether this process may raise a priority again (root, or RLIMIT_NICE), tried
            // on a thread of its own.
            let may_raise = std::thread::spawn(move || {
                rustix::process::setpriority_process(None, LOWEST_PRIORITY).expect("lower");
                rustix::process::setpriority_process(None, normal).is_ok()
            })
            .join()
            .expect("probe thread");
            let after = if may_raise { normal } else { LOWEST_PRIORITY };
            assert!(seen[1..].iter().all(|&p| p == after), "{seen:?}");
            assert_eq!(getpriority_process(None).expect("getpriority"), after);
        })
        .join()
        .expect("the hashing thread");
    }

    /// Sizes around the buffer boundaries: empty, partial, exact multiples, and more buffers
    /// than are in circulation.
    #[test]
    fn matches_in_memory_digest_across_buffer_boundaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        for len in [
            0,
            1,
            BUF_SIZE - 1,
            BUF_SIZE,
            BUF_SIZE + 1,
            BUF_SIZE * BUFFERS,
            BUF_SIZE * (BUFFERS + 2) + 12345,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &data).expect("write");
            let mut last = 0;
            let sum = sha256_file(&path, None, None, None, |done| last = done).expect("hash");
            assert_eq!(
                sum,
                format!("sha256:{}", hex(&Sha256::digest(&data))),
                "{len}"
            );
            assert_eq!(last, len as u64);
        }
    }

    /// Cancelling while the reader is ahead ends both sides without a deadlock.
    #[test]
    fn cancelled_midway() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        std::fs::write(&path, vec![1u8; BUF_SIZE * (BUFFERS * 3)]).expect("write");
        let token = CancelToken::new();
        let result = sha256_file(&path, None, Some(&token), None, |_| token.cancel());
        assert!(matches!(result, Err(ChecksumError::Cancelled { .. })));
    }

    /// A limit stops the read: what a device or a growing file gives beyond it is not hashed.
    #[test]
    fn reads_at_most_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcdef").expect("write");
        let sum = sha256_file(&path, Some(3), None, None, |_| {}).expect("hash");
        assert_eq!(
            sum,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(
            sha256_file(Path::new("/dev/zero"), None, None, None, |_| {}).is_err(),
            "a character device is hashed"
        );
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            sha256_file(&dir.path().join("nope"), None, None, None, |_| {}),
            Err(ChecksumError::Io { .. })
        ));
    }

    #[test]
    fn cancelled_before_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x");
        std::fs::write(&path, b"x").expect("write");
        let token = CancelToken::new();
        token.cancel();
        assert!(matches!(
            sha256_file(&path, None, Some(&token), None, |_| {}),
            Err(ChecksumError::Cancelled { .. })
        ));
    }
}
