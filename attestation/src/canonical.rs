//! One piece of evidence, one encoding: the canonical form that [`Evidence::hash`] is taken over.
//!
//! A report or quote carries bytes that nothing signs and no verifier reads (reserved fields of
//! the SEV-SNP signature, zero padding after a TDX quote, the PEM text around the PCK
//! certificates), and ECDSA signatures, which stay valid when `s` is replaced by `n - s`. Each of
//! those would let anyone re-encode someone else's evidence under a new hash: peers register the
//! hash, the chain records it and gossip deduplicates on it, so the same evidence would count
//! twice. This module decides, for every such degree of freedom, one of two things:
//!
//! * **refused**: nothing genuine produces it (nonzero reserved bytes, nonzero signature padding,
//!   nonzero bytes after a quote, bytes between the declared sizes, text around the PEM
//!   certificates, a PCK chain other than leaf, intermediate and Intel's root); the appraisal
//!   names it with a [`Reason`] and rejects the evidence;
//! * **canonicalised**: genuine evidence comes both ways, so the canonical form picks one:
//!   - ECDSA `s` is normalised to the low half (`s <= (n - 1) / 2`). AMD firmware and Intel's
//!     QE, PCE and CAs all emit high-s signatures: two of the three real SEV-SNP reports in
//!     `../shared/vectors` have a high `s`; of the TDX quotes, the quote signature is high-s in
//!     two, the QE report signature in one, the PCK leaf certificate's in two. Refusing high-s
//!     would refuse half of all genuine evidence. Sim evidence is signed by this crate, which
//!     writes low-s, so a high-s sim report is refused instead.
//!   - TDX: zero bytes after the quote's declared length are dropped (two of the three real
//!     quotes come zero-padded out of the quote buffer: 70 and 3065 bytes); the PCK chain is
//!     re-encoded as RFC 7468 PEM with LF line ends and no NUL terminator (Intel's QPL writes
//!     one; the COS quote has none); the declared sizes are recomputed.
//!
//! The canonical form of a report or quote is itself a valid report or quote: it verifies exactly
//! as the original does (a low-s signature verifies where the high-s one did), so it can be
//! stored, forwarded, or handed to an on-chain verifier that checks `sha256(evidence)`.
//! Canonicalising is idempotent, and every encoding of one piece of evidence that the
//! appraisal accepts has the same canonical form, hence the same [`EvidenceHash`].
//!
//! Limits: the hash covers the report or quote, not the TEE label or the certificates that
//! travel beside a report (a VCEK is an endorsement, fetched or bundled). A TDX quote carries
//! its PCK chain, so the chain is part of the quote's encoding: were Intel to issue a second
//! valid certificate for the same PCK key, a quote carrying it would be a second encoding.
//!
//! Every parser here is bounded and panic-free on any input.
//!
//! [`Evidence::hash`]: crate::Evidence::hash
//! [`EvidenceHash`]: crate::EvidenceHash

use der::asn1::{BitString, UintRef};
use der::{Decode, Encode};
use x509_cert::Certificate;

use crate::reason::Reason;
use crate::snp::report::REPORT_LEN;

/// Order of the NIST P-384 group (SEV-SNP report signatures), big-endian.
pub const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

/// Order of the NIST P-256 group (TDX quote, QE report and PCK certificate signatures),
/// big-endian.
pub const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// Intel SGX Root CA, the root every PCK chain ends in (the certificate `dcap-qvl` pins).
pub const INTEL_SGX_ROOT_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
-----END CERTIFICATE-----
";

const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";

// ---------------------------------------------------------------------------------------------
// ECDSA s normalisation
// ---------------------------------------------------------------------------------------------

/// True when the big-endian scalar `s` lies in the upper half of `[1, n - 1]`, that is
/// `(n - 1) / 2 < s < n`. `s` and `n` have the same length.
pub fn is_high_s(s: &[u8], n: &[u8]) -> bool {
    if s.len() != n.len() || s >= n {
        return false;
    }
    // half = n >> 1 = (n - 1) / 2 for odd n.
    let mut half = vec![0u8; n.len()];
    let mut carry = 0u8;
    for (h, &b) in half.iter_mut().zip(n) {
        *h = (b >> 1) | (carry << 7);
        carry = b & 1;
    }
    s > half.as_slice()
}

