//! The EIP-712 statements of the `ConclaveTraining` contract
//! (`contracts/src/ConclaveTraining.sol`): an enclave's checkpoint statement (a round
//! certificate is a quorum of them) and registration consent, and a verifier's approval of an
//! enclave's evidence. Domain: name "ConclaveTraining", version "1", the chain id and the
//! contract's address, so a signature for one job, chain or contract never verifies on
//! another. The enclave's statements name the job's spec hash and dataset root, so a statement
//! made for other terms than the chain's never counts.
//!
//! ```text
//! Checkpoint(uint256 jobId,bytes32 specHash,bytes32 datasetRoot,uint64 round,bytes32 modelHash,bytes32 receiptHash,bytes32 updateSet)
//! EnclaveRegistration(uint256 jobId,bytes32 specHash,bytes32 datasetRoot,address operator,bytes32 evidenceHash,bytes32 measurement)
//! EnclaveApproval(uint256 jobId,address operator,address enclaveKey,bytes32 evidenceHash,bytes32 measurement)
//! updateSet = keccak256(abi.encodePacked(members))   (address[]: each a 32-byte word; ascending)
//! digest = keccak256(0x19 ‖ 0x01 ‖ domainSeparator ‖ structHash)
//! ```

use sha3::{Digest, Keccak256};

use crate::envelope::{EnclaveKey, EnvelopeError, address_of, recover_digest_signer};
use crate::types::{EnclaveAddress, Measurement, Tee};

pub const DOMAIN_NAME: &str = "ConclaveTraining";
pub const DOMAIN_VERSION: &str = "1";
pub const DOMAIN_TYPE: &str =
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
pub const CHECKPOINT_TYPE: &str = "Checkpoint(uint256 jobId,bytes32 specHash,bytes32 datasetRoot,uint64 round,bytes32 modelHash,bytes32 receiptHash,bytes32 updateSet)";
pub const REGISTRATION_TYPE: &str = "EnclaveRegistration(uint256 jobId,bytes32 specHash,bytes32 datasetRoot,address operator,bytes32 evidenceHash,bytes32 measurement)";
pub const APPROVAL_TYPE: &str = "EnclaveApproval(uint256 jobId,address operator,address enclaveKey,bytes32 evidenceHash,bytes32 measurement)";

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

/// The on-chain job a statement is about: its id (the uint256 as 32 big-endian bytes) and the
/// terms the enclave loaded (the spec hash and the dataset root the chain records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobTerms {
    pub job_id: [u8; 32],
    pub spec_hash: [u8; 32],
    pub dataset_root: [u8; 32],
}

/// One enclave's statement about an on-chain checkpoint round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointStatement {
    pub round: u64,
    pub model_hash: [u8; 32],
    pub receipt_hash: [u8; 32],
    /// [`update_set_hash`] of the enclaves whose updates the round aggregated.
    pub update_set: [u8; 32],
}

/// `keccak256(abi.encodePacked(members))` of an `address[]`: Solidity pads each array element
/// to a 32-byte word even when packing, so this hashes the members as left-padded words. The
/// members must be strictly ascending (the contract refuses any other order), which
/// [`sorted_members`] gives.
pub fn update_set_hash(members: &[EnclaveAddress]) -> [u8; 32] {
    let mut h = Keccak256::new();
    for m in members {
        h.update(word_addr(&m.0));
    }
    h.finalize().into()
}

