//! The OVF package's manifest (`.mf`): one line per file, `SHA256(web01-disk1.vmdk)= <hex>` or
//! `SHA1(...)= <hex>` (DMTF DSP0243, "Package manifest"; VMware writes SHA256 since vSphere 6.5,
//! SHA1 before). Other algorithms (SHA512) are read too but cannot be verified here, which the
//! import says.

use super::Collected;

/// A digest algorithm a manifest line names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 40,
            Algorithm::Sha256 => 64,
        }
    }
}

/// One line: the file it names and its digest (lower-case hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub file: String,
    pub algorithm: Algorithm,
    pub digest: String,
    /// 1-based, for messages.
    pub line: usize,
}

/// Reads a manifest; every bad line is a problem placed as `<mf name>: line N`.
pub fn parse(text: &str, mf_name: &str, problems: &mut Collected) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let place = format!("{mf_name}: line {}", n + 1);
        let parsed = line.split_once('(').and_then(|(alg, rest)| {
            let (file, digest) = rest.rsplit_once(")=")?;
            Some((alg.trim(), file, digest.trim()))
        });
        let Some((alg, file, digest)) = parsed else {
            problems.push(
                place,
                "expected ALGORITHM(file)= digest, as in SHA256(disk1.vmdk)= 3f1a…",
            );
            continue;
        };
        let algorithm = match alg.to_ascii_uppercase().as_str() {
            "SHA1" => Algorithm::Sha1,
            "SHA256" => Algorithm::Sha256,
            other => {
                problems.push(
                    place,
                    format!(
                        "digest algorithm {other} is not one hyper2kvm verifies (SHA1, SHA256)"
                    ),
                );
                continue;
            }
        };
        let digest = digest.to_ascii_lowercase();
        if digest.len() != algorithm.hex_len() || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            problems.push(
                place,
                format!(
                    "the {} digest of {file} must be {} hex digits",
                    algorithm.name(),
                    algorithm.hex_len()
                ),
            );
            continue;
        }
        if entries.iter().any(|e| e.file == file) {
            problems.push(place, format!("{file} is listed twice"));
            continue;
        }
        entries.push(Entry {
            file: file.to_owned(),
            algorithm,
            digest,
            line: n + 1,
        });
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_algorithms_and_says_what_is_wrong_with_a_line() {
        let sha1 = "a9993e364706816aba3e25717850c26c9cd0d89d";
        let sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let text = format!(
            "SHA1(web01.ovf)= {sha1}\nSHA256(web01 (1)-disk1.vmdk)= {}\n\nMD5(x)= 00\nSHA256(y)= 12\n",
            sha256.to_uppercase()
        );
        let mut problems = Collected::default();
        let entries = parse(&text, "web01.mf", &mut problems);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].algorithm, Algorithm::Sha1);
        assert_eq!(entries[1].file, "web01 (1)-disk1.vmdk");
        assert_eq!(entries[1].digest, sha256);
        let shown: Vec<String> = problems
            .0
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(
            shown[0].starts_with("web01.mf: line 4: digest algorithm MD5"),
            "{shown:?}"
        );
        assert!(
            shown[1].contains("line 5") && shown[1].contains("64 hex digits"),
            "{shown:?}"
        );
    }
}
