//! The qemu-img interface: the commands we build and what their output means.
//!
//! This module builds [`Command`]s and interprets their results (and reads a file's tail or its
//! neighbours where qemu-img's probe is not enough: a fixed VHD's footer, a flat VMDK's
//! descriptor); running them is `exec`'s job.
//! Every command passes `-f` explicitly once the format is known: probing is done once, on
//! purpose, by [`QemuImg::probe_cmd`], because a fixed VHD is probed as `raw` and would otherwise
//! be copied with its 512-byte footer.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use std::time::Duration;

use crate::exec::Command;
use crate::tools::Tool;

/// Overrides the time limit of the short qemu-img commands (`info`, `create`), in seconds.
pub const TIMEOUT_ENV: &str = "HYPER2KVM_QEMU_IMG_TIMEOUT";
/// Overrides the time limit of `qemu-img check`, in seconds.
pub const CHECK_TIMEOUT_ENV: &str = "HYPER2KVM_QEMU_IMG_CHECK_TIMEOUT";
/// Overrides how long `convert` and `compare` may go without progress, in seconds.
pub const STALL_ENV: &str = "HYPER2KVM_QEMU_IMG_STALL_SECONDS";

/// How long each kind of qemu-img step may take. `info` and `create` read or write a few
/// metadata blocks: a fixed limit. `check` walks all of an image's metadata, which on a large
/// qcow2 can take minutes: a longer fixed one. `convert` and `compare` read whole disks and
/// legitimately run for hours, so no wall clock bounds them; they are stopped when they make no
/// progress (no `-p` progress step, and for convert no change in the output file's size,
/// allocation or modification time) for the stall window. qemu-img prints a progress step per
/// 1 % (convert) or 2 % (compare) of the disk; the window leaves room for a 2 % step of a
/// multi-terabyte disk read at a few hundred MB/s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub check_timeout: Duration,
    pub stall: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            check_timeout: Duration::from_secs(3600),
            stall: Duration::from_secs(600),
        }
    }
}

impl Limits {
    /// The defaults, except where [`TIMEOUT_ENV`], [`CHECK_TIMEOUT_ENV`] or [`STALL_ENV`] give
    /// a whole number of seconds above zero.
    pub fn from_env() -> Self {
        let seconds = |var: &str| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&s| s > 0)
                .map(Duration::from_secs)
        };
        let d = Self::default();
        Self {
            timeout: seconds(TIMEOUT_ENV).unwrap_or(d.timeout),
            check_timeout: seconds(CHECK_TIMEOUT_ENV).unwrap_or(d.check_timeout),
            stall: seconds(STALL_ENV).unwrap_or(d.stall),
        }
    }

    /// What a qemu-img step stopped at its limit says about that limit (for its record).
    pub fn timed_out_note(&self, argv: &[String]) -> String {
        let (limit, var) = match argv.get(1).map(String::as_str) {
            Some("check") => (self.check_timeout, CHECK_TIMEOUT_ENV),
            Some("convert" | "compare") => {
                return format!(
                    "qemu-img made no progress for {} s (no progress step on stdout, no change \
                     to its output) and was killed; {STALL_ENV} sets the window",
                    self.stall.as_secs()
                );
            }
            _ => (self.timeout, TIMEOUT_ENV),
        };
        format!(
            "qemu-img did not finish within {} s and was killed; {var} sets the limit",
            limit.as_secs()
        )
    }
}

/// The compression qemu-img applies to qcow2 clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Zlib,
}

/// Everything that decides one `qemu-img convert` run.
#[derive(Clone, Debug)]
pub struct ConvertSpec<'a> {
    pub source: Image<'a>,
    pub source_driver: &'a str,
    pub dest: &'a Path,
    pub output_format: &'a str,
    pub compression: Option<Compression>,
    /// `-m 8 -W`: parallel coroutines with out-of-order writes (measured faster for qcow2/raw).
    pub parallel_writes: bool,
    /// `-o preallocation=<mode>` (off, metadata, falloc, full).
    pub preallocation: Option<&'a str>,
    /// Read the source through io_uring (see [`Aio`]).
    pub source_aio: Aio,
    /// Write the target through io_uring (see [`Aio::for_target`]). The target is then created
    /// first ([`QemuImg::create_target_cmd`]) and filled by `convert -n --target-is-zero`, the
    /// only way qemu-img takes options for the target's file node.
    pub target_aio: Aio,
    /// The source's virtual size, which a target created beforehand gets; `None` when it is not
    /// known yet (a dry run reads nothing).
    pub virtual_size: Option<u64>,
}

