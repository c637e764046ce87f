// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Errors} from "@openzeppelin/contracts/utils/Errors.sol";

import {IConclaveTraining} from "../src/IConclaveTraining.sol";
import {MockEvidenceVerifier} from "./mocks/MockEvidenceVerifier.sol";
import {ReentrantOperator} from "./mocks/ReentrantOperator.sol";
import {Fixture} from "./utils/Fixture.sol";

/// @notice The operator's side: join, registerEnclave, requestLeave, withdraw.
contract OperatorsTest is Fixture {
    // ---- join ----

    function test_join_native_depositsStake() public {
        uint256 jobId = _createDefault(NATIVE);
        vm.deal(ops[0], STAKE);
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.OperatorJoined(jobId, ops[0], STAKE);
        vm.prank(ops[0]);
        training.join{value: STAKE}(jobId);
        IConclaveTraining.Operator memory op = training.getOperator(jobId, ops[0]);
        assertTrue(op.status == IConclaveTraining.OperatorStatus.Joined, "joined");
        assertEq(op.stake, STAKE, "stake");
        assertEq(op.enclaveKey, address(0), "no key yet");
        assertEq(address(training).balance, ESCROW + STAKE, "held");
        assertEq(training.getJob(jobId).activeOperators, 0, "not active without a key");
    }

    function test_join_erc20_pullsStake() public {
        uint256 jobId = _createDefault(address(token));
        _join(jobId, 0);
        assertEq(token.balanceOf(address(training)), ESCROW + STAKE, "held");
        assertEq(token.balanceOf(ops[0]), 0, "operator paid");
    }

    function test_join_whileRunning() public {
        uint256 jobId = _running(NATIVE, 2);
        _joinAndRegister(jobId, 2);
        assertEq(training.getJob(jobId).activeOperators, 3, "active");
    }

    function test_join_revertsOnUnknownJob() public {
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownJob.selector, 9));
        training.join(9);
    }

    function test_join_revertsOnCancelledJob() public {
        uint256 jobId = _createDefault(NATIVE);
        vm.prank(customer);
        training.cancelJob(jobId);
        vm.deal(ops[0], STAKE);
        vm.prank(ops[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongJobStatus.selector, jobId, IConclaveTraining.JobStatus.Cancelled
            )
        );
        training.join{value: STAKE}(jobId);
    }

    function test_join_revertsOnCompletedJob() public {
        uint256 jobId = _running(NATIVE, 2);
        _certifyAll(jobId, 6, 2);
        vm.deal(ops[2], STAKE);
        vm.prank(ops[2]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongJobStatus.selector, jobId, IConclaveTraining.JobStatus.Completed
            )
        );
        training.join{value: STAKE}(jobId);
    }

    function test_join_revertsAfterDeadline() public {
        uint256 jobId = _createDefault(NATIVE);
        uint64 deadline = training.getJob(jobId).deadline;
        vm.warp(deadline);
        vm.deal(ops[0], STAKE);
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.DeadlinePassed.selector, deadline));
        training.join{value: STAKE}(jobId);
    }

    function test_join_revertsTwice() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        vm.deal(ops[0], STAKE);
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.AlreadyJoined.selector, ops[0]));
        training.join{value: STAKE}(jobId);
    }

    function test_join_revertsOnWrongStakeValue() public {
        uint256 jobId = _createDefault(NATIVE);
        vm.deal(ops[0], 2 * STAKE);
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.WrongValue.selector, STAKE, 2 * STAKE));
        training.join{value: 2 * STAKE}(jobId);
    }

    function test_join_revertsWhenValueSentWithErc20() public {
        uint256 jobId = _createDefault(address(token));
        _fund(address(token), ops[0], STAKE);
        vm.deal(ops[0], STAKE);
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.WrongValue.selector, 0, STAKE));
        training.join{value: STAKE}(jobId);
    }

    // ---- registerEnclave ----

    function test_registerEnclave_storesKeyAndActivates() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        bytes memory sig = _registrationSig(jobId, 0, M_TDX);
        bytes32 evidenceHash = _evidenceHash(0);
        bytes[] memory approvals = _approvals(jobId, ops[0], enclaves[0], evidenceHash, M_TDX);
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.EnclaveRegistered(jobId, ops[0], enclaves[0], evidenceHash, M_TDX);
        vm.prank(ops[0]);
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_TDX, sig, "", approvals);
        IConclaveTraining.Operator memory op = training.getOperator(jobId, ops[0]);
        assertEq(op.enclaveKey, enclaves[0], "key");
        assertEq(op.evidenceHash, evidenceHash, "evidence");
        assertEq(op.measurement, M_TDX, "measurement");
        assertEq(training.operatorOfKey(jobId, enclaves[0]), ops[0], "key owner");
        assertEq(training.getJob(jobId).activeOperators, 1, "active");
    }

    function test_registerEnclave_whileRunning() public {
        uint256 jobId = _running(NATIVE, 2);
        _join(jobId, 3);
        _register(jobId, 3);
        assertEq(training.operatorOfKey(jobId, enclaves[3]), ops[3], "key owner");
    }

    function test_registerEnclave_revertsOnUnknownJob() public {
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownJob.selector, 5));
        training.registerEnclave(5, enclaves[0], bytes32(uint256(1)), M_SNP, "", "", new bytes[](0));
    }

    function test_registerEnclave_revertsOnCancelledJob() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        vm.prank(customer);
        training.cancelJob(jobId);
        bytes memory sig = _registrationSig(jobId, 0, M_SNP);
        vm.prank(ops[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongJobStatus.selector, jobId, IConclaveTraining.JobStatus.Cancelled
            )
        );
        training.registerEnclave(jobId, enclaves[0], bytes32(uint256(1)), M_SNP, sig, "", new bytes[](0));
    }

    function test_registerEnclave_revertsAfterDeadline() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        uint64 deadline = training.getJob(jobId).deadline;
        vm.warp(deadline);
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.DeadlinePassed.selector, deadline));
        training.registerEnclave(jobId, enclaves[0], bytes32(uint256(1)), M_SNP, "", "", new bytes[](0));
    }

    function test_registerEnclave_revertsWhenNotJoined() public {
        uint256 jobId = _createDefault(NATIVE);
        vm.prank(ops[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.None
            )
        );
        training.registerEnclave(jobId, enclaves[0], bytes32(uint256(1)), M_SNP, "", "", new bytes[](0));
    }

    function test_registerEnclave_revertsWhenLeaving() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        vm.prank(ops[0]);
        training.requestLeave(jobId);
        vm.prank(ops[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Leaving
            )
        );
        training.registerEnclave(jobId, enclaves[0], bytes32(uint256(1)), M_SNP, "", "", new bytes[](0));
    }

    function test_registerEnclave_revertsOnSecondKey() public {
        uint256 jobId = _createDefault(NATIVE);
        _joinAndRegister(jobId, 0);
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.KeyAlreadyRegistered.selector, ops[0], enclaves[0]));
        training.registerEnclave(jobId, enclaves[1], bytes32(uint256(1)), M_SNP, "", "", new bytes[](0));
    }

    function test_registerEnclave_revertsOnZeroKey() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        vm.prank(ops[0]);
        vm.expectRevert(IConclaveTraining.ZeroEnclaveKey.selector);
        training.registerEnclave(jobId, address(0), bytes32(uint256(1)), M_SNP, "", "", new bytes[](0));
    }

    function test_registerEnclave_revertsWhenKeyBelongsToAnotherOperator() public {
        uint256 jobId = _createDefault(NATIVE);
        _joinAndRegister(jobId, 0);
        _join(jobId, 1);
        vm.prank(ops[1]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.KeyInUse.selector, enclaves[0]));
        training.registerEnclave(jobId, enclaves[0], bytes32(uint256(1)), M_SNP, "", "", new bytes[](0));
    }

    function test_registerEnclave_revertsOnZeroEvidenceHash() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        vm.prank(ops[0]);
        vm.expectRevert(IConclaveTraining.ZeroHash.selector);
        training.registerEnclave(jobId, enclaves[0], 0, M_SNP, "", "", new bytes[](0));
    }

    function test_registerEnclave_revertsOnMeasurementNotAllowed() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        bytes32 other = keccak256("debug image");
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.MeasurementNotAllowed.selector, other));
        training.registerEnclave(jobId, enclaves[0], bytes32(uint256(1)), other, "", "", new bytes[](0));
    }

    function test_registerEnclave_revertsWhenAnotherKeySigned() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        bytes32 evidenceHash = _evidenceHash(0);
        bytes memory sig = sign(keys[1], training.registrationDigest(jobId, ops[0], evidenceHash, M_SNP));
        vm.prank(ops[0]);
        vm.expectRevert(IConclaveTraining.InvalidSignature.selector);
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, "", new bytes[](0));
    }

    function test_registerEnclave_revertsWhenSignatureNamesAnotherOperator() public {
        // An operator replaying another operator's registration cannot claim its enclave.
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        _join(jobId, 1);
        bytes memory sig = _registrationSig(jobId, 0, M_SNP);
        bytes32 evidenceHash = _evidenceHash(0);
        vm.prank(ops[1]);
        vm.expectRevert(IConclaveTraining.InvalidSignature.selector);
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, "", new bytes[](0));
    }

    function test_registerEnclave_revertsOnMalformedSignature() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        bytes memory sig = _registrationSig(jobId, 0, M_SNP);
        bytes memory short = new bytes(64);
        for (uint256 i; i < 64; ++i) {
            short[i] = sig[i];
        }
        bytes32 evidenceHash = _evidenceHash(0);
        vm.prank(ops[0]);
        vm.expectRevert(IConclaveTraining.InvalidSignature.selector);
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, short, "", new bytes[](0));
    }

    // ---- verifier approvals ----

    /// @dev Operator 0 registers its enclave with the approvals of the verifiers in `mask`;
    /// `err`, when not empty, is the revert expected.
    function _registerApprovedBy(uint256 jobId, uint256 mask, bytes memory err) internal {
        bytes memory sig = _registrationSig(jobId, 0, M_SNP);
        bytes32 evidenceHash = _evidenceHash(0);
        bytes[] memory approvals = _approvalsBy(jobId, ops[0], enclaves[0], evidenceHash, M_SNP, mask);
        vm.prank(ops[0]);
        if (err.length > 0) vm.expectRevert(err);
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, "", approvals);
    }

    function test_registerEnclave_anyThresholdOfTheVerifiersApproves() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        _registerApprovedBy(jobId, 5, ""); // verifiers 0 and 2
        _join(jobId, 1);
        bytes memory sig = _registrationSig(jobId, 1, M_SNP);
        bytes32 evidenceHash = _evidenceHash(1);
        bytes[] memory approvals = _approvalsBy(jobId, ops[1], enclaves[1], evidenceHash, M_SNP, 7); // all three
        vm.prank(ops[1]);
        training.registerEnclave(jobId, enclaves[1], evidenceHash, M_SNP, sig, "", approvals);
        assertEq(training.getJob(jobId).activeOperators, 2, "both registered");
    }

    function test_registerEnclave_revertsWithoutApprovals() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        _registerApprovedBy(
            jobId, 0, abi.encodeWithSelector(IConclaveTraining.NotEnoughApprovals.selector, 0, THRESHOLD)
        );
    }

    function test_registerEnclave_revertsBelowTheThreshold() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        _registerApprovedBy(
            jobId, 2, abi.encodeWithSelector(IConclaveTraining.NotEnoughApprovals.selector, 1, THRESHOLD)
        );
    }

    function test_registerEnclave_revertsOnAnApprovalByANonVerifier() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        bytes memory sig = _registrationSig(jobId, 0, M_SNP);
        bytes32 evidenceHash = _evidenceHash(0);
        bytes[] memory approvals = _approvals(jobId, ops[0], enclaves[0], evidenceHash, M_SNP);
        approvals[1] = sign(0xbeef, training.approvalDigest(jobId, ops[0], enclaves[0], evidenceHash, M_SNP));
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownApprover.selector, vm.addr(0xbeef)));
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, "", approvals);
    }

    function test_registerEnclave_revertsOnARepeatedApproval() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        bytes memory sig = _registrationSig(jobId, 0, M_SNP);
        bytes32 evidenceHash = _evidenceHash(0);
        bytes[] memory approvals = _approvalsBy(jobId, ops[0], enclaves[0], evidenceHash, M_SNP, 1);
        bytes[] memory twice = new bytes[](2);
        twice[0] = approvals[0];
        twice[1] = approvals[0];
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.DuplicateApproval.selector, verifierAddrs[0]));
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, "", twice);
    }

    function test_registerEnclave_revertsOnAMalformedApproval() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        bytes memory sig = _registrationSig(jobId, 0, M_SNP);
        bytes32 evidenceHash = _evidenceHash(0);
        bytes[] memory approvals = new bytes[](1);
        approvals[0] = hex"00";
        vm.prank(ops[0]);
        vm.expectRevert(IConclaveTraining.InvalidSignature.selector);
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, "", approvals);
    }

    function test_registerEnclave_approvalsBindTheirFields() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        _join(jobId, 1);
        bytes memory sig = _registrationSig(jobId, 0, M_SNP);
        bytes32 evidenceHash = _evidenceHash(0);
        bytes[][5] memory wrong = [
            _approvals(jobId, ops[1], enclaves[0], evidenceHash, M_SNP), // another operator
            _approvals(jobId, ops[0], enclaves[1], evidenceHash, M_SNP), // another key
            _approvals(jobId, ops[0], enclaves[0], _evidenceHash(1), M_SNP), // other evidence
            _approvals(jobId, ops[0], enclaves[0], evidenceHash, M_TDX), // another measurement
            _approvals(jobId + 1, ops[0], enclaves[0], evidenceHash, M_SNP) // another job
        ];
        for (uint256 k; k < 5; ++k) {
            vm.prank(ops[0]);
            vm.expectRevert(); // UnknownApprover(some address the digest recovers to)
            training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, "", wrong[k]);
        }
        bytes32 digest = training.approvalDigest(jobId, ops[0], enclaves[0], evidenceHash, M_SNP);
        bytes32 otherDigest = training.approvalDigest(jobId, ops[0], enclaves[1], evidenceHash, M_SNP);
        assertTrue(digest != otherDigest, "the key is in the digest");
    }

    function test_verifiers_areListedInOrder() public {
        uint256 jobId = _createDefault(NATIVE);
        address[] memory vs = training.verifiers(jobId);
        assertEq(vs.length, 3, "count");
        assertEq(vs[2], verifierAddrs[2], "last");
    }

    // ---- on-chain evidence verifier ----

    /// @dev A job that checks evidence only through the on-chain hook (no verifier approvals).
    function _verifiedJob() internal returns (uint256 jobId, MockEvidenceVerifier verifier) {
        verifier = new MockEvidenceVerifier();
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.evidenceVerifier = address(verifier);
        p.verifiers = new address[](0);
        p.verifierThreshold = 0;
        jobId = _create(p);
        _join(jobId, 0);
    }

    function test_registerEnclave_withVerifierAndApprovalsBothChecked() public {
        MockEvidenceVerifier verifier = new MockEvidenceVerifier();
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.evidenceVerifier = address(verifier);
        uint256 jobId = _create(p);
        _join(jobId, 0);
        bytes memory evidence = "a quote";
        bytes32 evidenceHash = sha256(evidence);
        bytes memory sig = sign(keys[0], training.registrationDigest(jobId, ops[0], evidenceHash, M_SNP));
        bytes[] memory approvals = _approvals(jobId, ops[0], enclaves[0], evidenceHash, M_SNP);
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.EvidenceRejected.selector, address(verifier)));
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, "not the quote", approvals);
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotEnoughApprovals.selector, 0, THRESHOLD));
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, evidence, new bytes[](0));
        vm.prank(ops[0]);
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, evidence, approvals);
        assertEq(training.operatorOfKey(jobId, enclaves[0]), ops[0], "registered");
    }

    function test_registerEnclave_withVerifierAcceptingTheEvidence() public {
        (uint256 jobId,) = _verifiedJob();
        bytes memory evidence = "a quote";
        bytes32 evidenceHash = sha256(evidence);
        bytes memory sig = sign(keys[0], training.registrationDigest(jobId, ops[0], evidenceHash, M_SNP));
        vm.prank(ops[0]);
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, evidence, new bytes[](0));
        assertEq(training.operatorOfKey(jobId, enclaves[0]), ops[0], "registered");
    }

    function test_registerEnclave_revertsWhenVerifierRejects() public {
        (uint256 jobId, MockEvidenceVerifier verifier) = _verifiedJob();
        bytes memory evidence = hex"ff01";
        bytes32 evidenceHash = sha256(evidence);
        bytes memory sig = sign(keys[0], training.registrationDigest(jobId, ops[0], evidenceHash, M_SNP));
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.EvidenceRejected.selector, address(verifier)));
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, evidence, new bytes[](0));
    }

    function test_registerEnclave_revertsWhenVerifierAnswersWrongMagic() public {
        (uint256 jobId, MockEvidenceVerifier verifier) = _verifiedJob();
        bytes memory evidence = hex"ee";
        bytes32 evidenceHash = sha256(evidence);
        bytes memory sig = sign(keys[0], training.registrationDigest(jobId, ops[0], evidenceHash, M_SNP));
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.EvidenceRejected.selector, address(verifier)));
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, evidence, new bytes[](0));
    }

    function test_registerEnclave_bubblesVerifierRevert() public {
        (uint256 jobId,) = _verifiedJob();
        bytes memory evidence = hex"dd";
        bytes32 evidenceHash = sha256(evidence);
        bytes memory sig = sign(keys[0], training.registrationDigest(jobId, ops[0], evidenceHash, M_SNP));
        vm.prank(ops[0]);
        vm.expectRevert(MockEvidenceVerifier.BadEvidence.selector);
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, sig, evidence, new bytes[](0));
    }

    // ---- requestLeave ----

    function test_requestLeave_startsUnbondingAndDeactivates() public {
        uint256 jobId = _running(NATIVE, 2);
        uint64 unbondsAt = uint64(block.timestamp) + UNBONDING;
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.LeaveRequested(jobId, ops[1], unbondsAt);
        vm.prank(ops[1]);
        training.requestLeave(jobId);
        IConclaveTraining.Operator memory op = training.getOperator(jobId, ops[1]);
        assertTrue(op.status == IConclaveTraining.OperatorStatus.Leaving, "leaving");
        assertEq(op.unbondsAt, unbondsAt, "unbonds at");
        assertEq(training.getJob(jobId).activeOperators, 1, "active");
    }

    function test_requestLeave_withoutKeyKeepsActiveCount() public {
        uint256 jobId = _createDefault(NATIVE);
        _joinAndRegister(jobId, 0);
        _join(jobId, 1);
        vm.prank(ops[1]);
        training.requestLeave(jobId);
        assertEq(training.getJob(jobId).activeOperators, 1, "active");
    }

    function test_requestLeave_revertsOnUnknownJob() public {
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownJob.selector, 2));
        training.requestLeave(2);
    }

    function test_requestLeave_revertsWhenNotJoined() public {
        uint256 jobId = _createDefault(NATIVE);
        vm.prank(ops[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.None
            )
        );
        training.requestLeave(jobId);
    }

    function test_requestLeave_revertsTwice() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        vm.prank(ops[0]);
        training.requestLeave(jobId);
        vm.prank(ops[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Leaving
            )
        );
        training.requestLeave(jobId);
    }

    function test_requestLeave_revertsWhenSlashed() public {
        uint256 jobId = _running(NATIVE, 2);
        _equivocate(jobId, 0, 2);
        vm.prank(ops[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Slashed
            )
        );
        training.requestLeave(jobId);
    }

    // ---- withdraw ----

    function test_withdraw_returnsStakeAfterUnbonding() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        _leaveAndUnbond(jobId, 0);
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.Withdrawn(jobId, ops[0], STAKE, 0);
        vm.prank(ops[0]);
        training.withdraw(jobId);
        assertEq(ops[0].balance, STAKE, "stake back");
        IConclaveTraining.Operator memory op = training.getOperator(jobId, ops[0]);
        assertTrue(op.status == IConclaveTraining.OperatorStatus.Exited, "exited");
        assertEq(op.stake, 0, "no stake held");
    }

    function test_withdraw_erc20_fromCancelledJob() public {
        uint256 jobId = _createDefault(address(token));
        _joinAndRegister(jobId, 0);
        vm.prank(customer);
        training.cancelJob(jobId);
        _leaveAndUnbond(jobId, 0);
        vm.prank(ops[0]);
        training.withdraw(jobId);
        assertEq(token.balanceOf(ops[0]), STAKE, "stake back");
        assertEq(token.balanceOf(address(training)), 0, "nothing held");
        assertTrue(training.getOperator(jobId, ops[0]).paid, "settled with nothing to pay");
    }

    function test_withdraw_stakeAndPaymentInOneCallAfterSettlement() public {
        uint256 jobId = _running(NATIVE, 2);
        for (uint64 r = 2; r <= 6; r += 2) {
            _certifyAll(jobId, r, 2);
        }
        vm.warp(block.timestamp + GRACE);
        assertTrue(training.isSettled(jobId), "settled");
        _leaveAndUnbond(jobId, 0);
        assertEq(training.paymentOf(jobId, ops[0]), ESCROW / 2, "payment due");
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.Withdrawn(jobId, ops[0], STAKE, ESCROW / 2);
        vm.prank(ops[0]);
        training.withdraw(jobId);
        assertEq(ops[0].balance, STAKE + ESCROW / 2, "stake and payment");
        assertEq(training.paymentOf(jobId, ops[0]), 0, "paid");
        assertTrue(training.getOperator(jobId, ops[0]).paid, "paid flag");
    }

    function test_withdraw_stakeFirstThenPaymentAfterSettlement() public {
        uint256 jobId = _running(NATIVE, 3);
        _certifyAll(jobId, 2, 3);
        _leaveAndUnbond(jobId, 0);
        vm.prank(ops[0]);
        training.withdraw(jobId); // stake only: the job has not settled
        assertEq(ops[0].balance, STAKE, "stake");
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotSettled.selector, jobId));
        training.withdraw(jobId);

        _certify(jobId, 4, 6, 2);
        _certify(jobId, 6, 6, 2); // completes
        vm.warp(block.timestamp + GRACE);
        // 3 rounds, credits: op0 1, op1 3, op2 1 -> op0 gets 1/5 of the escrow.
        vm.prank(ops[0]);
        training.withdraw(jobId);
        assertEq(ops[0].balance, STAKE + ESCROW / 5, "stake and payment");
        vm.prank(ops[0]);
        vm.expectRevert(IConclaveTraining.NothingToWithdraw.selector);
        training.withdraw(jobId);
    }

    function test_withdraw_revertsOnUnknownJob() public {
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownJob.selector, 4));
        training.withdraw(4);
    }

    function test_withdraw_revertsWhenNotJoined() public {
        uint256 jobId = _createDefault(NATIVE);
        vm.prank(ops[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.None
            )
        );
        training.withdraw(jobId);
    }

    function test_withdraw_revertsWithoutLeaving() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        vm.prank(ops[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Joined
            )
        );
        training.withdraw(jobId);
    }

    function test_withdraw_revertsWhileUnbonding() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        vm.prank(ops[0]);
        training.requestLeave(jobId);
        uint64 unbondsAt = uint64(block.timestamp) + UNBONDING;
        vm.warp(unbondsAt - 1);
        vm.prank(ops[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.StillUnbonding.selector, unbondsAt));
        training.withdraw(jobId);
    }

    function test_withdraw_revertsWhenSlashed() public {
        uint256 jobId = _running(NATIVE, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 0, 2, "a", "s");
        vm.prank(reporter);
        training.slash(jobId, 2, a, b);
        vm.prank(ops[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Slashed
            )
        );
        training.withdraw(jobId);
    }

    function test_withdraw_revertsWithNothingLeftWithoutCredits() public {
        uint256 jobId = _running(NATIVE, 2);
        _leaveAndUnbond(jobId, 1);
        vm.prank(ops[1]);
        training.withdraw(jobId);
        vm.prank(ops[1]);
        vm.expectRevert(IConclaveTraining.NothingToWithdraw.selector);
        training.withdraw(jobId);
    }

    function test_withdraw_reentryIsRefused() public {
        uint256 jobId = _createDefault(NATIVE);
        ReentrantOperator attacker = new ReentrantOperator(training);
        vm.deal(address(attacker), STAKE);
        attacker.joinJob{value: STAKE}(jobId);
        attacker.leave();
        vm.warp(block.timestamp + UNBONDING);
        // The nested withdraw hits the guard; sendValue bubbles the guard's error.
        vm.expectRevert(ReentrancyGuard.ReentrancyGuardReentrantCall.selector);
        attacker.withdrawTwice();
        assertEq(address(training).balance, ESCROW + STAKE, "nothing left the contract");
    }

    function test_withdraw_revertsWhenReceiverRefusesNative() public {
        uint256 jobId = _createDefault(NATIVE);
        ReentrantOperator receiver = new ReentrantOperator(training);
        vm.deal(address(receiver), STAKE);
        receiver.joinJob{value: STAKE}(jobId);
        receiver.leave();
        vm.warp(block.timestamp + UNBONDING);
        // A contract that cannot take the payout only blocks itself.
        vm.etch(address(receiver), hex"60006000fd"); // revert(0, 0)
        vm.prank(address(receiver));
        vm.expectRevert(Errors.FailedCall.selector);
        training.withdraw(jobId);
    }
}
