//! Intel TDX: DCAP quotes (v4 and v5; TD 1.0, 1.5 and 1.5ex bodies) verified offline with the
//! pure-Rust `dcap-qvl` against Intel-signed collateral at a given `now`.
//!
//! dcap-qvl checks the PCK chain to the pinned Intel root, CRLs, TCB info and QE identity
//! (signatures and windows), the QE report and the quote signature, and matches the TCB level.
//! It returns statuses such as OutOfDate as success, so the policy decides; and we ask it to
//! leave the debug and service-TD attribute checks to us so each one is reported by name.

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::configs::RustCryptoConfig;
use dcap_qvl::quote::{Quote, Report, TDReport10};
use dcap_qvl::verify::QuoteVerifier;
use serde::Serialize;

use crate::reason::Reason;
use crate::types::{Measurement, ReportData, UnixTime};

/// Why quote bytes are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The quote does not decode.
    #[error("TDX quote does not decode: {0}")]
    Malformed(String),
    /// An SGX quote or another TEE type.
    #[error("quote is not a TDX quote (TEE type {tee_type:#x})")]
    NotTdx {
        /// The header's TEE type.
        tee_type: u32,
    },
    /// Collateral JSON that does not decode.
    #[error("TDX collateral is not QuoteCollateralV3 JSON: {0}")]
    BadCollateral(String),
}

/// TD_ATTRIBUTES bits (Intel TDX module ABI, TDINFO_STRUCT.ATTRIBUTES).
pub mod attr {
    /// TUD bit 0: DEBUG.
    pub const DEBUG: u64 = 1 << 0;
    /// TUD bits 6:4: profiling / tracing.
    pub const TUD_PROFILING: u64 = 0x70;
    /// SEC bit 17: SERVTD_EXT.
    pub const SERVTD_EXT: u64 = 1 << 17;
    /// SEC bit 28: SEPT_VE_DISABLE.
    pub const SEPT_VE_DISABLE: u64 = 1 << 28;
    /// SEC bit 29: MIGRATABLE.
    pub const MIGRATABLE: u64 = 1 << 29;
    /// Bits owned by a known feature (TUD 7:0, SEC 16, 17, 27-31, OTHER 62, 63).
    pub const KNOWN: u64 = 0xFF | (1 << 16) | (1 << 17) | (0x1F << 27) | (1 << 62) | (1 << 63);
}

/// What a TDX quote states, as the verifier reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TdxClaims {
    /// Quote version (4 or 5).
    pub version: u16,
    /// Body kind: `TD1.0`, `TD1.5` or `TD1.5ex`.
    pub body: &'static str,
    /// TD_ATTRIBUTES as a little-endian u64.
    pub td_attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// MRTD.
    pub mr_td: Measurement,
    /// MRCONFIGID.
    pub mr_config_id: Measurement,
    /// MROWNER.
    pub mr_owner: Measurement,
    /// MROWNERCONFIG.
    pub mr_owner_config: Measurement,
    /// RTMR0..3.
    pub rtmrs: [Measurement; 4],
    /// MR_SERVICETD (TD 1.5 bodies; zero otherwise).
    pub mr_service_td: Measurement,
    /// TEE_TCB_SVN in hex.
    pub tee_tcb_svn: String,
    /// REPORTDATA.
    #[serde(skip)]
    pub report_data: ReportData,
    /// TCB status from the collateral, when verification got that far.
    pub tcb_status: Option<String>,
    /// Advisory ids from the collateral.
    pub advisory_ids: Vec<String>,
}

/// A parsed TDX quote.
pub struct TdxQuote<'a> {
    raw: &'a [u8],
    version: u16,
    base: TDReport10,
    body: &'static str,
    mr_service_td: [u8; 48],
}

fn u64_le(b: [u8; 8]) -> u64 {
    u64::from_le_bytes(b)
}

