// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConclaveTraining} from "../src/ConclaveTraining.sol";
import {IConclaveTraining} from "../src/IConclaveTraining.sol";
import {Fixture} from "./utils/Fixture.sol";

/// @notice Enclave statements: EIP-712 encoding, submitCheckpoint, slash, and the views.
contract CheckpointsTest is Fixture {
    // ---- EIP-712: the exact strings and a fixed vector for other implementations ----

    function test_typehashes_areTheDocumentedTypeStrings() public view {
        assertEq(
            training.CHECKPOINT_TYPEHASH(),
            keccak256("Checkpoint(uint256 jobId,uint64 round,bytes32 modelHash,bytes32 receiptHash)"),
            "checkpoint type"
        );
        assertEq(
            training.REGISTRATION_TYPEHASH(),
            keccak256("EnclaveRegistration(uint256 jobId,address operator,bytes32 evidenceHash,bytes32 measurement)"),
            "registration type"
        );
    }

    function test_domainSeparator_isEip712WithNameVersionChainAndContract() public view {
        bytes32 expected = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("ConclaveTraining"),
                keccak256("1"),
                block.chainid,
                address(training)
            )
        );
        assertEq(training.domainSeparator(), expected, "domain separator");
        (, string memory name, string memory version, uint256 chainId, address verifying,,) =
            training.eip712Domain();
        assertEq(keccak256(bytes(name)), keccak256("ConclaveTraining"), "name");
        assertEq(keccak256(bytes(version)), keccak256("1"), "version");
        assertEq(chainId, block.chainid, "chain id");
        assertEq(verifying, address(training), "verifying contract");
    }

    function test_domainSeparator_followsTheChainId() public {
        bytes32 before = training.domainSeparator();
        vm.chainId(10);
        assertTrue(training.domainSeparator() != before, "a fork gets another domain");
    }

    /// @dev Computed independently (keccak256 in JavaScript) for chain 31337 and the contract at
    /// 0x5615dEB798BB3E4dFa0139dFa1b3D433Cc23b72f; contracts/README.md lists the same values.
    function test_digests_matchTheDocumentedVector() public {
        assertEq(block.chainid, 31337, "chain id");
        assertEq(address(training), 0x5615dEB798BB3E4dFa0139dFa1b3D433Cc23b72f, "contract address");
        assertEq(
            training.domainSeparator(), 0x77a75ff733d1c03bc7450083ee85657d0d668b6cddd3c46fe7e76eaf737af858, "domain"
        );
        bytes32 model = bytes32(0x1111111111111111111111111111111111111111111111111111111111111111);
        bytes32 receipt = bytes32(0x2222222222222222222222222222222222222222222222222222222222222222);
        bytes32 digest = training.checkpointDigest(1, 2, model, receipt);
        assertEq(digest, 0x31b0e25dec00c3f4a3e3ad210736ee6c13d0bddb87b9111f96580dd67c4c0e98, "checkpoint digest");
        assertEq(
            training.registrationDigest(
                1,
                0x1111111111111111111111111111111111111111,
                bytes32(0x3333333333333333333333333333333333333333333333333333333333333333),
                bytes32(0x4444444444444444444444444444444444444444444444444444444444444444)
            ),
            0x82605844d1b3c00e740122f42929605203a769f099715cbec4a94100db82938b,
            "registration digest"
        );
        // RFC 6979 signatures are deterministic: key 1 signs the checkpoint digest as below.
        assertEq(vm.addr(1), 0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf, "address of key 1");
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(1, digest);
        assertEq(r, 0xf4ba97165b1591f02b0a995262da58e2b13c73f57a23dfc2481fe60fcb66f38c, "r");
        assertEq(s, 0x56b4f6af50a3dc83f68bf250ae0e1c28179143c066e00c57e502d83393535059, "s");
        assertEq(v, 28, "v");
    }

    // ---- submitCheckpoint ----

    function test_submitCheckpoint_firstValidStatementIsAccepted() public {
        uint256 jobId = _running(NATIVE, 2);
        bytes32 model = _model(jobId, 2);
        bytes32 receipt = _receipt(0, 2);
        bytes memory sig = _checkpointSig(jobId, 0, 2, model, receipt);
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.CheckpointSubmitted(jobId, 2, ops[0], enclaves[0], model, receipt, true);
        vm.prank(stranger);
        training.submitCheckpoint(jobId, 2, model, receipt, sig);

        IConclaveTraining.Checkpoint memory cp = training.getCheckpoint(jobId, 2);
        assertEq(cp.modelHash, model, "model");
        assertEq(cp.receiptHash, receipt, "receipt");
        assertEq(cp.operator, ops[0], "operator");
        assertEq(cp.acceptedAt, block.timestamp, "accepted at");
        IConclaveTraining.Job memory job = training.getJob(jobId);
        assertEq(job.latestRound, 2, "latest round");
        assertEq(job.acceptedCheckpoints, 1, "accepted checkpoints");
        assertEq(job.creditedRounds, 1, "credited");
        IConclaveTraining.Operator memory op = training.getOperator(jobId, ops[0]);
        assertEq(op.lastRound, 2, "operator's last round");
        assertEq(op.credits, 1, "operator's credits");
    }

    function test_submitCheckpoint_matchingStatementFromAnotherOperatorIsCredited() public {
        uint256 jobId = _running(NATIVE, 2);
        _submit(jobId, 0, 2);
        bytes32 model = _model(jobId, 2);
        bytes32 receipt = _receipt(1, 2); // its own receipt, the same model
        bytes memory sig = _checkpointSig(jobId, 1, 2, model, receipt);
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.CheckpointSubmitted(jobId, 2, ops[1], enclaves[1], model, receipt, false);
        training.submitCheckpoint(jobId, 2, model, receipt, sig);
        assertEq(training.getOperator(jobId, ops[1]).credits, 1, "credited");
        assertEq(training.getCheckpoint(jobId, 2).operator, ops[0], "first one stays accepted");
        assertEq(training.getJob(jobId).acceptedCheckpoints, 1, "one accepted round");
        assertEq(training.getJob(jobId).creditedRounds, 2, "two credits");
    }

    function test_submitCheckpoint_lateMatchingStatementCountsAfterLaterRounds() public {
        uint256 jobId = _running(NATIVE, 2);
        _submit(jobId, 0, 2);
        _submit(jobId, 0, 4);
        _submit(jobId, 1, 2); // operator 1 is behind the job but its own rounds go forward
        assertEq(training.getOperator(jobId, ops[1]).credits, 1, "credited");
    }

    function test_submitCheckpoint_finalRoundCompletesTheJob() public {
        uint256 jobId = _running(NATIVE, 2);
        _submit(jobId, 0, 2);
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.JobCompleted(jobId, 6, _model(jobId, 6));
        _submit(jobId, 0, 6); // rounds may be skipped
        IConclaveTraining.Job memory job = training.getJob(jobId);
        assertTrue(job.status == IConclaveTraining.JobStatus.Completed, "completed");
        assertEq(job.completedAt, block.timestamp, "completed at");
        assertTrue(training.commitsOpen(jobId), "grace: matching statements still count");
        assertFalse(training.isSettled(jobId), "not settled during the grace");
        _submit(jobId, 1, 6);
        assertEq(training.getOperator(jobId, ops[1]).credits, 1, "credited in the grace");
        vm.warp(block.timestamp + GRACE);
        assertFalse(training.commitsOpen(jobId), "closed after the grace");
        assertTrue(training.isSettled(jobId), "settled");
    }

    function test_submitCheckpoint_revertsOnUnknownJob() public {
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownJob.selector, 1));
        training.submitCheckpoint(1, 2, "m", "r", "");
    }

    function test_submitCheckpoint_revertsBeforeStart() public {
        uint256 jobId = _createDefault(NATIVE);
        _joinAndRegister(jobId, 0);
        bytes memory sig = _checkpointSig(jobId, 0, 2, "m", "r");
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.CommitsClosed.selector, jobId));
        training.submitCheckpoint(jobId, 2, "m", "r", sig);
    }

    function test_submitCheckpoint_revertsOnCancelledJob() public {
        uint256 jobId = _createDefault(NATIVE);
        vm.prank(customer);
        training.cancelJob(jobId);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.CommitsClosed.selector, jobId));
        training.submitCheckpoint(jobId, 2, "m", "r", "");
    }

    function test_submitCheckpoint_revertsAfterDeadline() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.warp(training.getJob(jobId).deadline);
        bytes memory sig = _checkpointSig(jobId, 0, 2, "m", "r");
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.CommitsClosed.selector, jobId));
        training.submitCheckpoint(jobId, 2, "m", "r", sig);
    }

    function test_submitCheckpoint_revertsAfterTheGrace() public {
        uint256 jobId = _running(NATIVE, 2);
        _submit(jobId, 0, 6);
        vm.warp(block.timestamp + GRACE);
        bytes32 model = _model(jobId, 6);
        bytes memory sig = _checkpointSig(jobId, 1, 6, model, "r");
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.CommitsClosed.selector, jobId));
        training.submitCheckpoint(jobId, 6, model, "r", sig);
    }

    function test_submitCheckpoint_revertsOnZeroModelHash() public {
        uint256 jobId = _running(NATIVE, 2);
        bytes memory sig = _checkpointSig(jobId, 0, 2, 0, "r");
        vm.expectRevert(IConclaveTraining.ZeroHash.selector);
        training.submitCheckpoint(jobId, 2, 0, "r", sig);
    }

    function test_submitCheckpoint_revertsOnRoundZero() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotACheckpointRound.selector, 0));
        training.submitCheckpoint(jobId, 0, "m", "r", "");
    }

    function test_submitCheckpoint_revertsBetweenCheckpoints() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotACheckpointRound.selector, 3));
        training.submitCheckpoint(jobId, 3, "m", "r", "");
    }

    function test_submitCheckpoint_revertsPastTheLastRound() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotACheckpointRound.selector, 8));
        training.submitCheckpoint(jobId, 8, "m", "r", "");
    }

    function test_submitCheckpoint_revertsOnMalformedSignature() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.expectRevert(IConclaveTraining.InvalidSignature.selector);
        training.submitCheckpoint(jobId, 2, "m", "r", new bytes(65)); // v = 0
    }

    function test_submitCheckpoint_revertsOnHighS() public {
        uint256 jobId = _running(NATIVE, 2);
        bytes32 digest = training.checkpointDigest(jobId, 2, "m", "r");
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(keys[0], digest);
        // The same signature with s' = n - s and the other parity recovers the same key on
        // plain ecrecover; it must be refused so statements have one encoding.
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        bytes memory flipped = abi.encodePacked(r, bytes32(n - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        assertEq(ecrecover(digest, v == 27 ? 28 : 27, r, bytes32(n - uint256(s))), enclaves[0], "malleable");
        vm.expectRevert(IConclaveTraining.InvalidSignature.selector);
        training.submitCheckpoint(jobId, 2, "m", "r", flipped);
    }

    function test_submitCheckpoint_revertsOnUnregisteredSigner() public {
        uint256 jobId = _running(NATIVE, 2);
        uint256 rogue = 0xbad;
        bytes memory sig = sign(rogue, training.checkpointDigest(jobId, 2, "m", "r"));
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownEnclaveKey.selector, vm.addr(rogue)));
        training.submitCheckpoint(jobId, 2, "m", "r", sig);
    }

    function test_submitCheckpoint_revertsWhenTheStatementWasForAnotherRound() public {
        uint256 jobId = _running(NATIVE, 2);
        bytes memory sig = _checkpointSig(jobId, 0, 2, "m", "r");
        // Replayed for round 4 it recovers some other address, unknown to the job.
        bytes32 digest4 = training.checkpointDigest(jobId, 4, "m", "r");
        bytes32 r;
        bytes32 s;
        assembly {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
        }
        address recovered = ecrecover(digest4, uint8(sig[64]), r, s);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownEnclaveKey.selector, recovered));
        training.submitCheckpoint(jobId, 4, "m", "r", sig);
    }

    function test_submitCheckpoint_revertsWhenRoundGoesBackForTheOperator() public {
        uint256 jobId = _running(NATIVE, 2);
        _submit(jobId, 0, 4);
        bytes32 model = _model(jobId, 2);
        bytes memory sig = _checkpointSig(jobId, 0, 2, model, "r");
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.RoundNotAfter.selector, 2, 4));
        training.submitCheckpoint(jobId, 2, model, "r", sig);
    }

    function test_submitCheckpoint_revertsOnTheSameStatementTwice() public {
        uint256 jobId = _running(NATIVE, 2);
        _submit(jobId, 0, 2);
        bytes32 model = _model(jobId, 2);
        bytes32 receipt = _receipt(0, 2);
        bytes memory sig = _checkpointSig(jobId, 0, 2, model, receipt);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.AlreadySubmitted.selector, 2));
        training.submitCheckpoint(jobId, 2, model, receipt, sig);
    }

    function test_submitCheckpoint_revertsWhenANewRoundIsBehindTheJob() public {
        uint256 jobId = _running(NATIVE, 2);
        _submit(jobId, 0, 4); // round 2 was skipped
        bytes32 model = _model(jobId, 2);
        bytes memory sig = _checkpointSig(jobId, 1, 2, model, "r");
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.RoundBehind.selector, 2, 4));
        training.submitCheckpoint(jobId, 2, model, "r", sig);
    }

    function test_submitCheckpoint_revertsOnAnotherModelForAnAcceptedRound() public {
        uint256 jobId = _running(NATIVE, 2);
        _submit(jobId, 0, 2);
        bytes memory sig = _checkpointSig(jobId, 1, 2, "other model", "r");
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.ModelMismatch.selector, 2, _model(jobId, 2)));
        training.submitCheckpoint(jobId, 2, "other model", "r", sig);
    }

    function test_submitCheckpoint_revertsForALeavingOperator() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.prank(ops[0]);
        training.requestLeave(jobId);
        bytes32 model = _model(jobId, 2);
        bytes memory sig = _checkpointSig(jobId, 0, 2, model, "r");
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Leaving
            )
        );
        training.submitCheckpoint(jobId, 2, model, "r", sig);
    }

    function test_submitCheckpoint_conflictingStatementSlashesOnTheSpot() public {
        uint256 jobId = _running(NATIVE, 2);
        _submit(jobId, 0, 2);
        bytes32 model = _model(jobId, 2);
        bytes32 first = keccak256(abi.encode(training.CHECKPOINT_TYPEHASH(), jobId, uint64(2), model, _receipt(0, 2)));
        bytes32 second = keccak256(abi.encode(training.CHECKPOINT_TYPEHASH(), jobId, uint64(2), model, bytes32("x")));
        bytes memory sig = _checkpointSig(jobId, 0, 2, model, "x");
        uint256 reward = STAKE * REWARD_BPS / 10_000;
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.Equivocation(jobId, 2, ops[0], enclaves[0], first, second);
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.OperatorSlashed(jobId, ops[0], reporter, STAKE, reward);
        vm.prank(reporter);
        training.submitCheckpoint(jobId, 2, model, "x", sig);

        assertEq(reporter.balance, reward, "reporter rewarded");
        IConclaveTraining.Operator memory op = training.getOperator(jobId, ops[0]);
        assertTrue(op.status == IConclaveTraining.OperatorStatus.Slashed, "slashed");
        assertEq(op.stake, 0, "stake taken");
        IConclaveTraining.Job memory job = training.getJob(jobId);
        assertEq(job.activeOperators, 1, "active");
        assertEq(job.creditedRounds, 0, "its credit left the split");
        assertEq(job.slashedStakeOwed, STAKE - reward, "owed to the customer");
        assertEq(training.getCheckpoint(jobId, 2).modelHash, model, "the accepted checkpoint stays");
    }

    function test_submitCheckpoint_conflictingStatementFromALeavingOperatorSlashes() public {
        uint256 jobId = _running(NATIVE, 2);
        _submit(jobId, 0, 2);
        vm.prank(ops[0]);
        training.requestLeave(jobId);
        bytes memory sig = _checkpointSig(jobId, 0, 2, "forked", "x");
        vm.prank(reporter);
        training.submitCheckpoint(jobId, 2, "forked", "x", sig);
        assertTrue(
            training.getOperator(jobId, ops[0]).status == IConclaveTraining.OperatorStatus.Slashed, "slashed"
        );
    }

    function test_submitCheckpoint_conflictingStatementAfterSlashingReverts() public {
        uint256 jobId = _running(NATIVE, 2);
        _submit(jobId, 0, 2);
        bytes memory sig = _checkpointSig(jobId, 0, 2, "forked", "x");
        vm.prank(reporter);
        training.submitCheckpoint(jobId, 2, "forked", "x", sig);
        bytes memory sig2 = _checkpointSig(jobId, 0, 2, "forked again", "x");
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Slashed
            )
        );
        training.submitCheckpoint(jobId, 2, "forked again", "x", sig2);
    }

    function test_submitCheckpoint_revertsForASlashedOperatorsNewRound() public {
        uint256 jobId = _running(NATIVE, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 0, 2, "b", "r");
        vm.prank(reporter);
        training.slash(jobId, 2, a, b);
        bytes32 model = _model(jobId, 4);
        bytes memory sig = _checkpointSig(jobId, 0, 4, model, "r");
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Slashed
            )
        );
        training.submitCheckpoint(jobId, 4, model, "r", sig);
    }

    // ---- slash ----

    function test_slash_takesTheStakeAndRewardsTheReporter() public {
        uint256 jobId = _running(address(token), 3);
        _submit(jobId, 2, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 2, 4, "model a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 2, 4, "model b", "r");
        uint256 reward = STAKE * REWARD_BPS / 10_000;
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.Equivocation(
            jobId,
            4,
            ops[2],
            enclaves[2],
            keccak256(abi.encode(training.CHECKPOINT_TYPEHASH(), jobId, uint64(4), bytes32("model a"), bytes32("r"))),
            keccak256(abi.encode(training.CHECKPOINT_TYPEHASH(), jobId, uint64(4), bytes32("model b"), bytes32("r")))
        );
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.OperatorSlashed(jobId, ops[2], reporter, STAKE, reward);
        vm.prank(reporter);
        training.slash(jobId, 4, a, b);
        assertEq(token.balanceOf(reporter), reward, "reward");
        IConclaveTraining.Job memory job = training.getJob(jobId);
        assertEq(job.slashedStakeOwed, STAKE - reward, "owed to customer");
        assertEq(job.activeOperators, 2, "active");
        assertEq(job.creditedRounds, 0, "forfeited credits leave the split before settlement");
        assertEq(job.unpaidCredits, 0, "unpaid credits");
        assertEq(training.paymentOf(jobId, ops[2]), 0, "never paid");
    }

    function test_slash_aLeavingOperator() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.prank(ops[1]);
        training.requestLeave(jobId);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 1, 2, "a", "r1");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 1, 2, "a", "r2");
        vm.prank(reporter);
        training.slash(jobId, 2, a, b);
        assertTrue(
            training.getOperator(jobId, ops[1]).status == IConclaveTraining.OperatorStatus.Slashed, "slashed"
        );
        assertEq(training.getJob(jobId).activeOperators, 1, "leaving was already inactive");
    }

    function test_slash_anOperatorOfACancelledJob() public {
        uint256 jobId = _createDefault(NATIVE);
        _joinAndRegister(jobId, 0);
        vm.prank(customer);
        training.cancelJob(jobId);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 0, 2, "b", "r");
        vm.prank(reporter);
        training.slash(jobId, 2, a, b);
        assertEq(training.refundable(jobId), STAKE - STAKE * REWARD_BPS / 10_000, "owed to customer");
    }

    function test_slash_withFullReporterReward() public {
        training = new ConclaveTraining(UNBONDING, GRACE, 10_000);
        uint256 jobId = _running(NATIVE, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 0, 2, "b", "r");
        vm.prank(reporter);
        training.slash(jobId, 2, a, b);
        assertEq(reporter.balance, STAKE, "all to the reporter");
        assertEq(training.getJob(jobId).slashedStakeOwed, 0, "nothing to the customer");
    }

    function test_slash_revertsOnUnknownJob() public {
        IConclaveTraining.SignedCheckpoint memory a;
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownJob.selector, 1));
        training.slash(1, 2, a, a);
    }

    function test_slash_revertsOnTheSameStatement() public {
        uint256 jobId = _running(NATIVE, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        vm.expectRevert(IConclaveTraining.NotConflicting.selector);
        training.slash(jobId, 2, a, a);
    }

    function test_slash_revertsOnMalformedSignature() public {
        uint256 jobId = _running(NATIVE, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = IConclaveTraining.SignedCheckpoint("b", "r", hex"01");
        vm.expectRevert(IConclaveTraining.InvalidSignature.selector);
        training.slash(jobId, 2, a, b);
    }

    function test_slash_revertsWhenTwoKeysSigned() public {
        uint256 jobId = _running(NATIVE, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 1, 2, "b", "r");
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.DifferentSigners.selector, enclaves[0], enclaves[1]));
        training.slash(jobId, 2, a, b);
    }

    function test_slash_revertsWhenStatementsAreForDifferentRounds() public {
        // Statements for rounds 2 and 4 are not a conflict: checked as round 2, the second
        // signature recovers some other address.
        uint256 jobId = _running(NATIVE, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 0, 4, "b", "r");
        vm.expectRevert(); // DifferentSigners(enclave, some address)
        training.slash(jobId, 2, a, b);
    }

    function test_slash_revertsOnAKeyTheJobDoesNotKnow() public {
        uint256 jobId = _running(NATIVE, 2);
        uint256 other = _createDefault(NATIVE);
        // The enclave's key is registered in `jobId`, not in `other`.
        IConclaveTraining.SignedCheckpoint memory a = _signed(other, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(other, 0, 2, "b", "r");
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownEnclaveKey.selector, enclaves[0]));
        training.slash(other, 2, a, b);
        // Nor can statements signed for one job be used against it in another.
        vm.expectRevert();
        training.slash(jobId, 2, a, b);
    }

    function test_slash_revertsTwice() public {
        uint256 jobId = _running(NATIVE, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 0, 2, "b", "r");
        vm.prank(reporter);
        training.slash(jobId, 2, a, b);
        vm.prank(reporter);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Slashed
            )
        );
        training.slash(jobId, 2, a, b);
    }

    function test_slash_revertsOnceTheStakeIsWithdrawn() public {
        uint256 jobId = _running(NATIVE, 2);
        _leaveAndUnbond(jobId, 0);
        vm.prank(ops[0]);
        training.withdraw(jobId);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 0, 2, "b", "r");
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Exited
            )
        );
        training.slash(jobId, 2, a, b);
    }

    // ---- views on unknown ids ----

    function test_views_ofUnknownIdsAreEmpty() public view {
        assertTrue(training.getJob(42).status == IConclaveTraining.JobStatus.None, "job");
        assertTrue(training.getOperator(42, ops[0]).status == IConclaveTraining.OperatorStatus.None, "operator");
        assertEq(training.getCheckpoint(42, 2).modelHash, 0, "checkpoint");
        assertEq(training.operatorOfKey(42, enclaves[0]), address(0), "key");
        assertEq(training.measurements(42).length, 0, "measurements");
        assertFalse(training.commitsOpen(42), "commits");
        assertFalse(training.isSettled(42), "settled");
        assertEq(training.paymentOf(42, ops[0]), 0, "payment");
        assertEq(training.refundable(42), 0, "refundable");
    }
}
