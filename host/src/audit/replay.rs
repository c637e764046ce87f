//! `conclave audit --replay N`: re-executes rounds with `conclave-enclave replay` (TOPLOC
//! proofs, updates, aggregation, the weights after). Rounds whose starting checkpoint is in the
//! folder are sampled by the job id; each replay is given the round's verified receipt, its
//! signed updates in the receipt's order, the checkpoint it starts from and the probe's shard.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use conclave_attestation::Policy;
use conclave_attestation::envelope::MAX_PAYLOAD;
use conclave_protocol::receipt::RoundReceipt;
use conclave_protocol::seal::Kind;
use conclave_protocol::sealed_data::SealedDataset;
use conclave_protocol::{CheckpointManifest, Hash32, Signed, UpdatePayload};

use super::data::AuditData;
use super::judge::{Verified, Verifier, verify_round};
use super::{AuditInput, AuditReport, ReplayRow, check};
use crate::store::{JobStore, read_bounded};

/// Largest update envelope read: the largest envelope payload and the envelope's own fields.
const MAX_UPDATE_ENVELOPE: u64 = MAX_PAYLOAD as u64 + 64 * 1024;

/// Replays `input.replay` rounds and adds their rows (and a failed "rounds to replay" check
/// when fewer rounds can be replayed) to `report`. Does not update `report.pass`.
pub(super) fn replay(
    input: &AuditInput,
    data: &AuditData,
    policy: &Policy,
    mut report: AuditReport,
) -> AuditReport {
    let store = JobStore::new(&input.dir);
    let verifier = Verifier::new(data, policy, input.now);
    // Rounds whose starting weights are in the folder, sampled by the job id.
    let mut candidates: Vec<(u64, Hash32, Signed<RoundReceipt>)> = Vec::new();
    for k in 0..data.chain.job.latest_round {
        let (got, _) = verify_round(data, &verifier, k);
        let Some(x) = got.into_iter().next() else {
            continue;
        };
        if store.checkpoint(x.statement.step_before).manifest.exists() {
            let order = Hash32::sha256(format!("audit/{}/{k}", data.job).as_bytes());
            candidates.push((k, order, x));
        }
    }
    candidates.sort_by_key(|c| c.1);
    candidates.truncate(input.replay);
    candidates.sort_by_key(|c| c.0);
    if candidates.len() < input.replay {
        check(
            &mut report.job_checks,
            "rounds to replay",
            false,
            format!(
                "{} asked, {} have their starting checkpoint in the folder",
                input.replay,
                candidates.len()
            ),
        );
    }
    for (k, _, x) in &candidates {
        let row = replay_round(input, &store, &verifier, x, *k).unwrap_or_else(|e| ReplayRow {
            round: *k,
            pass: false,
            detail: format!("{e:#}"),
        });
        report.replays.push(row);
    }
    report
}

/// The receipt's updates, from the round's signed update envelopes, in the receipt's order.
fn updates_of(
    store: &JobStore,
    verifier: &Verifier,
    x: &Signed<RoundReceipt>,
    k: u64,
) -> Result<Vec<Vec<u8>>> {
    let mut by_hash: BTreeMap<Hash32, Vec<u8>> = BTreeMap::new();
    for op in store.update_operators(k) {
        let path = store.update_envelope(k, op);
        let name = path.display();
        let bytes = read_bounded(&path, MAX_UPDATE_ENVELOPE)?;
        match verifier.verify::<UpdatePayload>(&bytes) {
            Ok(Verified::Statement(s)) => {
                let body = s.statement.body;
                by_hash.insert(Hash32::sha256(&body), body);
            }
            Ok(Verified::BadPayload { why, .. }) => return Err(anyhow!("{name}: {why}")),
            Err(why) => return Err(anyhow!("{name}: {why}")),
        }
    }
    x.statement
        .updates
        .iter()
        .map(|h| {
            by_hash
                .get(h)
                .cloned()
                .with_context(|| format!("round {k}: no signed update hashes to {h}"))
        })
        .collect()
}

