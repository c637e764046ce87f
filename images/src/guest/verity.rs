//! dm-verity hash trees (format version 1, as `veritysetup format --no-superblock` writes them
//! and the kernel's `drivers/md/dm-verity-target.c` reads them).
//!
//! The data device is cut into 4 KiB blocks; level 0 holds SHA-256(salt ‖ block) of every data
//! block, 128 digests to a 4 KiB hash block (zero-padded); level i + 1 hashes the blocks of
//! level i the same way, until a level fits one block, whose salted digest is the root hash.
//! On disk the levels are stored top first (the single top block, then down to level 0), as the
//! kernel computes `hash_level_block[]`. The guest image appends the tree to the root
//! filesystem, so one disk carries both (`hash_start_block` = the data's block count).

use std::fmt;
use std::io::Read;

use sha2::{Digest, Sha256};

use super::GuestError;

/// Data and hash block size (the page size; the kernel needs data blocks ≤ page size).
pub const BLOCK: usize = 4096;
/// SHA-256 digests per hash block.
const PER_BLOCK: usize = BLOCK / 32;
/// The largest data device hashed (the level-0 digests are held in memory: 8 MiB per GiB).
pub const MAX_DATA_BYTES: u64 = 64 << 30;

/// What the kernel needs to open a verity device: the table's variable part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    /// Number of 4 KiB data blocks covered.
    pub data_blocks: u64,
    /// Where the hash tree starts on the hash device, in 4 KiB blocks.
    pub hash_start_block: u64,
    /// The root hash.
    pub root: [u8; 32],
    /// The salt prepended to every hashed block.
    pub salt: Vec<u8>,
}

/// The longest salt dm-verity accepts.
pub const MAX_SALT: usize = 256;

impl VerityParams {
    /// The dm target line (`verity` target, version 1, SHA-256, 4 KiB blocks) for a data device
    /// that also holds the hash tree: `start length verity <params>` minus the first three,
    /// i.e. what `DM_TABLE_LOAD` takes as the target's parameter string.
    pub fn target_params(&self, device: &str) -> String {
        format!(
            "1 {device} {device} {BLOCK} {BLOCK} {} {} sha256 {} {}",
            self.data_blocks,
            self.hash_start_block,
            hex::encode(self.root),
            self.salt_hex()
        )
    }

    /// The target's length in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.data_blocks * (BLOCK as u64 / 512)
    }

    fn salt_hex(&self) -> String {
        if self.salt.is_empty() {
            "-".to_string()
        } else {
            hex::encode(&self.salt)
        }
    }

    /// Parses the kernel command-line value written by [`Display`](fmt::Display):
    /// `<data_blocks>:<hash_start_block>:<root hex>:<salt hex or ->`.
    pub fn parse(s: &str) -> Result<Self, GuestError> {
        let bad = |detail: &str| GuestError::BadVerityParams {
            value: s.chars().take(200).collect(),
            detail: detail.to_string(),
        };
        let parts: Vec<&str> = s.split(':').collect();
        let [blocks, start, root, salt] = parts.as_slice() else {
            return Err(bad(
                "expected data_blocks:hash_start_block:root_hash:salt (4 fields)",
            ));
        };
        let data_blocks: u64 = blocks
            .parse()
            .map_err(|_| bad("data_blocks is not a number"))?;
        let hash_start_block: u64 = start
            .parse()
            .map_err(|_| bad("hash_start_block is not a number"))?;
        if data_blocks == 0 {
            return Err(bad("data_blocks is 0"));
        }
        if hash_start_block < data_blocks {
            return Err(bad("the hash tree would overlap the data"));
        }
        let root: [u8; 32] = hex::decode(root)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("root hash is not 64 hex digits"))?;
        let salt = if *salt == "-" {
            Vec::new()
        } else {
            hex::decode(salt).map_err(|_| bad("salt is not hex"))?
        };
        if salt.len() > MAX_SALT {
            return Err(bad("salt is longer than 256 bytes"));
        }
        Ok(Self {
            data_blocks,
            hash_start_block,
            root,
            salt,
        })
    }
}

impl fmt::Display for VerityParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.data_blocks,
            self.hash_start_block,
            hex::encode(self.root),
            self.salt_hex()
        )
    }
}

/// A built hash tree: the bytes to store after the data, and the root.
#[derive(Debug, Clone)]
pub struct HashTree {
    /// The hash area, top level first, whole 4 KiB blocks.
    pub area: Vec<u8>,
    /// The root hash.
    pub root: [u8; 32],
    /// Data blocks covered.
    pub data_blocks: u64,
    /// Levels (0 when the data is a single block: the root is that block's digest).
    pub levels: u32,
}

impl HashTree {
    /// The parameters for a device holding the data followed directly by this tree.
    pub fn params(&self, salt: &[u8]) -> VerityParams {
        VerityParams {
            data_blocks: self.data_blocks,
            hash_start_block: self.data_blocks,
            root: self.root,
            salt: salt.to_vec(),
        }
    }
}

