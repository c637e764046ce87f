//! A sealed dataset: the customer's prepared dataset (its manifest, tokenizer, validation split
//! and training shards) with every file encrypted under the job secret, and an index
//! (`sealed.json`) that names each file's plaintext and ciphertext hashes.
//!
//! File `i` of the index is sealed as a [`Kind::Shard`] envelope with index `i`
//! ([`crate::seal`]), under the keys of the job's sealing id; it lies beside the index as
//! `<name>.sealed`. The dataset root a sealed job names is a Merkle tree
//! ([`crate::dataset::merkle_root`]) over one leaf per file:
//!
//! ```text
//! SHA-256("conclave/v1/sealed-file" ‖ sealing id ‖ i u64be ‖ len(name) u32be ‖ name
//!         ‖ plaintext SHA-256 ‖ ciphertext SHA-256 ‖ plaintext size u64be)
//! ```
//!
//! so the root commits to the ciphertexts (an operator can be checked for holding the right
//! files without the key) and to the plaintexts (the enclave checks what it decrypts), and the
//! host can neither swap, reorder nor rename files. The job document names the sealing id, so
//! a job's id commits to it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Hash32;
use crate::dataset::merkle_root;
use crate::seal::{JobSecret, Kind};

/// The index format this code reads and writes.
pub const SEALED_DATASET_VERSION: u32 = 1;
/// The index's file name in a sealed dataset folder.
pub const INDEX_FILE: &str = "sealed.json";
/// The suffix of a sealed file.
pub const SEALED_SUFFIX: &str = ".sealed";
/// The largest index accepted.
pub const MAX_INDEX: usize = 16 << 20;
/// The most files a sealed dataset holds.
pub const MAX_FILES: usize = 1 << 16;
/// The longest file name.
pub const MAX_NAME: usize = 128;

/// One sealed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedFile {
    /// The plaintext's file name (`manifest.json`, `tokenizer.json`, `shard-0000.bin`, ...).
    pub name: String,
    pub plaintext_sha256: Hash32,
    pub ciphertext_sha256: Hash32,
    /// Bytes of plaintext.
    pub size: u64,
}

/// `sealed.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedDataset {
    pub version: u32,
    /// What every key of the job is derived for (the job document names it).
    pub sealing_id: Hash32,
    /// The job secret's public commitment ([`JobSecret::key_check`]; the job document names
    /// it too).
    pub key_check: Hash32,
    /// The files, in sealing order (file `i` is envelope index `i`).
    pub files: Vec<SealedFile>,
}

/// Why an index is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealedDataError {
    #[error("the sealed dataset index is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the sealed dataset index is malformed: {0}")]
    Malformed(String),
    #[error("sealed dataset version {0} is not supported (expected {SEALED_DATASET_VERSION})")]
    Version(u32),
    #[error("sealed file {index}: {why}")]
    File { index: usize, why: String },
    #[error("the sealed dataset has no file named {0}")]
    Missing(String),
}

