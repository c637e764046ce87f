//! `conclave audit`: checks a job's results against what the chain recorded.
//!
//! For every checkpoint committed on chain: the weights file hashes to the committed model
//! hash; its signed manifest verifies and names that hash; the manifest's signer is an enclave
//! key registered on chain by an operator that was not slashed, whose evidence (from the
//! folder) passes the policy and is the evidence and measurement registered; the receipt the
//! chain names is in the folder, signed by the committing operator's enclave, and ends on the
//! committed model; and the round receipts chain (each round starts where the one before
//! ended). Then `--replay N` rounds, sampled from the job id, are re-executed with
//! `conclave-enclave replay` (TOPLOC proofs, updates, aggregation, the weights after).
//!
//! The folder is an operator's storage folder (`conclave node` writes it): `operator-N.json`
//! and `evidence-N.bin`, `rounds/NNNNNN/{receipt-N.env,receipt-N.json,update-N.env}`,
//! `checkpoints/step-NNNNNN.{safetensors,json,manifest.env}`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail};
use conclave_attestation::eip712::{chain_measurement, job_word};
use conclave_attestation::{
    AcceptedEvidence, BindingContext, Endorsements, Envelope, Evidence, JobId, Nonce, Policy,
    UnixTime, appraise,
};
use conclave_protocol::receipt::RoundReceipt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::chain::{Chain, ChainOptions};
use crate::net::parse_update_payload;

/// What to audit.
#[derive(Debug, Clone)]
pub struct AuditInput {
    pub rpc: String,
    pub contract: Address,
    pub job: u64,
    /// An operator's storage folder.
    pub dir: PathBuf,
    /// The customer's appraisal policy; `None`: the default policy (no sim evidence).
    pub policy: Option<Policy>,
    /// Rounds to re-execute.
    pub replay: usize,
    /// Where to look for the probes' shard files (searched two levels deep, matched by hash).
    pub data: PathBuf,
    /// The `conclave-enclave` program for replays.
    pub enclave_program: PathBuf,
    /// The time evidence is appraised at.
    pub now: UnixTime,
}

/// One named check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

/// A committed checkpoint and its checks.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointRow {
    pub round: u64,
    pub step: Option<u64>,
    pub model_hash: String,
    pub committed_by: String,
    pub checks: Vec<Check>,
}

impl CheckpointRow {
    pub fn pass(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }
}

/// A replayed round.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayRow {
    pub round: u64,
    pub pass: bool,
    pub detail: String,
}

/// The audit's result.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub job: u64,
    pub status: u8,
    pub total_rounds: u64,
    pub latest_round: u64,
    /// Checks of the job as a whole (operators, receipts chain).
    pub job_checks: Vec<Check>,
    pub checkpoints: Vec<CheckpointRow>,
    pub replays: Vec<ReplayRow>,
    pub pass: bool,
}

impl AuditReport {
    /// Every failed check, named.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .job_checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        for r in &self.checkpoints {
            for c in r.checks.iter().filter(|c| !c.pass) {
                out.push(format!("checkpoint {}: {}: {}", r.round, c.name, c.detail));
            }
        }
        for r in self.replays.iter().filter(|r| !r.pass) {
            out.push(format!("replay of round {}: {}", r.round, r.detail));
        }
        out
    }
}

fn check(out: &mut Vec<Check>, name: &str, pass: bool, detail: impl Into<String>) -> bool {
    out.push(Check {
        name: name.into(),
        pass,
        detail: detail.into(),
    });
    pass
}

/// An enclave of the folder: its announced identity and the appraisal of its evidence.
struct Enclave {
    index: u32,
    address: Address,
    accepted: Option<AcceptedEvidence>,
    rejected: String,
    ctx: BindingContext,
}

