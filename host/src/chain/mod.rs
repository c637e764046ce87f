//! The chain client: deploys and drives the `ConclaveTraining` contract over JSON-RPC with
//! alloy. Bindings come from the compiled ABI (`contracts/abi/ConclaveTraining.json`, made by
//! `scripts/test-contracts.sh` from the Solidity source) through `sol!`.
//!
//! Transactions are retried with exponential backoff on transport errors (never on a revert,
//! which is decoded to the contract's named error) and wait for a configurable number of
//! confirmations. [`Chain::submit_certificate`] is idempotent: a certificate for a round that
//! is already certified returns [`Submitted::Already`] instead of failing.
//!
//! [`Anvil`] runs a local dev node (Foundry's `anvil`) on loopback for `conclave chain up`, the
//! demo and the tests.

use std::future::Future;
use std::time::Duration;

use alloy::network::{Ethereum, EthereumWallet};
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, PendingTransactionBuilder, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use anyhow::{Context, Result, anyhow, bail};
use conclave_attestation::eip712::Domain;

sol!(
    #[allow(missing_docs, clippy::too_many_arguments)]
    #[sol(rpc)]
    #[derive(Debug)]
    ConclaveTraining,
    "../contracts/abi/ConclaveTraining.json"
);

pub use ConclaveTraining::ConclaveTrainingErrors as ContractError;

mod status;
pub use status::{JobStatus, OperatorStatus};

impl IConclaveTraining::Job {
    /// The job's status, typed.
    pub fn state(&self) -> JobStatus {
        JobStatus::from(self.status)
    }
}

impl IConclaveTraining::Operator {
    /// The operator's status, typed.
    pub fn state(&self) -> OperatorStatus {
        OperatorStatus::from(self.status)
    }
}

/// How transactions are sent.
#[derive(Debug, Clone)]
pub struct ChainOptions {
    /// Blocks on top of the including one before a transaction counts as landed.
    pub confirmations: u64,
    /// Attempts on transport errors (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubled per attempt.
    pub backoff: Duration,
    /// How long to wait for a receipt.
    pub timeout: Duration,
}

impl Default for ChainOptions {
    fn default() -> Self {
        ChainOptions {
            confirmations: 1,
            attempts: 5,
            backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Constructor parameters of a deployment.
#[derive(Debug, Clone, Copy)]
pub struct DeployParams {
    pub unbonding_delay: u64,
    pub commit_grace: u64,
    pub reporter_reward_bps: u64,
}

impl Default for DeployParams {
    fn default() -> Self {
        DeployParams {
            unbonding_delay: 3600,
            commit_grace: 3600,
            reporter_reward_bps: 1000,
        }
    }
}

/// What a customer asks for.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// `None`: the chain's native token.
    pub token: Option<Address>,
    pub escrow: U256,
    pub stake: U256,
    pub spec_hash: B256,
    pub dataset_root: B256,
    pub measurements: Vec<B256>,
    pub min_operators: u32,
    pub total_rounds: u64,
    pub checkpoint_interval: u64,
    /// Unix seconds.
    pub deadline: u64,
    /// The appointed evidence verifiers (the customer, or a committee).
    pub verifiers: Vec<Address>,
    /// Distinct verifier approvals an enclave key needs to register.
    pub verifier_threshold: u32,
    /// Share of the active operators, in basis points, whose enclaves must sign a round
    /// certificate (more than 5000).
    pub quorum_bps: u16,
    /// Round r is certified no earlier than the start plus r times this.
    pub min_round_seconds: u64,
}

/// A round certificate: one statement and the enclave signatures over it, sorted by signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub round: u64,
    pub model_hash: B256,
    pub receipt_hash: B256,
    /// The enclave keys whose updates the round aggregated, ascending.
    pub members: Vec<Address>,
    /// (signer, r ‖ s ‖ v), ascending by signer.
    pub signatures: Vec<(Address, [u8; 65])>,
}

/// How a certificate submission ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Included now; `credited` members were credited.
    Landed { tx: B256, credited: u32 },
    /// The round was already certified (by another relayer, or a resend after a lost reply).
    Already,
}

/// A connection to the contract as one account.
#[derive(Clone)]
pub struct Chain {
    pub provider: DynProvider,
    pub contract: ConclaveTraining::ConclaveTrainingInstance<DynProvider>,
    pub account: Address,
    pub chain_id: u64,
    pub options: ChainOptions,
}

