// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title On-chain attestation check for enclave registration (optional, per job).
/// @notice Today evidence (SEV-SNP reports, TDX quotes) is verified off chain by peers and
/// customers, and a job's verifier is the zero address. A job may name a contract that verifies
/// the evidence on chain (a DCAP quote verifier, for example); `registerEnclave` then passes it
/// the evidence bytes and refuses the key unless it answers with its own selector.
interface IEvidenceVerifier {
    /// @param jobId The job the key is registered for (its report data binds the job id).
    /// @param operator The operator registering the key.
    /// @param enclaveKey The enclave key's Ethereum address (its report data binds the key).
    /// @param evidenceHash SHA-256 of `evidence`, as registered.
    /// @param measurement The measurement hash the operator claims, already in the job's allowlist.
    /// @param evidence The raw evidence.
    /// @return magic `IEvidenceVerifier.verifyEvidence.selector` when the evidence is accepted.
    function verifyEvidence(
        uint256 jobId,
        address operator,
        address enclaveKey,
        bytes32 evidenceHash,
        bytes32 measurement,
        bytes calldata evidence
    ) external view returns (bytes4 magic);
}