/// `members` sorted ascending without duplicates (the order the contract takes).
pub fn sorted_members(members: impl IntoIterator<Item = EnclaveAddress>) -> Vec<EnclaveAddress> {
    let mut v: Vec<EnclaveAddress> = members.into_iter().collect();
    v.sort_by_key(|a| a.0);
    v.dedup_by_key(|a| a.0);
    v
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

    /// The digest of a checkpoint statement (`checkpointDigest` on chain).
    pub fn checkpoint_digest(&self, job: &JobTerms, s: &CheckpointStatement) -> [u8; 32] {
        let sh = keccak(&[
            &keccak(&[CHECKPOINT_TYPE.as_bytes()]),
            &job.job_id,
            &job.spec_hash,
            &job.dataset_root,
            &word_u64(s.round),
            &s.model_hash,
            &s.receipt_hash,
            &s.update_set,
        ]);
        self.digest(&sh)
    }

    /// The digest of a registration consent (`registrationDigest` on chain).
    pub fn registration_digest(
        &self,
        job: &JobTerms,
        operator: &[u8; 20],
        evidence_hash: &[u8; 32],
        measurement: &[u8; 32],
    ) -> [u8; 32] {
        let sh = keccak(&[
            &keccak(&[REGISTRATION_TYPE.as_bytes()]),
            &job.job_id,
            &job.spec_hash,
            &job.dataset_root,
            &word_addr(operator),
            evidence_hash,
            measurement,
        ]);
        self.digest(&sh)
    }

    /// The digest of a verifier's approval of an enclave's evidence (`approvalDigest` on
    /// chain).
    pub fn approval_digest(
        &self,
        job_id: &[u8; 32],
        operator: &[u8; 20],
        enclave: &EnclaveAddress,
        evidence_hash: &[u8; 32],
        measurement: &[u8; 32],
    ) -> [u8; 32] {
        let sh = keccak(&[
            &keccak(&[APPROVAL_TYPE.as_bytes()]),
            job_id,
            &word_addr(operator),
            &word_addr(&enclave.0),
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
        job: &JobTerms,
        s: &CheckpointStatement,
    ) -> [u8; 65] {
        self.sign_digest(&domain.checkpoint_digest(job, s))
    }

    /// Signs the consent that lets `operator` register this enclave key.
    pub fn sign_registration(
        &self,
        domain: &Domain,
        job: &JobTerms,
        operator: &[u8; 20],
        evidence_hash: &[u8; 32],
        measurement: &[u8; 32],
    ) -> [u8; 65] {
        self.sign_digest(&domain.registration_digest(job, operator, evidence_hash, measurement))
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

/// The signer of `digest`, with its 64-byte public key (x ‖ y), so a verifier can check that
/// evidence's report data binds that key ([`crate::check_key_binding`]).
pub fn recover_key(
    digest: &[u8; 32],
    signature: &[u8; 65],
) -> Result<(EnclaveAddress, [u8; 64]), EnvelopeError> {
    recover_digest_signer(digest, signature)
        .map(|k| (address_of(&k), crate::envelope::public_xy(&k)))
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
        let job = JobTerms {
            job_id: job_word(1),
            spec_hash: [3; 32],
            dataset_root: [4; 32],
        };
        let st = CheckpointStatement {
            round: 3,
            model_hash: [1; 32],
            receipt_hash: [2; 32],
            update_set: update_set_hash(&[key.address()]),
        };
        let sig = key.sign_checkpoint(&d, &job, &st);
        assert_eq!(
            recover(&d.checkpoint_digest(&job, &st), &sig).unwrap(),
            key.address()
        );
        let others_job = [
            JobTerms {
                job_id: job_word(2),
                ..job
            },
            JobTerms {
                spec_hash: [9; 32],
                ..job
            },
            JobTerms {
                dataset_root: [9; 32],
                ..job
            },
        ];
        for j in others_job {
            assert_ne!(
                recover(&d.checkpoint_digest(&j, &st), &sig).ok(),
                Some(key.address())
            );
        }
        for s in [
            CheckpointStatement { round: 4, ..st },
            CheckpointStatement {
                model_hash: [9; 32],
                ..st
            },
            CheckpointStatement {
                receipt_hash: [9; 32],
                ..st
            },
            CheckpointStatement {
                update_set: [9; 32],
                ..st
            },
        ] {
            assert_ne!(
                recover(&d.checkpoint_digest(&job, &s), &sig).ok(),
                Some(key.address())
            );
        }
        for other in [
            Domain { chain_id: 1, ..d },
            Domain {
                contract: [0x12; 20],
                ..d
            },
        ] {
            assert_ne!(
                recover(&other.checkpoint_digest(&job, &st), &sig).ok(),
                Some(key.address())
            );
        }
        let r = key.sign_registration(&d, &job, &[5; 20], &[6; 32], &[7; 32]);
        let rd = d.registration_digest(&job, &[5; 20], &[6; 32], &[7; 32]);
        assert_eq!(recover(&rd, &r).unwrap(), key.address());
        let other_spec = JobTerms {
            spec_hash: [8; 32],
            ..job
        };
        let rd2 = d.registration_digest(&other_spec, &[5; 20], &[6; 32], &[7; 32]);
        assert_ne!(recover(&rd2, &r).ok(), Some(key.address()));
    }

    /// The vector in contracts/README.md (the contract's `test_digests_matchTheDocumentedVector`,
    /// computed independently in JavaScript): the same digests and signature here.
    #[test]
    fn digests_match_the_contracts_documented_vector() {
        let h = |s: &str| {
            let mut a = [0u8; 32];
            a.copy_from_slice(&hex::decode(s).unwrap());
            a
        };
        let d = Domain {
            chain_id: 31337,
            contract: EnclaveAddress::from_hex("5615dEB798BB3E4dFa0139dFa1b3D433Cc23b72f")
                .unwrap()
                .0,
        };
        assert_eq!(
            d.separator(),
            h("77a75ff733d1c03bc7450083ee85657d0d668b6cddd3c46fe7e76eaf737af858")
        );
        assert_eq!(
            keccak(&[CHECKPOINT_TYPE.as_bytes()]),
            h("5d3f4c63fdf03275d7b245efabadc397ad76c6fbbb420007aa56bc09932bec77")
        );
        assert_eq!(
            keccak(&[REGISTRATION_TYPE.as_bytes()]),
            h("3e0cb08cede1a2b1167e2c5ef88c53dd55555c0b5788abafae5a178f95b0a712")
        );
        assert_eq!(
            keccak(&[APPROVAL_TYPE.as_bytes()]),
            h("71ac77de055177177214ffd0117af0aa3ca357a39e825787ccd9b242d78055ff")
        );
        let key1 = EnclaveKey::from_bytes(&word_u64(1)).unwrap();
        let key2 = EnclaveKey::from_bytes(&word_u64(2)).unwrap();
        let members = sorted_members([key1.address(), key2.address()]);
        assert_eq!(members[0], key2.address());
        let set = update_set_hash(&members);
        assert_eq!(
            set,
            h("6f38a18f90c24a6aa38eda02c5dc2f6e3adf7739725dd7189e4ae8604265e3a6")
        );
        let job = JobTerms {
            job_id: job_word(1),
            spec_hash: keccak(&[b"spec"]),
            dataset_root: keccak(&[b"dataset"]),
        };
        let st = CheckpointStatement {
            round: 2,
            model_hash: [0x11; 32],
            receipt_hash: [0x22; 32],
            update_set: set,
        };
        assert_eq!(
            d.checkpoint_digest(&job, &st),
            h("b6936e95c4b52077b70423bf9d189af93804f7a8f66e82b06c6e51da4ad9f840")
        );
        let sig = key1.sign_checkpoint(&d, &job, &st);
        assert_eq!(
            hex::encode(&sig[..64]),
            "0dfe8a87751933ac970d63c2ed48841f9ef20cc776398350e0aa3d4f3788012a\
             21cf56c81e9337063552dac70552194954859c642d3ee81b76a7fcf4d28edd3c"
        );
        assert_eq!(sig[64], 28);
        assert_eq!(
            d.registration_digest(&job, &[0x11; 20], &[0x33; 32], &[0x44; 32]),
            h("15d70bbc36f2daff22b3b333fcd5b6aaf13636744550889237092599a9d71c82")
        );
        assert_eq!(
            d.approval_digest(
                &job_word(1),
                &[0x11; 20],
                &key1.address(),
                &[0x33; 32],
                &[0x44; 32]
            ),
            h("d259a179b267d3ba5b7e4b38750937dd7bc8380a44feb7c341ab1438d2aac942")
        );
    }

    #[test]
    fn update_sets_are_packed_addresses_in_ascending_order() {
        let a = EnclaveAddress([0x22; 20]);
        let b = EnclaveAddress([0x11; 20]);
        let m = sorted_members([a, b, a]);
        assert_eq!(m, vec![b, a]);
        let mut packed = Vec::new();
        packed.extend_from_slice(&word_addr(&b.0));
        packed.extend_from_slice(&word_addr(&a.0));
        assert_eq!(update_set_hash(&m), keccak(&[&packed]));
        assert_ne!(update_set_hash(&[a, b]), update_set_hash(&m));
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
