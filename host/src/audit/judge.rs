//! The audit's judge: a pure function of the fetched [`AuditData`], the customer's policy and
//! the time evidence is appraised at. No file, chain or clock is read here.
//!
//! For every checkpoint certified on chain: the weights hash to the certified model hash; the
//! signed manifest verifies and names that hash; its signer is an enclave key registered on
//! chain; the folder's certificate of the round names the update set the chain recorded; a
//! receipt whose outcome is the one the chain names is in the folder, signed by a member of
//! that set, and ends on the certified model; every member's receipt is there (an operator
//! outside the set is named as such); and the round receipts chain (each round starts where the
//! one before ended). For the job: the folder's job document is the one the chain's spec hash
//! names, every receipt states the document's config hash and the chain's dataset root (and is
//! signed in the job's domain, which names the spec hash), and every enclave of the folder has
//! evidence that passes the policy, is registered on chain with that evidence and measurement,
//! runs a measurement the job allows, and its operator is not slashed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use alloy::primitives::{Address, B256};
use conclave_attestation::eip712::{chain_measurement, job_word, update_set_hash};
use conclave_attestation::{
    AcceptedEvidence, BindingContext, EnclaveAddress, Endorsements, Evidence, JobId, Policy,
    UnixTime, appraise,
};
use conclave_protocol::receipt::RoundReceipt;
use conclave_protocol::{
    CheckpointManifest, Hash32, JobDocument, Signed, Statement, StatementError, job_domain,
};

use super::data::{AuditData, CheckpointData, CheckpointOnChain, OperatorFiles};
use super::{AuditReport, Check, CheckpointRow, check};
use crate::chain::OperatorStatus;
use crate::store::JobStore;

/// An enclave of the folder: its announced identity and the appraisal of its evidence.
struct Enclave {
    index: u32,
    address: Address,
    accepted: Option<AcceptedEvidence>,
    rejected: String,
    ctx: BindingContext,
}

/// A statement whose signature verified against an attested enclave of the folder.
pub(super) enum Verified<T> {
    /// Its payload parses as `T`.
    Statement(Signed<T>),
    /// Signed, but its payload does not parse as `T`.
    BadPayload {
        signer: Address,
        payload: Vec<u8>,
        why: String,
    },
}

impl<T: Statement> Verified<T> {
    fn signer(&self) -> Address {
        match self {
            Verified::Statement(s) => Address::from(s.signer().0),
            Verified::BadPayload { signer, .. } => *signer,
        }
    }

    fn payload(&self) -> &[u8] {
        match self {
            Verified::Statement(s) => s.payload(),
            Verified::BadPayload { payload, .. } => payload,
        }
    }
}

/// Verifies signed statements against the folder's enclaves, appraised under the policy.
pub(super) struct Verifier {
    domain: String,
    enclaves: Vec<Enclave>,
}

impl Verifier {
    /// Appraises every enclave of the folder under `policy` at `now`.
    pub(super) fn new(data: &AuditData, policy: &Policy, now: UnixTime) -> Self {
        let job_id = JobId(job_word(data.job));
        Verifier {
            domain: job_domain(&job_id, &Hash32(data.chain.job.spec_hash.0)),
            enclaves: data
                .folder
                .operators
                .iter()
                .map(|op| appraise_enclave(op, job_id, policy, now))
                .collect(),
        }
    }

    /// Verifies an envelope as a `T` from an enclave of the folder whose evidence the policy
    /// accepts. `Err`: why it is not such a statement.
    pub(super) fn verify<T: Statement>(&self, bytes: &[u8]) -> Result<Verified<T>, String> {
        let env =
            Signed::<T>::decode_envelope(bytes).map_err(|e| format!("not an envelope: {e}"))?;
        let signer = Address::from(env.signer.0);
        let e = self
            .enclaves
            .iter()
            .find(|e| e.address == signer)
            .ok_or_else(|| format!("signed by {signer}, no enclave of the folder"))?;
        let acc = e.accepted.as_ref().ok_or_else(|| {
            format!(
                "signer {signer}'s evidence is rejected by the policy: {}",
                e.rejected
            )
        })?;
        match Signed::<T>::verify(bytes, &self.domain, acc, &e.ctx) {
            Ok(s) => Ok(Verified::Statement(s)),
            Err(StatementError::Payload { why, .. }) => Ok(Verified::BadPayload {
                signer,
                payload: env.payload,
                why,
            }),
            Err(e) => Err(format!("signature: {e}")),
        }
    }
}

