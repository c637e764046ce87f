// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Vm} from "forge-std/Vm.sol";

import {ConclaveTraining} from "../../src/ConclaveTraining.sol";
import {IConclaveTraining} from "../../src/IConclaveTraining.sol";
import {MockERC20} from "../mocks/MockERC20.sol";

/// @notice Drives ConclaveTraining through random but meaningful steps for the invariant suite:
/// a customer creating and cancelling jobs in the native token and an ERC-20, operators joining,
/// registering with verifier approvals, round certificates signed by random subsets of the active
/// enclaves over random update sets (with a sybil key that no operator registered), a lone
/// operator rushing the final round, equivocating, leaving and withdrawing, a reporter slashing,
/// the customer pulling refunds, and time passing. A step that does not apply is a no-op; a step
/// that applies calls the contract without catching, except where whether it succeeds depends on
/// state the handler does not model (registration, start, withdrawals), so an unexpected revert
/// fails the run (fail_on_revert). Certificates are modelled: one the handler expects to fail
/// (no quorum, too early) must revert, one it expects to land is called without catching.
///
/// The ghost variables record what actually moved, measured by balances, not by the contract's
/// books, and the credits each operator should have from the update sets of the certificates
/// that landed. The handler also keeps its own model of every job's and operator's status,
/// updated from its own successful calls; the suite checks it against the contract.
contract TrainingHandler {
    Vm private constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    address private constant NATIVE = address(0);
    uint256 public constant N_OPS = 4;
    uint256 public constant MAX_JOBS = 3;
    bytes32 private constant MEASUREMENT = keccak256("measurement");
    uint256 private constant N_VERIFIERS = 2;

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
    uint256[N_VERIFIERS] private verifierKeys;
    address[N_VERIFIERS] public verifierAddrs;
    uint256 private immutable sybilKey;
    address public immutable sybil; // an enclave key no operator registered
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
    // Credits each operator should have: one per landed certificate whose update set named its
    // key while it was active (per job, per operator index).
    mapping(uint256 => mapping(uint256 => uint256)) public expectedCredits;
    // Landed certificates and the credits they gave, per job.
    mapping(uint256 => uint256) public certified;
    mapping(uint256 => uint256) public creditsGiven;
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
        for (uint256 v; v < N_VERIFIERS; ++v) {
            verifierKeys[v] = uint256(keccak256(abi.encode("invariant verifier", v)));
            verifierAddrs[v] = vm.addr(verifierKeys[v]);
        }
        sybilKey = uint256(keccak256("invariant sybil"));
        sybil = vm.addr(sybilKey);
    }

    function jobCount() external view returns (uint256) {
        return jobIds.length;
    }

    // ---- customer ----

    function createJob(uint256 seed, uint256 escrow, uint256 stake) external {
        if (jobIds.length >= MAX_JOBS) return;
        IConclaveTraining.JobParams memory p = _jobParams(seed, _bound(escrow, 1, 1e24), _bound(stake, 1, 1e22));
        address t = p.token;
        _fund(t, customer, p.escrow);
        vm.prank(customer);
        uint256 jobId = training.createJob{value: t == NATIVE ? p.escrow : 0}(p);
        jobIds.push(jobId);
        jobModel[jobId] = JobModel({
            token: t,
            status: IConclaveTraining.JobStatus.Open,
            minOperators: p.minOperators,
            totalRounds: p.totalRounds,
            interval: p.checkpointInterval,
            deadline: p.deadline,
            stake: p.stake
        });
        escrowDeposited[t] += p.escrow;
        calls["createJob"]++;
    }

    /// @dev Terms from the seed: token, 1, 2 or 4 rounds, interval 1 or 2, one to three operators
    /// to start, one or two of the two verifiers, a quorum of just over half, two thirds or all,
    /// an hour or six per round, a deadline a day to three weeks after the rounds could end.
    function _jobParams(uint256 seed, uint256 escrow, uint256 stake)
        private
        view
        returns (IConclaveTraining.JobParams memory p)
    {
        uint64[3] memory roundsChoice = [uint64(1), 2, 4];
        uint64 rounds = roundsChoice[(seed >> 1) % 3];
        bytes32[] memory ms = new bytes32[](1);
        ms[0] = MEASUREMENT;
        address[] memory vs = new address[](N_VERIFIERS);
        vs[0] = verifierAddrs[0];
        vs[1] = verifierAddrs[1];
        uint16[3] memory quorumChoice = [uint16(5_001), 6_667, 10_000];
        uint64 roundTime = (seed >> 13) & 1 == 0 ? 1 hours : 6 hours;
        p.token = seed & 1 == 0 ? NATIVE : address(token);
        p.escrow = escrow;
        p.stake = stake;
        p.specHash = keccak256(abi.encode("spec", seed));
        p.datasetRoot = keccak256("dataset");
        p.measurements = ms;
        p.minOperators = uint32(1 + ((seed >> 4) % 3));
        p.totalRounds = rounds;
        p.checkpointInterval = rounds == 1 || (seed >> 3) & 1 == 0 ? 1 : 2;
        p.deadline = uint64(block.timestamp + rounds * roundTime + 1 days + ((seed >> 8) % 20 days));
        p.verifiers = vs;
        p.verifierThreshold = uint32(1 + ((seed >> 6) & 1));
        p.quorumBps = quorumChoice[(seed >> 11) % 3];
        p.minRoundSeconds = roundTime;
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

    /// Registration fails when the operator already has a key; that is not modelled. Both
    /// verifiers approve (the threshold is one or two).
    function _register(uint256 jobId, uint256 i) private {
        bytes32 evidenceHash = keccak256(abi.encode("evidence", i));
        bytes memory sig = _sign(keys[i], training.registrationDigest(jobId, ops[i], evidenceHash, MEASUREMENT));
        bytes32 approval = training.approvalDigest(jobId, ops[i], enclaves[i], evidenceHash, MEASUREMENT);
        bytes[] memory approvals = new bytes[](N_VERIFIERS);
        for (uint256 v; v < N_VERIFIERS; ++v) {
            approvals[v] = _sign(verifierKeys[v], approval);
        }
        vm.prank(ops[i]);
        try training.registerEnclave(jobId, enclaves[i], evidenceHash, MEASUREMENT, sig, "", approvals) {
            calls["register"]++;
        } catch {}
    }

    /// A round certificate for the job's next checkpoint round or the one after it, at the
    /// round's earliest time. Usually every active enclave signs; one time in four a random
    /// subset does, which may miss the quorum. The update set is a random subset of the four
    /// operators' keys (registered or not, active or not) and the sybil key, never empty.
    function certify(uint256 jobSeed, uint256 signerSeed, uint256 memberSeed, uint256 roundSeed) external {
        uint256 jobId = _findJob(jobSeed, COMMITTING);
        if (jobId == 0) return;
        IConclaveTraining.Job memory job = training.getJob(jobId);
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 round = job.latestRound + job.checkpointInterval * uint64(1 + roundSeed % 2);
        if (round > job.totalRounds) return;
        uint256 notBefore = uint256(job.startedAt) + uint256(round) * job.minRoundSeconds;
        if (notBefore >= job.deadline) return;
        if (block.timestamp < notBefore) vm.warp(notBefore);

        uint256 signersMask;
        for (uint256 i; i < N_OPS; ++i) {
            if (_active(jobId, i) && (signerSeed % 4 != 0 || (signerSeed >> (2 + i)) & 1 == 1)) {
                signersMask |= 1 << i;
            }
        }
        uint256 membersMask = memberSeed & 31;
        if (membersMask == 0) membersMask = 1;
        (address[] memory members, uint256 credited) = _members(jobId, membersMask);
        bytes32 model = keccak256(abi.encode("model", jobId, round));
        bytes32 receipt = keccak256(abi.encode("receipt", jobId, round));
        bytes[] memory sigs = _certSigs(jobId, round, model, receipt, members, signersMask);
        if (sigs.length < training.quorumNeeded(jobId)) {
            try training.submitCertificate(jobId, round, model, receipt, members, sigs) {
                revert("a certificate without quorum landed");
            } catch {}
            calls["noQuorum"]++;
            return;
        }
        training.submitCertificate(jobId, round, model, receipt, members, sigs);
        _landed(jobId, round, membersMask, credited);
    }

    /// One active operator signs the final round alone, naming only itself, right away. It lands
    /// only when it is the whole quorum and the final round's time has come.
    function rush(uint256 jobSeed, uint256 opSeed) external {
        uint256 jobId = _findJob(jobSeed, COMMITTING);
        if (jobId == 0) return;
        uint256 i = _findOperator(jobId, opSeed, IConclaveTraining.OperatorStatus.Joined);
        if (i == N_OPS || !_active(jobId, i)) return;
        IConclaveTraining.Job memory job = training.getJob(jobId);
        uint64 round = job.totalRounds;
        bytes32 model = keccak256(abi.encode("rushed model", jobId));
        (address[] memory members, uint256 credited) = _members(jobId, 1 << i);
        bytes[] memory sigs = _certSigs(jobId, round, model, "rushed", members, 1 << i);
        bool lands = training.quorumNeeded(jobId) <= 1 && round > job.latestRound
            && block.timestamp >= uint256(job.startedAt) + uint256(round) * job.minRoundSeconds;
        if (!lands) {
            try training.submitCertificate(jobId, round, model, "rushed", members, sigs) {
                revert("a lone operator certified the final round");
            } catch {}
            calls["rushRefused"]++;
            return;
        }
        training.submitCertificate(jobId, round, model, "rushed", members, sigs);
        _landed(jobId, round, 1 << i, credited);
    }

    function _landed(uint256 jobId, uint64 round, uint256 membersMask, uint256 credited) private {
        for (uint256 i; i < N_OPS; ++i) {
            if ((membersMask >> i) & 1 == 1 && _active(jobId, i)) expectedCredits[jobId][i] += 1;
        }
        certified[jobId] += 1;
        creditsGiven[jobId] += credited;
        calls["certify"]++;
        JobModel storage model = jobModel[jobId];
        if (round == model.totalRounds) {
            model.status = IConclaveTraining.JobStatus.Completed;
            calls["completed"]++;
        }
    }

    /// @dev Joined with a registered key (as the contract sees the key; the status as modelled).
    function _active(uint256 jobId, uint256 i) private view returns (bool) {
        return opModel[jobId][i] == IConclaveTraining.OperatorStatus.Joined
            && training.getOperator(jobId, ops[i]).enclaveKey != address(0);
    }

    /// @dev The keys in `mask` (bits 0..3: operators' enclaves, bit 4: the sybil), ascending, and
    /// how many of them belong to active operators.
    function _members(uint256 jobId, uint256 mask) private view returns (address[] memory list, uint256 credited) {
        uint256 n;
        for (uint256 b; b <= N_OPS; ++b) {
            if ((mask >> b) & 1 == 1) n++;
        }
        list = new address[](n);
        n = 0;
        for (uint256 b; b <= N_OPS; ++b) {
            if ((mask >> b) & 1 == 0) continue;
            list[n++] = b == N_OPS ? sybil : enclaves[b];
            if (b < N_OPS && _active(jobId, b)) credited++;
        }
        _sortAddresses(list);
    }

    /// @dev Signatures by the enclaves in `mask` over the statement, sorted by signer.
    function _certSigs(
        uint256 jobId,
        uint64 round,
        bytes32 model,
        bytes32 receipt,
        address[] memory members,
        uint256 mask
    ) private returns (bytes[] memory sigs) {
        (address[] memory signers,) = _members(jobId, mask);
        bytes32 digest = training.checkpointDigest(jobId, round, model, receipt, keccak256(abi.encodePacked(members)));
        sigs = new bytes[](signers.length);
        for (uint256 k; k < signers.length; ++k) {
            for (uint256 i; i < N_OPS; ++i) {
                if (enclaves[i] == signers[k]) sigs[k] = _sign(keys[i], digest);
            }
        }
    }

    function _sortAddresses(address[] memory list) private pure {
        for (uint256 i = 1; i < list.length; ++i) {
            address x = list[i];
            uint256 j = i;
            while (j > 0 && list[j - 1] > x) {
                list[j] = list[j - 1];
                j--;
            }
            list[j] = x;
        }
    }

    /// The enclave signs two different statements for the operator's last round (or round 1);
    /// a reporter proves it with slash.
    function equivocate(uint256 jobSeed, uint256 opSeed) external {
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
        bytes32 honest = keccak256(abi.encode("model", jobId, round));
        bytes32 forked = keccak256(abi.encode("forked model", jobId, round));
        bytes32 receipt = keccak256(abi.encode("receipt", jobId, round));
        bytes memory sigA = _sign(keys[i], training.checkpointDigest(jobId, round, honest, receipt, "set"));
        bytes memory sigB = _sign(keys[i], training.checkpointDigest(jobId, round, forked, receipt, "set"));
        uint256 before = _balance(t, reporter);
        vm.prank(reporter);
        training.slash(
            jobId,
            round,
            IConclaveTraining.SignedCheckpoint(honest, receipt, "set", sigA),
            IConclaveTraining.SignedCheckpoint(forked, receipt, "set", sigB)
        );
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