fn retryable(e: &alloy::contract::Error) -> bool {
    match e {
        alloy::contract::Error::TransportError(t) => t.as_error_resp().is_none(),
        _ => false,
    }
}

async fn provider_for(rpc: &str, key: &PrivateKeySigner) -> Result<DynProvider> {
    let url = rpc
        .parse()
        .with_context(|| format!("RPC URL {rpc:?} is not a URL"))?;
    // The node is asked for the nonce of every transaction: a cached nonce is consumed by a
    // call that fails at gas estimation and leaves a gap that holds every later transaction.
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(key.clone()))
        .connect_http(url)
        .erased())
}

impl Chain {
    /// Connects to a deployed contract.
    pub async fn connect(
        rpc: &str,
        key: &PrivateKeySigner,
        contract: Address,
        options: ChainOptions,
    ) -> Result<Self> {
        let provider = provider_for(rpc, key).await?;
        let chain_id = provider
            .get_chain_id()
            .await
            .with_context(|| format!("asking {rpc} for its chain id"))?;
        let code = provider.get_code_at(contract).await?;
        if code.is_empty() {
            bail!("no contract at {contract} on chain {chain_id}");
        }
        Ok(Chain {
            contract: ConclaveTraining::new(contract, provider.clone()),
            provider,
            account: key.address(),
            chain_id,
            options,
        })
    }

    /// Deploys a new contract and connects to it.
    pub async fn deploy(
        rpc: &str,
        key: &PrivateKeySigner,
        params: DeployParams,
        options: ChainOptions,
    ) -> Result<Self> {
        let provider = provider_for(rpc, key).await?;
        let instance = ConclaveTraining::deploy(
            provider.clone(),
            params.unbonding_delay,
            params.commit_grace,
            U256::from(params.reporter_reward_bps),
        )
        .await
        .map_err(|e| ChainError::from_contract("deploying ConclaveTraining", &e))?;
        Chain::connect(rpc, key, *instance.address(), options).await
    }

    /// The same contract as another account.
    pub async fn as_account(&self, rpc: &str, key: &PrivateKeySigner) -> Result<Self> {
        Chain::connect(rpc, key, *self.contract.address(), self.options.clone()).await
    }

    pub fn address(&self) -> Address {
        *self.contract.address()
    }

    /// The EIP-712 domain enclaves sign statements for.
    pub fn domain(&self) -> Domain {
        Domain {
            chain_id: self.chain_id,
            contract: self.address().into_array(),
        }
    }

    /// Sends a transaction built by `build`, retrying transport errors with backoff, and waits
    /// for its receipt; a revert is returned at once with the contract's error named.
    async fn send<F, Fut>(&self, what: &str, build: F) -> Result<TransactionReceipt>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<PendingTransactionBuilder<Ethereum>, alloy::contract::Error>>,
    {
        let mut delay = self.options.backoff;
        let mut attempt = 1;
        loop {
            match build().await {
                Ok(pending) => {
                    let receipt = pending
                        .with_required_confirmations(self.options.confirmations)
                        .with_timeout(Some(self.options.timeout))
                        .get_receipt()
                        .await
                        .with_context(|| format!("{what}: waiting for the receipt"))?;
                    if !receipt.status() {
                        bail!("{what}: transaction {} reverted", receipt.transaction_hash);
                    }
                    return Ok(receipt);
                }
                Err(e) if retryable(&e) && attempt < self.options.attempts => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(ChainError::from_contract(what, &e).into()),
            }
        }
    }

    /// Creates a job (native token: the escrow is sent with the call; an ERC-20 must be
    /// approved first) and returns its id.
    pub async fn create_job(&self, spec: &JobSpec) -> Result<u64> {
        let params = IConclaveTraining::JobParams {
            token: spec.token.unwrap_or(Address::ZERO),
            escrow: spec.escrow,
            stake: spec.stake,
            specHash: spec.spec_hash,
            datasetRoot: spec.dataset_root,
            measurements: spec.measurements.clone(),
            minOperators: spec.min_operators,
            totalRounds: spec.total_rounds,
            checkpointInterval: spec.checkpoint_interval,
            deadline: spec.deadline,
            evidenceVerifier: Address::ZERO,
            verifiers: spec.verifiers.clone(),
            verifierThreshold: spec.verifier_threshold,
            quorumBps: spec.quorum_bps,
            minRoundSeconds: spec.min_round_seconds,
        };
        let value = if spec.token.is_none() {
            spec.escrow
        } else {
            U256::ZERO
        };
        let receipt = self
            .send("createJob", || {
                let c = self.contract.createJob(params.clone()).value(value);
                async move { c.send().await }
            })
            .await?;
        let ev = receipt
            .decoded_log::<ConclaveTraining::JobCreated>()
            .context("createJob: no JobCreated event")?;
        u64::try_from(ev.jobId).map_err(|_| anyhow!("job id {} is over u64", ev.jobId))
    }

