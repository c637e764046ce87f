//! The sparse-update wire format: round trips, canonical bytes, and a named refusal for every
//! kind of bad input.

use conclave_protocol::update::{self, matrix_view};
use conclave_protocol::{
    BlockShape, Codebook, DecodeLimits, IndexEncoding, SparseUpdate, TensorUpdate, Transform,
    UpdateError, Values,
};
use proptest::prelude::*;

fn tensor(
    shape: Vec<u64>,
    block: (u32, u32),
    k: u32,
    enc: IndexEncoding,
    values: &str,
) -> TensorUpdate {
    let (lead, r, c) = matrix_view(&shape).unwrap();
    let blocks = lead * (r / block.0 as u64) * (c / block.1 as u64);
    let totalk = block.0 * block.1;
    let mut indices = Vec::new();
    for b in 0..blocks as u32 {
        for j in 0..k {
            indices.push((j * (totalk / k) + b % (totalk / k).max(1)).min(totalk - k + j));
        }
    }
    let n = indices.len();
    let values = match values {
        "f32" => Values::F32((0..n).map(|i| i as f32 * 0.25 - 3.0).collect()),
        "bf16" => Values::Bf16((0..n).map(|i| 0x3F80 + (i % 7) as u16).collect()),
        "2bit" => Values::TwoBit {
            codes: (0..n).map(|i| (i % 4) as u8).collect(),
            codebook: Codebook {
                shift: 0.1,
                scale: 0.5,
                lookup: [-1.0, -0.3, 0.0, 0.9],
            },
        },
        _ => Values::OneBit((0..n).map(|i| i % 3 == 0).collect()),
    };
    TensorUpdate {
        name: format!("layer.{shape:?}"),
        shape,
        block: BlockShape {
            rows: block.0,
            cols: block.1,
        },
        k,
        index_encoding: enc,
        indices,
        values,
    }
}

fn sample() -> SparseUpdate {
    SparseUpdate {
        transform: Transform::Dct,
        tensors: vec![
            tensor(
                vec![128, 192],
                (64, 64),
                8,
                IndexEncoding::EliasFano,
                "2bit",
            ),
            tensor(vec![100], (1, 50), 5, IndexEncoding::U8, "f32"),
            tensor(vec![2, 3, 8, 8], (8, 8), 4, IndexEncoding::Packed12, "1bit"),
            tensor(vec![96, 96], (48, 48), 16, IndexEncoding::U16, "bf16"),
        ],
    }
}

#[test]
fn every_encoding_round_trips_and_bytes_are_canonical() {
    let u = sample();
    let bytes = u.encode().unwrap();
    let back = SparseUpdate::decode(&bytes, &DecodeLimits::default()).unwrap();
    assert_eq!(back, u);
    assert_eq!(back.encode().unwrap(), bytes);
    assert_eq!(back.hash().unwrap(), update::hash_bytes(&bytes));
}

#[test]
fn smallest_index_encoding_is_elias_fano_for_sparse_blocks() {
    assert_eq!(IndexEncoding::smallest(64, 4096), IndexEncoding::EliasFano);
    assert_eq!(IndexEncoding::EliasFano.byte_len(64, 4096, 1), Some(64));
    assert_eq!(IndexEncoding::Packed12.byte_len(64, 4096, 1), Some(96));
    for (k, totalk) in [
        (1u64, 1u64),
        (4, 4096),
        (32, 64),
        (4096, 4096),
        (5, 1 << 20),
    ] {
        let best = IndexEncoding::smallest(k, totalk);
        for e in [
            IndexEncoding::U8,
            IndexEncoding::U16,
            IndexEncoding::U32,
            IndexEncoding::Packed12,
        ] {
            if e.holds(totalk) {
                assert!(
                    best.byte_len(k, totalk, 64) <= e.byte_len(k, totalk, 64),
                    "{k} {totalk} {e}"
                );
            }
        }
    }
}

fn refuse(bytes: &[u8]) -> UpdateError {
    SparseUpdate::decode(bytes, &DecodeLimits::default()).unwrap_err()
}

#[test]
fn truncated_magic_version_and_trailing_bytes_are_named() {
    let bytes = sample().encode().unwrap();
    assert!(matches!(
        refuse(&bytes[..bytes.len() - 1]),
        UpdateError::Truncated { .. }
    ));
    let mut b = bytes.clone();
    b[0] = b'X';
    assert_eq!(refuse(&b), UpdateError::BadMagic);
    let mut b = bytes.clone();
    b[8] = 2;
    assert_eq!(refuse(&b), UpdateError::UnsupportedVersion { got: 2 });
    let mut b = bytes.clone();
    b[10] = 9;
    assert_eq!(refuse(&b), UpdateError::UnknownTransform { code: 9 });
    let mut b = bytes.clone();
    b.push(0);
    assert_eq!(refuse(&b), UpdateError::TrailingBytes { count: 1 });
    let limits = DecodeLimits {
        max_bytes: 100,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        SparseUpdate::decode(&bytes, &limits),
        Err(UpdateError::TooLarge { .. })
    ));
}

