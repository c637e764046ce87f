//! Envelopes: only a signature by a key that the signer's accepted evidence binds, for this job
//! and nonce, yields a signer address.

mod common;

use common::SNP_NOW;
use conclave_attestation::*;

struct Enclave {
    key: EnclaveKey,
    evidence: Evidence,
}

fn ctx() -> BindingContext {
    BindingContext {
        job_id: JobId([0xA1; 32]),
        nonce: Nonce([0xB2; 32]),
    }
}

fn enclave(seed: u8, bind: &BindingContext) -> Enclave {
    let key = EnclaveKey::from_bytes(&[seed; 32]).unwrap();
    let attester = SimAttester::from_seed(&[seed; 32], SimConfig::default()).unwrap();
    let evidence = attester.evidence(&key.report_data(bind));
    Enclave { key, evidence }
}

fn accept(e: &Evidence) -> AcceptedEvidence {
    let policy = Policy {
        allow_sim: true,
        ..Policy::default()
    };
    appraise(e, &Endorsements::default(), &policy, SNP_NOW)
        .unwrap()
        .accepted()
        .expect("sim evidence accepted under allow_sim")
}

#[test]
fn envelope_from_an_attested_bound_key_verifies() {
    let e = enclave(1, &ctx());
    let env = e
        .key
        .seal(
            "conclave/v1/job/a1",
            "round-receipt",
            b"round 1".to_vec(),
            e.evidence.hash(),
        )
        .unwrap();
    let wire = env.encode();
    let got = Envelope::decode(&wire)
        .unwrap()
        .verify_as(
            "conclave/v1/job/a1",
            "round-receipt",
            &accept(&e.evidence),
            &ctx(),
        )
        .unwrap();
    assert_eq!(got, e.key.address());
}

#[test]
fn tampered_envelope_fails() {
    let e = enclave(1, &ctx());
    let env = e
        .key
        .seal(
            "conclave/v1/job/a1",
            "update",
            vec![0u8; 64],
            e.evidence.hash(),
        )
        .unwrap();
    let accepted = accept(&e.evidence);
    let mut payload = env.clone();
    payload.payload[10] ^= 1;
    assert!(matches!(
        payload.verify(&accepted, &ctx()),
        Err(EnvelopeError::SignerMismatch { .. })
    ));
    let mut kind = env.clone();
    kind.kind = "checkpoint-manifest".into();
    assert!(kind.verify(&accepted, &ctx()).is_err());
    let mut sig = env.clone();
    sig.signature[5] ^= 1;
    assert!(sig.verify(&accepted, &ctx()).is_err());
}

#[test]
fn forged_signature_by_another_key_fails() {
    let e = enclave(1, &ctx());
    let forger = EnclaveKey::from_bytes(&[9; 32]).unwrap();
    let mut env = forger
        .seal("d", "k", b"x".to_vec(), e.evidence.hash())
        .unwrap();
    env.signer = e.key.address(); // claims to be the attested enclave
    assert!(matches!(
        env.verify(&accept(&e.evidence), &ctx()),
        Err(EnvelopeError::SignerMismatch { .. })
    ));
}

#[test]
fn key_not_bound_by_the_evidence_fails() {
    // The evidence is genuine (accepted), but binds a different key.
    let e = enclave(1, &ctx());
    let other = EnclaveKey::from_bytes(&[2; 32]).unwrap();
    let env = other
        .seal("d", "k", b"x".to_vec(), e.evidence.hash())
        .unwrap();
    assert!(matches!(
        env.verify(&accept(&e.evidence), &ctx()),
        Err(EnvelopeError::KeyNotBound { .. })
    ));
}

#[test]
fn replayed_nonce_or_other_job_fails() {
    let e = enclave(1, &ctx());
    let env = e
        .key
        .seal("d", "k", b"x".to_vec(), e.evidence.hash())
        .unwrap();
    let accepted = accept(&e.evidence);
    let replay = BindingContext {
        nonce: Nonce([0xC3; 32]),
        ..ctx()
    };
    assert!(matches!(
        env.verify(&accepted, &replay),
        Err(EnvelopeError::KeyNotBound { .. })
    ));
    let other_job = BindingContext {
        job_id: JobId([0; 32]),
        ..ctx()
    };
    assert!(matches!(
        env.verify(&accepted, &other_job),
        Err(EnvelopeError::KeyNotBound { .. })
    ));
}

#[test]
fn envelope_naming_other_evidence_fails() {
    let a = enclave(1, &ctx());
    let b = enclave(2, &ctx());
    let env = a
        .key
        .seal("d", "k", b"x".to_vec(), a.evidence.hash())
        .unwrap();
    assert!(matches!(
        env.verify(&accept(&b.evidence), &ctx()),
        Err(EnvelopeError::EvidenceMismatch { .. })
    ));
}

#[test]
fn rejected_evidence_yields_no_accepted_evidence() {
    let e = enclave(1, &ctx());
    let a = appraise(
        &e.evidence,
        &Endorsements::default(),
        &Policy::default(),
        SNP_NOW,
    )
    .unwrap();
    assert!(
        a.accepted().is_none(),
        "sim under the default policy is rejected"
    );
}
