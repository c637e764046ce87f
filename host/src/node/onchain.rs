//! The node's side of the on-chain job: join with the stake and register the enclave key with
//! the enclave's consent and the job's verifiers' approvals ([`join_chain`]), have the enclave
//! sign its checkpoint statement at the job's checkpoint rounds ([`commitment`]), gather the
//! peers' matching statements from their heartbeats into a round certificate and submit it once
//! a quorum of the active operators signed ([`certify`]), and leave and withdraw after the last
//! round ([`leave_chain`]). The chain client itself is [`crate::chain`].

use std::collections::BTreeMap;
use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail};
use conclave_attestation::EnclaveAddress;
use conclave_attestation::eip712::{
    CheckpointStatement, Domain, JobTerms, job_word, recover, update_set_hash,
};
use conclave_protocol::Hash32;
use conclave_protocol::channel::{Request, Response};
use conclave_protocol::gossip::Commitment;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{NodeEvent, call_enclave};
use crate::approve::{Approval, ApprovalRequest, read_json};
use crate::chain::{
    Certificate, Chain, ChainOptions, ContractError, JobStatus, OperatorStatus, Submitted,
    revert_of,
};
use crate::config::{ChainSection, JobSection};
use crate::net::Net;
use crate::operator::{Operator, PreparedJob};
use crate::store::{JobStore, write_atomic};

/// The on-chain job as a node works for it.
pub struct OnChain {
    pub chain: Chain,
    pub job: u64,
    pub interval: u64,
    /// The terms every EIP-712 statement of the job names.
    pub terms: JobTerms,
}

impl OnChain {
    fn domain(&self) -> Domain {
        self.chain.domain()
    }
}

fn b256(h: &Hash32) -> B256 {
    B256::from(h.0)
}

fn sig65(what: &str, text: &str) -> Result<[u8; 65]> {
    hex::decode(text)
        .with_context(|| format!("{what}: not hex"))?
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what}: not 65 bytes"))
}

