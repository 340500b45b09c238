//! An OVA is a tar archive: the OVF descriptor first, then the `.mf` digest list, the disks and
//! anything else the exporter adds (a `.cert`, an ISO). This module lists its members without
//! reading their data (the `tar` crate skips over each one with a seek), so a 500 GiB OVA is
//! listed in milliseconds, and reads the small ones (descriptor, digest list) within a bound.
//!
//! Refused: a compressed archive (qemu-img cannot address a member of a gzip or xz stream
//! in place, and decompressing a disk-sized archive is a step the admin takes knowingly), links,
//! GNU sparse members (their data is not a contiguous range), more than [`MAX_MEMBERS`]
//! members, two members of one name, and an archive that ends inside a member.

use std::io::Read;
use std::path::Path;

use super::{Collected, ExportError, ExportKind};

/// More members than any exporter writes (OVF, manifest, certificate, disks, ISOs); a flood
/// of empty members is refused before it costs memory.
pub const MAX_MEMBERS: usize = 4096;

/// One file in the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The name as stored, without a leading `./`.
    pub name: String,
    /// Where its data starts in the archive.
    pub offset: u64,
    pub size: u64,
}

/// The members of the OVA at `path`, in archive order.
pub fn list(path: &Path) -> Result<Vec<Member>, ExportError> {
    let read_err = |source| ExportError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ExportError::NotFound {
                kind: ExportKind::Ova,
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(read_err(e)),
    };
    if !meta.is_file() {
        return Err(ExportError::Refused {
            path: path.to_owned(),
            why: "it is not a regular file (an OVA is one tar file; for an unpacked export \
                  use --ovf with its .ovf file)"
                .to_owned(),
        });
    }
    let archive_len = meta.len();
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let mut magic = [0u8; 6];
    let got = read_up_to(&mut file, &mut magic).map_err(read_err)?;
    if let Some(kind) = compression(&magic[..got]) {
        return Err(ExportError::Refused {
            path: path.to_owned(),
            why: format!(
                "it is {kind}-compressed; hyper2kvm reads an OVA's disks in place and cannot \
                 seek inside a compressed stream. Decompress it first (for example `{} < {} > \
                 plain.ova`, which needs the archive's full size in free space) and import the \
                 result",
                decompressor(kind),
                path.display()
            ),
        });
    }
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut archive = tar::Archive::new(file);
    let mut problems = Collected::default();
    let name = super::file_name(path);
    let mut members: Vec<Member> = Vec::new();
    let entries = archive
        .entries_with_seek()
        .map_err(|e| not_tar(path, &name, &e))?;
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let after = members
                    .last()
                    .map(|m| format!(" after member {}", m.name))
                    .unwrap_or_default();
                problems.push(
                    name.clone(),
                    format!("not a readable tar archive{after}: {e}"),
                );
                break;
            }
        };
        let raw_name = entry.path_bytes();
        let Ok(member_name) = std::str::from_utf8(&raw_name) else {
            problems.push(
                name.clone(),
                format!(
                    "member {} has a name that is not UTF-8",
                    String::from_utf8_lossy(&raw_name)
                ),
            );
            continue;
        };
        let member_name = member_name.trim_start_matches("./").to_owned();
        let kind = entry.header().entry_type();
        let place = format!("{name}: member {member_name}");
        if kind.is_dir() || kind.is_pax_global_extensions() {
            continue;
        }
        if kind.is_gnu_sparse() {
            problems.push(
                place,
                "is a GNU sparse member, whose data is not stored in one piece; re-create the \
                 archive without --sparse",
            );
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            problems.push(
                place,
                format!(
                    "is a {} ({:?}); an OVA holds plain files",
                    if kind.is_symlink() || kind.is_hard_link() {
                        "link"
                    } else {
                        "special file"
                    },
                    kind
                ),
            );
            continue;
        }
        let member = Member {
            name: member_name,
            offset: entry.raw_file_position(),
            size: entry.size(),
        };
        if member.offset.saturating_add(member.size) > archive_len {
            problems.push(
                place,
                format!(
                    "the archive is truncated: the member's {} bytes end at byte {}, but {} has \
                     {archive_len} bytes",
                    member.size,
                    member.offset.saturating_add(member.size),
                    name
                ),
            );
            break;
        }
        if members.iter().any(|m| m.name == member.name) {
            problems.push(
                place,
                "appears twice in the archive; which one the descriptor means is ambiguous",
            );
            continue;
        }
        members.push(member);
        if members.len() > MAX_MEMBERS {
            problems.push(
                name.clone(),
                format!("more than {MAX_MEMBERS} members; an OVA holds a few files"),
            );
            break;
        }
    }
    if members.is_empty() && problems.is_empty() {
        problems.push(
            name,
            "holds no files; an OVA is a tar archive of an OVF descriptor and its disks",
        );
    }
    problems.into_result(ExportKind::Ova, path, members)
}

