//! Appraisal: authenticity (chain, signatures, collateral at `now`) plus the policy, over one
//! piece of evidence. Every check runs and every failure is reported; the verdict is `accepted`
//! only when there are none.

use serde::Serialize;
use x509_cert::Certificate;

use crate::evidence::{Evidence, hash_of};
use crate::policy::Policy;
use crate::reason::{Reason, TcbField};
use crate::snp::report::{Generation, SigningKey, SnpReport, TcbVersion};
use crate::snp::{self, Root, certs::load_certs};
use crate::tdx::{QuoteError, TdxClaims, TdxQuote, attr, parse_collateral};
use crate::types::{EvidenceHash, HostData, Measurement, ReportData, Tee, UnixTime};

/// Certificates and collateral supplied beside the evidence (for example fetched from AMD KDS
/// or a PCCS ahead of time). Certificates inside an evidence bundle are used too.
#[derive(Clone, Debug, Default)]
pub struct Endorsements {
    /// X.509 certificates: VCEK/VLEK, ASK/ASVK, ARK, in any order.
    pub certs: Vec<Certificate>,
    /// TDX collateral.
    pub tdx_collateral: Option<dcap_qvl::QuoteCollateralV3>,
}

/// Evidence that cannot be appraised at all (as opposed to evidence that is rejected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppraisalError {
    /// The SNP or sim report is malformed.
    #[error(transparent)]
    Report(#[from] crate::snp::report::ReportError),
    /// The TDX quote or its collateral is malformed.
    #[error(transparent)]
    Quote(#[from] QuoteError),
    /// A bundled certificate is malformed.
    #[error("a certificate in the evidence bundle is unusable: {0}")]
    Cert(#[from] crate::snp::certs::CertError),
}

/// Accepted or rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check passed.
    Accepted,
    /// At least one reason.
    Rejected,
}

/// SEV-SNP specifics of an appraisal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnpClaims {
    /// Report version.
    pub version: u32,
    /// Product line.
    pub generation: Generation,
    /// POLICY word.
    pub policy: u64,
    /// VMPL of the request.
    pub vmpl: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// HOST_DATA.
    pub host_data: HostData,
    /// Which key signed.
    pub signing_key: SigningKey,
    /// CHIP_ID in hex (all zeros when masked).
    pub chip_id: String,
    /// REPORTED_TCB.
    pub reported_tcb: TcbVersion,
    /// CURRENT_TCB.
    pub current_tcb: TcbVersion,
    /// COMMITTED_TCB.
    pub committed_tcb: TcbVersion,
    /// LAUNCH_TCB.
    pub launch_tcb: TcbVersion,
}

/// What the evidence states (claims are reported whatever the verdict; trust them only when
/// accepted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// SNP MEASUREMENT, or TDX MRTD.
    pub measurement: Measurement,
    /// REPORT_DATA / REPORTDATA.
    pub report_data: ReportData,
    /// Whether the guest is debuggable.
    pub debug: bool,
    /// SEV-SNP and sim details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snp: Option<SnpClaims>,
    /// TDX details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxClaims>,
}

/// The outcome of appraising one piece of evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Appraisal {
    /// Accepted or rejected.
    pub verdict: Verdict,
    /// The TEE the evidence is from (`sim` is always labelled).
    pub tee: Tee,
    /// The evidence's identity: SHA-256 of the canonical encoding of the report or quote
    /// ([`Evidence::hash`]).
    pub evidence_hash: EvidenceHash,
    /// What the evidence states.
    pub claims: Claims,
    /// Every reason for rejection; empty when accepted.
    pub reasons: Vec<Reason>,
}

/// Proof that a piece of evidence was appraised and accepted: only [`Appraisal::accepted`]
/// makes one. Envelope verification demands it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedEvidence {
    tee: Tee,
    evidence_hash: EvidenceHash,
    measurement: Measurement,
    report_data: ReportData,
}

impl AcceptedEvidence {
    /// The TEE.
    pub fn tee(&self) -> Tee {
        self.tee
    }
    /// The evidence's identity ([`Evidence::hash`]).
    pub fn evidence_hash(&self) -> EvidenceHash {
        self.evidence_hash
    }
    /// SNP MEASUREMENT / TDX MRTD.
    pub fn measurement(&self) -> Measurement {
        self.measurement
    }
    /// The report data the hardware signed.
    pub fn report_data(&self) -> ReportData {
        self.report_data
    }
}

impl Appraisal {
    /// The accepted evidence, or `None` when rejected.
    pub fn accepted(&self) -> Option<AcceptedEvidence> {
        (self.verdict == Verdict::Accepted).then_some(AcceptedEvidence {
            tee: self.tee,
            evidence_hash: self.evidence_hash,
            measurement: self.claims.measurement,
            report_data: self.claims.report_data,
        })
    }
}