/// A verified receipt.
struct Receipt {
    signer: Address,
    hash: [u8; 32],
    receipt: RoundReceipt,
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Loads and appraises the folder's enclaves (`operator-N.json` + evidence).
fn load_enclaves(dir: &Path, job: JobId, policy: &Policy, now: UnixTime) -> Result<Vec<Enclave>> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading the folder {}", dir.display()))?;
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("operator-") && n.ends_with(".json"))
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let v: serde_json::Value =
            serde_json::from_slice(&read(&path)?).with_context(|| format!("{}", path.display()))?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .with_context(|| format!("{}: no {k}", path.display()))
        };
        let index = v["operator"]
            .as_u64()
            .with_context(|| format!("{}: no operator", path.display()))?
            as u32;
        let address: Address = field("address")?
            .parse()
            .with_context(|| format!("{}: address", path.display()))?;
        let nonce = Nonce::from_hex(&field("nonce")?)?;
        let evidence_file = dir.join(field("evidence")?);
        let ev = Evidence::decode(&read(&evidence_file)?)
            .with_context(|| format!("{}", evidence_file.display()))?;
        let a = appraise(&ev, &Endorsements::default(), policy, now)?;
        let rejected = a
            .reasons
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        out.push(Enclave {
            index,
            address,
            accepted: a.accepted(),
            rejected,
            ctx: BindingContext { job_id: job, nonce },
        });
    }
    if out.is_empty() {
        bail!(
            "{} holds no operator-N.json: not an operator's storage folder",
            dir.display()
        );
    }
    Ok(out)
}

/// Verifies a signed envelope of `kind` against the folder's enclaves; returns the signer and
/// the payload.
fn verify_envelope(
    bytes: &[u8],
    domain: &str,
    kind: &str,
    enclaves: &[Enclave],
) -> Result<(Address, Vec<u8>), String> {
    let env = Envelope::decode(bytes).map_err(|e| format!("not an envelope: {e}"))?;
    let signer = Address::from(env.signer.0);
    let e = enclaves
        .iter()
        .find(|e| e.address == signer)
        .ok_or_else(|| format!("signed by {signer}, no enclave of the folder"))?;
    let acc = e.accepted.as_ref().ok_or_else(|| {
        format!(
            "signer {signer}'s evidence is rejected by the policy: {}",
            e.rejected
        )
    })?;
    env.verify_as(domain, kind, acc, &e.ctx)
        .map_err(|e| format!("signature: {e}"))?;
    Ok((signer, env.payload))
}