/// How qemu-img reads an image file.
///
/// qemu's default (`aio=threads`) hands every request, 64 KiB for a VMDK grain or a qcow2
/// cluster, to a worker thread and back; on a hot page cache that hand-off costs more than the
/// copy. `aio=io_uring` submits them in batches from one thread: measured here, convert spends
/// about half the system time and `compare` runs two to three times faster.
///
/// qemu 10.0's io_uring path never finishes a read that ends in a partial 512-byte sector at the
/// end of the file (it resubmits the short read forever), so [`Aio::for_file`] uses io_uring
/// only for files whose size is a multiple of 512 bytes, which every well-formed image is.
/// Whether io_uring works at all (this qemu-img's build; a kernel that allows it, which a sysctl
/// or a seccomp filter may not) is learnt from the format probe, which tries it first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Aio {
    /// qemu's default: `aio=threads`, and the plain file name on the command line.
    #[default]
    Threads,
    /// `json:{"file":{"driver":"file","filename":...,"aio":"io_uring"}}` with `-f` as before.
    IoUring,
}

impl Aio {
    /// io_uring when this qemu-img can use it (`io_uring_usable`) and the file's size allows it.
    pub fn for_file(io_uring_usable: bool, path: &Path) -> Self {
        let aligned = std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() % 512 == 0);
        if io_uring_usable && aligned && path.to_str().is_some() {
            Aio::IoUring
        } else {
            Aio::Threads
        }
    }
}

impl Aio {
    /// io_uring for a conversion's target when this qemu-img can use it and nothing can leave a
    /// partial sector at the target's end: an uncompressed qcow2 or raw image of a whole number
    /// of sectors. (Compressed clusters end anywhere, so a compressed image's length need not be
    /// a multiple of 512.) Measured here, it saves 5 to 20 % of an uncompressed conversion: with
    /// `-m 8 -W` and `aio=threads`, qemu's worker threads queue on the target inode's lock.
    pub fn for_target(
        io_uring_usable: bool,
        output_format: &str,
        compressed: bool,
        virtual_size: Option<u64>,
        path: &Path,
    ) -> Self {
        let whole_sectors = virtual_size.is_none_or(|size| size % 512 == 0);
        if io_uring_usable
            && !compressed
            && matches!(output_format, "qcow2" | "raw")
            && whole_sectors
            && path.to_str().is_some()
        {
            Aio::IoUring
        } else {
            Aio::Threads
        }
    }
}

/// A located qemu-img binary.
#[derive(Clone, Debug)]
pub struct QemuImg {
    path: PathBuf,
    limits: Limits,
}

impl QemuImg {
    pub fn locate() -> Result<Self, crate::exec::ExecError> {
        Ok(Self {
            path: Tool::QemuImg.locate()?,
            limits: Limits::from_env(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A qemu-img command with no time limit of its own (convert, compare: see [`Limits`]).
    fn cmd(&self) -> Command {
        Command::new(&self.path)
    }

    /// A short qemu-img command, with the fixed limit.
    fn short(&self) -> Command {
        self.cmd().timeout(self.limits.timeout)
    }

    /// `qemu-img info` without `-f`: the one place the format is probed. With
    /// [`Aio::IoUring`] it also tells whether io_uring can be used at all, at no extra cost.
    pub fn probe_cmd<'i>(&self, image: impl Into<Image<'i>>, aio: Aio) -> Command {
        self.short()
            .args(["info", "--output=json"])
            .arg(image_spec(image.into(), aio))
    }

    /// `qemu-img info -f <driver>`: size and backing file of an image whose format is known.
    pub fn info_cmd<'i>(&self, image: impl Into<Image<'i>>, driver: &str) -> Command {
        self.short()
            .args(["info", "--output=json", "-f", driver])
            .arg(image_arg(image.into()))
    }

    /// `qemu-img info --backing-chain -f <driver>`: the image and every backing file qemu-img
    /// opens under it, top first (see [`ImageInfo::parse_chain`]). The backing files' formats
    /// are what the images record (a VMDK delta's parent is a VMDK).
    pub fn chain_cmd<'i>(&self, image: impl Into<Image<'i>>, driver: &str) -> Command {
        self.short()
            .args(["info", "--backing-chain", "--output=json", "-f", driver])
            .arg(image_arg(image.into()))
    }

    /// `qemu-img measure -f <driver> -O <target> [-o <options>]`: how many bytes writing the
    /// image as `target` takes (see [`Measure`]). Read-only, and quick: it reads allocation
    /// metadata, not data.
    pub fn measure_cmd<'i>(
        &self,
        image: impl Into<Image<'i>>,
        driver: &str,
        target: &str,
        options: Option<&str>,
    ) -> Command {
        let mut cmd = self
            .short()
            .args(["measure", "--output=json", "-f", driver, "-O", target]);
        if let Some(o) = options {
            cmd = cmd.args(["-o", o]);
        }
        cmd.arg(image_arg(image.into()))
    }