/// A file name a sealed dataset may use: plain, short, no path.
fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl SealedDataset {
    /// Parses and checks an index: bounded, exact shape, known version, plain unique names.
    pub fn parse(bytes: &[u8]) -> Result<Self, SealedDataError> {
        if bytes.len() > MAX_INDEX {
            return Err(SealedDataError::TooLarge {
                len: bytes.len(),
                max: MAX_INDEX,
            });
        }
        let idx: SealedDataset =
            serde_json::from_slice(bytes).map_err(|e| SealedDataError::Malformed(e.to_string()))?;
        idx.check()?;
        Ok(idx)
    }

    /// The rules every index keeps.
    pub fn check(&self) -> Result<(), SealedDataError> {
        if self.version != SEALED_DATASET_VERSION {
            return Err(SealedDataError::Version(self.version));
        }
        if self.files.len() > MAX_FILES {
            return Err(SealedDataError::Malformed(format!(
                "{} files, over the limit of {MAX_FILES}",
                self.files.len()
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (index, f) in self.files.iter().enumerate() {
            if !name_ok(&f.name) {
                return Err(SealedDataError::File {
                    index,
                    why: format!("{:?} is not a plain file name", f.name),
                });
            }
            if !seen.insert(f.name.as_str()) {
                return Err(SealedDataError::File {
                    index,
                    why: format!("{} is listed twice", f.name),
                });
            }
        }
        Ok(())
    }

    /// The index's bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The leaf of file `index`.
    pub fn leaf(sealing_id: &Hash32, index: u64, f: &SealedFile) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"conclave/v1/sealed-file");
        h.update(sealing_id.0);
        h.update(index.to_be_bytes());
        h.update((f.name.len() as u32).to_be_bytes());
        h.update(f.name.as_bytes());
        h.update(f.plaintext_sha256.0);
        h.update(f.ciphertext_sha256.0);
        h.update(f.size.to_be_bytes());
        h.finalize().into()
    }

    /// The dataset root a sealed job names.
    pub fn root(&self) -> Hash32 {
        let leaves: Vec<[u8; 32]> = self
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| Self::leaf(&self.sealing_id, i as u64, f))
            .collect();
        Hash32(merkle_root(&leaves))
    }

    /// File `name` and its envelope index.
    pub fn file(&self, name: &str) -> Result<(u64, &SealedFile), SealedDataError> {
        self.files
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == name)
            .map(|(i, f)| (i as u64, f))
            .ok_or_else(|| SealedDataError::Missing(name.to_string()))
    }

    /// Bytes a sealed file of `size` plaintext bytes has (what to bound a read by).
    pub fn sealed_len(size: u64) -> u64 {
        size.saturating_add((crate::seal::HEADER_LEN + crate::seal::TAG_LEN) as u64)
    }

    /// Opens file `name`'s sealed bytes with `secret`: checks the ciphertext's hash against the
    /// index (a file the host changed or swapped is named before any decryption), the AEAD, and
    /// the plaintext's hash and size. Pure: the caller reads the file.
    pub fn open(
        &self,
        secret: &JobSecret,
        name: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, SealedDataError> {
        let (i, f) = self.file(name)?;
        let bad = |why: String| SealedDataError::File {
            index: i as usize,
            why,
        };
        let got = Hash32::sha256(sealed);
        if got != f.ciphertext_sha256 {
            return Err(bad(format!(
                "the sealed {name} hashes to {got}, the index says {} (changed by the host?)",
                f.ciphertext_sha256
            )));
        }
        let plain = secret
            .open(&self.sealing_id.0, Kind::Shard, i, sealed)
            .map_err(|e| bad(format!("opening the sealed {name}: {e}")))?;
        if Hash32::sha256(&plain) != f.plaintext_sha256 || plain.len() as u64 != f.size {
            return Err(bad(format!(
                "the sealed {name} opens to bytes that are not the ones the index names"
            )));
        }
        Ok(plain)
    }

    /// The sealed file's name on disk.
    pub fn sealed_name(name: &str) -> String {
        format!("{name}{SEALED_SUFFIX}")
    }
}

/// The files of a prepared dataset with `shards` training shards, in sealing order: its
/// manifest, its tokenizer, the validation split, then the shards.
pub fn dataset_file_names(shards: usize) -> Vec<String> {
    let mut names = vec![
        "manifest.json".to_string(),
        "tokenizer.json".to_string(),
        "validation.bin".to_string(),
    ];
    names.extend((0..shards).map(|i| format!("shard-{i:04}.bin")));
    names
}

/// Seals `files` (name, plaintext) in order under `secret` for `sealing_id`: the index and each
/// file's sealed bytes (to be written as [`SealedDataset::sealed_name`]). Pure: the caller
/// reads and writes the files.
pub fn seal_files(
    secret: &JobSecret,
    sealing_id: Hash32,
    files: &[(String, Vec<u8>)],
) -> Result<(SealedDataset, Vec<Vec<u8>>), SealedDataError> {
    let mut index = SealedDataset {
        version: SEALED_DATASET_VERSION,
        sealing_id,
        key_check: Hash32(
            secret
                .key_check(&sealing_id.0)
                .map_err(|e| SealedDataError::Malformed(e.to_string()))?,
        ),
        files: Vec::with_capacity(files.len()),
    };
    let mut sealed = Vec::with_capacity(files.len());
    for (i, (name, plain)) in files.iter().enumerate() {
        let ct = secret
            .seal(&sealing_id.0, Kind::Shard, i as u64, plain)
            .map_err(|e| SealedDataError::File {
                index: i,
                why: e.to_string(),
            })?;
        index.files.push(SealedFile {
            name: name.clone(),
            plaintext_sha256: Hash32::sha256(plain),
            ciphertext_sha256: Hash32::sha256(&ct),
            size: plain.len() as u64,
        });
        sealed.push(ct);
    }
    index.check()?;
    Ok((index, sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SealedDataset {
        SealedDataset {
            version: SEALED_DATASET_VERSION,
            sealing_id: Hash32([1; 32]),
            key_check: Hash32([9; 32]),
            files: vec![
                SealedFile {
                    name: "manifest.json".into(),
                    plaintext_sha256: Hash32([2; 32]),
                    ciphertext_sha256: Hash32([3; 32]),
                    size: 10,
                },
                SealedFile {
                    name: "shard-0000.bin".into(),
                    plaintext_sha256: Hash32([4; 32]),
                    ciphertext_sha256: Hash32([5; 32]),
                    size: 20,
                },
            ],
        }
    }

    #[test]
    fn the_root_commits_to_every_field_and_the_order() {
        let s = sample();
        let back = SealedDataset::parse(&s.encode()).unwrap();
        assert_eq!(back, s);
        let root = s.root();
        let mut swapped = s.clone();
        swapped.files.swap(0, 1);
        assert_ne!(swapped.root(), root);
        for change in 0..5 {
            let mut t = s.clone();
            match change {
                0 => t.files[1].name = "shard-0001.bin".into(),
                1 => t.files[1].plaintext_sha256.0[0] ^= 1,
                2 => t.files[1].ciphertext_sha256.0[0] ^= 1,
                3 => t.files[1].size += 1,
                _ => t.sealing_id.0[0] ^= 1,
            }
            assert_ne!(t.root(), root, "change {change}");
        }
        assert_eq!(s.file("shard-0000.bin").unwrap().0, 1);
        assert!(matches!(s.file("x"), Err(SealedDataError::Missing(_))));
    }

    #[test]
    fn sealed_files_open_in_place_and_match_the_index() {
        let secret = JobSecret::generate().unwrap();
        let id = Hash32([3; 32]);
        let files = vec![
            ("manifest.json".to_string(), b"{}".to_vec()),
            ("shard-0000.bin".to_string(), vec![7; 100]),
        ];
        let (idx, sealed) = seal_files(&secret, id, &files).unwrap();
        assert_eq!(idx.key_check.0, secret.key_check(&id.0).unwrap());
        for (i, ct) in sealed.iter().enumerate() {
            assert_eq!(Hash32::sha256(ct), idx.files[i].ciphertext_sha256);
            let plain = secret.open(&id.0, Kind::Shard, i as u64, ct).unwrap();
            assert_eq!(plain, files[i].1);
            assert!(
                !ct.windows(8).any(|w| w == [7; 8]),
                "no plaintext run in the ciphertext"
            );
        }
        // A file opened as another file's index fails.
        assert!(secret.open(&id.0, Kind::Shard, 0, &sealed[1]).is_err());
    }

    #[test]
    fn bad_indexes_are_named() {
        let mut s = sample();
        s.files[1].name = "../etc/passwd".into();
        assert!(matches!(
            SealedDataset::parse(&s.encode()),
            Err(SealedDataError::File { index: 1, .. })
        ));
        let mut s = sample();
        s.files[1].name = "manifest.json".into();
        assert!(matches!(
            SealedDataset::parse(&s.encode()),
            Err(SealedDataError::File { index: 1, .. })
        ));
        let mut s = sample();
        s.version = 9;
        assert!(matches!(
            SealedDataset::parse(&s.encode()),
            Err(SealedDataError::Version(9))
        ));
        assert!(matches!(
            SealedDataset::parse(b"{\"version\":1}"),
            Err(SealedDataError::Malformed(_))
        ));
    }
}