/// `n - s` for big-endian `s < n` of `n`'s length.
fn negate(s: &[u8], n: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; n.len()];
    let mut borrow = 0i16;
    for i in (0..n.len()).rev() {
        let mut d = i16::from(n[i]) - i16::from(s.get(i).copied().unwrap_or(0)) - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    out
}

/// The low-s form of the big-endian scalar `s`: `n - s` when `s` is high, else `None` (already
/// low, or not a scalar at all, which no verifier accepts anyway).
pub fn low_s(s: &[u8], n: &[u8]) -> Option<Vec<u8>> {
    is_high_s(s, n).then(|| negate(s, n))
}

/// Normalises a DER `Ecdsa-Sig-Value` (RFC 3279) over P-256 to low-s. Refuses anything that is
/// not strict DER holding two integers of at most 32 bytes.
fn low_s_der_p256(sig: &[u8]) -> Result<Vec<u8>, String> {
    let [r, s] = <[UintRef<'_>; 2]>::from_der(sig)
        .map_err(|e| format!("signature is not a DER ECDSA signature: {e}"))?;
    if [r, s].to_der().ok().as_deref() != Some(sig) {
        return Err("signature is not in DER canonical form".into());
    }
    let (r, s) = (r.as_bytes(), s.as_bytes());
    if r.len() > 32 || s.len() > 32 {
        return Err("signature is not a P-256 signature".into());
    }
    let mut s32 = [0u8; 32];
    s32[32 - s.len()..].copy_from_slice(s);
    let Some(low) = low_s(&s32, &P256_ORDER) else {
        return Ok(sig.to_vec());
    };
    let r = UintRef::new(r).map_err(|e| e.to_string())?;
    let s = UintRef::new(&low).map_err(|e| e.to_string())?;
    [r, s].to_der().map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// SEV-SNP
// ---------------------------------------------------------------------------------------------

/// Offsets of the report's signature (SEV-SNP ABI, "ECDSA P-384 with SHA-384 Signature"):
/// R and S are 72-byte little-endian fields holding 48-byte values; the rest is reserved.
const SIG_R: usize = 0x2A0;
const SIG_S: usize = 0x2E8;
const SIG_RESERVED: usize = 0x330;
const SCALAR: usize = 48;
const SCALAR_FIELD: usize = 72;

/// The reserved byte ranges of an ATTESTATION_REPORT of `version`, with the name the appraisal
/// reports (SEV-SNP ABI specification, table "ATTESTATION_REPORT Structure", report versions 2,
/// 3 and 5; version 4 has the layout of 3). All must be zero.
pub fn snp_reserved_ranges(version: u32) -> Vec<(usize, usize, &'static str)> {
    let mut v = vec![(0x04C, 0x050, "0x04C..0x050 (after KEY_INFO)")];
    if version >= 3 {
        v.push((0x18B, 0x1A0, "0x18B..0x1A0 (after CPUID_STEP)"));
    } else {
        v.push((0x188, 0x1A0, "0x188..0x1A0 (after REPORTED_TCB)"));
    }
    v.push((0x1EB, 0x1EC, "0x1EB (after CURRENT_MAJOR)"));
    v.push((0x1EF, 0x1F0, "0x1EF (after COMMITTED_MAJOR)"));
    if version >= 5 {
        v.push((0x208, 0x2A0, "0x208..0x2A0 (after CURRENT_MIT_VECTOR)"));
    } else {
        v.push((0x1F8, 0x2A0, "0x1F8..0x2A0 (after LAUNCH_TCB)"));
    }
    v.push((
        SIG_RESERVED,
        REPORT_LEN,
        "0x330..0x4A0 (in SIGNATURE, after S)",
    ));
    v
}

/// The canonical form of a SEV-SNP (or sim) report: the same bytes with S in low-s form.
///
/// Refuses, naming each: nonzero reserved bytes ([`Reason::ReservedNotZero`]), nonzero upper
/// bytes of R or S ([`Reason::SignaturePaddingNotZero`]) and, when `refuse_high_s` (sim
/// evidence, which this crate signs low-s), a high S ([`Reason::SignatureNotLowS`]).
pub fn snp_report(
    raw: &[u8; REPORT_LEN],
    refuse_high_s: bool,
) -> Result<[u8; REPORT_LEN], Vec<Reason>> {
    let version = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let mut reasons = Vec::new();
    for (start, end, field) in snp_reserved_ranges(version) {
        if let Some(i) = raw[start..end].iter().position(|&b| b != 0) {
            reasons.push(Reason::ReservedNotZero {
                field: field.into(),
                offset: (start + i) as u32,
            });
        }
    }
    for (name, at) in [("R", SIG_R), ("S", SIG_S)] {
        if raw[at + SCALAR..at + SCALAR_FIELD].iter().any(|&b| b != 0) {
            reasons.push(Reason::SignaturePaddingNotZero {
                component: format!("SEV-SNP report signature {name}"),
            });
        }
    }
    let mut out = *raw;
    let mut s_be = [0u8; SCALAR];
    for (i, b) in s_be.iter_mut().enumerate() {
        *b = raw[SIG_S + SCALAR - 1 - i];
    }
    if let Some(low) = low_s(&s_be, &P384_ORDER) {
        if refuse_high_s {
            reasons.push(Reason::SignatureNotLowS {
                signature: "sim report".into(),
            });
        }
        for (i, b) in low.iter().enumerate() {
            out[SIG_S + SCALAR - 1 - i] = *b;
        }
    }
    if reasons.is_empty() {
        Ok(out)
    } else {
        Err(reasons)
    }
}

// ---------------------------------------------------------------------------------------------
// TDX
// ---------------------------------------------------------------------------------------------

/// TDX quote header length.
const HEADER: usize = 48;
/// TD 1.0 report body (the v4 body).
const TD10_BODY: usize = 584;
/// v5 body sizes: TD 1.0, TD 1.5, TD 1.5ex.
const V5_BODIES: [usize; 3] = [584, 648, 885];
/// QE report certification data (the outer certification data of v4/v5 quotes).
const CERT_QE_REPORT: u16 = 6;
/// Concatenated PCK certificate chain, PEM (the inner certification data).
const CERT_PCK_CHAIN: u16 = 5;
/// An Intel PCK chain: PCK leaf, Platform/Processor CA, Root CA.
const PCK_CHAIN_LEN: usize = 3;

/// A fatal refusal while walking a quote (kept small; it becomes a [`Reason`] at the end).
enum Refusal {
    /// [`Reason::EncodingNotCanonical`].
    Structure(String),
    /// [`Reason::CertificationDataNotCanonical`].
    CertData(String),
}

impl From<Refusal> for Reason {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Structure(detail) => Reason::EncodingNotCanonical { detail },
            Refusal::CertData(detail) => Reason::CertificationDataNotCanonical { detail },
        }
    }
}

struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Refusal> {
        if self.0.len() < n {
            return Err(Refusal::Structure(format!(
                "TDX quote is truncated in {what}"
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u16(&mut self, what: &str) -> Result<u16, Refusal> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, Refusal> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn blob_u16(&mut self, what: &str) -> Result<&'a [u8], Refusal> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
    fn blob_u32(&mut self, what: &str) -> Result<&'a [u8], Refusal> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
}

fn put_blob_u16(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_blob_u32(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// A raw `r || s` P-256 signature (big-endian, 32 bytes each) with `s` in low-s form.
fn low_s_raw_p256(sig: &[u8]) -> Vec<u8> {
    let mut out = sig.to_vec();
    if sig.len() == 64
        && let Some(low) = low_s(&sig[32..], &P256_ORDER)
    {
        out[32..].copy_from_slice(&low);
    }
    out
}

/// The canonical form of a TDX quote (v4 or v5):
///
/// ```text
/// header ‖ [v5: body type ‖ body size] ‖ body            as given (signed)
/// u32 len ‖ quote signature r ‖ low-s ‖ attestation key
///   u16 6 ‖ u32 len ‖ QE report ‖ QE report signature r ‖ low-s ‖ u16 len ‖ QE auth data
///     u16 5 ‖ u32 len ‖ PCK leaf, intermediate CA, Intel root CA as RFC 7468 PEM, LF,
///                       certificate signatures in low-s form
/// ```
///
/// Zero bytes after the quote's declared length are dropped. Refused, by name: nonzero bytes
/// after the quote ([`Reason::TrailingBytes`]), bytes inside the signature data or the
/// certification data beyond what their structure declares ([`Reason::TrailingBytes`]),
/// certification data types other than 6 and 5 ([`Reason::EncodingNotCanonical`]), and a PCK
/// chain that is not exactly three PEM certificates, back to back, optionally followed by one
/// NUL, ending in Intel's root, each in DER canonical form and signed with ECDSA P-256
/// ([`Reason::CertificationDataNotCanonical`]).
pub fn tdx_quote(raw: &[u8]) -> Result<Vec<u8>, Vec<Reason>> {
    let mut reasons = Vec::new();
    match tdx_quote_inner(raw, &mut reasons) {
        Ok(out) if reasons.is_empty() => Ok(out),
        Ok(_) => Err(reasons),
        Err(r) => {
            reasons.push(r.into());
            Err(reasons)
        }
    }
}

fn tdx_quote_inner(raw: &[u8], reasons: &mut Vec<Reason>) -> Result<Vec<u8>, Refusal> {
    let mut q = Cur(raw);
    let header = q.take(HEADER, "the header")?;
    let version = u16::from_le_bytes([header[0], header[1]]);
    let tee_type = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if tee_type != 0x81 {
        return Err(Refusal::Structure(format!(
            "TEE type {tee_type:#x} is not TDX (0x81)"
        )));
    }
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(header);
    match version {
        4 => out.extend_from_slice(q.take(TD10_BODY, "the TD report body")?),
        5 => {
            let body_header = q.take(6, "the body type and size")?;
            let size = u32::from_le_bytes([
                body_header[2],
                body_header[3],
                body_header[4],
                body_header[5],
            ]) as usize;
            if !V5_BODIES.contains(&size) {
                return Err(Refusal::Structure(format!(
                    "v5 body size {size} is not a TD report size"
                )));
            }
            out.extend_from_slice(body_header);
            out.extend_from_slice(q.take(size, "the TD report body")?);
        }
        v => {
            return Err(Refusal::Structure(format!(
                "quote version {v} (4 and 5 are known)"
            )));
        }
    }

    let sig_data = q.blob_u32("the signature data")?;
    if !q.0.is_empty() && q.0.iter().any(|&b| b != 0) {
        reasons.push(Reason::TrailingBytes {
            after: "the TDX quote's signature data".into(),
            extra: q.0.len(),
        });
    }

    let mut a = Cur(sig_data);
    let quote_sig = a.take(64, "the quote signature")?;
    let att_key = a.take(64, "the attestation key")?;
    let cert_type = a.u16("the certification data type")?;
    if cert_type != CERT_QE_REPORT {
        return Err(Refusal::Structure(format!(
            "certification data type {cert_type} (expected {CERT_QE_REPORT}, QE report certification data)"
        )));
    }
    let cert_data = a.blob_u32("the certification data")?;
    if !a.0.is_empty() {
        reasons.push(Reason::TrailingBytes {
            after: "the certification data, inside the quote's signature data".into(),
            extra: a.0.len(),
        });
    }

    let mut c = Cur(cert_data);
    let qe_report = c.take(384, "the QE report")?;
    let qe_sig = c.take(64, "the QE report signature")?;
    let qe_auth = c.blob_u16("the QE authentication data")?;
    let inner_type = c.u16("the inner certification data type")?;
    if inner_type != CERT_PCK_CHAIN {
        return Err(Refusal::CertData(format!(
            "inner certification data type {inner_type} (expected {CERT_PCK_CHAIN}, the PCK certificate chain)"
        )));
    }
    let pem = c.blob_u32("the PCK certificate chain")?;
    if !c.0.is_empty() {
        reasons.push(Reason::TrailingBytes {
            after: "the PCK certificate chain, inside the QE certification data".into(),
            extra: c.0.len(),
        });
    }
    let chain = pck_chain(pem).map_err(Refusal::CertData)?;

    let mut inner = Vec::with_capacity(cert_data.len());
    inner.extend_from_slice(qe_report);
    inner.extend_from_slice(&low_s_raw_p256(qe_sig));
    put_blob_u16(&mut inner, qe_auth);
    inner.extend_from_slice(&CERT_PCK_CHAIN.to_le_bytes());
    put_blob_u32(&mut inner, &chain);

    let mut auth = Vec::with_capacity(sig_data.len());
    auth.extend_from_slice(&low_s_raw_p256(quote_sig));
    auth.extend_from_slice(att_key);
    auth.extend_from_slice(&CERT_QE_REPORT.to_le_bytes());
    put_blob_u32(&mut auth, &inner);

    put_blob_u32(&mut out, &auth);
    Ok(out)
}

const PEM_BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
const PEM_END: &[u8] = b"-----END CERTIFICATE-----";

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits a PEM chain into its certificates' DER. The text must be PEM blocks back to back
/// (each strict RFC 7468, label CERTIFICATE, LF or CRLF line ends), optionally followed by one
/// NUL terminator; nothing else, and at most three blocks. `Err` says what is wrong.
pub fn pem_chain_ders(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut text = pem.strip_suffix(b"\0").unwrap_or(pem);
    let mut ders = Vec::new();
    while !text.is_empty() {
        if !text.starts_with(PEM_BEGIN) {
            return Err(format!(
                "unexpected bytes where PEM certificate {} should begin",
                ders.len() + 1
            ));
        }
        if ders.len() == PCK_CHAIN_LEN {
            return Err(format!(
                "more than {PCK_CHAIN_LEN} certificates in the PCK chain"
            ));
        }
        let Some(end) = find(text, PEM_END) else {
            return Err(format!(
                "PEM certificate {} has no END line",
                ders.len() + 1
            ));
        };
        let mut stop = end + PEM_END.len();
        if text[stop..].starts_with(b"\r\n") {
            stop += 2;
        } else if text[stop..].starts_with(b"\n") {
            stop += 1;
        }
        let (block, rest) = text.split_at(stop);
        let (label, der) = der::pem::decode_vec(block)
            .map_err(|e| format!("PEM certificate {} is malformed: {e}", ders.len() + 1))?;
        if label != "CERTIFICATE" {
            return Err(format!("PEM label {label}"));
        }
        ders.push(der);
        text = rest;
    }
    Ok(ders)
}

/// A certificate in DER canonical form with its ECDSA P-256 signature in low-s form.
fn canonical_cert(der: &[u8], index: usize) -> Result<Vec<u8>, String> {
    let mut cert = Certificate::from_der(der)
        .map_err(|e| format!("certificate {index} does not parse: {e}"))?;
    if cert.to_der().ok().as_deref() != Some(der) {
        return Err(format!("certificate {index} is not in DER canonical form"));
    }
    if cert.signature_algorithm.oid.to_string() != OID_ECDSA_SHA256 {
        return Err(format!(
            "certificate {index} is signed with {}, not ecdsa-with-SHA256",
            cert.signature_algorithm.oid
        ));
    }
    let sig = cert
        .signature
        .as_bytes()
        .ok_or_else(|| format!("certificate {index} signature has unused bits"))?;
    let low = low_s_der_p256(sig).map_err(|e| format!("certificate {index}: {e}"))?;
    if low == sig {
        return Ok(der.to_vec());
    }
    cert.signature = BitString::from_bytes(&low).map_err(|e| e.to_string())?;
    cert.to_der()
        .map_err(|e| format!("re-encoding certificate {index}: {e}"))
}

/// The canonical PEM text of an Intel PCK chain.
fn pck_chain(pem: &[u8]) -> Result<Vec<u8>, String> {
    let ders = pem_chain_ders(pem)?;
    if ders.len() != PCK_CHAIN_LEN {
        return Err(format!(
            "the PCK chain has {} certificates; it must be the PCK leaf, the intermediate CA and Intel's root CA",
            ders.len()
        ));
    }
    let (_, root) = der::pem::decode_vec(INTEL_SGX_ROOT_CA_PEM.as_bytes())
        .map_err(|e| format!("the pinned Intel root: {e}"))?;
    if ders[2] != root {
        return Err("the last certificate of the PCK chain is not Intel's SGX Root CA".into());
    }
    let mut out = Vec::with_capacity(pem.len());
    for (i, der) in ders.iter().enumerate() {
        let der = if i + 1 == PCK_CHAIN_LEN {
            der.clone()
        } else {
            canonical_cert(der, i + 1)?
        };
        let text = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &der)
            .map_err(|e| format!("re-encoding certificate {}: {e}", i + 1))?;
        out.extend_from_slice(text.as_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn low_s_agrees_with_the_p384_crate() {
        use p384::ecdsa::signature::Signer;
        let key = p384::ecdsa::SigningKey::from_slice(&[7u8; 48]).unwrap();
        let mut seen = (false, false);
        for i in 0u32..64 {
            let sig: p384::ecdsa::Signature = key.sign(&i.to_be_bytes());
            let s = sig.s().to_bytes();
            match sig.normalize_s() {
                Some(n) => {
                    seen.0 = true;
                    assert!(is_high_s(&s, &P384_ORDER));
                    assert_eq!(low_s(&s, &P384_ORDER).unwrap(), n.s().to_bytes().to_vec());
                }
                None => {
                    seen.1 = true;
                    assert!(!is_high_s(&s, &P384_ORDER));
                    assert_eq!(low_s(&s, &P384_ORDER), None);
                }
            }
        }
        assert_eq!(seen, (true, true), "both halves were exercised");
    }

    #[test]
    fn half_order_boundaries() {
        // (n - 1) / 2 is low, (n + 1) / 2 is high, n and above are not scalars.
        let n = P256_ORDER;
        let mut half = [0u8; 32];
        let mut carry = 0;
        for (h, b) in half.iter_mut().zip(n) {
            *h = (b >> 1) | (carry << 7);
            carry = b & 1;
        }
        assert!(!is_high_s(&half, &n));
        let mut above = half;
        above[31] += 1;
        assert!(is_high_s(&above, &n));
        assert_eq!(negate(&above, &n).as_slice(), &half);
        assert!(!is_high_s(&n, &n));
        assert!(!is_high_s(&[0xff; 32], &n));
        assert!(!is_high_s(&[0u8; 31], &n), "wrong length");
    }

    proptest! {
        #[test]
        fn normalising_is_an_involution_into_the_low_half(s in proptest::collection::vec(any::<u8>(), 32)) {
            if let Some(low) = low_s(&s, &P256_ORDER) {
                prop_assert!(!is_high_s(&low, &P256_ORDER));
                prop_assert_eq!(negate(&low, &P256_ORDER), s);
            }
        }

        #[test]
        fn canonicalisers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
            let _ = tdx_quote(&bytes);
            let _ = pem_chain_ders(&bytes);
            let mut report = [0u8; REPORT_LEN];
            let n = bytes.len().min(REPORT_LEN);
            report[..n].copy_from_slice(&bytes[..n]);
            let _ = snp_report(&report, true);
            let _ = snp_report(&report, false);
        }
    }
}