/// Joins the on-chain job (stake), registers the enclave key with the enclave's consent and
/// the verifiers' approvals, and waits until the job runs (starting it once enough operators
/// registered).
pub(super) async fn join_chain(
    c: &ChainSection,
    jobcfg: &JobSection,
    prepared: &PreparedJob,
    own: &mut Operator,
    store: &JobStore,
    net: &mut crate::net::Net,
    events: &mut dyn FnMut(NodeEvent),
) -> Result<OnChain> {
    let key_hex = std::env::var(&c.key_env).with_context(|| {
        format!(
            "chain.key_env: ${} is not set (the operator account's private key, hex)",
            c.key_env
        )
    })?;
    let signer: PrivateKeySigner = key_hex
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("${}: not a private key: {e}", c.key_env))?;
    let contract: Address = c.contract.parse()?;
    let options = ChainOptions {
        confirmations: c.confirmations,
        ..ChainOptions::default()
    };
    let chain = Chain::connect(&c.rpc, &signer, contract, options).await?;
    let id = c.job;
    let job = chain.job(id).await?;
    if job.customer == Address::ZERO {
        bail!("there is no job {id} on contract {contract}");
    }
    // The terms on chain must be those of the job this node was configured with: the spec
    // hash covers the config, the dataset root, the policy, the operators and the quorum.
    if job.specHash != b256(&prepared.spec_hash) {
        bail!(
            "job {id}'s spec hash on chain is {}, the configured job's document hashes to {} \
             (another config, dataset, policy, operator count or quorum)",
            job.specHash,
            prepared.spec_hash
        );
    }
    if job.datasetRoot != b256(&prepared.doc.data_root) {
        bail!(
            "job {id}'s dataset root on chain is {}, the corpus here gives {}",
            job.datasetRoot,
            prepared.doc.data_root
        );
    }
    if job.totalRounds != jobcfg.rounds {
        bail!(
            "job {id} has {} rounds on chain, job.rounds is {}",
            job.totalRounds,
            jobcfg.rounds
        );
    }
    if job.minOperators > jobcfg.operators {
        bail!(
            "job {id} needs {} operators, job.operators is {}",
            job.minOperators,
            jobcfg.operators
        );
    }
    let me = chain.operator(id, chain.account).await?;
    let enclave = Address::from(own.address.0);
    if me.state() == OperatorStatus::None {
        chain.join(id).await.context("joining the job")?;
        info!(
            "operator {}: joined job {id} as {}",
            own.index, chain.account
        );
    }
    if me.enclaveKey == Address::ZERO {
        let resp = own.channel.call(&Request::ChainRegistration {
            chain_id: chain.chain_id,
            contract: contract.to_string(),
            job: id,
            operator: chain.account.to_string(),
        })?;
        let Response::Registration {
            evidence_hash,
            measurement,
            signature,
        } = resp
        else {
            bail!("the registration request answered with something else");
        };
        if evidence_hash.0 != own.accepted.evidence_hash().0 {
            bail!("the enclave consents for other evidence than it presented");
        }
        let sig = sig65("the registration signature", &signature)?;
        let request = ApprovalRequest {
            chain_id: chain.chain_id,
            contract: contract.to_string(),
            job: id,
            operator: chain.account.to_string(),
            enclave: own.address,
            evidence: own.peer.evidence.clone(),
            nonce: own.peer.nonce,
            consent: signature.clone(),
            evidence_hash,
            measurement,
            spec_hash: prepared.spec_hash,
        };
        let approvals =
            await_approvals(&chain, id, store, &request, c.start_timeout_s, events).await?;
        chain
            .register_enclave(
                id,
                enclave,
                b256(&evidence_hash),
                b256(&measurement),
                &sig,
                &approvals,
            )
            .await
            .context("registering the enclave key")?;
        info!(
            "operator {}: enclave key {enclave} registered on chain with {} approval(s)",
            own.index,
            approvals.len()
        );
    } else if me.enclaveKey != enclave {
        bail!(
            "{} registered enclave key {} for job {id}; this enclave's key is {enclave} (a \
             restarted enclave has a new key, and the contract takes one key per operator)",
            chain.account,
            me.enclaveKey
        );
    }
    let deadline = Instant::now() + Duration::from_secs(c.start_timeout_s);
    loop {
        let job = chain.job(id).await?;
        match job.state() {
            JobStatus::Running => break,
            JobStatus::Open if job.activeOperators >= job.minOperators => {
                match chain.start_job(id).await {
                    Ok(()) => info!("operator {}: started job {id}", own.index),
                    // Another operator started it first.
                    Err(e) if matches!(revert_of(&e), Some(ContractError::WrongJobStatus(_))) => {}
                    Err(e) => return Err(e.context("starting the job")),
                }
            }
            JobStatus::Open => {}
            s => bail!("job {id} is no longer running (status {s})"),
        }
        if Instant::now() >= deadline {
            bail!(
                "job {id} did not start within {} s ({} of {} operators registered)",
                c.start_timeout_s,
                job.activeOperators,
                job.minOperators
            );
        }
        // Meanwhile the network runs: operators whose enclaves still need a sealed job's key
        // (to load the job and register) ask ours.
        net.pump_while(
            tokio::time::Instant::now() + Duration::from_millis(500),
            |_| false,
        )
        .await;
        super::keyshare::serve_key_requests(net, own);
    }
    Ok(OnChain {
        terms: JobTerms {
            job_id: job_word(id),
            spec_hash: prepared.spec_hash.0,
            dataset_root: prepared.doc.data_root.0,
        },
        chain,
        job: id,
        interval: job.checkpointInterval.max(1),
    })
}

