//! Intel TDX: RTMRs replayed from the boot event log ([`ccel`]) and compared with a quote.
//!
//! RTMR0..2 are what firmware and boot loader extend before the OS runs, so a CCEL replay
//! must reproduce them exactly. RTMR3 belongs to the running guest (dstack extends app ids and
//! compose hashes into it); the boot log does not cover it, so the comparison reports it but
//! does not decide on it, and policy fragments leave it unpinned.

pub mod ccel;

use conclave_attestation::Measurement;
use conclave_attestation::tdx::TdxQuote;

use crate::MeasureError;
use ccel::RtmrReplay;

/// RTMRs a boot log decides: RTMR0..2.
pub const BOOT_RTMRS: usize = 3;

/// One RTMR, replayed and quoted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtmrCheck {
    /// 0..=3.
    pub index: usize,
    /// From the event log.
    pub replayed: Measurement,
    /// From the quote.
    pub quoted: Measurement,
}

impl RtmrCheck {
    /// Whether the two agree.
    pub fn matches(&self) -> bool {
        self.replayed == self.quoted
    }
}

/// A replay set against a quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuoteComparison {
    /// The quote's MRTD (not covered by the log; reported for pinning).
    pub mr_td: Measurement,
    /// RTMR0..3.
    pub rtmrs: [RtmrCheck; 4],
}

impl QuoteComparison {
    /// Whether RTMR0..2 all agree.
    pub fn boot_rtmrs_match(&self) -> bool {
        self.rtmrs[..BOOT_RTMRS].iter().all(RtmrCheck::matches)
    }
}

/// Compares replayed RTMRs with those of a TDX quote (v4 or v5; the quote is parsed, not
/// verified: `conclave verify` does that).
pub fn compare_with_quote(
    replay: &RtmrReplay,
    quote: &[u8],
) -> Result<QuoteComparison, MeasureError> {
    let claims = TdxQuote::parse(quote)?.claims();
    let check = |index: usize| RtmrCheck {
        index,
        replayed: replay.rtmrs[index],
        quoted: claims.rtmrs[index],
    };
    Ok(QuoteComparison {
        mr_td: claims.mr_td,
        rtmrs: [check(0), check(1), check(2), check(3)],
    })
}
