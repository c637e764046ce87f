// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IConclaveTraining} from "../src/IConclaveTraining.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @notice What a round certificate costs: n active operators, all of them signing and all in the
/// update set (the first certificate of the job, so every credit writes fresh storage slots).
/// `forge test --match-contract GasTest -vv` prints the figures; the bounds catch regressions.
/// With `--gas-report` (as scripts/test-contracts.sh runs it) forge executes each call as its own
/// transaction, storage cold: about 207 000 gas for 3 and 455 000 for 16 signers, measured by
/// gasleft around the call. Without it, slots the test touched before are warm and the figures
/// are lower (about 135 000 and 271 000).
contract GasTest is Fixture {
    event log_named_uint(string key, uint256 val);

    function _measure(uint256 n) internal returns (uint256 used) {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.minOperators = uint32(n);
        uint256 jobId = _create(p);
        uint256[] memory pks = new uint256[](n);
        address[] memory members = new address[](n);
        for (uint256 i; i < n; ++i) {
            address who = makeAddr(string.concat("gas operator ", Strings.toString(i)));
            pks[i] = uint256(keccak256(abi.encode("gas enclave key", i)));
            members[i] = vm.addr(pks[i]);
            _joinAs(jobId, who);
            _registerAs(jobId, who, pks[i], keccak256(abi.encode("gas evidence", i)));
        }
        training.startJob(jobId);
        _waitFor(jobId, 2);
        _sort(members);
        bytes32 model = _model(jobId, 2);
        bytes32 receipt = _receipt(jobId, 2);
        bytes[] memory sigs = _certSigs(jobId, 2, model, receipt, members, pks);
        uint256 before = gasleft();
        training.submitCertificate(jobId, 2, model, receipt, members, sigs);
        used = before - gasleft();
        assertEq(training.getCheckpoint(jobId, 2).credited, n, "all credited");
        emit log_named_uint(string.concat("submitCertificate, signers = members = ", Strings.toString(n)), used);
    }

    function test_gas_submitCertificate_3() public {
        assertLe(_measure(3), 250_000, "3 signers");
    }

    function test_gas_submitCertificate_16() public {
        assertLe(_measure(16), 550_000, "16 signers");
    }
}
