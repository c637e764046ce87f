//! Initramfs archives in the kernel's "newc" cpio format, written reproducibly: entries in
//! sorted path order (every directory before what it holds), inode numbers in that order, owner
//! root, modification time 0, no hard links. The same entries always give the same bytes.
//!
//! Format (`Documentation/driver-api/early-userspace/buffer-format.rst`): per entry a 110-byte
//! ASCII header (`070701` and 13 eight-digit hex fields), the NUL-terminated name, padding to
//! 4 bytes, the data, padding to 4 bytes; the archive ends with the entry `TRAILER!!!`.

use std::collections::BTreeMap;

use super::GuestError;

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file and its bytes.
    File(Vec<u8>),
    /// A symbolic link to the target.
    Symlink(String),
    /// A character device (major, minor), e.g. `/dev/console` (5, 1) for the first init.
    CharDev(u32, u32),
}

/// One entry: what it is and its permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Kind and content.
    pub node: Node,
    /// Permission bits (e.g. 0o755).
    pub mode: u32,
}

/// An archive being assembled; paths are relative (`init`, `lib/modules/x.ko.xz`).
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// The largest archive written (the kernel unpacks it into memory).
pub const MAX_ARCHIVE_BYTES: usize = 512 << 20;

fn check_path(path: &str) -> Result<(), GuestError> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && !path.ends_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && !path.contains('\0')
        && path.len() < 4096;
    if ok {
        Ok(())
    } else {
        Err(GuestError::BadArchivePath { path: path.into() })
    }
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry, and any parent directories not yet added (mode 0755). Adding a path
    /// twice, or under something that is not a directory, is an error.
    pub fn add(&mut self, path: &str, node: Node, mode: u32) -> Result<(), GuestError> {
        check_path(path)?;
        let mut parent = String::new();
        for component in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, p)| p)
            .unwrap_or(&[])
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            match self.entries.get(&parent) {
                Some(Entry {
                    node: Node::Dir, ..
                }) => {}
                Some(_) => {
                    return Err(GuestError::DuplicateArchivePath { path: parent });
                }
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            node: Node::Dir,
                            mode: 0o755,
                        },
                    );
                }
            }
        }
        if let Some(existing) = self.entries.get(path) {
            // An implied parent directory may be made explicit once.
            if !(existing.node == Node::Dir && node == Node::Dir) {
                return Err(GuestError::DuplicateArchivePath { path: path.into() });
            }
        }
        self.entries.insert(
            path.to_string(),
            Entry {
                node,
                mode: mode & 0o7777,
            },
        );
        Ok(())
    }

    /// The entries in archive order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    /// The archive's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GuestError> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (kind, data, nlink, rdev): (u32, &[u8], u32, (u32, u32)) = match &entry.node {
                Node::Dir => (0o040000, &[], 2, (0, 0)),
                Node::File(d) => (0o100000, d.as_slice(), 1, (0, 0)),
                Node::Symlink(t) => (0o120000, t.as_bytes(), 1, (0, 0)),
                Node::CharDev(ma, mi) => (0o020000, &[], 1, (*ma, *mi)),
            };
            let len = u32::try_from(data.len()).map_err(|_| GuestError::TooLarge {
                what: "initramfs file",
                len: data.len() as u64,
                max: u32::MAX as u64,
            })?;
            write_entry(
                &mut out,
                path,
                ino,
                kind | entry.mode,
                nlink,
                rdev,
                data,
                len,
            );
            if out.len() > MAX_ARCHIVE_BYTES {
                return Err(GuestError::TooLarge {
                    what: "initramfs",
                    len: out.len() as u64,
                    max: MAX_ARCHIVE_BYTES as u64,
                });
            }
        }
        write_entry(&mut out, "TRAILER!!!", 0, 0, 1, (0, 0), &[], 0);
        Ok(out)
    }
}

#[allow(clippy::too_many_arguments)]
fn write_entry(
    out: &mut Vec<u8>,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: &[u8],
    len: u32,
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        len,
        0, // dev major
        0, // dev minor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// One entry read back by [`parse`] (tests and `conclave image inspect`-style checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Path as stored.
    pub path: String,
    /// Full mode (type and permission bits).
    pub mode: u32,
    /// Inode number.
    pub ino: u32,
    /// Owner.
    pub uid: u32,
    /// Modification time.
    pub mtime: u32,
    /// Device numbers of a device node.
    pub rdev: (u32, u32),
    /// Contents (file data or link target).
    pub data: Vec<u8>,
}