fn one(t: TensorUpdate) -> Vec<u8> {
    // Encode without the encoder's own checks by patching a valid encoding.
    SparseUpdate {
        transform: Transform::Identity,
        tensors: vec![t],
    }
    .encode()
    .unwrap()
}

#[test]
fn out_of_range_and_unsorted_indices_are_refused() {
    let t = tensor(vec![16], (1, 16), 2, IndexEncoding::U8, "f32");
    let bytes = one(t.clone());
    // Layout: header 16, name, ndim 1, dim 8, block 8, k 4, encodings 2, idx len 4, idx.
    let idx_at = 16 + 2 + t.name.len() + 1 + 8 + 8 + 4 + 2 + 4;
    let mut b = bytes.clone();
    b[idx_at + 1] = 16;
    assert!(matches!(
        refuse(&b),
        UpdateError::IndexOutOfRange {
            index: 16,
            totalk: 16,
            ..
        }
    ));
    let mut b = bytes.clone();
    b[idx_at + 1] = b[idx_at];
    assert!(matches!(
        refuse(&b),
        UpdateError::IndicesNotIncreasing { .. }
    ));
}

#[test]
fn wrong_counts_non_finite_values_and_codebooks_are_refused() {
    let mut t = tensor(vec![16], (1, 16), 2, IndexEncoding::U8, "f32");
    t.indices.pop();
    let e = SparseUpdate {
        transform: Transform::Dct,
        tensors: vec![t],
    }
    .encode()
    .unwrap_err();
    assert!(matches!(
        e,
        UpdateError::CountMismatch {
            what: "indices",
            expected: 2,
            got: 1,
            ..
        }
    ));

    let t = tensor(vec![16], (1, 16), 2, IndexEncoding::U8, "f32");
    let mut b = one(t);
    let n = b.len();
    b[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(matches!(
        refuse(&b),
        UpdateError::NonFiniteValue { position: 1, .. }
    ));

    let mut t = tensor(vec![16], (1, 16), 2, IndexEncoding::U8, "2bit");
    if let Values::TwoBit { codebook, .. } = &mut t.values {
        codebook.lookup[2] = f32::INFINITY;
    }
    let e = SparseUpdate {
        transform: Transform::Dct,
        tensors: vec![t],
    }
    .encode()
    .unwrap_err();
    assert!(matches!(e, UpdateError::BadCodebook { .. }));
}

#[test]
fn bad_geometry_is_refused() {
    let mut t = tensor(vec![10, 10], (5, 5), 2, IndexEncoding::U8, "f32");
    t.block.cols = 3;
    let e = SparseUpdate {
        transform: Transform::Dct,
        tensors: vec![t],
    }
    .encode()
    .unwrap_err();
    assert!(matches!(
        e,
        UpdateError::BlockDoesNotDivide { axis: "cols", .. }
    ));
    let mut t = tensor(vec![10, 10], (5, 5), 2, IndexEncoding::U8, "f32");
    t.k = 26;
    let e = SparseUpdate {
        transform: Transform::Dct,
        tensors: vec![t],
    }
    .encode()
    .unwrap_err();
    assert!(matches!(
        e,
        UpdateError::TopkOutOfRange {
            k: 26,
            totalk: 25,
            ..
        }
    ));
    let t = tensor(
        vec![512, 512],
        (512, 512),
        2,
        IndexEncoding::Packed12,
        "f32",
    );
    let e = SparseUpdate {
        transform: Transform::Dct,
        tensors: vec![t],
    }
    .encode()
    .unwrap_err();
    assert!(matches!(e, UpdateError::IndexEncodingTooNarrow { .. }));
    let a = tensor(vec![16], (1, 16), 2, IndexEncoding::U8, "f32");
    let e = SparseUpdate {
        transform: Transform::Dct,
        tensors: vec![a.clone(), a],
    }
    .encode()
    .unwrap_err();
    assert!(matches!(e, UpdateError::DuplicateName { .. }));
}

#[test]
fn a_huge_announced_tensor_is_refused_before_allocation() {
    let t = tensor(vec![16], (1, 16), 2, IndexEncoding::U8, "f32");
    let mut b = one(t.clone());
    // Announce 2^33 elements with block 16: 2^30 entries, over max_entries.
    let dim_at = 16 + 2 + t.name.len() + 1;
    b[dim_at..dim_at + 8].copy_from_slice(&(1u64 << 33).to_le_bytes());
    assert!(matches!(refuse(&b), UpdateError::TooManyEntries { .. }));
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = SparseUpdate::decode(&bytes, &DecodeLimits::default());
    }

    #[test]
    fn flipping_any_byte_is_refused_or_changes_the_update(pos in 0usize..4096, bit in 0u8..8) {
        let u = sample();
        let bytes = u.encode().unwrap();
        let mut b = bytes.clone();
        let p = pos % b.len();
        b[p] ^= 1 << bit;
        if let Ok(v) = SparseUpdate::decode(&b, &DecodeLimits::default()) {
            // Compared by canonical encoding: a flipped sign bit of a zero (0.0 → -0.0) is a
            // different update although the floats compare equal.
            prop_assert_ne!(v.encode().unwrap(), bytes);
        }
    }
}
