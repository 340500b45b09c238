//! Files that appear whole or not at all.
//!
//! Reports, checkpoints and generated manifests are written to a temporary file in the target's
//! own directory (0600, in directories made 0700, whatever the umask), flushed to disk, and
//! renamed over the target, so a crash or a full disk never
//! leaves a half-written file under the final name. Disk images and backups, which other
//! processes write to a `.part` file, get the same flush through [`sync_data`] before their
//! rename, and [`Writeback`] starts that flush's disk writes while they are still being written.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("could not write {path}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Writes `bytes` to `path` atomically, creating the parent directory when it is missing.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::files::create_private_dir_all(dir).map_err(err)?;
    let private = || std::os::unix::fs::PermissionsExt::from_mode(crate::files::FILE_MODE);
    let mut tmp = tempfile::Builder::new()
        .prefix(".")
        .suffix(".tmp")
        .permissions(private())
        .tempfile_in(dir)
        .map_err(err)?;
    // The mode asked for at creation is narrowed by the umask; this one is not.
    tmp.as_file().set_permissions(private()).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `<output>.part`: the name an image or backup has while it is being written. Output file
/// names never end in `.part` themselves (`output.filename` is refused so), so a name that
/// does is always unfinished work (see [`is_part_name`]).
pub fn part_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// Whether a file name is that of an unfinished image or backup (a `.part` file).
pub fn is_part_name(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().ends_with(b".part")
}

/// The final name a `.part` file is written for: the inverse of [`part_path`], and the one place
/// that says what a `.part` name looks like to whoever recognises leftovers ([`crate::lock`]).
pub fn part_target(part: &Path) -> Option<PathBuf> {
    let name = part.file_name()?.to_str()?;
    let stem = name.strip_suffix(".part").filter(|s| !s.is_empty())?;
    Some(part.with_file_name(stem))
}

/// Flushes a finished `.part` file to disk and moves it to its final name; without `overwrite`,
/// never replaces a file that appeared in the meantime. The writers (qemu-img, cp) do not flush,
/// and without it a crash could leave a final name over data that never reached the disk.
pub fn publish(part: &Path, output: &Path, overwrite: bool) -> Result<(), String> {
    sync_data(part).map_err(|e| format!("could not flush {} to disk: {e}", part.display()))?;
    let result = if overwrite {
        std::fs::rename(part, output)
    } else {
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            part,
            nix::fcntl::AT_FDCWD,
            output,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(std::io::Error::from)
    };
    result.map_err(|e| {
        format!(
            "could not move {} to {}: {e}",
            part.display(),
            output.display()
        )
    })?;
    if let Some(dir) = output.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes a `.part` file a failed writer left (a missing one is fine).
pub fn remove_part(part: &Path) {
    if let Err(e) = std::fs::remove_file(part)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("could not remove {}: {e}", part.display());
    }
}

/// Serialises `value` as pretty JSON (2-space indent, trailing newline) and writes it atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), WriteError> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| WriteError {
        path: path.to_owned(),
        source: io::Error::other(e),
    })?;
    text.push(b'\n');
    write(path, &text)
}

/// Flushes a file's data, and the metadata needed to read it back, to disk (`fdatasync`).
pub fn sync_data(path: &Path) -> io::Result<()> {
    std::fs::File::open(path)?.sync_data()
}

/// How often [`Writeback`] hands a growing file's dirty pages to the disk.
const WRITEBACK_TICK: Duration = Duration::from_millis(50);

/// Starts the disk writes of a file while another process is still writing it.
///
/// A converted image is gigabytes of dirty page cache when qemu-img exits, and the kernel would
/// only start writing it back after half a minute; the flush before the rename would then write
/// all of it at once, after the convert. A helper thread instead asks for the writes of whatever
/// is dirty every 50 ms (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait for them),
/// so the disk works while the convert does and the final [`sync_data`] has little left to do.
/// The file may appear only after the start (qemu-img creates a compressed target itself).
/// Dropping the value stops the thread; it never fails the job: the final flush is what counts.
pub struct Writeback {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    kicked: Arc<AtomicU64>,
}

impl Writeback {
    pub fn start(path: PathBuf) -> Writeback {
        let (stop, stopped) = mpsc::channel::<()>();
        let kicked = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&kicked);
        let thread = std::thread::Builder::new()
            .name("writeback".into())
            .spawn(move || {
                let mut file = None;
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(WRITEBACK_TICK)
                {
                    if file.is_none() {
                        file = std::fs::File::open(&path).ok();
                    }
                    if let Some(f) = &file
                        && start_writes(f)
                    {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .ok();
        Writeback {
            stop: Some(stop),
            thread,
            kicked,
        }
    }

    /// How many times the thread has started the file's writes so far.
    pub fn kicked(&self) -> u64 {
        self.kicked.load(Ordering::Relaxed)
    }

    /// Stops the thread; returns how many times it started the file's writes.
    pub fn finish(mut self) -> u64 {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> u64 {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.kicked()
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Queues the writes of every dirty page of `file` without waiting for them.
#[allow(unsafe_code)]
fn start_writes(file: &std::fs::File) -> bool {
    // SAFETY: the descriptor belongs to `file`, which stays open for the whole call; the other
    // arguments are plain integers (offset 0 and length 0 mean the whole file). The call neither
    // reads nor writes our memory.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc != 0 {
        tracing::debug!("sync_file_range: {}", io::Error::last_os_error());
    }
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_refuses_to_replace_without_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("d0.qcow2.part");
        let out = dir.path().join("d0.qcow2");
        std::fs::write(&part, b"new").expect("write");
        std::fs::write(&out, b"old").expect("write");
        assert!(publish(&part, &out, false).is_err());
        assert_eq!(std::fs::read(&out).expect("read"), b"old");
        publish(&part, &out, true).expect("overwrite");
        assert_eq!(std::fs::read(&out).expect("read"), b"new");
        assert_eq!(part_path(&out), dir.path().join("d0.qcow2.part"));
        assert_eq!(part_target(&part_path(&out)), Some(out.clone()));
        assert_eq!(part_target(&out), None);
        assert_eq!(part_target(Path::new("/o/.part")), None);
    }

    #[test]
    fn replaces_whole_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/report.json");
        write(&path, b"one").expect("first");
        write(&path, b"two").expect("second");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["report.json"]);
    }

    #[test]
    fn writeback_waits_for_a_late_file_and_stops_when_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d0.qcow2.part");
        let writeback = Writeback::start(path.clone());
        std::thread::sleep(WRITEBACK_TICK * 2);
        let mut file = std::fs::File::create(&path).expect("create");
        for _ in 0..16 {
            file.write_all(&[7u8; 1 << 20]).expect("write");
        }
        // Generous: the test machine may be busy with guest appliances.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while writeback.kicked() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(WRITEBACK_TICK);
        }
        let started = std::time::Instant::now();
        let kicked = writeback.finish();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the thread did not stop"
        );
        assert!(
            kicked > 0,
            "the file that appeared late was never written back"
        );
        sync_data(&path).expect("flush");
        assert_eq!(std::fs::metadata(&path).expect("metadata").len(), 16 << 20);
        assert!(sync_data(&dir.path().join("missing")).is_err());
    }
}