    /// Joins a job with its stake (native token).
    pub async fn join(&self, job: u64) -> Result<()> {
        let stake = self.job(job).await?.stake;
        self.send("join", || {
            let c = self.contract.join(U256::from(job)).value(stake);
            async move { c.send().await }
        })
        .await?;
        Ok(())
    }

    /// Registers an enclave key with its consent signature (see
    /// [`conclave_attestation::EnclaveKey::sign_registration`]) and the job's verifiers'
    /// approvals of its evidence ([`crate::approve`]).
    pub async fn register_enclave(
        &self,
        job: u64,
        enclave_key: Address,
        evidence_hash: B256,
        measurement: B256,
        key_signature: &[u8; 65],
        approvals: &[[u8; 65]],
    ) -> Result<()> {
        let sig = Bytes::copy_from_slice(key_signature);
        let approvals: Vec<Bytes> = approvals
            .iter()
            .map(|a| Bytes::copy_from_slice(a))
            .collect();
        self.send("registerEnclave", || {
            let c = self.contract.registerEnclave(
                U256::from(job),
                enclave_key,
                evidence_hash,
                measurement,
                sig.clone(),
                Bytes::new(),
                approvals.clone(),
            );
            async move { c.send().await }
        })
        .await?;
        Ok(())
    }

    pub async fn start_job(&self, job: u64) -> Result<()> {
        self.send("startJob", || {
            let c = self.contract.startJob(U256::from(job));
            async move { c.send().await }
        })
        .await?;
        Ok(())
    }