impl<'a> TdxQuote<'a> {
    /// Decodes a quote; refuses SGX quotes.
    pub fn parse(raw: &'a [u8]) -> Result<Self, QuoteError> {
        let quote = Quote::parse(raw).map_err(|e| QuoteError::Malformed(format!("{e:#}")))?;
        if quote.header.tee_type != 0x81 {
            return Err(QuoteError::NotTdx {
                tee_type: quote.header.tee_type,
            });
        }
        let version = quote.header.version;
        let (base, body, mr_service_td) = match quote.report {
            Report::TD10(r) => (r, "TD1.0", [0u8; 48]),
            Report::TD15(r) => (r.base, "TD1.5", r.mr_service_td),
            Report::TD15Ex(r) => (r.base.base, "TD1.5ex", r.base.mr_service_td),
            Report::SgxEnclave(_) => {
                return Err(QuoteError::NotTdx {
                    tee_type: quote.header.tee_type,
                });
            }
        };
        Ok(TdxQuote {
            raw,
            version,
            base,
            body,
            mr_service_td,
        })
    }

    /// The claims before verification (no TCB status yet).
    pub fn claims(&self) -> TdxClaims {
        let b = &self.base;
        TdxClaims {
            version: self.version,
            body: self.body,
            td_attributes: u64_le(b.td_attributes),
            xfam: u64_le(b.xfam),
            mr_td: Measurement(b.mr_td),
            mr_config_id: Measurement(b.mr_config_id),
            mr_owner: Measurement(b.mr_owner),
            mr_owner_config: Measurement(b.mr_owner_config),
            rtmrs: [
                Measurement(b.rt_mr0),
                Measurement(b.rt_mr1),
                Measurement(b.rt_mr2),
                Measurement(b.rt_mr3),
            ],
            mr_service_td: Measurement(self.mr_service_td),
            tee_tcb_svn: hex::encode(b.tee_tcb_svn),
            report_data: ReportData(b.report_data),
            tcb_status: None,
            advisory_ids: Vec::new(),
        }
    }

    /// Runs dcap-qvl's verification at `now`. On success fills the TCB status and advisories
    /// into `claims`; on failure pushes the reason. Attribute failures that the policy checks
    /// by name are not repeated here.
    pub(crate) fn verify(
        &self,
        collateral: Option<&QuoteCollateralV3>,
        now: UnixTime,
        claims: &mut TdxClaims,
        reasons: &mut Vec<Reason>,
    ) {
        let Some(collateral) = collateral else {
            reasons.push(Reason::CollateralMissing);
            return;
        };
        // The PCK chain verified is always the quote's own (the one its canonical form and so
        // its hash cover), never a chain substituted by the collateral.
        let own_chain;
        let collateral = if collateral.pck_certificate_chain.is_some() {
            let mut c = collateral.clone();
            c.pck_certificate_chain = None;
            own_chain = c;
            &own_chain
        } else {
            collateral
        };
        let verifier = QuoteVerifier::new_prod()
            .with_config::<RustCryptoConfig>()
            .allow_debug(true)
            .allow_service_td(true);
        match verifier.verify(self.raw, collateral, now.0) {
            Ok(v) => {
                claims.tcb_status = Some(v.status);
                claims.advisory_ids = v.advisory_ids;
            }
            Err(e) => {
                let detail = format!("{e:#}");
                // These are the attribute checks dcap-qvl makes last, after every signature
                // has verified; the policy names them itself.
                const ATTRIBUTE_FAILURES: [&str; 3] = [
                    "TD migration is enabled",
                    "SEPT_VE_DISABLE is not enabled",
                    "Reserved bits in TD attributes are set",
                ];
                if !ATTRIBUTE_FAILURES.iter().any(|m| detail.contains(m)) {
                    reasons.push(Reason::QuoteInvalid { detail });
                }
            }
        }
    }
}

/// Parses QuoteCollateralV3 JSON (as dcap-qvl and PCCS clients write it).
pub fn parse_collateral(json: &[u8]) -> Result<QuoteCollateralV3, QuoteError> {
    serde_json::from_slice(json).map_err(|e| QuoteError::BadCollateral(e.to_string()))
}
