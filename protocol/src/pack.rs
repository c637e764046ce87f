//! Bit packings used by the sparse update: 12-bit index pairs (Templar), 2-bit codes four to a
//! byte, 1-bit signs eight to a byte (Psyche), and bf16 rounding as torch does it.
//!
//! Every packer pads its last byte with zero bits, and every unpacker insists on that padding,
//! so one list of values has exactly one encoding and its hash is well defined.

use thiserror::Error;

/// Why packed bytes could not be unpacked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PackError {
    #[error("{what}: expected {expected} bytes for {count} entries, got {got}")]
    Length {
        what: &'static str,
        count: usize,
        expected: usize,
        got: usize,
    },
    #[error("{what}: the padding bits of the last byte are not zero")]
    NonZeroPadding { what: &'static str },
    #[error("{what}: a block does not hold exactly k indices")]
    EliasFanoCount { what: &'static str },
    #[error("12-bit packing holds indices below 4096, got {index}")]
    IndexTooLarge { index: u32 },
}

/// Bytes that `count` 12-bit indices take: three per pair, a lone last index padded to a pair.
pub fn packed12_len(count: usize) -> Option<usize> {
    count.div_ceil(2).checked_mul(3)
}

/// Packs indices below 4096 in pairs `(a, b)` as `[a & 0xFF, (a >> 8) | (b & 0xF) << 4, b >> 4]`
/// (Templar `pack_12bit_indices`). An odd count is padded with a zero index.
pub fn pack12(indices: &[u32]) -> Result<Vec<u8>, PackError> {
    let mut out = Vec::with_capacity(packed12_len(indices.len()).unwrap_or(0));
    for pair in indices.chunks(2) {
        let a = pair[0];
        let b = pair.get(1).copied().unwrap_or(0);
        for &i in pair {
            if i >= 4096 {
                return Err(PackError::IndexTooLarge { index: i });
            }
        }
        out.push((a & 0xFF) as u8);
        out.push((((a >> 8) & 0x0F) | ((b & 0x0F) << 4)) as u8);
        out.push(((b >> 4) & 0xFF) as u8);
    }
    Ok(out)
}

/// Reverses [`pack12`] for `count` indices.
pub fn unpack12(bytes: &[u8], count: usize) -> Result<Vec<u32>, PackError> {
    let expected = packed12_len(count).ok_or(PackError::Length {
        what: "12-bit indices",
        count,
        expected: usize::MAX,
        got: bytes.len(),
    })?;
    if bytes.len() != expected {
        return Err(PackError::Length {
            what: "12-bit indices",
            count,
            expected,
            got: bytes.len(),
        });
    }
    let mut out = Vec::with_capacity(count);
    for t in bytes.chunks_exact(3) {
        let (b0, b1, b2) = (t[0] as u32, t[1] as u32, t[2] as u32);
        out.push(b0 | ((b1 & 0x0F) << 8));
        out.push((b1 >> 4) | (b2 << 4));
    }
    if out.len() > count {
        if out[count] != 0 {
            return Err(PackError::NonZeroPadding {
                what: "12-bit indices",
            });
        }
        out.truncate(count);
    }
    Ok(out)
}

/// Packs 2-bit codes four to a byte, the first code in the lowest two bits.
pub fn pack2(codes: &[u8]) -> Vec<u8> {
    codes
        .chunks(4)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |acc, (i, &q)| acc | ((q & 0b11) << (2 * i)))
        })
        .collect()
}

/// Reverses [`pack2`] for `count` codes.
pub fn unpack2(bytes: &[u8], count: usize) -> Result<Vec<u8>, PackError> {
    let expected = count.div_ceil(4);
    if bytes.len() != expected {
        return Err(PackError::Length {
            what: "2-bit codes",
            count,
            expected,
            got: bytes.len(),
        });
    }
    let mut out = Vec::with_capacity(count);
    for &b in bytes {
        for i in 0..4 {
            out.push((b >> (2 * i)) & 0b11);
        }
    }
    if out[count..].iter().any(|&q| q != 0) {
        return Err(PackError::NonZeroPadding {
            what: "2-bit codes",
        });
    }
    out.truncate(count);
    Ok(out)
}

/// Packs sign bits (true = negative) eight to a byte, least significant bit first (Psyche's
/// `quantize_1bit`).
pub fn pack_signs(negative: &[bool]) -> Vec<u8> {
    negative
        .chunks(8)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |acc, (i, &n)| acc | ((n as u8) << i))
        })
        .collect()
}

/// Reverses [`pack_signs`] for `count` signs.
pub fn unpack_signs(bytes: &[u8], count: usize) -> Result<Vec<bool>, PackError> {
    let expected = count.div_ceil(8);
    if bytes.len() != expected {
        return Err(PackError::Length {
            what: "1-bit signs",
            count,
            expected,
            got: bytes.len(),
        });
    }
    let mut out = Vec::with_capacity(expected * 8);
    for &b in bytes {
        for i in 0..8 {
            out.push((b >> i) & 1 == 1);
        }
    }
    if out[count..].iter().any(|&n| n) {
        return Err(PackError::NonZeroPadding {
            what: "1-bit signs",
        });
    }
    out.truncate(count);
    Ok(out)
}