    /// `qemu-img check -f <driver>`: structural consistency (formats that support it).
    pub fn check_cmd<'i>(&self, image: impl Into<Image<'i>>, driver: &str) -> Command {
        self.cmd()
            .timeout(self.limits.check_timeout)
            .args(["check", "--output=json", "-f", driver])
            .arg(image_arg(image.into()))
    }

    pub fn convert_cmd(&self, spec: &ConvertSpec<'_>) -> Command {
        let created = spec.target_aio == Aio::IoUring;
        let mut cmd = self.cmd().args(["convert", "-p"]);
        if created {
            // The target exists (create_target_cmd) and reads as zeros: nothing to zero again.
            cmd = cmd.args(["-n", "--target-is-zero"]);
        }
        cmd = cmd.args(["-f", spec.source_driver, "-O", spec.output_format]);
        if spec.parallel_writes {
            cmd = cmd.args(["-m", "8", "-W"]);
        }
        match spec.compression {
            Some(Compression::Zstd | Compression::Zlib) => cmd = cmd.arg("-c"),
            None => {}
        }
        let options = create_options(spec);
        if !created && !options.is_empty() {
            cmd = cmd.args(["-o", &options.join(",")]);
        }
        cmd.arg(image_spec(spec.source, spec.source_aio))
            .arg(image_spec(spec.dest.into(), spec.target_aio))
    }

    /// `qemu-img create` of the target, for a conversion that writes it through io_uring;
    /// `None` when convert creates the target itself.
    pub fn create_target_cmd(&self, spec: &ConvertSpec<'_>) -> Option<Command> {
        if spec.target_aio != Aio::IoUring {
            return None;
        }
        let mut cmd = self
            .short()
            .args(["create", "-q", "-f", spec.output_format]);
        let options = create_options(spec);
        if !options.is_empty() {
            cmd = cmd.args(["-o", &options.join(",")]);
        }
        let size = spec
            .virtual_size
            .map_or_else(|| "<virtual-size>".to_owned(), |size| size.to_string());
        Some(cmd.arg(image_arg(spec.dest.into())).arg(size))
    }

    /// `qemu-img compare`: exit 0 when the guest-visible content is identical, 1 when it differs.
    pub fn compare_cmd(
        &self,
        (a, a_driver, a_aio): (Image<'_>, &str, Aio),
        (b, b_driver, b_aio): (Image<'_>, &str, Aio),
    ) -> Command {
        self.cmd()
            .args(["compare", "-p", "-f", a_driver, "-F", b_driver])
            .arg(image_spec(a, a_aio))
            .arg(image_spec(b, b_aio))
    }

    /// `qemu-img compare` of one byte range of two images' guest-visible content: each image is
    /// wrapped in a `raw` node with `offset` (and `size`, except for the last range, which runs
    /// to each image's end so a size mismatch is still found). Several ranges run as separate
    /// processes use several cores; qemu-img compare itself uses one. Offsets in its output
    /// are relative to `offset`. `None` when a path is not UTF-8 (it cannot go into JSON).
    pub fn compare_range_cmd(
        &self,
        (a, a_driver, a_aio): (Image<'_>, &str, Aio),
        (b, b_driver, b_aio): (Image<'_>, &str, Aio),
        offset: u64,
        size: Option<u64>,
    ) -> Option<Command> {
        Some(
            self.cmd()
                .args(["compare", "-p", "-f", "raw", "-F", "raw"])
                .arg(range_spec(a, a_driver, a_aio, offset, size)?)
                .arg(range_spec(b, b_driver, b_aio, offset, size)?),
        )
    }

    /// A qcow2 overlay whose reads fall through to `backing` (opened read-only, never written).
    pub fn overlay_cmd<'i>(
        &self,
        overlay: &Path,
        backing: impl Into<Image<'i>>,
        backing_driver: &str,
    ) -> Command {
        self.short()
            .args(["create", "-q", "-f", "qcow2", "-F", backing_driver, "-b"])
            .arg(image_arg(backing.into()))
            .arg(overlay.as_os_str())
    }

    /// Creates a throw-away zstd qcow2 to learn whether this qemu-img build has zstd.
    pub fn zstd_probe_cmd(&self, scratch: &Path) -> Command {
        self.short()
            .args(["create", "-q", "-f", "qcow2", "-o", "compression_type=zstd"])
            .arg(scratch.as_os_str())
            .arg("1M")
    }
}

/// qemu-img reads `proto:...` as a protocol spec when `:` comes before any `/`; the pipeline
/// passes only absolute paths, so a `:` in a file name is never taken for one.
/// Creation options, which qemu-img takes together in one `-o` list.
fn create_options(spec: &ConvertSpec<'_>) -> Vec<String> {
    let mut options = Vec::new();
    if spec.compression == Some(Compression::Zstd) {
        options.push("compression_type=zstd".to_owned());
    }
    if let Some(mode) = spec.preallocation {
        options.push(format!("preallocation={mode}"));
    }
    options
}

/// An image qemu-img opens: a file, or a byte range of one (a member of an OVA's tar archive,
/// read in place through the raw driver's `offset` and `size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image<'a> {
    pub path: &'a Path,
    /// `(offset, size)` of the image's bytes in `path`.
    pub range: Option<(u64, u64)>,
}

impl<'a> From<&'a Path> for Image<'a> {
    fn from(path: &'a Path) -> Self {
        Image { path, range: None }
    }
}

