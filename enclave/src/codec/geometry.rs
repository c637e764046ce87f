//! How a tensor is cut into blocks (DeMo `TransformDCT.__init__`, Psyche's N-D generalisation).

/// The largest divisor of `n` that is at most `target` (DeMo `_get_smaller_split`); `n` itself
/// when `target ≥ n`. A prime `n` above the target gives 1.
pub fn smaller_split(n: usize, target: usize) -> usize {
    if target >= n {
        return n.max(1);
    }
    (1..=target.max(1))
        .rev()
        .find(|d| n.is_multiple_of(*d))
        .unwrap_or(1)
}

/// A tensor seen as `lead` matrices of `rows × cols` cut into blocks of `n1 × n2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub lead: usize,
    pub rows: usize,
    pub cols: usize,
    pub n1: usize,
    pub n2: usize,
}

impl Geometry {
    /// 0-D is 1×1, 1-D is one row of its length (chunked along it), N-D chunks its last two
    /// dimensions and batches the rest.
    pub fn new(shape: &[usize], target_chunk: usize) -> Self {
        let (lead, rows, cols) = match shape {
            [] => (1, 1, 1),
            [l] => (1, 1, *l),
            [lead @ .., r, c] => (lead.iter().product(), *r, *c),
        };
        Geometry {
            lead,
            rows,
            cols,
            n1: smaller_split(rows, target_chunk),
            n2: smaller_split(cols, target_chunk),
        }
    }

    pub fn numel(&self) -> usize {
        self.lead * self.rows * self.cols
    }
    /// Positions per block.
    pub fn totalk(&self) -> usize {
        self.n1 * self.n2
    }
    /// Blocks per stripe (a stripe is `n1` full rows of one matrix).
    pub fn blocks_per_stripe(&self) -> usize {
        self.cols / self.n2
    }
    pub fn stripes(&self) -> usize {
        self.lead * (self.rows / self.n1)
    }
    pub fn blocks(&self) -> usize {
        self.stripes() * self.blocks_per_stripe()
    }
    /// Elements per stripe.
    pub fn stripe_len(&self) -> usize {
        self.n1 * self.cols
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_match_the_reference_examples() {
        // Psyche distro.rs tests of DeMo's _get_smaller_split.
        assert_eq!(smaller_split(12, 5), 4);
        assert_eq!(smaller_split(100, 7), 5);
        assert_eq!(smaller_split(100, 26), 25);
        assert_eq!(smaller_split(100, 101), 100);
        assert_eq!(smaller_split(1_000_000_007, 500_000_000), 1);
        assert_eq!(smaller_split(1000, 64), 50);
        assert_eq!(smaller_split(96, 64), 48);
        assert_eq!(smaller_split(97, 64), 1);
    }

    #[test]
    fn one_d_tensors_are_a_single_row() {
        let g = Geometry::new(&[100], 64);
        assert_eq!((g.rows, g.cols, g.n1, g.n2, g.blocks()), (1, 100, 1, 50, 2));
        let g = Geometry::new(&[2, 3, 128, 64], 64);
        assert_eq!((g.lead, g.blocks(), g.totalk()), (6, 12, 4096));
    }
}
