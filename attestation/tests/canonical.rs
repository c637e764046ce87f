//! One piece of evidence has one hash. Each real vector is re-encoded every way its format
//! leaves open (SNP reserved bytes, signature padding, high-s; TDX padding, trailing bytes,
//! certification-data sizes and PEM text, high-s in the quote, QE report and certificate
//! signatures; sim and bundle framing), and every re-encoding is either refused by name or has
//! the original's hash. Canonical forms appraise exactly as the originals.

mod common;

use common::*;
use conclave_attestation::canonical::{P256_ORDER, P384_ORDER, is_high_s, pem_chain_ders};
use conclave_attestation::reason::Reason;
use conclave_attestation::snp::report::REPORT_LEN;
use conclave_attestation::tdx::parse_collateral;
use conclave_attestation::*;
use der::asn1::{BitString, UintRef};
use der::{Decode, Encode};

/// `n - s`, big-endian, for `s < n` of `n`'s length.
fn negate(s: &[u8], n: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; n.len()];
    let mut borrow = 0i16;
    for i in (0..n.len()).rev() {
        let mut d = i16::from(n[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

fn sha256(b: &[u8]) -> EvidenceHash {
    use sha2::Digest;
    EvidenceHash(sha2::Sha256::digest(b).into())
}

// ---------------------------------------------------------------------------------------------
// SEV-SNP
// ---------------------------------------------------------------------------------------------

const S_AT: usize = 0x2E8;

struct SnpVector {
    name: &'static str,
    report: Vec<u8>,
    certs: Endorsements,
    policy: Policy,
    high_s: bool,
}

fn snp_vectors() -> Vec<SnpVector> {
    let mut s3_rd = [0u8; 64];
    s3_rd[..24].copy_from_slice(b"attest-test-fixture-2026");
    vec![
        SnpVector {
            name: "virtee-milan v2",
            report: milan_report_s1(),
            certs: certs(&[
                "snp/virtee-milan/vcek_milan.der",
                "snp/virtee-milan/cert_chain_milan",
            ]),
            policy: Policy::default(),
            high_s: false,
        },
        SnpVector {
            name: "go-sev-guest debug v2",
            report: read("snp/go-sev-guest-debug/attestation.bin"),
            certs: certs(&[
                "snp/go-sev-guest-debug/vcek.testcer",
                "snp/go-sev-guest-debug/ask_ark_milan.pem",
            ]),
            policy: Policy {
                allow_debug: true,
                ..Policy::default()
            },
            high_s: true,
        },
        SnpVector {
            name: "dstack-milan v3",
            report: read("snp/dstack-milan-v3/sev_snp_report_extracted.bin"),
            certs: certs(&[
                "snp/dstack-milan-v3/sev_snp_vcek.pem",
                "snp/dstack-milan-v3/sev_snp_ask.pem",
            ]),
            policy: Policy {
                report_data: Some(ReportData(s3_rd)),
                ..Policy::default()
            },
            high_s: true,
        },
    ]
}

fn snp_s_be(report: &[u8]) -> Vec<u8> {
    report[S_AT..S_AT + 48].iter().rev().copied().collect()
}

fn with_s(report: &[u8], s_be: &[u8]) -> Vec<u8> {
    let mut r = report.to_vec();
    for (i, b) in s_be.iter().rev().enumerate() {
        r[S_AT + i] = *b;
    }
    r
}

fn flip_snp_s(report: &[u8]) -> Vec<u8> {
    with_s(report, &negate(&snp_s_be(report), &P384_ORDER))
}

#[test]
fn real_snp_reports_are_canonical_up_to_s_and_amd_signs_high_s() {
    for v in snp_vectors() {
        assert_eq!(
            is_high_s(&snp_s_be(&v.report), &P384_ORDER),
            v.high_s,
            "{}: AMD firmware does not normalise s, so both halves occur",
            v.name
        );
        let e = Evidence::decode(&v.report).unwrap();
        let canonical = e.canonical_primary().unwrap();
        if v.high_s {
            assert_eq!(canonical, flip_snp_s(&v.report), "{}", v.name);
        } else {
            assert_eq!(canonical, v.report, "{}", v.name);
        }
        assert!(!is_high_s(&snp_s_be(&canonical), &P384_ORDER));
        assert_eq!(e.hash(), sha256(&canonical), "{}", v.name);
    }
}

#[test]
fn snp_s_flipped_to_n_minus_s_is_the_same_evidence_with_the_same_hash() {
    for v in snp_vectors() {
        let original = Evidence::decode(&v.report).unwrap();
        let flipped = Evidence::decode(&flip_snp_s(&v.report)).unwrap();
        assert_ne!(original.primary, flipped.primary);
        let a = appraise(&original, &v.certs, &v.policy, SNP_NOW).unwrap();
        assert_eq!(a.verdict, Verdict::Accepted, "{}: {:?}", v.name, a.reasons);
        let b = appraise(&flipped, &v.certs, &v.policy, SNP_NOW).unwrap();
        assert_eq!(a, b, "{}: the flipped signature still verifies", v.name);
        assert_eq!(original.hash(), flipped.hash(), "{}", v.name);
        assert_eq!(
            a.accepted().unwrap().evidence_hash(),
            b.accepted().unwrap().evidence_hash()
        );
        // And the canonical form appraises exactly as the original.
        let c = original.canonical().unwrap();
        assert_eq!(
            appraise(&c, &v.certs, &v.policy, SNP_NOW).unwrap(),
            a,
            "{}",
            v.name
        );
        assert_eq!(c.hash(), original.hash());
        assert_eq!(sha256(&c.primary), original.hash());
    }
}

#[test]
fn snp_reserved_bytes_are_refused_by_name() {
    for v in snp_vectors() {
        let version = u32::from_le_bytes(v.report[0..4].try_into().unwrap());
        for (start, end, field) in conclave_attestation::canonical::snp_reserved_ranges(version) {
            for offset in [start, end - 1] {
                let mut r = v.report.clone();
                r[offset] = 0x01;
                let e = Evidence::decode(&r).unwrap();
                let a = appraise(&e, &v.certs, &v.policy, SNP_NOW).unwrap();
                let named = Reason::ReservedNotZero {
                    field: field.into(),
                    offset: offset as u32,
                };
                assert_eq!(a.reasons.first(), Some(&named), "{} {offset:#x}", v.name);
                assert_eq!(a.verdict, Verdict::Rejected);
                if offset >= 0x2A0 {
                    // Unsigned: the signature still verifies, so the name is the only reason.
                    assert_eq!(a.reasons, vec![named], "{} {offset:#x}", v.name);
                }
                assert!(e.canonical().is_err());
            }
        }
    }
}

#[test]
fn snp_signature_padding_is_refused_by_name() {
    for v in snp_vectors() {
        for (offset, component) in [(0x2A0 + 48, "R"), (0x2A0 + 71, "R"), (0x2E8 + 48, "S")] {
            let mut r = v.report.clone();
            r[offset] = 0x80;
            let e = Evidence::decode(&r).unwrap();
            let a = appraise(&e, &v.certs, &v.policy, SNP_NOW).unwrap();
            assert_eq!(
                a.reasons.first(),
                Some(&Reason::SignaturePaddingNotZero {
                    component: format!("SEV-SNP report signature {component}")
                }),
                "{} {offset:#x}: {:?}",
                v.name,
                a.reasons
            );
            assert_eq!(a.verdict, Verdict::Rejected);
        }
    }
}

#[test]
fn snp_trailing_bytes_are_refused_and_bundles_share_the_bare_hash() {
    for v in snp_vectors() {
        let mut long = v.report.clone();
        long.push(0);
        assert_eq!(
            Evidence::decode(&long),
            Err(EvidenceError::Unrecognised {
                len: REPORT_LEN + 1
            })
        );
        let mut bundle = Evidence::snp(long).encode();
        assert!(matches!(
            Evidence::decode(&bundle),
            Err(EvidenceError::BadPrimary(_))
        ));
        bundle.truncate(0);

        let bare = Evidence::decode(&v.report).unwrap();
        let mut with_certs = bare.clone();
        with_certs.certs = vec![read(match v.name {
            "virtee-milan v2" => "snp/virtee-milan/vcek_milan.der",
            "go-sev-guest debug v2" => "snp/go-sev-guest-debug/vcek.testcer",
            _ => "snp/dstack-milan-v3/sev_snp_vcek.pem",
        })];
        let flipped = Evidence::snp(flip_snp_s(&v.report));
        for other in [
            Evidence::decode(&bare.encode()).unwrap(),
            Evidence::decode(&with_certs.encode()).unwrap(),
            Evidence::decode(&flipped.encode()).unwrap(),
        ] {
            assert_eq!(other.hash(), bare.hash(), "{}", v.name);
        }
        let mut trailing = with_certs.encode();
        trailing.push(0);
        assert_eq!(
            Evidence::decode(&trailing),
            Err(EvidenceError::TrailingBytes { extra: 1 })
        );
    }
}

// ---------------------------------------------------------------------------------------------
// TDX
// ---------------------------------------------------------------------------------------------

/// A quote cut at every length it declares, so each part can be re-encoded.
#[derive(Clone)]
struct Parts {
    /// Header, v5 body type and size, body: the signed bytes.
    signed: Vec<u8>,
    sig: Vec<u8>,
    key: Vec<u8>,
    cert_type: u16,
    qe_report: Vec<u8>,
    qe_sig: Vec<u8>,
    qe_auth: Vec<u8>,
    inner_type: u16,
    pem: Vec<u8>,
    /// Inside the QE certification data, after the PCK chain.
    after_pem: Vec<u8>,
    /// Inside the signature data, after the certification data.
    after_cert_data: Vec<u8>,
    /// After the quote.
    trailing: Vec<u8>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

impl Parts {
    fn split(q: &[u8]) -> Self {
        let body_end = match u16_at(q, 0) {
            4 => 48 + 584,
            5 => 54 + u32_at(q, 50),
            v => panic!("version {v}"),
        };
        let sig_len = u32_at(q, body_end);
        let a = body_end + 4;
        let auth = &q[a..a + sig_len];
        let cd_len = u32_at(auth, 130);
        let cd = &auth[134..134 + cd_len];
        let qa_len = u16_at(cd, 448) as usize;
        let i = 450 + qa_len;
        let pem_len = u32_at(cd, i + 2);
        Parts {
            signed: q[..body_end].to_vec(),
            sig: auth[..64].to_vec(),
            key: auth[64..128].to_vec(),
            cert_type: u16_at(auth, 128),
            qe_report: cd[..384].to_vec(),
            qe_sig: cd[384..448].to_vec(),
            qe_auth: cd[450..i].to_vec(),
            inner_type: u16_at(cd, i),
            pem: cd[i + 6..i + 6 + pem_len].to_vec(),
            after_pem: cd[i + 6 + pem_len..].to_vec(),
            after_cert_data: auth[134 + cd_len..].to_vec(),
            trailing: q[a + sig_len..].to_vec(),
        }
    }

    fn join(&self) -> Vec<u8> {
        let blob32 = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        let mut cd = self.qe_report.clone();
        cd.extend_from_slice(&self.qe_sig);
        cd.extend_from_slice(&(self.qe_auth.len() as u16).to_le_bytes());
        cd.extend_from_slice(&self.qe_auth);
        cd.extend_from_slice(&self.inner_type.to_le_bytes());
        blob32(&mut cd, &self.pem);
        cd.extend_from_slice(&self.after_pem);
        let mut auth = self.sig.clone();
        auth.extend_from_slice(&self.key);
        auth.extend_from_slice(&self.cert_type.to_le_bytes());
        blob32(&mut auth, &cd);
        auth.extend_from_slice(&self.after_cert_data);
        let mut q = self.signed.clone();
        blob32(&mut q, &auth);
        q.extend_from_slice(&self.trailing);
        q
    }

    fn ders(&self) -> Vec<Vec<u8>> {
        pem_chain_ders(&self.pem).unwrap()
    }

    fn set_ders(&mut self, ders: &[Vec<u8>], line_ending: der::pem::LineEnding) {
        self.pem = ders
            .iter()
            .flat_map(|d| {
                der::pem::encode_string("CERTIFICATE", line_ending, d)
                    .unwrap()
                    .into_bytes()
            })
            .collect();
    }
}

fn flip_raw_s(sig: &mut [u8]) {
    let s = negate(&sig[32..], &P256_ORDER);
    sig[32..].copy_from_slice(&s);
}

/// The certificate with its signature's s replaced by n - s.
fn flip_cert_s(der: &[u8]) -> Vec<u8> {
    let mut cert = x509_cert::Certificate::from_der(der).unwrap();
    let [r, s] = <[UintRef<'_>; 2]>::from_der(cert.signature.as_bytes().unwrap()).unwrap();
    let mut s32 = [0u8; 32];
    s32[32 - s.as_bytes().len()..].copy_from_slice(s.as_bytes());
    let flipped = negate(&s32, &P256_ORDER);
    let sig = [r, UintRef::new(&flipped).unwrap()].to_der().unwrap();
    cert.signature = BitString::from_bytes(&sig).unwrap();
    cert.to_der().unwrap()
}

struct TdxVector {
    name: &'static str,
    quote: Vec<u8>,
    endorsements: Endorsements,
    now: UnixTime,
}

fn tdx_vectors() -> Vec<TdxVector> {
    let coll = |f: &str| Endorsements {
        certs: vec![],
        tdx_collateral: Some(parse_collateral(&read(f)).unwrap()),
    };
    vec![
        TdxVector {
            name: "dcap-qvl v4 (UpToDate)",
            quote: read("tdx/dcap-qvl/tdx_quote"),
            endorsements: coll("tdx/dcap-qvl/tdx_quote_collateral.json"),
            now: TDX_NOW,
        },
        TdxVector {
            name: "dcap-qvl v5 (no matching TCB level)",
            quote: read("tdx/dcap-qvl/tdx_quote_outdated"),
            endorsements: coll("tdx/dcap-qvl/tdx_quote_outdated_collateral.json"),
            now: TDX_OUTDATED_NOW,
        },
        TdxVector {
            name: "COS-113 v4 (no collateral)",
            quote: read("tdx/go-tdx-guest-ccel/cos-113-tdx-quote.dat"),
            endorsements: Endorsements::default(),
            now: TDX_NOW,
        },
    ]
}

fn appraise_tdx(v: &TdxVector, quote: &[u8]) -> Appraisal {
    let e = Evidence::decode(quote).unwrap();
    appraise(&e, &v.endorsements, &Policy::default(), v.now).unwrap()
}

/// The re-encoding has the original's hash and appraises exactly as the original.
fn assert_same_evidence(v: &TdxVector, what: &str, quote: &[u8]) {
    let original = appraise_tdx(v, &v.quote);
    let other = appraise_tdx(v, quote);
    assert_eq!(
        Evidence::tdx(quote.to_vec()).hash(),
        Evidence::tdx(v.quote.clone()).hash(),
        "{}: {what}",
        v.name
    );
    assert_eq!(other, original, "{}: {what}", v.name);
}

/// The re-encoding is refused with `reason` (listed first).
fn assert_refused(v: &TdxVector, what: &str, quote: &[u8], check: impl Fn(&Reason) -> bool) {
    let a = appraise_tdx(v, quote);
    assert_eq!(a.verdict, Verdict::Rejected, "{}: {what}", v.name);
    assert!(
        a.reasons.first().is_some_and(&check),
        "{}: {what}: {:?}",
        v.name,
        a.reasons
    );
    assert!(
        Evidence::tdx(quote.to_vec()).canonical().is_err(),
        "{}: {what}",
        v.name
    );
}

#[test]
fn real_tdx_quotes_keep_their_outcomes_and_their_canonical_forms_appraise_identically() {
    let mut high = Vec::new();
    for v in tdx_vectors() {
        let p = Parts::split(&v.quote);
        assert_eq!(
            p.join(),
            v.quote,
            "{}: the test's splitter round-trips",
            v.name
        );
        high.push((
            is_high_s(&p.sig[32..], &P256_ORDER),
            is_high_s(&p.qe_sig[32..], &P256_ORDER),
        ));
        let e = Evidence::decode(&v.quote).unwrap();
        let c = e.canonical().unwrap();
        assert_ne!(
            c.primary, v.quote,
            "{}: every real quote has a high s",
            v.name
        );
        assert_eq!(c.canonical().unwrap(), c, "{}: idempotent", v.name);
        assert_eq!(e.hash(), sha256(&c.primary));
        assert_same_evidence(&v, "canonical form", &c.primary);
        let cp = Parts::split(&c.primary);
        assert!(cp.trailing.is_empty() && !cp.pem.ends_with(b"\0"));
        assert!(!is_high_s(&cp.sig[32..], &P256_ORDER));
        assert!(!is_high_s(&cp.qe_sig[32..], &P256_ORDER));
    }
    // Intel's QE (quote signature) and PCE (QE report signature) do not normalise s.
    assert!(high.iter().any(|h| h.0) && high.iter().any(|h| !h.0));
    assert!(high.iter().any(|h| h.1) && high.iter().any(|h| !h.1));
    let a = appraise_tdx(&tdx_vectors()[0], &tdx_vectors()[0].quote);
    assert_eq!(a.verdict, Verdict::Accepted, "{:?}", a.reasons);
}

#[test]
fn tdx_signatures_flipped_to_high_or_low_s_are_the_same_evidence() {
    for v in tdx_vectors() {
        let mut p = Parts::split(&v.quote);
        flip_raw_s(&mut p.sig);
        assert_same_evidence(&v, "quote signature s flipped", &p.join());
        let mut p = Parts::split(&v.quote);
        flip_raw_s(&mut p.qe_sig);
        assert_same_evidence(&v, "QE report signature s flipped", &p.join());
        for i in 0..2 {
            let mut p = Parts::split(&v.quote);
            let mut ders = p.ders();
            ders[i] = flip_cert_s(&ders[i]);
            p.set_ders(&ders, der::pem::LineEnding::LF);
            assert_same_evidence(
                &v,
                &format!("certificate {i} signature s flipped"),
                &p.join(),
            );
        }
    }
}

#[test]
fn tdx_zero_padding_and_the_pem_nul_terminator_do_not_change_the_hash() {
    for v in tdx_vectors() {
        let mut p = Parts::split(&v.quote);
        p.trailing.clear();
        assert_same_evidence(&v, "padding removed", &p.join());
        p.trailing = vec![0; 1000];
        assert_same_evidence(&v, "1000 bytes of zero padding", &p.join());
        let mut p = Parts::split(&v.quote);
        if p.pem.ends_with(b"\0") {
            p.pem.pop();
            assert_same_evidence(&v, "NUL terminator removed", &p.join());
        } else {
            p.pem.push(0);
            assert_same_evidence(&v, "NUL terminator added", &p.join());
        }
    }
}

#[test]
fn tdx_pem_text_variants_have_one_hash() {
    // dcap-qvl reads CRLF PEM as well as LF: the same chain, so the same evidence and hash.
    for v in tdx_vectors() {
        let mut p = Parts::split(&v.quote);
        let ders = p.ders();
        p.set_ders(&ders, der::pem::LineEnding::CRLF);
        assert_same_evidence(&v, "PCK chain with CRLF line ends", &p.join());
        p.pem.push(0);
        assert_same_evidence(&v, "CRLF and a NUL terminator", &p.join());
    }
}

#[test]
fn tdx_bytes_beyond_declared_sizes_are_refused_by_name() {
    let trailing = |after: &'static str| move |r: &Reason| matches!(r, Reason::TrailingBytes { after: a, .. } if a.contains(after));
    for v in tdx_vectors() {
        let base = Parts::split(&v.quote);

        let mut p = base.clone();
        p.trailing = vec![0, 0, 1];
        assert_refused(
            &v,
            "nonzero byte after the quote",
            &p.join(),
            trailing("the TDX quote's signature data"),
        );

        let mut p = base.clone();
        p.after_cert_data = vec![0];
        assert_refused(
            &v,
            "byte after the certification data",
            &p.join(),
            trailing("the certification data"),
        );

        let mut p = base.clone();
        p.after_pem = vec![0, 0];
        assert_refused(
            &v,
            "bytes after the PCK chain",
            &p.join(),
            trailing("the PCK certificate chain"),
        );

        let not_canonical = |r: &Reason| matches!(r, Reason::CertificationDataNotCanonical { .. });
        let mut p = base.clone();
        p.pem.extend_from_slice(b"\0\0");
        assert_refused(&v, "two NULs after the PEM", &p.join(), not_canonical);

        let mut p = base.clone();
        p.pem.insert(0, b'\n');
        assert_refused(&v, "text before the PEM", &p.join(), not_canonical);

        for gap in [&b"\n"[..], b" ", b"\0"] {
            let mut p = base.clone();
            let end = b"-----END CERTIFICATE-----\n";
            let at = p.pem.windows(end.len()).position(|w| w == end).unwrap() + end.len();
            p.pem.splice(at..at, gap.iter().copied());
            assert_refused(&v, "bytes between certificates", &p.join(), not_canonical);
        }

        let mut p = base.clone();
        let mut ders = p.ders();
        ders.push(ders[2].clone());
        p.set_ders(&ders, der::pem::LineEnding::LF);
        assert_refused(&v, "a fourth certificate", &p.join(), not_canonical);

        let mut p = base.clone();
        let ders = p.ders();
        p.set_ders(&ders[..2], der::pem::LineEnding::LF);
        assert_refused(&v, "the root left out", &p.join(), not_canonical);

        let mut p = base.clone();
        let mut ders = p.ders();
        ders[2] = flip_cert_s(&ders[2]);
        p.set_ders(&ders, der::pem::LineEnding::LF);
        assert_refused(&v, "a root other than Intel's", &p.join(), not_canonical);

        let mut p = base.clone();
        p.inner_type = 3;
        assert_refused(
            &v,
            "inner certification data type 3",
            &p.join(),
            not_canonical,
        );

        let mut p = base.clone();
        p.cert_type = 5;
        assert_refused(&v, "outer certification data type 5", &p.join(), |r| {
            matches!(r, Reason::EncodingNotCanonical { .. })
        });
    }
}

#[test]
fn tdx_pck_chain_from_the_collateral_does_not_replace_the_quotes_own() {
    // The quote's own chain is what its hash covers, so it is the one verified.
    let v = &tdx_vectors()[0];
    let mut e = v.endorsements.clone();
    let chain = Parts::split(&v.quote).pem;
    e.tdx_collateral.as_mut().unwrap().pck_certificate_chain =
        Some(String::from_utf8_lossy(&chain[..chain.len() - 1]).into_owned());
    let ev = Evidence::decode(&v.quote).unwrap();
    let a = appraise(&ev, &e, &Policy::default(), v.now).unwrap();
    assert_eq!(a, appraise_tdx(v, &v.quote));
}

// ---------------------------------------------------------------------------------------------
// Sim
// ---------------------------------------------------------------------------------------------

fn allow_sim() -> Policy {
    Policy {
        allow_sim: true,
        ..Policy::default()
    }
}

#[test]
fn sim_reports_are_signed_low_s_and_a_high_s_one_is_refused_by_name() {
    let sim = SimAttester::from_seed(&[9; 32], SimConfig::default()).unwrap();
    for i in 0u8..16 {
        let e = sim.evidence(&ReportData([i; 64]));
        assert!(!is_high_s(&snp_s_be(&e.primary), &P384_ORDER), "report {i}");
        assert_eq!(e.canonical_primary().unwrap(), e.primary);
        assert_eq!(e.hash(), sha256(&e.primary));
        let a = appraise(&e, &Endorsements::default(), &allow_sim(), SNP_NOW).unwrap();
        assert_eq!(a.verdict, Verdict::Accepted, "{:?}", a.reasons);

        let mut flipped = e.clone();
        flipped.primary = flip_snp_s(&e.primary);
        let a = appraise(&flipped, &Endorsements::default(), &allow_sim(), SNP_NOW).unwrap();
        assert_eq!(
            a.reasons,
            vec![Reason::SignatureNotLowS {
                signature: "sim report".into()
            }],
            "the high-s signature verifies; only its form is refused"
        );
        assert_ne!(flipped.hash(), e.hash());
        assert!(a.accepted().is_none());
    }
}

#[test]
fn sim_reserved_bytes_are_refused_and_bundle_framing_keeps_the_hash() {
    let sim = SimAttester::from_seed(&[9; 32], SimConfig::default()).unwrap();
    let e = sim.evidence(&ReportData([1; 64]));
    let mut bad = e.clone();
    bad.primary[0x400] = 1;
    let a = appraise(&bad, &Endorsements::default(), &allow_sim(), SNP_NOW).unwrap();
    assert_eq!(
        a.reasons,
        vec![Reason::ReservedNotZero {
            field: "0x330..0x4A0 (in SIGNATURE, after S)".into(),
            offset: 0x400
        }]
    );
    // Certificates in another order or left out do not change the evidence's identity.
    let mut reordered = e.clone();
    reordered.certs.reverse();
    let mut bare = e.clone();
    bare.certs.clear();
    for other in [&reordered, &bare] {
        let wire = Evidence::decode(&other.encode()).unwrap();
        assert_eq!(wire.hash(), e.hash());
    }
    let a = appraise(&reordered, &Endorsements::default(), &allow_sim(), SNP_NOW).unwrap();
    assert_eq!(a.evidence_hash, e.hash());
    assert_eq!(a.verdict, Verdict::Accepted, "{:?}", a.reasons);
}

#[test]
fn bundle_framing_is_strict() {
    let sim = SimAttester::from_seed(&[9; 32], SimConfig::default()).unwrap();
    let wire = sim.evidence(&ReportData([1; 64])).encode();
    let mut unknown_kind = wire.clone();
    unknown_kind[8] = 4;
    assert_eq!(
        Evidence::decode(&unknown_kind),
        Err(EvidenceError::UnknownKind { kind: 4 })
    );
    for extra in [&[0u8][..], b"{}", &[0, 0, 0, 0]] {
        let mut w = wire.clone();
        w.extend_from_slice(extra);
        assert_eq!(
            Evidence::decode(&w),
            Err(EvidenceError::TrailingBytes { extra: extra.len() })
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Any input: canonicalising is panic-free and idempotent
// ---------------------------------------------------------------------------------------------

mod mutated {
    use super::*;
    use proptest::prelude::*;

    fn mutate(mut b: Vec<u8>, edits: &[(u16, u8, u8)]) -> Vec<u8> {
        for &(pos, byte, kind) in edits {
            let pos = pos as usize % (b.len() + 1);
            match kind {
                0 if pos < b.len() => b[pos] = byte,
                1 => b.insert(pos, byte),
                2 if pos < b.len() => {
                    b.remove(pos);
                }
                3 => b.truncate(pos),
                _ => {}
            }
        }
        b
    }

    fn check(e: &Evidence) -> Result<(), TestCaseError> {
        let h = e.hash();
        if let Ok(c) = e.canonical() {
            let again = c.canonical().ok();
            prop_assert_eq!(again.as_ref(), Some(&c), "idempotent");
            prop_assert_eq!(c.hash(), h);
            prop_assert_eq!(sha256(&c.primary), h);
        } else {
            prop_assert_eq!(h, sha256(&e.primary));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn mutated_real_quotes(which in 0usize..3, edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 1..5)) {
            let files = [
                "tdx/dcap-qvl/tdx_quote",
                "tdx/dcap-qvl/tdx_quote_outdated",
                "tdx/go-tdx-guest-ccel/cos-113-tdx-quote.dat",
            ];
            let q = mutate(read(files[which]), &edits);
            check(&Evidence::tdx(q.clone()))?;
            if let Ok(e) = Evidence::decode(&q) {
                let _ = appraise(&e, &Endorsements::default(), &Policy::default(), TDX_NOW);
            }
        }

        #[test]
        fn mutated_real_reports(which in 0usize..3, edits in proptest::collection::vec((0u16..REPORT_LEN as u16, any::<u8>()), 1..5), sim in any::<bool>()) {
            let mut r = snp_vectors().swap_remove(which).report;
            for (pos, byte) in edits {
                r[pos as usize] = byte;
            }
            let mut e = Evidence::snp(r);
            if sim {
                e.tee = Tee::Sim;
            }
            check(&e)?;
        }
    }
}