impl<'a> From<&'a PathBuf> for Image<'a> {
    fn from(path: &'a PathBuf) -> Self {
        Image {
            path: path.as_path(),
            range: None,
        }
    }
}

impl std::fmt::Display for Image<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.range {
            None => write!(f, "{}", self.path.display()),
            Some((offset, size)) => write!(
                f,
                "{} (bytes {offset}..{})",
                self.path.display(),
                offset + size
            ),
        }
    }
}

/// The protocol node of an image, as qemu's JSON options: the file (with io_uring when asked),
/// wrapped in a `raw` node with `offset` and `size` for a range.
fn protocol_node(image: Image<'_>, aio: Aio) -> Value {
    let mut file = serde_json::json!({
        "driver": "file",
        "filename": image.path.to_string_lossy(),
    });
    if aio == Aio::IoUring {
        file["aio"] = Value::from("io_uring");
    }
    match image.range {
        None => file,
        Some((offset, size)) => serde_json::json!({
            "driver": "raw", "offset": offset, "size": size, "file": file,
        }),
    }
}

/// An image argument read with qemu's default I/O: the plain name for a whole file.
fn image_arg(image: Image<'_>) -> OsString {
    image_spec(image, Aio::Threads)
}

/// An image argument read with the given [`Aio`]. The `json:` form only sets the protocol
/// node's options; the format still comes from `-f`, so nothing is probed.
fn image_spec(image: Image<'_>, aio: Aio) -> OsString {
    let plain = image.range.is_none() && (aio == Aio::Threads || image.path.to_str().is_none());
    if plain {
        return image.path.as_os_str().to_owned();
    }
    let spec = serde_json::json!({ "file": protocol_node(image, aio) });
    OsString::from(format!("json:{spec}"))
}

