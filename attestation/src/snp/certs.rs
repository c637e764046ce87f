//! Certificates of the SEV-SNP chain: loading PEM/DER bundles in any order, telling the roles
//! apart, validity periods, and the VCEK/VLEK extensions (AMD "Versioned Chip Endorsement Key"
//! spec, OIDs 1.3.6.1.4.1.3704.1.*) that state which TCB and chip the key belongs to.

use der::asn1::{Ia5StringRef, OctetString};
use der::{Decode, Encode};
use p384::ecdsa::VerifyingKey;
use x509_cert::Certificate;

use crate::types::UnixTime;

/// Largest certificate file we read (AMD chains are a few KiB).
pub const MAX_CERT_FILE: usize = 256 * 1024;
/// Most certificates accepted in one bundle.
pub const MAX_CERTS: usize = 16;

const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";
const OID_CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

/// Why certificate bytes were unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// File larger than [`MAX_CERT_FILE`].
    #[error("certificate file is {len} bytes, more than the {MAX_CERT_FILE} allowed")]
    TooLarge {
        /// Bytes given.
        len: usize,
    },
    /// More than [`MAX_CERTS`] certificates.
    #[error("more than {MAX_CERTS} certificates given")]
    TooMany,
    /// Neither PEM nor DER X.509.
    #[error("not an X.509 certificate in PEM or DER: {0}")]
    Malformed(String),
    /// An extension had an unexpected encoding.
    #[error("certificate extension {oid} is malformed: {detail}")]
    BadExtension {
        /// Extension OID.
        oid: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The subject key is not a P-384 ECDSA key.
    #[error("certificate key is not an ECDSA P-384 key: {0}")]
    NotP384(String),
}

/// Parses one file: PEM (any number of CERTIFICATE blocks) or a single DER certificate.
pub fn load_certs(bytes: &[u8]) -> Result<Vec<Certificate>, CertError> {
    if bytes.len() > MAX_CERT_FILE {
        return Err(CertError::TooLarge { len: bytes.len() });
    }
    let looks_pem = bytes.windows(11).take(4096).any(|w| w == b"-----BEGIN ");
    if looks_pem {
        let certs = Certificate::load_pem_chain(bytes)
            .map_err(|e| CertError::Malformed(format!("PEM: {e}")))?;
        if certs.len() > MAX_CERTS {
            return Err(CertError::TooMany);
        }
        if certs.is_empty() {
            return Err(CertError::Malformed("no CERTIFICATE block".into()));
        }
        Ok(certs)
    } else {
        Certificate::from_der(bytes)
            .map(|c| vec![c])
            .map_err(|e| CertError::Malformed(format!("DER: {e}")))
    }
}

/// The part a certificate plays in the SEV-SNP chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum CertRole {
    /// AMD Root Key (self-signed).
    Ark,
    /// AMD SEV Signing Key (signs VCEKs).
    Ask,
    /// AMD SEV VLEK Signing Key (signs VLEKs).
    Asvk,
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key.
    Vlek,
}

impl std::fmt::Display for CertRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertRole::Ark => "ARK",
            CertRole::Ask => "ASK",
            CertRole::Asvk => "ASVK",
            CertRole::Vcek => "VCEK",
            CertRole::Vlek => "VLEK",
        })
    }
}

fn has_ext(cert: &Certificate, oid: &str) -> bool {
    ext_value(cert, oid).is_some()
}

fn ext_value<'a>(cert: &'a Certificate, oid: &str) -> Option<&'a [u8]> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id.to_string() == oid)
        .map(|e| e.extn_value.as_bytes())
}

/// Tells a certificate's role from its structure: self-signed is the root; carrying TCB
/// extensions is an endorsement key (with a CSP id: VLEK); otherwise a signing key, whose
/// subject names VLEK for the ASVK.
pub fn classify(cert: &Certificate) -> CertRole {
    let tbs = &cert.tbs_certificate;
    if tbs.issuer == tbs.subject {
        return CertRole::Ark;
    }
    if has_ext(cert, OID_BL_SPL) || has_ext(cert, OID_HW_ID) {
        return if has_ext(cert, OID_CSP_ID) {
            CertRole::Vlek
        } else {
            CertRole::Vcek
        };
    }
    if tbs.subject.to_string().contains("VLEK") {
        CertRole::Asvk
    } else {
        CertRole::Ask
    }
}

/// The certificate's validity period as Unix seconds (not_before, not_after).
pub fn validity(cert: &Certificate) -> (UnixTime, UnixTime) {
    let v = &cert.tbs_certificate.validity;
    (
        UnixTime(v.not_before.to_unix_duration().as_secs()),
        UnixTime(v.not_after.to_unix_duration().as_secs()),
    )
}

