//! The audit's reads: everything it judges, from the chain and from the operator's storage
//! folder (through [`JobStore`]), before any of it is judged.
//!
//! A missing or unreadable file is recorded as absent ([`FileRead`]) for the judge to name; a
//! job the contract does not know, a folder without operator records, or a chain that cannot
//! be read is an `Err` (the input is unusable).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail};
use conclave_protocol::job::MAX_JOB_DOCUMENT;
use conclave_protocol::receipt::RoundReceipt;
use conclave_protocol::statement::MAX_JSON_STATEMENT;
use conclave_protocol::{Hash32, Signed};
use sha2::{Digest, Sha256};

use super::AuditInput;
use super::data::{
    AuditData, ChainData, CheckpointData, CheckpointOnChain, FileRead, FolderData, JobOnChain,
    OperatorFiles, OperatorOnChain, ReceiptFiles, Registration, RoundFiles,
};
use crate::chain::{Chain, ChainOptions};
use crate::store::{JobStore, OperatorRecord, read_bounded};

/// Largest receipt or manifest envelope read: the largest JSON statement and the envelope's
/// own fields.
pub const MAX_STATEMENT_ENVELOPE: u64 = MAX_JSON_STATEMENT as u64 + 64 * 1024;

/// Largest certificate file read (256 members and signatures in JSON).
pub const MAX_CERTIFICATE_FILE: u64 = 256 * 1024;

/// Reads everything the audit of `input.job` judges. `Err`: the input is unusable.
pub async fn fetch(input: &AuditInput) -> Result<AuditData> {
    let reader = PrivateKeySigner::random();
    let chain =
        Chain::connect(&input.rpc, &reader, input.contract, ChainOptions::default()).await?;
    let id = input.job;
    let job = chain.job(id).await?;
    if job.customer == Address::ZERO {
        bail!("there is no job {id} on contract {}", input.contract);
    }
    let job = JobOnChain {
        status: job.status,
        total_rounds: job.totalRounds,
        latest_round: job.latestRound,
        checkpoint_interval: job.checkpointInterval,
        spec_hash: job.specHash,
        dataset_root: job.datasetRoot,
    };
    let measurements: BTreeSet<B256> = chain
        .contract
        .measurements(U256::from(id))
        .call()
        .await
        .context("reading the job's measurements")?
        .into_iter()
        .collect();

    let store = JobStore::new(&input.dir);
    let records = store.operators()?;
    if records.is_empty() {
        bail!(
            "{} holds no operator-N.json: not an operator's storage folder",
            input.dir.display()
        );
    }
    let keys = fetch_keys(&chain, id, &records).await?;
    let checkpoints = fetch_checkpoints(&chain, id, &job).await?;
    let chain = ChainData {
        job,
        measurements,
        keys,
        checkpoints,
    };

    let latest = chain.job.latest_round;
    let committed = chain.checkpoints.clone();
    let folder =
        tokio::task::spawn_blocking(move || read_folder(&store, records, latest, &committed))
            .await
            .context("reading the folder")?;
    Ok(AuditData {
        job: id,
        chain,
        folder,
    })
}

/// For each enclave key of the folder: the account that registered it and its operator record.
async fn fetch_keys(
    chain: &Chain,
    id: u64,
    records: &[OperatorRecord],
) -> Result<BTreeMap<Address, Option<Registration>>> {
    let mut keys = BTreeMap::new();
    for rec in records {
        let key = Address::from(rec.address.0);
        if keys.contains_key(&key) {
            continue;
        }
        let account = chain.operator_of_key(id, key).await?;
        let registration = if account == Address::ZERO {
            None
        } else {
            let op = chain.operator(id, account).await?;
            Some(Registration {
                account,
                operator: OperatorOnChain {
                    status: op.state(),
                    measurement: op.measurement,
                    evidence_hash: op.evidenceHash,
                },
            })
        };
        keys.insert(key, registration);
    }
    Ok(keys)
}

/// The checkpoint of every checkpoint round (multiples of the interval) up to the latest.
async fn fetch_checkpoints(
    chain: &Chain,
    id: u64,
    job: &JobOnChain,
) -> Result<BTreeMap<u64, CheckpointOnChain>> {
    let interval = job.checkpoint_interval.max(1);
    let mut out = BTreeMap::new();
    let mut round = interval;
    while round <= job.latest_round {
        let cp = chain.checkpoint(id, round).await?;
        out.insert(
            round,
            CheckpointOnChain {
                model_hash: cp.modelHash,
                receipt_hash: cp.receiptHash,
                update_set: cp.updateSet,
                signers: cp.signers,
            },
        );
        let Some(next) = round.checked_add(interval) else {
            break;
        };
        round = next;
    }
    Ok(out)
}