/// Writes the approval request into the job folder, says so, and waits until the folder's
/// `approvals/` holds approvals of it from enough distinct appointed verifiers. Files that are
/// not approvals of this request, or are by someone who is not a verifier, are skipped with a
/// warning (once each).
async fn await_approvals(
    chain: &Chain,
    job: u64,
    store: &JobStore,
    request: &ApprovalRequest,
    timeout_s: u64,
    events: &mut dyn FnMut(NodeEvent),
) -> Result<Vec<[u8; 65]>> {
    let path = store.approval_request();
    write_atomic(&path, &serde_json::to_vec_pretty(request)?)?;
    let dir = store.approvals_dir();
    std::fs::create_dir_all(&dir)?;
    let verifiers = chain.verifiers(job).await?;
    let needed = chain.job(job).await?.verifierThreshold as usize;
    events(NodeEvent::ApprovalRequested {
        request: path.clone(),
        approvals: dir.clone(),
        needed,
    });
    if needed == 0 {
        return Ok(Vec::new());
    }
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let mut skipped = std::collections::BTreeSet::new();
    loop {
        let mut found: BTreeMap<Address, [u8; 65]> = BTreeMap::new();
        let mut entries: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        entries.sort();
        for p in entries {
            let checked = read_json::<Approval>(&p).and_then(|a| {
                let sig = a.signature_for(request)?;
                let verifier: Address = a.verifier.parse()?;
                if !verifiers.contains(&verifier) {
                    bail!("{verifier} is not one of the job's verifiers");
                }
                // The signature must be the verifier's own.
                let digest = chain.domain().approval_digest(
                    &job_word(job),
                    &request.operator.parse::<Address>()?.into_array(),
                    &request.enclave,
                    &request.evidence_hash.0,
                    &request.measurement.0,
                );
                let signer = recover(&digest, &sig)?;
                if signer.0 != verifier.into_array() {
                    bail!("the approval is signed by 0x{signer}, not {verifier}");
                }
                Ok((verifier, sig))
            });
            match checked {
                Ok((v, sig)) => {
                    found.insert(v, sig);
                }
                Err(e) => {
                    if skipped.insert(p.clone()) {
                        warn!("skipping {}: {e:#}", p.display());
                    }
                }
            }
        }
        if found.len() >= needed {
            return Ok(found.into_values().collect());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} of the {needed} verifier approvals needed arrived in {} within {timeout_s} s \
                 (the request is {}: a verifier runs `conclave approve` on it)",
                found.len(),
                dir.display(),
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Checks every announced peer against the chain: its enclave key is registered for the job
/// by the operator account its enclave's announce statement names. A peer that is not is
/// excluded (banned from round 0) with a warning naming why.
pub(super) async fn check_registrations(oc: &OnChain, state: &mut crate::net::State) -> Result<()> {
    let peers: Vec<(u32, EnclaveAddress, Option<String>)> = state
        .peers
        .values()
        .map(|p| (p.operator, p.address, p.account.clone()))
        .collect();
    for (op, address, account) in peers {
        let registered = oc
            .chain
            .operator_of_key(oc.job, Address::from(address.0))
            .await?;
        let named = account.as_deref().and_then(|a| a.parse::<Address>().ok());
        if registered == Address::ZERO || named != Some(registered) {
            warn!(
                "operator {op}: enclave 0x{address} is registered on chain by {registered}, its \
                 announce names {}: left out of every round",
                account.as_deref().unwrap_or("no account")
            );
            state.banned.insert(op, 0);
        }
    }
    Ok(())
}

/// Has the enclave sign its checkpoint statement for on-chain round `round` (the model after
/// `round` closed rounds) and checks it against what the node knows of the round.
pub(super) async fn commitment(
    net: &mut Net,
    own_slot: &mut Option<Operator>,
    oc: &OnChain,
    round: u64,
    model_hash: &Hash32,
    outcome: &Hash32,
) -> Result<Commitment> {
    let req = Request::ChainCheckpoint {
        chain_id: oc.chain.chain_id,
        contract: oc.chain.address().to_string(),
        job: oc.job,
        round,
    };
    let resp = call_enclave(net, own_slot, req).await?;
    let Response::Commitment {
        round: r,
        model_hash: mh,
        receipt_hash,
        members,
        signature,
    } = resp
    else {
        bail!("the checkpoint statement request answered with something else");
    };
    if r != round || mh != *model_hash {
        bail!("the enclave's statement is of round {r}, model {mh}");
    }
    if receipt_hash != *outcome {
        bail!("the enclave's statement names another outcome than the round's receipt");
    }
    let c = Commitment {
        round,
        model_hash: mh,
        receipt_hash,
        members,
        signature,
    };
    let own = own_slot.as_ref().context("no enclave")?;
    verify_commitment(oc, &c, own.address)?;
    Ok(c)
}

/// The signature of a commitment, checked to be `signer`'s over the statement it names.
fn verify_commitment(oc: &OnChain, c: &Commitment, signer: EnclaveAddress) -> Result<[u8; 65]> {
    let sig = sig65("the checkpoint signature", &c.signature)?;
    let statement = CheckpointStatement {
        round: c.round,
        model_hash: c.model_hash.0,
        receipt_hash: c.receipt_hash.0,
        update_set: update_set_hash(&c.members),
    };
    let got = recover(&oc.domain().checkpoint_digest(&oc.terms, &statement), &sig)?;
    if got != signer {
        bail!("the checkpoint statement is signed by 0x{got}, not 0x{signer}");
    }
    Ok(sig)
}

/// How a round's certification ended for this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Certified {
    /// Enclave signatures on the certificate this node assembled.
    pub signers: usize,
    /// Whether this node's transaction certified the round (another relayer may have).
    pub submitted: bool,
}

/// Gathers the peers' statements for the round that match ours (from their heartbeats,
/// each checked to be signed by that peer's enclave) and, once a quorum of the active
/// operators signed, submits the certificate unless the round is certified already. Waits
/// for every active operator's statement, or for a quorum and `settle`, or until `timeout`.
pub(super) async fn certify(
    net: &mut Net,
    oc: &OnChain,
    store: &JobStore,
    ours: &Commitment,
    me: EnclaveAddress,
    settle: Duration,
    timeout: Duration,
) -> Result<Certified> {
    let round = ours.round;
    let needed = oc.chain.quorum_needed(oc.job).await? as usize;
    let deadline = Instant::now() + timeout;
    let mut quorum_at: Option<Instant> = None;
    let mut sigs: BTreeMap<EnclaveAddress, [u8; 65]> = BTreeMap::new();
    sigs.insert(me, verify_commitment(oc, ours, me)?);
    loop {
        for (op, c) in net.state.commitments(round) {
            let Some(peer) = net.state.peers.get(&op) else {
                continue;
            };
            if sigs.contains_key(&peer.address) {
                continue;
            }
            if c.model_hash != ours.model_hash
                || c.receipt_hash != ours.receipt_hash
                || c.members != ours.members
            {
                warn!(
                    "checkpoint {round}: operator {op} states model {} with {} members, ours is {} with {}",
                    c.model_hash,
                    c.members.len(),
                    ours.model_hash,
                    ours.members.len()
                );
                continue;
            }
            match verify_commitment(oc, &c, peer.address) {
                Ok(sig) => {
                    sigs.insert(peer.address, sig);
                }
                Err(e) => warn!("checkpoint {round}: operator {op}'s statement: {e:#}"),
            }
        }
        let active = net.state.active().len().max(1);
        if sigs.len() >= needed && quorum_at.is_none() {
            quorum_at = Some(Instant::now());
        }
        let all = sigs.len() >= active;
        let settled = quorum_at.is_some_and(|t| t.elapsed() >= settle);
        if all || settled {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "checkpoint {round}: {} of the {needed} enclave signatures a certificate needs \
                 arrived within {} s",
                sigs.len(),
                timeout.as_secs()
            );
        }
        net.pump_while(Instant::now() + Duration::from_millis(100), |_| false)
            .await;
    }
    let cert = Certificate {
        round,
        model_hash: b256(&ours.model_hash),
        receipt_hash: b256(&ours.receipt_hash),
        members: ours.members.iter().map(|m| Address::from(m.0)).collect(),
        signatures: sigs.iter().map(|(a, s)| (Address::from(a.0), *s)).collect(),
    };
    write_atomic(
        &store.certificate(round),
        &serde_json::to_vec_pretty(&serde_json::json!({
            "round": round,
            "model_hash": ours.model_hash,
            "receipt_hash": ours.receipt_hash,
            "members": ours.members,
            "signatures": sigs.iter().map(|(a, s)| (a.to_string(), hex::encode(s))).collect::<BTreeMap<_, _>>(),
        }))?,
    )?;
    let signers = sigs.len();
    // A round certified by another relayer (the same statement, or a quorum of it) is done.
    if oc.chain.checkpoint(oc.job, round).await?.certifiedAt != 0 {
        return Ok(Certified {
            signers,
            submitted: false,
        });
    }
    loop {
        let submit = oc.chain.submit_certificate(oc.job, &cert);
        match net.pump_until(submit).await {
            Ok(Submitted::Landed { credited, .. }) => {
                info!(
                    "checkpoint {round}: certified with {signers} signatures, {credited} operators credited"
                );
                return Ok(Certified {
                    signers,
                    submitted: true,
                });
            }
            Ok(Submitted::Already) => {
                return Ok(Certified {
                    signers,
                    submitted: false,
                });
            }
            Err(e) => match revert_of(&e) {
                // The job's minimum time per round: wait for the chain's clock.
                Some(ContractError::TooEarly(t)) if Instant::now() < deadline => {
                    let now = oc.chain.now().await?;
                    let wait = u64::try_from(t.notBefore)
                        .unwrap_or(u64::MAX)
                        .saturating_sub(now);
                    info!(
                        "checkpoint {round}: the chain takes it in {wait} s (minimum round time)"
                    );
                    net.pump_while(
                        Instant::now() + Duration::from_secs(wait.clamp(1, 30)),
                        |_| false,
                    )
                    .await;
                }
                _ => return Err(e.context(format!("submitting the certificate of round {round}"))),
            },
        }
    }
}