/// f32 → bf16 bits, round to nearest even, NaN kept quiet (what `tensor.to(torch.bfloat16)` does).
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let lsb = (bits >> 16) & 1;
    (bits.wrapping_add(0x7FFF + lsb) >> 16) as u16
}

/// bf16 bits → f32 (exact).
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Whether bf16 bits are a finite number.
pub fn bf16_is_finite(b: u16) -> bool {
    (b & 0x7F80) != 0x7F80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twelve_bit_pair_matches_the_reference_layout() {
        // (0x123, 0xABC) → [0x23, 0xC1, 0xAB] (REFERENCE-ALGORITHMS §2.5).
        assert_eq!(pack12(&[0x123, 0xABC]).unwrap(), vec![0x23, 0xC1, 0xAB]);
        assert_eq!(
            unpack12(&[0x23, 0xC1, 0xAB], 2).unwrap(),
            vec![0x123, 0xABC]
        );
    }

    #[test]
    fn twelve_bit_odd_count_pads_and_checks_padding() {
        let p = pack12(&[4095, 7, 1]).unwrap();
        assert_eq!(p.len(), 6);
        assert_eq!(unpack12(&p, 3).unwrap(), vec![4095, 7, 1]);
        let mut bad = p.clone();
        bad[5] = 1;
        assert!(matches!(
            unpack12(&bad, 3),
            Err(PackError::NonZeroPadding { .. })
        ));
        assert!(matches!(
            pack12(&[4096]),
            Err(PackError::IndexTooLarge { index: 4096 })
        ));
        assert!(unpack12(&p, 2).is_err());
    }

    #[test]
    fn two_bit_codes_pack_low_bits_first() {
        assert_eq!(pack2(&[1, 2, 3, 0, 3]), vec![0b00_11_10_01, 0b11]);
        assert_eq!(
            unpack2(&[0b00_11_10_01, 0b11], 5).unwrap(),
            vec![1, 2, 3, 0, 3]
        );
        assert!(unpack2(&[0b00_11_10_01, 0b0111], 5).is_err());
        assert!(unpack2(&[0], 5).is_err());
    }

    #[test]
    fn signs_pack_lsb_first() {
        let s = [true, false, false, true, false, false, false, false, true];
        assert_eq!(pack_signs(&s), vec![0b0000_1001, 0b1]);
        assert_eq!(unpack_signs(&[0b0000_1001, 0b1], 9).unwrap(), s.to_vec());
        assert!(unpack_signs(&[0, 0b10], 9).is_err());
    }

    #[test]
    fn bf16_rounds_half_to_even() {
        // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: rounds to even (1.0).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3F80);
        // 1 + 3·2^-8 is halfway between 1.0078125 (odd) and 1.015625: rounds up to even.
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(bf16_to_f32(0x3F80), 1.0);
        assert!(!bf16_is_finite(f32_to_bf16(f32::INFINITY)));
        assert!(!bf16_is_finite(f32_to_bf16(f32::NAN)));
    }
}

/// Elias–Fano coding of the sorted positions of one block: `k` indices below `totalk` take
/// `k·l + k + ((totalk − 1) >> l)` bits with `l = ⌊log2(totalk / k)⌋`, against `k·12` for
/// 12-bit pairs (k = 64 of 4096: 511 bits instead of 768). Every block has the same bit length,
/// and blocks follow each other in one LSB-first bit stream.
pub mod elias_fano {
    use super::PackError;

    /// Low bits per index.
    pub fn low_bits(k: u64, totalk: u64) -> u32 {
        if k == 0 || totalk <= k {
            0
        } else {
            (totalk / k).ilog2()
        }
    }

    /// Bits one block takes.
    pub fn block_bits(k: u64, totalk: u64) -> Option<u64> {
        let l = low_bits(k, totalk) as u64;
        k.checked_mul(l)?
            .checked_add(k)?
            .checked_add(totalk.saturating_sub(1) >> l)
    }

    /// Bytes `blocks` blocks take.
    pub fn byte_len(k: u64, totalk: u64, blocks: u64) -> Option<usize> {
        let bits = block_bits(k, totalk)?.checked_mul(blocks)?;
        usize::try_from(bits.div_ceil(8)).ok()
    }

