//! `pipeline.validate.boot_test`: whether and how the converted VM is booted once, and the
//! defaults of every setting.
//!
//! The patterns are regular expressions the boot test matches console lines with; they are
//! compiled here, at load time, with the same crate and rules the test uses, so a pattern the
//! test could not use is a manifest problem found before any disk is converted rather than a
//! failure at the end of a long run. Running the test is the boot test service's job.

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::schema::{Field, Kind, f};

/// How long the guest gets to match `success_pattern` (TCG boots of a small Debian take 1–3
/// minutes on a busy 2-core machine).
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
/// A login prompt (printed without a newline) or systemd reaching the multi-user or graphical
/// target.
pub const DEFAULT_SUCCESS_PATTERN: &str =
    r"(?:^|\s)login:\s*$|Reached target.*(?:Multi-User System|Graphical Interface)";
pub const DEFAULT_MEMORY_MB: u32 = 1024;
pub const DEFAULT_CPUS: u32 = 1;

/// `pipeline.validate.boot_test`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootTestSettings {
    pub enabled: bool,
    /// Seconds; more than 0.
    pub timeout: u64,
    /// A regular expression matched against each console line.
    pub success_pattern: String,
    /// An extra regular expression that fails the test (panics and emergency shells always do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_pattern: Option<String>,
    pub memory_mb: u32,
    pub cpus: u32,
}

impl Default for BootTestSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            timeout: DEFAULT_TIMEOUT_SECONDS,
            success_pattern: DEFAULT_SUCCESS_PATTERN.to_owned(),
            failure_pattern: None,
            memory_mb: DEFAULT_MEMORY_MB,
            cpus: DEFAULT_CPUS,
        }
    }
}

/// Checks a pattern the way the boot test will compile it; `Err` says what is wrong.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("must not be empty (an empty pattern matches every line)".to_owned());
    }
    Regex::new(pattern).map(|_| ()).map_err(|e| {
        // regex's message spans several lines (pattern, caret, error); keep the error.
        let text = e.to_string();
        let last = text.lines().last().unwrap_or("").trim();
        let last = last.strip_prefix("error: ").unwrap_or(last);
        format!("is not a valid regular expression ('{pattern}': {last})")
    })
}

/// The `boot_test` section of `pipeline.validate`.
pub const BOOT_TEST: &[Field] = &[
    f("enabled", Kind::Bool),
    f(
        "timeout",
        Kind::Int {
            min: 1,
            max: 86_400,
        },
    ),
    f(
        "success_pattern",
        Kind::Regex {
            nullable: false,
            check: check_pattern,
        },
    ),
    f(
        "failure_pattern",
        Kind::Regex {
            nullable: true,
            check: check_pattern,
        },
    ),
    f(
        "memory_mb",
        Kind::Int {
            min: 128,
            max: 1_048_576,
        },
    ),
    f("cpus", Kind::Int { min: 1, max: 64 }),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_success_pattern_matches_prompts_and_targets() {
        let re = Regex::new(DEFAULT_SUCCESS_PATTERN).expect("regex");
        assert!(re.is_match("h2k-debian12 login: "));
        assert!(re.is_match("localhost login:"));
        assert!(re.is_match("[  OK  ] Reached target multi-user.target - Multi-User System."));
        assert!(re.is_match("[  OK  ] Reached target Graphical Interface."));
        assert!(!re.is_match("[  OK  ] Reached target local-fs.target - Local File Systems."));
        assert!(!re.is_match("Last login: Mon Jan  1 on ttyS0 x"));
    }

    #[test]
    fn bad_patterns_say_why() {
        let e = check_pattern("(unclosed").expect_err("invalid");
        assert!(e.contains("not a valid regular expression"), "{e}");
        assert!(e.contains("unclosed group"), "{e}");
        assert!(check_pattern("").is_err());
        assert!(check_pattern("login:").is_ok());
    }
}
