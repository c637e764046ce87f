//! SEV-SNP: the report format, its certificate chain, and the authenticity checks that show a
//! report came from a genuine AMD secure processor (or, for `sim`, from the sim root it names).

pub mod certs;
pub mod report;

use sev::certs::snp::{Certificate as SevCert, Chain, Verifiable, builtin, ca};
use x509_cert::Certificate;

use crate::reason::Reason;
use crate::types::UnixTime;
use certs::{CertRole, classify, p384_key, validity, vek_extensions, verify_p384_issued};
use report::{Generation, SigningKey, SnpReport, TcbComponent};

/// Which root the chain must end in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Root {
    /// AMD's ARK for the product, built into the verifier.
    Amd,
    /// The self-signed P-384 root carried by sim evidence.
    Sim,
}

/// The certificates sorted by role.
#[derive(Default)]
struct Roles {
    ark: Option<Certificate>,
    signer: Option<(CertRole, Certificate)>,
    vek: Option<(CertRole, Certificate)>,
}

fn sort_roles(certs: &[Certificate]) -> Roles {
    let mut roles = Roles::default();
    for c in certs {
        match classify(c) {
            CertRole::Ark => roles.ark = Some(c.clone()),
            r @ (CertRole::Ask | CertRole::Asvk) => roles.signer = Some((r, c.clone())),
            r @ (CertRole::Vcek | CertRole::Vlek) => roles.vek = Some((r, c.clone())),
        }
    }
    roles
}

fn product_from_name(name: &str) -> Generation {
    match name.split('-').next().unwrap_or_default() {
        "Milan" => Generation::Milan,
        "Genoa" => Generation::Genoa,
        "Turin" => Generation::Turin,
        _ => Generation::Unknown,
    }
}

fn builtin_ca(g: Generation) -> Option<(SevCert, SevCert)> {
    let pair = match g {
        Generation::Milan => (builtin::milan::ark(), builtin::milan::ask()),
        Generation::Genoa => (builtin::genoa::ark(), builtin::genoa::ask()),
        Generation::Turin => (builtin::turin::ark(), builtin::turin::ask()),
        Generation::Unknown => return None,
    };
    Some((pair.0.ok()?, pair.1.ok()?))
}

