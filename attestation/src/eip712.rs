//! The EIP-712 statements an enclave signs for the `ConclaveTraining` contract
//! (`contracts/src/ConclaveTraining.sol`): a checkpoint commit and a registration consent.
//! Domain: name "ConclaveTraining", version "1", the chain id and the contract's address, so a
//! signature for one job, chain or contract never verifies on another.
//!
//! ```text
//! Checkpoint(uint256 jobId,uint64 round,bytes32 modelHash,bytes32 receiptHash)
//! EnclaveRegistration(uint256 jobId,address operator,bytes32 evidenceHash,bytes32 measurement)
//! digest = keccak256(0x19 ‖ 0x01 ‖ domainSeparator ‖ structHash)
//! ```

use sha3::{Digest, Keccak256};

use crate::envelope::{EnclaveKey, EnvelopeError, address_of, recover_digest_signer};
use crate::types::{EnclaveAddress, Measurement, Tee};

pub const DOMAIN_NAME: &str = "ConclaveTraining";
pub const DOMAIN_VERSION: &str = "1";
pub const DOMAIN_TYPE: &str =
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
pub const CHECKPOINT_TYPE: &str =
    "Checkpoint(uint256 jobId,uint64 round,bytes32 modelHash,bytes32 receiptHash)";
pub const REGISTRATION_TYPE: &str =
    "EnclaveRegistration(uint256 jobId,address operator,bytes32 evidenceHash,bytes32 measurement)";

fn keccak(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Keccak256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn word_u64(v: u64) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[24..].copy_from_slice(&v.to_be_bytes());
    w
}

fn word_addr(a: &[u8; 20]) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(a);
    w
}

/// The contract a statement is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Domain {
    pub chain_id: u64,
    pub contract: [u8; 20],
}

impl Domain {
    /// OpenZeppelin `EIP712._domainSeparatorV4()`.
    pub fn separator(&self) -> [u8; 32] {
        keccak(&[
            &keccak(&[DOMAIN_TYPE.as_bytes()]),
            &keccak(&[DOMAIN_NAME.as_bytes()]),
            &keccak(&[DOMAIN_VERSION.as_bytes()]),
            &word_u64(self.chain_id),
            &word_addr(&self.contract),
        ])
    }

    fn digest(&self, struct_hash: &[u8; 32]) -> [u8; 32] {
        keccak(&[b"\x19\x01", &self.separator(), struct_hash])
    }

    /// The digest of a checkpoint statement (`checkpointDigest` on chain). `job_id` is the
    /// uint256 as 32 big-endian bytes.
    pub fn checkpoint_digest(
        &self,
        job_id: &[u8; 32],
        round: u64,
        model_hash: &[u8; 32],
        receipt_hash: &[u8; 32],
    ) -> [u8; 32] {
        let sh = keccak(&[
            &keccak(&[CHECKPOINT_TYPE.as_bytes()]),
            job_id,
            &word_u64(round),
            model_hash,
            receipt_hash,
        ]);
        self.digest(&sh)
    }

    /// The digest of a registration consent (`registrationDigest` on chain).
    pub fn registration_digest(
        &self,
        job_id: &[u8; 32],
        operator: &[u8; 20],
        evidence_hash: &[u8; 32],
        measurement: &[u8; 32],
    ) -> [u8; 32] {
        let sh = keccak(&[
            &keccak(&[REGISTRATION_TYPE.as_bytes()]),
            job_id,
            &word_addr(operator),
            evidence_hash,
            measurement,
        ]);
        self.digest(&sh)
    }
}

/// A uint256 job id as the 32 big-endian bytes EIP-712 encodes.
pub fn job_word(job_id: u64) -> [u8; 32] {
    word_u64(job_id)
}

impl EnclaveKey {
    /// Signs a checkpoint statement for the contract (r ‖ s ‖ v, low s).
    pub fn sign_checkpoint(
        &self,
        domain: &Domain,
        job_id: &[u8; 32],
        round: u64,
        model_hash: &[u8; 32],
        receipt_hash: &[u8; 32],
    ) -> [u8; 65] {
        self.sign_digest(&domain.checkpoint_digest(job_id, round, model_hash, receipt_hash))
    }

