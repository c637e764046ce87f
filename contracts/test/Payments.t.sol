// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IConclaveTraining} from "../src/IConclaveTraining.sol";
import {Fixture} from "./utils/Fixture.sol";

/// @notice Whole jobs, end to end, in the native token and an ERC-20: how the escrow is split,
/// what slashing does to the split before and after settlement, and expiry.
contract PaymentsTest is Fixture {
    /// @dev Three operators; operator 2 misses round 4. Credits 3, 3, 2 of 8.
    function _lifecycle(address token_) internal {
        uint256 jobId = _running(token_, 3);
        for (uint64 r = 2; r <= 6; r += 2) {
            _certify(jobId, r, 7, r == 4 ? 3 : 7); // round 4 aggregated operators 0 and 1 only
        }
        assertTrue(training.getJob(jobId).status == IConclaveTraining.JobStatus.Completed, "completed");
        vm.warp(block.timestamp + GRACE);
        for (uint256 i; i < 3; ++i) {
            _leaveAndUnbond(jobId, i);
        }
        uint256[3] memory expected = [ESCROW * 3 / 8, ESCROW * 3 / 8, ESCROW * 2 / 8];
        for (uint256 i; i < 3; ++i) {
            assertEq(training.paymentOf(jobId, ops[i]), expected[i], "payment due");
            uint256 before = _balance(token_, ops[i]);
            vm.prank(ops[i]);
            training.withdraw(jobId);
            assertEq(_balance(token_, ops[i]) - before, STAKE + expected[i], "stake and payment");
        }
        IConclaveTraining.Job memory job = training.getJob(jobId);
        assertEq(job.paidOut, ESCROW, "all paid");
        assertEq(job.unpaidCredits, 0, "no unpaid credits");
        assertEq(training.refundable(jobId), 0, "nothing to refund");
        assertEq(_balance(token_, address(training)), 0, "nothing left");
    }

    function test_lifecycle_native() public {
        _lifecycle(NATIVE);
    }

    function test_lifecycle_erc20() public {
        _lifecycle(address(token));
    }

    function test_payment_roundingDustGoesBackToTheCustomer() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.escrow = 100; // 100 wei over 3 credits: 33 each, 1 left
        p.minOperators = 3;
        uint256 jobId = _create(p);
        for (uint256 i; i < 3; ++i) {
            _joinAndRegister(jobId, i);
        }
        training.startJob(jobId);
        _certifyAll(jobId, 6, 3);
        vm.warp(block.timestamp + GRACE);
        // Before anyone is paid, the reserve floor(100·3/3) holds everything back.
        assertEq(training.refundable(jobId), 0, "reserve covers every share");
        for (uint256 i; i < 3; ++i) {
            _leaveAndUnbond(jobId, i);
            vm.prank(ops[i]);
            training.withdraw(jobId);
        }
        assertEq(training.getJob(jobId).paidOut, 99, "paid");
        assertEq(training.refundable(jobId), 1, "dust");
        vm.prank(customer);
        training.refund(jobId);
        assertEq(address(training).balance, 0, "nothing left");
    }

    function test_payment_slashBeforeSettlementRedistributes() public {
        uint256 jobId = _running(NATIVE, 2);
        _certifyAll(jobId, 2, 2);
        _certifyAll(jobId, 6, 2);
        // Operator 1's enclave also signed another statement for round 6; it is proven during the
        // grace.
        bytes32 model = _model(jobId, 6);
        bytes32 updateSet = _updateSet(_keysOf(3));
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 1, 6, model, _receipt(jobId, 6), updateSet);
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 1, 6, model, "other receipt", updateSet);
        vm.prank(reporter);
        training.slash(jobId, 6, a, b);
        vm.warp(block.timestamp + GRACE);
        // The job completed; operator 0 holds every remaining credit.
        uint256 earned = ESCROW;
        assertEq(training.paymentOf(jobId, ops[0]), earned, "operator 0 takes the pool");
        assertEq(training.paymentOf(jobId, ops[1]), 0, "slashed operator gets nothing");
        uint256 slashedToCustomer = STAKE - STAKE * REWARD_BPS / 10_000;
        assertEq(training.refundable(jobId), ESCROW - earned + slashedToCustomer, "refundable");
        _leaveAndUnbond(jobId, 0);
        vm.prank(ops[0]);
        training.withdraw(jobId);
        vm.prank(customer);
        training.refund(jobId);
        assertEq(address(training).balance, 0, "nothing left");
    }

    function test_payment_slashAfterSettlementForfeitsToTheCustomer() public {
        uint256 jobId = _running(address(token), 2);
        _certifyAll(jobId, 6, 2);
        vm.warp(block.timestamp + GRACE);
        assertEq(training.paymentOf(jobId, ops[1]), ESCROW / 2, "due before slashing");
        IConclaveTraining.SignedCheckpoint memory a =
            _signed(jobId, 1, 6, _model(jobId, 6), _receipt(jobId, 6), _updateSet(_keysOf(3)));
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 1, 6, "forged", "r");
        vm.prank(reporter);
        training.slash(jobId, 6, a, b);
        assertEq(training.getJob(jobId).creditedRounds, 2, "the split is fixed after settlement");
        assertEq(training.paymentOf(jobId, ops[0]), ESCROW / 2, "the honest share is unchanged");
        uint256 slashedToCustomer = STAKE - STAKE * REWARD_BPS / 10_000;
        assertEq(training.refundable(jobId), ESCROW / 2 + slashedToCustomer, "forfeited share to the customer");
        vm.prank(customer);
        training.refund(jobId);
        _leaveAndUnbond(jobId, 0);
        vm.prank(ops[0]);
        training.withdraw(jobId);
        assertEq(token.balanceOf(ops[0]), STAKE + ESCROW / 2, "honest operator paid");
        assertEq(token.balanceOf(address(training)), 0, "nothing left");
    }

    function test_payment_expiredJobPaysAcceptedCheckpointsOnly() public {
        uint256 jobId = _running(NATIVE, 2);
        _certifyAll(jobId, 2, 2);
        _certify(jobId, 4, 3, 1); // both sign; only operator 0's update was aggregated
        vm.warp(training.getJob(jobId).deadline);
        // The model got through 4 of 6 rounds: 2/3 of the escrow, split 2:1 by credits.
        uint256 pool = ESCROW * 2 / 3;
        assertEq(training.paymentOf(jobId, ops[0]), pool * 2 / 3, "operator 0");
        assertEq(training.paymentOf(jobId, ops[1]), pool / 3, "operator 1");
        for (uint256 i; i < 2; ++i) {
            _leaveAndUnbond(jobId, i);
            vm.prank(ops[i]);
            training.withdraw(jobId);
        }
        vm.prank(customer);
        training.refund(jobId);
        assertEq(address(training).balance, 0, "nothing left");
        assertEq(customer.balance, ESCROW - pool * 2 / 3 - pool / 3, "customer got the rest");
    }

    function test_payment_operatorThatLeftEarlyIsPaidForItsCredits() public {
        uint256 jobId = _running(NATIVE, 3);
        _certifyAll(jobId, 2, 3);
        _leaveAndUnbond(jobId, 2);
        vm.prank(ops[2]);
        training.withdraw(jobId); // stake now
        _certifyAll(jobId, 4, 2);
        _certifyAll(jobId, 6, 2);
        vm.warp(block.timestamp + GRACE);
        vm.prank(ops[2]);
        training.withdraw(jobId); // payment later: 1 of 7 credits
        assertEq(ops[2].balance, STAKE + ESCROW / 7, "paid for round 2");
    }
}
