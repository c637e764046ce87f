//! The sparse compressed update a trainer sends each round (DeMo / SparseLoCo).
//!
//! For every parameter tensor the sender splits the last two dimensions into blocks of
//! `rows × cols` (1-D tensors are one row; leading dimensions are a batch of matrices), applies
//! the round's [`Transform`] to each block, and keeps `k` coefficients per block. The update
//! carries, per tensor, the name, shape, block shape, `k`, the kept positions (flat index
//! `r·cols + c` within each block) and their values in one of four [`ValueEncoding`]s.
//!
//! ## Wire format, version 1 (all integers little-endian)
//!
//! ```text
//! "CNVUPD01" | version u16 = 1 | transform u8 (0 identity, 1 DCT-II ortho) | reserved u8 = 0
//! tensor count u32, then per tensor:
//!   name: len u16, UTF-8 | ndim u8, dims u64 × ndim | block rows u32, cols u32 | k u32
//!   index encoding u8 (0 u8, 1 u16, 2 u32, 3 12-bit pairs, 4 Elias-Fano) | value encoding u8 (0 f32,
//!   1 bf16, 2 2-bit codebook, 3 1-bit sign) | [2-bit only: shift f32, scale f32, lookup f32 × 4]
//!   index bytes: len u32, bytes | value bytes: len u32, bytes
//! ```
//!
//! Blocks are in row-major order over (leading index, block row, block column); each block's `k`
//! indices are strictly increasing, so one update has exactly one encoding and the
//! [`UpdateHash`] (SHA-256 of the bytes) names it. Decoding checks every count, range, and
//! value before anything is used, against [`DecodeLimits`].
//!
//! ## Canonical form
//!
//! Whatever the encoder leaves no choice over must have the one form it writes, or the same
//! update would have several encodings (and hashes): padding bits are zero ([`pack`]); floats are
//! finite; a 2-bit codebook's scale is positive, an entry that no code uses is `+0.0` (the
//! encoder's empty bin), and the entries that codes use strictly increase with the code (the
//! encoder's bins are ordered intervals). Each departure is refused by name. What the sender
//! chooses (block shape, `k`, index encoding, the codebook's shift and scale, which the receiver
//! cannot recompute) is part of the update, not a second encoding of it.
//!
//! ## Limits
//!
//! Before reading a tensor's indices or values the decoder checks, with checked arithmetic, what
//! its header announces and the running totals over the update: elements per tensor and in all
//! ([`DecodeLimits::max_total_numel`]), block side for the DCT ([`MAX_DCT_BLOCK_SIDE`]: a
//! receiver builds a side² basis), positions per block, blocks and kept entries in all. A header
//! that would overflow is refused by name, never a panic.

use std::fmt;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::pack::{self, PackError};

/// First bytes of every encoded update.
pub const MAGIC: &[u8; 8] = b"CNVUPD01";
/// The format version this crate writes and reads.
pub const VERSION: u16 = 1;

/// The per-block transform the sender applied before choosing coefficients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transform {
    /// No transform: the blocks are the weights themselves (Templar since mid-2025).
    Identity,
    /// Separable orthonormal DCT-II per block (DeMo `TransformDCT`).
    Dct,
}

impl Transform {
    fn code(self) -> u8 {
        match self {
            Transform::Identity => 0,
            Transform::Dct => 1,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Transform::Identity),
            1 => Some(Transform::Dct),
            _ => None,
        }
    }
}

/// How the kept positions are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexEncoding {
    U8,
    U16,
    U32,
    /// Two indices below 4096 in three bytes (Templar `pack_12bit_indices`).
    Packed12,
    /// Elias–Fano per block (see [`pack::elias_fano`]): the smallest for sparse blocks.
    EliasFano,
}

impl IndexEncoding {
    /// The narrowest integer that holds every position of a block of `totalk` (Psyche
    /// `compress_idx`).
    pub fn narrowest(totalk: u64) -> Self {
        if totalk <= 1 << 8 {
            IndexEncoding::U8
        } else if totalk <= 1 << 16 {
            IndexEncoding::U16
        } else {
            IndexEncoding::U32
        }
    }

    /// Whether this encoding can hold every position of a block of `totalk`.
    pub fn holds(self, totalk: u64) -> bool {
        match self {
            IndexEncoding::U8 => totalk <= 1 << 8,
            IndexEncoding::U16 => totalk <= 1 << 16,
            IndexEncoding::U32 => totalk <= 1 << 32,
            IndexEncoding::Packed12 => totalk <= 1 << 12,
            IndexEncoding::EliasFano => totalk <= 1 << 32,
        }
    }

    /// Bytes that `blocks` blocks of `k` indices below `totalk` take.
    pub fn byte_len(self, k: u64, totalk: u64, blocks: u64) -> Option<usize> {
        let count = usize::try_from(k.checked_mul(blocks)?).ok()?;
        match self {
            IndexEncoding::U8 => Some(count),
            IndexEncoding::U16 => count.checked_mul(2),
            IndexEncoding::U32 => count.checked_mul(4),
            IndexEncoding::Packed12 => pack::packed12_len(count),
            IndexEncoding::EliasFano => pack::elias_fano::byte_len(k, totalk, blocks),
        }
    }

