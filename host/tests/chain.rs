//! The chain client against a real anvil (from `scripts/setup-foundry.sh`): a job from creation
//! to payout, with enclave keys from the attestation crate signing the EIP-712 statements, and
//! the signatures the contract must refuse.

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use conclave_attestation::eip712::{
    CheckpointStatement, Domain, JobTerms, job_word, sorted_members, update_set_hash,
};
use conclave_attestation::{EnclaveAddress, EnclaveKey};
use conclave_host::chain::{
    Anvil, Certificate, Chain, ChainError, ChainOptions, ContractError, DeployParams, JobSpec,
    Submitted,
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

fn statement(round: u64, m: B256, r: B256, members: &[EnclaveAddress]) -> CheckpointStatement {
    CheckpointStatement {
        round,
        model_hash: m.0,
        receipt_hash: r.0,
        update_set: update_set_hash(members),
    }
}

/// A certificate of `round` signed by `signers` over `members`' updates.
fn certificate(
    d: &Domain,
    terms: &JobTerms,
    round: u64,
    m: B256,
    r: B256,
    members: &[EnclaveAddress],
    signers: &[&EnclaveKey],
) -> Certificate {
    let st = statement(round, m, r, members);
    let mut signatures: Vec<(Address, [u8; 65])> = signers
        .iter()
        .map(|k| (addr(k), k.sign_checkpoint(d, terms, &st)))
        .collect();
    signatures.sort_by_key(|(a, _)| *a);
    Certificate {
        round,
        model_hash: m,
        receipt_hash: r,
        members: members.iter().map(|a| Address::from(a.0)).collect(),
        signatures,
    }
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
    // The customer is the job's verifier; its approvals are signed with its account key.
    let verifier = EnclaveKey::from_bytes(&customer_key.to_bytes().into()).unwrap();

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
        verifiers: vec![customer_key.address()],
        verifier_threshold: 1,
        quorum_bps: 6000,
        min_round_seconds: 60,
    };
    let job = customer.create_job(&spec).await.unwrap();
    let other_job = customer.create_job(&spec).await.unwrap();
    assert_ne!(job, other_job);
    let terms = JobTerms {
        job_id: job_word(job),
        spec_hash: spec.spec_hash.0,
        dataset_root: spec.dataset_root.0,
    };
    assert_eq!(customer.verifiers(job).await.unwrap(), spec.verifiers);

    // Three operators join and register enclave keys with the enclaves' consent and the
    // verifier's approval.
    let enclaves: Vec<EnclaveKey> = (0..3).map(|_| EnclaveKey::generate()).collect();
    let mut ops = Vec::new();
    for (k, e) in keys[1..4].iter().zip(&enclaves) {
        let op = customer.as_account(&url, k).await.unwrap();
        op.join(job).await.unwrap();
        let evidence = keccak256(e.public_xy());
        let operator = k.address().into_array();
        let sig = e.sign_registration(&domain, &terms, &operator, &evidence.0, &measurement.0);
        let approval_digest = domain.approval_digest(
            &job_word(job),
            &operator,
            &e.address(),
            &evidence.0,
            &measurement.0,
        );
        let approval = verifier.sign_digest(&approval_digest);
        if ops.is_empty() {
            // Our digests are the contract's.
            let on_chain = customer
                .contract
                .approvalDigest(U256::from(job), k.address(), addr(e), evidence, measurement)
                .call()
                .await
                .unwrap();
            assert_eq!(on_chain.0, approval_digest);
            let on_chain = customer
                .contract
                .registrationDigest(U256::from(job), k.address(), evidence, measurement)
                .call()
                .await
                .unwrap();
            assert_eq!(
                on_chain.0,
                domain.registration_digest(&terms, &operator, &evidence.0, &measurement.0)
            );
            // Consent signed for another operator does not register.
            let wrong =
                e.sign_registration(&domain, &terms, &[9u8; 20], &evidence.0, &measurement.0);
            let err = op
                .register_enclave(job, addr(e), evidence, measurement, &wrong, &[approval])
                .await
                .unwrap_err();
            assert!(
                matches!(reverted(&err), ContractError::InvalidSignature(_)),
                "{err:#}"
            );
            // A key nobody approved (self-made) does not register, nor does one approved by
            // someone who is not the job's verifier.
            let err = op
                .register_enclave(job, addr(e), evidence, measurement, &sig, &[])
                .await
                .unwrap_err();
            assert!(
                matches!(reverted(&err), ContractError::NotEnoughApprovals(_)),
                "{err:#}"
            );
            let stranger = EnclaveKey::generate().sign_digest(&approval_digest);
            let err = op
                .register_enclave(job, addr(e), evidence, measurement, &sig, &[stranger])
                .await
                .unwrap_err();
            assert!(
                matches!(reverted(&err), ContractError::UnknownApprover(_)),
                "{err:#}"
            );
        }
        op.register_enclave(job, addr(e), evidence, measurement, &sig, &[approval])
            .await
            .unwrap();
        ops.push(op);
    }
    customer.start_job(job).await.unwrap();
    assert_eq!(customer.quorum_needed(job).await.unwrap(), 2);

    // Our EIP-712 checkpoint digest is the contract's.
    let members = sorted_members(enclaves.iter().map(|e| e.address()));
    let (m1, r1) = (keccak256(b"model 1"), keccak256(b"outcome 1"));
    let st = statement(1, m1, r1, &members);
    let on_chain = customer
        .contract
        .checkpointDigest(U256::from(job), 1, m1, r1, B256::from(st.update_set))
        .call()
        .await
        .unwrap();
    assert_eq!(on_chain.0, domain.checkpoint_digest(&terms, &st));

    // One enclave alone cannot certify a round; before the job's minimum round time nobody
    // can; a quorum of two after it can, and every member is credited.
    let two = certificate(
        &domain,
        &terms,
        1,
        m1,
        r1,
        &members,
        &enclaves[..2].iter().collect::<Vec<_>>(),
    );
    let err = ops[0].submit_certificate(job, &two).await.unwrap_err();
    assert!(
        matches!(reverted(&err), ContractError::TooEarly(_)),
        "{err:#}"
    );
    anvil.advance_time(61).await.unwrap();
    let alone = certificate(&domain, &terms, 1, m1, r1, &members, &[&enclaves[0]]);
    let err = ops[0].submit_certificate(job, &alone).await.unwrap_err();
    assert!(
        matches!(reverted(&err), ContractError::NoQuorum(_)),
        "{err:#}"
    );
    match ops[1].submit_certificate(job, &two).await.unwrap() {
        Submitted::Landed { credited, .. } => assert_eq!(credited, 3),
        Submitted::Already => panic!("the first certificate reported as already landed"),
    }
    // Resending (or another relayer's copy) is harmless.
    assert_eq!(
        ops[2].submit_certificate(job, &two).await.unwrap(),
        Submitted::Already
    );
    let cp = customer.checkpoint(job, 1).await.unwrap();
    assert_eq!((cp.modelHash, cp.receiptHash, cp.signers), (m1, r1, 2));

    // Signatures from an unregistered key, made for another job, or made for another chain
    // do not count.
    anvil.advance_time(61).await.unwrap();
    let (m2, r2) = (keccak256(b"model 2"), keccak256(b"outcome 2"));
    let stranger = EnclaveKey::generate();
    let with_stranger = certificate(
        &domain,
        &terms,
        2,
        m2,
        r2,
        &members,
        &[&enclaves[0], &stranger],
    );
    let err = ops[0]
        .submit_certificate(job, &with_stranger)
        .await
        .unwrap_err();
    assert!(
        matches!(reverted(&err), ContractError::UnknownEnclaveKey(_)),
        "{err:#}"
    );
    let other_terms = JobTerms {
        job_id: job_word(other_job),
        ..terms
    };
    let for_other_job = certificate(
        &domain,
        &other_terms,
        2,
        m2,
        r2,
        &members,
        &enclaves[..2].iter().collect::<Vec<_>>(),
    );
    let err = ops[0]
        .submit_certificate(job, &for_other_job)
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
    let for_other_chain = certificate(
        &other_chain,
        &terms,
        2,
        m2,
        r2,
        &members,
        &enclaves[..2].iter().collect::<Vec<_>>(),
    );
    let err = ops[0]
        .submit_certificate(job, &for_other_chain)
        .await
        .unwrap_err();
    assert!(
        matches!(reverted(&err), ContractError::UnknownEnclaveKey(_)),
        "{err:#}"
    );

    // Operator 3's enclave equivocates on round 1; anyone can prove it.
    let forged = keccak256(b"another model 1");
    let us = B256::from(update_set_hash(&members));
    let a = (
        m1,
        r1,
        us,
        enclaves[2].sign_checkpoint(&domain, &terms, &statement(1, m1, r1, &members)),
    );
    let b = (
        forged,
        r1,
        us,
        enclaves[2].sign_checkpoint(&domain, &terms, &statement(1, forged, r1, &members)),
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

    // Round 2 completes the job (two active operators left: both must sign); after the grace
    // period the honest operators are paid.
    let cert = certificate(
        &domain,
        &terms,
        2,
        m2,
        r2,
        &members,
        &enclaves[..2].iter().collect::<Vec<_>>(),
    );
    ops[0].submit_certificate(job, &cert).await.unwrap();
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