/// Runs the audit. `Err`: the input could not be used (exit 2); otherwise the report says
/// what passed (exit 0 when everything did, 1 otherwise).
pub async fn audit(input: &AuditInput) -> Result<AuditReport> {
    let dir = &input.dir;
    let reader = PrivateKeySigner::random();
    let chain =
        Chain::connect(&input.rpc, &reader, input.contract, ChainOptions::default()).await?;
    let id = input.job;
    let job = chain.job(id).await?;
    if job.customer == Address::ZERO {
        bail!("there is no job {id} on contract {}", input.contract);
    }
    let job_id = JobId(job_word(id));
    let domain = format!("conclave/v1/job/{}", hex::encode(job_id.0));
    let policy = input.policy.clone().unwrap_or_default();
    let allowed: BTreeSet<B256> = chain
        .contract
        .measurements(alloy::primitives::U256::from(id))
        .call()
        .await
        .context("reading the job's measurements")?
        .into_iter()
        .collect();

    let mut report = AuditReport {
        job: id,
        status: job.status,
        total_rounds: job.totalRounds,
        latest_round: job.latestRound,
        job_checks: Vec::new(),
        checkpoints: Vec::new(),
        replays: Vec::new(),
        pass: false,
    };
    let jc = &mut report.job_checks;

    // The enclaves: evidence passes the policy and is what the chain registered.
    let enclaves = load_enclaves(dir, job_id, &policy, input.now)?;
    let mut registered: BTreeMap<Address, Address> = BTreeMap::new(); // enclave key -> account
    for e in &enclaves {
        let name = format!("operator {} enclave {}", e.index, e.address);
        let Some(acc) = &e.accepted else {
            check(
                jc,
                &format!("{name}: evidence passes the policy"),
                false,
                e.rejected.clone(),
            );
            continue;
        };
        let account = chain.operator_of_key(id, e.address).await?;
        if !check(
            jc,
            &format!("{name}: registered on chain"),
            account != Address::ZERO,
            if account == Address::ZERO {
                "no operator registered this key".to_string()
            } else {
                format!("by {account}")
            },
        ) {
            continue;
        }
        let op = chain.operator(id, account).await?;
        let m = B256::from(chain_measurement(acc.tee(), &acc.measurement()));
        check(
            jc,
            &format!("{name}: registered evidence and measurement are its own"),
            op.evidenceHash == B256::from(acc.evidence_hash().0) && op.measurement == m,
            format!(
                "chain {} / {}, evidence {} / {m}",
                op.evidenceHash,
                op.measurement,
                hex::encode(acc.evidence_hash().0)
            ),
        );
        check(
            jc,
            &format!("{name}: measurement allowed by the job"),
            allowed.contains(&m),
            format!("{m}"),
        );
        // 4: slashed.
        check(
            jc,
            &format!("{name}: operator not slashed"),
            op.status != 4 && op.status != 0,
            format!("status {}", op.status),
        );
        registered.insert(e.address, account);
    }

    // The receipts of every round up to the latest on chain, verified, and their chain.
    let mut receipts: BTreeMap<u64, Vec<Receipt>> = BTreeMap::new();
    let mut prev_after: Option<String> = None;
    for k in 0..job.latestRound {
        let rdir = dir.join("rounds").join(format!("{k:06}"));
        let mut got = Vec::new();
        let mut names: Vec<String> = std::fs::read_dir(&rdir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("receipt-") && n.ends_with(".env"))
            .collect();
        names.sort();
        for n in &names {
            let env = read(&rdir.join(n))?;
            let what = format!("round {k} {n}");
            match verify_envelope(&env, &domain, "round-receipt", &enclaves) {
                Ok((signer, payload)) => {
                    let json = rdir.join(n.replace(".env", ".json"));
                    if std::fs::read(&json).ok().as_deref() != Some(payload.as_slice()) {
                        check(
                            jc,
                            &format!("{what}: JSON is the signed payload"),
                            false,
                            format!("{} differs from the envelope's payload", json.display()),
                        );
                    }
                    match RoundReceipt::from_json(&payload) {
                        Ok(r) if r.round == k => got.push(Receipt {
                            signer,
                            hash: sha256(&payload),
                            receipt: r,
                        }),
                        Ok(r) => {
                            check(jc, &what, false, format!("a receipt of round {}", r.round));
                        }
                        Err(e) => {
                            check(jc, &what, false, format!("{e:#}"));
                        }
                    }
                }
                Err(e) => {
                    check(
                        jc,
                        &format!("{what}: signed by an attested enclave"),
                        false,
                        e,
                    );
                }
            }
        }
        if got.is_empty() {
            check(
                jc,
                &format!("round {k}: receipts"),
                false,
                format!("no verified receipt in {}", rdir.display()),
            );
            prev_after = None;
            receipts.insert(k, got);
            continue;
        }
        let after = got[0].receipt.model_hash_after.clone();
        let before = got[0].receipt.model_hash_before.clone();
        let agree = got
            .iter()
            .all(|r| r.receipt.model_hash_after == after && r.receipt.model_hash_before == before);
        check(
            jc,
            &format!("round {k}: receipts agree"),
            agree,
            format!("{} receipts", got.len()),
        );
        if let Some(p) = &prev_after {
            check(
                jc,
                &format!(
                    "round {k}: starts where round {} ended",
                    k.saturating_sub(1)
                ),
                *p == before,
                format!("before {before}, previous after {p}"),
            );
        }
        prev_after = Some(after);
        receipts.insert(k, got);
    }

    // Every committed checkpoint.
    let interval = job.checkpointInterval.max(1);
    let mut r = interval;
    while r <= job.latestRound {
        let cp = chain.checkpoint(id, r).await?;
        r += interval;
        if cp.modelHash == B256::ZERO {
            continue; // skipped on chain (a later round was committed first)
        }
        let round = r - interval;
        let mh = hex::encode(cp.modelHash.0);
        let mut row = CheckpointRow {
            round,
            step: None,
            model_hash: mh.clone(),
            committed_by: cp.operator.to_string(),
            checks: Vec::new(),
        };
        let c = &mut row.checks;
        // The receipt the chain names.
        let named = receipts
            .get(&(round - 1))
            .and_then(|v| v.iter().find(|x| x.hash == cp.receiptHash.0));
        let step = match named {
            None => {
                check(
                    c,
                    "receipt named on chain",
                    false,
                    format!(
                        "no verified receipt of round {} hashes to {}",
                        round - 1,
                        cp.receiptHash
                    ),
                );
                None
            }
            Some(x) => {
                check(
                    c,
                    "receipt named on chain",
                    true,
                    format!("signed by {}", x.signer),
                );
                check(
                    c,
                    "receipt ends on the committed model",
                    x.receipt.model_hash_after == mh,
                    format!("receipt after {}", x.receipt.model_hash_after),
                );
                let by = registered.get(&x.signer).copied().unwrap_or(Address::ZERO);
                check(
                    c,
                    "receipt signed by the committing operator's enclave",
                    by == cp.operator,
                    format!("signer registered by {by}, committed by {}", cp.operator),
                );
                Some(x.receipt.step_after)
            }
        };
        row.step = step;
        if let Some(step) = step {
            let stem = dir.join("checkpoints").join(format!("step-{step:06}"));
            let weights = stem.with_extension("safetensors");
            match std::fs::read(&weights) {
                Ok(w) => {
                    let h = hex::encode(sha256(&w));
                    check(
                        c,
                        "weights hash to the committed model",
                        h == mh,
                        format!("{} hashes to {h}", weights.display()),
                    );
                }
                Err(e) => {
                    check(
                        c,
                        "weights hash to the committed model",
                        false,
                        format!("{}: {e}", weights.display()),
                    );
                }
            }
            let menv = PathBuf::from(format!("{}.manifest.env", stem.display()));
            match std::fs::read(&menv)
                .map_err(|e| format!("{}: {e}", menv.display()))
                .and_then(|b| verify_envelope(&b, &domain, "checkpoint-manifest", &enclaves))
            {
                Ok((signer, payload)) => {
                    let m: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                    check(
                        c,
                        "signed manifest names the committed model",
                        m["model_hash"].as_str() == Some(mh.as_str())
                            && m["step"].as_u64() == Some(step),
                        format!(
                            "manifest model {}, step {}",
                            m["model_hash"].as_str().unwrap_or("?"),
                            m["step"]
                        ),
                    );
                    let json = stem.with_extension("json");
                    check(
                        c,
                        "manifest JSON is the signed payload",
                        std::fs::read(&json).ok().as_deref() == Some(payload.as_slice()),
                        format!("{}", json.display()),
                    );
                    check(
                        c,
                        "manifest signer is a registered enclave",
                        registered.contains_key(&signer),
                        format!("{signer}"),
                    );
                }
                Err(e) => {
                    check(c, "signed manifest verifies", false, e);
                }
            }
        }
        let chain_ok = (0..round).all(|k| {
            report
                .job_checks
                .iter()
                .filter(|x| x.name.starts_with(&format!("round {k}:")))
                .all(|x| x.pass)
        });
        check(
            c,
            "receipts chain to it",
            chain_ok,
            format!("rounds 0..{round}"),
        );
        report.checkpoints.push(row);
    }
    if report.checkpoints.is_empty() {
        check(
            &mut report.job_checks,
            "checkpoints committed on chain",
            false,
            format!("job {id} has none"),
        );
    }

    // Replays: rounds whose starting weights are in the folder, sampled by the job id.
    if input.replay > 0 {
        let mut candidates: Vec<(u64, [u8; 32])> = Vec::new();
        for (k, got) in &receipts {
            if let Some(x) = got.first() {
                let m = dir
                    .join("checkpoints")
                    .join(format!("step-{:06}.json", x.receipt.step_before));
                if m.exists() {
                    candidates.push((*k, sha256(format!("audit/{id}/{k}").as_bytes())));
                }
            }
        }
        candidates.sort_by_key(|c| c.1);
        let mut chosen: Vec<u64> = candidates.iter().take(input.replay).map(|c| c.0).collect();
        chosen.sort();
        if chosen.len() < input.replay {
            check(
                &mut report.job_checks,
                "rounds to replay",
                false,
                format!(
                    "{} asked, {} have their starting checkpoint in the folder",
                    input.replay,
                    chosen.len()
                ),
            );
        }
        for k in chosen {
            let row =
                replay_round(input, &domain, &enclaves, &receipts[&k][0], k).unwrap_or_else(|e| {
                    ReplayRow {
                        round: k,
                        pass: false,
                        detail: format!("{e:#}"),
                    }
                });
            report.replays.push(row);
        }
    }
    report.pass = report.job_checks.iter().all(|c| c.pass)
        && report.checkpoints.iter().all(|r| r.pass())
        && report.replays.iter().all(|r| r.pass);
    Ok(report)
}