/// Reads a small member (descriptor, digest list) whole, refusing one over `limit` bytes.
pub fn read_member(
    path: &Path,
    member: &Member,
    what: &'static str,
    limit: u64,
) -> Result<Vec<u8>, ExportError> {
    use std::io::{Seek, SeekFrom};
    if member.size > limit {
        return Err(ExportError::TooLarge {
            path: path.join(&member.name),
            what,
            size: member.size,
            limit,
        });
    }
    let read_err = |source| ExportError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    file.seek(SeekFrom::Start(member.offset))
        .map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(member.size)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 != member.size {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("member {} is cut short", member.name),
        )));
    }
    Ok(bytes)
}

fn not_tar(path: &Path, name: &str, e: &std::io::Error) -> ExportError {
    ExportError::Invalid {
        kind: ExportKind::Ova,
        path: path.to_owned(),
        problems: {
            let mut c = Collected::default();
            c.push(name, format!("not a tar archive: {e}"));
            c.0
        },
    }
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The compression a file's first bytes announce.
fn compression(magic: &[u8]) -> Option<&'static str> {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if magic.starts_with(b"BZh") {
        Some("bzip2")
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else {
        None
    }
}

fn decompressor(kind: &str) -> &'static str {
    match kind {
        "gzip" => "gzip -dc",
        "xz" => "xz -dc",
        "bzip2" => "bzip2 -dc",
        _ => "zstd -dc",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(dir: &Path, files: &[(&str, &[u8])]) -> std::path::PathBuf {
        let path = dir.join("x.ova");
        let mut b = tar::Builder::new(std::fs::File::create(&path).expect("create"));
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).expect("append");
        }
        b.finish().expect("finish");
        path
    }

    #[test]
    fn members_are_listed_with_their_data_offsets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = tar_of(
            dir.path(),
            &[("a.ovf", b"<x/>"), ("a-disk1.vmdk", &[7u8; 1000])],
        );
        let members = list(&path).expect("list");
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].name, "a.ovf");
        assert_eq!((members[0].offset, members[0].size), (512, 4));
        assert_eq!((members[1].offset, members[1].size), (1536, 1000));
        let data = read_member(&path, &members[1], "a disk", 4096).expect("read");
        assert_eq!(data, vec![7u8; 1000]);
        let too_big = read_member(&path, &members[1], "a disk", 999).unwrap_err();
        assert!(matches!(too_big, ExportError::TooLarge { .. }), "{too_big}");
    }

    #[test]
    fn a_truncated_archive_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = tar_of(dir.path(), &[("a.ovf", b"<x/>"), ("d.vmdk", &[1u8; 5000])]);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_len(3000).expect("truncate");
        let e = list(&path).unwrap_err().to_string();
        assert!(e.contains("member d.vmdk: the archive is truncated"), "{e}");
    }

    #[test]
    fn compressed_and_non_tar_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gz = dir.path().join("x.ova");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).expect("write");
        let e = list(&gz).unwrap_err().to_string();
        assert!(
            e.contains("gzip-compressed") && e.contains("gzip -dc"),
            "{e}"
        );
        let junk = dir.path().join("junk.ova");
        std::fs::write(&junk, vec![b'j'; 2048]).expect("write");
        let e = list(&junk).unwrap_err().to_string();
        assert!(e.contains("junk.ova: not a readable tar archive"), "{e}");
    }
}