    /// The encoding that holds blocks of `totalk` in the fewest bytes.
    pub fn smallest(k: u64, totalk: u64) -> Self {
        [
            IndexEncoding::U8,
            IndexEncoding::Packed12,
            IndexEncoding::U16,
            IndexEncoding::U32,
            IndexEncoding::EliasFano,
        ]
        .into_iter()
        .filter(|e| e.holds(totalk))
        .min_by_key(|e| e.byte_len(k, totalk, 64).unwrap_or(usize::MAX))
        .unwrap_or(IndexEncoding::U32)
    }

    fn code(self) -> u8 {
        match self {
            IndexEncoding::U8 => 0,
            IndexEncoding::U16 => 1,
            IndexEncoding::U32 => 2,
            IndexEncoding::Packed12 => 3,
            IndexEncoding::EliasFano => 4,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(IndexEncoding::U8),
            1 => Some(IndexEncoding::U16),
            2 => Some(IndexEncoding::U32),
            3 => Some(IndexEncoding::Packed12),
            4 => Some(IndexEncoding::EliasFano),
            _ => None,
        }
    }
}

impl fmt::Display for IndexEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IndexEncoding::U8 => "u8",
            IndexEncoding::U16 => "u16",
            IndexEncoding::U32 => "u32",
            IndexEncoding::Packed12 => "12-bit",
            IndexEncoding::EliasFano => "elias-fano",
        })
    }
}

/// How the kept values are written. Configs and the command line name them `f32`, `bf16`,
/// `2bit` and `1bit` (serde and [`std::str::FromStr`]); this is the one value-encoding enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ValueEncoding {
    #[serde(rename = "f32")]
    F32,
    #[serde(rename = "bf16")]
    Bf16,
    /// Templar's 4-bin codebook quantizer, codes packed four to a byte.
    #[serde(rename = "2bit")]
    TwoBit,
    /// Psyche's sign-only values (±1), eight to a byte.
    #[serde(rename = "1bit")]
    OneBit,
}

impl ValueEncoding {
    /// Every encoding.
    pub const ALL: [ValueEncoding; 4] = [
        ValueEncoding::F32,
        ValueEncoding::Bf16,
        ValueEncoding::TwoBit,
        ValueEncoding::OneBit,
    ];
}

impl std::str::FromStr for ValueEncoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.to_string() == s)
            .ok_or_else(|| format!("{s:?} is not a value encoding (f32, bf16, 2bit, 1bit)"))
    }
}

impl ValueEncoding {
    fn code(self) -> u8 {
        match self {
            ValueEncoding::F32 => 0,
            ValueEncoding::Bf16 => 1,
            ValueEncoding::TwoBit => 2,
            ValueEncoding::OneBit => 3,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(ValueEncoding::F32),
            1 => Some(ValueEncoding::Bf16),
            2 => Some(ValueEncoding::TwoBit),
            3 => Some(ValueEncoding::OneBit),
            _ => None,
        }
    }

    /// Bytes that `count` values take (the 2-bit codebook not included).
    pub fn byte_len(self, count: usize) -> Option<usize> {
        match self {
            ValueEncoding::F32 => count.checked_mul(4),
            ValueEncoding::Bf16 => count.checked_mul(2),
            ValueEncoding::TwoBit => Some(count.div_ceil(4)),
            ValueEncoding::OneBit => Some(count.div_ceil(8)),
        }
    }
}

impl fmt::Display for ValueEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueEncoding::F32 => "f32",
            ValueEncoding::Bf16 => "bf16",
            ValueEncoding::TwoBit => "2bit",
            ValueEncoding::OneBit => "1bit",
        })
    }
}

/// The per-tensor codebook of the 2-bit quantizer: a value with code `q` decodes to
/// `lookup[q] + shift` (Templar `_dequantize_values`). `scale` is the bin width the sender used;
/// it is carried for inspection and checked finite, but decoding does not need it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Codebook {
    pub shift: f32,
    pub scale: f32,
    pub lookup: [f32; 4],
}

impl Codebook {
    /// Bytes on the wire.
    pub const LEN: usize = 24;
}

/// The kept values of one tensor, in block order.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    /// bf16 bit patterns.
    Bf16(Vec<u16>),
    TwoBit {
        codes: Vec<u8>,
        codebook: Codebook,
    },
    /// `true` = negative (decodes to −1), `false` = +1.
    OneBit(Vec<bool>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::Bf16(v) => v.len(),
            Values::TwoBit { codes, .. } => codes.len(),
            Values::OneBit(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> ValueEncoding {
        match self {
            Values::F32(_) => ValueEncoding::F32,
            Values::Bf16(_) => ValueEncoding::Bf16,
            Values::TwoBit { .. } => ValueEncoding::TwoBit,
            Values::OneBit(_) => ValueEncoding::OneBit,
        }
    }

    /// The values as the receiver uses them.
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            Values::F32(v) => v.clone(),
            Values::Bf16(v) => v.iter().map(|&b| pack::bf16_to_f32(b)).collect(),
            Values::TwoBit { codes, codebook } => codes
                .iter()
                .map(|&q| codebook.lookup[(q & 3) as usize] + codebook.shift)
                .collect(),
            Values::OneBit(v) => v.iter().map(|&n| if n { -1.0 } else { 1.0 }).collect(),
        }
    }
}