/// Appraises `evidence` under `policy` at `now`. Pure: no clock, file or network access.
///
/// Returns `Err` only when the evidence cannot be read; a readable but unacceptable piece of
/// evidence gives `Ok` with [`Verdict::Rejected`] and all its reasons.
pub fn appraise(
    evidence: &Evidence,
    endorsements: &Endorsements,
    policy: &Policy,
    now: UnixTime,
) -> Result<Appraisal, AppraisalError> {
    let mut reasons = Vec::new();
    let claims = match evidence.tee {
        Tee::Snp | Tee::Sim => {
            let mut report = SnpReport::parse(&evidence.primary)?;
            let mut certs = Vec::new();
            for der in &evidence.certs {
                certs.extend(load_certs(der)?);
            }
            certs.extend(endorsements.certs.iter().cloned());
            let root = if evidence.tee == Tee::Sim {
                Root::Sim
            } else {
                Root::Amd
            };
            snp::check_authenticity(&mut report, &certs, root, now, &mut reasons);
            if evidence.tee == Tee::Sim && !policy.allow_sim {
                reasons.push(Reason::SimNotAllowed);
            }
            snp_policy(&report, policy, &mut reasons);
            Claims {
                measurement: report.measurement,
                report_data: report.report_data,
                debug: report.policy.debug_allowed(),
                snp: Some(SnpClaims {
                    version: report.version,
                    generation: report.generation,
                    policy: report.policy.0,
                    vmpl: report.vmpl,
                    guest_svn: report.guest_svn,
                    host_data: report.host_data,
                    signing_key: report.signing_key,
                    chip_id: hex::encode(report.chip_id),
                    reported_tcb: report.reported_tcb,
                    current_tcb: report.current_tcb,
                    committed_tcb: report.committed_tcb,
                    launch_tcb: report.launch_tcb,
                }),
                tdx: None,
            }
        }
        Tee::Tdx => {
            let quote = TdxQuote::parse(&evidence.primary)?;
            let bundled = match &evidence.collateral {
                Some(json) => Some(parse_collateral(json)?),
                None => None,
            };
            let collateral = endorsements.tdx_collateral.as_ref().or(bundled.as_ref());
            let mut tdx = quote.claims();
            quote.verify(collateral, now, &mut tdx, &mut reasons);
            tdx_policy(&tdx, policy, &mut reasons);
            Claims {
                measurement: tdx.mr_td,
                report_data: tdx.report_data,
                debug: tdx.td_attributes & attr::DEBUG != 0,
                snp: None,
                tdx: Some(tdx),
            }
        }
    };
    // One piece of evidence, one encoding: what cannot be made canonical is refused (its
    // reasons come first), and the hash is taken over the canonical form.
    let evidence_hash = match evidence.canonical_primary() {
        Ok(canonical) => hash_of(&canonical),
        Err(refused) => {
            reasons.splice(0..0, refused);
            hash_of(&evidence.primary)
        }
    };
    common_policy(&claims, policy, &mut reasons);
    Ok(Appraisal {
        verdict: if reasons.is_empty() {
            Verdict::Accepted
        } else {
            Verdict::Rejected
        },
        tee: evidence.tee,
        evidence_hash,
        claims,
        reasons,
    })
}

fn common_policy(claims: &Claims, policy: &Policy, reasons: &mut Vec<Reason>) {
    if !policy.measurements.is_empty() && !policy.measurements.contains(&claims.measurement) {
        reasons.push(Reason::MeasurementNotAllowed {
            got: claims.measurement,
        });
    }
    if let Some(expected) = policy.report_data
        && expected != claims.report_data
    {
        reasons.push(Reason::ReportDataMismatch {
            expected,
            got: claims.report_data,
        });
    }
}

fn snp_policy(report: &SnpReport, policy: &Policy, reasons: &mut Vec<Reason>) {
    if report.policy.debug_allowed() && !policy.allow_debug {
        reasons.push(Reason::DebugGuest);
    }
    if report.vmpl > policy.max_vmpl {
        reasons.push(Reason::VmplTooHigh {
            vmpl: report.vmpl,
            max: policy.max_vmpl,
        });
    }
    if report.policy.migrate_ma_allowed() && !policy.allow_migration {
        reasons.push(Reason::MigratableGuest);
    }
    let floors = [
        (
            TcbField::Reported,
            &report.reported_tcb,
            &policy.snp.min_tcb,
        ),
        (
            TcbField::Committed,
            &report.committed_tcb,
            &policy.snp.min_tcb,
        ),
        (TcbField::Current, &report.current_tcb, &policy.snp.min_tcb),
        (
            TcbField::Launch,
            &report.launch_tcb,
            &policy.snp.min_launch_tcb,
        ),
    ];
    for (field, tcb, min) in floors {
        for (component, got, min) in min.shortfalls(tcb) {
            reasons.push(Reason::TcbBelowMinimum {
                field,
                component,
                got,
                min,
            });
        }
    }
    if let Some(min) = policy.snp.min_guest_svn
        && report.guest_svn < min
    {
        reasons.push(Reason::GuestSvnBelowMinimum {
            got: report.guest_svn,
            min,
        });
    }
    if let Some(expected) = policy.snp.host_data
        && expected != report.host_data
    {
        reasons.push(Reason::HostDataMismatch {
            expected,
            got: report.host_data,
        });
    }
}

