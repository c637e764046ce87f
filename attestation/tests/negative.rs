//! Each security property has a test that breaks it and sees the named rejection.

mod common;

use common::*;
use conclave_attestation::reason::Reason;
use conclave_attestation::snp::certs::CertRole;
use conclave_attestation::tdx::parse_collateral;
use conclave_attestation::*;

fn s1_with(mutate: impl FnOnce(&mut Vec<u8>)) -> Evidence {
    let mut r = milan_report_s1();
    mutate(&mut r);
    Evidence::decode(&r).unwrap()
}

fn s1_certs() -> Endorsements {
    certs(&[
        "snp/virtee-milan/vcek_milan.der",
        "snp/virtee-milan/cert_chain_milan",
    ])
}

fn sim(config: SimConfig) -> (SimAttester, Evidence) {
    let a = SimAttester::from_seed(&[7; 32], config).unwrap();
    let e = a.evidence(&ReportData([0x33; 64]));
    (a, e)
}

fn allow_sim() -> Policy {
    Policy {
        allow_sim: true,
        ..Policy::default()
    }
}

#[test]
fn flipping_any_signed_field_breaks_the_report_signature() {
    for offset in [0x050, 0x090, 0x0C0, 0x140, 0x29F] {
        let e = s1_with(|r| r[offset] ^= 0x01);
        let a = appraise(&e, &s1_certs(), &Policy::default(), SNP_NOW).unwrap();
        assert!(
            a.reasons.contains(&Reason::ReportSignatureInvalid {
                role: CertRole::Vcek
            }),
            "offset {offset:#x}: {:?}",
            a.reasons
        );
    }
}

#[test]
fn flipping_reported_tcb_breaks_signature_and_the_vcek_extension_match() {
    let e = s1_with(|r| r[0x186] ^= 0x01); // snp SPL byte of reported_tcb
    let a = appraise(&e, &s1_certs(), &Policy::default(), SNP_NOW).unwrap();
    assert!(a.reasons.contains(&Reason::ReportSignatureInvalid {
        role: CertRole::Vcek
    }));
    assert!(
        a.reasons
            .iter()
            .any(|r| matches!(r, Reason::CertificateTcbMismatch { .. })),
        "{:?}",
        a.reasons
    );
}

#[test]
fn a_vcek_of_another_chip_is_rejected() {
    let e = s1_with(|_| {});
    let wrong = certs(&["snp/go-sev-guest-debug/vcek.testcer"]);
    let a = appraise(&e, &wrong, &Policy::default(), SNP_NOW).unwrap();
    assert!(a.reasons.contains(&Reason::ReportSignatureInvalid {
        role: CertRole::Vcek
    }));
    assert!(
        a.reasons
            .iter()
            .any(|r| matches!(r, Reason::ChipIdMismatch { .. }))
    );
}

#[test]
fn missing_vcek_is_named() {
    let e = s1_with(|_| {});
    let a = appraise(&e, &Endorsements::default(), &Policy::default(), SNP_NOW).unwrap();
    assert_eq!(
        a.reasons,
        vec![Reason::CertificateMissing {
            role: CertRole::Vcek
        }]
    );
}

#[test]
fn expired_and_not_yet_valid_vcek_are_rejected() {
    let e = s1_with(|_| {});
    // 2031-01-01: after the VCEK's 2030-04-03 expiry.
    let a = appraise(&e, &s1_certs(), &Policy::default(), UnixTime(1_924_992_000)).unwrap();
    assert!(
        matches!(
            &a.reasons[..],
            [Reason::CertificateExpired {
                role: CertRole::Vcek,
                ..
            }]
        ),
        "{:?}",
        a.reasons
    );
    // 2023-01-01: before it was issued.
    let a = appraise(&e, &s1_certs(), &Policy::default(), UnixTime(1_672_531_200)).unwrap();
    assert!(
        matches!(
            &a.reasons[..],
            [Reason::CertificateNotYetValid {
                role: CertRole::Vcek,
                ..
            }]
        ),
        "{:?}",
        a.reasons
    );
}

#[test]
fn a_foreign_ark_is_not_trusted() {
    let e = s1_with(|_| {});
    let (sim_attester, _) = sim(SimConfig::default());
    let mut c = s1_certs();
    // The sim chain's ARK is self-signed but it is not AMD's.
    let sim_ark = &sim_attester.chain_der()[2];
    c.certs
        .extend(conclave_attestation::snp::certs::load_certs(sim_ark).unwrap());
    let a = appraise(&e, &c, &Policy::default(), SNP_NOW).unwrap();
    assert!(
        a.reasons
            .iter()
            .any(|r| matches!(r, Reason::ArkNotTrusted { .. })),
        "{:?}",
        a.reasons
    );
}

