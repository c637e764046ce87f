// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConclaveTraining} from "../src/ConclaveTraining.sol";
import {IConclaveTraining} from "../src/IConclaveTraining.sol";
import {Fixture} from "./utils/Fixture.sol";

/// @notice Properties over random inputs (runs set in foundry.toml, [fuzz]).
contract FuzzTest is Fixture {
    uint256 private constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    /// Random participation by up to four operators in a six-round job (checkpoints at 2, 4, 6):
    /// each operator is paid floor(E·cᵢ/C), the customer gets the rest, nothing stays behind.
    function testFuzz_payment_splitsTheEscrowByCredits(uint256 escrow, uint256 nOps, uint256 mask, bool erc20)
        public
    {
        escrow = bound(escrow, 1, 1e30);
        nOps = bound(nOps, 1, N_OPS);
        address token_ = erc20 ? address(token) : NATIVE;
        uint256 jobId = _startedJob(token_, escrow, nOps);
        (uint256[N_OPS] memory credits, uint256 total) = _participate(jobId, nOps, mask);
        vm.warp(block.timestamp + GRACE);

        uint256 paid;
        for (uint256 i; i < nOps; ++i) {
            uint256 payment = _exitAndWithdraw(token_, jobId, i) - STAKE;
            assertEq(payment, escrow * credits[i] / total, "share by credits");
            paid += payment;
        }
        uint256 rest = training.refundable(jobId);
        assertEq(paid + rest, escrow, "paid + refundable = escrow");
        assertLe(rest, nOps, "only rounding dust is left for the customer");
        if (rest > 0) {
            vm.prank(customer);
            training.refund(jobId);
        }
        assertEq(_balance(token_, address(training)), 0, "nothing stays behind");
    }

    function _startedJob(address token_, uint256 escrow, uint256 nOps) internal returns (uint256 jobId) {
        IConclaveTraining.JobParams memory p = _params(token_);
        p.escrow = escrow;
        p.minOperators = uint32(nOps);
        jobId = _create(p);
        for (uint256 i; i < nOps; ++i) {
            _joinAndRegister(jobId, i);
        }
        training.startJob(jobId);
    }

    /// @dev Bit (checkpoint index * 4 + operator) of `mask` says who submits; operator 0 always
    /// submits the final round, so the job completes.
    function _participate(uint256 jobId, uint256 nOps, uint256 mask)
        internal
        returns (uint256[N_OPS] memory credits, uint256 total)
    {
        for (uint64 k; k < 3; ++k) {
            for (uint256 i; i < nOps; ++i) {
                if ((mask >> (k * 4 + i)) & 1 == 0 && !(k == 2 && i == 0)) continue;
                _submit(jobId, i, (k + 1) * 2);
                credits[i] += 1;
                total += 1;
            }
        }
    }

    /// @dev Leaves, waits out the unbonding, withdraws; returns what the operator received.
    function _exitAndWithdraw(address token_, uint256 jobId, uint256 i) internal returns (uint256) {
        _leaveAndUnbond(jobId, i);
        uint256 before = _balance(token_, ops[i]);
        vm.prank(ops[i]);
        training.withdraw(jobId);
        return _balance(token_, ops[i]) - before;
    }

    /// A job that expires after round 2k of 6 pays floor(E·2k/6) and refunds the rest.
    function testFuzz_expiry_paysTheShareOfRoundsReached(uint256 escrow, uint256 checkpoints) public {
        escrow = bound(escrow, 1, 1e30);
        checkpoints = bound(checkpoints, 0, 2);
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.escrow = escrow;
        p.minOperators = 1;
        uint256 jobId = _create(p);
        _joinAndRegister(jobId, 0);
        training.startJob(jobId);
        for (uint64 k = 1; k <= checkpoints; ++k) {
            _submit(jobId, 0, 2 * k);
        }
        vm.warp(p.deadline);
        uint256 earned = escrow * (2 * checkpoints) / 6;
        assertEq(training.paymentOf(jobId, ops[0]), earned, "earned");
        assertEq(training.refundable(jobId), escrow - earned, "refundable");
    }

    /// Two statements for one round by one key slash iff they differ; the stake is split between
    /// reporter and customer exactly.
    function testFuzz_slash_anyConflictingPair(
        bytes32 modelA,
        bytes32 receiptA,
        bytes32 modelB,
        bytes32 receiptB,
        uint64 round,
        uint256 bps,
        uint256 stake
    ) public {
        bps = bound(bps, 0, 10_000);
        stake = bound(stake, 1, 1e30);
        training = new ConclaveTraining(UNBONDING, GRACE, bps);
        IConclaveTraining.JobParams memory p = _params(address(token));
        p.stake = stake;
        p.minOperators = 1;
        uint256 jobId = _create(p);
        _joinAndRegister(jobId, 0);

        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, round, modelA, receiptA);
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 0, round, modelB, receiptB);
        if (modelA == modelB && receiptA == receiptB) {
            vm.expectRevert(IConclaveTraining.NotConflicting.selector);
            training.slash(jobId, round, a, b);
            return;
        }
        vm.prank(reporter);
        training.slash(jobId, round, a, b);
        uint256 reward = stake * bps / 10_000;
        assertEq(token.balanceOf(reporter), reward, "reward");
        assertEq(training.getJob(jobId).slashedStakeOwed, stake - reward, "customer's part");
        assertEq(token.balanceOf(address(training)), ESCROW + stake - reward, "held");
    }

    /// A statement counts only when signed by a key registered in the job.
    function testFuzz_checkpoint_onlyRegisteredKeysCount(uint256 pk, bytes32 model, bytes32 receipt) public {
        pk = bound(pk, 1, SECP256K1_N - 1);
        if (model == 0) model = bytes32(uint256(1));
        uint256 jobId = _running(NATIVE, 2);
        bytes memory sig = sign(pk, training.checkpointDigest(jobId, 2, model, receipt));
        address signer = vm.addr(pk);
        if (signer != enclaves[0] && signer != enclaves[1]) {
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownEnclaveKey.selector, signer));
            training.submitCheckpoint(jobId, 2, model, receipt, sig);
        }
        // The registered enclave's signature over the same statement is accepted.
        bytes memory good = _checkpointSig(jobId, 1, 2, model, receipt);
        training.submitCheckpoint(jobId, 2, model, receipt, good);
        assertEq(training.getCheckpoint(jobId, 2).modelHash, model, "accepted");
        assertEq(training.getCheckpoint(jobId, 2).operator, ops[1], "by operator 1");
    }

    /// An operator's rounds go forward: later is credited, earlier is refused, the same round
    /// with another statement is equivocation.
    function testFuzz_rounds_neverGoBack(uint64 first, uint64 second, bytes32 receipt) public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.totalRounds = 1000;
        p.checkpointInterval = 1;
        p.minOperators = 1;
        uint256 jobId = _create(p);
        _joinAndRegister(jobId, 0);
        training.startJob(jobId);
        first = uint64(bound(first, 1, 999));
        second = uint64(bound(second, 1, 999));
        _submit(jobId, 0, first);

        bytes32 model = _model(jobId, second);
        bytes memory sig = _checkpointSig(jobId, 0, second, model, receipt);
        if (second < first) {
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.RoundNotAfter.selector, second, first));
            training.submitCheckpoint(jobId, second, model, receipt, sig);
        } else if (second == first && receipt == _receipt(0, first)) {
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.AlreadySubmitted.selector, first));
            training.submitCheckpoint(jobId, second, model, receipt, sig);
        } else if (second == first) {
            vm.prank(reporter);
            training.submitCheckpoint(jobId, second, model, receipt, sig);
            assertTrue(
                training.getOperator(jobId, ops[0]).status == IConclaveTraining.OperatorStatus.Slashed, "slashed"
            );
        } else {
            training.submitCheckpoint(jobId, second, model, receipt, sig);
            assertEq(training.getOperator(jobId, ops[0]).credits, 2, "credited");
            assertEq(training.getJob(jobId).latestRound, second, "latest");
        }
    }

    /// The stake comes back exactly when the unbonding delay has passed.
    function testFuzz_withdraw_onlyAfterUnbonding(uint256 wait) public {
        wait = bound(wait, 0, 2 * UNBONDING);
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        vm.prank(ops[0]);
        training.requestLeave(jobId);
        uint64 unbondsAt = uint64(block.timestamp) + UNBONDING;
        vm.warp(block.timestamp + wait);
        if (wait < UNBONDING) vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.StillUnbonding.selector, unbondsAt));
        vm.prank(ops[0]);
        training.withdraw(jobId);
        assertEq(ops[0].balance, wait < UNBONDING ? 0 : STAKE, "stake");
    }

    /// The registration signature binds the operator, the evidence hash and the measurement.
    function testFuzz_registration_bindsItsFields(bytes32 signedEvidence, bytes32 claimedEvidence, bool tdx) public {
        if (signedEvidence == 0) signedEvidence = bytes32(uint256(1));
        if (claimedEvidence == 0) claimedEvidence = bytes32(uint256(1));
        bytes32 measurement = tdx ? M_TDX : M_SNP;
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        bytes memory sig = sign(keys[0], training.registrationDigest(jobId, ops[0], signedEvidence, M_SNP));
        vm.prank(ops[0]);
        if (signedEvidence != claimedEvidence || tdx) vm.expectRevert(IConclaveTraining.InvalidSignature.selector);
        training.registerEnclave(jobId, enclaves[0], claimedEvidence, measurement, sig, "");
    }

    /// createJob accepts exactly the round schedules where the interval divides the rounds.
    function testFuzz_createJob_roundSchedule(uint64 rounds, uint64 interval) public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.totalRounds = rounds;
        p.checkpointInterval = interval;
        vm.deal(customer, ESCROW);
        vm.prank(customer);
        if (rounds == 0 || interval == 0 || rounds % interval != 0) {
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.InvalidRounds.selector, rounds, interval));
        }
        training.createJob{value: ESCROW}(p);
    }
}
