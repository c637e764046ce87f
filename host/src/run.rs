//! `conclave run --config operator.toml`: the host proxy in local mode. It brings up the
//! operators' enclaves ([`crate::operator::start_enclave`]: `sim` processes, or guests of the
//! measured image under qemu, plain or confidential), drives the rounds (every enclave trains its share, then
//! every enclave aggregates the same signed set), checks every signed result it relays, and
//! stores receipts and checkpoints in the job folder ([`crate::store`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use conclave_protocol::channel::{Blob, PeerEvidence, Request, Response};
use conclave_protocol::receipt::RoundReceipt;
use conclave_protocol::{CheckpointManifest, Hash32, Signed, UpdatePayload};
use serde::Serialize;
use tracing::{info, info_span};

use crate::config::OperatorConfig;
use crate::operator::{
    Operator, attest_operator, hello_operator, key_from_broker, key_from_peer, load_job,
    prepare_job, start_enclave,
};
use crate::store::JobStore;

/// The result of a local run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub job_id: String,
    /// Whether the job is sealed (its data, updates and model unreadable to the hosts).
    pub sealed: bool,
    pub operators: u32,
    pub rounds: u64,
    pub model_hash: Hash32,
    pub round_seconds: Vec<f64>,
    pub losses: Vec<f64>,
    pub checkpoint: PathBuf,
}

/// What a run reports as it goes (the API and metrics follow it).
#[derive(Debug, Clone)]
pub enum Event {
    /// The job is prepared: whether it is sealed.
    Prepared { sealed: bool },
    Attested {
        operator: u32,
        address: String,
        tee: String,
    },
    Round {
        round: u64,
        loss: f64,
        seconds: f64,
        model_hash: Hash32,
        /// Bytes of signed updates relayed this round (sent by the enclaves).
        update_bytes: u64,
    },
}

/// Runs the job of `cfg` on a local peer set of sim enclaves.
pub fn run_local(cfg: &OperatorConfig) -> Result<RunSummary> {
    run_local_with(cfg, &mut |_| {})
}

/// Runs `f` on every operator at once (they are separate processes), in index order.
fn on_all<T: Send>(
    ops: &mut [Operator],
    f: impl Fn(&mut Operator) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = ops.iter_mut().map(|op| s.spawn(move || f(op))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a round thread panicked"))?
            })
            .collect()
    })
}

