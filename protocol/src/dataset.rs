//! The training data as a job names it: tokenized shards, each with a SHA-256, under one Merkle
//! root, and the pure function that says which shard an operator trains on in an epoch.
//!
//! A shard is a run of token ids (u16, little-endian on the wire) with a per-token loss mask
//! (`1` where the token is a prediction target). Its hash is
//! `SHA-256("conclave/v1/shard" ‖ index u32be ‖ count u64be ‖ tokens ‖ mask)`; the dataset root
//! is a binary Merkle tree over the shard hashes with domain-separated leaves
//! (`SHA-256(0x00 ‖ shard hash)`) and nodes (`SHA-256(0x01 ‖ left ‖ right)`); an odd node is
//! carried up unchanged. A verifier holding only the root checks one shard with
//! [`verify_inclusion`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The hash of one shard.
pub fn shard_hash(index: u32, tokens: &[u16], mask: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"conclave/v1/shard");
    h.update(index.to_be_bytes());
    h.update((tokens.len() as u64).to_be_bytes());
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    h.update(mask);
    h.finalize().into()
}

fn leaf(hash: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(hash);
    h.finalize().into()
}

fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// The Merkle root over shard hashes (all zeros for no shards).
pub fn merkle_root(shards: &[[u8; 32]]) -> [u8; 32] {
    if shards.is_empty() {
        return [0; 32];
    }
    let mut level: Vec<[u8; 32]> = shards.iter().map(leaf).collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| {
                if p.len() == 2 {
                    node(&p[0], &p[1])
                } else {
                    p[0]
                }
            })
            .collect();
    }
    level[0]
}

/// The sibling path of shard `index` (bottom-up; levels where the node is carried up have no
/// sibling and add nothing).
pub fn inclusion_proof(shards: &[[u8; 32]], index: usize) -> Option<Vec<[u8; 32]>> {
    if index >= shards.len() {
        return None;
    }
    let mut level: Vec<[u8; 32]> = shards.iter().map(leaf).collect();
    let mut i = index;
    let mut path = Vec::new();
    while level.len() > 1 {
        let sib = i ^ 1;
        if sib < level.len() {
            path.push(level[sib]);
        }
        level = level
            .chunks(2)
            .map(|p| {
                if p.len() == 2 {
                    node(&p[0], &p[1])
                } else {
                    p[0]
                }
            })
            .collect();
        i /= 2;
    }
    Some(path)
}

/// Checks that `hash` is shard `index` of `count` under `root`.
pub fn verify_inclusion(
    root: &[u8; 32],
    count: usize,
    index: usize,
    hash: &[u8; 32],
    proof: &[[u8; 32]],
) -> bool {
    if index >= count {
        return false;
    }
    let (mut acc, mut i, mut n) = (leaf(hash), index, count);
    let mut path = proof.iter();
    while n > 1 {
        let sib = i ^ 1;
        if sib < n {
            let Some(s) = path.next() else { return false };
            acc = if i % 2 == 0 {
                node(&acc, s)
            } else {
                node(s, &acc)
            };
        }
        i /= 2;
        n = n.div_ceil(2);
    }
    path.next().is_none() && &acc == root
}