fn replay_round(
    input: &AuditInput,
    store: &JobStore,
    verifier: &Verifier,
    x: &Signed<RoundReceipt>,
    k: u64,
) -> Result<ReplayRow> {
    let tmp = tempfile::tempdir()?;
    let mut cmd = std::process::Command::new(&input.enclave_program);
    cmd.arg("replay");
    let updates = updates_of(store, verifier, x, k)?;
    let start = store.checkpoint(x.statement.step_before);
    let start_manifest: CheckpointManifest = serde_json::from_slice(
        &read_bounded(&start.manifest, 1 << 20)
            .with_context(|| format!("reading {}", start.manifest.display()))?,
    )
    .with_context(|| format!("{} is not a checkpoint manifest", start.manifest.display()))?;
    let probe = &x.statement.probe;
    let (updates, receipt_json, checkpoint, data, opened) =
        match (start_manifest.sealed_hash.is_some(), &input.key) {
            (false, _) => {
                let data = find_shard(&input.data, probe.shard, &probe.shard_sha256).with_context(
                    || {
                        format!(
                            "the probe's shard {} is not under {}",
                            probe.shard,
                            input.data.display()
                        )
                    },
                )?;
                (
                    updates,
                    x.payload().to_vec(),
                    start.manifest.clone(),
                    data,
                    false,
                )
            }
            (true, None) => {
                anyhow::bail!(
                    "the job is sealed: replaying a round needs the customer's key (--key)"
                )
            }
            (true, Some(key)) => {
                let o = open_sealed_round(
                    key,
                    &input.data,
                    &start,
                    &start_manifest,
                    x,
                    k,
                    updates,
                    tmp.path(),
                )?;
                (o.updates, o.receipt, o.checkpoint, o.shard, true)
            }
        };
    for (i, b) in updates.iter().enumerate() {
        let p = tmp.path().join(format!("update-{i}.bin"));
        std::fs::write(&p, b)?;
        cmd.arg("--update").arg(p);
    }
    let receipt = tmp.path().join("receipt.json");
    std::fs::write(&receipt, &receipt_json)?;
    cmd.arg("--checkpoint")
        .arg(&checkpoint)
        .arg("--receipt")
        .arg(&receipt)
        .arg("--data")
        .arg(&data)
        .arg("--json");
    let out = cmd
        .output()
        .with_context(|| format!("running {} replay", input.enclave_program.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let failed: Vec<String> = v["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["pass"] == false)
        .map(|c| {
            format!(
                "{} ({})",
                c["name"].as_str().unwrap_or("?"),
                c["detail"].as_str().unwrap_or("")
            )
        })
        .collect();
    let pass = out.status.success() && v["pass"] == true;
    let mut detail = if pass {
        format!(
            "{} checks, {} proofs pass",
            v["checks"].as_array().map_or(0, Vec::len),
            v["proofs"].as_array().map_or(0, Vec::len)
        )
    } else if failed.is_empty() {
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    } else {
        failed.join("; ")
    };
    if opened {
        detail.push_str(
            " (sealed round: its checkpoint, updates and probe shard were opened with the \
             customer's key inside this auditor's process)",
        );
    }
    Ok(ReplayRow {
        round: k,
        pass,
        detail,
    })
}

/// A sealed round's inputs opened with the customer's key into `tmp`: the updates (already
/// matched to the signed receipt by their sealed hashes), a receipt naming their plaintext
/// hashes instead (what the replay compares), the starting checkpoint in the clear with its
/// manifest, and the probe's shard from the sealed dataset in `data`. Every opened file is
/// checked against the hash its signer or the dataset's index names.
#[allow(clippy::too_many_arguments)]
fn open_sealed_round(
    key: &Path,
    data: &Path,
    start: &crate::store::CheckpointFiles,
    start_manifest: &CheckpointManifest,
    x: &Signed<RoundReceipt>,
    k: u64,
    sealed_updates: Vec<Vec<u8>>,
    tmp: &Path,
) -> Result<OpenedRound> {
    let (kf, secret) = crate::keys::KeyFile::read(key)?;
    let id = kf.sealing_id;
    let mut plain_updates = Vec::new();
    for (i, b) in sealed_updates.iter().enumerate() {
        plain_updates.push(
            secret
                .open(&id.0, Kind::Update, k, b)
                .with_context(|| format!("round {k}: opening update {i}"))?,
        );
    }
    let mut receipt = x.statement.clone();
    receipt.updates = plain_updates.iter().map(|u| Hash32::sha256(u)).collect();
    // The starting checkpoint.
    let sealed = read_bounded(&start.weights, conclave_protocol::sync::MAX_CHECKPOINT)
        .with_context(|| format!("reading {}", start.weights.display()))?;
    let weights = crate::keys::open_checkpoint(&secret, &id, start_manifest, &sealed)
        .with_context(|| format!("{}", start.weights.display()))?;
    std::fs::write(tmp.join("start.safetensors"), &weights)?;
    let mut m = start_manifest.clone();
    m.weights = "start.safetensors".into();
    m.sealed_hash = None;
    let manifest = tmp.join("start.json");
    std::fs::write(&manifest, serde_json::to_vec(&m)?)?;
    // The probe's shard, from the sealed dataset.
    let index = crate::keys::read_sealed_index(data).with_context(|| {
        format!(
            "--data {} (the sealed dataset, for a sealed job)",
            data.display()
        )
    })?;
    let name = format!("shard-{:04}.bin", x.statement.probe.shard);
    let (_, f) = index.file(&name)?;
    let ct = read_bounded(
        &data.join(SealedDataset::sealed_name(&name)),
        SealedDataset::sealed_len(f.size),
    )?;
    let shard = index.open(&secret, &name, &ct)?;
    let shard_path = tmp.join(&name);
    std::fs::write(&shard_path, &shard)?;
    Ok(OpenedRound {
        updates: plain_updates,
        receipt: receipt.to_json(),
        checkpoint: manifest,
        shard: shard_path,
    })
}

/// A sealed round opened for its replay.
struct OpenedRound {
    updates: Vec<Vec<u8>>,
    receipt: Vec<u8>,
    checkpoint: PathBuf,
    shard: PathBuf,
}

/// Finds the shard file whose dataset manifest (`manifest.json` beside it) lists `sha` for
/// shard `index`, under `root` (up to three levels deep). Replay checks the hash again.
fn find_shard(root: &Path, index: u32, sha: &Hash32) -> Option<PathBuf> {
    let mut level = vec![root.to_path_buf()];
    for _ in 0..4 {
        for d in &level {
            let Ok(text) = std::fs::read(d.join("manifest.json")) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
            let listed = v["shards"].as_array().into_iter().flatten().any(|s| {
                s["index"].as_u64() == Some(u64::from(index))
                    && s["sha256"].as_str().and_then(|t| Hash32::from_hex(t).ok()) == Some(*sha)
            });
            let p = d.join(format!("shard-{index:04}.bin"));
            if listed && p.exists() {
                return Some(p);
            }
        }
        level = level
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
    }
    None
}