/// What a VCEK or VLEK says about the platform it was issued for.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct VekExtensions {
    /// productName, e.g. `Milan-B0`.
    pub product: Option<String>,
    /// blSPL.
    pub bootloader: Option<u8>,
    /// teeSPL.
    pub tee: Option<u8>,
    /// snpSPL.
    pub snp: Option<u8>,
    /// ucodeSPL.
    pub microcode: Option<u8>,
    /// fmcSPL (Turin).
    pub fmc: Option<u8>,
    /// hwID: the chip id (64 bytes; 8 on Turin). VLEKs have none.
    pub hw_id: Option<Vec<u8>>,
}

fn spl(cert: &Certificate, oid: &'static str) -> Result<Option<u8>, CertError> {
    let Some(v) = ext_value(cert, oid) else {
        return Ok(None);
    };
    let n = u64::from_der(v).map_err(|e| CertError::BadExtension {
        oid,
        detail: e.to_string(),
    })?;
    u8::try_from(n)
        .map(Some)
        .map_err(|_| CertError::BadExtension {
            oid,
            detail: format!("SPL {n} does not fit a byte"),
        })
}

/// Reads the TCB and hwID extensions of an endorsement key certificate.
pub fn vek_extensions(cert: &Certificate) -> Result<VekExtensions, CertError> {
    let product = match ext_value(cert, OID_PRODUCT_NAME) {
        None => None,
        Some(v) => Some(
            Ia5StringRef::from_der(v)
                .map(|s| s.to_string())
                .or_else(|_| std::str::from_utf8(v).map(str::to_owned))
                .map_err(|_| CertError::BadExtension {
                    oid: OID_PRODUCT_NAME,
                    detail: "not a string".into(),
                })?,
        ),
    };
    // Older VCEKs store hwID as the raw bytes (64; 8 on Turin), newer ones as a DER OCTET
    // STRING (66 or 10 bytes), so the length tells them apart.
    let hw_id = match ext_value(cert, OID_HW_ID) {
        None => None,
        Some(v) if v.len() == 64 || v.len() == 8 => Some(v.to_vec()),
        Some(v) => Some(
            OctetString::from_der(v)
                .map(|o| o.as_bytes().to_vec())
                .map_err(|e| CertError::BadExtension {
                    oid: OID_HW_ID,
                    detail: e.to_string(),
                })?,
        ),
    };
    Ok(VekExtensions {
        product,
        bootloader: spl(cert, OID_BL_SPL)?,
        tee: spl(cert, OID_TEE_SPL)?,
        snp: spl(cert, OID_SNP_SPL)?,
        microcode: spl(cert, OID_UCODE_SPL)?,
        fmc: spl(cert, OID_FMC_SPL)?,
        hw_id,
    })
}

/// The certificate's subject key as a P-384 ECDSA verifying key.
pub fn p384_key(cert: &Certificate) -> Result<VerifyingKey, CertError> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
        .map_err(|e| CertError::NotP384(e.to_string()))
}

/// Checks that `issuer`'s P-384 key made `subject`'s ECDSA-SHA384 signature. Used for the sim
/// chain; AMD's chain is RSA-PSS and goes through the `sev` crate.
pub fn verify_p384_issued(issuer: &Certificate, subject: &Certificate) -> Result<(), String> {
    use p384::ecdsa::signature::Verifier;
    if subject.signature_algorithm.oid.to_string() != OID_ECDSA_SHA384 {
        return Err(format!(
            "signature algorithm {} is not ecdsa-with-SHA384",
            subject.signature_algorithm.oid
        ));
    }
    let key = p384_key(issuer).map_err(|e| e.to_string())?;
    let tbs = subject
        .tbs_certificate
        .to_der()
        .map_err(|e| format!("re-encoding the certificate: {e}"))?;
    let sig_bytes = subject
        .signature
        .as_bytes()
        .ok_or("signature bit string has unused bits")?;
    let sig = p384::ecdsa::DerSignature::from_bytes(sig_bytes)
        .map_err(|e| format!("signature is not DER ECDSA: {e}"))?;
    key.verify(&tbs, &sig)
        .map_err(|_| "signature does not verify".to_string())
}

/// Sub-module of helpers the sim backend uses to mint its chain.
pub(crate) mod oids {
    pub const PRODUCT_NAME: &str = super::OID_PRODUCT_NAME;
    pub const BL_SPL: &str = super::OID_BL_SPL;
    pub const TEE_SPL: &str = super::OID_TEE_SPL;
    pub const SNP_SPL: &str = super::OID_SNP_SPL;
    pub const UCODE_SPL: &str = super::OID_UCODE_SPL;
    pub const HW_ID: &str = super::OID_HW_ID;
    pub const ECDSA_SHA384: &str = super::OID_ECDSA_SHA384;
}
