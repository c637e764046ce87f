// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConclaveTraining} from "../src/ConclaveTraining.sol";
import {IConclaveTraining} from "../src/IConclaveTraining.sol";
import {MockERC20} from "./mocks/MockERC20.sol";
import {TrainingHandler} from "./handlers/TrainingHandler.sol";
import {TestBase} from "./utils/TestBase.sol";

/// @notice Invariants over random sequences of TrainingHandler steps (runs and depth in
/// foundry.toml, [invariant]).
contract InvariantTest is TestBase {
    ConclaveTraining internal training;
    MockERC20 internal token;
    TrainingHandler internal handler;
    address[2] internal tokens;
    uint256 internal constant N_OPS = 4;
    address[N_OPS] internal ops;

    function setUp() public {
        vm.warp(1_700_000_000);
        // Shorter delays than a deployment would use, so runs reach settlement and payouts.
        training = new ConclaveTraining(2 days, 12 hours, 1_000);
        token = new MockERC20();
        handler = new TrainingHandler(training, token);
        tokens = [address(0), address(token)];
        for (uint256 i; i < N_OPS; ++i) {
            ops[i] = handler.ops(i);
        }

        bytes4[] memory selectors = new bytes4[](14);
        selectors[0] = TrainingHandler.createJob.selector;
        selectors[1] = TrainingHandler.cancelJob.selector;
        selectors[2] = TrainingHandler.refund.selector;
        selectors[3] = TrainingHandler.startJob.selector;
        selectors[4] = TrainingHandler.join.selector;
        selectors[5] = TrainingHandler.register.selector;
        selectors[6] = TrainingHandler.certify.selector;
        selectors[7] = TrainingHandler.certify.selector; // certificates twice as often
        selectors[8] = TrainingHandler.rush.selector;
        selectors[9] = TrainingHandler.equivocate.selector;
        selectors[10] = TrainingHandler.requestLeave.selector;
        selectors[11] = TrainingHandler.withdraw.selector;
        selectors[12] = TrainingHandler.warp.selector;
        selectors[13] = TrainingHandler.exit.selector;
        targetContract(address(handler));
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    /// Escrow conservation: what customers deposited = paid to operators + refunded + held, per
    /// token, where paid and refunded are measured by balances and held is the contract's books;
    /// and the contract holds exactly its escrow, stakes and slashed stake owed.
    function invariant_escrowIsConserved() public view {
        // Per token (0: native, 1: ERC-20): escrow held, paid out, refunded, stake held, owed.
        uint256[5][2] memory sums;
        uint256 n = handler.jobCount();
        for (uint256 j; j < n; ++j) {
            uint256 jobId = handler.jobIds(j);
            IConclaveTraining.Job memory job = training.getJob(jobId);
            assertLe(job.paidOut + job.refunded, job.escrow, "never more out than in");
            uint256[5] memory sum = sums[job.token == address(0) ? 0 : 1];
            sum[0] += job.escrow - job.paidOut - job.refunded;
            sum[1] += job.paidOut;
            sum[2] += job.refunded;
            sum[4] += job.slashedStakeOwed;
            for (uint256 i; i < N_OPS; ++i) {
                sum[3] += training.getOperator(jobId, ops[i]).stake;
            }
        }
        for (uint256 t; t < 2; ++t) {
            address tk = tokens[t];
            uint256[5] memory sum = sums[t];
            assertEq(
                handler.escrowDeposited(tk),
                handler.escrowPaid(tk) + handler.escrowRefunded(tk) + sum[0],
                "deposited = paid + refunded + held"
            );
            assertEq(handler.escrowPaid(tk), sum[1], "paid as booked");
            assertEq(handler.escrowRefunded(tk), sum[2], "refunded as booked");
            assertEq(
                handler.stakeDeposited(tk),
                handler.stakeReturned(tk) + handler.slashRewards(tk) + handler.slashedStakeRefunded(tk) + sum[4]
                    + sum[3],
                "stake deposited = returned + slashed (reporters, customers, owed) + held"
            );
            uint256 balance = t == 0 ? address(training).balance : token.balanceOf(address(training));
            assertEq(balance, sum[0] + sum[3] + sum[4], "balance = escrow held + stakes + slashed stake owed");
        }
    }

    /// A slashed operator is never paid, holds no stake and has nothing due.
    function invariant_slashedOperatorIsNeverPaid() public view {
        for (uint256 j; j < handler.jobCount(); ++j) {
            uint256 jobId = handler.jobIds(j);
            for (uint256 i; i < N_OPS; ++i) {
                address who = ops[i];
                IConclaveTraining.Operator memory op = training.getOperator(jobId, who);
                if (op.status != IConclaveTraining.OperatorStatus.Slashed) continue;
                assertEq(handler.paidTo(jobId, who), 0, "slashed operator received a payment");
                assertFalse(op.paid, "slashed operator marked paid");
                assertEq(op.stake, 0, "slashed operator holds stake");
                assertEq(training.paymentOf(jobId, who), 0, "slashed operator has a payment due");
            }
        }
    }

    /// The books agree with the operators' records and with the handler's model of every status,
    /// and every claim can be paid: the escrow held covers all shares still due plus what the
    /// customer may take now.
    function invariant_booksAgreeAndClaimsAreCovered() public view {
        for (uint256 j; j < handler.jobCount(); ++j) {
            uint256 jobId = handler.jobIds(j);
            IConclaveTraining.Job memory job = training.getJob(jobId);
            (, IConclaveTraining.JobStatus modelled,,,,,) = handler.jobModel(jobId);
            assertTrue(job.status == modelled, "job status as modelled");
            uint256 active;
            uint256 credited;
            uint256 unpaid;
            uint256 due;
            for (uint256 i; i < N_OPS; ++i) {
                address who = ops[i];
                IConclaveTraining.Operator memory op = training.getOperator(jobId, who);
                assertTrue(op.status == handler.opModel(jobId, i), "operator status as modelled");
                if (op.status == IConclaveTraining.OperatorStatus.Joined && op.enclaveKey != address(0)) active++;
                if (op.status != IConclaveTraining.OperatorStatus.Slashed) {
                    credited += op.credits;
                    if (!op.paid) unpaid += op.credits;
                }
                due += training.paymentOf(jobId, who);
                if (op.paid) {
                    // Paid once, after settlement, exactly floor(P·c/C) with the final totals.
                    assertTrue(
                        training.isSettled(jobId) || job.status == IConclaveTraining.JobStatus.Cancelled,
                        "paid only after settlement"
                    );
                    uint256 share = job.creditedRounds == 0
                        ? 0
                        : job.escrow * job.latestRound / job.totalRounds * op.credits / job.creditedRounds;
                    assertEq(handler.paidTo(jobId, who), share, "paid exactly the share of its credits");
                }
            }
            assertEq(job.activeOperators, active, "active operators");
            assertEq(job.unpaidCredits, unpaid, "unpaid credits");
            if (!training.isSettled(jobId)) assertEq(job.creditedRounds, credited, "credited rounds");
            assertLe(job.latestRound, job.totalRounds, "latest round in range");
            if (job.status == IConclaveTraining.JobStatus.Completed) {
                assertEq(job.latestRound, job.totalRounds, "completed at the final round");
            }
            if (training.isSettled(jobId)) {
                uint256 refundableEscrow = training.refundable(jobId) - job.slashedStakeOwed;
                assertLe(due + refundableEscrow, job.escrow - job.paidOut - job.refunded, "claims covered");
            }
        }
    }

    /// Nobody is credited, so nobody is paid, for a round they are not in: each operator's credits
    /// are exactly the certificates that landed with its key in the update set while it was
    /// active (the handler's count from its own member lists), the certified rounds' credited
    /// counts add up to all credits, and every certified round carries a quorum of signatures.
    function invariant_creditsOnlyForMembership() public view {
        for (uint256 j; j < handler.jobCount(); ++j) {
            uint256 jobId = handler.jobIds(j);
            IConclaveTraining.Job memory job = training.getJob(jobId);
            uint256 credits;
            for (uint256 i; i < N_OPS; ++i) {
                uint256 c = training.getOperator(jobId, ops[i]).credits;
                assertEq(c, handler.expectedCredits(jobId, i), "credits = rounds whose update set named it");
                credits += c;
            }
            uint256 rounds;
            uint256 credited;
            for (uint64 r = 1; r <= job.totalRounds; ++r) {
                IConclaveTraining.Checkpoint memory cp = training.getCheckpoint(jobId, r);
                if (cp.modelHash == 0) continue;
                rounds++;
                credited += cp.credited;
                assertGt(cp.signers, 0, "a certified round has signers");
                assertLe(r, job.latestRound, "no certified round past the latest");
            }
            assertEq(rounds, training.certifiedRounds(jobId), "certified rounds");
            assertEq(rounds, handler.certified(jobId), "certified rounds as the handler saw them land");
            assertEq(credited, credits, "the rounds' credited counts add up to all credits");
            assertEq(credited, handler.creditsGiven(jobId), "credits as the handler counted them");
        }
    }
}
