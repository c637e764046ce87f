//! The job folder: one place for its layout, its typed records and its atomic writes (as
//! dstack keeps its shared file names in `shared_filenames.rs`). `conclave run`, `conclave
//! node`, `conclave serve`, `conclave audit` and the operator network all read and write a
//! job's files through [`JobStore`]; a new file is added here and nowhere else.
//!
//! ```text
//! <dir>/
//!   operator-N.json            OperatorRecord: index, enclave address, job, nonce, peer id
//!   evidence-N.bin             operator N's evidence bundle
//!   rounds/RRRRRR/
//!     receipt-N.env            operator N's signed round receipt (envelope)
//!     receipt-N.json           its payload (the receipt JSON)
//!     update-N.env             operator N's signed update, as aggregated
//!   checkpoints/
//!     step-SSSSSS.safetensors  weights
//!     step-SSSSSS.json         the manifest (the signed payload)
//!     step-SSSSSS.manifest.env the signed manifest (envelope)
//!   equivocation/round-RRRRRR-operator-N-{a,b}.env   both updates of an equivocation
//!   summary.json               what the run ended with
//!   node.key                   the node's libp2p identity (conclave node)
//!   enclave[-N].{sock,log}, enclave[-N]/   the enclave's socket, log and scratch folder
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use conclave_attestation::{EnclaveAddress, JobId, Nonce};
use conclave_protocol::receipt::RoundReceipt;
use conclave_protocol::{CheckpointManifest, Signed};
use serde::{Deserialize, Serialize};

/// Largest operator record read back.
pub const MAX_RECORD: u64 = 64 * 1024;
/// Largest evidence file read back.
pub const MAX_EVIDENCE_FILE: u64 = 1 << 20;

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync of
/// the folder. A reader sees the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("renaming onto {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads at most `max` bytes of `path`; a larger file is an error naming it.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("reading {}", path.display()))?;
    if out.len() as u64 > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(out)
}

/// `0x`-prefixed hex for addresses in records people read.
mod address_0x {
    use conclave_attestation::EnclaveAddress;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &EnclaveAddress, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0x{a}"))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EnclaveAddress, D::Error> {
        let t = String::deserialize(d)?;
        EnclaveAddress::from_hex(&t).map_err(serde::de::Error::custom)
    }
}

/// What an auditor needs to check an operator's signed results: `operator-N.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRecord {
    pub operator: u32,
    /// The enclave key's address (`0x…` in the file).
    #[serde(with = "address_0x")]
    pub address: EnclaveAddress,
    pub job_id: JobId,
    /// The nonce the evidence binds with the key and the job.
    pub nonce: Nonce,
    /// The operator's libp2p peer id (operator network only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    /// The evidence file, relative to the folder.
    pub evidence: String,
}

/// The three files of a stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFiles {
    pub weights: PathBuf,
    /// The manifest JSON (the signed payload).
    pub manifest: PathBuf,
    /// The signed manifest envelope.
    pub envelope: PathBuf,
}

/// A job's storage folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStore {
    root: PathBuf,
}