    /// Encodes `indices` (blocks × k, each block non-decreasing and below `totalk`).
    pub fn encode(indices: &[u32], k: usize, totalk: u64) -> Vec<u8> {
        let l = low_bits(k as u64, totalk);
        let blocks = indices.len().checked_div(k).unwrap_or(0) as u64;
        let mut w = BitWriter::with_bytes(byte_len(k as u64, totalk, blocks).unwrap_or(0));
        let upper_len = k as u64 + (totalk.saturating_sub(1) >> l);
        for block in indices.chunks(k.max(1)) {
            for &x in block {
                w.put(x as u64 & ((1u64 << l) - 1), l);
            }
            let start = w.pos;
            for (i, &x) in block.iter().enumerate() {
                w.set(start + (x as u64 >> l) + i as u64);
            }
            w.pos = start + upper_len;
        }
        w.bytes
    }

    /// Decodes `blocks` blocks of `k` indices below `totalk`.
    pub fn decode(
        bytes: &[u8],
        k: usize,
        totalk: u64,
        blocks: usize,
    ) -> Result<Vec<u32>, PackError> {
        let what = "Elias-Fano indices";
        let expected = byte_len(k as u64, totalk, blocks as u64).unwrap_or(usize::MAX);
        if bytes.len() != expected {
            return Err(PackError::Length {
                what,
                count: blocks.saturating_mul(k),
                expected,
                got: bytes.len(),
            });
        }
        let l = low_bits(k as u64, totalk);
        let upper_len = k as u64 + (totalk.saturating_sub(1) >> l);
        let mut out = Vec::with_capacity(blocks.saturating_mul(k));
        // A block is k low parts of l bits, then the upper bit vector. The i-th set upper bit
        // pairs with the i-th low part, read in place (no k-sized buffer: k comes from the
        // header, and the bytes were only checked to be long enough for it).
        let mut start = 0u64;
        for _ in 0..blocks {
            let upper_start = start + k as u64 * l as u64;
            let mut low = BitReader { bytes, pos: start };
            let mut upper = BitReader {
                bytes,
                pos: upper_start,
            };
            let mut i = 0usize;
            for bit in 0..upper_len {
                if upper.get(1) == 1 {
                    if i == k {
                        return Err(PackError::EliasFanoCount { what });
                    }
                    let high = bit - i as u64;
                    let x = (high << l) | low.get(l);
                    out.push(u32::try_from(x).map_err(|_| PackError::EliasFanoCount { what })?);
                    i += 1;
                }
            }
            if i != k {
                return Err(PackError::EliasFanoCount { what });
            }
            start = upper_start + upper_len;
        }
        let used = start;
        if (used..bytes.len() as u64 * 8).any(|b| bytes[(b / 8) as usize] >> (b % 8) & 1 == 1) {
            return Err(PackError::NonZeroPadding { what });
        }
        Ok(out)
    }

    struct BitWriter {
        bytes: Vec<u8>,
        pos: u64,
    }

    impl BitWriter {
        fn with_bytes(n: usize) -> Self {
            BitWriter {
                bytes: vec![0; n],
                pos: 0,
            }
        }
        fn set(&mut self, bit: u64) {
            if let Some(b) = self.bytes.get_mut((bit / 8) as usize) {
                *b |= 1 << (bit % 8);
            }
        }
        fn put(&mut self, value: u64, bits: u32) {
            for j in 0..bits as u64 {
                if value >> j & 1 == 1 {
                    self.set(self.pos + j);
                }
            }
            self.pos += bits as u64;
        }
    }

    struct BitReader<'a> {
        bytes: &'a [u8],
        pos: u64,
    }

    impl BitReader<'_> {
        fn get(&mut self, bits: u32) -> u64 {
            let mut v = 0u64;
            for j in 0..bits as u64 {
                let b = self.pos + j;
                let byte = self.bytes.get((b / 8) as usize).copied().unwrap_or(0);
                v |= ((byte >> (b % 8)) as u64 & 1) << j;
            }
            self.pos += bits as u64;
            v
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn sizes_match_the_formula() {
            assert_eq!(block_bits(64, 4096), Some(64 * 6 + 64 + 63));
            assert_eq!(block_bits(4, 4096), Some(4 * 10 + 4 + 3));
            assert_eq!(block_bits(64, 64), Some(64 + 63));
            assert_eq!(byte_len(64, 4096, 2), Some((511 * 2usize).div_ceil(8)));
        }

        #[test]
        fn round_trips_and_rejects_wrong_counts() {
            let idx = [0u32, 1, 5, 4095, 2, 3, 7, 4000];
            let b = encode(&idx, 4, 4096);
            assert_eq!(decode(&b, 4, 4096, 2).unwrap(), idx.to_vec());
            let full: Vec<u32> = (0..64).collect();
            assert_eq!(decode(&encode(&full, 64, 64), 64, 64, 1).unwrap(), full);
            // Flip one upper bit: the block no longer has exactly k ones.
            let mut bad = b.clone();
            bad[5] ^= 0x01;
            assert!(decode(&bad, 4, 4096, 2).is_err());
            assert!(decode(&b[..b.len() - 1], 4, 4096, 2).is_err());
        }
    }
}
