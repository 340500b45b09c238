//! convert's plan: the output format (`storage_mapping.format_override` wins over
//! `output.format`), compression (zstd when this qemu-img has it, else zlib; qcow2 only),
//! parallel writes, and preallocation where qemu-img can honour it.

use crate::diag::Problems;
use crate::exec::{self, Watch};
use crate::manifest::{Manifest, OutputFormat, Preallocation};
use crate::tools::qemu_img::{Compression, QemuImg};

#[derive(Clone, Debug)]
pub struct ConvertPlan {
    pub format: OutputFormat,
    pub compression: Option<Compression>,
    pub parallel_writes: bool,
    /// Check the source with `qemu-img check` first (when inspect did not).
    pub check_source: bool,
    /// `storage_mapping.preallocate`, passed to qemu-img as `-o preallocation=`.
    pub preallocation: Option<Preallocation>,
}

/// What `qemu-img measure` is asked, to learn the bytes an output takes (see the free-space
/// check in the pipeline): `-O <target> [-o <options>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeasureTarget {
    pub format: &'static str,
    pub options: Option<String>,
}

impl ConvertPlan {
    /// qemu-img measures qcow2 and raw only, and its raw answer is the whole virtual size,
    /// while convert writes raw output sparse (zeros are skipped). So: qcow2 is measured as
    /// itself, with its preallocation; raw without preallocation as qcow2 (the source's
    /// allocated data plus qcow2's small metadata, a bound on what the sparse file takes); raw
    /// with preallocation as raw (all of it); vdi, which allocates in 1 MiB blocks, as qcow2
    /// with 1 MiB clusters. Compression is left out: the measure is then an upper bound.
    pub fn measure_target(&self) -> MeasureTarget {
        let (format, options) = match (self.format, self.preallocation) {
            (OutputFormat::Qcow2, None) => ("qcow2", None),
            (OutputFormat::Qcow2, Some(mode)) => {
                ("qcow2", Some(format!("preallocation={}", mode.name())))
            }
            (OutputFormat::Raw, None) => ("qcow2", None),
            (OutputFormat::Raw, Some(_)) => ("raw", None),
            (OutputFormat::Vdi, _) => ("qcow2", Some("cluster_size=1M".to_owned())),
        };
        MeasureTarget { format, options }
    }
}

/// The format outputs are written in.
pub(super) fn output_format(m: &Manifest, notes: &mut Vec<String>) -> OutputFormat {
    let format = m.storage_mapping.format_override.unwrap_or(m.output.format);
    if m.pipeline.convert.enabled && format != m.output.format {
        notes.push(format!(
            "storage_mapping.format_override writes {format} instead of output.format {}",
            m.output.format
        ));
    }
    format
}

/// `storage_mapping.preallocate`, refused where qemu-img cannot honour it.
pub(super) fn preallocation(
    m: &Manifest,
    converting: bool,
    format: OutputFormat,
    problems: &mut Problems,
) -> Option<Preallocation> {
    let preallocation = m.storage_mapping.preallocation();
    if let (true, Some(mode)) = (converting, preallocation) {
        let refused = match (format, mode) {
            _ if m.pipeline.convert.compress && format == OutputFormat::Qcow2 => Some(
                "qemu-img cannot compress and preallocate at once; turn off \
                 pipeline.convert.compress or storage_mapping.preallocate"
                    .to_owned(),
            ),
            (OutputFormat::Vdi, _) => Some(
                "qemu-img ignores preallocation for vdi output; remove storage_mapping.preallocate \
                 or write qcow2 or raw"
                    .to_owned(),
            ),
            (OutputFormat::Raw, Preallocation::Metadata) => Some(
                "raw output has no metadata to preallocate; use falloc or full".to_owned(),
            ),
            _ => None,
        };
        if let Some(why) = refused {
            problems.push(
                "storage_mapping.preallocate",
                format!("storage_mapping.preallocate {}: {why}", mode.name()),
            );
        }
    }
    preallocation
}

pub(super) fn plan(
    m: &Manifest,
    format: OutputFormat,
    preallocation: Option<Preallocation>,
    dry_run: bool,
    qemu_img: &QemuImg,
    notes: &mut Vec<String>,
) -> ConvertPlan {
    let c = &m.pipeline.convert;
    let compression = match (c.compress, format) {
        (true, OutputFormat::Qcow2) => {
            // A dry run touches nothing, not even a scratch file for the probe.
            let zstd = dry_run || zstd_supported(qemu_img);
            if !zstd {
                notes.push(
                    "this qemu-img has no zstd support; compressing with zlib (several \
                     times slower)"
                        .to_owned(),
                );
            }
            if c.compress_level != 6 {
                notes.push(format!(
                    "compress_level {} is not adjustable through qemu-img; qcow2 uses its \
                     codec's built-in level",
                    c.compress_level
                ));
            }
            Some(if zstd {
                Compression::Zstd
            } else {
                Compression::Zlib
            })
        }
        (true, other) => {
            notes.push(format!(
                "pipeline.convert.compress applies to qcow2 only; {other} output is written \
                 uncompressed"
            ));
            None
        }
        (false, _) => None,
    };
    ConvertPlan {
        format,
        compression,
        parallel_writes: matches!(format, OutputFormat::Qcow2 | OutputFormat::Raw),
        check_source: c.check_image_integrity && !m.pipeline.inspect.enabled,
        preallocation,
    }
}

fn zstd_supported(qemu_img: &QemuImg) -> bool {
    let Ok(scratch) = tempfile::tempdir() else {
        return false;
    };
    let cmd = qemu_img.zstd_probe_cmd(&scratch.path().join("probe.qcow2"));
    exec::run(&cmd, Watch::default()).is_ok_and(|o| o.record.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(format: OutputFormat, preallocation: Option<Preallocation>) -> ConvertPlan {
        ConvertPlan {
            format,
            compression: None,
            parallel_writes: true,
            check_source: false,
            preallocation,
        }
    }

    #[test]
    fn measure_asks_for_what_convert_writes() {
        let target = |f, p| {
            let t = plan(f, p).measure_target();
            (t.format, t.options)
        };
        assert_eq!(target(OutputFormat::Qcow2, None), ("qcow2", None));
        assert_eq!(
            target(OutputFormat::Qcow2, Some(Preallocation::Full)),
            ("qcow2", Some("preallocation=full".to_owned()))
        );
        // Sparse raw output takes the data, not the virtual size qemu-img's raw answer is.
        assert_eq!(target(OutputFormat::Raw, None), ("qcow2", None));
        assert_eq!(
            target(OutputFormat::Raw, Some(Preallocation::Falloc)),
            ("raw", None)
        );
        assert_eq!(
            target(OutputFormat::Vdi, None),
            ("qcow2", Some("cluster_size=1M".to_owned()))
        );
    }
}
