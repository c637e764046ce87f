//! The signed envelope: a payload, its kind and a domain tag, signed by an enclave key, naming
//! the evidence that attests the key. It is how anything leaves an enclave.
//!
//! Signatures are Ethereum-compatible so the contract can check them with `ecrecover`:
//!
//! ```text
//! statement = keccak256("conclave/v1/envelope" ‖ u16be(len domain) ‖ domain ‖ u16be(len kind) ‖ kind
//!                       ‖ keccak256(payload) ‖ signer (20) ‖ evidence_hash (32))
//! digest    = keccak256("\x19Ethereum Signed Message:\n32" ‖ statement)      (EIP-191)
//! signature = r ‖ s ‖ v   (65 bytes, v = 27 + recovery id, s in the lower half order)
//! ```
//!
//! Wire format, version 1 (lengths little-endian u32 unless noted, all bounded):
//! `"CNVENV01" ‖ u16 len domain ‖ domain ‖ u16 len kind ‖ kind ‖ u32 len payload ‖ payload ‖
//!  signer[20] ‖ evidence_hash[32] ‖ signature[65]`.

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use sha3::{Digest, Keccak256};

use crate::appraisal::AcceptedEvidence;
use crate::binding::{BindingContext, check_key_binding, key_binding};
use crate::types::{EnclaveAddress, EvidenceHash, ReportData};

/// Wire magic.
pub const ENVELOPE_MAGIC: &[u8; 8] = b"CNVENV01";
/// Largest payload (a compressed update or a checkpoint manifest; checkpoints themselves travel
/// as files named by hash).
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;
/// Largest domain tag or kind string (a job's domain names the job id and the spec hash: 150
/// bytes).
pub const MAX_TAG: usize = 192;
const STATEMENT_TAG: &[u8] = b"conclave/v1/envelope";

/// Why an envelope is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Wire bytes ended early.
    #[error("envelope is truncated while reading {field}")]
    Truncated {
        /// Field being read.
        field: &'static str,
    },
    /// Wrong magic / version.
    #[error("not a Conclave envelope (bad magic or unknown version)")]
    BadMagic,
    /// A field over its bound.
    #[error("envelope field {field} is {len} bytes, more than the {max} allowed")]
    FieldTooLarge {
        /// Field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Domain or kind is not printable ASCII.
    #[error("envelope {field} must be printable ASCII")]
    BadTag {
        /// Field.
        field: &'static str,
    },
    /// Bytes after the signature.
    #[error("envelope has {extra} bytes after its signature")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The signature is not a valid secp256k1 signature or recovers no key.
    #[error("envelope signature is malformed or does not recover a key")]
    SignatureMalformed,
    /// High-s signatures are refused (Ethereum rejects them; they would make envelopes malleable).
    #[error("envelope signature has a high s value")]
    SignatureNotNormalized,
    /// The signature recovers a different key than the named signer (a tampered byte or a
    /// forged signature).
    #[error("envelope signature was made by {recovered}, not the named signer {claimed}")]
    SignerMismatch {
        /// Address named in the envelope.
        claimed: EnclaveAddress,
        /// Address the signature recovers.
        recovered: EnclaveAddress,
    },
    /// The envelope names other evidence than the accepted evidence given.
    #[error("envelope names evidence {claimed}, but the accepted evidence is {given}")]
    EvidenceMismatch {
        /// Hash in the envelope.
        claimed: EvidenceHash,
        /// Hash of the accepted evidence.
        given: EvidenceHash,
    },
    /// The evidence does not bind the signer's key for this job and nonce.
    #[error(
        "the signer's evidence does not bind its key for this job and nonce (report_data {report_data})"
    )]
    KeyNotBound {
        /// The evidence's report data.
        report_data: ReportData,
    },
    /// The expected domain or kind differs.
    #[error("envelope is a {got}, expected a {expected}")]
    WrongKind {
        /// Expected `domain/kind`.
        expected: String,
        /// Found `domain/kind`.
        got: String,
    },
}

/// An enclave's secp256k1 key. Lives only inside the enclave; never serialised by this crate.
pub struct EnclaveKey {
    key: SigningKey,
}

impl std::fmt::Debug for EnclaveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnclaveKey({})", self.address())
    }
}

/// Ethereum address of a secp256k1 public key.
pub fn address_of(key: &VerifyingKey) -> EnclaveAddress {
    let xy = public_xy(key);
    let hash = Keccak256::digest(xy);
    let mut a = [0u8; 20];
    a.copy_from_slice(&hash[12..]);
    EnclaveAddress(a)
}