/// `json:{"driver":"raw","offset":..,"size":..,"file":{"driver":<format>,"file":{...}}}`: the
/// guest-visible bytes `offset..offset+size` of an image.
fn range_spec(
    image: Image<'_>,
    driver: &str,
    aio: Aio,
    offset: u64,
    size: Option<u64>,
) -> Option<OsString> {
    image.path.to_str()?;
    let file = protocol_node(image, aio);
    let mut spec = serde_json::json!({
        "driver": "raw",
        "offset": offset,
        "file": {"driver": driver, "file": file},
    });
    if let Some(size) = size {
        spec["size"] = Value::from(size);
    }
    Some(OsString::from(format!("json:{spec}")))
}

/// The offset in `qemu-img compare`'s "Content mismatch at offset N!".
pub fn mismatch_offset(stdout: &str) -> Option<u64> {
    let rest = stdout.split("mismatch at offset ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The parts of `qemu-img info --output=json` we use.
#[derive(Clone, Debug, Deserialize)]
pub struct ImageInfo {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "actual-size", default)]
    pub actual_size: Option<u64>,
    /// The file qemu-img opened, as it names it (relative to qemu-img's working directory
    /// when the image was named so; a backing file's is resolved against its child's).
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(rename = "backing-filename", default)]
    pub backing_filename: Option<String>,
    #[serde(rename = "format-specific", default)]
    pub format_specific: Option<Value>,
    /// qcow2 with LUKS encryption, or a LUKS image: unreadable without its secret.
    #[serde(default)]
    pub encrypted: bool,
}

/// The part of `qemu-img measure --output=json` we use: `required`, the bytes the new image
/// takes (its metadata and the source's allocated data; `fully-allocated` would count every
/// byte of the virtual size).
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Measure {
    pub required: u64,
}

impl Measure {
    pub fn parse(stdout: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(stdout)
            .map_err(|e| format!("unreadable qemu-img measure output: {e}"))
    }
}

/// What to do with an image that has a backing file: flatten the chain from its top, never
/// use the base (which lacks every write made in the overlays).
pub fn flatten_advice(top: &Path, driver: &str) -> String {
    format!(
        "hyper2kvm converts standalone images only (a source is pinned by its own file, and a \
         backing file is another). Flatten the chain from its top into one image, which reads \
         through every backing file and keeps the overlay's writes: qemu-img convert -f {driver} \
         -O qcow2 {} flat.qcow2, then point the disk at flat.qcow2. Do not use the chain's base \
         instead: it lacks every write made in the overlay",
        top.display()
    )
}

impl ImageInfo {
    pub fn parse(stdout: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(stdout).map_err(|e| format!("unreadable qemu-img info output: {e}"))
    }

    /// `qemu-img info --backing-chain --output=json`: one entry per image, top first.
    pub fn parse_chain(stdout: &[u8]) -> Result<Vec<Self>, String> {
        let chain: Vec<Self> = serde_json::from_slice(stdout)
            .map_err(|e| format!("unreadable qemu-img info --backing-chain output: {e}"))?;
        if chain.is_empty() {
            return Err("qemu-img info --backing-chain listed no image".to_owned());
        }
        Ok(chain)
    }

    /// The VMDK create type (`streamOptimized`, `monolithicFlat`, ...), when this is a VMDK.
    pub fn vmdk_create_type(&self) -> Option<&str> {
        self.format_specific
            .as_ref()?
            .get("data")?
            .get("create-type")?
            .as_str()
    }
}

/// The parts of `qemu-img check --output=json` we report.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct CheckSummary {
    #[serde(rename = "check-errors", default)]
    pub check_errors: u64,
    #[serde(default)]
    pub corruptions: u64,
    #[serde(default)]
    pub leaks: u64,
    #[serde(rename = "corruptions-fixed", default)]
    pub corruptions_fixed: u64,
}

/// What a `qemu-img check` exit code means (documented in qemu-img(1)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckVerdict {
    Clean,
    /// Leaked clusters waste space but lose no data.
    LeaksOnly,
    Corrupt,
    /// The check could not complete (truncated file, unreadable metadata).
    Failed,
    Unsupported,
}