    /// Signs the consent that lets `operator` register this enclave key.
    pub fn sign_registration(
        &self,
        domain: &Domain,
        job_id: &[u8; 32],
        operator: &[u8; 20],
        evidence_hash: &[u8; 32],
        measurement: &[u8; 32],
    ) -> [u8; 65] {
        self.sign_digest(&domain.registration_digest(job_id, operator, evidence_hash, measurement))
    }
}

/// The `bytes32` a measurement is listed and registered as on chain (the contract's
/// convention): `keccak256("conclave/v1/measurement/snp" ‖ MEASUREMENT)` for SEV-SNP (and
/// for sim evidence, which has the SEV-SNP format), `keccak256("conclave/v1/measurement/tdx" ‖
/// MRTD)` for TDX.
pub fn chain_measurement(tee: Tee, m: &Measurement) -> [u8; 32] {
    let tag: &[u8] = match tee {
        Tee::Snp | Tee::Sim => b"conclave/v1/measurement/snp",
        Tee::Tdx => b"conclave/v1/measurement/tdx",
    };
    keccak(&[tag, &m.0])
}

/// The address that signed `digest`.
pub fn recover(digest: &[u8; 32], signature: &[u8; 65]) -> Result<EnclaveAddress, EnvelopeError> {
    recover_digest_signer(digest, signature).map(|k| address_of(&k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip712_mail_example_domain_separator() {
        // The EIP-712 specification's example domain hashes with the same type string; check
        // the encoding on it: name "Ether Mail", version "1", chainId 1, contract 0xCcCC…cCcC.
        let ds = keccak(&[
            &keccak(&[DOMAIN_TYPE.as_bytes()]),
            &keccak(&[b"Ether Mail"]),
            &keccak(&[b"1"]),
            &word_u64(1),
            &word_addr(&[0xcc; 20]),
        ]);
        assert_eq!(
            hex::encode(ds),
            "f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
        );
    }

    #[test]
    fn signatures_recover_and_bind_every_field() {
        let key = EnclaveKey::from_bytes(&[7u8; 32]).unwrap();
        let d = Domain {
            chain_id: 31337,
            contract: [0x11; 20],
        };
        let job = job_word(1);
        let sig = key.sign_checkpoint(&d, &job, 3, &[1; 32], &[2; 32]);
        let digest = d.checkpoint_digest(&job, 3, &[1; 32], &[2; 32]);
        assert_eq!(recover(&digest, &sig).unwrap(), key.address());
        for other in [
            d.checkpoint_digest(&job_word(2), 3, &[1; 32], &[2; 32]),
            d.checkpoint_digest(&job, 4, &[1; 32], &[2; 32]),
            d.checkpoint_digest(&job, 3, &[9; 32], &[2; 32]),
            Domain { chain_id: 1, ..d }.checkpoint_digest(&job, 3, &[1; 32], &[2; 32]),
            Domain {
                contract: [0x12; 20],
                ..d
            }
            .checkpoint_digest(&job, 3, &[1; 32], &[2; 32]),
        ] {
            assert_ne!(recover(&other, &sig).ok(), Some(key.address()));
        }
        let r = key.sign_registration(&d, &job, &[5; 20], &[6; 32], &[7; 32]);
        let rd = d.registration_digest(&job, &[5; 20], &[6; 32], &[7; 32]);
        assert_eq!(recover(&rd, &r).unwrap(), key.address());
    }

    #[test]
    fn chain_measurements_are_tagged_by_tee() {
        let m = Measurement([0xab; 48]);
        let snp = chain_measurement(Tee::Snp, &m);
        assert_eq!(snp, keccak(&[b"conclave/v1/measurement/snp", &[0xab; 48]]));
        assert_eq!(chain_measurement(Tee::Sim, &m), snp);
        assert_ne!(chain_measurement(Tee::Tdx, &m), snp);
        assert_ne!(chain_measurement(Tee::Snp, &Measurement([0xac; 48])), snp);
    }
}
