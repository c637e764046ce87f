// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConclaveTraining} from "../src/ConclaveTraining.sol";
import {IConclaveTraining} from "../src/IConclaveTraining.sol";
import {Fixture} from "./utils/Fixture.sol";

/// @notice Properties over random inputs (runs set in foundry.toml, [fuzz]).
contract FuzzTest is Fixture {
    /// Random participation by up to four operators in a six-round job (checkpoints at 2, 4, 6):
    /// each operator is paid floor(E·cᵢ/C), the customer gets the rest, nothing stays behind.
    function testFuzz_payment_splitsTheEscrowByCredits(uint256 escrow, uint256 nOps, uint256 mask, bool erc20) public {
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

    /// @dev Bit (checkpoint index * 4 + operator) of `mask` says whose update a round
    /// aggregated; every active operator signs. A round nobody's update made is not certified;
    /// operator 0 is always in the final round, so the job completes.
    function _participate(uint256 jobId, uint256 nOps, uint256 mask)
        internal
        returns (uint256[N_OPS] memory credits, uint256 total)
    {
        uint256 all = (1 << nOps) - 1;
        for (uint64 k; k < 3; ++k) {
            uint256 members = (mask >> (k * 4)) & all;
            if (k == 2) members |= 1;
            if (members == 0) continue;
            _certify(jobId, (k + 1) * 2, all, members);
            for (uint256 i; i < nOps; ++i) {
                if ((members >> i) & 1 == 0) continue;
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
            _certifyAll(jobId, 2 * k, 1);
        }
        vm.warp(p.deadline);
        uint256 earned = escrow * (2 * checkpoints) / 6;
        assertEq(training.paymentOf(jobId, ops[0]), earned, "earned");
        assertEq(training.refundable(jobId), escrow - earned, "refundable");
    }

    /// Two statements for one round by one key slash iff they differ; the stake is split between
    /// reporter and customer exactly.
    function testFuzz_slash_anyConflictingPair(
        bytes32[3] memory fieldsA,
        bytes32[3] memory fieldsB,
        uint8 same,
        uint64 round,
        uint256 bps,
        uint256 stake
    ) public {
        bps = bound(bps, 0, 10_000);
        stake = bound(stake, 1, 1e30);
        // Often make some of the fields equal, so that pairs differing in one field come up.
        for (uint256 f; f < 3; ++f) {
            if ((same >> f) & 1 == 1) fieldsB[f] = fieldsA[f];
        }
        training = new ConclaveTraining(UNBONDING, GRACE, bps);
        IConclaveTraining.JobParams memory p = _params(address(token));
        p.stake = stake;
        p.minOperators = 1;
        uint256 jobId = _create(p);
        _joinAndRegister(jobId, 0);

        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, round, fieldsA[0], fieldsA[1], fieldsA[2]);
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 0, round, fieldsB[0], fieldsB[1], fieldsB[2]);
        if (fieldsA[0] == fieldsB[0] && fieldsA[1] == fieldsB[1] && fieldsA[2] == fieldsB[2]) {
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

    /// A certificate counts only signatures by keys registered in the job.
    function testFuzz_certificate_onlyRegisteredKeysSign(uint256 pk, bytes32 model, bytes32 receipt) public {
        pk = bound(pk, 1, SECP256K1_N - 1);
        if (model == 0) model = bytes32(uint256(1));
        uint256 jobId = _running(NATIVE, 1);
        _waitFor(jobId, 2);
        address[] memory members = _keysOf(1);
        uint256[] memory pks = new uint256[](1);
        pks[0] = pk;
        bytes[] memory sigs = _certSigs(jobId, 2, model, receipt, members, pks);
        address signer = vm.addr(pk);
        if (signer != enclaves[0]) {
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownEnclaveKey.selector, signer));
            training.submitCertificate(jobId, 2, model, receipt, members, sigs);
        }
        // The registered enclave's signature over the same statement is accepted.
        sigs = _certSigs(jobId, 2, model, receipt, members, _pksOf(1));
        training.submitCertificate(jobId, 2, model, receipt, members, sigs);
        assertEq(training.getCheckpoint(jobId, 2).modelHash, model, "certified");
    }

    /// Rounds go forward: a certificate for a later round lands, for the same or an earlier one
    /// it is refused.
    function testFuzz_rounds_neverGoBack(uint64 first, uint64 second) public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.totalRounds = 1000;
        p.checkpointInterval = 1;
        p.minOperators = 1;
        p.minRoundSeconds = 1;
        uint256 jobId = _create(p);
        _joinAndRegister(jobId, 0);
        training.startJob(jobId);
        first = uint64(bound(first, 1, 999));
        second = uint64(bound(second, 1, 999));
        _certifyAll(jobId, first, 1);

        _waitFor(jobId, second);
        address[] memory members = _keysOf(1);
        bytes32 model = _model(jobId, second);
        bytes[] memory sigs = _certSigs(jobId, second, model, "r", members, _pksOf(1));
        if (second <= first) {
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.RoundBehind.selector, second, first));
            training.submitCertificate(jobId, second, model, "r", members, sigs);
        } else {
            training.submitCertificate(jobId, second, model, "r", members, sigs);
            assertEq(training.getOperator(jobId, ops[0]).credits, 2, "credited");
            assertEq(training.getJob(jobId).latestRound, second, "latest");
        }
    }

    /// A certificate lands iff its signers reach ceil(active · quorumBps / 10 000) of the
    /// active operators; only its members are credited.
    function testFuzz_certificate_quorumAndCredits(uint256 nOps, uint16 bps, uint256 signersMask, uint256 membersMask)
        public
    {
        nOps = bound(nOps, 1, N_OPS);
        bps = uint16(bound(bps, 5_001, 10_000));
        uint256 all = (1 << nOps) - 1;
        signersMask &= all;
        membersMask &= 15;
        if (membersMask == 0) membersMask = 1;
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.minOperators = uint32(nOps);
        p.quorumBps = bps;
        uint256 jobId = _create(p);
        for (uint256 i; i < nOps; ++i) {
            _joinAndRegister(jobId, i);
        }
        training.startJob(jobId);
        uint256 signers;
        for (uint256 i; i < nOps; ++i) {
            signers += (signersMask >> i) & 1;
        }
        uint256 needed = (nOps * bps + 9_999) / 10_000;
        assertEq(training.quorumNeeded(jobId), needed, "quorum");
        if (signers < needed) {
            _waitFor(jobId, 2);
            address[] memory members = _keysOf(membersMask);
            bytes[] memory sigs = _certSigs(jobId, 2, "m", "r", members, _pksOf(signersMask));
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NoQuorum.selector, signers, needed));
            training.submitCertificate(jobId, 2, "m", "r", members, sigs);
            return;
        }
        _certify(jobId, 2, signersMask, membersMask);
        uint256 credited;
        for (uint256 i; i < N_OPS; ++i) {
            // Members beyond nOps are enclave keys no operator registered: never credited.
            uint256 expected = i < nOps ? (membersMask >> i) & 1 : 0;
            assertEq(training.getOperator(jobId, ops[i]).credits, expected, "credited iff an active member");
            credited += expected;
        }
        assertEq(training.getCheckpoint(jobId, 2).credited, credited, "credited count");
        assertEq(training.getJob(jobId).creditedRounds, credited, "credits");
    }

    /// No certificate for round r before startedAt + r · minRoundSeconds.
    function testFuzz_certificate_notBeforeTheRoundsTime(uint256 wait, uint64 roundTime, uint64 round) public {
        roundTime = uint64(bound(roundTime, 1, 1 days));
        round = uint64(bound(round, 1, 10));
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.totalRounds = 10;
        p.checkpointInterval = 1;
        p.minOperators = 1;
        p.minRoundSeconds = roundTime;
        uint256 jobId = _create(p);
        _joinAndRegister(jobId, 0);
        training.startJob(jobId);
        uint256 notBefore = block.timestamp + uint256(round) * roundTime;
        wait = bound(wait, 0, uint256(round) * roundTime * 2);
        vm.warp(block.timestamp + wait);
        address[] memory members = _keysOf(1);
        bytes[] memory sigs = _certSigs(jobId, round, "m", "r", members, _pksOf(1));
        if (block.timestamp < notBefore) {
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.TooEarly.selector, round, notBefore));
        }
        training.submitCertificate(jobId, round, "m", "r", members, sigs);
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
        if (wait < UNBONDING) {
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.StillUnbonding.selector, unbondsAt));
        }
        vm.prank(ops[0]);
        training.withdraw(jobId);
        assertEq(ops[0].balance, wait < UNBONDING ? 0 : STAKE, "stake");
    }

    /// The registration signature binds the operator, the evidence hash and the measurement; the
    /// approvals bind the key, the operator, the evidence hash and the measurement.
    function testFuzz_registration_bindsItsFields(
        bytes32 signedEvidence,
        bytes32 approvedEvidence,
        bytes32 claimedEvidence,
        bool tdx,
        uint256 approvers
    ) public {
        if (signedEvidence == 0) signedEvidence = bytes32(uint256(1));
        if (claimedEvidence == 0) claimedEvidence = bytes32(uint256(1));
        if (approvers % 3 == 0) approvedEvidence = claimedEvidence;
        approvers = bound(approvers, 0, 7);
        bytes32 measurement = tdx ? M_TDX : M_SNP;
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        bytes memory sig = sign(keys[0], training.registrationDigest(jobId, ops[0], signedEvidence, M_SNP));
        bytes[] memory approvals = _approvalsBy(jobId, ops[0], enclaves[0], approvedEvidence, M_SNP, approvers);
        vm.prank(ops[0]);
        if (signedEvidence != claimedEvidence || tdx) {
            vm.expectRevert(IConclaveTraining.InvalidSignature.selector);
        } else if (approvals.length > 0 && approvedEvidence != claimedEvidence) {
            vm.expectRevert(); // UnknownApprover(whatever the wrong digest recovers to)
        } else if (approvals.length < THRESHOLD) {
            vm.expectRevert(
                abi.encodeWithSelector(IConclaveTraining.NotEnoughApprovals.selector, approvals.length, THRESHOLD)
            );
        }
        training.registerEnclave(jobId, enclaves[0], claimedEvidence, measurement, sig, "", approvals);
    }

    /// createJob accepts exactly the round schedules where the interval divides the rounds
    /// and the rounds fit before the deadline at the minimum time per round.
    function testFuzz_createJob_roundSchedule(uint64 rounds, uint64 interval, uint64 roundTime, uint64 deadline)
        public
    {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.totalRounds = rounds;
        p.checkpointInterval = interval;
        p.minRoundSeconds = roundTime;
        p.deadline = uint64(bound(deadline, block.timestamp + 1, type(uint64).max));
        vm.deal(customer, ESCROW);
        vm.prank(customer);
        uint256 earliestEnd = block.timestamp + uint256(rounds) * roundTime;
        if (rounds == 0 || interval == 0 || rounds % interval != 0) {
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.InvalidRounds.selector, rounds, interval));
        } else if (roundTime == 0) {
            vm.expectRevert(IConclaveTraining.ZeroRoundTime.selector);
        } else if (earliestEnd > p.deadline) {
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.DeadlineTooSoon.selector, p.deadline, earliestEnd));
        }
        training.createJob{value: ESCROW}(p);
    }

    /// createJob accepts exactly the verifier lists and thresholds that are well formed, with at
    /// least one evidence check.
    function testFuzz_createJob_verifiers(uint256 n, uint32 threshold, bool hook, uint256 dup) public {
        n = bound(n, 0, 18);
        threshold = uint32(bound(threshold, 0, 20));
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.verifiers = new address[](n);
        for (uint256 i; i < n; ++i) {
            p.verifiers[i] = address(uint160(0x1000 + i));
        }
        bool duplicated = n > 1 && dup % 4 == 0;
        if (duplicated) p.verifiers[n - 1] = p.verifiers[dup % (n - 1)];
        p.verifierThreshold = threshold;
        if (hook) p.evidenceVerifier = address(token); // any contract passes the code check
        vm.deal(customer, ESCROW);
        vm.prank(customer);
        if (n > 16) {
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.VerifierCount.selector, n));
        } else if (threshold > n) {
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.BadThreshold.selector, threshold, n));
        } else if (!hook && threshold == 0) {
            vm.expectRevert(IConclaveTraining.NoEvidenceCheck.selector);
        } else if (duplicated) {
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.DuplicateVerifier.selector, p.verifiers[n - 1]));
        }
        training.createJob{value: ESCROW}(p);
    }
}