/// Finds the shard file whose dataset manifest (`manifest.json` beside it) lists `sha` for
/// shard `index`, under `root` (up to three levels deep). Replay checks the hash again.
fn find_shard(root: &Path, index: u32, sha: &str) -> Option<PathBuf> {
    let mut level = vec![root.to_path_buf()];
    for _ in 0..4 {
        for d in &level {
            let Ok(text) = std::fs::read(d.join("manifest.json")) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
            let listed = v["shards"].as_array().into_iter().flatten().any(|s| {
                s["index"].as_u64() == Some(u64::from(index)) && s["sha256"].as_str() == Some(sha)
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

fn replay_round(
    input: &AuditInput,
    domain: &str,
    enclaves: &[Enclave],
    x: &Receipt,
    k: u64,
) -> Result<ReplayRow> {
    let dir = &input.dir;
    let rdir = dir.join("rounds").join(format!("{k:06}"));
    let tmp = tempfile::tempdir()?;
    // The receipt's updates, from the signed envelopes, in the receipt's order.
    let mut by_hash: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for e in std::fs::read_dir(&rdir)?.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if n.starts_with("update-") && n.ends_with(".env") {
            let (_, payload) = verify_envelope(&read(&e.path())?, domain, "update", enclaves)
                .map_err(|m| anyhow::anyhow!("{n}: {m}"))?;
            parse_update_payload(&payload)?;
            let bytes = &payload[48..];
            by_hash.insert(hex::encode(sha256(bytes)), bytes.to_vec());
        }
    }
    let mut cmd = std::process::Command::new(&input.enclave_program);
    cmd.arg("replay");
    for (i, h) in x.receipt.updates.iter().enumerate() {
        let b = by_hash
            .get(h)
            .with_context(|| format!("round {k}: no signed update hashes to {h}"))?;
        let p = tmp.path().join(format!("update-{i}.bin"));
        std::fs::write(&p, b)?;
        cmd.arg("--update").arg(p);
    }
    let receipt = tmp.path().join("receipt.json");
    std::fs::write(&receipt, x.receipt.to_json())?;
    let probe = &x.receipt.probe;
    let data = find_shard(&input.data, probe.shard, &probe.shard_sha256).with_context(|| {
        format!(
            "the probe's shard {} is not under {}",
            probe.shard,
            input.data.display()
        )
    })?;
    cmd.arg("--checkpoint")
        .arg(
            dir.join("checkpoints")
                .join(format!("step-{:06}.json", x.receipt.step_before)),
        )
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
    let detail = if pass {
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
    Ok(ReplayRow {
        round: k,
        pass,
        detail,
    })
}

/// The per-checkpoint table and the failures, as `conclave audit` prints them.
pub fn render(report: &AuditReport) -> String {
    let mut s = format!(
        "job {}: status {}, {} of {} rounds committed\n\n{:>6}  {:>7}  {:<18}  {:<44}  {}\n",
        report.job,
        match report.status {
            1 => "open",
            2 => "running",
            3 => "completed",
            4 => "cancelled",
            _ => "?",
        },
        report.latest_round,
        report.total_rounds,
        "round",
        "step",
        "model",
        "committed by",
        "result"
    );
    for r in &report.checkpoints {
        let failed = r.checks.iter().filter(|c| !c.pass).count();
        s.push_str(&format!(
            "{:>6}  {:>7}  {:<18}  {:<44}  {}\n",
            r.round,
            r.step.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
            format!("{}…", &r.model_hash[..16.min(r.model_hash.len())]),
            r.committed_by,
            if failed == 0 {
                format!("ok ({} checks)", r.checks.len())
            } else {
                format!("FAILED ({failed} of {} checks)", r.checks.len())
            }
        ));
    }
    for r in &report.replays {
        s.push_str(&format!(
            "replay of round {}: {} ({})\n",
            r.round,
            if r.pass { "ok" } else { "FAILED" },
            r.detail
        ));
    }
    let failures = report.failures();
    if failures.is_empty() {
        s.push_str(&format!(
            "\naudit passed: {} job checks, {} checkpoints, {} replays\n",
            report.job_checks.len(),
            report.checkpoints.len(),
            report.replays.len()
        ));
    } else {
        s.push_str("\naudit FAILED:\n");
        for f in failures {
            s.push_str(&format!("  - {f}\n"));
        }
    }
    s
}
