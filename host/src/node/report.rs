//! What a node reports: per-round events for its caller (the binary prints each as one line,
//! which `conclave demo` reads) and the summary it writes at the end.

use conclave_protocol::Hash32;
use serde::{Deserialize, Serialize};

use super::Withdrawal;

/// What a node reports as it goes (the binary prints each as one line on stdout).
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// Our enclave answered, its evidence passed the job's policy and it loaded the job
    /// (`seconds` from the node's start: a guest's boot is most of it).
    Attested {
        tee: String,
        measurement: String,
        seconds: f64,
    },
    /// A round closed on `model_hash`, aggregating `operators`' updates.
    Round {
        round: u64,
        model_hash: Hash32,
        operators: Vec<u32>,
        loss: f64,
    },
    /// The node asks the job's verifiers to approve its enclave key: the request is at
    /// `request`, approvals go into `approvals` (`needed` distinct verifiers).
    ApprovalRequested {
        request: std::path::PathBuf,
        approvals: std::path::PathBuf,
        needed: usize,
    },
    /// On-chain round `round` is certified by a quorum of enclave statements matching ours
    /// (`signers` on the certificate we assembled); `submitted`: our transaction certified it.
    Certified {
        round: u64,
        signers: usize,
        submitted: bool,
    },
    /// Stake and payment withdrawn.
    Withdrew(Withdrawal),
}

impl std::fmt::Display for NodeEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeEvent::Attested {
                tee,
                measurement,
                seconds,
            } => write!(
                f,
                "enclave attested after {seconds:.1} s ({tee} evidence, measurement {measurement})"
            ),
            NodeEvent::Round {
                round,
                model_hash,
                operators,
                loss,
            } => write!(
                f,
                "round {round}: model {model_hash} (operators {operators:?}, loss {loss:.4})"
            ),
            NodeEvent::ApprovalRequested {
                request,
                approvals,
                needed,
            } => write!(
                f,
                "approval requested: {} ({needed} verifier approval(s) into {})",
                request.display(),
                approvals.display()
            ),
            NodeEvent::Certified {
                round,
                signers,
                submitted,
            } => write!(
                f,
                "checkpoint {round}: certified on chain ({signers} enclave signatures{})",
                if *submitted { ", submitted by us" } else { "" }
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
    /// On-chain rounds certified with our statement, with whether our transaction certified it.
    pub commits: Vec<(u64, bool)>,
    /// Stake and payment withdrawn (wei), when the node waited for settlement.
    pub withdrawn: Option<String>,
}
