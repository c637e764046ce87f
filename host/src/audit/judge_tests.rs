//! The judge on data built in memory: two operators with sim evidence, four rounds, a
//! checkpoint every two, each certified by both enclaves over both updates (round 2's
//! checkpoint stored by operator 0, round 4's by operator 1). Each test breaks one thing and
//! looks for the check that names it. No files, sockets or processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use alloy::primitives::{Address, B256};
use conclave_attestation::eip712::{chain_measurement, job_word, sorted_members, update_set_hash};
use conclave_attestation::sim::default_sim_measurement;
use conclave_attestation::{
    BindingContext, EnclaveKey, Evidence, EvidenceHash, JobId, Nonce, Policy, SimAttester,
    SimConfig, UnixTime,
};
use conclave_protocol::job::JOB_DOCUMENT_VERSION;
use conclave_protocol::model::ModelConfig;
use conclave_protocol::receipt::{OuterStep, Probe, RoundReceipt, ToplocParams};
use conclave_protocol::toploc::Thresholds;
use conclave_protocol::{
    CheckpointManifest, Hash32, JobDocument, JobTee, Signed, Statement, job_domain,
};

use super::judge;
use crate::audit::data::{
    AuditData, ChainData, CheckpointData, CheckpointOnChain, FileRead, FolderData, JobOnChain,
    OperatorFiles, OperatorOnChain, ReceiptFiles, Registration, RoundFiles,
};
use crate::audit::{AuditReport, render};
use crate::chain::OperatorStatus;
use crate::store::{JobStore, OperatorRecord};

const JOB: u64 = 7;
const NOW: UnixTime = UnixTime(1_800_000_000);
const OPERATORS: u32 = 2;
const ROUNDS: u64 = 4;

struct Op {
    key: EnclaveKey,
    evidence: Evidence,
}

struct Fixture {
    data: AuditData,
    ops: Vec<Op>,
    domain: String,
}

fn policy() -> Policy {
    Policy {
        allow_sim: true,
        measurements: vec![default_sim_measurement()],
        ..Policy::default()
    }
}

/// The job document the chain's spec hash names.
fn document() -> Vec<u8> {
    JobDocument {
        version: JOB_DOCUMENT_VERSION,
        tee: JobTee::Sim,
        config: "rounds = 4\n".into(),
        config_hash: Hash32::sha256(b"config"),
        data_root: Hash32::sha256(b"data"),
        initial_model_hash: model(0),
        operators: OPERATORS,
        quorum_bps: 6000,
        policy: policy(),
        sealing: None,
    }
    .encode()
}

/// The hash of the weights after `n` rounds.
fn model(n: u64) -> Hash32 {
    Hash32::sha256(format!("weights after round {n}").as_bytes())
}

/// Operator `op`'s receipt of round `k` (operators differ in their probe and loss).
fn receipt(k: u64, op: u32) -> RoundReceipt {
    RoundReceipt {
        version: 1,
        config_hash: Hash32::sha256(b"config"),
        data_root: Hash32::sha256(b"data"),
        seed: 1,
        round: k,
        step_before: 10 * k,
        step_after: 10 * (k + 1),
        model_hash_before: model(k),
        model_hash_after: model(k + 1),
        updates: vec![Hash32::sha256(b"update 0"), Hash32::sha256(b"update 1")],
        outer: OuterStep::Sgd {
            lr: 1.0,
            clip_median_norm: true,
        },
        probe: Probe {
            shard: op,
            shard_sha256: Hash32::sha256(format!("shard {op}").as_bytes()),
            starts: vec![0, 100],
            context: 32,
            tokens: 32,
            example_len: None,
        },
        toploc: ToplocParams {
            group: 32,
            topk: 128,
            thresholds: Thresholds::default(),
        },
        proofs_before: vec!["x".into(), "y".into()],
        proofs_after: Vec::new(),
        loss: 3.0 + f64::from(op),
    }
}

/// The manifest of the checkpoint after round `round`.
fn manifest(round: u64) -> CheckpointManifest {
    CheckpointManifest {
        version: 1,
        model_hash: model(round),
        step: 10 * round,
        config_hash: Hash32::sha256(b"config"),
        data_root: Hash32::sha256(b"data"),
        tokenizer_sha256: Hash32::sha256(b"tokenizer"),
        method: "sparseloco".into(),
        params: 1000,
        val_loss: Some(2.5),
        weights: format!("step-{:06}.safetensors", 10 * round),
        model: ModelConfig::default(),
        vocab: 256,
        sealed_hash: None,
    }
}

