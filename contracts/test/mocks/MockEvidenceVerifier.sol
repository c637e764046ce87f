// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IEvidenceVerifier} from "../../src/IEvidenceVerifier.sol";

/// @notice Accepts evidence whose SHA-256 is the registered evidence hash and whose first byte
/// is not 0xff; answers with a wrong magic value for 0xee and reverts for 0xdd.
contract MockEvidenceVerifier is IEvidenceVerifier {
    error BadEvidence();

    function verifyEvidence(uint256, address, address, bytes32 evidenceHash, bytes32, bytes calldata evidence)
        external
        pure
        returns (bytes4)
    {
        if (evidence.length > 0 && evidence[0] == 0xdd) revert BadEvidence();
        if (evidence.length > 0 && evidence[0] == 0xee) return bytes4(0xdeadbeef);
        if (sha256(evidence) != evidenceHash || (evidence.length > 0 && evidence[0] == 0xff)) return bytes4(0);
        return IEvidenceVerifier.verifyEvidence.selector;
    }
}
