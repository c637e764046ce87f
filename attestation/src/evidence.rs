//! Evidence as it travels: a bare SEV-SNP report, a bare TDX quote, or a bundle that carries
//! either (or sim evidence) together with the certificates and collateral needed to check it.
//!
//! Bundle format, version 1 (all integers little-endian, every length bounded before use):
//!
//! ```text
//! magic    8  "CNVEVID1"
//! kind     1  1 = snp, 2 = tdx, 3 = sim
//! len      4  | primary: the report or quote
//! bytes   len |
//! count    1  number of certificates (DER), at most MAX_CERTS
//! { len 4, bytes }*count
//! len      4  | TDX collateral (QuoteCollateralV3 JSON); 0 = none
//! bytes   len |
//! ```
//! Nothing may follow. Sim evidence only exists inside a bundle, so it is always labelled.
//!
//! The bundle is framing, not identity: [`Evidence::hash`] is taken over the canonical form of
//! the report or quote alone (see [`crate::canonical`]), so a bare report, the same report in a
//! bundle, with or without certificates, PEM or DER, all have one hash.

use sha2::{Digest, Sha256};

use crate::canonical;
use crate::reason::Reason;
use crate::snp::certs::MAX_CERTS;
use crate::snp::report::REPORT_LEN;
use crate::types::{EvidenceHash, Tee};

/// Bundle magic.
pub const BUNDLE_MAGIC: &[u8; 8] = b"CNVEVID1";
/// Largest TDX quote accepted (real ones are ~5-8 KiB).
pub const MAX_QUOTE: usize = 64 * 1024;
/// Largest certificate in a bundle.
pub const MAX_CERT_LEN: usize = 16 * 1024;
/// Largest collateral JSON in a bundle.
pub const MAX_COLLATERAL: usize = 256 * 1024;
/// Largest evidence input of any kind.
pub const MAX_EVIDENCE: usize = 1024 * 1024;

/// Why evidence bytes are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// Larger than [`MAX_EVIDENCE`].
    #[error("evidence is {len} bytes, more than the {MAX_EVIDENCE} allowed")]
    TooLarge {
        /// Bytes given.
        len: usize,
    },
    /// Not a report, quote or bundle.
    #[error(
        "not recognised as evidence ({len} bytes): expected a 1184-byte SEV-SNP report, a TDX quote (version 4 or 5, TEE type 0x81) or a Conclave evidence bundle"
    )]
    Unrecognised {
        /// Bytes given.
        len: usize,
    },
    /// Bundle ended early.
    #[error("evidence bundle is truncated while reading {field}")]
    Truncated {
        /// Field being read.
        field: &'static str,
    },
    /// A bundle field is over its limit.
    #[error("evidence bundle field {field} is {len} bytes, more than the {max} allowed")]
    FieldTooLarge {
        /// Field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Unknown kind byte.
    #[error("evidence bundle kind {kind} is unknown (1 snp, 2 tdx, 3 sim)")]
    UnknownKind {
        /// The byte.
        kind: u8,
    },
    /// Bytes after the last field.
    #[error("evidence bundle has {extra} bytes after its last field")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The primary payload has the wrong shape for its kind.
    #[error("evidence bundle primary payload is invalid: {0}")]
    BadPrimary(String),
}

/// A piece of evidence with what came bundled with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// Which TEE it claims to be from.
    pub tee: Tee,
    /// The report (SNP, sim) or quote (TDX), exactly as produced (or received: see
    /// [`Evidence::canonical`] for the one encoding its hash is taken over).
    pub primary: Vec<u8>,
    /// DER certificates that came with it (VCEK, ASK, ARK; for sim its whole chain).
    pub certs: Vec<Vec<u8>>,
    /// TDX collateral JSON that came with it.
    pub collateral: Option<Vec<u8>>,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], EvidenceError> {
        if self.buf.len() < n {
            return Err(EvidenceError::Truncated { field });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, EvidenceError> {
        Ok(self.take(1, field)?[0])
    }
    fn blob(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], EvidenceError> {
        let b = self.take(4, field)?;
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len > max {
            return Err(EvidenceError::FieldTooLarge { field, len, max });
        }
        self.take(len, field)
    }
}

/// True when `bytes` starts like a TDX DCAP quote (version 4/5, TEE type 0x81).
pub fn looks_like_tdx_quote(bytes: &[u8]) -> bool {
    bytes.len() >= 48
        && matches!(u16::from_le_bytes([bytes[0], bytes[1]]), 4 | 5)
        && u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) == 0x81
}