impl Fixture {
    /// A job all of whose checks pass.
    fn new() -> Self {
        let job_id = JobId(job_word(JOB));
        let att = SimAttester::new(SimConfig::default()).unwrap();
        let store = JobStore::new("/job");
        let (mut ops, mut operators, mut keys) = (Vec::new(), Vec::new(), BTreeMap::new());
        let mut measurements = BTreeSet::new();
        for i in 0..OPERATORS {
            let key = EnclaveKey::generate();
            let nonce = Nonce([i as u8 + 1; 32]);
            let evidence = att.evidence(&key.report_data(&BindingContext { job_id, nonce }));
            let account = Address::repeat_byte(0xa0 + i as u8);
            let measurement =
                B256::from(chain_measurement(evidence.tee, &default_sim_measurement()));
            measurements.insert(measurement);
            let record = OperatorRecord {
                operator: i,
                address: key.address(),
                job_id,
                nonce,
                peer_id: None,
                evidence: JobStore::evidence_name(i),
            };
            operators.push(OperatorFiles {
                evidence: FileRead::found(store.evidence(i), evidence.encode()),
                record,
            });
            let operator = OperatorOnChain {
                status: OperatorStatus::Joined,
                measurement,
                evidence_hash: B256::from(evidence.hash().0),
            };
            let registration = Registration { account, operator };
            keys.insert(Address::from(key.address().0), Some(registration));
            ops.push(Op { key, evidence });
        }
        let doc = document();
        let spec_hash = JobDocument::spec_hash(&doc);
        let job = JobOnChain {
            status: 2,
            total_rounds: ROUNDS,
            latest_round: ROUNDS,
            checkpoint_interval: 2,
            spec_hash: B256::from(spec_hash.0),
            dataset_root: B256::from(Hash32::sha256(b"data").0),
        };
        let mut fx = Fixture {
            data: AuditData {
                job: JOB,
                chain: ChainData {
                    job,
                    measurements,
                    keys,
                    checkpoints: BTreeMap::new(),
                },
                folder: FolderData {
                    root: PathBuf::from("/job"),
                    operators,
                    rounds: BTreeMap::new(),
                    checkpoints: BTreeMap::new(),
                    document: FileRead::found(store.document(), doc),
                    certificates: BTreeMap::new(),
                },
            },
            ops,
            domain: job_domain(&job_id, &spec_hash),
        };
        for k in 0..ROUNDS {
            for op in 0..OPERATORS {
                let s = fx.seal(op, receipt(k, op));
                fx.put_receipt(k, op, &s.bytes, s.payload());
            }
        }
        fx.commit(2, 0);
        fx.commit(4, 1);
        fx
    }

    fn store(&self) -> JobStore {
        JobStore::new(&self.data.folder.root)
    }

    fn seal<T: Statement>(&self, op: u32, statement: T) -> Signed<T> {
        let o = &self.ops[op as usize];
        Signed::seal(&o.key, &self.domain, statement, o.evidence.hash()).unwrap()
    }

    /// Stores (or replaces) operator `op`'s receipt of round `k`.
    fn put_receipt(&mut self, k: u64, op: u32, envelope: &[u8], json: &[u8]) {
        let store = self.store();
        let round = self
            .data
            .folder
            .rounds
            .entry(k)
            .or_insert_with(|| RoundFiles {
                dir: store.round_dir(k),
                receipts: Vec::new(),
            });
        round.receipts.retain(|x| x.operator != op);
        round.receipts.push(ReceiptFiles {
            operator: op,
            envelope: FileRead::found(store.receipt_envelope(k, op), envelope.to_vec()),
            json: FileRead::found(store.receipt_json(k, op), json.to_vec()),
        });
        round.receipts.sort_by_key(|x| x.operator);
    }

    fn receipt_files(&mut self, k: u64, op: u32) -> &mut ReceiptFiles {
        let round = self.data.folder.rounds.get_mut(&k).unwrap();
        round
            .receipts
            .iter_mut()
            .find(|x| x.operator == op)
            .unwrap()
    }