/// Decodes and appraises an operator's evidence; unreadable evidence is rejected, named.
fn appraise_enclave(op: &OperatorFiles, job_id: JobId, policy: &Policy, now: UnixTime) -> Enclave {
    let path = op.evidence.path.display();
    let appraisal = op
        .evidence
        .content
        .clone()
        .and_then(|b| Evidence::decode(&b).map_err(|e| format!("{path}: {e}")))
        .and_then(|ev| {
            appraise(&ev, &Endorsements::default(), policy, now).map_err(|e| format!("{path}: {e}"))
        });
    let (accepted, rejected) = match appraisal {
        Ok(a) => (
            a.accepted(),
            a.reasons
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Err(why) => (None, why),
    };
    Enclave {
        index: op.record.operator,
        address: Address::from(op.record.address.0),
        accepted,
        rejected,
        ctx: BindingContext {
            job_id,
            nonce: op.record.nonce,
        },
    }
}

/// Judges the fetched data (replays excluded): the job's checks and one row per committed
/// checkpoint. Pure.
pub fn judge(data: &AuditData, policy: &Policy, now: UnixTime) -> AuditReport {
    let job = &data.chain.job;
    let mut report = AuditReport {
        job: data.job,
        status: job.status,
        state: job.state(),
        total_rounds: job.total_rounds,
        latest_round: job.latest_round,
        job_checks: Vec::new(),
        checkpoints: Vec::new(),
        replays: Vec::new(),
        pass: false,
    };
    let verifier = Verifier::new(data, policy, now);
    let doc = judge_document(data, &mut report.job_checks);
    let registered = judge_enclaves(data, &verifier, &mut report.job_checks);
    let receipts = judge_rounds(data, &verifier, doc.as_ref(), &mut report.job_checks);
    for (&round, cp) in &data.chain.checkpoints {
        if cp.model_hash == B256::ZERO || round == 0 {
            continue; // skipped on chain (a later round was certified first)
        }
        let of_round = receipts
            .get(&(round - 1))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut row = judge_checkpoint(data, &verifier, &registered, round, cp, of_round);
        let chain_ok = (0..round).all(|k| {
            let prefix = format!("round {k}:");
            report
                .job_checks
                .iter()
                .filter(|x| x.name.starts_with(&prefix))
                .all(|x| x.pass)
        });
        check(
            &mut row.checks,
            "receipts chain to it",
            chain_ok,
            format!("rounds 0..{round}"),
        );
        report.checkpoints.push(row);
    }
    if report.checkpoints.is_empty() {
        check(
            &mut report.job_checks,
            "checkpoints certified on chain",
            false,
            format!("job {} has none", data.job),
        );
    }
    report.pass = report.all_pass();
    report
}

/// The folder's job document: the one whose hash the chain records, with the chain's dataset
/// root. Returns it when it is.
fn judge_document(data: &AuditData, jc: &mut Vec<Check>) -> Option<JobDocument> {
    let name = "job document is the one the chain names";
    let f = &data.folder.document;
    let bytes = match &f.content {
        Ok(b) => b,
        Err(why) => {
            check(jc, name, false, why.clone());
            return None;
        }
    };
    let hash = JobDocument::spec_hash(bytes);
    if hash.0 != data.chain.job.spec_hash.0 {
        let detail = format!(
            "{} hashes to {hash}, the chain's spec hash is {}",
            f.path.display(),
            data.chain.job.spec_hash
        );
        check(jc, name, false, detail);
        return None;
    }
    let doc = match JobDocument::parse(bytes) {
        Ok(d) => d,
        Err(e) => {
            check(jc, name, false, format!("{}: {e}", f.path.display()));
            return None;
        }
    };
    let pass = doc.data_root.0 == data.chain.job.dataset_root.0;
    let detail = format!(
        "spec {hash}; dataset root {} (chain {})",
        doc.data_root, data.chain.job.dataset_root
    );
    check(jc, name, pass, detail);
    pass.then_some(doc)
}

/// The enclaves: evidence passes the policy and is what the chain registered. Returns the
/// registered enclave keys with the accounts that registered them.
fn judge_enclaves(
    data: &AuditData,
    verifier: &Verifier,
    jc: &mut Vec<Check>,
) -> BTreeMap<Address, Address> {
    let mut registered = BTreeMap::new();
    for e in &verifier.enclaves {
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
        let reg = data.chain.keys.get(&e.address).copied().flatten();
        let Some(reg) = reg else {
            check(
                jc,
                &format!("{name}: registered on chain"),
                false,
                "no operator registered this key",
            );
            continue;
        };
        check(
            jc,
            &format!("{name}: registered on chain"),
            true,
            format!("by {}", reg.account),
        );
        let op = &reg.operator;
        let m = B256::from(chain_measurement(acc.tee(), &acc.measurement()));
        let ev = B256::from(acc.evidence_hash().0);
        check(
            jc,
            &format!("{name}: registered evidence and measurement are its own"),
            op.evidence_hash == ev && op.measurement == m,
            format!(
                "chain {} / {}, evidence {} / {m}",
                op.evidence_hash,
                op.measurement,
                hex::encode(ev.0)
            ),
        );
        check(
            jc,
            &format!("{name}: measurement allowed by the job"),
            data.chain.measurements.contains(&m),
            format!("{m}"),
        );
        check(
            jc,
            &format!("{name}: operator not slashed"),
            !matches!(op.status, OperatorStatus::Slashed | OperatorStatus::None),
            format!("status {}", op.status),
        );
        registered.insert(e.address, reg.account);
    }
    registered
}

/// The folder of round `k` (named in details).
fn round_dir(data: &AuditData, k: u64) -> PathBuf {
    data.folder
        .rounds
        .get(&k)
        .map(|r| r.dir.clone())
        .unwrap_or_else(|| JobStore::new(&data.folder.root).round_dir(k))
}

/// Round `k`'s receipts that verify and are of round `k`, and the checks of each receipt that
/// does not (and of a JSON file that is not its envelope's payload).
pub(super) fn verify_round(
    data: &AuditData,
    verifier: &Verifier,
    k: u64,
) -> (Vec<Signed<RoundReceipt>>, Vec<Check>) {
    let mut got = Vec::new();
    let mut checks = Vec::new();
    let files = data.folder.rounds.get(&k).map(|r| r.receipts.as_slice());
    for x in files.unwrap_or_default() {
        let what = format!("round {k} {}", x.name());
        let verified = x
            .envelope
            .content
            .as_deref()
            .map_err(|e| e.clone())
            .and_then(|b| verifier.verify::<RoundReceipt>(b));
        let v = match verified {
            Ok(v) => v,
            Err(e) => {
                let name = format!("{what}: signed by an attested enclave");
                check(&mut checks, &name, false, e);
                continue;
            }
        };
        let detail = match x.json.content.as_deref() {
            Ok(json) if json == v.payload() => None,
            Ok(_) => Some(format!(
                "{} differs from the envelope's payload",
                x.json.path.display()
            )),
            Err(why) => Some(why.clone()),
        };
        if let Some(detail) = detail {
            let name = format!("{what}: JSON is the signed payload");
            check(&mut checks, &name, false, detail);
        }
        match v {
            Verified::Statement(s) if s.statement.round == k => got.push(s),
            Verified::Statement(s) => {
                let detail = format!("a receipt of round {}", s.statement.round);
                check(&mut checks, &what, false, detail);
            }
            Verified::BadPayload { why, .. } => {
                check(&mut checks, &what, false, why);
            }
        }
    }
    (got, checks)
}

/// The receipts of every round up to the latest on chain, verified, and their chain.
fn judge_rounds(
    data: &AuditData,
    verifier: &Verifier,
    doc: Option<&JobDocument>,
    jc: &mut Vec<Check>,
) -> BTreeMap<u64, Vec<Signed<RoundReceipt>>> {
    let mut receipts = BTreeMap::new();
    let mut prev_after = None;
    for k in 0..data.chain.job.latest_round {
        let (got, checks) = verify_round(data, verifier, k);
        jc.extend(checks);
        // Every receipt states the job's config and data: the document's config hash and the
        // chain's dataset root.
        for r in &got {
            let rc = &r.statement;
            let config_ok = doc.is_some_and(|d| d.config_hash == rc.config_hash);
            let data_ok = rc.data_root.0 == data.chain.job.dataset_root.0;
            if !(config_ok && data_ok) {
                check(
                    jc,
                    &format!(
                        "round {k} receipt of 0x{}: config hash and data root are the chain job's",
                        r.signer()
                    ),
                    false,
                    format!(
                        "receipt config {} (job document {}), data root {} (chain {})",
                        rc.config_hash,
                        doc.map(|d| d.config_hash.to_string())
                            .unwrap_or_else(|| "unknown".into()),
                        rc.data_root,
                        data.chain.job.dataset_root
                    ),
                );
            }
        }
        let Some(first) = got.first() else {
            check(
                jc,
                &format!("round {k}: receipts"),
                false,
                format!("no verified receipt in {}", round_dir(data, k).display()),
            );
            prev_after = None;
            receipts.insert(k, got);
            continue;
        };
        let after = first.statement.model_hash_after;
        let before = first.statement.model_hash_before;
        let agree = got.iter().all(|r| {
            r.statement.model_hash_after == after && r.statement.model_hash_before == before
        });
        check(
            jc,
            &format!("round {k}: receipts agree"),
            agree,
            format!("{} receipts", got.len()),
        );
        if let Some(p) = prev_after {
            check(
                jc,
                &format!(
                    "round {k}: starts where round {} ended",
                    k.saturating_sub(1)
                ),
                p == before,
                format!("before {before}, previous after {p}"),
            );
        }
        prev_after = Some(after);
        receipts.insert(k, got);
    }
    receipts
}

/// The members of a round's certificate in the folder, checked against the chain's update set.
fn certificate_members(
    data: &AuditData,
    round: u64,
    cp: &CheckpointOnChain,
    c: &mut Vec<Check>,
) -> Option<Vec<EnclaveAddress>> {
    let name = "certificate names the chain's update set";
    let Some(file) = data.folder.certificates.get(&round) else {
        let path = JobStore::new(&data.folder.root).certificate(round);
        check(c, name, false, format!("{}: not read", path.display()));
        return None;
    };
    #[derive(serde::Deserialize)]
    struct Members {
        members: Vec<EnclaveAddress>,
    }
    let parsed = file
        .content
        .as_deref()
        .map_err(|e| e.clone())
        .and_then(|b| {
            serde_json::from_slice::<Members>(b)
                .map_err(|e| format!("{}: {e}", file.path.display()))
        });
    let members = match parsed {
        Ok(m) => m.members,
        Err(why) => {
            check(c, name, false, why);
            return None;
        }
    };
    let pass = update_set_hash(&members) == cp.update_set.0;
    check(
        c,
        name,
        pass,
        format!("{} members, update set {}", members.len(), cp.update_set),
    );
    pass.then_some(members)
}

/// A certified checkpoint: the receipts of the round before whose outcome is the one the chain
/// names, the certificate's members, the weights and the signed manifest.
fn judge_checkpoint(
    data: &AuditData,
    verifier: &Verifier,
    registered: &BTreeMap<Address, Address>,
    round: u64,
    cp: &CheckpointOnChain,
    receipts: &[Signed<RoundReceipt>],
) -> CheckpointRow {
    let mh = hex::encode(cp.model_hash.0);
    let mut row = CheckpointRow {
        round,
        step: None,
        model_hash: mh,
        committed_by: format!("{} enclave signatures", cp.signers),
        checks: Vec::new(),
    };
    let c = &mut row.checks;
    let members = certificate_members(data, round, cp, c);
    let named: Vec<&Signed<RoundReceipt>> = receipts
        .iter()
        .filter(|x| x.statement.outcome_hash().0 == cp.receipt_hash.0)
        .collect();
    let Some(x) = named.first() else {
        check(
            c,
            "receipt named on chain",
            false,
            format!(
                "no verified receipt of round {} has the outcome {}",
                round - 1,
                cp.receipt_hash
            ),
        );
        return row;
    };
    let signer = Address::from(x.signer().0);
    check(
        c,
        "receipt named on chain",
        true,
        format!("{} receipts, e.g. by {signer}", named.len()),
    );
    check(
        c,
        "receipt ends on the certified model",
        x.statement.model_hash_after.0 == cp.model_hash.0,
        format!("receipt after {}", x.statement.model_hash_after),
    );
    if let Some(members) = &members {
        let in_set = named.iter().all(|r| members.contains(&r.signer()));
        check(
            c,
            "receipts signed by members of the certified set",
            in_set,
            format!("{} receipts", named.len()),
        );
        // Completeness: every member's receipt is in the folder; operators outside the set
        // are named as such (their absence is explained by the certificate).
        let missing: Vec<String> = members
            .iter()
            .filter(|m| !named.iter().any(|r| r.signer() == **m))
            .map(|m| {
                let op = data
                    .folder
                    .operators
                    .iter()
                    .find(|o| o.record.address == *m)
                    .map(|o| format!("operator {}", o.record.operator))
                    .unwrap_or_else(|| "no operator record".into());
                format!("0x{m} ({op})")
            })
            .collect();
        let outside: Vec<u32> = data
            .folder
            .operators
            .iter()
            .filter(|o| !members.contains(&o.record.address))
            .map(|o| o.record.operator)
            .collect();
        check(
            c,
            "every member's receipt is present",
            missing.is_empty(),
            if missing.is_empty() {
                format!(
                    "{} members; outside the certified set: {outside:?}",
                    members.len()
                )
            } else {
                format!("missing: {}", missing.join(", "))
            },
        );
    }
    let by = registered.get(&signer).copied().unwrap_or(Address::ZERO);
    check(
        c,
        "receipt signed by a registered enclave",
        by != Address::ZERO,
        format!("signer registered by {by}"),
    );
    let step = x.statement.step_after;
    row.step = Some(step);
    let missing;
    let files = match data.folder.checkpoints.get(&step) {
        Some(f) => f,
        None => {
            let store = JobStore::new(&data.folder.root);
            missing = CheckpointData::not_read(step, store.checkpoint(step));
            &missing
        }
    };
    checkpoint_files(files, verifier, registered, cp, &mut row.checks);
    row
}

/// The checks of a stored checkpoint's files against the committed one.
fn checkpoint_files(
    files: &CheckpointData,
    verifier: &Verifier,
    registered: &BTreeMap<Address, Address>,
    cp: &CheckpointOnChain,
    c: &mut Vec<Check>,
) {
    let verified = files
        .envelope
        .content
        .as_deref()
        .map_err(|e| e.clone())
        .and_then(|b| verifier.verify::<CheckpointManifest>(b));
    // A sealed job's weights file is the sealed envelope: without the key, the auditor checks
    // it against the sealed hash the enclave signed beside the certified model's hash.
    let sealed = match &verified {
        Ok(Verified::Statement(s)) => s.statement.sealed_hash,
        _ => None,
    };
    let weights = &files.weights_sha256;
    match (&weights.content, sealed) {
        (Ok(h), None) => {
            let detail = format!("{} hashes to {h}", weights.path.display());
            let pass = h.0 == cp.model_hash.0;
            check(c, "weights hash to the certified model", pass, detail);
        }
        (Ok(h), Some(sealed)) => {
            let detail = format!(
                "{} (sealed) hashes to {h}, the signed manifest's sealed hash is {sealed}",
                weights.path.display()
            );
            check(
                c,
                "sealed weights hash to the signed manifest",
                *h == sealed,
                detail,
            );
        }
        (Err(e), _) => {
            check(c, "weights hash to the certified model", false, e.clone());
        }
    }
    let v = match verified {
        Ok(v) => v,
        Err(e) => {
            check(c, "signed manifest verifies", false, e);
            return;
        }
    };
    match &v {
        Verified::Statement(s) => {
            let m = &s.statement;
            check(
                c,
                "signed manifest names the certified model",
                m.model_hash.0 == cp.model_hash.0 && m.step == files.step,
                format!("manifest model {}, step {}", m.model_hash, m.step),
            );
        }
        Verified::BadPayload { why, .. } => {
            let name = "signed manifest names the certified model";
            check(c, name, false, why.clone());
        }
    }
    let json = &files.manifest;
    check(
        c,
        "manifest JSON is the signed payload",
        json.content.as_deref().ok() == Some(v.payload()),
        match &json.content {
            Ok(_) => format!("{}", json.path.display()),
            Err(why) => why.clone(),
        },
    );
    let signer = v.signer();
    check(
        c,
        "manifest signer is a registered enclave",
        registered.contains_key(&signer),
        format!("{signer}"),
    );
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
