//! What a node reports: per-round events for its caller (the binary prints each as one line,
//! which `conclave demo` reads) and the summary it writes at the end.

use conclave_protocol::Hash32;
use serde::{Deserialize, Serialize};

use super::Withdrawal;

/// What a node reports as it goes (the binary prints each as one line on stdout).
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// A round closed on `model_hash`, aggregating `operators`' updates.
    Round {
        round: u64,
        model_hash: Hash32,
        operators: Vec<u32>,
        loss: f64,
    },
    /// Our checkpoint statement for on-chain round `round` landed; `fixed`: ours was first.
    Committed { round: u64, fixed: bool },
    /// Stake and payment withdrawn.
    Withdrew(Withdrawal),
}

impl std::fmt::Display for NodeEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeEvent::Round {
                round,
                model_hash,
                operators,
                loss,
            } => write!(
                f,
                "round {round}: model {model_hash} (operators {operators:?}, loss {loss:.4})"
            ),
            NodeEvent::Committed { round, fixed } => write!(
                f,
                "checkpoint {round}: committed on chain ({})",
                if *fixed { "fixed the round" } else { "agrees" }
            ),
            NodeEvent::Withdrew(w) => write!(
                f,
                "withdrew {} wei (stake and payment; balance {} -> {})",
                w.wei, w.balance_before, w.balance_after
            ),
        }
    }
}

/// What a node run ends with (`summary.json` in its folder).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSummary {
    pub job_id: String,
    pub operator: u32,
    pub rounds: u64,
    /// Per round: the model it ended on (empty for rounds this node did not run).
    pub model_hashes: Vec<String>,
    /// Per round: the operators whose updates were aggregated.
    pub sets: Vec<Vec<u32>>,
    pub excluded: Vec<u32>,
    /// Per round: the mean training loss the operators' receipts state (ours when we lack
    /// a peer's).
    pub losses: Vec<f64>,
    /// Per round: bytes of our signed update (what we published).
    pub update_bytes: Vec<u64>,
    /// Optimizer steps per round (from our receipts).
    pub steps_per_round: u64,
    /// On-chain rounds whose checkpoint we committed, with whether ours fixed the round.
    pub commits: Vec<(u64, bool)>,
    /// Stake and payment withdrawn (wei), when the node waited for settlement.
    pub withdrawn: Option<String>,
}
