//! The model architecture a job trains and a checkpoint manifest names: a GPT-style decoder
//! (the trainer in `conclave-enclave` builds it with tch; this crate only describes it).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    Rms,
    Layer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    Rotary,
    Learned,
}

/// A GPT-style decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub layers: usize,
    pub heads: usize,
    pub width: usize,
    /// Context length in tokens.
    pub context: usize,
    /// MLP hidden size as a multiple of the width.
    pub mlp_ratio: usize,
    pub norm: Norm,
    pub positions: Positions,
    /// The output projection shares the token embedding.
    pub tie_embeddings: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            layers: 4,
            heads: 4,
            width: 192,
            context: 128,
            mlp_ratio: 4,
            norm: Norm::Rms,
            positions: Positions::Rotary,
            tie_embeddings: true,
        }
    }
}
