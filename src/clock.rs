//! Timestamps, one function per spelling, so every file and message that carries a time uses
//! the same one for the same purpose.
//!
//! | function | looks like | used for |
//! |---|---|---|
//! | [`now_local`] | `2026-12-01T22:39:14.123456789+01:00` | reports, checkpoints, messages (upstream writes local time) |
//! | [`now_utc`] | `2026-12-01T21:39:14.123456789Z` | manifests written by `--libvirt-xml` |
//! | [`utc_at`] | `2026-12-01T21:39:14.123456789Z` | a pinned source's mtime (reports, messages) |
//! | [`now_utc_seconds`] | `2026-12-01T21:39:14Z` | the `{{ timestamp_iso }}` hook variable |
//! | [`now_utc_compact`] | `20261201-213914` | names of files kept beside a guest's own (backups) |
//! | [`now_unix`] | `1796161154` | the `{{ timestamp }}` hook variable |
//! | [`unix_seconds`] | `1796161154.123` | a shard's start, which `--batch-merge` lines the shards up by |

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Local time as RFC 3339 (UTC when the local offset cannot be determined).
pub fn now_local() -> String {
    let now = OffsetDateTime::now_local().unwrap_or_else(|_| OffsetDateTime::now_utc());
    now.format(&Rfc3339).unwrap_or_default()
}

/// UTC as RFC 3339.
pub fn now_utc() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// A moment given as Unix seconds and nanoseconds (a file's mtime), spelled as [`now_utc`];
/// `sec.nsec` for one out of the calendar's range.
pub fn utc_at(sec: i64, nsec: i64) -> String {
    let nanos = i128::from(sec) * 1_000_000_000 + i128::from(nsec);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{sec}.{nsec:09}"))
}

/// UTC to the millisecond, `Z`-suffixed (event streams).
pub fn now_utc_millis() -> String {
    let iso = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::now_utc().format(&iso).unwrap_or_default()
}

/// UTC to the second, `Z`-suffixed.
pub fn now_utc_seconds() -> String {
    let iso = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::now_utc().format(&iso).unwrap_or_default()
}

/// UTC to the second, digits only, for file names.
pub fn now_utc_compact() -> String {
    let compact = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    OffsetDateTime::now_utc()
        .format(&compact)
        .unwrap_or_else(|_| "backup".to_owned())
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Seconds since the Unix epoch, to the millisecond.
pub fn unix_seconds() -> f64 {
    let ns = OffsetDateTime::now_utc().unix_timestamp_nanos();
    (ns / 1_000_000) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moment_is_spelled_as_now() {
        assert_eq!(utc_at(0, 5), "1970-01-01T00:00:00.000000005Z");
        assert_eq!(utc_at(1_796_161_154, 0), "2026-12-01T21:39:14Z");
        assert_eq!(utc_at(i64::MAX, 1), format!("{}.000000001", i64::MAX));
    }

    #[test]
    fn spellings() {
        assert!(now_utc().ends_with('Z'), "{}", now_utc());
        let s = now_utc_seconds();
        assert_eq!(s.len(), 20, "{s}");
        let c = now_utc_compact();
        assert_eq!(c.len(), 15, "{c}");
        assert!(c.bytes().all(|b| b.is_ascii_digit() || b == b'-'), "{c}");
        assert!(now_unix() > 1_700_000_000);
        let local = now_local();
        assert!(local.len() >= 20 && local.as_bytes()[10] == b'T', "{local}");
    }
}