/// [`run_local`], reporting progress to `events`.
pub fn run_local_with(cfg: &OperatorConfig, events: &mut dyn FnMut(Event)) -> Result<RunSummary> {
    let jobcfg = cfg
        .job
        .as_ref()
        .context("the operator config has no [job] section")?;
    let store = JobStore::create(&cfg.storage.dir)?;
    let job = prepare_job(jobcfg, &cfg.enclave)?;
    // The document every enclave of the job obeys, kept for auditors (its hash is the spec
    // hash the enclaves' statements name).
    crate::store::write_atomic(&store.document(), &job.document)?;
    let domain = job.domain.clone();
    events(Event::Prepared {
        sealed: job.doc.sealing.is_some(),
    });

    // Every operator: launch, hello, appraise, load the job (from the job's initial model).
    // All started, then attested in parallel (guests boot at once).
    let mut started = Vec::new();
    for i in 0..jobcfg.operators {
        started.push(start_enclave(&job, i, &store, Some(i))?);
    }
    let attested: Vec<Result<Operator>> = std::thread::scope(|s| {
        let job = &job;
        let handles: Vec<_> = started
            .into_iter()
            .map(|st| {
                s.spawn(move || {
                    if job.doc.sealing.is_some() {
                        hello_operator(job, st)
                    } else {
                        attest_operator(job, st)
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("an attesting thread panicked"))?
            })
            .collect()
    });
    let mut ops: Vec<Operator> = attested.into_iter().collect::<Result<_>>()?;
    if job.doc.sealing.is_some() {
        // A sealed job: the first enclave gets the key from the customer's broker, every other
        // from the first (enclave to enclave; this host only relays); then each loads the job.
        let (first, rest) = ops
            .split_first_mut()
            .context("a sealed job with no operator")?;
        let target = job.key_broker.as_ref().context(
            "the job is sealed and no key broker is set ([job] key_broker and key_broker_cert)",
        )?;
        key_from_broker(&job, first, target)?;
        load_job(&job, first)?;
        for op in rest {
            key_from_peer(&job, first, op)?;
            load_job(&job, op)?;
        }
    }
    for op in &ops {
        let i = op.index;
        store.write_operator(&op.record(job.job, None), &op.peer.evidence.0)?;
        events(Event::Attested {
            operator: i,
            address: format!("0x{}", op.address),
            tee: op.tee.clone(),
        });
    }

    let peers: Vec<PeerEvidence> = ops.iter().map(|o| o.peer.clone()).collect();
    let mut round_seconds = Vec::new();
    let mut losses = Vec::new();
    let mut model_hash = job.published.initial_model_hash;
    for round in 0..jobcfg.rounds {
        let _span = info_span!("round", round).entered();
        let t = Instant::now();
        let updates: Vec<Signed<UpdatePayload>> = on_all(&mut ops, |op| {
            op.signed(&Request::TrainRound { round }, &domain)
        })?;
        let blobs: Vec<Blob> = updates.iter().map(|u| Blob(u.bytes.clone())).collect();
        let receipts: Vec<Signed<RoundReceipt>> = on_all(&mut ops, |op| {
            let req = Request::Aggregate {
                round,
                updates: blobs.clone(),
                peers: peers.clone(),
            };
            op.signed(&req, &domain)
        })?;
        let mut after = BTreeMap::new();
        let mut loss = 0.0;
        for (op, r) in ops.iter().zip(&receipts) {
            let receipt = &r.statement;
            if receipt.round != round || receipt.model_hash_before != model_hash {
                bail!(
                    "operator {}'s receipt is for round {} from {}",
                    op.index,
                    receipt.round,
                    receipt.model_hash_before
                );
            }
            loss += receipt.loss / ops.len() as f64;
            after.insert(op.index, receipt.model_hash_after);
            store.write_receipt(round, op.index, r)?;
        }
        for (op, u) in ops.iter().zip(&updates) {
            store.write_update(round, op.index, &u.bytes)?;
        }
        let h = after.values().next().copied().unwrap_or_default();
        if after.values().any(|x| *x != h) {
            bail!("round {round}: operators disagree on the model: {after:?}");
        }
        model_hash = h;
        let secs = t.elapsed().as_secs_f64();
        info!(
            "round {round}: loss {loss:.4}, model {model_hash} (all {} operators agree), {secs:.1} s",
            ops.len()
        );
        round_seconds.push(secs);
        losses.push(loss);
        events(Event::Round {
            round,
            loss,
            seconds: secs,
            model_hash,
            update_bytes: updates.iter().map(|u| u.bytes.len() as u64).sum(),
        });
    }

    // The final checkpoint from operator 0, checked before it is stored.
    let op = &mut ops[0];
    let Response::Checkpoint { weights, manifest } = op.channel.call(&Request::Checkpoint)? else {
        bail!("checkpoint answered with something else");
    };
    let m: Signed<CheckpointManifest> = op.verify(&manifest.0, &domain)?;
    // A sealed job's weights are sealed: their hash is the manifest's sealed hash, and the
    // model inside them is the one the rounds reached.
    let wh = Hash32::sha256(&weights.0);
    if m.statement.file_hash() != wh || m.statement.model_hash != model_hash {
        bail!("the checkpoint's weights hash {wh}, the manifest and rounds say otherwise");
    }
    let files = store.write_checkpoint(&weights.0, &m)?;
    for op in &mut ops {
        let _ = op.channel.call(&Request::Shutdown);
    }
    let summary = RunSummary {
        job_id: job.job_hex(),
        sealed: job.doc.sealing.is_some(),
        operators: jobcfg.operators,
        rounds: jobcfg.rounds,
        model_hash,
        round_seconds,
        losses,
        checkpoint: files.manifest,
    };
    store.write_summary(&summary)?;
    Ok(summary)
}