fn tdx_policy(tdx: &TdxClaims, policy: &Policy, reasons: &mut Vec<Reason>) {
    let a = tdx.td_attributes;
    if a & attr::DEBUG != 0 && !policy.allow_debug {
        reasons.push(Reason::DebugGuest);
    }
    if a & attr::TUD_PROFILING != 0 && !policy.allow_debug {
        reasons.push(Reason::TdProfiling { tud: a as u8 });
    }
    if a & !attr::KNOWN != 0 {
        reasons.push(Reason::TdReservedAttributes { attributes: a });
    }
    if a & attr::MIGRATABLE != 0 {
        // dcap-qvl refuses migratable TDs whatever the policy says; so do we.
        reasons.push(Reason::MigratableGuest);
    }
    if a & attr::SEPT_VE_DISABLE == 0 {
        // Likewise always refused by dcap-qvl.
        reasons.push(Reason::SeptVeNotDisabled);
    }
    let service_td = tdx.mr_service_td.0 != [0u8; 48] || a & attr::SERVTD_EXT != 0;
    if service_td && !policy.tdx.allow_service_td {
        reasons.push(Reason::ServiceTd {
            mr_service_td: tdx.mr_service_td.to_string(),
        });
    }
    for (index, value) in tdx.rtmrs.iter().enumerate() {
        let allowed = policy.tdx.rtmr(index);
        if !allowed.is_empty() && !allowed.contains(value) {
            reasons.push(Reason::RtmrNotAllowed {
                index: index as u8,
                got: *value,
            });
        }
    }
    if let Some(expected) = policy.tdx.mr_config_id
        && expected != tdx.mr_config_id
    {
        reasons.push(Reason::MrConfigIdMismatch {
            expected,
            got: tdx.mr_config_id,
        });
    }
    if let Some(status) = &tdx.tcb_status {
        if !policy.tdx.allowed_status.iter().any(|s| s == status) {
            reasons.push(Reason::TcbStatusNotAllowed {
                status: status.clone(),
                allowed: policy.tdx.allowed_status.join(", "),
            });
        }
        for id in &tdx.advisory_ids {
            if !policy.tdx.allowed_advisories.contains(id) {
                reasons.push(Reason::AdvisoryNotAllowed { id: id.clone() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(status: &str, advisories: &[&str]) -> TdxClaims {
        TdxClaims {
            version: 4,
            body: "TD1.0",
            td_attributes: attr::SEPT_VE_DISABLE,
            xfam: 0,
            mr_td: Measurement([0; 48]),
            mr_config_id: Measurement([0; 48]),
            mr_owner: Measurement([0; 48]),
            mr_owner_config: Measurement([0; 48]),
            rtmrs: [Measurement([0; 48]); 4],
            mr_service_td: Measurement([0; 48]),
            tee_tcb_svn: String::new(),
            report_data: ReportData([0; 64]),
            tcb_status: Some(status.into()),
            advisory_ids: advisories.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn non_up_to_date_tdx_status_is_rejected_by_default() {
        let mut reasons = Vec::new();
        tdx_policy(
            &claims("OutOfDate", &["INTEL-SA-00837"]),
            &Policy::default(),
            &mut reasons,
        );
        assert_eq!(
            reasons,
            vec![
                Reason::TcbStatusNotAllowed {
                    status: "OutOfDate".into(),
                    allowed: "UpToDate".into()
                },
                Reason::AdvisoryNotAllowed {
                    id: "INTEL-SA-00837".into()
                }
            ]
        );
    }

    #[test]
    fn allowlisted_status_and_advisory_pass() {
        let mut policy = Policy::default();
        policy.tdx.allowed_status.push("SWHardeningNeeded".into());
        policy.tdx.allowed_advisories.push("INTEL-SA-00615".into());
        let mut reasons = Vec::new();
        tdx_policy(
            &claims("SWHardeningNeeded", &["INTEL-SA-00615"]),
            &policy,
            &mut reasons,
        );
        assert_eq!(reasons, vec![]);
    }
}
