//! The JSON Schemas (draft 2020-12) of the files hyper2kvm reads and writes, embedded from
//! `schemas/` so that `--print-schema NAME` prints exactly the published file.
//!
//! The schemas are data, not code: validation of manifests stays in [`crate::manifest`], whose
//! field tables the schemas are checked against by unit tests there, and the reports are the
//! typed outcomes as serialized. `batch` and `batch-report` embed `manifest` and `report`
//! whole (`scripts/bundle-schemas.py` keeps the copies current; a test here fails while one is
//! stale), so each printed schema stands alone.

/// A schema `--print-schema` can print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Schema {
    /// Artifact Manifest v1 (`--manifest`).
    Manifest,
    /// Batch Manifest v1 (`--batch-manifest`).
    Batch,
    /// A VM's `report.json`.
    Report,
    /// `batch_report.json`.
    BatchReport,
    /// The `--progress json` event stream (one object per line).
    Events,
}

impl Schema {
    pub const ALL: &[Schema] = &[
        Schema::Manifest,
        Schema::Batch,
        Schema::Report,
        Schema::BatchReport,
        Schema::Events,
    ];

    /// The schema's file name in `schemas/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Schema::Manifest => "manifest.schema.json",
            Schema::Batch => "batch.schema.json",
            Schema::Report => "report.schema.json",
            Schema::BatchReport => "batch-report.schema.json",
            Schema::Events => "events.schema.json",
        }
    }

    /// The schema's text, as the file holds it.
    pub fn text(self) -> &'static str {
        match self {
            Schema::Manifest => MANIFEST,
            Schema::Batch => BATCH,
            Schema::Report => REPORT,
            Schema::BatchReport => BATCH_REPORT,
            Schema::Events => EVENTS,
        }
    }
}

pub const MANIFEST: &str = include_str!("../schemas/manifest.schema.json");
pub const BATCH: &str = include_str!("../schemas/batch.schema.json");
pub const REPORT: &str = include_str!("../schemas/report.schema.json");
pub const BATCH_REPORT: &str = include_str!("../schemas/batch-report.schema.json");
pub const EVENTS: &str = include_str!("../schemas/events.schema.json");

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parsed(s: Schema) -> Value {
        serde_json::from_str(s.text()).expect("a schema is JSON")
    }

    #[test]
    fn every_schema_is_draft_2020_12_with_its_own_id() {
        for &s in Schema::ALL {
            let v = parsed(s);
            assert_eq!(
                v["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{s:?}"
            );
            assert_eq!(
                v["$id"],
                format!("https://hyper2kvm.dev/schemas/{}", s.file_name()),
                "{s:?}"
            );
            assert!(
                v["title"].is_string() && v["description"].is_string(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn names_are_the_ones_the_option_takes() {
        use clap::ValueEnum;
        let names: Vec<String> = Schema::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        assert_eq!(
            names,
            ["manifest", "batch", "report", "batch-report", "events"]
        );
        for (&s, name) in Schema::ALL.iter().zip(&names) {
            assert_eq!(s.file_name(), format!("{name}.schema.json"));
        }
    }

    #[test]
    fn embedded_copies_are_the_files() {
        for (outer, key, inner) in [
            (Schema::Batch, "manifest", Schema::Manifest),
            (Schema::BatchReport, "report", Schema::Report),
        ] {
            assert!(
                parsed(outer)["$defs"][key] == parsed(inner),
                "schemas/{} embeds a stale copy of schemas/{} as $defs.{key}: run \
                 python3 scripts/bundle-schemas.py",
                outer.file_name(),
                inner.file_name()
            );
        }
    }
}