    /// Submits a round certificate; idempotent (a certified round answers
    /// [`Submitted::Already`]).
    pub async fn submit_certificate(&self, job: u64, cert: &Certificate) -> Result<Submitted> {
        let sigs: Vec<Bytes> = cert
            .signatures
            .iter()
            .map(|(_, s)| Bytes::copy_from_slice(s))
            .collect();
        let r = self
            .send("submitCertificate", || {
                let c = self.contract.submitCertificate(
                    U256::from(job),
                    cert.round,
                    cert.model_hash,
                    cert.receipt_hash,
                    cert.members.clone(),
                    sigs.clone(),
                );
                async move { c.send().await }
            })
            .await;
        match r {
            Ok(receipt) => {
                let credited = receipt
                    .decoded_log::<ConclaveTraining::CheckpointCertified>()
                    .map(|e| e.credited)
                    .unwrap_or(0);
                Ok(Submitted::Landed {
                    tx: receipt.transaction_hash,
                    credited,
                })
            }
            Err(e) => {
                // Another relayer's certificate may have landed first: at estimation (a
                // `RoundBehind` revert) or in the same block as ours (a mined revert).
                let cp = self.checkpoint(job, cert.round).await?;
                if cp.certifiedAt != 0 && cp.modelHash == cert.model_hash {
                    Ok(Submitted::Already)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The certificate quorum the job needs now (`quorumNeeded`).
    pub async fn quorum_needed(&self, job: u64) -> Result<u64> {
        let q = self
            .contract
            .quorumNeeded(U256::from(job))
            .call()
            .await
            .map_err(|e| ChainError::from_contract("quorumNeeded", &e))?;
        u64::try_from(q).map_err(|_| anyhow!("quorumNeeded {q} is over u64"))
    }

    /// Rounds certified so far.
    pub async fn certified_rounds(&self, job: u64) -> Result<u64> {
        self.contract
            .certifiedRounds(U256::from(job))
            .call()
            .await
            .map_err(|e| ChainError::from_contract("certifiedRounds", &e).into())
    }

    /// The job's appointed evidence verifiers.
    pub async fn verifiers(&self, job: u64) -> Result<Vec<Address>> {
        self.contract
            .verifiers(U256::from(job))
            .call()
            .await
            .map_err(|e| ChainError::from_contract("verifiers", &e).into())
    }

    /// Proves an equivocation: two different statements by one enclave key for one round.
    /// Each statement is (model hash, receipt hash, update set, signature).
    pub async fn slash(
        &self,
        job: u64,
        round: u64,
        a: (B256, B256, B256, [u8; 65]),
        b: (B256, B256, B256, [u8; 65]),
    ) -> Result<()> {
        let sa = IConclaveTraining::SignedCheckpoint {
            modelHash: a.0,
            receiptHash: a.1,
            updateSet: a.2,
            signature: Bytes::copy_from_slice(&a.3),
        };
        let sb = IConclaveTraining::SignedCheckpoint {
            modelHash: b.0,
            receiptHash: b.1,
            updateSet: b.2,
            signature: Bytes::copy_from_slice(&b.3),
        };
        self.send("slash", || {
            let c = self
                .contract
                .slash(U256::from(job), round, sa.clone(), sb.clone());
            async move { c.send().await }
        })
        .await?;
        Ok(())
    }

    pub async fn request_leave(&self, job: u64) -> Result<()> {
        self.send("requestLeave", || {
            let c = self.contract.requestLeave(U256::from(job));
            async move { c.send().await }
        })
        .await?;
        Ok(())
    }

    /// Withdraws stake and payment (pull).
    pub async fn withdraw(&self, job: u64) -> Result<()> {
        self.send("withdraw", || {
            let c = self.contract.withdraw(U256::from(job));
            async move { c.send().await }
        })
        .await?;
        Ok(())
    }

    pub async fn job(&self, job: u64) -> Result<IConclaveTraining::Job> {
        self.contract
            .getJob(U256::from(job))
            .call()
            .await
            .map_err(|e| ChainError::from_contract(&format!("getJob({job})"), &e).into())
    }

    pub async fn operator(&self, job: u64, op: Address) -> Result<IConclaveTraining::Operator> {
        self.contract
            .getOperator(U256::from(job), op)
            .call()
            .await
            .map_err(|e| ChainError::from_contract("getOperator", &e).into())
    }

    pub async fn checkpoint(&self, job: u64, round: u64) -> Result<IConclaveTraining::Checkpoint> {
        self.contract
            .getCheckpoint(U256::from(job), round)
            .call()
            .await
            .map_err(|e| ChainError::from_contract("getCheckpoint", &e).into())
    }

    pub async fn payment_of(&self, job: u64, op: Address) -> Result<U256> {
        self.contract
            .paymentOf(U256::from(job), op)
            .call()
            .await
            .map_err(|e| ChainError::from_contract("paymentOf", &e).into())
    }

    pub async fn balance(&self, who: Address) -> Result<U256> {
        Ok(self.provider.get_balance(who).await?)
    }

    /// Whether the job's payment is settled (completed and the commit grace over, or expired).
    pub async fn is_settled(&self, job: u64) -> Result<bool> {
        self.contract
            .isSettled(U256::from(job))
            .call()
            .await
            .map_err(|e| ChainError::from_contract("isSettled", &e).into())
    }

    /// The operator account that registered `key` for the job (zero: none).
    pub async fn operator_of_key(&self, job: u64, key: Address) -> Result<Address> {
        self.contract
            .operatorOfKey(U256::from(job), key)
            .call()
            .await
            .map_err(|e| ChainError::from_contract("operatorOfKey", &e).into())
    }

    /// The chain's latest block timestamp.
    pub async fn now(&self) -> Result<u64> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await?
            .context("no latest block")?;
        Ok(block.header.timestamp)
    }
}

/// The contract's error of a failed call, when it reverted.
pub fn revert_of(e: &anyhow::Error) -> Option<&ContractError> {
    match e.downcast_ref::<ChainError>() {
        Some(ChainError::Reverted { error, .. }) => Some(error),
        _ => None,
    }
}

/// A failed transaction, with the contract's error decoded when it reverted.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{what} reverted: {error:?}")]
    Reverted { what: String, error: ContractError },
    #[error("{what}: {message}")]
    Other { what: String, message: String },
}

impl ChainError {
    /// The contract's named error when `e` is a revert, otherwise the error's text.
    pub fn from_contract(what: &str, e: &alloy::contract::Error) -> Self {
        match e.as_decoded_interface_error::<ContractError>() {
            Some(error) => ChainError::Reverted {
                what: what.into(),
                error,
            },
            None => ChainError::Other {
                what: what.into(),
                message: e.to_string(),
            },
        }
    }
}

mod anvil;
pub use anvil::{Anvil, anvil_binary};
