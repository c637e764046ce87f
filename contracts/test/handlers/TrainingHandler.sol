// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Vm} from "forge-std/Vm.sol";

import {ConclaveTraining} from "../../src/ConclaveTraining.sol";
import {IConclaveTraining} from "../../src/IConclaveTraining.sol";
import {MockERC20} from "../mocks/MockERC20.sol";

/// @notice Drives ConclaveTraining through random but meaningful steps for the invariant suite:
/// a customer creating and cancelling jobs in the native token and an ERC-20, operators joining,
/// registering, committing honest checkpoints, equivocating, leaving and withdrawing, a reporter
/// slashing, the customer pulling refunds, and time passing. A step that does not apply is a
/// no-op; a step that applies calls the contract without catching, except where whether it
/// succeeds depends on state the handler does not model (registration, start, commits,
/// withdrawals), so an unexpected revert fails the run (fail_on_revert).
///
/// The ghost variables record what actually moved, measured by balances, not by the contract's
/// books. The handler also keeps its own model of every job's and operator's status, updated
/// from its own successful calls; the suite checks it against the contract.
contract TrainingHandler {
    Vm private constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    address private constant NATIVE = address(0);
    uint256 public constant N_OPS = 4;
    uint256 public constant MAX_JOBS = 3;
    bytes32 private constant MEASUREMENT = keccak256("measurement");

    struct JobModel {
        address token;
        IConclaveTraining.JobStatus status;
        uint32 minOperators;
        uint64 totalRounds;
        uint64 interval;
        uint64 deadline;
        uint256 stake;
    }

    ConclaveTraining public immutable training;
    MockERC20 public immutable token;
    address public immutable customer;
    address public immutable reporter;
    address[N_OPS] public ops;
    uint256[N_OPS] private keys;
    address[N_OPS] public enclaves;
    uint256[] public jobIds;
    mapping(uint256 jobId => JobModel) public jobModel;
    mapping(uint256 jobId => mapping(uint256 op => IConclaveTraining.OperatorStatus)) public opModel;

    // Ghosts per token (address(0): native).
    mapping(address => uint256) public escrowDeposited;
    mapping(address => uint256) public escrowPaid;
    mapping(address => uint256) public escrowRefunded;
    mapping(address => uint256) public stakeDeposited;
    mapping(address => uint256) public stakeReturned;
    mapping(address => uint256) public slashRewards;
    mapping(address => uint256) public slashedStakeRefunded;
    // What each operator received as payment (not stake), per job.
    mapping(uint256 => mapping(address => uint256)) public paidTo;
    // How often the interesting things happened (for tuning the handler).
    mapping(bytes32 => uint256) public calls;

    constructor(ConclaveTraining training_, MockERC20 token_) {
        training = training_;
        token = token_;
        customer = address(0xC057);
        reporter = address(0x4E9047);
        for (uint256 i; i < N_OPS; ++i) {
            ops[i] = address(uint160(0x09E0 + i));
            keys[i] = uint256(keccak256(abi.encode("invariant enclave", i)));
            enclaves[i] = vm.addr(keys[i]);
        }
    }

    function jobCount() external view returns (uint256) {
        return jobIds.length;
    }

    // ---- customer ----

    function createJob(uint256 seed, uint256 escrow, uint256 stake) external {
        if (jobIds.length >= MAX_JOBS) return;
        address t = seed & 1 == 0 ? NATIVE : address(token);
        escrow = _bound(escrow, 1, 1e24);
        stake = _bound(stake, 1, 1e22);
        uint64[3] memory roundsChoice = [uint64(1), 2, 4];
        uint64 rounds = roundsChoice[(seed >> 1) % 3];
        uint64 interval = rounds == 1 || (seed >> 3) & 1 == 0 ? 1 : 2;
        bytes32[] memory ms = new bytes32[](1);
        ms[0] = MEASUREMENT;
        IConclaveTraining.JobParams memory p = IConclaveTraining.JobParams({
            token: t,
            escrow: escrow,
            stake: stake,
            specHash: keccak256(abi.encode("spec", seed)),
            datasetRoot: keccak256("dataset"),
            measurements: ms,
            minOperators: uint32(1 + ((seed >> 4) % 3)),
            totalRounds: rounds,
            checkpointInterval: interval,
            deadline: uint64(block.timestamp + 1 days + ((seed >> 8) % 20 days)),
            evidenceVerifier: address(0)
        });
        _fund(t, customer, escrow);
        vm.prank(customer);
        uint256 jobId = training.createJob{value: t == NATIVE ? escrow : 0}(p);
        jobIds.push(jobId);
        jobModel[jobId] = JobModel({
            token: t,
            status: IConclaveTraining.JobStatus.Open,
            minOperators: p.minOperators,
            totalRounds: rounds,
            interval: interval,
            deadline: p.deadline,
            stake: stake
        });
        escrowDeposited[t] += escrow;
        calls["createJob"]++;
    }

    function cancelJob(uint256 jobSeed) external {
        // Rarely: a cancelled job takes no further part.
        if (jobSeed % 4 != 0) return;
        uint256 jobId = _findJob(jobSeed >> 2, OPEN);
        if (jobId == 0) return;
        address t = jobModel[jobId].token;
        uint256 before = _balance(t, customer);
        vm.prank(customer);
        training.cancelJob(jobId);
        jobModel[jobId].status = IConclaveTraining.JobStatus.Cancelled;
        escrowRefunded[t] += _balance(t, customer) - before;
        calls["cancelJob"]++;
    }

    function refund(uint256 jobSeed) external {
        uint256 jobId = _findJob(jobSeed, REFUNDABLE);
        if (jobId == 0) return;
        address t = jobModel[jobId].token;
        uint256 slashedStake = training.getJob(jobId).slashedStakeOwed;
        uint256 before = _balance(t, customer);
        vm.prank(customer);
        training.refund(jobId);
        uint256 received = _balance(t, customer) - before;
        slashedStakeRefunded[t] += slashedStake;
        escrowRefunded[t] += received - slashedStake;
        calls["refund"]++;
    }

    /// Starts an open job, first joining and registering operators until it has enough.
    function startJob(uint256 jobSeed) external {
        uint256 jobId = _findJob(jobSeed, OPEN);
        if (jobId == 0 || block.timestamp >= jobModel[jobId].deadline) return;
        for (uint256 k; k < N_OPS; ++k) {
            uint256 i = (jobSeed % N_OPS + k) % N_OPS;
            if (opModel[jobId][i] == IConclaveTraining.OperatorStatus.None) _join(jobId, i, true);
            else if (opModel[jobId][i] == IConclaveTraining.OperatorStatus.Joined) _register(jobId, i);
            if (training.getJob(jobId).activeOperators >= jobModel[jobId].minOperators) break;
        }
        try training.startJob(jobId) {
            jobModel[jobId].status = IConclaveTraining.JobStatus.Running;
            calls["startJob"]++;
        } catch {}
    }

    // ---- operators ----

    function join(uint256 jobSeed, uint256 opSeed, bool withoutKey) external {
        uint256 jobId = _findJob(jobSeed, JOINABLE);
        if (jobId == 0) return;
        uint256 i = _findOperator(jobId, opSeed, IConclaveTraining.OperatorStatus.None);
        // Mostly join and register together; sometimes leave the key for later.
        if (i != N_OPS) _join(jobId, i, !(withoutKey && opSeed % 4 == 0));
    }

    function register(uint256 jobSeed, uint256 opSeed) external {
        uint256 jobId = _findJob(jobSeed, JOINABLE);
        if (jobId == 0) return;
        uint256 i = _findOperator(jobId, opSeed, IConclaveTraining.OperatorStatus.Joined);
        if (i != N_OPS) _register(jobId, i);
    }

    function _join(uint256 jobId, uint256 i, bool register_) private {
        JobModel storage job = jobModel[jobId];
        _fund(job.token, ops[i], job.stake);
        vm.prank(ops[i]);
        training.join{value: job.token == NATIVE ? job.stake : 0}(jobId);
        opModel[jobId][i] = IConclaveTraining.OperatorStatus.Joined;
        stakeDeposited[job.token] += job.stake;
        calls["join"]++;
        if (register_) _register(jobId, i);
    }

    /// Registration fails when the operator already has a key; that is not modelled.
    function _register(uint256 jobId, uint256 i) private {
        bytes32 evidenceHash = keccak256(abi.encode("evidence", i));
        bytes memory sig = _sign(keys[i], training.registrationDigest(jobId, ops[i], evidenceHash, MEASUREMENT));
        vm.prank(ops[i]);
        try training.registerEnclave(jobId, enclaves[i], evidenceHash, MEASUREMENT, sig, "") {
            calls["register"]++;
        } catch {}
    }

    /// An honest commit: the model hash for round r is a function of (job, r), so every honest
    /// enclave agrees with the accepted one. The round is the operator's next checkpoint round
    /// or the one after it.
    function submit(uint256 jobSeed, uint256 opSeed, uint256 roundSeed) external {
        uint256 jobId = _findJob(jobSeed, COMMITTING);
        if (jobId == 0) return;
        uint256 i = _findOperator(jobId, opSeed, IConclaveTraining.OperatorStatus.Joined);
        if (i == N_OPS) return;
        JobModel storage job = jobModel[jobId];
        uint64 lastRound = training.getOperator(jobId, ops[i]).lastRound;
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 round = lastRound + job.interval * uint64(1 + roundSeed % 2);
        if (round > job.totalRounds) return;
        bytes32 model = keccak256(abi.encode("model", jobId, round));
        bytes32 receipt = keccak256(abi.encode("receipt", i, round));
        bytes memory sig = _sign(keys[i], training.checkpointDigest(jobId, round, model, receipt));
        // Refused when the key is not registered or the round is behind the job: not modelled.
        try training.submitCheckpoint(jobId, round, model, receipt, sig) {
            calls["submit"]++;
            if (round == job.totalRounds && job.status != IConclaveTraining.JobStatus.Completed) {
                job.status = IConclaveTraining.JobStatus.Completed;
                calls["completed"]++;
            }
        } catch {}
    }

    /// The enclave signs a second, different statement for the operator's last round (or round
    /// 1): relayed through submitCheckpoint when that path applies, otherwise proven with slash.
    function equivocate(uint256 jobSeed, uint256 opSeed, bool viaSubmit) external {
        // Less often than honest steps, so that many runs end with honest operators paid.
        if (jobSeed % 3 != 0) return;
        uint256 jobId = _findJob(jobSeed >> 2, ANY);
        if (jobId == 0) return;
        uint256 i = _findOperator(jobId, opSeed, IConclaveTraining.OperatorStatus.Joined);
        if (i == N_OPS) i = _findOperator(jobId, opSeed, IConclaveTraining.OperatorStatus.Leaving);
        if (i == N_OPS) return;
        IConclaveTraining.Operator memory op = training.getOperator(jobId, ops[i]);
        if (op.enclaveKey == address(0)) return;
        address t = jobModel[jobId].token;
        uint64 round = op.lastRound == 0 ? 1 : op.lastRound;
        bytes32 model = keccak256(abi.encode("forked model", jobId, round));
        bytes memory sigB = _sign(keys[i], training.checkpointDigest(jobId, round, model, "fork"));
        uint256 before = _balance(t, reporter);
        if (viaSubmit && op.lastRound != 0 && training.commitsOpen(jobId)) {
            vm.prank(reporter);
            training.submitCheckpoint(jobId, round, model, "fork", sigB);
        } else {
            bytes32 honest = keccak256(abi.encode("model", jobId, round));
            bytes32 receipt = keccak256(abi.encode("receipt", i, round));
            bytes memory sigA = _sign(keys[i], training.checkpointDigest(jobId, round, honest, receipt));
            vm.prank(reporter);
            training.slash(
                jobId,
                round,
                IConclaveTraining.SignedCheckpoint(honest, receipt, sigA),
                IConclaveTraining.SignedCheckpoint(model, "fork", sigB)
            );
        }
        opModel[jobId][i] = IConclaveTraining.OperatorStatus.Slashed;
        slashRewards[t] += _balance(t, reporter) - before;
        calls["slash"]++;
    }

    /// Operators mostly leave jobs that are over (completed, cancelled or expired).
    function requestLeave(uint256 jobSeed, uint256 opSeed) external {
        uint256 jobId = _findJob(jobSeed, opSeed % 8 == 0 ? ANY : OVER);
        if (jobId == 0) return;
        uint256 i = _findOperator(jobId, opSeed, IConclaveTraining.OperatorStatus.Joined);
        if (i == N_OPS) return;
        _leave(jobId, i);
    }

    /// Mostly a leaving or exited operator; one time in four any operator at all, slashed ones
    /// included, which the contract must refuse.
    function withdraw(uint256 jobSeed, uint256 opSeed) external {
        if (opSeed % 4 == 0) {
            uint256 anyJob = _findJob(jobSeed, ANY);
            if (anyJob != 0) _withdraw(anyJob, (opSeed >> 2) % N_OPS);
            return;
        }
        uint256 jobId = _findJob(jobSeed, WITHDRAWING);
        if (jobId == 0) return;
        uint256 i = _findOperator(jobId, opSeed, IConclaveTraining.OperatorStatus.Leaving);
        if (i == N_OPS) i = _findOperator(jobId, opSeed, IConclaveTraining.OperatorStatus.Exited);
        _withdraw(jobId, i);
    }

    /// An operator of a job that is over leaves, waits out its unbonding and withdraws.
    function exit(uint256 jobSeed, uint256 opSeed) external {
        uint256 jobId = _findJob(jobSeed, OVER);
        if (jobId == 0) return;
        uint256 i = _findOperator(jobId, opSeed, IConclaveTraining.OperatorStatus.Joined);
        if (i != N_OPS) {
            _leave(jobId, i);
        } else {
            i = _findOperator(jobId, opSeed, IConclaveTraining.OperatorStatus.Leaving);
            if (i == N_OPS) i = _findOperator(jobId, opSeed, IConclaveTraining.OperatorStatus.Exited);
            if (i == N_OPS) return;
        }
        uint64 unbondsAt = training.getOperator(jobId, ops[i]).unbondsAt;
        if (block.timestamp < unbondsAt) vm.warp(unbondsAt);
        _withdraw(jobId, i);
    }

    function warp(uint256 seconds_) external {
        vm.warp(block.timestamp + _bound(seconds_, 1 hours, 8 days));
    }

    function _leave(uint256 jobId, uint256 i) private {
        vm.prank(ops[i]);
        training.requestLeave(jobId);
        opModel[jobId][i] = IConclaveTraining.OperatorStatus.Leaving;
        calls["requestLeave"]++;
    }

    /// Withdrawal fails while unbonding, before settlement, or with nothing left: not modelled.
    function _withdraw(uint256 jobId, uint256 i) private {
        if (i == N_OPS) return;
        address t = jobModel[jobId].token;
        IConclaveTraining.Operator memory op = training.getOperator(jobId, ops[i]);
        bool unbonded = op.status == IConclaveTraining.OperatorStatus.Leaving && block.timestamp >= op.unbondsAt;
        uint256 stakePart = unbonded ? op.stake : 0;
        uint256 before = _balance(t, ops[i]);
        vm.prank(ops[i]);
        try training.withdraw(jobId) {
            uint256 payment = _balance(t, ops[i]) - before - stakePart;
            if (unbonded) opModel[jobId][i] = IConclaveTraining.OperatorStatus.Exited;
            stakeReturned[t] += stakePart;
            escrowPaid[t] += payment;
            paidTo[jobId][ops[i]] += payment;
            calls["withdraw"]++;
            if (payment > 0) calls["paid"]++;
        } catch {}
    }

    // ---- helpers ----

    uint8 private constant ANY = 0;
    uint8 private constant OPEN = 1;
    uint8 private constant JOINABLE = 2;
    uint8 private constant COMMITTING = 3;
    uint8 private constant REFUNDABLE = 4;
    uint8 private constant OVER = 5;
    uint8 private constant WITHDRAWING = 6;

    /// @dev The first job from `seed` on (cyclically) in the wanted state; 0 if none.
    function _findJob(uint256 seed, uint8 wanted) private view returns (uint256) {
        uint256 n = jobIds.length;
        for (uint256 k; k < n; ++k) {
            uint256 id = jobIds[(seed % n + k) % n];
            IConclaveTraining.JobStatus status = jobModel[id].status;
            bool ok;
            if (wanted == ANY) {
                ok = true;
            } else if (wanted == OPEN) {
                ok = status == IConclaveTraining.JobStatus.Open;
            } else if (wanted == JOINABLE) {
                ok = (status == IConclaveTraining.JobStatus.Open || status == IConclaveTraining.JobStatus.Running)
                    && block.timestamp < jobModel[id].deadline;
            } else if (wanted == COMMITTING) {
                ok = training.commitsOpen(id);
            } else if (wanted == REFUNDABLE) {
                ok = training.refundable(id) > 0;
            } else if (wanted == OVER) {
                ok = status == IConclaveTraining.JobStatus.Completed || status == IConclaveTraining.JobStatus.Cancelled
                    || training.isSettled(id);
            } else {
                ok = _findOperator(id, 0, IConclaveTraining.OperatorStatus.Leaving) != N_OPS
                    || _findOperator(id, 0, IConclaveTraining.OperatorStatus.Exited) != N_OPS;
            }
            if (ok) return id;
        }
        return 0;
    }

    /// @dev The first operator index from `seed` on with the (modelled) status; N_OPS if none.
    function _findOperator(uint256 jobId, uint256 seed, IConclaveTraining.OperatorStatus status)
        private
        view
        returns (uint256)
    {
        for (uint256 k; k < N_OPS; ++k) {
            uint256 i = (seed % N_OPS + k) % N_OPS;
            if (opModel[jobId][i] == status) return i;
        }
        return N_OPS;
    }

    function _fund(address t, address who, uint256 amount) private {
        if (t == NATIVE) {
            vm.deal(who, who.balance + amount);
        } else {
            token.mint(who, amount);
            vm.prank(who);
            token.approve(address(training), type(uint256).max);
        }
    }

    function _balance(address t, address who) private view returns (uint256) {
        return t == NATIVE ? who.balance : token.balanceOf(who);
    }

    function _sign(uint256 key, bytes32 digest) private returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function _bound(uint256 x, uint256 min, uint256 max) private pure returns (uint256) {
        return min + (x % (max - min + 1));
    }
}