fn looks_like_snp_report(bytes: &[u8]) -> bool {
    bytes.len() == REPORT_LEN
        && (2..=5).contains(&u32::from_le_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3],
        ]))
}

impl Evidence {
    /// A bare SEV-SNP report.
    pub fn snp(report: Vec<u8>) -> Self {
        Evidence {
            tee: Tee::Snp,
            primary: report,
            certs: Vec::new(),
            collateral: None,
        }
    }

    /// A bare TDX quote.
    pub fn tdx(quote: Vec<u8>) -> Self {
        Evidence {
            tee: Tee::Tdx,
            primary: quote,
            certs: Vec::new(),
            collateral: None,
        }
    }

    /// Detects the kind of `bytes`: a bundle, a 1184-byte SNP report or a TDX quote.
    pub fn decode(bytes: &[u8]) -> Result<Self, EvidenceError> {
        if bytes.len() > MAX_EVIDENCE {
            return Err(EvidenceError::TooLarge { len: bytes.len() });
        }
        if bytes.starts_with(BUNDLE_MAGIC) {
            return Self::decode_bundle(bytes);
        }
        if looks_like_snp_report(bytes) {
            return Ok(Self::snp(bytes.to_vec()));
        }
        if looks_like_tdx_quote(bytes) && bytes.len() <= MAX_QUOTE {
            return Ok(Self::tdx(bytes.to_vec()));
        }
        Err(EvidenceError::Unrecognised { len: bytes.len() })
    }

    fn decode_bundle(bytes: &[u8]) -> Result<Self, EvidenceError> {
        let mut r = Reader {
            buf: &bytes[BUNDLE_MAGIC.len()..],
        };
        let tee = match r.u8("kind")? {
            1 => Tee::Snp,
            2 => Tee::Tdx,
            3 => Tee::Sim,
            kind => return Err(EvidenceError::UnknownKind { kind }),
        };
        let primary = r.blob("primary", MAX_QUOTE)?.to_vec();
        match tee {
            Tee::Snp | Tee::Sim if primary.len() != REPORT_LEN => {
                return Err(EvidenceError::BadPrimary(format!(
                    "an SEV-SNP report is {REPORT_LEN} bytes, got {}",
                    primary.len()
                )));
            }
            Tee::Tdx if !looks_like_tdx_quote(&primary) => {
                return Err(EvidenceError::BadPrimary(
                    "not a TDX quote (version 4/5, TEE type 0x81)".into(),
                ));
            }
            _ => {}
        }
        let count = r.u8("certificate count")? as usize;
        if count > MAX_CERTS {
            return Err(EvidenceError::FieldTooLarge {
                field: "certificate count",
                len: count,
                max: MAX_CERTS,
            });
        }
        let mut certs = Vec::with_capacity(count);
        for _ in 0..count {
            certs.push(r.blob("certificate", MAX_CERT_LEN)?.to_vec());
        }
        let collateral = r.blob("collateral", MAX_COLLATERAL)?;
        let collateral = (!collateral.is_empty()).then(|| collateral.to_vec());
        if !r.buf.is_empty() {
            return Err(EvidenceError::TrailingBytes { extra: r.buf.len() });
        }
        Ok(Evidence {
            tee,
            primary,
            certs,
            collateral,
        })
    }

