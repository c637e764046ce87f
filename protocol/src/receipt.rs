//! The round receipt: what an enclave states about one round, so that an auditor can replay it.
//!
//! It names the weights before and after (model hashes), every peer update that was aggregated
//! (SHA-256 of each encoded [`crate::SparseUpdate`], in aggregation order), the outer step that
//! was applied, the probe batch (a shard of the job's dataset and window starts derived from the
//! job seed and the round), and TOPLOC proofs of the probe's last hidden states under the
//! weights before and after. JSON, versioned, size-bounded, unknown keys refused.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::hash::Hash32;
use crate::toploc::Thresholds;

/// Receipts larger than this are refused before parsing.
pub const MAX_RECEIPT_BYTES: usize = 4 << 20;
pub const RECEIPT_VERSION: u32 = 1;

/// The outer step as applied to the aggregate of the round's updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OuterStep {
    /// DeMo: `p ← p·(1 − lr·wd) − lr·sign(aggregate)`.
    Sign { lr: f32, weight_decay: f32 },
    /// SparseLoCo: `p ← p − lr·aggregate`, the aggregate optionally median-norm clipped.
    Sgd { lr: f32, clip_median_norm: bool },
}

/// Which sequences were run through the model to prove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// The dataset shard the probe is drawn from (the operator's shard for the round).
    pub shard: u32,
    /// Its hash as the dataset manifest lists it.
    pub shard_sha256: Hash32,
    /// Window starts (token offsets into the shard), drawn as windows of `context` tokens
    /// (whole examples for SFT data).
    pub starts: Vec<u64>,
    pub context: u32,
    /// Tokens of each window run through the model and proved: the first `tokens` of it
    /// (1 ≤ tokens ≤ context).
    pub tokens: u32,
    /// For SFT data: the length of one example (windows are whole examples).
    #[serde(default)]
    pub example_len: Option<u32>,
}

