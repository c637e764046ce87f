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

/// True when `report_data` binds `pubkey` to `ctx`. Compares in constant time.
pub fn check_key_binding(
    report_data: &ReportData,
    pubkey: &[u8; 64],
    ctx: &BindingContext,
) -> bool {
    let expected = key_binding(pubkey, ctx);
    expected
        .0
        .iter()
        .zip(report_data.0.iter())
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
