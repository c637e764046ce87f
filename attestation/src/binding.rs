//! Key binding: the report data that ties an enclave's signing key to its hardware evidence,
//! to one job, and to one verifier-chosen nonce (so old evidence cannot be replayed):
//!
//! `report_data = SHA-512("conclave/v1/enclave-key" ‖ pubkey ‖ job_id ‖ nonce)`
//!
//! where `pubkey` is the 64-byte uncompressed secp256k1 point without its 0x04 prefix (the form
//! Ethereum hashes into an address), `job_id` 32 bytes and `nonce` 32 bytes. All parts have
//! fixed lengths, so the concatenation is unambiguous.

use sha2::{Digest, Sha512};

use crate::types::{JobId, Nonce, ReportData};

/// Domain tag of the key binding.
pub const KEY_BINDING_TAG: &[u8] = b"conclave/v1/enclave-key";

/// The job and nonce a key is bound for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BindingContext {
    /// The job.
    pub job_id: JobId,
    /// The verifier's nonce.
    pub nonce: Nonce,
}

/// Computes the report data binding `pubkey` (64 bytes, x ‖ y) to `ctx`.
pub fn key_binding(pubkey: &[u8; 64], ctx: &BindingContext) -> ReportData {
    let mut h = Sha512::new();
    h.update(KEY_BINDING_TAG);
    h.update(pubkey);
    h.update(ctx.job_id.0);
    h.update(ctx.nonce.0);
    ReportData(h.finalize().into())
}

/// Domain tag of the key-request binding.
pub const KEY_REQUEST_TAG: &[u8] = b"conclave/v1/key-request";

/// Computes the report data of a key request: an enclave asking for a job's secret binds the
/// fresh X25519 public key the secret is to be wrapped to, the job's sealing id and the key
/// holder's nonce:
///
/// `report_data = SHA-512("conclave/v1/key-request" ‖ x25519 public key ‖ sealing id ‖ nonce)`
///
/// (all parts 32 bytes). The tag differs from the enclave-key binding's, so evidence made for
/// one can never pass as the other.
pub fn key_request_binding(x25519: &[u8; 32], sealing_id: &[u8; 32], nonce: &Nonce) -> ReportData {
    let mut h = Sha512::new();
    h.update(KEY_REQUEST_TAG);
    h.update(x25519);
    h.update(sealing_id);
    h.update(nonce.0);
    ReportData(h.finalize().into())
}

/// True when `report_data` binds `pubkey` to `ctx`. Compares in constant time.
pub fn check_key_binding(
    report_data: &ReportData,
    pubkey: &[u8; 64],
    ctx: &BindingContext,
) -> bool {
    ct_eq(&key_binding(pubkey, ctx), report_data)
}

/// Constant-time equality of two report data values.
pub fn ct_eq(a: &ReportData, b: &ReportData) -> bool {
    a.0.iter()
        .zip(b.0.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_changes_with_every_input() {
        let ctx = BindingContext {
            job_id: JobId([1; 32]),
            nonce: Nonce([2; 32]),
        };
        let k = [7u8; 64];
        let rd = key_binding(&k, &ctx);
        assert!(check_key_binding(&rd, &k, &ctx));
        let mut k2 = k;
        k2[63] ^= 1;
        assert!(!check_key_binding(&rd, &k2, &ctx));
        let replayed = BindingContext {
            nonce: Nonce([3; 32]),
            ..ctx
        };
        assert!(!check_key_binding(&rd, &k, &replayed));
        let other_job = BindingContext {
            job_id: JobId([9; 32]),
            ..ctx
        };
        assert!(!check_key_binding(&rd, &k, &other_job));
    }

    #[test]
    fn key_request_binding_is_its_own_domain() {
        let nonce = Nonce([2; 32]);
        let rd = key_request_binding(&[5; 32], &[6; 32], &nonce);
        let mut msg = b"conclave/v1/key-request".to_vec();
        msg.extend_from_slice(&[5; 32]);
        msg.extend_from_slice(&[6; 32]);
        msg.extend_from_slice(&[2; 32]);
        let want: [u8; 64] = Sha512::digest(&msg).into();
        assert_eq!(rd.0, want);
        assert!(!ct_eq(
            &rd,
            &key_request_binding(&[5; 32], &[6; 32], &Nonce([3; 32]))
        ));
        assert!(!ct_eq(
            &rd,
            &key_request_binding(&[4; 32], &[6; 32], &nonce)
        ));
    }

    #[test]
    fn binding_is_sha512_of_the_documented_concatenation() {
        let ctx = BindingContext {
            job_id: JobId([0xAA; 32]),
            nonce: Nonce([0xBB; 32]),
        };
        let k = [0xCC; 64];
        let mut msg = b"conclave/v1/enclave-key".to_vec();
        msg.extend_from_slice(&k);
        msg.extend_from_slice(&[0xAA; 32]);
        msg.extend_from_slice(&[0xBB; 32]);
        let want: [u8; 64] = Sha512::digest(&msg).into();
        assert_eq!(key_binding(&k, &ctx).0, want);
    }
}