#[test]
fn a_masked_chip_id_on_a_v2_report_is_handled_without_a_parse_error() {
    // A v2 report cannot say its product; the VCEK's productName decides. The chip_id is
    // signed, so zeroing it here must break the signature and nothing else must panic.
    let e = s1_with(|r| r[0x1A0..0x1E0].fill(0));
    let a = appraise(&e, &s1_certs(), &Policy::default(), SNP_NOW).unwrap();
    assert_eq!(
        a.reasons,
        vec![Reason::ReportSignatureInvalid {
            role: CertRole::Vcek
        }]
    );
}

#[test]
fn debug_guest_is_rejected_by_default_policy() {
    let (_, e) = sim(SimConfig {
        policy: 0xB0000,
        ..SimConfig::default()
    });
    let a = appraise(&e, &Endorsements::default(), &allow_sim(), SNP_NOW).unwrap();
    assert_eq!(a.reasons, vec![Reason::DebugGuest]);
}

#[test]
fn vmpl_1_is_rejected() {
    let (_, e) = sim(SimConfig {
        vmpl: 1,
        ..SimConfig::default()
    });
    let a = appraise(&e, &Endorsements::default(), &allow_sim(), SNP_NOW).unwrap();
    assert_eq!(a.reasons, vec![Reason::VmplTooHigh { vmpl: 1, max: 0 }]);
    // And on a real report: the VMPL field is signed, so both reasons appear.
    let e = s1_with(|r| r[0x030] = 1);
    let a = appraise(&e, &s1_certs(), &Policy::default(), SNP_NOW).unwrap();
    assert!(a.reasons.contains(&Reason::VmplTooHigh { vmpl: 1, max: 0 }));
    assert!(a.reasons.contains(&Reason::ReportSignatureInvalid {
        role: CertRole::Vcek
    }));
}

#[test]
fn migratable_snp_guest_is_rejected() {
    let (_, e) = sim(SimConfig {
        policy: 0x30000 | (1 << 18),
        ..SimConfig::default()
    });
    let a = appraise(&e, &Endorsements::default(), &allow_sim(), SNP_NOW).unwrap();
    assert_eq!(a.reasons, vec![Reason::MigratableGuest]);
}

#[test]
fn sim_evidence_is_rejected_by_default_policy_and_accepted_when_allowed() {
    let (_, e) = sim(SimConfig::default());
    let wire = Evidence::decode(&e.encode()).unwrap();
    assert_eq!(wire.tee, Tee::Sim);
    let a = appraise(&wire, &Endorsements::default(), &Policy::default(), SNP_NOW).unwrap();
    assert_eq!(a.reasons, vec![Reason::SimNotAllowed]);
    assert_eq!(a.tee, Tee::Sim);
    let a = appraise(&wire, &Endorsements::default(), &allow_sim(), SNP_NOW).unwrap();
    assert_eq!(a.verdict, Verdict::Accepted, "{:?}", a.reasons);
}

#[test]
fn sim_report_relabelled_as_hardware_fails_the_amd_chain() {
    let (_, mut e) = sim(SimConfig::default());
    e.tee = Tee::Snp;
    let a = appraise(&e, &Endorsements::default(), &allow_sim(), SNP_NOW).unwrap();
    assert!(
        a.reasons
            .iter()
            .any(|r| matches!(r, Reason::ArkNotTrusted { .. })),
        "{:?}",
        a.reasons
    );
}

#[test]
fn sim_report_signed_by_a_different_sim_root_fails() {
    let (_, mut e) = sim(SimConfig::default());
    let other = SimAttester::from_seed(&[8; 32], SimConfig::default()).unwrap();
    e.certs = other.chain_der().to_vec();
    let a = appraise(&e, &Endorsements::default(), &allow_sim(), SNP_NOW).unwrap();
    assert!(a.reasons.contains(&Reason::ReportSignatureInvalid {
        role: CertRole::Vcek
    }));
    assert!(
        a.reasons
            .iter()
            .any(|r| matches!(r, Reason::ChipIdMismatch { .. }))
    );
}

#[test]
fn expired_sim_chain_is_rejected() {
    let (_, e) = sim(SimConfig {
        not_after: UnixTime(1_750_000_000),
        ..SimConfig::default()
    });
    let a = appraise(&e, &Endorsements::default(), &allow_sim(), SNP_NOW).unwrap();
    let expired: Vec<_> = a
        .reasons
        .iter()
        .filter(|r| matches!(r, Reason::CertificateExpired { .. }))
        .collect();
    assert_eq!(
        expired.len(),
        3,
        "ARK, ASK and VCEK all expired: {:?}",
        a.reasons
    );
}

#[test]
fn report_data_mismatch_is_rejected() {
    let (_, e) = sim(SimConfig::default());
    let policy = Policy {
        report_data: Some(ReportData([0x44; 64])),
        ..allow_sim()
    };
    let a = appraise(&e, &Endorsements::default(), &policy, SNP_NOW).unwrap();
    assert_eq!(
        a.reasons,
        vec![Reason::ReportDataMismatch {
            expected: ReportData([0x44; 64]),
            got: ReportData([0x33; 64])
        }]
    );
}

