//! The node's side of the on-chain job: join with the stake and register the enclave key with
//! the enclave's consent ([`join_chain`]), commit the enclave's checkpoint statements at the
//! job's checkpoint rounds ([`commit_round`]), and leave and withdraw after the last round
//! ([`leave_chain`]). The chain client itself is [`crate::chain`].

use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail};
use conclave_protocol::Hash32;
use conclave_protocol::channel::{Request, Response};
use tokio::time::Instant;
use tracing::info;

use super::call_enclave;
use crate::chain::{
    Chain, ChainOptions, ContractError, JobStatus, OperatorStatus, Submitted, revert_of,
};
use crate::config::{ChainSection, JobSection};
use crate::net::Net;
use crate::operator::{Operator, PublishedSpec};

/// The on-chain job as a node works for it.
pub struct OnChain {
    pub chain: Chain,
    pub job: u64,
    pub interval: u64,
}

fn b256(h: &Hash32) -> B256 {
    B256::from(h.0)
}

/// Joins the on-chain job (stake), registers the enclave key with the enclave's consent, and
/// waits until the job runs (starting it once enough operators registered).
pub(super) async fn join_chain(
    c: &ChainSection,
    jobcfg: &JobSection,
    published: &PublishedSpec,
    own: &mut Operator,
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
    // The terms on chain must be those of the job this node was configured with.
    if job.specHash != b256(&published.config_hash) {
        bail!(
            "job {id}'s spec hash on chain is {}, the configured job's config hash is {}",
            job.specHash,
            published.config_hash
        );
    }
    if job.datasetRoot != b256(&published.data_root) {
        bail!(
            "job {id}'s dataset root on chain is {}, the corpus here gives {}",
            job.datasetRoot,
            published.data_root
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
        let sig: [u8; 65] = hex::decode(&signature)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("the registration signature is not 65 bytes"))?;
        chain
            .register_enclave(id, enclave, b256(&evidence_hash), b256(&measurement), &sig)
            .await
            .context("registering the enclave key")?;
        info!(
            "operator {}: enclave key {enclave} registered on chain",
            own.index
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
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(OnChain {
        chain,
        job: id,
        interval: job.checkpointInterval.max(1),
    })
}

/// Has the enclave sign the checkpoint statement of on-chain round `round` and submits it;
/// returns whether ours fixed the round.
pub(super) async fn commit_round(
    net: &mut Net,
    own_slot: &mut Option<Operator>,
    oc: &OnChain,
    round: u64,
    model_hash: &Hash32,
    receipt_payload: &[u8],
) -> Result<bool> {
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
        signature,
    } = resp
    else {
        bail!("the checkpoint statement request answered with something else");
    };
    if r != round || mh != *model_hash {
        bail!("the enclave's statement is of round {r}, model {mh}");
    }
    if receipt_hash != Hash32::sha256(receipt_payload) {
        bail!("the enclave's statement names another receipt than the round's");
    }
    let sig: [u8; 65] = hex::decode(&signature)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("the checkpoint signature is not 65 bytes"))?;
    let submit = oc
        .chain
        .submit_checkpoint(oc.job, round, b256(&mh), b256(&receipt_hash), &sig);
    let accepted = match net.pump_until(submit).await? {
        Submitted::Landed { accepted, .. } => accepted,
        Submitted::Already => false,
    };
    Ok(accepted)
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