/// SplitMix64: the project's portable deterministic generator (no dependence on a crate's
/// algorithm choice across versions).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// A generator keyed by a domain string and numbers (SHA-256 of them).
    pub fn keyed(domain: &str, parts: &[u64]) -> Self {
        let mut h = Sha256::new();
        h.update(domain.as_bytes());
        for p in parts {
            h.update(p.to_be_bytes());
        }
        let d: [u8; 32] = h.finalize().into();
        let mut s = [0u8; 8];
        s.copy_from_slice(&d[..8]);
        SplitMix64(u64::from_be_bytes(s))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift with rejection), `n > 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SplitMix64::below(0)");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

/// The shard that `operator` trains on in `epoch`: operators take consecutive entries of a
/// permutation of the shards drawn from `(seed, epoch)`, so within an epoch no two of the first
/// `shards` operators share a shard. A pure function of its arguments.
pub fn assign_shard(seed: u64, epoch: u64, operator: u64, shards: u32) -> Option<u32> {
    if shards == 0 {
        return None;
    }
    let mut perm: Vec<u32> = (0..shards).collect();
    let mut rng = SplitMix64::keyed("conclave/v1/shard-assignment", &[seed, epoch]);
    for i in (1..perm.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    Some(perm[(operator % shards as u64) as usize])
}

/// One shard as the dataset manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub index: u32,
    pub tokens: u64,
    /// Hex SHA-256 ([`shard_hash`]).
    pub sha256: String,
}

/// What a job pins about its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetManifest {
    pub version: u32,
    /// Where the text came from, and its licence.
    pub source: String,
    /// Hex SHA-256 of the text the tokens were made from.
    pub corpus_sha256: String,
    /// Hex SHA-256 of the tokenizer's JSON.
    pub tokenizer_sha256: String,
    pub vocab_size: u32,
    /// `pretrain` or `sft`.
    pub kind: String,
    pub shards: Vec<ShardInfo>,
    /// The held-out validation split (hashed as shard `u32::MAX`).
    pub validation: ShardInfo,
    /// Hex Merkle root over the training shards.
    pub root: String,
}

/// Why a shard was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShardError {
    #[error("shard {index} is not in the dataset ({count} shards)")]
    NoSuchShard { index: u32, count: usize },
    #[error("shard {index}: hash {actual} does not match the dataset's {expected}")]
    HashMismatch {
        index: u32,
        expected: String,
        actual: String,
    },
    #[error("shard {index}: {tokens} tokens and {mask} mask bytes")]
    MaskLength {
        index: u32,
        tokens: usize,
        mask: usize,
    },
    #[error("the manifest's shard list does not hash to its root {root}")]
    BadRoot { root: String },
}

impl DatasetManifest {
    /// Recomputes the root from the shard list.
    pub fn check_root(&self) -> Result<(), ShardError> {
        let hashes = self.shard_hashes().ok_or_else(|| ShardError::BadRoot {
            root: self.root.clone(),
        })?;
        if hex::encode(merkle_root(&hashes)) != self.root {
            return Err(ShardError::BadRoot {
                root: self.root.clone(),
            });
        }
        Ok(())
    }

    fn shard_hashes(&self) -> Option<Vec<[u8; 32]>> {
        self.shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if s.index as usize != i {
                    return None;
                }
                let b = hex::decode(&s.sha256).ok()?;
                b.try_into().ok()
            })
            .collect()
    }

    /// Refuses a shard whose content does not hash to the manifest's entry.
    pub fn check_shard(&self, index: u32, tokens: &[u16], mask: &[u8]) -> Result<(), ShardError> {
        let expected = if index == u32::MAX {
            &self.validation
        } else {
            self.shards
                .get(index as usize)
                .ok_or(ShardError::NoSuchShard {
                    index,
                    count: self.shards.len(),
                })?
        };
        if tokens.len() != mask.len() {
            return Err(ShardError::MaskLength {
                index,
                tokens: tokens.len(),
                mask: mask.len(),
            });
        }
        let actual = hex::encode(shard_hash(index, tokens, mask));
        if actual != expected.sha256 {
            return Err(ShardError::HashMismatch {
                index,
                expected: expected.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(n: usize) -> Vec<[u8; 32]> {
        (0..n)
            .map(|i| shard_hash(i as u32, &[i as u16, 7], &[1, 1]))
            .collect()
    }

    #[test]
    fn inclusion_proofs_verify_for_every_size_and_index() {
        for n in 1..=9 {
            let h = hashes(n);
            let root = merkle_root(&h);
            for i in 0..n {
                let p = inclusion_proof(&h, i).unwrap();
                assert!(verify_inclusion(&root, n, i, &h[i], &p), "n={n} i={i}");
                // Another shard's hash, another position, or a shortened path fail.
                assert!(!verify_inclusion(&root, n, i, &h[(i + 1) % n], &p) || n == 1);
                if n > 1 {
                    assert!(!verify_inclusion(&root, n, (i + 1) % n, &h[i], &p));
                    assert!(!verify_inclusion(&root, n, i, &h[i], &p[..p.len() - 1]));
                }
            }
        }
    }

    #[test]
    fn root_depends_on_order_and_content() {
        let h = hashes(4);
        let mut swapped = h.clone();
        swapped.swap(0, 1);
        assert_ne!(merkle_root(&h), merkle_root(&swapped));
        assert_ne!(
            shard_hash(0, &[1, 2], &[1, 1]),
            shard_hash(0, &[1, 2], &[1, 0])
        );
        assert_ne!(
            shard_hash(0, &[1, 2], &[1, 1]),
            shard_hash(1, &[1, 2], &[1, 1])
        );
    }

    #[test]
    fn assignment_is_a_pure_permutation_per_epoch() {
        for epoch in 0..5 {
            let got: Vec<u32> = (0..16)
                .map(|op| assign_shard(42, epoch, op, 16).unwrap())
                .collect();
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(sorted, (0..16).collect::<Vec<_>>());
            assert_eq!(
                got,
                (0..16)
                    .map(|op| assign_shard(42, epoch, op, 16).unwrap())
                    .collect::<Vec<_>>()
            );
        }
        let e0: Vec<u32> = (0..16)
            .map(|o| assign_shard(42, 0, o, 16).unwrap())
            .collect();
        let e1: Vec<u32> = (0..16)
            .map(|o| assign_shard(42, 1, o, 16).unwrap())
            .collect();
        let s1: Vec<u32> = (0..16)
            .map(|o| assign_shard(43, 0, o, 16).unwrap())
            .collect();
        assert_ne!(e0, e1);
        assert_ne!(e0, s1);
        assert_eq!(assign_shard(1, 0, 0, 0), None);
    }

    #[test]
    fn splitmix_is_the_published_sequence() {
        // SplitMix64 with seed 0: the reference sequence (Vigna).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut r = SplitMix64::new(9);
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
        }
    }

    #[test]
    fn manifest_refuses_a_corrupted_shard() {
        let toks: Vec<Vec<u16>> = (0..3).map(|i| vec![i, i + 1, i + 2]).collect();
        let mask = vec![1u8; 3];
        let h: Vec<[u8; 32]> = toks
            .iter()
            .enumerate()
            .map(|(i, t)| shard_hash(i as u32, t, &mask))
            .collect();
        let m = DatasetManifest {
            version: 1,
            source: "test".into(),
            corpus_sha256: String::new(),
            tokenizer_sha256: String::new(),
            vocab_size: 8,
            kind: "pretrain".into(),
            shards: h
                .iter()
                .enumerate()
                .map(|(i, h)| ShardInfo {
                    index: i as u32,
                    tokens: 3,
                    sha256: hex::encode(h),
                })
                .collect(),
            validation: ShardInfo {
                index: u32::MAX,
                tokens: 0,
                sha256: hex::encode(shard_hash(u32::MAX, &[], &[])),
            },
            root: hex::encode(merkle_root(&h)),
        };
        m.check_root().unwrap();
        m.check_shard(1, &toks[1], &mask).unwrap();
        let mut bad = toks[1].clone();
        bad[2] ^= 1;
        assert!(matches!(
            m.check_shard(1, &bad, &mask),
            Err(ShardError::HashMismatch { index: 1, .. })
        ));
        assert!(matches!(
            m.check_shard(9, &bad, &mask),
            Err(ShardError::NoSuchShard { .. })
        ));
        let mut forged = m.clone();
        forged.shards[0].sha256 = hex::encode([0u8; 32]);
        assert!(forged.check_root().is_err());
    }
}