impl CheckVerdict {
    pub fn from_exit_code(code: Option<i32>) -> Self {
        match code {
            Some(0) => CheckVerdict::Clean,
            Some(3) => CheckVerdict::LeaksOnly,
            Some(2) => CheckVerdict::Corrupt,
            Some(63) => CheckVerdict::Unsupported,
            _ => CheckVerdict::Failed,
        }
    }
}

/// Parses one piece of `qemu-img convert -p` output, `    (12.34/100%)`, into a fraction 0..=1.
pub fn parse_progress(piece: &str) -> Option<f64> {
    let inner = piece.trim().strip_prefix('(')?.strip_suffix("/100%)")?;
    let pct: f64 = inner.parse().ok()?;
    (0.0..=100.0).contains(&pct).then_some(pct / 100.0)
}

/// Whether a file carries a VHD footer (`conectix` cookie in its last 512 bytes): a fixed VHD,
/// which qemu-img probes as raw.
pub fn has_vhd_footer(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    // Opened as a source is: never blocking, and only a regular file or a block device.
    let Ok((mut file, _)) = crate::files::open_source(path, true) else {
        return false;
    };
    if file.seek(SeekFrom::End(-512)).is_err() {
        return false;
    }
    let mut cookie = [0u8; 8];
    file.read_exact(&mut cookie).is_ok() && &cookie == b"conectix"
}

