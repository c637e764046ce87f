// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConclaveTraining} from "../src/ConclaveTraining.sol";
import {IConclaveTraining} from "../src/IConclaveTraining.sol";
import {FeeOnTransferToken} from "./mocks/MockERC20.sol";
import {MockEvidenceVerifier} from "./mocks/MockEvidenceVerifier.sol";
import {Fixture} from "./utils/Fixture.sol";

/// @notice The customer's side: constructor, createJob, cancelJob, startJob, refund.
contract JobsTest is Fixture {
    // ---- constructor ----

    function test_constructor_storesConfiguration() public view {
        assertEq(training.unbondingDelay(), UNBONDING, "unbonding delay");
        assertEq(training.commitGrace(), GRACE, "commit grace");
        assertEq(training.reporterRewardBps(), REWARD_BPS, "reporter reward");
        assertEq(training.nextJobId(), 1, "first job id");
    }

    function test_constructor_acceptsFullRewardToReporter() public {
        ConclaveTraining t = new ConclaveTraining(0, 0, 10_000);
        assertEq(t.reporterRewardBps(), 10_000, "reward");
    }

    function test_constructor_revertsWhenRewardAboveAllOfTheStake() public {
        vm.expectRevert(IConclaveTraining.InvalidConfig.selector);
        new ConclaveTraining(UNBONDING, GRACE, 10_001);
    }

    // ---- createJob ----

    function test_createJob_native_escrowsAndStoresTerms() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        vm.deal(customer, ESCROW);
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.JobCreated(1, customer, NATIVE, p);
        vm.prank(customer);
        uint256 jobId = training.createJob{value: ESCROW}(p);

        assertEq(jobId, 1, "job id");
        assertEq(training.nextJobId(), 2, "next job id");
        assertEq(address(training).balance, ESCROW, "escrow held");
        IConclaveTraining.Job memory job = training.getJob(jobId);
        assertEq(job.customer, customer, "customer");
        assertTrue(job.status == IConclaveTraining.JobStatus.Open, "status open");
        assertEq(job.token, NATIVE, "token");
        assertEq(job.escrow, ESCROW, "escrow");
        assertEq(job.stake, STAKE, "stake");
        assertEq(job.specHash, SPEC, "spec");
        assertEq(job.datasetRoot, DATA_ROOT, "dataset root");
        assertEq(job.minOperators, 2, "min operators");
        assertEq(job.totalRounds, 6, "rounds");
        assertEq(job.checkpointInterval, 2, "interval");
        assertEq(job.deadline, p.deadline, "deadline");
        assertEq(job.evidenceVerifier, address(0), "verifier");
        assertEq(job.quorumBps, QUORUM_BPS, "quorum");
        assertEq(job.verifierThreshold, THRESHOLD, "threshold");
        assertEq(job.minRoundSeconds, ROUND_TIME, "round time");
        address[] memory vs = training.verifiers(jobId);
        assertEq(vs.length, N_VERIFIERS, "verifier count");
        for (uint256 i; i < N_VERIFIERS; ++i) {
            assertEq(vs[i], verifierAddrs[i], "verifier");
        }
        bytes32[] memory ms = training.measurements(jobId);
        assertEq(ms.length, 2, "measurement count");
        assertEq(ms[0], M_SNP, "measurement 0");
        assertEq(ms[1], M_TDX, "measurement 1");
        assertTrue(training.isMeasurementAllowed(jobId, M_SNP), "snp allowed");
        assertTrue(training.isMeasurementAllowed(jobId, M_TDX), "tdx allowed");
        assertFalse(training.isMeasurementAllowed(jobId, keccak256("other")), "other not allowed");
        assertFalse(training.isMeasurementAllowed(jobId + 1, M_SNP), "not allowed in another job");
    }

    function test_createJob_erc20_pullsEscrow() public {
        uint256 jobId = _createDefault(address(token));
        assertEq(token.balanceOf(address(training)), ESCROW, "escrow held");
        assertEq(token.balanceOf(customer), 0, "customer paid");
        assertEq(training.getJob(jobId).token, address(token), "token");
    }

    function test_createJob_idsIncrease() public {
        assertEq(_createDefault(NATIVE), 1, "first");
        assertEq(_createDefault(address(token)), 2, "second");
        assertEq(_createDefault(NATIVE), 3, "third");
    }

    function _expectCreateRevert(IConclaveTraining.JobParams memory p, bytes memory err) internal {
        vm.deal(customer, p.escrow);
        vm.prank(customer);
        vm.expectRevert(err);
        training.createJob{value: p.escrow}(p);
    }

    function test_createJob_revertsOnZeroEscrow() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.escrow = 0;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.ZeroEscrow.selector));
    }

    function test_createJob_revertsOnZeroStake() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.stake = 0;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.ZeroStake.selector));
    }

    function test_createJob_revertsOnZeroMinOperators() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.minOperators = 0;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.ZeroMinOperators.selector));
    }

    function test_createJob_revertsOnZeroSpecHash() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.specHash = 0;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.ZeroHash.selector));
    }

    function test_createJob_revertsOnZeroDatasetRoot() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.datasetRoot = 0;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.ZeroHash.selector));
    }

    function test_createJob_revertsOnZeroRounds() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.totalRounds = 0;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.InvalidRounds.selector, 0, 2));
    }

    function test_createJob_revertsOnZeroInterval() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.checkpointInterval = 0;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.InvalidRounds.selector, 6, 0));
    }

    function test_createJob_revertsWhenRoundsNotAMultipleOfInterval() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.checkpointInterval = 4;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.InvalidRounds.selector, 6, 4));
    }

    function test_createJob_revertsWhenDeadlineNotInFuture() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.deadline = uint64(block.timestamp);
        _expectCreateRevert(
            p, abi.encodeWithSelector(IConclaveTraining.DeadlineNotInFuture.selector, uint64(block.timestamp))
        );
    }

    function test_createJob_revertsWithoutMeasurements() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.measurements = new bytes32[](0);
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.MeasurementCount.selector, 0));
    }

    function test_createJob_revertsWithTooManyMeasurements() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.measurements = new bytes32[](65);
        for (uint256 i; i < 65; ++i) {
            p.measurements[i] = bytes32(i + 1);
        }
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.MeasurementCount.selector, 65));
    }

    function test_createJob_acceptsTheMaximumMeasurements() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.measurements = new bytes32[](64);
        for (uint256 i; i < 64; ++i) {
            p.measurements[i] = bytes32(i + 1);
        }
        uint256 jobId = _create(p);
        assertEq(training.measurements(jobId).length, 64, "measurements");
    }

    function test_createJob_revertsOnZeroMeasurement() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.measurements[1] = 0;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.ZeroHash.selector));
    }

    function test_createJob_revertsOnDuplicateMeasurement() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.measurements[1] = M_SNP;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.DuplicateMeasurement.selector, M_SNP));
    }

    function test_createJob_revertsOnQuorumOfHalf() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.quorumBps = 5_000;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.InvalidQuorum.selector, 5_000));
    }

    function test_createJob_revertsOnQuorumAboveAll() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.quorumBps = 10_001;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.InvalidQuorum.selector, 10_001));
    }

    function test_createJob_acceptsQuorumJustOverHalfAndAll() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.quorumBps = 5_001;
        assertEq(training.getJob(_create(p)).quorumBps, 5_001, "just over half");
        p.quorumBps = 10_000;
        assertEq(training.getJob(_create(p)).quorumBps, 10_000, "all");
    }

    function test_createJob_revertsOnZeroRoundTime() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.minRoundSeconds = 0;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.ZeroRoundTime.selector));
    }

    function test_createJob_revertsWhenTheRoundsCannotFitBeforeTheDeadline() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.deadline = uint64(block.timestamp + 6 * ROUND_TIME - 1);
        _expectCreateRevert(
            p,
            abi.encodeWithSelector(
                IConclaveTraining.DeadlineTooSoon.selector, p.deadline, block.timestamp + 6 * ROUND_TIME
            )
        );
        p.deadline += 1; // exactly enough time
        _create(p);
    }

    function test_createJob_revertsOnAHugeRoundTime() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.minRoundSeconds = type(uint64).max;
        p.deadline = type(uint64).max;
        _expectCreateRevert(
            p,
            abi.encodeWithSelector(
                IConclaveTraining.DeadlineTooSoon.selector, p.deadline, block.timestamp + 6 * uint256(type(uint64).max)
            )
        );
    }

    function test_createJob_revertsWithTooManyVerifiers() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.verifiers = new address[](17);
        for (uint256 i; i < 17; ++i) {
            p.verifiers[i] = address(uint160(i + 1));
        }
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.VerifierCount.selector, 17));
    }

    function test_createJob_acceptsTheMaximumVerifiers() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.verifiers = new address[](16);
        for (uint256 i; i < 16; ++i) {
            p.verifiers[i] = address(uint160(i + 1));
        }
        p.verifierThreshold = 16;
        uint256 jobId = _create(p);
        assertEq(training.verifiers(jobId).length, 16, "verifiers");
        assertEq(training.getJob(jobId).verifierThreshold, 16, "threshold");
    }

    function test_createJob_revertsOnThresholdAboveTheVerifiers() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.verifierThreshold = 4;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.BadThreshold.selector, 4, 3));
    }

    function test_createJob_revertsWithoutAnyEvidenceCheck() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.verifierThreshold = 0;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.NoEvidenceCheck.selector));
        p.verifiers = new address[](0);
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.NoEvidenceCheck.selector));
    }

    function test_createJob_acceptsAnOnChainVerifierWithoutVerifierApprovals() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.verifierThreshold = 0;
        p.verifiers = new address[](0);
        p.evidenceVerifier = address(new MockEvidenceVerifier());
        uint256 jobId = _create(p);
        assertEq(training.getJob(jobId).evidenceVerifier, p.evidenceVerifier, "verifier");
        assertEq(training.verifiers(jobId).length, 0, "no verifiers");
    }

    function test_createJob_revertsOnZeroVerifier() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.verifiers[2] = address(0);
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.ZeroVerifier.selector));
    }

    function test_createJob_revertsOnDuplicateVerifier() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.verifiers[2] = p.verifiers[0];
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.DuplicateVerifier.selector, p.verifiers[0]));
    }

    function test_createJob_revertsWhenTokenHasNoCode() public {
        IConclaveTraining.JobParams memory p = _params(stranger);
        vm.prank(customer);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotAToken.selector, stranger));
        training.createJob(p);
    }

    function test_createJob_revertsWhenVerifierHasNoCode() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.evidenceVerifier = stranger;
        _expectCreateRevert(p, abi.encodeWithSelector(IConclaveTraining.NotAVerifier.selector, stranger));
    }

    function test_createJob_revertsWhenNativeValueIsWrong() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        vm.deal(customer, ESCROW);
        vm.prank(customer);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.WrongValue.selector, ESCROW, ESCROW - 1));
        training.createJob{value: ESCROW - 1}(p);
    }

    function test_createJob_revertsWhenValueSentWithErc20() public {
        IConclaveTraining.JobParams memory p = _params(address(token));
        _fund(address(token), customer, ESCROW);
        vm.deal(customer, 1);
        vm.prank(customer);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.WrongValue.selector, 0, 1));
        training.createJob{value: 1}(p);
    }

    function test_createJob_revertsWithoutErc20Allowance() public {
        IConclaveTraining.JobParams memory p = _params(address(token));
        token.mint(customer, ESCROW);
        vm.prank(customer);
        vm.expectRevert(); // the token's ERC20InsufficientAllowance
        training.createJob(p);
    }

    function test_createJob_revertsOnFeeOnTransferToken() public {
        FeeOnTransferToken fee = new FeeOnTransferToken();
        IConclaveTraining.JobParams memory p = _params(address(fee));
        fee.mint(customer, ESCROW);
        vm.startPrank(customer);
        fee.approve(address(training), ESCROW);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnsupportedToken.selector, address(fee)));
        training.createJob(p);
        vm.stopPrank();
    }

    // ---- cancelJob ----

    function test_cancelJob_native_refundsEscrow() public {
        uint256 jobId = _createDefault(NATIVE);
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.JobCancelled(jobId, ESCROW);
        vm.prank(customer);
        training.cancelJob(jobId);
        assertEq(customer.balance, ESCROW, "refunded");
        assertEq(address(training).balance, 0, "nothing held");
        IConclaveTraining.Job memory job = training.getJob(jobId);
        assertTrue(job.status == IConclaveTraining.JobStatus.Cancelled, "cancelled");
        assertEq(job.refunded, ESCROW, "refunded recorded");
    }

    function test_cancelJob_erc20_refundsEscrowWithOperatorsJoined() public {
        uint256 jobId = _createDefault(address(token));
        _joinAndRegister(jobId, 0);
        vm.prank(customer);
        training.cancelJob(jobId);
        assertEq(token.balanceOf(customer), ESCROW, "refunded");
        assertEq(token.balanceOf(address(training)), STAKE, "operator stake still held");
    }

    function test_cancelJob_revertsOnUnknownJob() public {
        vm.prank(customer);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownJob.selector, 7));
        training.cancelJob(7);
    }

    function test_cancelJob_revertsForOthers() public {
        uint256 jobId = _createDefault(NATIVE);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotCustomer.selector, stranger));
        training.cancelJob(jobId);
    }

    function test_cancelJob_revertsOnceStarted() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.prank(customer);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongJobStatus.selector, jobId, IConclaveTraining.JobStatus.Running
            )
        );
        training.cancelJob(jobId);
    }

    function test_cancelJob_revertsTwice() public {
        uint256 jobId = _createDefault(NATIVE);
        vm.prank(customer);
        training.cancelJob(jobId);
        vm.prank(customer);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongJobStatus.selector, jobId, IConclaveTraining.JobStatus.Cancelled
            )
        );
        training.cancelJob(jobId);
    }

    // ---- startJob ----

    function test_startJob_byAnyoneOnceEnoughOperatorsAreActive() public {
        uint256 jobId = _createDefault(NATIVE);
        _joinAndRegister(jobId, 0);
        _joinAndRegister(jobId, 1);
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.JobStarted(jobId, 2);
        vm.prank(stranger);
        training.startJob(jobId);
        IConclaveTraining.Job memory job = training.getJob(jobId);
        assertTrue(job.status == IConclaveTraining.JobStatus.Running, "running");
        assertEq(job.startedAt, block.timestamp, "started at");
        assertTrue(training.commitsOpen(jobId), "commits open");
    }

    function test_startJob_revertsOnUnknownJob() public {
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownJob.selector, 1));
        training.startJob(1);
    }

    function test_startJob_revertsWhenAlreadyRunning() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongJobStatus.selector, jobId, IConclaveTraining.JobStatus.Running
            )
        );
        training.startJob(jobId);
    }

    function test_startJob_revertsAfterDeadline() public {
        uint256 jobId = _createDefault(NATIVE);
        _joinAndRegister(jobId, 0);
        _joinAndRegister(jobId, 1);
        uint64 deadline = training.getJob(jobId).deadline;
        vm.warp(deadline);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.DeadlinePassed.selector, deadline));
        training.startJob(jobId);
    }

    function test_startJob_countsOnlyRegisteredActiveOperators() public {
        uint256 jobId = _createDefault(NATIVE);
        _joinAndRegister(jobId, 0);
        _join(jobId, 1); // joined, no key yet
        _joinAndRegister(jobId, 2);
        vm.prank(ops[2]);
        training.requestLeave(jobId); // leaving: no longer active
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotEnoughOperators.selector, 1, 2));
        training.startJob(jobId);
        _register(jobId, 1);
        training.startJob(jobId);
    }

    // ---- refund ----

    function test_refund_revertsOnUnknownJob() public {
        vm.prank(customer);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownJob.selector, 3));
        training.refund(3);
    }

    function test_refund_revertsForOthers() public {
        uint256 jobId = _createDefault(NATIVE);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotCustomer.selector, stranger));
        training.refund(jobId);
    }

    function test_refund_revertsBeforeSettlementWithNothingSlashed() public {
        uint256 jobId = _running(NATIVE, 2);
        _certifyAll(jobId, 2, 2);
        assertEq(training.refundable(jobId), 0, "refundable");
        vm.prank(customer);
        vm.expectRevert(IConclaveTraining.NothingToRefund.selector);
        training.refund(jobId);
    }

    function test_refund_afterCancelRevertsWithNothingLeft() public {
        uint256 jobId = _createDefault(NATIVE);
        vm.prank(customer);
        training.cancelJob(jobId);
        vm.prank(customer);
        vm.expectRevert(IConclaveTraining.NothingToRefund.selector);
        training.refund(jobId);
    }

    function test_refund_expiredJobReturnsUnearnedEscrow() public {
        uint256 jobId = _running(NATIVE, 2);
        _certifyAll(jobId, 2, 2); // the model got through round 2 of 6
        vm.warp(training.getJob(jobId).deadline);
        assertTrue(training.isSettled(jobId), "settled by the deadline");
        assertFalse(training.commitsOpen(jobId), "commits closed");
        uint256 earned = ESCROW / 3;
        assertEq(training.refundable(jobId), ESCROW - earned, "refundable");
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.Refunded(jobId, customer, ESCROW - earned, 0);
        vm.prank(customer);
        training.refund(jobId);
        assertEq(customer.balance, ESCROW - earned, "refunded");
        vm.prank(customer);
        vm.expectRevert(IConclaveTraining.NothingToRefund.selector);
        training.refund(jobId);
    }

    function test_refund_expiredJobWithoutCheckpointsReturnsEverything() public {
        uint256 jobId = _running(address(token), 2);
        vm.warp(training.getJob(jobId).deadline);
        vm.prank(customer);
        training.refund(jobId);
        assertEq(token.balanceOf(customer), ESCROW, "refunded");
    }

    function test_refund_paysSlashedStakeBeforeSettlement() public {
        uint256 jobId = _running(NATIVE, 2);
        _equivocate(jobId, 1, 4);
        uint256 toCustomer = STAKE - STAKE * REWARD_BPS / 10_000;
        assertEq(training.refundable(jobId), toCustomer, "refundable");
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.Refunded(jobId, customer, 0, toCustomer);
        vm.prank(customer);
        training.refund(jobId);
        assertEq(customer.balance, toCustomer, "customer got the slashed stake");
    }
}