/// Block rows × block columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockShape {
    pub rows: u32,
    pub cols: u32,
}

impl BlockShape {
    /// Positions per block (`totalk` in the references).
    pub fn len(self) -> u64 {
        self.rows as u64 * self.cols as u64
    }
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// A tensor seen as `lead` matrices of `rows × cols`: 0-D is 1×1, 1-D is one row, N-D keeps its
/// last two dimensions and batches the rest.
pub fn matrix_view(shape: &[u64]) -> Option<(u64, u64, u64)> {
    match shape {
        [] => Some((1, 1, 1)),
        [l] => Some((1, 1, *l)),
        [lead @ .., r, c] => {
            let lead = lead.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
            Some((lead, *r, *c))
        }
    }
}

/// The compressed part of one parameter tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorUpdate {
    pub name: String,
    pub shape: Vec<u64>,
    pub block: BlockShape,
    pub k: u32,
    pub index_encoding: IndexEncoding,
    /// `blocks × k` positions, each block's strictly increasing.
    pub indices: Vec<u32>,
    pub values: Values,
}

/// What a checked tensor header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Elements of the dense tensor.
    numel: u64,
    /// Blocks of `block.len()` positions.
    blocks: u64,
    /// Kept entries, `blocks × k`.
    count: usize,
}

/// Names of the codebook's fields, for errors.
const LOOKUP_FIELDS: [&str; 4] = ["lookup[0]", "lookup[1]", "lookup[2]", "lookup[3]"];
const DEQUANT_FIELDS: [&str; 4] = [
    "lookup[0] + shift",
    "lookup[1] + shift",
    "lookup[2] + shift",
    "lookup[3] + shift",
];