    /// Both enclaves certify round `round` on chain (the outcome of the round before, both
    /// updates in the set), the folder keeps the certificate, and operator `op` stores the
    /// checkpoint with its signed manifest.
    fn commit(&mut self, round: u64, op: u32) {
        let members = sorted_members(self.ops.iter().map(|o| o.key.address()));
        self.data.chain.checkpoints.insert(
            round,
            CheckpointOnChain {
                model_hash: B256::from(model(round).0),
                receipt_hash: B256::from(receipt(round - 1, op).outcome_hash().0),
                update_set: B256::from(update_set_hash(&members)),
                signers: OPERATORS,
            },
        );
        let cert = serde_json::json!({ "round": round, "members": members });
        self.data.folder.certificates.insert(
            round,
            FileRead::found(
                self.store().certificate(round),
                serde_json::to_vec(&cert).unwrap(),
            ),
        );
        let step = 10 * round;
        let m = self.seal(op, manifest(round));
        let files = self.store().checkpoint(step);
        self.data.folder.checkpoints.insert(
            step,
            CheckpointData {
                step,
                weights_sha256: FileRead::found(&files.weights, model(round)),
                manifest: FileRead::found(&files.manifest, m.payload().to_vec()),
                envelope: FileRead::found(&files.envelope, m.bytes.clone()),
            },
        );
    }

    fn key_of(&self, op: u32) -> Address {
        Address::from(self.ops[op as usize].key.address().0)
    }

    fn registration(&mut self, op: u32) -> &mut Option<Registration> {
        let key = self.key_of(op);
        self.data.chain.keys.get_mut(&key).unwrap()
    }

    fn enclave(&self, op: u32) -> String {
        format!("operator {op} enclave {}", self.key_of(op))
    }

    fn judge(&self) -> AuditReport {
        judge(&self.data, &policy(), NOW)
    }

    fn failures(&self) -> String {
        self.judge().failures().join("\n")
    }
}

#[test]
fn an_all_good_job_passes() {
    let fx = Fixture::new();
    let r = fx.judge();
    assert!(r.pass, "{}", r.failures().join("\n"));
    assert_eq!(r.status, 2);
    assert_eq!((r.total_rounds, r.latest_round), (4, 4));
    let rows: Vec<_> = r
        .checkpoints
        .iter()
        .map(|c| (c.round, c.step, c.committed_by.clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (2, Some(20), "2 enclave signatures".to_string()),
            (4, Some(40), "2 enclave signatures".to_string()),
        ]
    );
    assert_eq!(r.checkpoints[1].model_hash, model(4).to_hex());
    for name in [
        "weights hash to the certified model",
        "signed manifest names the certified model",
        "manifest JSON is the signed payload",
        "manifest signer is a registered enclave",
        "receipt named on chain",
        "receipt signed by a registered enclave",
        "receipts signed by members of the certified set",
        "every member's receipt is present",
        "certificate names the chain's update set",
        "receipts chain to it",
    ] {
        assert!(
            r.checkpoints[1].checks.iter().any(|c| c.name == name),
            "{name}"
        );
    }
    let names: Vec<&str> = r.job_checks.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.contains(&"round 3: starts where round 2 ended"),
        "{names:?}"
    );
    let slashed = format!("{}: operator not slashed", fx.enclave(1));
    assert!(names.contains(&slashed.as_str()), "{names:?}");
    assert!(r.replays.is_empty());
    let text = render(&r);
    assert!(
        text.contains("status running, 4 of 4 rounds certified"),
        "{text}"
    );
    assert!(text.contains("audit passed"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["status"], 2);
    assert_eq!(json["state"], "running");
}

#[test]
fn a_flipped_weights_hash_fails_its_checkpoint_only() {
    let mut fx = Fixture::new();
    let cp = fx.data.folder.checkpoints.get_mut(&40).unwrap();
    cp.weights_sha256.content = Ok(Hash32::sha256(b"one byte flipped"));
    let r = fx.judge();
    assert!(!r.pass);
    let f = r.failures().join("\n");
    assert!(
        f.contains("checkpoint 4: weights hash to the certified model"),
        "{f}"
    );
    assert!(!f.contains("checkpoint 2:"), "{f}");
    assert_eq!(r.failures().len(), 1, "{f}");
}