fn der_eq(a: &SevCert, b: &Certificate) -> bool {
    use der::Encode;
    match (a.to_der(), b.to_der()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Verifies the chain to the root, each certificate's validity at `now`, the report signature
/// over the raw signed bytes, and that the VCEK/VLEK extensions match the report. Pushes every
/// failure onto `reasons`. May fix the report's generation from the VCEK's productName.
pub(crate) fn check_authenticity(
    report: &mut SnpReport,
    certs: &[Certificate],
    root: Root,
    now: UnixTime,
    reasons: &mut Vec<Reason>,
) {
    let roles = sort_roles(certs);
    let Some((vek_role, vek)) = roles.vek.clone() else {
        let role = match report.signing_key {
            SigningKey::Vlek => CertRole::Vlek,
            _ => CertRole::Vcek,
        };
        reasons.push(Reason::CertificateMissing { role });
        return;
    };
    let ext = match vek_extensions(&vek) {
        Ok(ext) => ext,
        Err(e) => {
            reasons.push(Reason::CertificateUnusable {
                role: vek_role,
                detail: e.to_string(),
            });
            return;
        }
    };
    if let Some(product) = ext.product.as_deref() {
        report.assume_generation(product_from_name(product));
    }

    // 1. The chain.
    let mut chain: Vec<(CertRole, Certificate)> = Vec::new();
    match root {
        Root::Amd => check_amd_chain(report, &roles, vek_role, &vek, &mut chain, reasons),
        Root::Sim => check_sim_chain(&roles, &vek, &mut chain, reasons),
    }
    chain.push((vek_role, vek.clone()));

    // 2. Validity at `now` of every certificate used.
    for (role, cert) in &chain {
        let (not_before, not_after) = validity(cert);
        if now < not_before {
            reasons.push(Reason::CertificateNotYetValid {
                role: *role,
                not_before,
                now,
            });
        }
        if now > not_after {
            reasons.push(Reason::CertificateExpired {
                role: *role,
                not_after,
                now,
            });
        }
    }

    // 3. The report signature, over the raw bytes 0x000..0x2A0.
    let sig_ok = match (p384_key(&vek), report.signature()) {
        (Ok(key), Some(sig)) => {
            use p384::ecdsa::signature::Verifier;
            key.verify(report.signed_bytes(), &sig).is_ok()
        }
        (Err(e), _) => {
            reasons.push(Reason::CertificateUnusable {
                role: vek_role,
                detail: e.to_string(),
            });
            true
        }
        (Ok(_), None) => false,
    };
    if !sig_ok {
        reasons.push(Reason::ReportSignatureInvalid { role: vek_role });
    }
    let expected_key = match vek_role {
        CertRole::Vlek => SigningKey::Vlek,
        _ => SigningKey::Vcek,
    };
    if report.signing_key != expected_key {
        reasons.push(Reason::SigningKeyMismatch {
            report: format!("{:?}", report.signing_key),
            cert: vek_role,
        });
    }

    // 4. The key's TCB and chip must be the report's (a VCEK for another TCB or chip proves
    //    nothing about this report's reported_tcb).
    let tcb = report.reported_tcb;
    let pairs = [
        (
            TcbComponent::Bootloader,
            ext.bootloader,
            Some(tcb.bootloader),
        ),
        (TcbComponent::Tee, ext.tee, Some(tcb.tee)),
        (TcbComponent::Snp, ext.snp, Some(tcb.snp)),
        (TcbComponent::Microcode, ext.microcode, Some(tcb.microcode)),
        (TcbComponent::Fmc, ext.fmc, tcb.fmc),
    ];
    for (component, cert, rep) in pairs {
        match (cert, rep) {
            (Some(c), Some(r)) if c != r => reasons.push(Reason::CertificateTcbMismatch {
                role: vek_role,
                component,
                cert: c,
                report: r,
            }),
            (None, Some(_)) => reasons.push(Reason::CertificateTcbMissing {
                role: vek_role,
                component,
            }),
            _ => {}
        }
    }
    if vek_role == CertRole::Vcek && !report.chip_id_masked() {
        let ok = match ext.hw_id.as_deref() {
            Some(hw) if hw.len() <= 64 => {
                report.chip_id[..hw.len()] == *hw
                    && report.chip_id[hw.len()..].iter().all(|&b| b == 0)
            }
            _ => false,
        };
        if !ok {
            reasons.push(Reason::ChipIdMismatch {
                cert: ext.hw_id.as_deref().map(hex::encode).unwrap_or_default(),
                report: hex::encode(report.chip_id),
            });
        }
    }
}

fn check_amd_chain(
    report: &SnpReport,
    roles: &Roles,
    vek_role: CertRole,
    vek: &Certificate,
    chain: &mut Vec<(CertRole, Certificate)>,
    reasons: &mut Vec<Reason>,
) {
    let vek_sev = SevCert::from(vek.clone());
    let candidates: Vec<Generation> = match report.generation {
        Generation::Unknown => vec![Generation::Milan, Generation::Genoa, Generation::Turin],
        g => vec![g],
    };
    let mut last_err = String::from("no AMD product root fits");
    for g in candidates {
        let Some((ark, builtin_ask)) = builtin_ca(g) else {
            continue;
        };
        if let Some(given) = &roles.ark
            && !der_eq(&ark, given)
        {
            reasons.push(Reason::ArkNotTrusted {
                product: g.name().into(),
            });
            return;
        }
        let (signer_role, signer) = match (&roles.signer, vek_role) {
            (Some((r, c)), _) => (*r, SevCert::from(c.clone())),
            (None, CertRole::Vlek) => {
                reasons.push(Reason::CertificateMissing {
                    role: CertRole::Asvk,
                });
                return;
            }
            (None, _) => (CertRole::Ask, builtin_ask),
        };
        let full = Chain {
            ca: ca::Chain {
                ark: ark.clone(),
                ask: signer.clone(),
            },
            vek: vek_sev.clone(),
        };
        match (&full).verify() {
            Ok(_) => {
                chain.push((CertRole::Ark, ark.into()));
                chain.push((signer_role, signer.into()));
                return;
            }
            Err(e) => last_err = format!("{} chain: {e}", g.name()),
        }
    }
    reasons.push(Reason::ChainInvalid { detail: last_err });
}

fn check_sim_chain(
    roles: &Roles,
    vek: &Certificate,
    chain: &mut Vec<(CertRole, Certificate)>,
    reasons: &mut Vec<Reason>,
) {
    let Some(ark) = &roles.ark else {
        reasons.push(Reason::CertificateMissing {
            role: CertRole::Ark,
        });
        return;
    };
    let Some((signer_role, signer)) = &roles.signer else {
        reasons.push(Reason::CertificateMissing {
            role: CertRole::Ask,
        });
        return;
    };
    let links = [
        ("ARK self-signature", ark, ark),
        ("ARK signs ASK", ark, signer),
        ("ASK signs VCEK", signer, vek),
    ];
    for (what, issuer, subject) in links {
        if let Err(e) = verify_p384_issued(issuer, subject) {
            reasons.push(Reason::ChainInvalid {
                detail: format!("sim chain, {what}: {e}"),
            });
            return;
        }
    }
    chain.push((CertRole::Ark, ark.clone()));
    chain.push((*signer_role, signer.clone()));
}
