// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

import {IConclaveTraining} from "./IConclaveTraining.sol";
import {IEvidenceVerifier} from "./IEvidenceVerifier.sol";

/// @title Conclave training jobs: escrow, attested enclave keys, signed checkpoints, payment and
/// slashing.
/// @notice A customer escrows payment for a job (native token or one ERC-20). Operators join with
/// a stake in the same token and register the Ethereum address of the secp256k1 key their enclave
/// made, with the hash of the attestation evidence that binds it and the measurement it claims
/// (which must be on the job's allowlist). The evidence itself is appraised off chain by peers
/// and customers, or by an optional per-job `IEvidenceVerifier`. Enclaves sign checkpoint
/// statements (EIP-712); anyone may relay them. The first valid statement for a checkpoint round
/// fixes the round's model hash; every operator whose enclave signs the same model hash for that
/// round is credited with it. At the end the escrow is split among non-slashed operators by their
/// credits. An enclave key that signs two different statements for one round has equivocated:
/// anyone can prove it and the operator's stake is slashed, part to the reporter, the rest to
/// the customer. Every payout is pulled by its recipient; nothing is sent in a loop.
/// @dev Types, events and errors are in IConclaveTraining. The state machine, the EIP-712 types
/// and the payment arithmetic are in contracts/README.md.
contract ConclaveTraining is IConclaveTraining, EIP712, ReentrancyGuard {
    using SafeERC20 for IERC20;

    // ----------------------------------------------------------------------------------------
    // Constants and configuration
    // ----------------------------------------------------------------------------------------

    /// @notice EIP-712 type of the statement an enclave signs for a checkpoint.
    bytes32 public constant CHECKPOINT_TYPEHASH =
        keccak256("Checkpoint(uint256 jobId,uint64 round,bytes32 modelHash,bytes32 receiptHash)");
    /// @notice EIP-712 type of the statement an enclave signs to be registered by an operator
    /// (proof that the operator holds the enclave's consent, so no one else can claim its key).
    bytes32 public constant REGISTRATION_TYPEHASH = keccak256(
        "EnclaveRegistration(uint256 jobId,address operator,bytes32 evidenceHash,bytes32 measurement)"
    );
    uint256 public constant MAX_MEASUREMENTS = 64;
    uint256 public constant BPS = 10_000;

    /// @notice Seconds between `requestLeave` and the stake becoming withdrawable.
    uint64 public immutable unbondingDelay;
    /// @notice Seconds after the final checkpoint during which other operators' matching
    /// statements for already accepted rounds are still credited; the job settles after it.
    uint64 public immutable commitGrace;
    /// @notice Share of a slashed stake paid to the reporter, in basis points.
    uint256 public immutable reporterRewardBps;

    uint256 public nextJobId = 1;

    mapping(uint256 jobId => Job) private _jobs;
    mapping(uint256 jobId => mapping(address operator => Operator)) private _operators;
    mapping(uint256 jobId => mapping(address enclaveKey => address operator)) private _keyOperator;
    mapping(uint256 jobId => mapping(bytes32 measurement => bool)) private _allowed;
    mapping(uint256 jobId => bytes32[]) private _measurements;
    mapping(uint256 jobId => mapping(uint64 round => Checkpoint)) private _checkpoints;

    // ----------------------------------------------------------------------------------------
    // Construction
    // ----------------------------------------------------------------------------------------

    /// @param unbondingDelay_ seconds from `requestLeave` to a withdrawable stake
    /// @param commitGrace_ seconds after completion during which matching statements still count
    /// @param reporterRewardBps_ share of a slashed stake paid to whoever proves the equivocation
    constructor(uint64 unbondingDelay_, uint64 commitGrace_, uint256 reporterRewardBps_)
        EIP712("ConclaveTraining", "1")
    {
        if (reporterRewardBps_ > BPS) revert InvalidConfig();
        unbondingDelay = unbondingDelay_;
        commitGrace = commitGrace_;
        reporterRewardBps = reporterRewardBps_;
    }

    // ----------------------------------------------------------------------------------------
    // Customer
    // ----------------------------------------------------------------------------------------

    /// @notice Creates a job and escrows its payment: `msg.value` for the native token, otherwise
    /// `escrow` pulled with `transferFrom` (approve first).
    function createJob(JobParams calldata p) external payable nonReentrant returns (uint256 jobId) {
        if (p.escrow == 0) revert ZeroEscrow();
        if (p.stake == 0) revert ZeroStake();
        if (p.minOperators == 0) revert ZeroMinOperators();
        if (p.specHash == 0 || p.datasetRoot == 0) revert ZeroHash();
        if (p.totalRounds == 0 || p.checkpointInterval == 0 || p.totalRounds % p.checkpointInterval != 0) {
            revert InvalidRounds(p.totalRounds, p.checkpointInterval);
        }
        if (p.deadline <= block.timestamp) revert DeadlineNotInFuture(p.deadline);
        uint256 n = p.measurements.length;
        if (n == 0 || n > MAX_MEASUREMENTS) revert MeasurementCount(n);
        if (p.token != address(0) && p.token.code.length == 0) revert NotAToken(p.token);
        if (p.evidenceVerifier != address(0) && p.evidenceVerifier.code.length == 0) {
            revert NotAVerifier(p.evidenceVerifier);
        }

        jobId = nextJobId++;
        for (uint256 i; i < n; ++i) {
            bytes32 m = p.measurements[i];
            if (m == 0) revert ZeroHash();
            if (_allowed[jobId][m]) revert DuplicateMeasurement(m);
            _allowed[jobId][m] = true;
        }
        _measurements[jobId] = p.measurements;

        Job storage job = _jobs[jobId];
        job.customer = msg.sender;
        job.status = JobStatus.Open;
        job.minOperators = p.minOperators;
        job.token = p.token;
        job.deadline = p.deadline;
        job.totalRounds = p.totalRounds;
        job.checkpointInterval = p.checkpointInterval;
        job.evidenceVerifier = p.evidenceVerifier;
        job.escrow = p.escrow;
        job.stake = p.stake;
        job.specHash = p.specHash;
        job.datasetRoot = p.datasetRoot;

        emit JobCreated(jobId, msg.sender, p.token, p);
        _pull(p.token, p.escrow);
    }

    /// @notice Cancels a job that has not started and returns the whole escrow to the customer.
    /// Operators who joined take their stake back with `requestLeave` and `withdraw`.
    function cancelJob(uint256 jobId) external nonReentrant {
        Job storage job = _job(jobId);
        if (msg.sender != job.customer) revert NotCustomer(msg.sender);
        if (job.status != JobStatus.Open) revert WrongJobStatus(jobId, job.status);
        job.status = JobStatus.Cancelled;
        uint256 amount = job.escrow;
        job.refunded = amount;
        emit JobCancelled(jobId, amount);
        _send(job.token, msg.sender, amount);
    }

    /// @notice Pays the customer what it is owed: slashed stake (any time) and, once the job has
    /// settled, the escrow that no operator can claim (the share of rounds an expired job never
    /// reached, shares of operators slashed after settlement, rounding dust).
    function refund(uint256 jobId) external nonReentrant {
        Job storage job = _job(jobId);
        if (msg.sender != job.customer) revert NotCustomer(msg.sender);
        uint256 slashedStake = job.slashedStakeOwed;
        uint256 escrowPart = _refundableEscrow(job);
        if (slashedStake == 0 && escrowPart == 0) revert NothingToRefund();
        job.slashedStakeOwed = 0;
        job.refunded += escrowPart;
        emit Refunded(jobId, msg.sender, escrowPart, slashedStake);
        _send(job.token, msg.sender, slashedStake + escrowPart);
    }

    // ----------------------------------------------------------------------------------------
    // Operators
    // ----------------------------------------------------------------------------------------

    /// @notice Joins an open or running job with the job's stake (`msg.value`, or pulled ERC-20).
    function join(uint256 jobId) external payable nonReentrant {
        Job storage job = _job(jobId);
        _requireJoinable(jobId, job);
        Operator storage op = _operators[jobId][msg.sender];
        if (op.status != OperatorStatus.None) revert AlreadyJoined(msg.sender);
        op.status = OperatorStatus.Joined;
        op.stake = job.stake;
        emit OperatorJoined(jobId, msg.sender, job.stake);
        _pull(job.token, job.stake);
    }

    /// @notice Registers the caller's enclave key for the job. `keySignature` is the enclave's
    /// EIP-712 signature over `EnclaveRegistration(jobId, msg.sender, evidenceHash, measurement)`.
    /// `evidence` goes to the job's evidence verifier if it has one and is ignored otherwise.
    function registerEnclave(
        uint256 jobId,
        address enclaveKey,
        bytes32 evidenceHash,
        bytes32 measurement,
        bytes calldata keySignature,
        bytes calldata evidence
    ) external {
        Job storage job = _job(jobId);
        _requireJoinable(jobId, job);
        Operator storage op = _operators[jobId][msg.sender];
        if (op.status != OperatorStatus.Joined) revert WrongOperatorStatus(msg.sender, op.status);
        if (op.enclaveKey != address(0)) revert KeyAlreadyRegistered(msg.sender, op.enclaveKey);
        if (enclaveKey == address(0)) revert ZeroEnclaveKey();
        if (_keyOperator[jobId][enclaveKey] != address(0)) revert KeyInUse(enclaveKey);
        if (evidenceHash == 0) revert ZeroHash();
        if (!_allowed[jobId][measurement]) revert MeasurementNotAllowed(measurement);
        if (_recover(registrationDigest(jobId, msg.sender, evidenceHash, measurement), keySignature) != enclaveKey) {
            revert InvalidSignature();
        }
        address verifier = job.evidenceVerifier;
        if (verifier != address(0)) {
            bytes4 magic = IEvidenceVerifier(verifier).verifyEvidence(
                jobId, msg.sender, enclaveKey, evidenceHash, measurement, evidence
            );
            if (magic != IEvidenceVerifier.verifyEvidence.selector) revert EvidenceRejected(verifier);
        }

        op.enclaveKey = enclaveKey;
        op.evidenceHash = evidenceHash;
        op.measurement = measurement;
        _keyOperator[jobId][enclaveKey] = msg.sender;
        job.activeOperators += 1;
        emit EnclaveRegistered(jobId, msg.sender, enclaveKey, evidenceHash, measurement);
    }

    /// @notice Starts an open job once enough operators are active. Anyone may call it.
    function startJob(uint256 jobId) external {
        Job storage job = _job(jobId);
        if (job.status != JobStatus.Open) revert WrongJobStatus(jobId, job.status);
        if (block.timestamp >= job.deadline) revert DeadlinePassed(job.deadline);
        if (job.activeOperators < job.minOperators) {
            revert NotEnoughOperators(job.activeOperators, job.minOperators);
        }
        job.status = JobStatus.Running;
        job.startedAt = uint64(block.timestamp);
        emit JobStarted(jobId, job.activeOperators);
    }

    /// @notice Starts unbonding: the caller stops taking part (no more checkpoints) and can
    /// withdraw its stake `unbondingDelay` seconds later unless slashed meanwhile.
    function requestLeave(uint256 jobId) external {
        Job storage job = _job(jobId);
        Operator storage op = _operators[jobId][msg.sender];
        if (op.status != OperatorStatus.Joined) revert WrongOperatorStatus(msg.sender, op.status);
        if (op.enclaveKey != address(0)) job.activeOperators -= 1;
        op.status = OperatorStatus.Leaving;
        uint64 unbondsAt = uint64(block.timestamp) + unbondingDelay;
        op.unbondsAt = unbondsAt;
        emit LeaveRequested(jobId, msg.sender, unbondsAt);
    }

    /// @notice Pulls what the caller is owed: its stake once unbonded, and its share of the escrow
    /// once the job has settled (after its stake, so a payee can no longer be slashed).
    function withdraw(uint256 jobId) external nonReentrant {
        Job storage job = _job(jobId);
        Operator storage op = _operators[jobId][msg.sender];
        uint256 stakeOut;
        if (op.status == OperatorStatus.Leaving) {
            if (block.timestamp < op.unbondsAt) revert StillUnbonding(op.unbondsAt);
            stakeOut = op.stake;
            op.stake = 0;
            op.status = OperatorStatus.Exited;
        } else if (op.status != OperatorStatus.Exited) {
            revert WrongOperatorStatus(msg.sender, op.status);
        }

        // Credits are paid once, after the stake (so a payee can no longer be slashed), when the
        // job has settled. An operator with no credits is settled with nothing to pay.
        uint256 payment;
        bool paidNow;
        if (!op.paid && (_isSettled(job) || job.status == JobStatus.Cancelled)) {
            op.paid = true;
            uint64 credits = op.credits;
            if (credits > 0) {
                paidNow = true;
                payment = _share(job, credits);
                job.paidOut += payment;
                job.unpaidCredits -= credits;
            }
        }
        if (stakeOut == 0 && !paidNow) {
            if (!op.paid && op.credits > 0) revert NotSettled(jobId);
            revert NothingToWithdraw();
        }

        emit Withdrawn(jobId, msg.sender, stakeOut, payment);
        _send(job.token, msg.sender, stakeOut + payment);
    }

    // ----------------------------------------------------------------------------------------
    // Checkpoints and slashing (anyone may relay enclave signatures)
    // ----------------------------------------------------------------------------------------

    /// @notice Records an enclave-signed checkpoint statement. The signer must be the registered
    /// key of an active operator; the operator's rounds must go forward. The first valid statement
    /// for a round is accepted (it fixes the round's model hash and must be past the job's latest
    /// accepted round); later statements for the round count for their operators when they name
    /// the same model hash. A second, different statement from the same key for the operator's
    /// last round is equivocation: the operator is slashed on the spot (reward to the caller).
    function submitCheckpoint(
        uint256 jobId,
        uint64 round,
        bytes32 modelHash,
        bytes32 receiptHash,
        bytes calldata signature
    ) external nonReentrant {
        Job storage job = _job(jobId);
        if (!_commitsOpen(job)) revert CommitsClosed(jobId);
        if (modelHash == 0) revert ZeroHash();
        if (round == 0 || round > job.totalRounds || round % job.checkpointInterval != 0) {
            revert NotACheckpointRound(round);
        }
        bytes32 statement = _checkpointStructHash(jobId, round, modelHash, receiptHash);
        address key = _recover(_hashTypedDataV4(statement), signature);
        address operator = _keyOperator[jobId][key];
        if (operator == address(0)) revert UnknownEnclaveKey(key);
        Operator storage op = _operators[jobId][operator];

        if (round <= op.lastRound) {
            if (round < op.lastRound) revert RoundNotAfter(round, op.lastRound);
            if (statement == op.lastStatement) revert AlreadySubmitted(round);
            if (op.status != OperatorStatus.Joined && op.status != OperatorStatus.Leaving) {
                revert WrongOperatorStatus(operator, op.status);
            }
            emit Equivocation(jobId, round, operator, key, op.lastStatement, statement);
            _slash(jobId, job, op, operator);
            return;
        }
        if (op.status != OperatorStatus.Joined) revert WrongOperatorStatus(operator, op.status);

        Checkpoint storage cp = _checkpoints[jobId][round];
        bool accepted = cp.modelHash == 0;
        if (accepted) {
            if (round <= job.latestRound) revert RoundBehind(round, job.latestRound);
            cp.modelHash = modelHash;
            cp.receiptHash = receiptHash;
            cp.operator = operator;
            cp.acceptedAt = uint64(block.timestamp);
            job.latestRound = round;
            job.acceptedCheckpoints += 1;
        } else if (cp.modelHash != modelHash) {
            revert ModelMismatch(round, cp.modelHash);
        }
        op.lastRound = round;
        op.lastStatement = statement;
        op.credits += 1;
        job.creditedRounds += 1;
        job.unpaidCredits += 1;
        emit CheckpointSubmitted(jobId, round, operator, key, modelHash, receiptHash, accepted);

        if (accepted && round == job.totalRounds) {
            job.status = JobStatus.Completed;
            job.completedAt = uint64(block.timestamp);
            emit JobCompleted(jobId, round, modelHash);
        }
    }

    /// @notice Proves that one enclave key signed two different checkpoint statements for the
    /// same job and round, and slashes its operator's whole stake: `reporterRewardBps` of it to
    /// the caller, the rest to the customer. Works in any job state while the stake is held.
    function slash(uint256 jobId, uint64 round, SignedCheckpoint calldata a, SignedCheckpoint calldata b)
        external
        nonReentrant
    {
        Job storage job = _job(jobId);
        if (a.modelHash == b.modelHash && a.receiptHash == b.receiptHash) revert NotConflicting();
        bytes32 statementA = _checkpointStructHash(jobId, round, a.modelHash, a.receiptHash);
        bytes32 statementB = _checkpointStructHash(jobId, round, b.modelHash, b.receiptHash);
        address key = _recover(_hashTypedDataV4(statementA), a.signature);
        {
            address keyB = _recover(_hashTypedDataV4(statementB), b.signature);
            if (key != keyB) revert DifferentSigners(key, keyB);
        }
        address operator = _keyOperator[jobId][key];
        if (operator == address(0)) revert UnknownEnclaveKey(key);
        Operator storage op = _operators[jobId][operator];
        if (op.status != OperatorStatus.Joined && op.status != OperatorStatus.Leaving) {
            revert WrongOperatorStatus(operator, op.status);
        }
        emit Equivocation(jobId, round, operator, key, statementA, statementB);
        _slash(jobId, job, op, operator);
    }

    // ----------------------------------------------------------------------------------------
    // Views
    // ----------------------------------------------------------------------------------------

    function getJob(uint256 jobId) external view returns (Job memory) {
        return _jobs[jobId];
    }

    function getOperator(uint256 jobId, address operator) external view returns (Operator memory) {
        return _operators[jobId][operator];
    }

    function getCheckpoint(uint256 jobId, uint64 round) external view returns (Checkpoint memory) {
        return _checkpoints[jobId][round];
    }

    /// @notice The operator that registered `enclaveKey` for the job (address(0): none).
    function operatorOfKey(uint256 jobId, address enclaveKey) external view returns (address) {
        return _keyOperator[jobId][enclaveKey];
    }

    function measurements(uint256 jobId) external view returns (bytes32[] memory) {
        return _measurements[jobId];
    }

    function isMeasurementAllowed(uint256 jobId, bytes32 measurement) external view returns (bool) {
        return _allowed[jobId][measurement];
    }

    /// @notice Whether `submitCheckpoint` currently accepts statements for the job.
    function commitsOpen(uint256 jobId) external view returns (bool) {
        return _commitsOpen(_jobs[jobId]);
    }

    /// @notice Whether the job has settled: credits are final and payments can be withdrawn.
    function isSettled(uint256 jobId) external view returns (bool) {
        return _isSettled(_jobs[jobId]);
    }

    /// @notice The escrow share the operator's credits are worth under the current totals (final
    /// once the job has settled; zero once paid or slashed).
    function paymentOf(uint256 jobId, address operator) external view returns (uint256) {
        Operator storage op = _operators[jobId][operator];
        if (op.paid || op.status == OperatorStatus.Slashed || op.credits == 0) return 0;
        return _share(_jobs[jobId], op.credits);
    }

    /// @notice What `refund` would pay the customer now.
    function refundable(uint256 jobId) external view returns (uint256) {
        Job storage job = _jobs[jobId];
        return job.slashedStakeOwed + _refundableEscrow(job);
    }

    /// @notice The EIP-712 digest an enclave signs for a checkpoint statement.
    function checkpointDigest(uint256 jobId, uint64 round, bytes32 modelHash, bytes32 receiptHash)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(_checkpointStructHash(jobId, round, modelHash, receiptHash));
    }

    /// @notice The EIP-712 digest an enclave signs to let `operator` register its key.
    function registrationDigest(uint256 jobId, address operator, bytes32 evidenceHash, bytes32 measurement)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(abi.encode(REGISTRATION_TYPEHASH, jobId, operator, evidenceHash, measurement))
        );
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ----------------------------------------------------------------------------------------
    // Internals
    // ----------------------------------------------------------------------------------------

    function _job(uint256 jobId) private view returns (Job storage job) {
        job = _jobs[jobId];
        if (job.status == JobStatus.None) revert UnknownJob(jobId);
    }

    function _requireJoinable(uint256 jobId, Job storage job) private view {
        if (job.status != JobStatus.Open && job.status != JobStatus.Running) {
            revert WrongJobStatus(jobId, job.status);
        }
        if (block.timestamp >= job.deadline) revert DeadlinePassed(job.deadline);
    }

    function _commitsOpen(Job storage job) private view returns (bool) {
        if (job.status == JobStatus.Running) return block.timestamp < job.deadline;
        if (job.status == JobStatus.Completed) return block.timestamp < uint256(job.completedAt) + commitGrace;
        return false;
    }

    function _isSettled(Job storage job) private view returns (bool) {
        if (job.status == JobStatus.Running) return block.timestamp >= job.deadline;
        if (job.status == JobStatus.Completed) return block.timestamp >= uint256(job.completedAt) + commitGrace;
        return false;
    }

    /// @dev The escrow earned is the share of the rounds the model got through: all of it when
    /// the job completed, latestRound/totalRounds when it expired. It is split by credits among
    /// the operators not slashed before settlement.
    function _payable(Job storage job) private view returns (uint256) {
        return Math.mulDiv(job.escrow, job.latestRound, job.totalRounds);
    }

    function _share(Job storage job, uint64 credits) private view returns (uint256) {
        return Math.mulDiv(_payable(job), credits, job.creditedRounds);
    }

    /// @dev Escrow the customer may take back once settled: everything not yet paid or refunded,
    /// less a reserve for the unpaid shares. Σ floor(P·cᵢ/C) ≤ floor(P·U/C), so the reserve
    /// floor(P·U/C) covers them, and paying a share never lowers what is refundable.
    function _refundableEscrow(Job storage job) private view returns (uint256) {
        if (!_isSettled(job)) return 0;
        uint256 reserve =
            job.creditedRounds == 0 ? 0 : Math.mulDiv(_payable(job), job.unpaidCredits, job.creditedRounds);
        return job.escrow - job.paidOut - job.refunded - reserve;
    }

    function _slash(uint256 jobId, Job storage job, Operator storage op, address operator) private {
        if (op.status == OperatorStatus.Joined && op.enclaveKey != address(0)) job.activeOperators -= 1;
        op.status = OperatorStatus.Slashed;
        uint64 credits = op.credits;
        if (credits > 0) {
            // Before settlement the forfeited credits leave the split (the others get more);
            // after it the split is fixed and the forfeited share goes back to the customer.
            if (!_isSettled(job)) job.creditedRounds -= credits;
            job.unpaidCredits -= credits;
        }
        uint256 amount = op.stake;
        op.stake = 0;
        uint256 reward = amount * reporterRewardBps / BPS;
        job.slashedStakeOwed += amount - reward;
        emit OperatorSlashed(jobId, operator, msg.sender, amount, reward);
        _send(job.token, msg.sender, reward);
    }

    function _checkpointStructHash(uint256 jobId, uint64 round, bytes32 modelHash, bytes32 receiptHash)
        private
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(CHECKPOINT_TYPEHASH, jobId, round, modelHash, receiptHash));
    }

    /// @dev 65-byte r‖s‖v signatures with low s only (OpenZeppelin's ECDSA); any failure is
    /// `InvalidSignature`.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (err != ECDSA.RecoverError.NoError) revert InvalidSignature();
        return signer;
    }

    function _pull(address token, uint256 amount) private {
        if (token == address(0)) {
            if (msg.value != amount) revert WrongValue(amount, msg.value);
            return;
        }
        if (msg.value != 0) revert WrongValue(0, msg.value);
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        if (IERC20(token).balanceOf(address(this)) - before != amount) revert UnsupportedToken(token);
    }

    function _send(address token, address to, uint256 amount) private {
        if (amount == 0) return;
        if (token == address(0)) Address.sendValue(payable(to), amount);
        else IERC20(token).safeTransfer(to, amount);
    }
}