/// Reads a newc archive up to its trailer, bounds-checked (names the offset of what is wrong).
pub fn parse(bytes: &[u8]) -> Result<Vec<Parsed>, GuestError> {
    let bad = |offset: usize, detail: &str| GuestError::BadArchive {
        offset,
        detail: detail.into(),
    };
    let mut pos = 0usize;
    let mut out = Vec::new();
    loop {
        let header = bytes
            .get(pos..pos + 110)
            .ok_or_else(|| bad(pos, "truncated header"))?;
        if &header[..6] != b"070701" {
            return Err(bad(pos, "magic is not 070701"));
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let s = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .map_err(|_| bad(pos, "header field is not ASCII"))?;
            *v = u32::from_str_radix(s, 16).map_err(|_| bad(pos, "header field is not hex"))?;
        }
        let namesize = f[11] as usize;
        let name_start = pos + 110;
        let name = bytes
            .get(name_start..name_start + namesize)
            .ok_or_else(|| bad(pos, "truncated name"))?;
        let name = name
            .strip_suffix(&[0])
            .ok_or_else(|| bad(pos, "name is not NUL-terminated"))?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| bad(pos, "name is not UTF-8"))?;
        let data_start = (name_start + namesize).next_multiple_of(4);
        let size = f[6] as usize;
        let data = bytes
            .get(data_start..data_start + size)
            .ok_or_else(|| bad(pos, "truncated data"))?;
        pos = (data_start + size).next_multiple_of(4);
        if name == "TRAILER!!!" {
            return Ok(out);
        }
        out.push(Parsed {
            path: name,
            mode: f[1],
            ino: f[0],
            uid: f[2],
            mtime: f[5],
            rdev: (f[9], f[10]),
            data: data.to_vec(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.add("init", Node::File(b"#!/bin/sh\n".to_vec()), 0o755)
            .unwrap();
        a.add(
            "lib/modules/dm-verity.ko.xz",
            Node::File(vec![1, 2, 3]),
            0o644,
        )
        .unwrap();
        a.add("dev/console", Node::CharDev(5, 1), 0o600).unwrap();
        a.add("lib64/ld.so", Node::Symlink("/lib/ld.so".into()), 0o777)
            .unwrap();
        a.add("newroot", Node::Dir, 0o755).unwrap();
        a
    }

    #[test]
    fn parents_come_first_and_fields_are_fixed() {
        let bytes = sample().to_bytes().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let parsed = parse(&bytes).unwrap();
        let paths: Vec<&str> = parsed.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/dm-verity.ko.xz",
                "lib64",
                "lib64/ld.so",
                "newroot"
            ]
        );
        for (i, p) in parsed.iter().enumerate() {
            assert_eq!((p.ino, p.uid, p.mtime), (i as u32 + 1, 0, 0));
        }
        let console = &parsed[1];
        assert_eq!((console.mode, console.rdev), (0o020600, (5, 1)));
        assert_eq!(parsed[2].mode, 0o100755);
        assert_eq!(parsed[2].data, b"#!/bin/sh\n");
        assert_eq!(parsed[7].mode, 0o120777);
        assert_eq!(parsed[7].data, b"/lib/ld.so");
        assert_eq!(parsed[0].mode, 0o040755);
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let mut b = Archive::new();
        b.add("newroot", Node::Dir, 0o755).unwrap();
        b.add("lib64/ld.so", Node::Symlink("/lib/ld.so".into()), 0o777)
            .unwrap();
        b.add("dev/console", Node::CharDev(5, 1), 0o600).unwrap();
        b.add(
            "lib/modules/dm-verity.ko.xz",
            Node::File(vec![1, 2, 3]),
            0o644,
        )
        .unwrap();
        b.add("init", Node::File(b"#!/bin/sh\n".to_vec()), 0o755)
            .unwrap();
        assert_eq!(b.to_bytes().unwrap(), sample().to_bytes().unwrap());
    }

    #[test]
    fn bad_paths_and_duplicates_are_refused() {
        let mut a = sample();
        for p in ["", "/abs", "a/../b", "a//b", "x/", "./x"] {
            assert!(a.add(p, Node::Dir, 0o755).is_err(), "{p:?}");
        }
        assert!(a.add("init", Node::File(vec![]), 0o644).is_err());
        assert!(
            a.add("init/under-a-file", Node::File(vec![]), 0o644)
                .is_err()
        );
        assert!(
            a.add("lib", Node::Dir, 0o755).is_ok(),
            "an implied dir made explicit"
        );
    }

    #[test]
    fn truncated_archives_are_named_not_panicked_on() {
        let bytes = sample().to_bytes().unwrap();
        for cut in [0, 50, 110, 120, bytes.len() - 4] {
            assert!(parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = b'1';
        assert!(matches!(
            parse(&bad),
            Err(GuestError::BadArchive { offset: 0, .. })
        ));
    }
}
