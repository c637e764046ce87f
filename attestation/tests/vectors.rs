//! Every real vector in ../shared/vectors gives its stated outcome at its pinned time.

mod common;

use common::*;
use conclave_attestation::reason::{Reason, TcbField};
use conclave_attestation::snp::certs::CertRole;
use conclave_attestation::snp::report::TcbComponent;
use conclave_attestation::tdx::parse_collateral;
use conclave_attestation::*;

fn s1() -> (Evidence, Endorsements) {
    (
        Evidence::decode(&milan_report_s1()).unwrap(),
        certs(&[
            "snp/virtee-milan/vcek_milan.der",
            "snp/virtee-milan/cert_chain_milan",
        ]),
    )
}

fn s3() -> (Evidence, Endorsements) {
    (
        Evidence::decode(&read("snp/dstack-milan-v3/sev_snp_report_extracted.bin")).unwrap(),
        certs(&[
            "snp/dstack-milan-v3/sev_snp_vcek.pem",
            "snp/dstack-milan-v3/sev_snp_ask.pem",
        ]),
    )
}

fn t1() -> (Evidence, Endorsements) {
    (
        Evidence::decode(&read("tdx/dcap-qvl/tdx_quote")).unwrap(),
        Endorsements {
            certs: vec![],
            tdx_collateral: Some(
                parse_collateral(&read("tdx/dcap-qvl/tdx_quote_collateral.json")).unwrap(),
            ),
        },
    )
}

const S3_MEASUREMENT: &str = "7f51e17f72a04d5422cb2c00998166536019a217376f3aa45a630e59c805a599847ff250dbffcd07e1ba639771d6f05d";
const T1_MRTD: &str = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";

#[test]
fn virtee_milan_v2_report_is_accepted() {
    let (e, c) = s1();
    let a = appraise(&e, &c, &Policy::default(), SNP_NOW).unwrap();
    assert_eq!(a.reasons, vec![]);
    assert_eq!(a.verdict, Verdict::Accepted);
    assert_eq!(a.tee, Tee::Snp);
    let snp = a.claims.snp.unwrap();
    assert_eq!(snp.version, 2);
    assert_eq!(
        (
            snp.reported_tcb.bootloader,
            snp.reported_tcb.tee,
            snp.reported_tcb.snp,
            snp.reported_tcb.microcode
        ),
        (3, 0, 8, 115)
    );
}

#[test]
fn virtee_milan_is_accepted_with_only_the_vcek_thanks_to_builtin_roots() {
    let (e, _) = s1();
    let c = certs(&["snp/virtee-milan/vcek_milan.der"]);
    let a = appraise(&e, &c, &Policy::default(), SNP_NOW).unwrap();
    assert_eq!(a.reasons, vec![]);
}

#[test]
fn go_sev_guest_debug_report_verifies_but_is_rejected_as_debug() {
    let e = Evidence::decode(&read("snp/go-sev-guest-debug/attestation.bin")).unwrap();
    let c = certs(&[
        "snp/go-sev-guest-debug/vcek.testcer",
        "snp/go-sev-guest-debug/ask_ark_milan.pem",
    ]);
    let a = appraise(&e, &c, &Policy::default(), SNP_NOW).unwrap();
    assert_eq!(
        a.reasons,
        vec![Reason::DebugGuest],
        "only the debug rule fails"
    );
    let lenient = Policy {
        allow_debug: true,
        ..Policy::default()
    };
    let a = appraise(&e, &c, &lenient, SNP_NOW).unwrap();
    assert_eq!(a.verdict, Verdict::Accepted, "{:?}", a.reasons);
}

#[test]
fn dstack_milan_v3_report_is_accepted_with_pinned_measurement_and_report_data() {
    let (e, c) = s3();
    let mut rd = [0u8; 64];
    rd[..24].copy_from_slice(b"attest-test-fixture-2026");
    let policy = Policy {
        measurements: vec![Measurement::from_hex(S3_MEASUREMENT).unwrap()],
        report_data: Some(ReportData(rd)),
        ..Policy::default()
    };
    let a = appraise(&e, &c, &policy, SNP_NOW).unwrap();
    assert_eq!(a.reasons, vec![]);
    let snp = a.claims.snp.unwrap();
    assert_eq!(snp.version, 3);
    assert_eq!((snp.reported_tcb.snp, snp.current_tcb.snp), (23, 24));
}

