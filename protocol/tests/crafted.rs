//! Hand-built hostile updates (the attack review's): each is refused by name before anything
//! is allocated for it, with checked arithmetic (no panic, whatever the header claims); and
//! non-canonical forms of a 2-bit codebook are refused, so one update has one encoding.

use conclave_protocol::update::{
    self, MAX_BLOCK_LEN, MAX_BLOCKS, MAX_DCT_BLOCK_SIDE, MAX_TOTAL_NUMEL,
};
use conclave_protocol::{
    BlockShape, Codebook, DecodeLimits, IndexEncoding, SparseUpdate, TensorUpdate, Transform,
    UpdateError, Values,
};

const IDENTITY: u8 = 0;
const DCT: u8 = 1;
const U32: u8 = 2;
const F32: u8 = 0;
const TWO_BIT: u8 = 2;

/// One tensor as it is written on the wire, every field free.
struct Wire {
    name: &'static str,
    shape: Vec<u64>,
    rows: u32,
    cols: u32,
    k: u32,
    index: u8,
    value: u8,
    codebook: Option<[f32; 6]>,
    indices: Vec<u8>,
    values: Vec<u8>,
}

impl Wire {
    /// A 1-D tensor of `n` elements in one block of `1 × n` (k = 1, u32 index 0, f32 1.0).
    fn one_block(n: u32) -> Self {
        Wire {
            name: "w",
            shape: vec![n as u64],
            rows: 1,
            cols: n,
            k: 1,
            index: U32,
            value: F32,
            codebook: None,
            indices: 0u32.to_le_bytes().to_vec(),
            values: 1f32.to_le_bytes().to_vec(),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.push(self.shape.len() as u8);
        for d in &self.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&self.rows.to_le_bytes());
        out.extend_from_slice(&self.cols.to_le_bytes());
        out.extend_from_slice(&self.k.to_le_bytes());
        out.push(self.index);
        out.push(self.value);
        if let Some(cb) = self.codebook {
            for f in cb {
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
        for part in [&self.indices, &self.values] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
}

fn bytes(transform: u8, tensors: &[Wire]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(update::MAGIC);
    out.extend_from_slice(&update::VERSION.to_le_bytes());
    out.push(transform);
    out.push(0);
    out.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
    for t in tensors {
        t.write(&mut out);
    }
    out
}

fn refuse(b: &[u8]) -> UpdateError {
    SparseUpdate::decode(b, &DecodeLimits::default()).unwrap_err()
}

#[test]
fn the_58_byte_update_with_a_huge_block_and_no_dct_is_refused() {
    // The attack review's shape: one 1-D tensor of 2³² − 1 elements in one block, k = 1.
    let b = bytes(IDENTITY, &[Wire::one_block(u32::MAX)]);
    assert_eq!(b.len(), 58);
    assert_eq!(
        refuse(&b),
        UpdateError::BlockTooLarge {
            tensor: "w".into(),
            rows: 1,
            cols: u32::MAX,
            len: u32::MAX as u64,
            max: MAX_BLOCK_LEN,
        }
    );
    // With the DCT the side is refused first (a receiver would build a side² basis).
    assert_eq!(
        refuse(&bytes(DCT, &[Wire::one_block(u32::MAX)])),
        UpdateError::DctBlockSideTooLarge {
            tensor: "w".into(),
            axis: "cols",
            side: u32::MAX,
            max: MAX_DCT_BLOCK_SIDE,
        }
    );
}

#[test]
fn the_original_2_4_gb_update_is_a_small_valid_one_without_dct_and_refused_with_it() {
    // 17 320² f32 twice (a basis and its transpose) is 2.4 GB: what the decoder used to build
    // for this 58-byte update even without a DCT. Without the DCT it is a valid update of one
    // 17 320-element block (the enclave now builds no basis for it); with the DCT its side is
    // over the limit.
    let b = bytes(IDENTITY, &[Wire::one_block(17_320)]);
    assert_eq!(b.len(), 58);
    let u = SparseUpdate::decode(&b, &DecodeLimits::default()).unwrap();
    assert_eq!(u.tensors[0].block.len(), 17_320);
    assert_eq!(u.encode().unwrap(), b);
    assert_eq!(
        refuse(&bytes(DCT, &[Wire::one_block(17_320)])),
        UpdateError::DctBlockSideTooLarge {
            tensor: "w".into(),
            axis: "cols",
            side: 17_320,
            max: MAX_DCT_BLOCK_SIDE,
        }
    );
    // The largest side accepted.
    let b = bytes(DCT, &[Wire::one_block(MAX_DCT_BLOCK_SIDE)]);
    assert!(SparseUpdate::decode(&b, &DecodeLimits::default()).is_ok());
}

#[test]
fn a_block_side_of_2_pow_31_is_an_error_not_a_panic() {
    let side = 1u32 << 31;
    assert_eq!(
        refuse(&bytes(DCT, &[Wire::one_block(side)])),
        UpdateError::DctBlockSideTooLarge {
            tensor: "w".into(),
            axis: "cols",
            side,
            max: MAX_DCT_BLOCK_SIDE,
        }
    );
    assert_eq!(
        refuse(&bytes(IDENTITY, &[Wire::one_block(side)])),
        UpdateError::BlockTooLarge {
            tensor: "w".into(),
            rows: 1,
            cols: side,
            len: side as u64,
            max: MAX_BLOCK_LEN,
        }
    );
    // Rows too, on a column vector.
    let t = Wire {
        shape: vec![side as u64, 1],
        rows: side,
        cols: 1,
        ..Wire::one_block(1)
    };
    assert!(matches!(
        refuse(&bytes(DCT, &[t])),
        UpdateError::DctBlockSideTooLarge { axis: "rows", side: s, .. } if s == side
    ));
    // A square block of 2³¹ × 2³¹: 2⁶² positions, a 2⁶²-element tensor.
    let t = Wire {
        shape: vec![side as u64, side as u64],
        rows: side,
        cols: side,
        ..Wire::one_block(1)
    };
    assert_eq!(
        refuse(&bytes(IDENTITY, &[t])),
        UpdateError::TooManyElements {
            tensor: "w".into(),
            numel: 1 << 62,
            max: DecodeLimits::default().max_numel,
        }
    );
}

#[test]
fn a_shape_whose_element_count_overflows_u64_is_named() {
    for shape in [
        vec![u64::MAX, 2],
        vec![1 << 32, 1 << 32, 2],
        vec![3, 1 << 63, 1, 1],
    ] {
        let t = Wire {
            shape: shape.clone(),
            ..Wire::one_block(1)
        };
        assert_eq!(
            refuse(&bytes(IDENTITY, &[t])),
            UpdateError::ShapeOverflow {
                tensor: "w".into(),
                shape: shape.clone()
            },
            "{shape:?}"
        );
        // The accessors saturate instead of overflowing.
        let t = TensorUpdate {
            name: "w".into(),
            shape,
            block: BlockShape { rows: 1, cols: 1 },
            k: 1,
            index_encoding: IndexEncoding::U8,
            indices: vec![],
            values: Values::F32(vec![]),
        };
        assert_eq!(t.numel(), u64::MAX);
        let _ = t.num_blocks();
        assert!(matches!(
            t.validate(Transform::Dct, &DecodeLimits::default()),
            Err(UpdateError::ShapeOverflow { .. })
        ));
    }
}

/// A tensor header whose data would follow: the decoder must refuse it before reading any.
fn header_only(shape: Vec<u64>, rows: u32, cols: u32, k: u32) -> Vec<u8> {
    let mut b = bytes(
        IDENTITY,
        &[Wire {
            shape,
            rows,
            cols,
            k,
            ..Wire::one_block(1)
        }],
    );
    // Drop the index and value sections: the header alone must be refused.
    b.truncate(b.len() - 16);
    b
}

#[test]
fn counts_over_the_limits_are_refused_from_the_header() {
    let d = DecodeLimits::default();
    // Elements of one tensor.
    assert_eq!(
        refuse(&header_only(vec![1 << 35], 1, 1 << 24, 1)),
        UpdateError::TooManyElements {
            tensor: "w".into(),
            numel: 1 << 35,
            max: d.max_numel,
        }
    );
    // Elements in all: one tensor of 2³³ is within the per-tensor limit, over the total.
    assert_eq!(
        refuse(&header_only(vec![1 << 33], 1, 1 << 24, 1)),
        UpdateError::TooManyTotalElements {
            tensor: "w".into(),
            total: 1 << 33,
            max: MAX_TOTAL_NUMEL,
        }
    );
    // Blocks: 2²⁷ blocks of one element, k = 1 (2²⁷ entries, within that limit).
    assert_eq!(
        refuse(&header_only(vec![1 << 27], 1, 1, 1)),
        UpdateError::TooManyBlocks {
            tensor: "w".into(),
            blocks: 1 << 27,
            max: MAX_BLOCKS,
        }
    );
    // Entries: 2²⁰ blocks × k = 2¹⁰.
    assert_eq!(
        refuse(&header_only(vec![1 << 30], 1, 1 << 10, 1 << 10)),
        UpdateError::TooManyEntries {
            tensor: "w".into(),
            entries: 1 << 30,
            max: d.max_entries,
        }
    );
    // Tensors.
    let mut b = bytes(IDENTITY, &[]);
    b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        refuse(&b),
        UpdateError::TooManyTensors {
            count: u32::MAX as usize,
            max: d.max_tensors,
        }
    );
}

#[test]
fn totals_sum_over_tensors() {
    // Each tensor is within every limit; the second takes the sums over.
    let t = |name| Wire {
        name,
        ..Wire::one_block(64)
    };
    let b = bytes(IDENTITY, &[t("a"), t("b")]);
    let ok = DecodeLimits {
        max_total_numel: 128,
        max_blocks: 2,
        max_entries: 2,
        ..DecodeLimits::default()
    };
    assert!(SparseUpdate::decode(&b, &ok).is_ok());
    let tight = |l: DecodeLimits| SparseUpdate::decode(&b, &l).unwrap_err();
    assert_eq!(
        tight(DecodeLimits {
            max_total_numel: 127,
            ..ok.clone()
        }),
        UpdateError::TooManyTotalElements {
            tensor: "b".into(),
            total: 128,
            max: 127,
        }
    );
    assert_eq!(
        tight(DecodeLimits {
            max_blocks: 1,
            ..ok.clone()
        }),
        UpdateError::TooManyBlocks {
            tensor: "b".into(),
            blocks: 2,
            max: 1,
        }
    );
    assert_eq!(
        tight(DecodeLimits {
            max_entries: 1,
            ..ok.clone()
        }),
        UpdateError::TooManyEntries {
            tensor: "b".into(),
            entries: 2,
            max: 1,
        }
    );
    // The encoder holds itself to the same totals.
    let u = SparseUpdate::decode(&b, &ok).unwrap();
    assert!(matches!(
        u.validate(&DecodeLimits {
            max_total_numel: 100,
            ..ok
        }),
        Err(UpdateError::TooManyTotalElements { total: 128, .. })
    ));
}

/// A 2-bit tensor of 8 values in one block, its codes and codebook as given.
fn two_bit(codes: [u8; 8], cb: [f32; 6]) -> Vec<u8> {
    let packed = codes
        .chunks(4)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |a, (i, &q)| a | (q << (2 * i)))
        })
        .collect();
    bytes(
        IDENTITY,
        &[Wire {
            name: "w",
            shape: vec![8],
            rows: 1,
            cols: 8,
            k: 8,
            index: 0,
            value: TWO_BIT,
            codebook: Some(cb),
            indices: (0..8).collect(),
            values: packed,
        }],
    )
}