impl TensorUpdate {
    /// Number of elements of the dense tensor (saturating: a shape whose product overflows
    /// reports `u64::MAX`; such a tensor never validates).
    pub fn numel(&self) -> u64 {
        self.shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Number of blocks (0 when the block is empty or the shape overflows).
    pub fn num_blocks(&self) -> u64 {
        match matrix_view(&self.shape) {
            Some((lead, r, c)) if self.block.rows > 0 && self.block.cols > 0 => lead
                .checked_mul(r / self.block.rows as u64)
                .and_then(|b| b.checked_mul(c / self.block.cols as u64))
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Checks this tensor as [`SparseUpdate::decode`] would for an update with `transform`
    /// (the DCT bounds the block side, see [`DecodeLimits::max_dct_block_side`]). The limits
    /// over the whole update (total elements, blocks and entries) are checked by
    /// [`SparseUpdate::validate`].
    pub fn validate(&self, transform: Transform, limits: &DecodeLimits) -> Result<(), UpdateError> {
        self.check(transform, limits).map(|_| ())
    }

    /// Checks the header fields (name, shape, block, k, index encoding) against the limits,
    /// with checked arithmetic, and returns what they announce. Reads neither indices nor
    /// values, so the decoder calls it before reading (or allocating for) them.
    fn layout(&self, transform: Transform, limits: &DecodeLimits) -> Result<Layout, UpdateError> {
        let t = || self.name.clone();
        if self.name.is_empty() {
            return Err(UpdateError::EmptyName);
        }
        if self.name.len() > limits.max_name_len {
            return Err(UpdateError::NameTooLong {
                len: self.name.len(),
                max: limits.max_name_len,
            });
        }
        if self.shape.len() > limits.max_ndim {
            return Err(UpdateError::TooManyDims {
                tensor: t(),
                ndim: self.shape.len(),
                max: limits.max_ndim,
            });
        }
        if self.shape.contains(&0) {
            return Err(UpdateError::EmptyTensor { tensor: t() });
        }
        let numel = self
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| UpdateError::ShapeOverflow {
                tensor: t(),
                shape: self.shape.clone(),
            })?;
        if numel > limits.max_numel {
            return Err(UpdateError::TooManyElements {
                tensor: t(),
                numel,
                max: limits.max_numel,
            });
        }
        // Cannot fail once the product of every dimension fits (checked just above).
        let (lead, rows, cols) =
            matrix_view(&self.shape).ok_or_else(|| UpdateError::ShapeOverflow {
                tensor: t(),
                shape: self.shape.clone(),
            })?;
        // The block's own size first: a DCT receiver builds a side × side basis per axis.
        if transform == Transform::Dct {
            for (axis, side) in [("rows", self.block.rows), ("cols", self.block.cols)] {
                if side > limits.max_dct_block_side {
                    return Err(UpdateError::DctBlockSideTooLarge {
                        tensor: t(),
                        axis,
                        side,
                        max: limits.max_dct_block_side,
                    });
                }
            }
        }
        // u32 × u32 cannot overflow u64.
        let totalk = self.block.len();
        if totalk > limits.max_block_len {
            return Err(UpdateError::BlockTooLarge {
                tensor: t(),
                rows: self.block.rows,
                cols: self.block.cols,
                len: totalk,
                max: limits.max_block_len,
            });
        }
        for (axis, size, b) in [
            ("rows", rows, self.block.rows),
            ("cols", cols, self.block.cols),
        ] {
            if b == 0 || size % b as u64 != 0 {
                return Err(UpdateError::BlockDoesNotDivide {
                    tensor: t(),
                    axis,
                    size,
                    block: b,
                });
            }
        }
        if self.k == 0 || self.k as u64 > totalk {
            return Err(UpdateError::TopkOutOfRange {
                tensor: t(),
                k: self.k,
                totalk,
            });
        }
        if !self.index_encoding.holds(totalk) {
            return Err(UpdateError::IndexEncodingTooNarrow {
                tensor: t(),
                encoding: self.index_encoding,
                totalk,
            });
        }
        // The blocks tile the tensor (each side divides), so this is numel / totalk: no overflow.
        let blocks = lead * (rows / self.block.rows as u64) * (cols / self.block.cols as u64);
        let entries = blocks.saturating_mul(self.k as u64);
        if entries > limits.max_entries {
            return Err(UpdateError::TooManyEntries {
                tensor: t(),
                entries,
                max: limits.max_entries,
            });
        }
        if blocks > limits.max_blocks {
            return Err(UpdateError::TooManyBlocks {
                tensor: t(),
                blocks,
                max: limits.max_blocks,
            });
        }
        let count = usize::try_from(entries).map_err(|_| UpdateError::TooManyEntries {
            tensor: t(),
            entries,
            max: limits.max_entries,
        })?;
        Ok(Layout {
            numel,
            blocks,
            count,
        })
    }

    fn check(&self, transform: Transform, limits: &DecodeLimits) -> Result<Layout, UpdateError> {
        let layout = self.layout(transform, limits)?;
        let t = || self.name.clone();
        let count = layout.count;
        let totalk = self.block.len();
        if self.indices.len() != count {
            return Err(UpdateError::CountMismatch {
                tensor: t(),
                what: "indices",
                expected: count,
                got: self.indices.len(),
            });
        }
        if self.values.len() != count {
            return Err(UpdateError::CountMismatch {
                tensor: t(),
                what: "values",
                expected: count,
                got: self.values.len(),
            });
        }
        for (b, block) in self.indices.chunks(self.k as usize).enumerate() {
            let mut prev: Option<u32> = None;
            for &i in block {
                if i as u64 >= totalk {
                    return Err(UpdateError::IndexOutOfRange {
                        tensor: t(),
                        block: b as u64,
                        index: i,
                        totalk,
                    });
                }
                if prev.is_some_and(|p| p >= i) {
                    return Err(UpdateError::IndicesNotIncreasing {
                        tensor: t(),
                        block: b as u64,
                    });
                }
                prev = Some(i);
            }
        }
        match &self.values {
            Values::F32(v) => {
                if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                    return Err(UpdateError::NonFiniteValue {
                        tensor: t(),
                        position: p,
                    });
                }
            }
            Values::Bf16(v) => {
                if let Some(p) = v.iter().position(|&x| !pack::bf16_is_finite(x)) {
                    return Err(UpdateError::NonFiniteValue {
                        tensor: t(),
                        position: p,
                    });
                }
            }
            Values::TwoBit { codes, codebook } => check_codebook(&self.name, codes, codebook)?,
            Values::OneBit(_) => {}
        }
        Ok(layout)
    }
}

/// The 2-bit codebook's rules: every field finite and the scale positive (what
/// `quantize_2bit` writes; the scale is not needed to decode, so any other value could only be
/// a second encoding), and canonical form: an entry no code uses is `+0.0` (the encoder's
/// empty bin), and the entries codes use strictly increase with the code (the encoder's bins
/// are ordered intervals of the value line). Without these, permuting the entries together with
/// the codes, or writing anything in an unused entry, would give one update many encodings.
fn check_codebook(tensor: &str, codes: &[u8], cb: &Codebook) -> Result<(), UpdateError> {
    let bad = |field: &'static str, value: f32| UpdateError::BadCodebook {
        tensor: tensor.to_owned(),
        field,
        value,
    };
    if !cb.shift.is_finite() {
        return Err(bad("shift", cb.shift));
    }
    if !cb.scale.is_finite() || cb.scale <= 0.0 {
        return Err(bad("scale", cb.scale));
    }
    for (q, &l) in cb.lookup.iter().enumerate() {
        if !l.is_finite() {
            return Err(bad(LOOKUP_FIELDS[q], l));
        }
        if !(l + cb.shift).is_finite() {
            return Err(bad(DEQUANT_FIELDS[q], l + cb.shift));
        }
    }
    let mut used = [false; 4];
    for (position, &code) in codes.iter().enumerate() {
        if code > 3 {
            return Err(UpdateError::BadCode {
                tensor: tensor.to_owned(),
                position,
                code,
            });
        }
        used[code as usize] = true;
    }
    let mut prev: Option<usize> = None;
    for (q, (&l, &used)) in cb.lookup.iter().zip(&used).enumerate() {
        if !used {
            if l.to_bits() != 0 {
                return Err(UpdateError::UnusedCodebookEntry {
                    tensor: tensor.to_owned(),
                    code: q as u8,
                    value: l,
                });
            }
            continue;
        }
        if let Some(p) = prev
            && cb.lookup[p] >= l
        {
            return Err(UpdateError::CodebookNotIncreasing {
                tensor: tensor.to_owned(),
                lower: p as u8,
                upper: q as u8,
                lower_value: cb.lookup[p],
                upper_value: l,
            });
        }
        prev = Some(q);
    }
    Ok(())
}