#[test]
fn dstack_milan_v3_fails_a_reported_tcb_floor_of_snp_24() {
    let (e, c) = s3();
    let mut policy = Policy::default();
    policy.snp.min_tcb.set(TcbComponent::Snp, 24);
    let a = appraise(&e, &c, &policy, SNP_NOW).unwrap();
    assert_eq!(
        a.reasons,
        vec![Reason::TcbBelowMinimum {
            field: TcbField::Reported,
            component: TcbComponent::Snp,
            got: 23,
            min: 24
        }]
    );
}

#[test]
fn dstack_milan_v3_with_another_measurement_pinned_is_rejected() {
    let (e, c) = s3();
    let policy = Policy {
        measurements: vec![Measurement([0x11; 48])],
        ..Policy::default()
    };
    let a = appraise(&e, &c, &policy, SNP_NOW).unwrap();
    assert_eq!(
        a.reasons,
        vec![Reason::MeasurementNotAllowed {
            got: Measurement::from_hex(S3_MEASUREMENT).unwrap()
        }]
    );
}

#[test]
fn dcap_qvl_tdx_quote_is_up_to_date_inside_its_window() {
    let (e, c) = t1();
    let policy = Policy {
        measurements: vec![Measurement::from_hex(T1_MRTD).unwrap()],
        ..Policy::default()
    };
    let a = appraise(&e, &c, &policy, TDX_NOW).unwrap();
    assert_eq!(a.reasons, vec![]);
    let tdx = a.claims.tdx.unwrap();
    assert_eq!(tdx.tcb_status.as_deref(), Some("UpToDate"));
    assert_eq!(tdx.td_attributes, 0x1000_0000);
    assert_eq!(tdx.version, 4);
}

#[test]
fn dcap_qvl_tdx_quote_is_rejected_after_and_before_its_window() {
    let (e, c) = t1();
    // 2025-07-20T10:00:35Z: a day after nextUpdate.
    let a = appraise(&e, &c, &Policy::default(), UnixTime(1_753_005_635)).unwrap();
    assert!(
        matches!(&a.reasons[..], [Reason::QuoteInvalid { detail }] if detail.contains("expired")),
        "{:?}",
        a.reasons
    );
    // 2025-06-18T10:32:27Z: a day before issueDate.
    let a = appraise(&e, &c, &Policy::default(), UnixTime(1_750_242_747)).unwrap();
    assert!(
        matches!(&a.reasons[..], [Reason::QuoteInvalid { detail }] if detail.contains("future")),
        "{:?}",
        a.reasons
    );
}

#[test]
fn outdated_tdx_quote_has_no_matching_tcb_level() {
    let e = Evidence::decode(&read("tdx/dcap-qvl/tdx_quote_outdated")).unwrap();
    let c = Endorsements {
        certs: vec![],
        tdx_collateral: Some(
            parse_collateral(&read("tdx/dcap-qvl/tdx_quote_outdated_collateral.json")).unwrap(),
        ),
    };
    let a = appraise(&e, &c, &Policy::default(), TDX_OUTDATED_NOW).unwrap();
    assert_eq!(a.verdict, Verdict::Rejected);
    assert!(
        matches!(&a.reasons[..], [Reason::QuoteInvalid { detail }] if detail.contains("No matching TCB level")),
        "{:?}",
        a.reasons
    );
    assert_eq!(a.claims.tdx.unwrap().version, 5);
}

#[test]
fn cos_tdx_quote_parses_and_without_collateral_is_rejected_by_name() {
    let e = Evidence::decode(&read("tdx/go-tdx-guest-ccel/cos-113-tdx-quote.dat")).unwrap();
    let a = appraise(&e, &Endorsements::default(), &Policy::default(), TDX_NOW).unwrap();
    assert_eq!(a.reasons, vec![Reason::CollateralMissing]);
}

#[test]
fn turin_vcek_is_classified_and_its_extensions_read() {
    use conclave_attestation::snp::certs::{classify, load_certs, vek_extensions};
    let vcek = &load_certs(&read("snp/virtee-milan/vcek_turin.der")).unwrap()[0];
    assert_eq!(classify(vcek), CertRole::Vcek);
    let ext = vek_extensions(vcek).unwrap();
    assert!(ext.product.as_deref().unwrap_or("").starts_with("Turin"));
    assert!(ext.fmc.is_some(), "Turin VCEKs state an FMC SPL");
    let chain = load_certs(&read("snp/virtee-milan/cert_chain_turin")).unwrap();
    let roles: Vec<_> = chain.iter().map(classify).collect();
    assert_eq!(roles, vec![CertRole::Ask, CertRole::Ark]);
}