/// Reads the folder: the operators' evidence, the receipts of rounds `0..latest`, and the
/// checkpoints that the receipts named on chain end on.
fn read_folder(
    store: &JobStore,
    records: Vec<OperatorRecord>,
    latest: u64,
    committed: &BTreeMap<u64, CheckpointOnChain>,
) -> FolderData {
    let operators = records
        .into_iter()
        .map(|record| {
            let path = store.root().join(&record.evidence);
            let evidence = match store.read_evidence(&record) {
                Ok(b) => FileRead::found(path, b),
                Err(e) => FileRead::absent(path, format!("{e:#}")),
            };
            OperatorFiles { record, evidence }
        })
        .collect();
    let rounds: BTreeMap<u64, RoundFiles> =
        (0..latest).map(|k| (k, read_round(store, k))).collect();
    let mut steps = BTreeSet::new();
    for (round, cp) in committed {
        if cp.model_hash == B256::ZERO || *round == 0 {
            continue;
        }
        let named = rounds.get(&(round - 1)).and_then(|r| named_step(r, cp));
        steps.extend(named);
    }
    let checkpoints = steps
        .into_iter()
        .map(|step| (step, read_checkpoint(store, step)))
        .collect();
    let certificates = committed
        .iter()
        .filter(|(_, cp)| cp.model_hash != B256::ZERO)
        .map(|(round, _)| {
            (
                *round,
                read_file(&store.certificate(*round), MAX_CERTIFICATE_FILE),
            )
        })
        .collect();
    FolderData {
        root: store.root().to_path_buf(),
        operators,
        rounds,
        checkpoints,
        document: read_file(&store.document(), MAX_JOB_DOCUMENT as u64),
        certificates,
    }
}

/// `rounds/RRRRRR/receipt-N.{env,json}` of every operator with an envelope.
fn read_round(store: &JobStore, round: u64) -> RoundFiles {
    let receipts = store
        .receipt_operators(round)
        .into_iter()
        .map(|op| ReceiptFiles {
            operator: op,
            envelope: read_file(&store.receipt_envelope(round, op), MAX_STATEMENT_ENVELOPE),
            json: read_file(&store.receipt_json(round, op), MAX_JSON_STATEMENT as u64),
        })
        .collect();
    RoundFiles {
        dir: store.round_dir(round),
        receipts,
    }
}

/// The step after of the receipt whose payload hashes to the one the chain names: the
/// checkpoint to read. Nothing is verified here (the judge does that); this only chooses files.
fn named_step(round: &RoundFiles, cp: &CheckpointOnChain) -> Option<u64> {
    round.receipts.iter().find_map(|x| {
        let bytes = x.envelope.content.as_ref().ok()?;
        let env = Signed::<RoundReceipt>::decode_envelope(bytes).ok()?;
        let r = RoundReceipt::from_json(&env.payload).ok()?;
        (r.outcome_hash().0 == cp.receipt_hash.0).then_some(r.step_after)
    })
}

/// A stored checkpoint: its weights hashed (streamed, not kept), its manifest and envelope.
fn read_checkpoint(store: &JobStore, step: u64) -> CheckpointData {
    let files = store.checkpoint(step);
    let weights_sha256 = match hash_file(&files.weights) {
        Ok(h) => FileRead::found(&files.weights, h),
        Err(e) => FileRead::absent(&files.weights, e),
    };
    CheckpointData {
        step,
        weights_sha256,
        manifest: read_file(&files.manifest, MAX_JSON_STATEMENT as u64),
        envelope: read_file(&files.envelope, MAX_STATEMENT_ENVELOPE),
    }
}

/// A file of at most `max` bytes, or why it could not be read.
pub(super) fn read_file(path: &Path, max: u64) -> FileRead<Vec<u8>> {
    match read_bounded(path, max) {
        Ok(b) => FileRead::found(path, b),
        Err(e) => FileRead::absent(path, format!("{e:#}")),
    }
}

/// SHA-256 of a file, read in pieces.
fn hash_file(path: &Path) -> Result<Hash32, String> {
    let why = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::File::open(path).map_err(why)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(why)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Hash32(h.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_hashed_in_pieces_and_missing_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let bytes: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(hash_file(&p), Ok(Hash32::sha256(&bytes)));
        let gone = dir.path().join("gone.bin");
        assert!(hash_file(&gone).unwrap_err().contains("gone.bin"));
        let r = read_file(&gone, 10);
        assert_eq!(r.path, gone);
        assert!(r.content.unwrap_err().contains("gone.bin"));
        assert!(
            read_file(&p, 10)
                .content
                .unwrap_err()
                .contains("larger than")
        );
    }
}