#[test]
fn an_edited_receipt_json_is_not_the_signed_payload() {
    let mut fx = Fixture::new();
    let json = &mut fx.receipt_files(1, 0).json;
    let text = String::from_utf8(json.content.clone().unwrap()).unwrap();
    json.content = Ok(text.replacen("\"loss\":", "\"loss\": ", 1).into_bytes());
    let f = fx.failures();
    assert!(
        f.contains("round 1 receipt-0.env: JSON is the signed payload"),
        "{f}"
    );
    assert!(
        f.contains("/job/rounds/000001/receipt-0.json differs"),
        "{f}"
    );
    // The envelope still verifies: the checkpoint it names passes.
    assert!(!f.contains("checkpoint 2:"), "{f}");
}

#[test]
fn a_receipt_signed_by_an_unknown_key_fails() {
    let mut fx = Fixture::new();
    let stranger = EnclaveKey::generate();
    let s = Signed::seal(&stranger, &fx.domain, receipt(1, 1), EvidenceHash([9; 32])).unwrap();
    fx.put_receipt(1, 1, &s.bytes, s.payload());
    let f = fx.failures();
    assert!(
        f.contains("round 1 receipt-1.env: signed by an attested enclave"),
        "{f}"
    );
    assert!(f.contains("no enclave of the folder"), "{f}");

    // A receipt whose envelope was edited after signing.
    let mut fx = Fixture::new();
    let mut env = fx.seal(0, receipt(1, 0)).envelope;
    env.payload = receipt(1, 0).to_json();
    env.payload[10] ^= 1;
    fx.put_receipt(1, 0, &env.encode(), &env.payload);
    let f = fx.failures();
    assert!(
        f.contains("round 1 receipt-0.env: signed by an attested enclave"),
        "{f}"
    );
    // Operator 1's receipt still names the certified outcome, but the member whose receipt
    // no longer verifies is missing from the checkpoint.
    assert!(
        f.contains("checkpoint 2: every member's receipt is present: missing: 0x"),
        "{f}"
    );
    assert!(f.contains("(operator 0)"), "{f}");
}

#[test]
fn an_unregistered_enclave_fails_and_so_do_its_checkpoints() {
    let mut fx = Fixture::new();
    *fx.registration(1) = None;
    let f = fx.failures();
    let name = format!(
        "{}: registered on chain: no operator registered this key",
        fx.enclave(1)
    );
    assert!(f.contains(&name), "{f}");
    assert!(
        f.contains("checkpoint 4: manifest signer is a registered enclave"),
        "{f}"
    );
    assert!(!f.contains("checkpoint 2:"), "{f}");
}

#[test]
fn a_policy_refusing_sim_fails_every_enclave() {
    let fx = Fixture::new();
    let r = judge(&fx.data, &Policy::default(), NOW);
    assert!(!r.pass);
    let f = r.failures().join("\n");
    for op in 0..OPERATORS {
        let name = format!("{}: evidence passes the policy", fx.enclave(op));
        assert!(f.contains(&name), "{f}");
    }
    assert!(f.contains("rejected by the policy"), "{f}");
    assert!(f.contains("checkpoint 2: receipt named on chain"), "{f}");
}

#[test]
fn a_slashed_operator_fails() {
    let mut fx = Fixture::new();
    fx.registration(1).as_mut().unwrap().operator.status = OperatorStatus::Slashed;
    let f = fx.failures();
    let name = format!("{}: operator not slashed: status slashed", fx.enclave(1));
    assert!(f.contains(&name), "{f}");
    assert_eq!(fx.judge().failures().len(), 1, "{f}");
}

#[test]
fn a_registration_with_other_evidence_or_measurement_fails() {
    let mut fx = Fixture::new();
    fx.registration(0).as_mut().unwrap().operator.evidence_hash = B256::repeat_byte(1);
    fx.data.chain.measurements.clear();
    let f = fx.failures();
    let own = format!(
        "{}: registered evidence and measurement are its own",
        fx.enclave(0)
    );
    assert!(f.contains(&own), "{f}");
    let allowed = format!("{}: measurement allowed by the job", fx.enclave(1));
    assert!(f.contains(&allowed), "{f}");
}

