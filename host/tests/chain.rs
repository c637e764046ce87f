//! The chain client against a real anvil (from `scripts/setup-foundry.sh`): a job from creation
//! to payout, with enclave keys from the attestation crate signing the EIP-712 statements, and
//! the signatures the contract must refuse.

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use conclave_attestation::EnclaveKey;
use conclave_attestation::eip712::{Domain, job_word};
use conclave_host::chain::{
    Anvil, Chain, ChainError, ChainOptions, ContractError, DeployParams, JobSpec, Submitted,
};

const ETH: u128 = 1_000_000_000_000_000_000;

fn addr(k: &EnclaveKey) -> Address {
    Address::from(k.address().0)
}

fn reverted(e: &anyhow::Error) -> &ContractError {
    match e.downcast_ref::<ChainError>() {
        Some(ChainError::Reverted { error, .. }) => error,
        _ => panic!("expected a revert, got {e:#}"),
    }
}

fn checkpoint_sig(k: &EnclaveKey, d: &Domain, job: u64, round: u64, m: B256, r: B256) -> [u8; 65] {
    k.sign_checkpoint(d, &job_word(job), round, &m.0, &r.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_from_creation_to_payout_on_a_real_anvil() {
    let anvil = Anvil::start(0)
        .await
        .expect("anvil (run scripts/setup-foundry.sh)");
    let url = anvil.url();
    let keys: Vec<PrivateKeySigner> = (0..5).map(|_| PrivateKeySigner::random()).collect();
    for k in &keys {
        anvil
            .fund(k.address(), U256::from(100 * ETH))
            .await
            .unwrap();
    }
    let (customer_key, reporter_key) = (&keys[0], &keys[4]);
    let opts = ChainOptions::default();
    let params = DeployParams {
        unbonding_delay: 100,
        commit_grace: 100,
        reporter_reward_bps: 1000,
    };
    let customer = Chain::deploy(&url, customer_key, params, opts)
        .await
        .unwrap();
    let domain = customer.domain();
    assert_eq!(domain.chain_id, 31337);

    let measurement = keccak256([0x42u8; 48]);
    let now = anvil.now().await.unwrap();
    let spec = JobSpec {
        token: None,
        escrow: U256::from(3 * ETH),
        stake: U256::from(ETH),
        spec_hash: keccak256(b"job spec"),
        dataset_root: keccak256(b"dataset root"),
        measurements: vec![measurement],
        min_operators: 3,
        total_rounds: 2,
        checkpoint_interval: 1,
        deadline: now + 3600,
    };
    let job = customer.create_job(&spec).await.unwrap();
    let other_job = customer.create_job(&spec).await.unwrap();
    assert_ne!(job, other_job);

    // Three operators join and register enclave keys with the enclaves' consent.
    let enclaves: Vec<EnclaveKey> = (0..3).map(|_| EnclaveKey::generate()).collect();
    let mut ops = Vec::new();
    for (k, e) in keys[1..4].iter().zip(&enclaves) {
        let op = customer.as_account(&url, k).await.unwrap();
        op.join(job).await.unwrap();
        let evidence = keccak256(e.public_xy());
        let sig = e.sign_registration(
            &domain,
            &job_word(job),
            &k.address().into_array(),
            &evidence.0,
            &measurement.0,
        );
        // Consent signed for another operator does not register.
        if ops.is_empty() {
            let wrong = e.sign_registration(
                &domain,
                &job_word(job),
                &[9u8; 20],
                &evidence.0,
                &measurement.0,
            );
            let err = op
                .register_enclave(job, addr(e), evidence, measurement, &wrong)
                .await
                .unwrap_err();
            assert!(
                matches!(reverted(&err), ContractError::InvalidSignature(_)),
                "{err:#}"
            );
        }
        op.register_enclave(job, addr(e), evidence, measurement, &sig)
            .await
            .unwrap();
        ops.push(op);
    }
    customer.start_job(job).await.unwrap();

    // Our EIP-712 digest is the contract's.
    let (m1, r1) = (keccak256(b"model 1"), keccak256(b"receipt 1"));
    let onchain = customer
        .contract
        .checkpointDigest(U256::from(job), 1, m1, r1)
        .call()
        .await
        .unwrap();
    assert_eq!(
        onchain.0,
        domain.checkpoint_digest(&job_word(job), 1, &m1.0, &r1.0)
    );

    // Round 1: every enclave signs the same checkpoint; the first fixes the round.
    for (i, (op, e)) in ops.iter().zip(&enclaves).enumerate() {
        let sig = checkpoint_sig(e, &domain, job, 1, m1, r1);
        match op.submit_checkpoint(job, 1, m1, r1, &sig).await.unwrap() {
            Submitted::Landed { accepted, .. } => assert_eq!(accepted, i == 0),
            Submitted::Already => panic!("first submission reported as already landed"),
        }
        // Resending is harmless.
        assert_eq!(
            op.submit_checkpoint(job, 1, m1, r1, &sig).await.unwrap(),
            Submitted::Already
        );
    }
    let cp = customer.checkpoint(job, 1).await.unwrap();
    assert_eq!((cp.modelHash, cp.operator), (m1, keys[1].address()));

    // An unregistered key, a signature made for another job, and one made for another chain
    // are refused.
    let stranger = EnclaveKey::generate();
    let (m2, r2) = (keccak256(b"model 2"), keccak256(b"receipt 2"));
    let sig = checkpoint_sig(&stranger, &domain, job, 2, m2, r2);
    let err = ops[0]
        .submit_checkpoint(job, 2, m2, r2, &sig)
        .await
        .unwrap_err();
    assert!(
        matches!(reverted(&err), ContractError::UnknownEnclaveKey(_)),
        "{err:#}"
    );
    let for_other_job = checkpoint_sig(&enclaves[0], &domain, other_job, 2, m2, r2);
    let err = ops[0]
        .submit_checkpoint(job, 2, m2, r2, &for_other_job)
        .await
        .unwrap_err();
    assert!(
        matches!(reverted(&err), ContractError::UnknownEnclaveKey(_)),
        "{err:#}"
    );
    let other_chain = Domain {
        chain_id: 1,
        ..domain
    };
    let for_other_chain = checkpoint_sig(&enclaves[0], &other_chain, job, 2, m2, r2);
    let err = ops[0]
        .submit_checkpoint(job, 2, m2, r2, &for_other_chain)
        .await
        .unwrap_err();
    assert!(
        matches!(reverted(&err), ContractError::UnknownEnclaveKey(_)),
        "{err:#}"
    );

    // Operator 3's enclave equivocates on round 1; anyone can prove it.
    let forged = keccak256(b"another model 1");
    let a = (
        m1,
        r1,
        checkpoint_sig(&enclaves[2], &domain, job, 1, m1, r1),
    );
    let b = (
        forged,
        r1,
        checkpoint_sig(&enclaves[2], &domain, job, 1, forged, r1),
    );
    let reporter = customer.as_account(&url, reporter_key).await.unwrap();
    let before = reporter.balance(reporter_key.address()).await.unwrap();
    reporter.slash(job, 1, a, b).await.unwrap();
    let after = reporter.balance(reporter_key.address()).await.unwrap();
    assert!(after > before, "the reporter is rewarded");
    let err = reporter.slash(job, 1, a, b).await.unwrap_err();
    assert!(
        matches!(reverted(&err), ContractError::WrongOperatorStatus(_)),
        "{err:#}"
    );

    // Round 2 completes the job; after the grace period the honest operators are paid.
    let (m2, r2) = (keccak256(b"model 2"), keccak256(b"receipt 2"));
    for (op, e) in ops[..2].iter().zip(&enclaves) {
        let sig = checkpoint_sig(e, &domain, job, 2, m2, r2);
        op.submit_checkpoint(job, 2, m2, r2, &sig).await.unwrap();
    }
    assert_eq!(customer.job(job).await.unwrap().latestRound, 2);
    // Leaving starts unbonding; stake and payment come out after the delay and the grace.
    for op in &ops[..2] {
        op.request_leave(job).await.unwrap();
    }
    let err = ops[0].withdraw(job).await.unwrap_err();
    assert!(
        matches!(reverted(&err), ContractError::StillUnbonding(_)),
        "{err:#}"
    );
    anvil.advance_time(101).await.unwrap();
    let mut paid = U256::ZERO;
    for (op, k) in ops[..2].iter().zip(&keys[1..3]) {
        let pay = op.payment_of(job, k.address()).await.unwrap();
        assert!(pay > U256::ZERO);
        paid += pay;
        let before = op.balance(k.address()).await.unwrap();
        op.withdraw(job).await.unwrap();
        let after = op.balance(k.address()).await.unwrap();
        // Stake and payment, less the gas of the call.
        assert!(after > before + pay, "{before} → {after}, payment {pay}");
    }
    assert_eq!(
        ops[2].payment_of(job, keys[3].address()).await.unwrap(),
        U256::ZERO,
        "a slashed operator is never paid"
    );
    assert!(paid <= spec.escrow);
    anvil.stop().await.unwrap();
}