    /// Encodes as a bundle (always, so the kind travels with it).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.primary.len() + self.certs.iter().map(|c| c.len() + 4).sum::<usize>(),
        );
        out.extend_from_slice(BUNDLE_MAGIC);
        out.push(match self.tee {
            Tee::Snp => 1,
            Tee::Tdx => 2,
            Tee::Sim => 3,
        });
        let blob = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        blob(&mut out, &self.primary);
        out.push(self.certs.len().min(MAX_CERTS) as u8);
        for c in self.certs.iter().take(MAX_CERTS) {
            blob(&mut out, c);
        }
        blob(&mut out, self.collateral.as_deref().unwrap_or(&[]));
        out
    }

    /// The canonical encoding of the report or quote ([`crate::canonical`]): the bytes with
    /// every degree of freedom that genuine evidence has (ECDSA high-s, zero padding after a TDX
    /// quote, the PCK chain's PEM text) fixed to one choice. It is itself a valid report or
    /// quote that verifies exactly as the original does. `Err` names every reason the encoding
    /// cannot be made canonical (the appraisal rejects such evidence with these reasons).
    pub fn canonical_primary(&self) -> Result<Vec<u8>, Vec<Reason>> {
        match self.tee {
            Tee::Snp | Tee::Sim => {
                let raw: &[u8; REPORT_LEN] = self.primary.as_slice().try_into().map_err(|_| {
                    vec![Reason::EncodingNotCanonical {
                        detail: format!(
                            "an SEV-SNP report is {REPORT_LEN} bytes, got {}",
                            self.primary.len()
                        ),
                    }]
                })?;
                canonical::snp_report(raw, self.tee == Tee::Sim).map(|r| r.to_vec())
            }
            Tee::Tdx => canonical::tdx_quote(&self.primary),
        }
    }

    /// The same evidence with its primary bytes in canonical form (certificates and collateral
    /// unchanged). `canonical()?.hash() == self.hash()`, and `canonical()?.primary` hashes to it
    /// with a plain SHA-256.
    pub fn canonical(&self) -> Result<Evidence, Vec<Reason>> {
        Ok(Evidence {
            tee: self.tee,
            primary: self.canonical_primary()?,
            certs: self.certs.clone(),
            collateral: self.collateral.clone(),
        })
    }

    /// The evidence's identity: SHA-256 of the canonical encoding of the report or quote
    /// ([`Evidence::canonical_primary`]), so every encoding of one piece of evidence that
    /// appraisal can accept has this one hash. What a signed envelope names as its signer's
    /// evidence, what peers register and the chain records.
    ///
    /// Evidence with no canonical form (which appraisal always rejects) hashes its raw bytes;
    /// that hash can equal no canonical one, canonical forms being canonical themselves.
    pub fn hash(&self) -> EvidenceHash {
        hash_of(self.canonical_primary().as_deref().unwrap_or(&self.primary))
    }
}

/// SHA-256 of `bytes`, as an [`EvidenceHash`].
pub(crate) fn hash_of(bytes: &[u8]) -> EvidenceHash {
    EvidenceHash(Sha256::digest(bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Evidence {
        let mut report = vec![0u8; REPORT_LEN];
        report[0] = 3;
        Evidence {
            tee: Tee::Sim,
            primary: report,
            certs: vec![vec![1, 2, 3], vec![4; 100]],
            collateral: None,
        }
    }

    #[test]
    fn bundle_round_trips() {
        let e = sample();
        assert_eq!(Evidence::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn bundle_rejects_trailing_and_truncated() {
        let mut b = sample().encode();
        b.push(0);
        assert_eq!(
            Evidence::decode(&b),
            Err(EvidenceError::TrailingBytes { extra: 1 })
        );
        let b = sample().encode();
        assert!(matches!(
            Evidence::decode(&b[..b.len() - 2]),
            Err(EvidenceError::Truncated { .. })
        ));
    }

    #[test]
    fn garbage_is_unrecognised() {
        assert_eq!(
            Evidence::decode(b"hello"),
            Err(EvidenceError::Unrecognised { len: 5 })
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = Evidence::decode(&bytes);
            let mut b = BUNDLE_MAGIC.to_vec();
            b.extend_from_slice(&bytes);
            let _ = Evidence::decode(&b);
        }
    }
}
