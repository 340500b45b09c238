//! `output` and `options`: where converted disks and the report go, and run options.
//!
//! Output names are decided by the planner (`<disk id>.<format>` in the output directory); the
//! rules for `output.filename` are here: it is one plain file name inside the output directory
//! (no `/`, not `.` or `..`, not a `.part` name), and it needs a manifest with one disk. That
//! no output coincides with the report, the domain XML or another output is checked when
//! planning, where every path is known.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::schema::{Field, Kind, f};
use crate::diag::Problems;
use crate::spelling::spelled_enum;

spelled_enum! {
    /// The output image format, which is also the output file's extension.
    #[derive(Default)]
    pub enum OutputFormat {
        #[default]
        Qcow2 = "qcow2",
        Raw = "raw",
        Vdi = "vdi",
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Output {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    pub format: OutputFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    pub dry_run: bool,
    pub verbose: u8,
    pub report: ReportOptions,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dry_run: false,
            verbose: 1,
            report: ReportOptions::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportOptions {
    pub enabled: bool,
    pub path: String,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "report.json".to_owned(),
        }
    }
}

/// The `output` section.
pub const OUTPUT: &[Field] = &[
    f("directory", Kind::Str),
    f("format", Kind::Enum(OutputFormat::NAMES)),
    f("filename", Kind::Str),
];
const REPORT: &[Field] = &[f("enabled", Kind::Bool), f("path", Kind::RequiredStr)];
/// The `options` section.
pub const OPTIONS: &[Field] = &[
    f("dry_run", Kind::Bool),
    f("verbose", Kind::Int { min: 0, max: 3 }),
    f("report", Kind::Object(REPORT)),
];

/// `output.filename` names one file inside the output directory: a single path component, not
/// a `.part` name (what a file being written is called), and only with one disk.
pub fn check_filename(doc: &Map<String, Value>, problems: &mut Problems) {
    if let Some(name) = doc
        .get("output")
        .and_then(|o| o.get("filename"))
        .and_then(Value::as_str)
        && let Err(why) = single_component(name)
    {
        problems.push(
            "output.filename",
            format!(
                "output.filename must be a plain file name inside the output directory, {why} \
                 (got: '{name}'); choose the directory with output.directory"
            ),
        );
    }
    if let Some(disks) = doc.get("disks").and_then(Value::as_array)
        && disks.len() > 1
        && doc
            .get("output")
            .and_then(|o| o.get("filename"))
            .is_some_and(|f| !f.is_null())
    {
        problems.push(
            "output.filename",
            "output.filename names one output file, but the manifest has several disks; \
             remove it (outputs are named <disk id>.<format>)",
        );
    }
}

/// Why `name` is not one plain file name, if it is not.
fn single_component(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.trim().is_empty() {
        Err("not empty")
    } else if name == "." || name == ".." {
        Err("not '.' or '..'")
    } else if name.contains('/') {
        Err("without '/'")
    } else if name.contains('\0') {
        Err("without NUL bytes")
    } else if name.ends_with(".part") {
        Err("not ending in .part (the name of a file still being written)")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems_of(v: Value) -> usize {
        let Value::Object(doc) = v else {
            panic!("test documents are objects")
        };
        let mut problems = Problems::default();
        check_filename(&doc, &mut problems);
        problems.len()
    }

    #[test]
    fn filename_needs_a_single_disk() {
        let one = json!([{"id": "a"}]);
        let two = json!([{"id": "a"}, {"id": "b"}]);
        assert_eq!(
            problems_of(json!({"disks": one, "output": {"filename": "x.img"}})),
            0
        );
        assert_eq!(
            problems_of(json!({"disks": two, "output": {"filename": null}})),
            0
        );
        assert_eq!(
            problems_of(json!({"disks": two, "output": {"filename": "x.img"}})),
            1
        );
    }

    #[test]
    fn filename_is_one_plain_name() {
        let one = json!([{"id": "a"}]);
        for bad in ["../x", "a/b", "/etc/passwd", "..", ".", "", "x.qcow2.part"] {
            assert_eq!(
                problems_of(json!({"disks": one, "output": {"filename": bad}})),
                1,
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            problems_of(json!({"disks": one, "output": {"filename": "..x.img"}})),
            0
        );
    }

    #[test]
    fn defaults() {
        let o: Options = serde_json::from_value(json!({})).expect("typed");
        assert_eq!(o.verbose, 1);
        assert!(o.report.enabled);
        assert_eq!(o.report.path, "report.json");
        let out: Output = serde_json::from_value(json!({"format": "vdi"})).expect("typed");
        assert_eq!(out.format, OutputFormat::Vdi);
    }
}
