//! The codec on libtorch tensors, for parameters that live on a GPU: the same blocks, bases,
//! top-k rule and scatter-mean as the CPU path, written as tensor operations in the shape of
//! DeMo's reference (`einsum` per block, `topk`, `scatter_reduce(mean, include_self=False)`).
//! Value encoding and the wire format are shared with the CPU path: selections come back to the
//! host as a [`TensorUpdate`].
//!
//! Ties in top-k may be broken differently from the CPU path (torch leaves that unspecified);
//! decoded tensors agree to float tolerance otherwise.

use std::collections::HashMap;

use conclave_protocol::{BlockShape, TensorUpdate, Transform};
use tch::{Device, Kind, Tensor};

use super::dct::Basis;
use super::{AggregateError, CodecConfig, Geometry, choose_index, encode_values};

/// The codec on one device.
pub struct TchCodec {
    pub config: CodecConfig,
    pub device: Device,
    /// `C` per block size, f32 on `device`.
    bases: HashMap<usize, Tensor>,
}

impl TchCodec {
    pub fn new(config: CodecConfig, device: Device) -> Self {
        TchCodec {
            config,
            device,
            bases: HashMap::new(),
        }
    }

    fn basis(&mut self, n: usize) -> Tensor {
        let device = self.device;
        self.bases
            .entry(n)
            .or_insert_with(|| {
                Tensor::from_slice(&Basis::new(n).c)
                    .reshape([n as i64, n as i64])
                    .to_device(device)
            })
            .shallow_clone()
    }

    /// The tensor's blocks as `[blocks, n1·n2]`, transformed.
    pub fn encode(&mut self, x: &Tensor) -> Tensor {
        let shape: Vec<usize> = x.size().iter().map(|&d| d as usize).collect();
        let g = Geometry::new(&shape, self.config.block_target());
        let (n1, n2) = (g.n1 as i64, g.n2 as i64);
        let blocks = x
            .to_kind(Kind::Float)
            .reshape([
                g.lead as i64,
                (g.rows / g.n1) as i64,
                n1,
                (g.cols / g.n2) as i64,
                n2,
            ])
            .permute([0, 1, 3, 2, 4]);
        let coeffs = match self.config.transform {
            // out[b, d] = Σ_{h,w} C₁[b, h] · x[h, w] · C₂[d, w]
            Transform::Dct => {
                let (c1, c2) = (self.basis(g.n1), self.basis(g.n2));
                Tensor::einsum("...hw,bh,dw->...bd", &[blocks, c1, c2], None::<Vec<i64>>)
            }
            Transform::Identity => blocks,
        };
        coeffs.reshape([g.blocks() as i64, g.totalk() as i64])
    }

    /// Inverse of [`TchCodec::encode`] for `[blocks, n1·n2]` coefficients of a tensor of `shape`.
    pub fn decode_coefficients(&mut self, coeffs: &Tensor, shape: &[usize]) -> Tensor {
        let g = Geometry::new(shape, self.config.block_target());
        let (n1, n2) = (g.n1 as i64, g.n2 as i64);
        let blocks = coeffs.reshape([
            g.lead as i64,
            (g.rows / g.n1) as i64,
            (g.cols / g.n2) as i64,
            n1,
            n2,
        ]);
        let x = match self.config.transform {
            // x[h, w] = Σ_{b,d} C₁[b, h] · E[b, d] · C₂[d, w]
            Transform::Dct => {
                let (c1, c2) = (self.basis(g.n1), self.basis(g.n2));
                Tensor::einsum("...bd,bh,dw->...hw", &[blocks, c1, c2], None::<Vec<i64>>)
            }
            Transform::Identity => blocks,
        };
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        x.permute([0, 1, 3, 2, 4]).reshape(dims)
    }