#[test]
fn wrong_measurement_is_rejected() {
    let (_, e) = sim(SimConfig::default());
    let policy = Policy {
        measurements: vec![Measurement([1; 48])],
        ..allow_sim()
    };
    let a = appraise(&e, &Endorsements::default(), &policy, SNP_NOW).unwrap();
    assert!(matches!(
        &a.reasons[..],
        [Reason::MeasurementNotAllowed { .. }]
    ));
}

#[test]
fn every_failure_is_reported_not_just_the_first() {
    let (_, e) = sim(SimConfig {
        policy: 0xB0000 | (1 << 18),
        vmpl: 2,
        ..SimConfig::default()
    });
    let policy = Policy {
        measurements: vec![Measurement([1; 48])],
        ..Policy::default()
    };
    let a = appraise(&e, &Endorsements::default(), &policy, SNP_NOW).unwrap();
    assert_eq!(a.reasons.len(), 5, "{:?}", a.reasons);
}

fn t1_with(mutate: impl FnOnce(&mut Vec<u8>)) -> (Evidence, Endorsements) {
    let mut q = read("tdx/dcap-qvl/tdx_quote");
    mutate(&mut q);
    (
        Evidence::decode(&q).unwrap(),
        Endorsements {
            certs: vec![],
            tdx_collateral: Some(
                parse_collateral(&read("tdx/dcap-qvl/tdx_quote_collateral.json")).unwrap(),
            ),
        },
    )
}

#[test]
fn tdx_report_data_flip_breaks_the_quote_signature() {
    let (e, c) = t1_with(|q| q[568] ^= 0x01);
    let a = appraise(&e, &c, &Policy::default(), TDX_NOW).unwrap();
    assert!(
        matches!(&a.reasons[..], [Reason::QuoteInvalid { detail }] if detail.contains("signature")),
        "{:?}",
        a.reasons
    );
}

#[test]
fn tdx_debug_td_is_rejected() {
    let (e, c) = t1_with(|q| q[168] |= 0x01); // TD_ATTRIBUTES byte 0: TUD.DEBUG
    let a = appraise(&e, &c, &Policy::default(), TDX_NOW).unwrap();
    assert!(a.reasons.contains(&Reason::DebugGuest), "{:?}", a.reasons);
}

#[test]
fn tdx_without_sept_ve_disable_or_migratable_is_rejected() {
    let (e, c) = t1_with(|q| q[171] = 0x20); // clear bit 28, set bit 29 (MIGRATABLE)
    let a = appraise(&e, &c, &Policy::default(), TDX_NOW).unwrap();
    assert!(
        a.reasons.contains(&Reason::SeptVeNotDisabled),
        "{:?}",
        a.reasons
    );
    assert!(
        a.reasons.contains(&Reason::MigratableGuest),
        "{:?}",
        a.reasons
    );
}

#[test]
fn tdx_service_td_is_rejected_by_default() {
    let (e, c) = t1_with(|q| q[170] |= 0x02); // SEC bit 17: SERVTD_EXT
    let a = appraise(&e, &c, &Policy::default(), TDX_NOW).unwrap();
    assert!(
        a.reasons
            .iter()
            .any(|r| matches!(r, Reason::ServiceTd { .. })),
        "{:?}",
        a.reasons
    );
}

#[test]
fn tdx_status_outside_the_allowlist_is_rejected() {
    let (e, c) = t1_with(|_| {});
    let mut policy = Policy::default();
    policy.tdx.allowed_status = vec!["OutOfDate".into()];
    let a = appraise(&e, &c, &policy, TDX_NOW).unwrap();
    assert_eq!(
        a.reasons,
        vec![Reason::TcbStatusNotAllowed {
            status: "UpToDate".into(),
            allowed: "OutOfDate".into()
        }]
    );
}

#[test]
fn tdx_mrtd_and_rtmr_allowlists_are_enforced() {
    let (e, c) = t1_with(|_| {});
    let mut policy = Policy {
        measurements: vec![Measurement([2; 48])],
        ..Policy::default()
    };
    policy.tdx.rtmr1 = vec![Measurement([3; 48])];
    let a = appraise(&e, &c, &policy, TDX_NOW).unwrap();
    assert!(
        matches!(
            &a.reasons[..],
            [
                Reason::RtmrNotAllowed { index: 1, .. },
                Reason::MeasurementNotAllowed { .. }
            ]
        ),
        "{:?}",
        a.reasons
    );
}

#[test]
fn unparseable_evidence_is_an_error_not_a_panic() {
    assert!(Evidence::decode(&[0u8; 10]).is_err());
    let mut bad = milan_report_s1();
    bad[0x034] = 9; // unknown signature algorithm
    let e = Evidence::decode(&bad).unwrap();
    let err = appraise(&e, &s1_certs(), &Policy::default(), SNP_NOW).unwrap_err();
    assert!(err.to_string().contains("signature algorithm 9"), "{err}");
    let mut q = read("tdx/dcap-qvl/tdx_quote");
    q.truncate(700);
    let e = Evidence::decode(&q).unwrap();
    assert!(appraise(&e, &Endorsements::default(), &Policy::default(), TDX_NOW).is_err());
}