#[test]
fn a_broken_receipt_chain_fails_the_checkpoints_after_it() {
    let mut fx = Fixture::new();
    for op in 0..OPERATORS {
        let mut r = receipt(2, op);
        r.model_hash_before = Hash32::sha256(b"elsewhere");
        let s = fx.seal(op, r);
        fx.put_receipt(2, op, &s.bytes, s.payload());
    }
    let f = fx.failures();
    assert!(f.contains("round 2: starts where round 1 ended"), "{f}");
    assert!(f.contains("checkpoint 4: receipts chain to it"), "{f}");
    assert!(!f.contains("checkpoint 2:"), "{f}");
}

#[test]
fn disagreeing_receipts_and_a_receipt_of_another_round_fail() {
    let mut fx = Fixture::new();
    let mut r = receipt(0, 1);
    r.model_hash_after = Hash32::sha256(b"other");
    let s = fx.seal(1, r);
    fx.put_receipt(0, 1, &s.bytes, s.payload());
    let s = fx.seal(0, receipt(2, 0));
    fx.put_receipt(3, 0, &s.bytes, s.payload());
    let f = fx.failures();
    assert!(f.contains("round 0: receipts agree"), "{f}");
    assert!(
        f.contains("round 3 receipt-0.env: a receipt of round 2"),
        "{f}"
    );
}

#[test]
fn absent_files_are_named_not_errors() {
    let mut fx = Fixture::new();
    fx.data.folder.checkpoints.remove(&40);
    fx.data.folder.rounds.remove(&3);
    fx.data.folder.operators[1].evidence =
        FileRead::absent("/job/evidence-1.bin", "reading /job/evidence-1.bin: gone");
    let json = "/job/rounds/000000/receipt-0.json";
    fx.receipt_files(0, 0).json = FileRead::absent(json, format!("reading {json}: gone"));
    let f = fx.failures();
    assert!(
        f.contains(&format!(
            "round 0 receipt-0.env: JSON is the signed payload: reading {json}: gone"
        )),
        "{f}"
    );
    assert!(
        f.contains("evidence passes the policy: reading /job/evidence-1.bin: gone"),
        "{f}"
    );
    assert!(
        f.contains("round 3: receipts: no verified receipt in /job/rounds/000003"),
        "{f}"
    );
    assert!(f.contains("checkpoint 4: receipt named on chain"), "{f}");

    let mut fx = Fixture::new();
    let cp = fx.data.folder.checkpoints.get_mut(&20).unwrap();
    cp.weights_sha256 = FileRead::absent(&cp.weights_sha256.path, "step-000020.safetensors: gone");
    cp.envelope = FileRead::absent(&cp.envelope.path, "step-000020.manifest.env: gone");
    let f = fx.failures();
    assert!(
        f.contains(
            "checkpoint 2: weights hash to the certified model: step-000020.safetensors: gone"
        ),
        "{f}"
    );
    assert!(
        f.contains("checkpoint 2: signed manifest verifies: step-000020.manifest.env: gone"),
        "{f}"
    );
    fx.data.folder.checkpoints.clear();
    let f = fx.failures();
    assert!(f.contains("checkpoint 4: weights hash to the certified model: /job/checkpoints/step-000040.safetensors: not read"), "{f}");
}

#[test]
fn a_swapped_manifest_names_another_model() {
    let mut fx = Fixture::new();
    let two = fx.data.folder.checkpoints[&20].clone();
    let four = fx.data.folder.checkpoints.get_mut(&40).unwrap();
    four.manifest.content = two.manifest.content;
    four.envelope.content = two.envelope.content;
    let f = fx.failures();
    assert!(
        f.contains("checkpoint 4: signed manifest names the certified model"),
        "{f}"
    );
    assert!(
        !f.contains("checkpoint 4: manifest JSON is the signed payload"),
        "{f}"
    );
}

#[test]
fn checkpoints_skipped_on_chain_are_not_rows_and_none_at_all_fails() {
    let mut fx = Fixture::new();
    fx.data.chain.checkpoints.get_mut(&2).unwrap().model_hash = B256::ZERO;
    let r = fx.judge();
    assert!(r.pass, "{}", r.failures().join("\n"));
    assert_eq!(r.checkpoints.len(), 1);
    fx.data.chain.checkpoints.clear();
    let f = fx.failures();
    assert!(
        f.contains("checkpoints certified on chain: job 7 has none"),
        "{f}"
    );
}