    /// Compresses `buf` and subtracts what is transmitted (error feedback), like
    /// [`super::Codec::compress`].
    pub fn compress(
        &mut self,
        name: &str,
        buf: &mut Tensor,
    ) -> Result<TensorUpdate, tch::TchError> {
        let shape: Vec<usize> = buf.size().iter().map(|&d| d as usize).collect();
        let g = Geometry::new(&shape, self.config.block_target());
        let k = self.config.topk_rule.fit(self.config.topk, g.totalk());
        let coeffs = self.encode(buf);
        let (_, idx) = coeffs.abs().f_topk(k as i64, -1, true, false)?;
        let (idx, _) = idx.sort(-1, false);
        let val = coeffs.gather(-1, &idx, false);
        let idx_host: Vec<i64> = Vec::try_from(&idx.to_device(Device::Cpu).reshape([-1]))?;
        let val_host: Vec<f32> = Vec::try_from(&val.to_device(Device::Cpu).reshape([-1]))?;
        let (values, sent) = encode_values(self.config.values, val_host);
        let sent_t = Tensor::from_slice(&sent)
            .reshape(val.size())
            .to_device(self.device);
        let sparse = Tensor::zeros_like(&coeffs).scatter(-1, &idx, &sent_t);
        let transmitted = self.decode_coefficients(&sparse, &shape);
        let _ = buf.f_sub_(&transmitted.to_kind(buf.kind()))?;
        let index_encoding = choose_index(self.config.index, k, g.totalk());
        Ok(TensorUpdate {
            name: name.to_owned(),
            shape: shape.iter().map(|&d| d as u64).collect(),
            block: BlockShape {
                rows: g.n1 as u32,
                cols: g.n2 as u32,
            },
            k: k as u32,
            index_encoding,
            indices: idx_host.into_iter().map(|i| i as u32).collect(),
            values,
        })
    }

    /// Aggregates peers' updates of one tensor into the dense mean on the device.
    pub fn aggregate(
        &mut self,
        updates: &[&TensorUpdate],
        clip_to_median_norm: bool,
    ) -> Result<Tensor, AggregateError> {
        let first = *updates.first().ok_or(AggregateError::Empty)?;
        let limits = conclave_protocol::DecodeLimits::default();
        for u in updates {
            u.validate(self.config.transform, &limits)?;
            if u.shape != first.shape || u.block != first.block {
                return Err(AggregateError::Mismatch {
                    tensor: first.name.clone(),
                    what: "shape or block shape",
                });
            }
        }
        let shape: Vec<usize> = first.shape.iter().map(|&d| d as usize).collect();
        let g = Geometry::new(&shape, self.config.block_target());
        if (g.n1 as u32, g.n2 as u32) != (first.block.rows, first.block.cols) {
            return Err(AggregateError::Mismatch {
                tensor: first.name.clone(),
                what: "chunk size of this codec",
            });
        }
        let blocks = g.blocks() as i64;
        let mut idx = Vec::new();
        let mut val = Vec::new();
        let mut norms = Vec::new();
        for u in updates {
            let v = Tensor::from_slice(&u.values.dequantize())
                .reshape([blocks, u.k as i64])
                .to_device(self.device);
            norms.push(v.norm());
            val.push(v);
            let i: Vec<i64> = u.indices.iter().map(|&i| i as i64).collect();
            idx.push(
                Tensor::from_slice(&i)
                    .reshape([blocks, u.k as i64])
                    .to_device(self.device),
            );
        }
        if clip_to_median_norm && updates.len() > 1 {
            let norms = Tensor::stack(&norms, 0);
            let median = norms.median();
            for (i, v) in val.iter_mut().enumerate() {
                let factor = (&median / (norms.get(i as i64) + 1e-8)).clamp_max(1.0);
                *v = &*v * factor;
            }
        }
        let idx = Tensor::cat(&idx, -1);
        let val = Tensor::cat(&val, -1);
        let zeros = Tensor::zeros([blocks, g.totalk() as i64], (Kind::Float, self.device));
        let mean = zeros.internal_scatter_reduce(-1, &idx, &val, "mean", false);
        Ok(self.decode_coefficients(&mean, &shape))
    }
}