/// Default [`DecodeLimits::max_dct_block_side`], and the largest DCT basis the enclave builds.
///
/// A receiver inverts a DCT block of `rows × cols` with the `rows × rows` and `cols × cols`
/// bases: at 4096 one basis is 64 MiB of f32 (128 MiB with its transpose) and 16.8 M cosines to
/// build, a bounded cost, where an unbounded side (the format allows 2³²−1) would ask for
/// exabytes. DeMo, Psyche and Templar cut blocks of 64 (`chunk = 64`); 4096 is 64 times that.
pub const MAX_DCT_BLOCK_SIDE: u32 = 4096;

/// Default [`DecodeLimits::max_block_len`]: 4096², the largest DCT block, for any transform.
pub const MAX_BLOCK_LEN: u64 = 1 << 24;

/// Default [`DecodeLimits::max_total_numel`]: 2³² dense elements (16 GiB as f32), more than
/// any model a job here trains; a receiver that knows its model can pass its parameter count.
pub const MAX_TOTAL_NUMEL: u64 = 1 << 32;

/// Default [`DecodeLimits::max_blocks`]: 2²⁶, [`MAX_TOTAL_NUMEL`] cut into blocks of 64 (a
/// 1-D tensor at DeMo's chunk; 2-D tensors have 64× fewer blocks).
pub const MAX_BLOCKS: u64 = 1 << 26;

/// Bounds on what [`SparseUpdate::decode`] accepts, checked with checked arithmetic before
/// anything is allocated or read. Each bound's refusal is its own [`UpdateError`] variant.
///
/// Decoding itself allocates in proportion to the kept entries, which the bytes must hold (a
/// few bytes per entry, at most `max_entries`); what the limits on elements, blocks and block
/// sizes bound is what a receiver allocates to *use* the update: the dense tensors (`max_total_numel`), per-block work
/// (`max_blocks`, `max_block_len`) and the DCT bases (`max_dct_block_side`).
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    /// Largest encoded update (default 256 MiB).
    pub max_bytes: usize,
    pub max_tensors: usize,
    pub max_name_len: usize,
    pub max_ndim: usize,
    /// Largest dense tensor (elements; default 2³⁴, so [`DecodeLimits::max_total_numel`]
    /// binds first unless raised).
    pub max_numel: u64,
    /// Most dense elements over the whole update: the sum of every tensor's element count
    /// (default [`MAX_TOTAL_NUMEL`]).
    pub max_total_numel: u64,
    /// Largest block side (rows or columns) of a DCT update (default [`MAX_DCT_BLOCK_SIDE`]).
    pub max_dct_block_side: u32,
    /// Most positions in one block, `rows × cols`, whatever the transform (default
    /// [`MAX_BLOCK_LEN`]).
    pub max_block_len: u64,
    /// Most blocks over the whole update (default [`MAX_BLOCKS`]).
    pub max_blocks: u64,
    /// Most kept positions over the whole update.
    pub max_entries: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: 256 << 20,
            max_tensors: 65_536,
            max_name_len: 512,
            max_ndim: 8,
            max_numel: 1 << 34,
            max_total_numel: MAX_TOTAL_NUMEL,
            max_dct_block_side: MAX_DCT_BLOCK_SIDE,
            max_block_len: MAX_BLOCK_LEN,
            max_blocks: MAX_BLOCKS,
            max_entries: 1 << 28,
        }
    }
}

/// SHA-256 of an encoded update.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpdateHash(pub [u8; 32]);

impl fmt::Display for UpdateHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for UpdateHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UpdateHash({self})")
    }
}