/// For a VMDK flat extent `X-flat.vmdk`, the descriptor `X.vmdk` beside it, when it exists.
pub fn flat_vmdk_descriptor(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix("-flat.vmdk")?;
    let descriptor = path.with_file_name(format!("{stem}.vmdk"));
    descriptor.is_file().then_some(descriptor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_pieces() {
        assert_eq!(parse_progress("    (0.00/100%)"), Some(0.0));
        assert_eq!(parse_progress("(50.00/100%)"), Some(0.5));
        assert_eq!(parse_progress("    (100.00/100%)"), Some(1.0));
        assert_eq!(parse_progress("qemu-img: warning"), None);
        assert_eq!(parse_progress("(150.00/100%)"), None);
    }

    #[test]
    fn check_exit_codes() {
        assert_eq!(CheckVerdict::from_exit_code(Some(0)), CheckVerdict::Clean);
        assert_eq!(CheckVerdict::from_exit_code(Some(1)), CheckVerdict::Failed);
        assert_eq!(CheckVerdict::from_exit_code(Some(2)), CheckVerdict::Corrupt);
        assert_eq!(
            CheckVerdict::from_exit_code(Some(3)),
            CheckVerdict::LeaksOnly
        );
        assert_eq!(
            CheckVerdict::from_exit_code(Some(63)),
            CheckVerdict::Unsupported
        );
        assert_eq!(CheckVerdict::from_exit_code(None), CheckVerdict::Failed);
    }

    #[test]
    fn flat_extent_maps_to_descriptor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flat = dir.path().join("vm-flat.vmdk");
        std::fs::write(&flat, b"").expect("write");
        assert_eq!(flat_vmdk_descriptor(&flat), None);
        std::fs::write(dir.path().join("vm.vmdk"), b"").expect("write");
        assert_eq!(
            flat_vmdk_descriptor(&flat),
            Some(dir.path().join("vm.vmdk"))
        );
        assert_eq!(flat_vmdk_descriptor(&dir.path().join("vm.vmdk")), None);
    }

    #[test]
    fn convert_command_line() {
        let q = QemuImg {
            path: PathBuf::from("qemu-img"),
            limits: Limits::default(),
        };
        let cmd = q.convert_cmd(&ConvertSpec {
            source: Path::new("/src/a b.vmdk").into(),
            source_driver: "vmdk",
            dest: Path::new("/out/d0.qcow2.part"),
            output_format: "qcow2",
            compression: Some(Compression::Zstd),
            parallel_writes: true,
            preallocation: None,
            source_aio: Aio::Threads,
            target_aio: Aio::Threads,
            virtual_size: None,
        });
        assert_eq!(
            cmd.to_string(),
            "qemu-img convert -p -f vmdk -O qcow2 -m 8 -W -c -o compression_type=zstd \
             '/src/a b.vmdk' /out/d0.qcow2.part"
        );
        let cmd = q.convert_cmd(&ConvertSpec {
            source: Path::new("/src/a.raw").into(),
            source_driver: "raw",
            dest: Path::new("/out/d0.raw.part"),
            output_format: "raw",
            compression: None,
            parallel_writes: false,
            preallocation: Some("falloc"),
            source_aio: Aio::Threads,
            target_aio: Aio::Threads,
            virtual_size: None,
        });
        assert_eq!(
            cmd.to_string(),
            "qemu-img convert -p -f raw -O raw -o preallocation=falloc /src/a.raw /out/d0.raw.part"
        );
    }

    #[test]
    fn io_uring_target_is_created_first_then_filled() {
        let q = QemuImg {
            path: PathBuf::from("qemu-img"),
            limits: Limits::default(),
        };
        let spec = ConvertSpec {
            source: Path::new("/src/a.vmdk").into(),
            source_driver: "vmdk",
            dest: Path::new("/out/d 0.qcow2.part"),
            output_format: "qcow2",
            compression: None,
            parallel_writes: true,
            preallocation: Some("metadata"),
            source_aio: Aio::Threads,
            target_aio: Aio::IoUring,
            virtual_size: Some(20 << 30),
        };
        assert_eq!(
            q.create_target_cmd(&spec)
                .expect("created first")
                .to_string(),
            "qemu-img create -q -f qcow2 -o preallocation=metadata '/out/d 0.qcow2.part' \
             21474836480"
        );
        // The creation options went to create; convert only fills the target.
        assert_eq!(
            q.convert_cmd(&spec).to_string(),
            "qemu-img convert -p -n --target-is-zero -f vmdk -O qcow2 -m 8 -W /src/a.vmdk \
             'json:{\"file\":{\"driver\":\"file\",\"filename\":\"/out/d 0.qcow2.part\",\
             \"aio\":\"io_uring\"}}'"
        );
        let threads = ConvertSpec {
            target_aio: Aio::Threads,
            ..spec
        };
        assert!(q.create_target_cmd(&threads).is_none());
    }

    #[test]
    fn io_uring_target_only_where_no_partial_sector_can_end_it() {
        let out = Path::new("/out/d0.part");
        let uring = |usable, fmt, compressed, size| {
            Aio::for_target(usable, fmt, compressed, size, out) == Aio::IoUring
        };
        assert!(uring(true, "qcow2", false, Some(1 << 30)));
        assert!(uring(true, "raw", false, None));
        assert!(!uring(false, "qcow2", false, Some(1 << 30)));
        assert!(!uring(true, "qcow2", true, Some(1 << 30)));
        assert!(!uring(true, "vdi", false, Some(1 << 30)));
        assert!(!uring(true, "raw", false, Some(1000)));
    }

    #[test]
    fn io_uring_source_keeps_the_format_explicit() {
        let q = QemuImg {
            path: PathBuf::from("qemu-img"),
            limits: Limits::default(),
        };
        let cmd = q.convert_cmd(&ConvertSpec {
            source: Path::new("/src/a \"b\".vhdx").into(),
            source_driver: "vhdx",
            dest: Path::new("/out/d0.qcow2.part"),
            output_format: "qcow2",
            compression: None,
            parallel_writes: true,
            preallocation: None,
            source_aio: Aio::IoUring,
            target_aio: Aio::Threads,
            virtual_size: None,
        });
        let argv = cmd.argv();
        assert_eq!(argv[2..5], ["-p", "-f", "vhdx"]);
        let spec = argv[argv.len() - 2]
            .strip_prefix("json:")
            .expect("json: spec");
        let value: Value = serde_json::from_str(spec).expect("valid JSON");
        assert_eq!(
            value,
            serde_json::json!({"file": {"driver": "file", "filename": "/src/a \"b\".vhdx",
                "aio": "io_uring"}})
        );
    }

    #[test]
    fn an_archive_member_is_read_through_a_raw_window_of_the_archive() {
        let q = QemuImg {
            path: PathBuf::from("qemu-img"),
            limits: Limits::default(),
        };
        let member = Image {
            path: Path::new("/exports/web01.ova"),
            range: Some((1536, 4096)),
        };
        let window = serde_json::json!({"driver": "raw", "offset": 1536, "size": 4096,
            "file": {"driver": "file", "filename": "/exports/web01.ova"}});
        let spec = |arg: &str| -> Value {
            serde_json::from_str(arg.strip_prefix("json:").expect("json:")).expect("JSON")
        };
        let info = q.info_cmd(member, "vmdk").argv();
        assert_eq!(info[1..5], ["info", "--output=json", "-f", "vmdk"]);
        assert_eq!(
            spec(&info[5]),
            serde_json::json!({ "file": window.clone() })
        );
        // The probe (no -f) reads the window's content, not the archive's.
        let probe = q.probe_cmd(member, Aio::Threads).argv();
        assert_eq!(
            spec(&probe[3]),
            serde_json::json!({ "file": window.clone() })
        );
        let overlay = q
            .overlay_cmd(Path::new("/w/d.qcow2"), member, "vmdk")
            .argv();
        assert_eq!(
            spec(&overlay[8]),
            serde_json::json!({ "file": window.clone() })
        );
        assert_eq!(overlay[9], "/w/d.qcow2");
        let ranged = q
            .compare_range_cmd(
                (member, "vmdk", Aio::Threads),
                (Path::new("/out/d.qcow2").into(), "qcow2", Aio::Threads),
                0,
                Some(512),
            )
            .expect("UTF-8 paths")
            .argv();
        assert_eq!(
            spec(&ranged[7]),
            serde_json::json!({"driver": "raw", "offset": 0, "size": 512,
                "file": {"driver": "vmdk", "file": window}})
        );
        assert_eq!(member.to_string(), "/exports/web01.ova (bytes 1536..5632)");
    }

    #[test]
    fn compare_ranges_wrap_each_image_in_a_raw_window() {
        let q = QemuImg {
            path: PathBuf::from("qemu-img"),
            limits: Limits::default(),
        };
        let cmd = q
            .compare_range_cmd(
                (Path::new("/src/a.vmdk").into(), "vmdk", Aio::IoUring),
                (Path::new("/out/a.qcow2").into(), "qcow2", Aio::Threads),
                1 << 30,
                Some(1 << 29),
            )
            .expect("UTF-8 paths");
        let argv = cmd.argv();
        assert_eq!(argv[1..7], ["compare", "-p", "-f", "raw", "-F", "raw"]);
        let a: Value =
            serde_json::from_str(argv[7].strip_prefix("json:").expect("json")).expect("JSON");
        assert_eq!(
            a,
            serde_json::json!({"driver": "raw", "offset": 1u64 << 30, "size": 1u64 << 29,
                "file": {"driver": "vmdk", "file": {"driver": "file", "filename": "/src/a.vmdk",
                "aio": "io_uring"}}})
        );
        let b: Value =
            serde_json::from_str(argv[8].strip_prefix("json:").expect("json")).expect("JSON");
        assert_eq!(b["file"]["driver"], "qcow2");
        assert!(b["file"]["file"].get("aio").is_none());
        let last = q
            .compare_range_cmd(
                (Path::new("/a").into(), "raw", Aio::Threads),
                (Path::new("/b").into(), "raw", Aio::Threads),
                7,
                None,
            )
            .expect("UTF-8 paths");
        assert!(!last.argv()[6].contains("size"));
    }

    #[test]
    fn mismatch_offsets() {
        assert_eq!(
            mismatch_offset("Content mismatch at offset 1048576!\n"),
            Some(1_048_576)
        );
        assert_eq!(mismatch_offset("Images are identical.\n"), None);
    }

    #[test]
    fn io_uring_only_for_sector_multiples() {
        let dir = tempfile::tempdir().expect("tempdir");
        let even = dir.path().join("even");
        let odd = dir.path().join("odd");
        std::fs::write(&even, vec![0u8; 1024]).expect("write");
        std::fs::write(&odd, vec![0u8; 1000]).expect("write");
        assert_eq!(Aio::for_file(true, &even), Aio::IoUring);
        assert_eq!(Aio::for_file(false, &even), Aio::Threads);
        assert_eq!(Aio::for_file(true, &odd), Aio::Threads);
        assert_eq!(
            Aio::for_file(true, &dir.path().join("missing")),
            Aio::Threads
        );
        assert_eq!(Aio::for_file(true, dir.path()), Aio::Threads);
    }
}