fn salted(salt: &[u8], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Hashes one level's digests into the next level's blocks (each zero-padded to 4 KiB),
/// returning the blocks' bytes.
fn pack(digests: &[[u8; 32]]) -> Vec<u8> {
    let blocks = digests.len().div_ceil(PER_BLOCK);
    let mut out = vec![0u8; blocks * BLOCK];
    for (i, d) in digests.iter().enumerate() {
        out[i * 32..i * 32 + 32].copy_from_slice(d);
    }
    out
}

/// Builds the tree over `data`, which must be a whole number of 4 KiB blocks (the guest's
/// squashfs is padded to 4 KiB), at most [`MAX_DATA_BYTES`].
pub fn build(mut data: impl Read, salt: &[u8]) -> Result<HashTree, GuestError> {
    if salt.len() > MAX_SALT {
        return Err(GuestError::BadVerityParams {
            value: hex::encode(salt),
            detail: "salt is longer than 256 bytes".into(),
        });
    }
    let mut digests: Vec<[u8; 32]> = Vec::new();
    let mut block = vec![0u8; BLOCK];
    let mut total: u64 = 0;
    loop {
        let mut filled = 0;
        while filled < BLOCK {
            let n = data
                .read(&mut block[filled..])
                .map_err(|e| GuestError::Io {
                    what: "reading the data to hash".into(),
                    detail: e.to_string(),
                })?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        total += filled as u64;
        if filled < BLOCK {
            return Err(GuestError::NotBlockAligned { len: total });
        }
        if total > MAX_DATA_BYTES {
            return Err(GuestError::TooLarge {
                what: "verity data",
                len: total,
                max: MAX_DATA_BYTES,
            });
        }
        digests.push(salted(salt, &block));
    }
    if digests.is_empty() {
        return Err(GuestError::NotBlockAligned { len: 0 });
    }
    let data_blocks = digests.len() as u64;
    if digests.len() == 1 {
        // The kernel uses no hash levels then: the root is the block's digest.
        return Ok(HashTree {
            area: Vec::new(),
            root: digests[0],
            data_blocks,
            levels: 0,
        });
    }
    // Levels bottom-up; each is the packed digests of the level below.
    let mut levels: Vec<Vec<u8>> = Vec::new();
    loop {
        let packed = pack(&digests);
        let blocks = packed.len() / BLOCK;
        digests = packed.chunks(BLOCK).map(|b| salted(salt, b)).collect();
        levels.push(packed);
        if blocks == 1 {
            break;
        }
    }
    let root = digests[0];
    let count = levels.len() as u32;
    let area = levels.into_iter().rev().flatten().collect();
    Ok(HashTree {
        area,
        root,
        data_blocks,
        levels: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(blocks: usize) -> Vec<u8> {
        (0..blocks * BLOCK)
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect()
    }

    #[test]
    fn levels_follow_the_kernel_count() {
        // The kernel: levels = smallest L with (data_blocks - 1) >> (7 L) == 0.
        for (blocks, levels, area_blocks) in [(2, 1, 1), (128, 1, 1), (129, 2, 3), (16385, 3, 132)]
        {
            let t = build(&data(blocks)[..], b"salt").unwrap();
            assert_eq!(t.levels, levels, "{blocks} blocks");
            assert_eq!(t.area.len(), area_blocks * BLOCK, "{blocks} blocks");
        }
    }

    #[test]
    fn the_top_block_hashes_to_the_root_and_holds_the_level_below() {
        let d = data(300);
        let t = build(&d[..], b"s").unwrap();
        // 300 blocks: level 0 = 3 blocks, level 1 = 1 block (stored first).
        assert_eq!(t.area.len(), 4 * BLOCK);
        assert_eq!(salted(b"s", &t.area[..BLOCK]), t.root);
        let level0 = &t.area[BLOCK..];
        assert_eq!(&t.area[..32], &salted(b"s", &level0[..BLOCK]));
        assert_eq!(&level0[299 * 32..][..32], &salted(b"s", &d[299 * BLOCK..]));
    }

    #[test]
    fn any_changed_byte_changes_the_root() {
        let mut d = data(200);
        let a = build(&d[..], b"").unwrap().root;
        d[150 * BLOCK + 17] ^= 1;
        assert_ne!(build(&d[..], b"").unwrap().root, a);
        assert_ne!(
            build(&data(200)[..], b"x").unwrap().root,
            a,
            "salt is hashed"
        );
    }

    #[test]
    fn partial_blocks_and_empty_data_are_refused() {
        assert!(matches!(
            build(&[0u8; 5000][..], b""),
            Err(GuestError::NotBlockAligned { len: 5000 })
        ));
        assert!(build(&[][..], b"").is_err());
    }

    #[test]
    fn params_round_trip_and_reject_garbage() {
        let t = build(&data(3)[..], &[0xab; 32]).unwrap();
        let p = t.params(&[0xab; 32]);
        assert_eq!(VerityParams::parse(&p.to_string()).unwrap(), p);
        assert!(
            p.target_params("/dev/vda")
                .starts_with("1 /dev/vda /dev/vda 4096 4096 3 3 sha256 ")
        );
        assert_eq!(p.sectors(), 24);
        for bad in ["", "1:2:3", "x:3:00:-", "3:2:00:-", "3:3:zz:-", "0:0::-"] {
            assert!(VerityParams::parse(bad).is_err(), "{bad}");
        }
    }
}