/// TOPLOC parameters of the proofs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToplocParams {
    /// Tokens (rows of the hidden-state matrix) per proof.
    pub group: u32,
    pub topk: u32,
    pub thresholds: Thresholds,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundReceipt {
    pub version: u32,
    pub config_hash: Hash32,
    pub data_root: Hash32,
    pub seed: u64,
    pub round: u64,
    pub step_before: u64,
    pub step_after: u64,
    pub model_hash_before: Hash32,
    pub model_hash_after: Hash32,
    /// SHA-256 of each encoded peer update, in aggregation order.
    pub updates: Vec<Hash32>,
    pub outer: OuterStep,
    pub probe: Probe,
    pub toploc: ToplocParams,
    /// Base64 TOPLOC proofs of the probe under the weights before the round.
    pub proofs_before: Vec<String>,
    /// Optional: the same under the weights after (empty when the next round's receipt proves
    /// them; the weights are bound by `model_hash_after` either way).
    pub proofs_after: Vec<String>,
    /// Mean training loss of the round.
    pub loss: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReceiptError {
    #[error("receipt of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("receipt is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("receipt version {0} is not supported (expected {RECEIPT_VERSION})")]
    Version(u32),
    #[error("receipt field {field}: {why}")]
    Field { field: &'static str, why: String },
}

impl RoundReceipt {
    /// The round's outcome that every enclave which closed it from the same model with the same
    /// updates agrees on, whatever its own probe and proofs: SHA-256 of
    /// `"conclave/v1/round-outcome" ‖ round (u64 BE) ‖ model before ‖ model after ‖ update count
    /// (u32 BE) ‖ the update hashes in aggregation order`. This is the `receiptHash` of the
    /// on-chain checkpoint statement, so a quorum of enclaves can sign one statement and an
    /// auditor recomputes it from any member's receipt.
    pub fn outcome_hash(&self) -> Hash32 {
        let mut bytes = Vec::with_capacity(100 + 32 * self.updates.len());
        bytes.extend_from_slice(b"conclave/v1/round-outcome");
        bytes.extend_from_slice(&self.round.to_be_bytes());
        bytes.extend_from_slice(&self.model_hash_before.0);
        bytes.extend_from_slice(&self.model_hash_after.0);
        bytes.extend_from_slice(&(self.updates.len() as u32).to_be_bytes());
        for u in &self.updates {
            bytes.extend_from_slice(&u.0);
        }
        Hash32::sha256(&bytes)
    }

    /// Parses and checks a receipt.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReceiptError> {
        if bytes.len() > MAX_RECEIPT_BYTES {
            return Err(ReceiptError::TooLarge {
                len: bytes.len(),
                max: MAX_RECEIPT_BYTES,
            });
        }
        let r: RoundReceipt =
            serde_json::from_slice(bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        r.check()?;
        Ok(r)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Field-level checks (hash formats, counts, parameters).
    pub fn check(&self) -> Result<(), ReceiptError> {
        let field = |field: &'static str, why: &str| ReceiptError::Field {
            field,
            why: why.to_string(),
        };
        if self.version != RECEIPT_VERSION {
            return Err(ReceiptError::Version(self.version));
        }
        if self.updates.is_empty() || self.updates.len() > 4096 {
            return Err(field("updates", "must name 1 to 4096 updates"));
        }
        if self.step_after <= self.step_before {
            return Err(field("step_after", "must be after step_before"));
        }
        let t = &self.toploc;
        if t.group == 0 || t.topk == 0 || t.topk > 65_497 {
            return Err(field(
                "toploc",
                "group and topk must be positive, topk ≤ 65497",
            ));
        }
        let p = &self.probe;
        if p.starts.is_empty() || p.starts.len() > 4096 || p.context == 0 {
            return Err(field("probe", "1 to 4096 windows of a positive context"));
        }
        if p.tokens == 0 || p.tokens > p.context {
            return Err(field("probe", "tokens per window must be 1 to context"));
        }
        let rows = p.starts.len() as u64 * p.tokens as u64;
        let groups = rows.div_ceil(t.group as u64) as usize;
        for (name, proofs) in [
            ("proofs_before", &self.proofs_before),
            ("proofs_after", &self.proofs_after),
        ] {
            // Proofs after are optional: the weights after are bound by their hash, which
            // replay recomputes exactly, and the next round proves them.
            if proofs.len() != groups && !(name == "proofs_after" && proofs.is_empty()) {
                return Err(field(
                    name,
                    &format!("{} proofs for {groups} groups of the probe", proofs.len()),
                ));
            }
        }
        match self.outer {
            OuterStep::Sign { lr, weight_decay } => {
                if !(lr.is_finite() && weight_decay.is_finite()) {
                    return Err(field("outer", "non-finite learning rate or weight decay"));
                }
            }
            OuterStep::Sgd { lr, .. } => {
                if !lr.is_finite() {
                    return Err(field("outer", "non-finite learning rate"));
                }
            }
        }
        if !self.loss.is_finite() {
            return Err(field("loss", "not finite"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RoundReceipt {
        let h = Hash32([0xab; 32]);
        RoundReceipt {
            version: 1,
            config_hash: h,
            data_root: h,
            seed: 1,
            round: 0,
            step_before: 0,
            step_after: 10,
            model_hash_before: h,
            model_hash_after: h,
            updates: vec![h],
            outer: OuterStep::Sgd {
                lr: 1.0,
                clip_median_norm: true,
            },
            probe: Probe {
                shard: 3,
                shard_sha256: h,
                starts: vec![0, 100],
                context: 32,
                tokens: 32,
                example_len: None,
            },
            toploc: ToplocParams {
                group: 32,
                topk: 128,
                thresholds: Thresholds::default(),
            },
            proofs_before: vec!["x".into(), "y".into()],
            proofs_after: vec!["x".into(), "y".into()],
            loss: 3.5,
        }
    }

    #[test]
    fn outcome_hash_ignores_each_enclaves_own_proofs() {
        let a = sample();
        let mut b = a.clone();
        b.proofs_before = vec!["AAAA".into()];
        b.loss += 1.0;
        assert_eq!(a.outcome_hash(), b.outcome_hash());
        for change in 0..4 {
            let mut c = a.clone();
            match change {
                0 => c.round += 1,
                1 => c.model_hash_after = Hash32([0xee; 32]),
                2 => c.model_hash_before = Hash32([0xee; 32]),
                _ => c.updates.push(Hash32([0xee; 32])),
            }
            assert_ne!(a.outcome_hash(), c.outcome_hash(), "change {change}");
        }
    }

    #[test]
    fn round_trips_and_refuses_bad_fields() {
        let r = sample();
        assert_eq!(RoundReceipt::from_json(&r.to_json()).unwrap(), r);
        let mut none_after = r.clone();
        none_after.proofs_after.clear();
        assert!(RoundReceipt::from_json(&none_after.to_json()).is_ok());
        let mut bad = r.clone();
        bad.proofs_after.pop();
        assert!(matches!(
            RoundReceipt::from_json(&bad.to_json()),
            Err(ReceiptError::Field {
                field: "proofs_after",
                ..
            })
        ));
        let mut bad = r.clone();
        bad.probe.tokens = 33;
        assert!(matches!(
            RoundReceipt::from_json(&bad.to_json()),
            Err(ReceiptError::Field { field: "probe", .. })
        ));
        let mut bad = r.clone();
        bad.probe.tokens = 16;
        assert!(matches!(
            RoundReceipt::from_json(&bad.to_json()),
            Err(ReceiptError::Field {
                field: "proofs_before",
                ..
            })
        ));
        let text = String::from_utf8(r.to_json()).unwrap();
        let bad = text.replacen(&r.model_hash_after.to_hex(), "zz", 1);
        assert!(RoundReceipt::from_json(bad.as_bytes()).is_err());
        let mut bad = r.clone();
        bad.version = 2;
        assert_eq!(
            RoundReceipt::from_json(&bad.to_json()),
            Err(ReceiptError::Version(2))
        );
        let text = String::from_utf8(r.to_json()).unwrap();
        let extra = text.replacen('{', "{\"extra\": 1,", 1);
        assert!(matches!(
            RoundReceipt::from_json(extra.as_bytes()),
            Err(ReceiptError::Malformed(_))
        ));
        assert!(matches!(
            RoundReceipt::from_json(&vec![b' '; MAX_RECEIPT_BYTES + 1]),
            Err(ReceiptError::TooLarge { .. })
        ));
        assert!(RoundReceipt::from_json(b"{").is_err());
    }
}