/// Why an update could not be encoded or decoded. Every variant names the tensor it concerns.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum UpdateError {
    #[error("update is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("update ends early: {what} needs {need} bytes, {have} left")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("not a Conclave sparse update (magic is not CNVUPD01)")]
    BadMagic,
    #[error("sparse update version {got} is not supported (this build reads {VERSION})")]
    UnsupportedVersion { got: u16 },
    #[error("unknown transform code {code}")]
    UnknownTransform { code: u8 },
    #[error("reserved header byte is {got}, not 0")]
    ReservedNotZero { got: u8 },
    #[error("{count} tensors, over the limit of {max}")]
    TooManyTensors { count: usize, max: usize },
    #[error("tensor #{index}: name is not UTF-8")]
    NameNotUtf8 { index: usize },
    #[error("a tensor has an empty name")]
    EmptyName,
    #[error("tensor name of {len} bytes, over the limit of {max}")]
    NameTooLong { len: usize, max: usize },
    #[error("tensor {tensor:?} appears twice")]
    DuplicateName { tensor: String },
    #[error("tensor {tensor:?}: {ndim} dimensions, over the limit of {max}")]
    TooManyDims {
        tensor: String,
        ndim: usize,
        max: usize,
    },
    #[error("tensor {tensor:?} has a zero dimension")]
    EmptyTensor { tensor: String },
    #[error("tensor {tensor:?}: the product of shape {shape:?} overflows 64 bits")]
    ShapeOverflow { tensor: String, shape: Vec<u64> },
    #[error("tensor {tensor:?} has {numel} elements, over the limit of {max}")]
    TooManyElements {
        tensor: String,
        numel: u64,
        max: u64,
    },
    #[error("the tensors up to {tensor:?} have {total} elements in all, over the limit of {max}")]
    TooManyTotalElements {
        tensor: String,
        total: u64,
        max: u64,
    },
    #[error(
        "tensor {tensor:?}: DCT block {axis} {side} over the limit of {max} (a receiver builds a \
         {side} × {side} basis)"
    )]
    DctBlockSideTooLarge {
        tensor: String,
        axis: &'static str,
        side: u32,
        max: u32,
    },
    #[error("tensor {tensor:?}: block {rows} × {cols} = {len} positions, over the limit of {max}")]
    BlockTooLarge {
        tensor: String,
        rows: u32,
        cols: u32,
        len: u64,
        max: u64,
    },
    #[error("the tensors up to {tensor:?} have {blocks} blocks in all, over the limit of {max}")]
    TooManyBlocks {
        tensor: String,
        blocks: u64,
        max: u64,
    },
    #[error("tensor {tensor:?}: block {axis} {block} does not divide {size}")]
    BlockDoesNotDivide {
        tensor: String,
        axis: &'static str,
        size: u64,
        block: u32,
    },
    #[error("tensor {tensor:?}: k = {k} outside 1..={totalk}")]
    TopkOutOfRange { tensor: String, k: u32, totalk: u64 },
    #[error("tensor {tensor:?}: {encoding} indices cannot address blocks of {totalk}")]
    IndexEncodingTooNarrow {
        tensor: String,
        encoding: IndexEncoding,
        totalk: u64,
    },
    #[error("tensor {tensor:?}: unknown index encoding {code}")]
    UnknownIndexEncoding { tensor: String, code: u8 },
    #[error("tensor {tensor:?}: unknown value encoding {code}")]
    UnknownValueEncoding { tensor: String, code: u8 },
    #[error("the tensors up to {tensor:?} keep {entries} entries in all, over the limit of {max}")]
    TooManyEntries {
        tensor: String,
        entries: u64,
        max: u64,
    },
    #[error("tensor {tensor:?}: {expected} {what} expected, got {got}")]
    CountMismatch {
        tensor: String,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("tensor {tensor:?}: {what} take {expected} bytes, got {got}")]
    ByteLength {
        tensor: String,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("tensor {tensor:?}, block {block}: index {index} is outside 0..{totalk}")]
    IndexOutOfRange {
        tensor: String,
        block: u64,
        index: u32,
        totalk: u64,
    },
    #[error("tensor {tensor:?}, block {block}: indices are not strictly increasing")]
    IndicesNotIncreasing { tensor: String, block: u64 },
    #[error("tensor {tensor:?}: value #{position} is not finite")]
    NonFiniteValue { tensor: String, position: usize },
    #[error(
        "tensor {tensor:?}: 2-bit codebook {field} is {value} (every field must be finite, the \
         scale positive)"
    )]
    BadCodebook {
        tensor: String,
        field: &'static str,
        value: f32,
    },
    #[error("tensor {tensor:?}: 2-bit code #{position} is {code}, above 3")]
    BadCode {
        tensor: String,
        position: usize,
        code: u8,
    },
    #[error(
        "tensor {tensor:?}: 2-bit codebook entry {code} is {value} but no value uses it (the \
         canonical form is +0)"
    )]
    UnusedCodebookEntry {
        tensor: String,
        code: u8,
        value: f32,
    },
    #[error(
        "tensor {tensor:?}: 2-bit codebook entries {lower} ({lower_value}) and {upper} \
         ({upper_value}) are used but not strictly increasing (the canonical order is ascending)"
    )]
    CodebookNotIncreasing {
        tensor: String,
        lower: u8,
        upper: u8,
        lower_value: f32,
        upper_value: f32,
    },
    #[error("tensor {tensor:?}: {source}")]
    Pack { tensor: String, source: PackError },
    #[error("{count} bytes after the last tensor")]
    TrailingBytes { count: usize },
}

/// Running sums over an update's tensors, against the whole-update limits.
#[derive(Debug, Default)]
struct Totals {
    numel: u64,
    blocks: u64,
    entries: u64,
}

impl Totals {
    fn add(&mut self, tensor: &str, l: &Layout, limits: &DecodeLimits) -> Result<(), UpdateError> {
        self.entries = self.entries.saturating_add(l.count as u64);
        if self.entries > limits.max_entries {
            return Err(UpdateError::TooManyEntries {
                tensor: tensor.to_owned(),
                entries: self.entries,
                max: limits.max_entries,
            });
        }
        self.blocks = self.blocks.saturating_add(l.blocks);
        if self.blocks > limits.max_blocks {
            return Err(UpdateError::TooManyBlocks {
                tensor: tensor.to_owned(),
                blocks: self.blocks,
                max: limits.max_blocks,
            });
        }
        self.numel = self.numel.saturating_add(l.numel);
        if self.numel > limits.max_total_numel {
            return Err(UpdateError::TooManyTotalElements {
                tensor: tensor.to_owned(),
                total: self.numel,
                max: limits.max_total_numel,
            });
        }
        Ok(())
    }
}

