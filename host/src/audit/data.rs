//! What the audit judges: everything [`super::fetch::fetch`] read from the chain and the
//! folder, as plain values. [`super::judge::judge`] looks at nothing else, so a test builds one
//! of these in memory and judges it.
//!
//! A file that is missing or unreadable is a [`FileRead`] whose `content` is `Err` (the reason):
//! the judge names it in a failed check. Paths are kept only to name files in details.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use alloy::primitives::{Address, B256};
use conclave_protocol::Hash32;

use crate::chain::{JobStatus, OperatorStatus};
use crate::store::{CheckpointFiles, OperatorRecord};

/// Everything the audit of one job judges.
#[derive(Debug, Clone)]
pub struct AuditData {
    /// The job's number on the contract.
    pub job: u64,
    pub chain: ChainData,
    pub folder: FolderData,
}

/// What the chain recorded about the job.
#[derive(Debug, Clone)]
pub struct ChainData {
    pub job: JobOnChain,
    /// The launch measurements the job allows (`chain_measurement` words).
    pub measurements: BTreeSet<B256>,
    /// For each enclave key of the folder's operator records: the registration on chain
    /// (`None`: no operator registered the key).
    pub keys: BTreeMap<Address, Option<Registration>>,
    /// The certified checkpoint of every checkpoint round up to the latest one, by round. A
    /// zero model hash: nothing certified for that round (a later round was certified first).
    pub checkpoints: BTreeMap<u64, CheckpointOnChain>,
}

/// The job's fields the audit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOnChain {
    /// The raw `JobStatus` value (the report carries it as a number).
    pub status: u8,
    pub total_rounds: u64,
    /// The highest round with an accepted checkpoint (0: none).
    pub latest_round: u64,
    pub checkpoint_interval: u64,
    /// SHA-256 of the job document every enclave of the job obeys.
    pub spec_hash: B256,
    pub dataset_root: B256,
}

impl JobOnChain {
    /// The status, typed.
    pub fn state(&self) -> JobStatus {
        JobStatus::from(self.status)
    }
}

/// The operator account that registered an enclave key, and its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    pub account: Address,
    pub operator: OperatorOnChain,
}

/// An operator's fields the audit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorOnChain {
    pub status: OperatorStatus,
    /// The registered measurement (`chain_measurement` of the evidence's).
    pub measurement: B256,
    /// SHA-256 of the registered evidence.
    pub evidence_hash: B256,
}

/// The certified checkpoint of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointOnChain {
    pub model_hash: B256,
    /// The round's outcome (`RoundReceipt::outcome_hash` of the round before).
    pub receipt_hash: B256,
    /// `keccak256(abi.encodePacked(members))` of the enclaves whose updates it aggregated.
    pub update_set: B256,
    /// Enclave signatures on its certificate.
    pub signers: u32,
}

/// A file as the fetch found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead<T> {
    pub path: PathBuf,
    /// The content, or why it could not be read (missing, too large, unreadable).
    pub content: Result<T, String>,
}

impl<T> FileRead<T> {
    /// A file present with `content`.
    pub fn found(path: impl Into<PathBuf>, content: T) -> Self {
        FileRead {
            path: path.into(),
            content: Ok(content),
        }
    }

    /// A file that could not be read, and why.
    pub fn absent(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        FileRead {
            path: path.into(),
            content: Err(why.into()),
        }
    }
}

/// What the operator's storage folder holds.
#[derive(Debug, Clone)]
pub struct FolderData {
    /// The folder (for naming files).
    pub root: PathBuf,
    /// Every `operator-N.json`, by index, with the evidence it names.
    pub operators: Vec<OperatorFiles>,
    /// The receipts of every round `0..latest_round`, by round.
    pub rounds: BTreeMap<u64, RoundFiles>,
    /// The stored checkpoints that the receipts named on chain end on, by step.
    pub checkpoints: BTreeMap<u64, CheckpointData>,
    /// `job-document.json`: the job document (its hash must be the chain's spec hash).
    pub document: FileRead<Vec<u8>>,
    /// `certificates/round-RRRRRR.json` of every certified round, by round.
    pub certificates: BTreeMap<u64, FileRead<Vec<u8>>>,
}

/// An operator record and its evidence bytes.
#[derive(Debug, Clone)]
pub struct OperatorFiles {
    pub record: OperatorRecord,
    pub evidence: FileRead<Vec<u8>>,
}

/// A round's folder.
#[derive(Debug, Clone)]
pub struct RoundFiles {
    pub dir: PathBuf,
    /// One per `receipt-N.env`, by operator.
    pub receipts: Vec<ReceiptFiles>,
}

/// Operator `operator`'s receipt of a round: the signed envelope and the JSON beside it.
#[derive(Debug, Clone)]
pub struct ReceiptFiles {
    pub operator: u32,
    pub envelope: FileRead<Vec<u8>>,
    pub json: FileRead<Vec<u8>>,
}

impl ReceiptFiles {
    /// The envelope's file name (`receipt-N.env`), as checks name it.
    pub fn name(&self) -> String {
        self.envelope
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| format!("receipt-{}.env", self.operator))
    }
}

/// A stored checkpoint: the hash of its weights (the weights are not kept), its manifest JSON
/// and its signed manifest.
#[derive(Debug, Clone)]
pub struct CheckpointData {
    pub step: u64,
    pub weights_sha256: FileRead<Hash32>,
    pub manifest: FileRead<Vec<u8>>,
    pub envelope: FileRead<Vec<u8>>,
}

impl CheckpointData {
    /// A checkpoint none of whose files was read.
    pub fn not_read(step: u64, files: CheckpointFiles) -> Self {
        let why = |p: &PathBuf| format!("{}: not read", p.display());
        CheckpointData {
            step,
            weights_sha256: FileRead::absent(&files.weights, why(&files.weights)),
            manifest: FileRead::absent(&files.manifest, why(&files.manifest)),
            envelope: FileRead::absent(&files.envelope, why(&files.envelope)),
        }
    }
}