/// After the last round: requests leave and, when `wait_s` > 0, waits for the job to settle
/// and the stake to unbond, then withdraws stake and payment. Returns the wei withdrawn.
/// Stake and payment withdrawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    /// Wei withdrawn (stake and payment).
    pub wei: String,
    pub balance_before: String,
    pub balance_after: String,
}

pub(super) async fn leave_chain(oc: &OnChain, wait_s: u64) -> Result<Option<Withdrawal>> {
    let me = oc.chain.operator(oc.job, oc.chain.account).await?;
    if me.state() == OperatorStatus::Joined {
        oc.chain
            .request_leave(oc.job)
            .await
            .context("requesting leave")?;
    }
    if wait_s == 0 {
        info!(
            "left job {}: stake and payment can be withdrawn once it settles and the stake unbonds",
            oc.job
        );
        return Ok(None);
    }
    let deadline = Instant::now() + Duration::from_secs(wait_s);
    loop {
        let op = oc.chain.operator(oc.job, oc.chain.account).await?;
        let now = oc.chain.now().await?;
        if oc.chain.is_settled(oc.job).await? && now >= op.unbondsAt {
            let before = oc.chain.balance(oc.chain.account).await?;
            let due = op.stake + oc.chain.payment_of(oc.job, oc.chain.account).await?;
            oc.chain.withdraw(oc.job).await.context("withdrawing")?;
            let after = oc.chain.balance(oc.chain.account).await?;
            return Ok(Some(Withdrawal {
                wei: due.to_string(),
                balance_before: before.to_string(),
                balance_after: after.to_string(),
            }));
        }
        if Instant::now() >= deadline {
            bail!(
                "job {} did not settle (or the stake did not unbond) within {wait_s} s",
                oc.job
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
