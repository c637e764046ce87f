//! `conclave audit`: checks a job's results against what the chain recorded.
//!
//! The audit fetches, then judges: [`fetch::fetch`] reads everything it needs from the chain
//! and the operator's storage folder into an [`AuditData`]; [`judge::judge`], a pure function
//! of that data, the policy and the time, makes the report (see its docs for the checks); then
//! `--replay N` rounds, sampled from the job id, are re-executed with `conclave-enclave replay`
//! (TOPLOC proofs, updates, aggregation, the weights after).
//!
//! The folder is an operator's storage folder (`conclave node` writes it; its layout is
//! [`crate::store::JobStore`]'s): `operator-N.json` and `evidence-N.bin`,
//! `rounds/NNNNNN/{receipt-N.env,receipt-N.json,update-N.env}`,
//! `checkpoints/step-NNNNNN.{safetensors,json,manifest.env}`.

pub mod data;
pub mod fetch;
pub mod judge;
mod replay;

use std::path::PathBuf;

use alloy::primitives::Address;
use anyhow::{Context, Result};
use conclave_attestation::{Policy, UnixTime};
use serde::Serialize;

use crate::chain::JobStatus;

pub use data::AuditData;
pub use fetch::fetch;
pub use judge::judge;

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
    /// A sealed job: the customer's key file. Replays then open the round's sealed checkpoint,
    /// updates and probe shard (from the sealed dataset in `data`) inside this process.
    pub key: Option<PathBuf>,
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
    /// The job's status on chain, as the contract's number.
    pub status: u8,
    /// The same status, typed (`"running"`, `"completed"`, …).
    pub state: JobStatus,
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

    /// Whether every check, checkpoint and replay passed.
    fn all_pass(&self) -> bool {
        self.job_checks.iter().all(|c| c.pass)
            && self.checkpoints.iter().all(CheckpointRow::pass)
            && self.replays.iter().all(|r| r.pass)
    }
}

/// Adds a check to `out`.
pub(crate) fn check(out: &mut Vec<Check>, name: &str, pass: bool, detail: impl Into<String>) {
    out.push(Check {
        name: name.into(),
        pass,
        detail: detail.into(),
    });
}

/// Runs the audit. `Err`: the input could not be used (exit 2); otherwise the report says
/// what passed (exit 0 when everything did, 1 otherwise).
pub async fn audit(input: &AuditInput) -> Result<AuditReport> {
    let data = fetch(input).await?;
    let policy = input.policy.clone().unwrap_or_default();
    let report = judge(&data, &policy, input.now);
    if input.replay == 0 {
        return Ok(report);
    }
    let input = input.clone();
    let mut report =
        tokio::task::spawn_blocking(move || replay::replay(&input, &data, &policy, report))
            .await
            .context("the replays")?;
    report.pass = report.all_pass();
    Ok(report)
}

/// The per-checkpoint table and the failures, as `conclave audit` prints them.
pub fn render(report: &AuditReport) -> String {
    let mut s = format!(
        "job {}: status {}, {} of {} rounds certified\n\n{:>6}  {:>7}  {:<18}  {:<44}  {}\n",
        report.job,
        report.state,
        report.latest_round,
        report.total_rounds,
        "round",
        "step",
        "model",
        "certificate",
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