/// One round's compressed update: every parameter tensor's kept coefficients.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseUpdate {
    pub transform: Transform,
    pub tensors: Vec<TensorUpdate>,
}

impl SparseUpdate {
    /// Checks every tensor as [`SparseUpdate::decode`] would.
    pub fn validate(&self, limits: &DecodeLimits) -> Result<(), UpdateError> {
        if self.tensors.len() > limits.max_tensors {
            return Err(UpdateError::TooManyTensors {
                count: self.tensors.len(),
                max: limits.max_tensors,
            });
        }
        let mut names = std::collections::HashSet::new();
        let mut totals = Totals::default();
        for t in &self.tensors {
            if !names.insert(t.name.as_str()) {
                return Err(UpdateError::DuplicateName {
                    tensor: t.name.clone(),
                });
            }
            let layout = t.check(self.transform, limits)?;
            totals.add(&t.name, &layout, limits)?;
        }
        Ok(())
    }

    /// The canonical bytes. Refuses an update that [`SparseUpdate::decode`] would refuse.
    pub fn encode(&self) -> Result<Vec<u8>, UpdateError> {
        let limits = DecodeLimits {
            max_bytes: usize::MAX,
            ..DecodeLimits::default()
        };
        self.validate(&limits)?;
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(self.transform.code());
        out.push(0);
        out.extend_from_slice(&(self.tensors.len() as u32).to_le_bytes());
        for t in &self.tensors {
            out.extend_from_slice(&(t.name.len() as u16).to_le_bytes());
            out.extend_from_slice(t.name.as_bytes());
            out.push(t.shape.len() as u8);
            for d in &t.shape {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.block.rows.to_le_bytes());
            out.extend_from_slice(&t.block.cols.to_le_bytes());
            out.extend_from_slice(&t.k.to_le_bytes());
            out.push(t.index_encoding.code());
            out.push(t.values.encoding().code());
            if let Values::TwoBit { codebook, .. } = &t.values {
                out.extend_from_slice(&codebook.shift.to_le_bytes());
                out.extend_from_slice(&codebook.scale.to_le_bytes());
                for l in codebook.lookup {
                    out.extend_from_slice(&l.to_le_bytes());
                }
            }
            let idx = match t.index_encoding {
                IndexEncoding::U8 => t.indices.iter().map(|&i| i as u8).collect(),
                IndexEncoding::U16 => t
                    .indices
                    .iter()
                    .flat_map(|&i| (i as u16).to_le_bytes())
                    .collect(),
                IndexEncoding::U32 => t.indices.iter().flat_map(|&i| i.to_le_bytes()).collect(),
                IndexEncoding::Packed12 => {
                    pack::pack12(&t.indices).map_err(|source| UpdateError::Pack {
                        tensor: t.name.clone(),
                        source,
                    })?
                }
                IndexEncoding::EliasFano => {
                    pack::elias_fano::encode(&t.indices, t.k as usize, t.block.len())
                }
            };
            let val: Vec<u8> = match &t.values {
                Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Values::Bf16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Values::TwoBit { codes, .. } => pack::pack2(codes),
                Values::OneBit(v) => pack::pack_signs(v),
            };
            for part in [&idx, &val] {
                let len = u32::try_from(part.len()).map_err(|_| UpdateError::TooManyEntries {
                    tensor: t.name.clone(),
                    entries: part.len() as u64,
                    max: u32::MAX as u64,
                })?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        Ok(out)
    }

    /// SHA-256 of the canonical bytes.
    pub fn hash(&self) -> Result<UpdateHash, UpdateError> {
        Ok(hash_bytes(&self.encode()?))
    }

    /// Decodes and checks an update. Never panics; every refusal names the tensor and the fault.
    pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Self, UpdateError> {
        if bytes.len() > limits.max_bytes {
            return Err(UpdateError::TooLarge {
                len: bytes.len(),
                max: limits.max_bytes,
            });
        }
        let mut r = Reader { bytes, pos: 0 };
        if r.take(8, "magic")? != MAGIC {
            return Err(UpdateError::BadMagic);
        }
        let version = r.u16("version")?;
        if version != VERSION {
            return Err(UpdateError::UnsupportedVersion { got: version });
        }
        let tcode = r.u8("transform")?;
        let transform =
            Transform::from_code(tcode).ok_or(UpdateError::UnknownTransform { code: tcode })?;
        let reserved = r.u8("reserved byte")?;
        if reserved != 0 {
            return Err(UpdateError::ReservedNotZero { got: reserved });
        }
        let count = r.u32("tensor count")? as usize;
        if count > limits.max_tensors {
            return Err(UpdateError::TooManyTensors {
                count,
                max: limits.max_tensors,
            });
        }
        let mut tensors = Vec::with_capacity(count.min(1024));
        let mut totals = Totals::default();
        for index in 0..count {
            let name_len = r.u16("name length")? as usize;
            if name_len > limits.max_name_len {
                return Err(UpdateError::NameTooLong {
                    len: name_len,
                    max: limits.max_name_len,
                });
            }
            let name = std::str::from_utf8(r.take(name_len, "name")?)
                .map_err(|_| UpdateError::NameNotUtf8 { index })?
                .to_owned();
            let ndim = r.u8("ndim")? as usize;
            if ndim > limits.max_ndim {
                return Err(UpdateError::TooManyDims {
                    tensor: name,
                    ndim,
                    max: limits.max_ndim,
                });
            }
            let mut shape = Vec::with_capacity(ndim);
            for _ in 0..ndim {
                shape.push(r.u64("dimension")?);
            }
            let block = BlockShape {
                rows: r.u32("block rows")?,
                cols: r.u32("block cols")?,
            };
            let k = r.u32("k")?;
            let icode = r.u8("index encoding")?;
            let index_encoding = IndexEncoding::from_code(icode).ok_or_else(|| {
                UpdateError::UnknownIndexEncoding {
                    tensor: name.clone(),
                    code: icode,
                }
            })?;
            let vcode = r.u8("value encoding")?;
            let value_encoding = ValueEncoding::from_code(vcode).ok_or_else(|| {
                UpdateError::UnknownValueEncoding {
                    tensor: name.clone(),
                    code: vcode,
                }
            })?;
            let codebook = if value_encoding == ValueEncoding::TwoBit {
                let shift = r.f32("codebook")?;
                let scale = r.f32("codebook")?;
                let mut lookup = [0f32; 4];
                for l in &mut lookup {
                    *l = r.f32("codebook")?;
                }
                Some(Codebook {
                    shift,
                    scale,
                    lookup,
                })
            } else {
                None
            };
            // The shape and block decide how many entries follow: check them, and the running
            // totals over the update, before reading or allocating anything for them.
            let header = TensorUpdate {
                name,
                shape,
                block,
                k,
                index_encoding,
                indices: Vec::new(),
                values: Values::F32(Vec::new()),
            };
            let layout = header.layout(transform, limits)?;
            totals.add(&header.name, &layout, limits)?;
            let n = layout.count;
            let tensor = header.name.clone();
            let byte_len = |what, expected: Option<usize>, got: usize| match expected {
                Some(e) if e == got => Ok(()),
                e => Err(UpdateError::ByteLength {
                    tensor: tensor.clone(),
                    what,
                    expected: e.unwrap_or(usize::MAX),
                    got,
                }),
            };
            let ilen = r.u32("index length")? as usize;
            let blocks = layout.blocks;
            byte_len(
                "indices",
                index_encoding.byte_len(k as u64, header.block.len(), blocks),
                ilen,
            )?;
            let ibytes = r.take(ilen, "indices")?;
            let indices = match index_encoding {
                IndexEncoding::U8 => ibytes.iter().map(|&b| b as u32).collect(),
                IndexEncoding::U16 => ibytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
                    .collect(),
                IndexEncoding::U32 => ibytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                IndexEncoding::Packed12 => {
                    pack::unpack12(ibytes, n).map_err(|source| UpdateError::Pack {
                        tensor: tensor.clone(),
                        source,
                    })?
                }
                IndexEncoding::EliasFano => pack::elias_fano::decode(
                    ibytes,
                    k as usize,
                    header.block.len(),
                    blocks as usize,
                )
                .map_err(|source| UpdateError::Pack {
                    tensor: tensor.clone(),
                    source,
                })?,
            };
            let vlen = r.u32("value length")? as usize;
            byte_len("values", value_encoding.byte_len(n), vlen)?;
            let vbytes = r.take(vlen, "values")?;
            let pack_err = |source| UpdateError::Pack {
                tensor: tensor.clone(),
                source,
            };
            let values = match (value_encoding, codebook) {
                (ValueEncoding::F32, _) => Values::F32(
                    vbytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                (ValueEncoding::Bf16, _) => Values::Bf16(
                    vbytes
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect(),
                ),
                (ValueEncoding::TwoBit, Some(codebook)) => Values::TwoBit {
                    codes: pack::unpack2(vbytes, n).map_err(pack_err)?,
                    codebook,
                },
                (ValueEncoding::TwoBit, None) => {
                    return Err(UpdateError::BadCodebook {
                        tensor,
                        field: "codebook",
                        value: f32::NAN,
                    });
                }
                (ValueEncoding::OneBit, _) => {
                    Values::OneBit(pack::unpack_signs(vbytes, n).map_err(pack_err)?)
                }
            };
            let t = TensorUpdate {
                indices,
                values,
                ..header
            };
            tensors.push(t);
        }
        if r.pos != bytes.len() {
            return Err(UpdateError::TrailingBytes {
                count: bytes.len() - r.pos,
            });
        }
        let update = SparseUpdate { transform, tensors };
        update.validate(limits)?;
        Ok(update)
    }
}

/// SHA-256 of encoded update bytes.
pub fn hash_bytes(bytes: &[u8]) -> UpdateHash {
    UpdateHash(Sha256::digest(bytes).into())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], UpdateError> {
        let have = self.bytes.len() - self.pos;
        if n > have {
            return Err(UpdateError::Truncated {
                what,
                need: n,
                have,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], UpdateError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, UpdateError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, UpdateError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, UpdateError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, UpdateError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn f32(&mut self, what: &'static str) -> Result<f32, UpdateError> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }
}