/// The 64-byte x ‖ y of a secp256k1 public key (what report data binds).
pub fn public_xy(key: &VerifyingKey) -> [u8; 64] {
    let point = key.to_encoded_point(false);
    let mut xy = [0u8; 64];
    // An uncompressed SEC1 point is 0x04 ‖ x ‖ y.
    xy.copy_from_slice(&point.as_bytes()[1..65]);
    xy
}

impl EnclaveKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        EnclaveKey {
            key: SigningKey::random(&mut rand_core::OsRng),
        }
    }

    /// A key from 32 secret bytes (tests, and keys unsealed inside the enclave).
    pub fn from_bytes(secret: &[u8; 32]) -> Option<Self> {
        SigningKey::from_slice(secret)
            .ok()
            .map(|key| EnclaveKey { key })
    }

    /// The public key as x ‖ y.
    pub fn public_xy(&self) -> [u8; 64] {
        public_xy(self.key.verifying_key())
    }

    /// The Ethereum address.
    pub fn address(&self) -> EnclaveAddress {
        address_of(self.key.verifying_key())
    }

    /// The report data to ask the hardware for, binding this key to `ctx`.
    pub fn report_data(&self, ctx: &BindingContext) -> ReportData {
        key_binding(&self.public_xy(), ctx)
    }

    /// Signs a 32-byte statement the Ethereum way (EIP-191), returning r ‖ s ‖ v.
    pub fn sign_statement(&self, statement: &[u8; 32]) -> [u8; 65] {
        self.sign_digest(&eth_message_digest(statement))
    }

    /// Signs a ready digest (an EIP-712 typed-data digest, see [`crate::eip712`]) with a low-s
    /// signature, returning r ‖ s ‖ v (v = 27/28) as Solidity's `ecrecover` takes it.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> [u8; 65] {
        // sign_prehash_recoverable only fails for an all-zero digest, which keccak never gives
        // in practice; fall back to an invalid signature rather than panic.
        match self.key.sign_prehash_recoverable(digest) {
            Ok((sig, recid)) => {
                let (sig, recid) = match sig.normalize_s() {
                    Some(n) => (n, RecoveryId::new(!recid.is_y_odd(), recid.is_x_reduced())),
                    None => (sig, recid),
                };
                let mut out = [0u8; 65];
                out[..64].copy_from_slice(&sig.to_bytes());
                out[64] = 27 + recid.to_byte();
                out
            }
            Err(_) => [0u8; 65],
        }
    }

    /// Wraps `payload` in a signed envelope naming `evidence_hash` as the key's evidence.
    /// Refuses a domain or kind that is not printable ASCII of at most [`MAX_TAG`] bytes, and a
    /// payload over [`MAX_PAYLOAD`], so every sealed envelope also decodes.
    pub fn seal(
        &self,
        domain: &str,
        kind: &str,
        payload: Vec<u8>,
        evidence_hash: EvidenceHash,
    ) -> Result<Envelope, EnvelopeError> {
        check_tag("domain", domain.as_bytes())?;
        check_tag("kind", kind.as_bytes())?;
        if payload.len() > MAX_PAYLOAD {
            return Err(EnvelopeError::FieldTooLarge {
                field: "payload",
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let mut env = Envelope {
            domain: domain.to_string(),
            kind: kind.to_string(),
            payload,
            signer: self.address(),
            evidence_hash,
            signature: [0u8; 65],
        };
        env.signature = self.sign_statement(&env.statement());
        Ok(env)
    }
}

fn check_tag(field: &'static str, b: &[u8]) -> Result<(), EnvelopeError> {
    if b.len() > MAX_TAG {
        return Err(EnvelopeError::FieldTooLarge {
            field,
            len: b.len(),
            max: MAX_TAG,
        });
    }
    if !b.iter().all(|c| (0x20..0x7f).contains(c)) {
        return Err(EnvelopeError::BadTag { field });
    }
    Ok(())
}

fn eth_message_digest(statement: &[u8; 32]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(b"\x19Ethereum Signed Message:\n32");
    h.update(statement);
    h.finalize().into()
}

/// Recovers the signer of an EIP-191 signature over `statement`.
pub fn recover_statement_signer(
    statement: &[u8; 32],
    signature: &[u8; 65],
) -> Result<VerifyingKey, EnvelopeError> {
    recover_digest_signer(&eth_message_digest(statement), signature)
}

/// Recovers the signer of a low-s r ‖ s ‖ v signature over a ready digest.
pub fn recover_digest_signer(
    digest: &[u8; 32],
    signature: &[u8; 65],
) -> Result<VerifyingKey, EnvelopeError> {
    let sig =
        Signature::from_slice(&signature[..64]).map_err(|_| EnvelopeError::SignatureMalformed)?;
    if sig.normalize_s().is_some() {
        return Err(EnvelopeError::SignatureNotNormalized);
    }
    let v = signature[64];
    let recid = match v {
        27 | 28 => v - 27,
        0 | 1 => v,
        _ => return Err(EnvelopeError::SignatureMalformed),
    };
    let recid = RecoveryId::from_byte(recid).ok_or(EnvelopeError::SignatureMalformed)?;
    VerifyingKey::recover_from_prehash(digest, &sig, recid)
        .map_err(|_| EnvelopeError::SignatureMalformed)
}

/// A signed payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Domain tag: what context the signature is for (e.g. `conclave/v1/job/<id>`).
    pub domain: String,
    /// Payload kind (e.g. `round-receipt`, `update`, `checkpoint-manifest`).
    pub kind: String,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// The signer's address.
    pub signer: EnclaveAddress,
    /// SHA-256 of the signer's evidence (report or quote).
    pub evidence_hash: EvidenceHash,
    /// r ‖ s ‖ v.
    pub signature: [u8; 65],
}

impl Envelope {
    /// The 32-byte statement the signature covers (see the module docs).
    pub fn statement(&self) -> [u8; 32] {
        let mut h = Keccak256::new();
        h.update(STATEMENT_TAG);
        h.update((self.domain.len() as u16).to_be_bytes());
        h.update(self.domain.as_bytes());
        h.update((self.kind.len() as u16).to_be_bytes());
        h.update(self.kind.as_bytes());
        h.update(Keccak256::digest(&self.payload));
        h.update(self.signer.0);
        h.update(self.evidence_hash.0);
        h.finalize().into()
    }

    /// Checks the signature alone and returns the recovered signer. Does not say the signer is
    /// attested: use [`Envelope::verify`] for that.
    pub fn recover_signer(&self) -> Result<(EnclaveAddress, [u8; 64]), EnvelopeError> {
        let key = recover_statement_signer(&self.statement(), &self.signature)?;
        let recovered = address_of(&key);
        if recovered != self.signer {
            return Err(EnvelopeError::SignerMismatch {
                claimed: self.signer,
                recovered,
            });
        }
        Ok((recovered, public_xy(&key)))
    }

    /// Verifies the envelope against its signer's accepted evidence: the signature holds, the
    /// envelope names that evidence, and the evidence binds the signer's key for `ctx`.
    /// Returns the signer's address.
    pub fn verify(
        &self,
        signer_evidence: &AcceptedEvidence,
        ctx: &BindingContext,
    ) -> Result<EnclaveAddress, EnvelopeError> {
        let (address, xy) = self.recover_signer()?;
        if self.evidence_hash != signer_evidence.evidence_hash() {
            return Err(EnvelopeError::EvidenceMismatch {
                claimed: self.evidence_hash,
                given: signer_evidence.evidence_hash(),
            });
        }
        if !check_key_binding(&signer_evidence.report_data(), &xy, ctx) {
            return Err(EnvelopeError::KeyNotBound {
                report_data: signer_evidence.report_data(),
            });
        }
        Ok(address)
    }

    /// [`Envelope::verify`], and also checks the domain and kind are the expected ones.
    pub fn verify_as(
        &self,
        domain: &str,
        kind: &str,
        signer_evidence: &AcceptedEvidence,
        ctx: &BindingContext,
    ) -> Result<EnclaveAddress, EnvelopeError> {
        if self.domain != domain || self.kind != kind {
            return Err(EnvelopeError::WrongKind {
                expected: format!("{domain}/{kind}"),
                got: format!("{}/{}", self.domain, self.kind),
            });
        }
        self.verify(signer_evidence, ctx)
    }

    /// Encodes to the wire format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 4 + 4 + 117 + self.payload.len() + 256);
        out.extend_from_slice(ENVELOPE_MAGIC);
        out.extend_from_slice(&(self.domain.len() as u16).to_le_bytes());
        out.extend_from_slice(self.domain.as_bytes());
        out.extend_from_slice(&(self.kind.len() as u16).to_le_bytes());
        out.extend_from_slice(self.kind.as_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&self.signer.0);
        out.extend_from_slice(&self.evidence_hash.0);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes the wire format. Bounds every length before allocating; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let mut buf = bytes;
        let mut take = |n: usize, field: &'static str| -> Result<&[u8], EnvelopeError> {
            if buf.len() < n {
                return Err(EnvelopeError::Truncated { field });
            }
            let (head, rest) = buf.split_at(n);
            buf = rest;
            Ok(head)
        };
        if take(8, "magic")? != ENVELOPE_MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        let mut tag = |field: &'static str| -> Result<String, EnvelopeError> {
            let l = take(2, field)?;
            let len = u16::from_le_bytes([l[0], l[1]]) as usize;
            if len > MAX_TAG {
                return Err(EnvelopeError::FieldTooLarge {
                    field,
                    len,
                    max: MAX_TAG,
                });
            }
            let b = take(len, field)?;
            check_tag(field, b)?;
            Ok(b.iter().map(|&c| c as char).collect())
        };
        let domain = tag("domain")?;
        let kind = tag("kind")?;
        let l = take(4, "payload length")?;
        let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(EnvelopeError::FieldTooLarge {
                field: "payload",
                len,
                max: MAX_PAYLOAD,
            });
        }
        let payload = take(len, "payload")?.to_vec();
        let signer = EnclaveAddress::from_slice(take(20, "signer")?)
            .map_err(|_| EnvelopeError::Truncated { field: "signer" })?;
        let evidence_hash = EvidenceHash::from_slice(take(32, "evidence hash")?).map_err(|_| {
            EnvelopeError::Truncated {
                field: "evidence hash",
            }
        })?;
        let mut signature = [0u8; 65];
        signature.copy_from_slice(take(65, "signature")?);
        if !buf.is_empty() {
            return Err(EnvelopeError::TrailingBytes { extra: buf.len() });
        }
        Ok(Envelope {
            domain,
            kind,
            payload,
            signer,
            evidence_hash,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> EnclaveKey {
        EnclaveKey::from_bytes(&[0x42; 32]).unwrap()
    }

    #[test]
    fn address_matches_a_known_ethereum_vector() {
        // Private key 1 is the generator point; its address is well known.
        let mut one = [0u8; 32];
        one[31] = 1;
        let k = EnclaveKey::from_bytes(&one).unwrap();
        assert_eq!(
            k.address().to_checksum(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
    }

    #[test]
    fn seal_then_recover_gives_the_signer() {
        let k = key();
        let env = k
            .seal(
                "conclave/v1/test",
                "note",
                b"hello".to_vec(),
                EvidenceHash([1; 32]),
            )
            .unwrap();
        assert_eq!(env.recover_signer().unwrap().0, k.address());
        assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
    }

    #[test]
    fn every_tampered_byte_fails() {
        let k = key();
        let env = k
            .seal(
                "conclave/v1/test",
                "note",
                b"payload".to_vec(),
                EvidenceHash([9; 32]),
            )
            .unwrap();
        let wire = env.encode();
        for i in 8..wire.len() {
            let mut w = wire.clone();
            w[i] ^= 0x01;
            let ok = Envelope::decode(&w)
                .ok()
                .and_then(|e| e.recover_signer().ok())
                .is_some_and(|(a, _)| a == k.address());
            assert!(!ok, "flipping byte {i} still verified");
        }
    }

    #[test]
    fn seal_refuses_what_could_not_decode() {
        let k = key();
        let long = "d".repeat(MAX_TAG + 1);
        assert!(matches!(
            k.seal(&long, "k", vec![], EvidenceHash([0; 32])),
            Err(EnvelopeError::FieldTooLarge {
                field: "domain",
                ..
            })
        ));
        assert!(matches!(
            k.seal("d", "k\n", vec![], EvidenceHash([0; 32])),
            Err(EnvelopeError::BadTag { field: "kind" })
        ));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::decode(&bytes);
            let mut b = ENVELOPE_MAGIC.to_vec();
            b.extend_from_slice(&bytes);
            let _ = Envelope::decode(&b);
        }

        #[test]
        fn round_trip(domain in "[a-z/0-9]{0,40}", kind in "[a-z-]{0,20}",
                      payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let env = key().seal(&domain, &kind, payload, EvidenceHash([3; 32])).unwrap();
            prop_assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
        }
    }
}
