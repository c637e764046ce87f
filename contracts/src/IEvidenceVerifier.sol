// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title On-chain attestation check for enclave registration (optional, per job).
/// @notice Evidence (SEV-SNP reports, TDX quotes) is appraised by the job's appointed verifiers
/// (the customer or a committee), off chain; the contract verifies their EIP-712 approvals
/// (`EnclaveApproval`, at least `verifierThreshold` distinct verifiers) before it registers a key.
/// A job may in addition name a contract that verifies the evidence itself on chain (a DCAP quote
/// verifier, for example); `registerEnclave` then also passes it the evidence bytes and refuses
/// the key unless it answers with its own selector. A job must have at least one of the two
/// checks (a verifier threshold of at least 1, or this hook).
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