fn dequantized(b: &[u8]) -> Vec<f32> {
    SparseUpdate::decode(b, &DecodeLimits::default())
        .unwrap()
        .tensors[0]
        .values
        .dequantize()
}

#[test]
fn codebooks_have_one_canonical_form() {
    // shift, scale, lookup[0..4]. Codes use bins 1, 2, 3; bin 0 is empty, so +0.
    let codes = [1, 2, 3, 2, 2, 1, 3, 2];
    let canonical = [0.5, 1.25, 0.0, -1.0, 0.0, 2.0];
    let want = dequantized(&two_bit(codes, canonical));
    assert_eq!(want, vec![-0.5, 0.5, 2.5, 0.5, 0.5, -0.5, 2.5, 0.5]);

    // Something in the unused entry (it changes no value): refused, even -0.
    for junk in [7.0, -0.0, f32::MIN_POSITIVE] {
        let mut cb = canonical;
        cb[2] = junk;
        assert_eq!(
            SparseUpdate::decode(&two_bit(codes, cb), &DecodeLimits::default()).unwrap_err(),
            UpdateError::UnusedCodebookEntry {
                tensor: "w".into(),
                code: 0,
                value: junk,
            }
        );
    }

    // The same values with bins 1 and 3 swapped (codes and entries together): refused.
    let swapped_codes = codes.map(|q| match q {
        1 => 3,
        3 => 1,
        q => q,
    });
    let swapped = [0.5, 1.25, 0.0, 2.0, 0.0, -1.0];
    let e = SparseUpdate::decode(&two_bit(swapped_codes, swapped), &DecodeLimits::default())
        .unwrap_err();
    assert!(
        matches!(
            e,
            UpdateError::CodebookNotIncreasing {
                lower: 1,
                upper: 2,
                ..
            }
        ),
        "{e}"
    );
    // Equal used entries are not increasing either (two codes for one value).
    let e = SparseUpdate::decode(
        &two_bit(codes, [0.5, 1.25, 0.0, 0.0, 0.0, 2.0]),
        &DecodeLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(
        e,
        UpdateError::CodebookNotIncreasing {
            lower: 1,
            upper: 2,
            ..
        }
    ));

    // Non-finite fields and a scale that is not positive, each by field.
    for (at, v, field) in [
        (0, f32::INFINITY, "shift"),
        (1, f32::NAN, "scale"),
        (1, 0.0, "scale"),
        (1, -1.25, "scale"),
        (5, f32::NEG_INFINITY, "lookup[3]"),
        (4, f32::NAN, "lookup[2]"),
    ] {
        let mut cb = canonical;
        cb[at] = v;
        let e = SparseUpdate::decode(&two_bit(codes, cb), &DecodeLimits::default()).unwrap_err();
        assert!(
            matches!(&e, UpdateError::BadCodebook { field: f, .. } if *f == field),
            "{field}: {e}"
        );
    }

    // Finite fields whose sum, a decoded value, is not.
    let e = SparseUpdate::decode(
        &two_bit(codes, [3e38, 1.25, 0.0, -1.0, 0.0, 3e38]),
        &DecodeLimits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            UpdateError::BadCodebook {
                field: "lookup[3] + shift",
                ..
            }
        ),
        "{e}"
    );

    // What the encoder writes round-trips.
    let u = SparseUpdate {
        transform: Transform::Identity,
        tensors: vec![TensorUpdate {
            name: "w".into(),
            shape: vec![8],
            block: BlockShape { rows: 1, cols: 8 },
            k: 8,
            index_encoding: IndexEncoding::U8,
            indices: (0..8).collect(),
            values: Values::TwoBit {
                codes: codes.to_vec(),
                codebook: Codebook {
                    shift: 0.5,
                    scale: 1.25,
                    lookup: [0.0, -1.0, 0.0, 2.0],
                },
            },
        }],
    };
    assert_eq!(u.encode().unwrap(), two_bit(codes, canonical));
}

#[test]
fn every_single_byte_change_of_a_crafted_update_is_handled() {
    // Every value of every byte of the 58-byte update decodes or is refused by name.
    let b = bytes(IDENTITY, &[Wire::one_block(17_320)]);
    for i in 0..b.len() {
        for v in 0..=255u8 {
            let mut c = b.clone();
            c[i] = v;
            if let Ok(u) = SparseUpdate::decode(&c, &DecodeLimits::default()) {
                assert_eq!(u.encode().unwrap(), c);
            }
        }
    }
}