#[test]
fn a_receipt_of_another_config_fails_by_name() {
    // An enclave that states another config hash in the job's domain (a host that fed it
    // another config under the same spec cannot make one; a forged or buggy one is caught).
    let mut fx = Fixture::new();
    let mut r = receipt(1, 1);
    r.config_hash = Hash32::sha256(b"another config");
    let s = fx.seal(1, r);
    fx.put_receipt(1, 1, &s.bytes, s.payload());
    let f = fx.failures();
    let name = format!(
        "round 1 receipt of 0x{}: config hash and data root are the chain job's",
        fx.ops[1].key.address()
    );
    assert!(f.contains(&name), "{f}");
    assert!(f.contains("another") || f.contains("receipt config"), "{f}");

    // A receipt signed for another spec (another domain) does not verify as this job's.
    let mut fx = Fixture::new();
    let other = job_domain(&JobId(job_word(JOB)), &Hash32::sha256(b"another spec"));
    let o = &fx.ops[0];
    let s = Signed::seal(&o.key, &other, receipt(1, 0), o.evidence.hash()).unwrap();
    fx.put_receipt(1, 0, &s.bytes, s.payload());
    let f = fx.failures();
    assert!(
        f.contains("round 1 receipt-0.env: signed by an attested enclave"),
        "{f}"
    );
}

#[test]
fn a_document_other_than_the_chains_fails() {
    let mut fx = Fixture::new();
    let mut other: serde_json::Value = serde_json::from_slice(&document()).unwrap();
    other["quorum_bps"] = serde_json::json!(9000);
    fx.data.folder.document = FileRead::found(
        "/job/job-document.json",
        serde_json::to_vec(&other).unwrap(),
    );
    let f = fx.failures();
    assert!(f.contains("job document is the one the chain names"), "{f}");
    assert!(f.contains("the chain's spec hash is"), "{f}");
    // Without a document every receipt's config hash is unknown.
    assert!(
        f.contains("config hash and data root are the chain job's"),
        "{f}"
    );
}

#[test]
fn a_members_missing_receipt_fails_and_an_outsider_is_explained() {
    // Operator 1's receipt of round 3 (the round certified as checkpoint 4) is deleted.
    let mut fx = Fixture::new();
    fx.data
        .folder
        .rounds
        .get_mut(&3)
        .unwrap()
        .receipts
        .retain(|x| x.operator != 1);
    let f = fx.failures();
    assert!(
        f.contains("checkpoint 4: every member's receipt is present: missing: 0x"),
        "{f}"
    );
    assert!(f.contains("(operator 1)"), "{f}");
    assert!(!f.contains("checkpoint 2:"), "{f}");

    // Operator 1 outside round 4's certified set: its missing receipt is explained.
    let mut fx = Fixture::new();
    let only = vec![fx.ops[0].key.address()];
    let cp = fx.data.chain.checkpoints.get_mut(&4).unwrap();
    cp.update_set = B256::from(update_set_hash(&only));
    let cert = serde_json::json!({ "round": 4, "members": only });
    fx.data.folder.certificates.insert(
        4,
        FileRead::found(
            "/job/certificates/round-000004.json",
            serde_json::to_vec(&cert).unwrap(),
        ),
    );
    let r = fx.judge();
    let row = &r.checkpoints[1];
    let complete = row
        .checks
        .iter()
        .find(|c| c.name == "every member's receipt is present")
        .unwrap();
    assert!(complete.pass, "{:?}", complete);
    assert!(
        complete.detail.contains("outside the certified set: [1]"),
        "{:?}",
        complete
    );
    // ... but its receipt is then not from a member of the set.
    let f = r.failures().join("\n");
    assert!(
        f.contains("checkpoint 4: receipts signed by members of the certified set"),
        "{f}"
    );
}

#[test]
fn a_certificate_with_another_update_set_fails() {
    let mut fx = Fixture::new();
    let cert = serde_json::json!({ "round": 2, "members": [fx.ops[0].key.address()] });
    fx.data.folder.certificates.insert(
        2,
        FileRead::found(
            "/job/certificates/round-000002.json",
            serde_json::to_vec(&cert).unwrap(),
        ),
    );
    fx.data.folder.certificates.remove(&4);
    let f = fx.failures();
    assert!(
        f.contains("checkpoint 2: certificate names the chain's update set"),
        "{f}"
    );
    assert!(
        f.contains("checkpoint 4: certificate names the chain's update set: /job/certificates/round-000004.json: not read"),
        "{f}"
    );
}