impl JobStore {
    /// The folder at `root` (not created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        JobStore { root: root.into() }
    }

    /// The folder at `root`, created if missing.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let s = Self::new(root);
        std::fs::create_dir_all(&s.root)
            .with_context(|| format!("creating {}", s.root.display()))?;
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    // ---- paths ----

    /// `operator-N.json`.
    pub fn operator_record(&self, op: u32) -> PathBuf {
        self.root.join(format!("operator-{op}.json"))
    }
    /// `evidence-N.bin` (its name relative to the folder: [`Self::evidence_name`]).
    pub fn evidence(&self, op: u32) -> PathBuf {
        self.root.join(Self::evidence_name(op))
    }
    pub fn evidence_name(op: u32) -> String {
        format!("evidence-{op}.bin")
    }
    /// `rounds/RRRRRR/`.
    pub fn round_dir(&self, round: u64) -> PathBuf {
        self.root.join("rounds").join(format!("{round:06}"))
    }
    pub fn receipt_envelope(&self, round: u64, op: u32) -> PathBuf {
        self.round_dir(round).join(format!("receipt-{op}.env"))
    }
    pub fn receipt_json(&self, round: u64, op: u32) -> PathBuf {
        self.round_dir(round).join(format!("receipt-{op}.json"))
    }
    pub fn update_envelope(&self, round: u64, op: u32) -> PathBuf {
        self.round_dir(round).join(format!("update-{op}.env"))
    }
    /// `checkpoints/`.
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// `checkpoints/step-SSSSSS.*`.
    pub fn checkpoint(&self, step: u64) -> CheckpointFiles {
        let c = self.checkpoints_dir();
        let stem = format!("step-{step:06}");
        CheckpointFiles {
            weights: c.join(format!("{stem}.safetensors")),
            manifest: c.join(format!("{stem}.json")),
            envelope: c.join(format!("{stem}.manifest.env")),
        }
    }
    /// `equivocation/`.
    pub fn equivocation_dir(&self) -> PathBuf {
        self.root.join("equivocation")
    }
    /// Where the two envelopes of operator `op`'s equivocation in `round` go, under `dir`
    /// (the store's [`Self::equivocation_dir`] by default).
    pub fn equivocation_pair(dir: &Path, round: u64, op: u32) -> (PathBuf, PathBuf) {
        let stem = format!("round-{round:06}-operator-{op}");
        (
            dir.join(format!("{stem}-a.env")),
            dir.join(format!("{stem}-b.env")),
        )
    }
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    /// `job-document.json`: the job document every enclave of the job obeys (its SHA-256 is
    /// the spec hash), kept so that an auditor checks receipts against it.
    pub fn document(&self) -> PathBuf {
        self.root.join("job-document.json")
    }
    /// `approval-request.json`: the node's request for the verifiers' approval of its key.
    pub fn approval_request(&self) -> PathBuf {
        self.root.join("approval-request.json")
    }
    /// `approvals/`: verifiers' approvals of the request, one JSON file each.
    pub fn approvals_dir(&self) -> PathBuf {
        self.root.join("approvals")
    }
    /// `certificates/round-RRRRRR.json`: the round certificate the node assembled.
    pub fn certificate(&self, round: u64) -> PathBuf {
        self.root
            .join("certificates")
            .join(format!("round-{round:06}.json"))
    }
    pub fn node_key(&self) -> PathBuf {
        self.root.join("node.key")
    }
    /// The socket, scratch folder and log of an enclave: `enclave-N.*` for slot `Some(N)` of a
    /// local peer set, `enclave.*` for a node's one enclave.
    pub fn enclave_files(&self, slot: Option<u32>) -> (PathBuf, PathBuf, PathBuf) {
        let stem = match slot {
            Some(i) => format!("enclave-{i}"),
            None => "enclave".to_string(),
        };
        (
            self.root.join(format!("{stem}.sock")),
            self.root.join(&stem),
            self.root.join(format!("{stem}.log")),
        )
    }

    // ---- writes ----

    /// Stores an operator's record and evidence.
    pub fn write_operator(&self, rec: &OperatorRecord, evidence: &[u8]) -> Result<()> {
        write_atomic(&self.root.join(&rec.evidence), evidence)?;
        write_atomic(
            &self.operator_record(rec.operator),
            &serde_json::to_vec_pretty(rec)?,
        )
    }

    /// Stores a signed receipt (envelope and payload) of operator `op`.
    pub fn write_receipt(&self, round: u64, op: u32, r: &Signed<RoundReceipt>) -> Result<()> {
        self.write_receipt_bytes(round, op, &r.bytes, r.payload())
    }

    /// Stores a receipt envelope and its payload as they arrived.
    pub fn write_receipt_bytes(
        &self,
        round: u64,
        op: u32,
        envelope: &[u8],
        payload: &[u8],
    ) -> Result<()> {
        write_atomic(&self.receipt_envelope(round, op), envelope)?;
        write_atomic(&self.receipt_json(round, op), payload)
    }

    pub fn write_update(&self, round: u64, op: u32, envelope: &[u8]) -> Result<()> {
        write_atomic(&self.update_envelope(round, op), envelope)
    }

    /// Stores a checkpoint: weights, the manifest JSON (the signed payload) and the envelope.
    pub fn write_checkpoint(
        &self,
        weights: &[u8],
        manifest: &Signed<CheckpointManifest>,
    ) -> Result<CheckpointFiles> {
        let files = self.checkpoint(manifest.statement.step);
        write_atomic(&files.weights, weights)?;
        write_atomic(&files.manifest, manifest.payload())?;
        write_atomic(&files.envelope, &manifest.bytes)?;
        Ok(files)
    }

    pub fn write_summary<T: Serialize>(&self, summary: &T) -> Result<()> {
        write_atomic(&self.summary(), &serde_json::to_vec_pretty(summary)?)
    }

    // ---- reads ----

    /// Every `operator-N.json` of the folder, by index.
    pub fn operators(&self) -> Result<Vec<OperatorRecord>> {
        let entries = std::fs::read_dir(&self.root)
            .with_context(|| format!("reading the folder {}", self.root.display()))?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(index) = name
                .strip_prefix("operator-")
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            out.push(self.read_operator(index)?);
        }
        out.sort_by_key(|r| r.operator);
        Ok(out)
    }

    /// `operator-N.json`, parsed.
    pub fn read_operator(&self, op: u32) -> Result<OperatorRecord> {
        let path = self.operator_record(op);
        let rec: OperatorRecord = serde_json::from_slice(&read_bounded(&path, MAX_RECORD)?)
            .with_context(|| format!("{}", path.display()))?;
        if rec.operator != op {
            bail!(
                "{} is the record of operator {}",
                path.display(),
                rec.operator
            );
        }
        Ok(rec)
    }

    /// The evidence a record names (a plain file name inside the folder).
    pub fn read_evidence(&self, rec: &OperatorRecord) -> Result<Vec<u8>> {
        let name = Path::new(&rec.evidence);
        if name.components().count() != 1 || name.file_name().is_none() {
            bail!(
                "operator {}'s record names evidence {:?} outside the folder",
                rec.operator,
                rec.evidence
            );
        }
        read_bounded(&self.root.join(name), MAX_EVIDENCE_FILE)
    }

    /// Operators with a receipt envelope for `round`, ascending.
    pub fn receipt_operators(&self, round: u64) -> Vec<u32> {
        self.files_of(round, "receipt-", ".env")
    }

    /// Operators with an update envelope for `round`, ascending.
    pub fn update_operators(&self, round: u64) -> Vec<u32> {
        self.files_of(round, "update-", ".env")
    }

    fn files_of(&self, round: u64, prefix: &str, suffix: &str) -> Vec<u32> {
        let mut out: Vec<u32> = std::fs::read_dir(self.round_dir(round))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()
            })
            .collect();
        out.sort();
        out
    }

    /// The step of the newest stored checkpoint.
    pub fn latest_checkpoint(&self) -> Option<u64> {
        std::fs::read_dir(self.checkpoints_dir())
            .ok()?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.strip_prefix("step-")?
                    .strip_suffix(".safetensors")?
                    .parse()
                    .ok()
            })
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path().join("a")).unwrap().count(), 1);
    }

    #[test]
    fn records_round_trip_and_evidence_stays_in_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let s = JobStore::create(dir.path().join("job")).unwrap();
        let rec = OperatorRecord {
            operator: 2,
            address: EnclaveAddress([0xab; 20]),
            job_id: JobId([1; 32]),
            nonce: Nonce([2; 32]),
            peer_id: None,
            evidence: JobStore::evidence_name(2),
        };
        s.write_operator(&rec, b"evidence").unwrap();
        let text = std::fs::read_to_string(s.operator_record(2)).unwrap();
        assert!(
            text.contains(&format!("\"0x{}\"", "ab".repeat(20))),
            "{text}"
        );
        assert_eq!(s.operators().unwrap(), vec![rec.clone()]);
        assert_eq!(s.read_evidence(&rec).unwrap(), b"evidence");
        for bad in ["../x", "/dev/zero", "a/b"] {
            let r = OperatorRecord {
                evidence: bad.into(),
                ..rec.clone()
            };
            assert!(s.read_evidence(&r).is_err(), "{bad}");
        }
        std::fs::write(s.root().join("big"), vec![0u8; 10]).unwrap();
        assert!(read_bounded(&s.root().join("big"), 9).is_err());
        assert_eq!(read_bounded(&s.root().join("big"), 10).unwrap().len(), 10);
    }

    #[test]
    fn round_files_are_listed_by_operator() {
        let dir = tempfile::tempdir().unwrap();
        let s = JobStore::create(dir.path()).unwrap();
        s.write_receipt_bytes(3, 1, b"e1", b"{}").unwrap();
        s.write_receipt_bytes(3, 0, b"e0", b"{}").unwrap();
        s.write_update(3, 2, b"u").unwrap();
        assert_eq!(s.receipt_operators(3), vec![0, 1]);
        assert_eq!(s.update_operators(3), vec![2]);
        assert!(s.receipt_operators(4).is_empty());
        assert_eq!(
            s.checkpoint(12).weights,
            dir.path().join("checkpoints/step-000012.safetensors")
        );
    }
}
