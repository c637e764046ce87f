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

/// @title Conclave training jobs: escrow, attested enclave keys, quorum-certified checkpoints,
/// payment and slashing.
/// @notice A customer escrows payment for a job (native token or one ERC-20). Operators join with
/// a stake in the same token and register the Ethereum address of the secp256k1 key their enclave
/// made, with the hash of the attestation evidence that binds it and the measurement it claims
/// (which must be on the job's allowlist). The evidence is appraised by the job's appointed
/// verifiers, off chain: a key is registered only with EIP-712 approvals from `verifierThreshold`
/// distinct verifiers, and, when the job names one, an `IEvidenceVerifier` checks it on chain
/// too. Rounds are certified, not claimed: a round certificate carries the statement (model hash,
/// receipt hash, the set of enclave keys whose updates the round aggregated) signed by a quorum
/// of the job's active enclaves, no earlier than the job's minimum time per round; anyone may
/// relay it. Each member of a certified round's update set whose operator is active is credited
/// with the round. At the end the escrow is split among non-slashed operators by their credits.
/// An enclave key that signs two different statements for one round has equivocated: anyone can
/// prove it and the operator's stake is slashed, part to the reporter, the rest to the customer.
/// Every payout is pulled by its recipient; nothing is sent in a loop.
/// @dev Types, events and errors are in IConclaveTraining. The state machine, the EIP-712 types
/// and the payment arithmetic are in contracts/README.md.
contract ConclaveTraining is IConclaveTraining, EIP712, ReentrancyGuard {
    using SafeERC20 for IERC20;

    // ----------------------------------------------------------------------------------------
    // Constants and configuration
    // ----------------------------------------------------------------------------------------

    /// @notice EIP-712 type of the statement an enclave signs for a checkpoint round. `updateSet`
    /// is `keccak256(abi.encodePacked(members))` over the strictly ascending enclave keys whose
    /// updates the round aggregated (each address as a 32-byte word).
    bytes32 public constant CHECKPOINT_TYPEHASH = keccak256(
        "Checkpoint(uint256 jobId,bytes32 specHash,bytes32 datasetRoot,uint64 round,bytes32 modelHash,bytes32 receiptHash,bytes32 updateSet)"
    );
    /// @notice EIP-712 type of the statement an enclave signs to be registered by an operator
    /// (proof that the operator holds the enclave's consent, so no one else can claim its key).
    bytes32 public constant REGISTRATION_TYPEHASH = keccak256(
        "EnclaveRegistration(uint256 jobId,bytes32 specHash,bytes32 datasetRoot,address operator,bytes32 evidenceHash,bytes32 measurement)"
    );
    /// @notice EIP-712 type of a verifier's approval of an enclave's evidence for an operator.
    bytes32 public constant APPROVAL_TYPEHASH = keccak256(
        "EnclaveApproval(uint256 jobId,address operator,address enclaveKey,bytes32 evidenceHash,bytes32 measurement)"
    );
    uint256 public constant MAX_MEASUREMENTS = 64;
    uint256 public constant MAX_VERIFIERS = 16;
    uint256 public constant MAX_MEMBERS = 256;
    uint256 public constant BPS = 10_000;

    /// @notice Seconds between `requestLeave` and the stake becoming withdrawable.
    uint64 public immutable unbondingDelay;
    /// @notice Seconds after the final round is certified before the job settles (time to prove
    /// an equivocation before anyone is paid).
    uint64 public immutable commitGrace;
    /// @notice Share of a slashed stake paid to the reporter, in basis points.
    uint256 public immutable reporterRewardBps;

    uint256 public nextJobId = 1;

    mapping(uint256 jobId => Job) private _jobs;
    mapping(uint256 jobId => mapping(address operator => Operator)) private _operators;
    mapping(uint256 jobId => mapping(address enclaveKey => address operator)) private _keyOperator;
    mapping(uint256 jobId => mapping(bytes32 measurement => bool)) private _allowed;
    mapping(uint256 jobId => bytes32[]) private _measurements;
    mapping(uint256 jobId => address[]) private _verifiers;
    /// @dev 1 << (the verifier's index in the job's list); 0: not a verifier of the job.
    mapping(uint256 jobId => mapping(address verifier => uint256 bit)) private _verifierBit;
    mapping(uint256 jobId => mapping(uint64 round => Checkpoint)) private _checkpoints;
    mapping(uint256 jobId => uint64) private _certifiedRounds;

    // ----------------------------------------------------------------------------------------
    // Construction
    // ----------------------------------------------------------------------------------------

    /// @param unbondingDelay_ seconds from `requestLeave` to a withdrawable stake
    /// @param commitGrace_ seconds from completion to settlement
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
        if (p.quorumBps <= BPS / 2 || p.quorumBps > BPS) revert InvalidQuorum(p.quorumBps);
        if (p.minRoundSeconds == 0) revert ZeroRoundTime();
        {
            uint256 earliestEnd = block.timestamp + uint256(p.totalRounds) * p.minRoundSeconds;
            if (earliestEnd > p.deadline) revert DeadlineTooSoon(p.deadline, earliestEnd);
        }
        uint256 n = p.measurements.length;
        if (n == 0 || n > MAX_MEASUREMENTS) revert MeasurementCount(n);
        if (p.verifiers.length > MAX_VERIFIERS) revert VerifierCount(p.verifiers.length);
        if (p.verifierThreshold > p.verifiers.length) revert BadThreshold(p.verifierThreshold, p.verifiers.length);
        if (p.evidenceVerifier == address(0) && p.verifierThreshold == 0) revert NoEvidenceCheck();
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
        _storeVerifiers(jobId, p.verifiers);

        Job storage job = _jobs[jobId];
        job.customer = msg.sender;
        job.status = JobStatus.Open;
        job.minOperators = p.minOperators;
        job.quorumBps = p.quorumBps;
        job.verifierThreshold = p.verifierThreshold;
        job.minRoundSeconds = p.minRoundSeconds;
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
    /// EIP-712 signature over `EnclaveRegistration(jobId, specHash, datasetRoot, msg.sender,
    /// evidenceHash, measurement)` (the job's spec hash and dataset root). `approvals` are EIP-712
    /// signatures over `EnclaveApproval(jobId, msg.sender, enclaveKey, evidenceHash, measurement)`
    /// by at least `verifierThreshold` distinct verifiers of the job, each given once. `evidence`
    /// goes to the job's evidence verifier if it has one and is ignored otherwise.
    function registerEnclave(
        uint256 jobId,
        address enclaveKey,
        bytes32 evidenceHash,
        bytes32 measurement,
        bytes calldata keySignature,
        bytes calldata evidence,
        bytes[] calldata approvals
    ) external {
        Job storage job = _job(jobId);
        _requireJoinable(jobId, job);
        _checkConsent(jobId, enclaveKey, evidenceHash, measurement, keySignature);
        _checkApprovals(jobId, job, enclaveKey, evidenceHash, measurement, approvals);
        address verifier = job.evidenceVerifier;
        if (verifier != address(0)) _checkEvidence(jobId, verifier, enclaveKey, evidenceHash, measurement, evidence);

        Operator storage op = _operators[jobId][msg.sender];
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

    /// @notice Starts unbonding: the caller stops taking part (no more credits) and can
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

    /// @notice Records a round certificate: the statement `Checkpoint(jobId, specHash,
    /// datasetRoot, round, modelHash, receiptHash, updateSetHash(members))` signed by the enclave
    /// keys of at least `quorumNeeded(jobId)` active operators, signatures sorted by strictly
    /// ascending signer. The round must be a checkpoint round past the job's latest certified one
    /// and no earlier than `startedAt + round · minRoundSeconds`. Every member (an enclave key
    /// whose update the round aggregated) registered to an active operator is credited with the
    /// round; other members get nothing. Certifying the final round completes the job.
    function submitCertificate(
        uint256 jobId,
        uint64 round,
        bytes32 modelHash,
        bytes32 receiptHash,
        address[] calldata members,
        bytes[] calldata signatures
    ) external nonReentrant {
        Job storage job = _job(jobId);
        if (!_commitsOpen(job)) revert CommitsClosed(jobId);
        if (modelHash == 0) revert ZeroHash();
        if (round == 0 || round > job.totalRounds || round % job.checkpointInterval != 0) {
            revert NotACheckpointRound(round);
        }
        if (round <= job.latestRound) revert RoundBehind(round, job.latestRound);
        {
            uint256 notBefore = uint256(job.startedAt) + uint256(round) * job.minRoundSeconds;
            if (block.timestamp < notBefore) revert TooEarly(round, notBefore);
        }
        bytes32 updateSet = _updateSetHash(members);
        uint32 signers = _countSigners(
            jobId,
            _hashTypedDataV4(_checkpointStructHash(jobId, job, round, modelHash, receiptHash, updateSet)),
            signatures
        );
        {
            uint256 needed = _quorumNeeded(job);
            if (signers < needed) revert NoQuorum(signers, needed);
        }

        job.latestRound = round;
        _certifiedRounds[jobId] += 1;
        uint32 credited = _credit(jobId, job, round, members);
        Checkpoint storage cp = _checkpoints[jobId][round];
        cp.modelHash = modelHash;
        cp.receiptHash = receiptHash;
        cp.updateSet = updateSet;
        cp.certifiedAt = uint64(block.timestamp);
        cp.signers = signers;
        cp.credited = credited;
        emit CheckpointCertified(jobId, round, modelHash, receiptHash, updateSet, members, signers, credited);

        if (round == job.totalRounds) {
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
        if (a.modelHash == b.modelHash && a.receiptHash == b.receiptHash && a.updateSet == b.updateSet) {
            revert NotConflicting();
        }
        bytes32 statementA = _checkpointStructHash(jobId, job, round, a.modelHash, a.receiptHash, a.updateSet);
        bytes32 statementB = _checkpointStructHash(jobId, job, round, b.modelHash, b.receiptHash, b.updateSet);
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

    /// @notice The job's appointed evidence verifiers.
    function verifiers(uint256 jobId) external view returns (address[] memory) {
        return _verifiers[jobId];
    }

    /// @notice Enclave signatures a round certificate needs now: max(1, ceil(activeOperators ·
    /// quorumBps / 10 000)).
    /// @notice Rounds certified so far (checkpoint rounds with a certificate).
    function certifiedRounds(uint256 jobId) external view returns (uint64) {
        return _certifiedRounds[jobId];
    }

    function quorumNeeded(uint256 jobId) external view returns (uint256) {
        return _quorumNeeded(_jobs[jobId]);
    }

    /// @notice Whether `submitCertificate` currently accepts certificates for the job (Running,
    /// before the deadline).
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

    /// @notice The EIP-712 digest an enclave signs for a checkpoint statement (the job's spec
    /// hash and dataset root are read from storage).
    function checkpointDigest(uint256 jobId, uint64 round, bytes32 modelHash, bytes32 receiptHash, bytes32 updateSet)
        external
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(_checkpointStructHash(jobId, _jobs[jobId], round, modelHash, receiptHash, updateSet));
    }

    /// @notice The EIP-712 digest an enclave signs to let `operator` register its key for the job
    /// (the job's spec hash and dataset root are read from storage).
    function registrationDigest(uint256 jobId, address operator, bytes32 evidenceHash, bytes32 measurement)
        public
        view
        returns (bytes32)
    {
        Job storage job = _jobs[jobId];
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    REGISTRATION_TYPEHASH, jobId, job.specHash, job.datasetRoot, operator, evidenceHash, measurement
                )
            )
        );
    }

    /// @notice The EIP-712 digest a verifier signs to approve `enclaveKey`'s evidence for
    /// `operator` in the job.
    function approvalDigest(
        uint256 jobId,
        address operator,
        address enclaveKey,
        bytes32 evidenceHash,
        bytes32 measurement
    ) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(APPROVAL_TYPEHASH, jobId, operator, enclaveKey, evidenceHash, measurement))
        );
    }

    /// @notice `keccak256(abi.encodePacked(members))`: each address as a 32-byte word. The
    /// contract takes only strictly ascending, non-empty lists of at most MAX_MEMBERS keys.
    function updateSetHash(address[] calldata members) external pure returns (bytes32) {
        return keccak256(abi.encodePacked(members));
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
        return job.status == JobStatus.Running && block.timestamp < job.deadline;
    }

    function _quorumNeeded(Job storage job) private view returns (uint256) {
        uint256 needed = Math.mulDiv(job.activeOperators, job.quorumBps, BPS, Math.Rounding.Ceil);
        return needed == 0 ? 1 : needed;
    }

    function _storeVerifiers(uint256 jobId, address[] calldata list) private {
        uint256 n = list.length;
        for (uint256 i; i < n; ++i) {
            address v = list[i];
            if (v == address(0)) revert ZeroVerifier();
            if (_verifierBit[jobId][v] != 0) revert DuplicateVerifier(v);
            // forge-lint: disable-next-line(incorrect-shift)
            _verifierBit[jobId][v] = 1 << i; // i < MAX_VERIFIERS
        }
        _verifiers[jobId] = list;
    }

    /// @dev The caller is Joined without a key; the key is new to the job, the evidence hash set,
    /// the measurement allowed, and the key signed its consent to be registered by the caller.
    function _checkConsent(
        uint256 jobId,
        address enclaveKey,
        bytes32 evidenceHash,
        bytes32 measurement,
        bytes calldata keySignature
    ) private view {
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
    }

    /// @dev At least `verifierThreshold` distinct verifiers of the job approved the key; an
    /// approval by anyone else, or a second one by the same verifier, reverts.
    function _checkApprovals(
        uint256 jobId,
        Job storage job,
        address enclaveKey,
        bytes32 evidenceHash,
        bytes32 measurement,
        bytes[] calldata approvals
    ) private view {
        bytes32 digest = approvalDigest(jobId, msg.sender, enclaveKey, evidenceHash, measurement);
        uint256 seen;
        uint256 n = approvals.length;
        for (uint256 i; i < n; ++i) {
            address signer = _recover(digest, approvals[i]);
            uint256 bit = _verifierBit[jobId][signer];
            if (bit == 0) revert UnknownApprover(signer);
            if (seen & bit != 0) revert DuplicateApproval(signer);
            seen |= bit;
        }
        if (n < job.verifierThreshold) revert NotEnoughApprovals(n, job.verifierThreshold);
    }

    function _checkEvidence(
        uint256 jobId,
        address verifier,
        address enclaveKey,
        bytes32 evidenceHash,
        bytes32 measurement,
        bytes calldata evidence
    ) private view {
        bytes4 magic = IEvidenceVerifier(verifier)
            .verifyEvidence(jobId, msg.sender, enclaveKey, evidenceHash, measurement, evidence);
        if (magic != IEvidenceVerifier.verifyEvidence.selector) revert EvidenceRejected(verifier);
    }

    /// @dev The update-set hash of a non-empty, strictly ascending list of at most MAX_MEMBERS keys.
    function _updateSetHash(address[] calldata members) private pure returns (bytes32) {
        uint256 n = members.length;
        if (n == 0 || n > MAX_MEMBERS) revert BadUpdateSet();
        for (uint256 i = 1; i < n; ++i) {
            if (members[i] <= members[i - 1]) revert BadUpdateSet();
        }
        return keccak256(abi.encodePacked(members));
    }

    /// @dev Each signature must recover to an enclave key registered in the job to an active
    /// (Joined) operator, signers strictly ascending (so each counts once).
    function _countSigners(uint256 jobId, bytes32 digest, bytes[] calldata signatures) private view returns (uint32) {
        uint256 n = signatures.length;
        address previous;
        for (uint256 i; i < n; ++i) {
            address key = _recover(digest, signatures[i]);
            address operator = _keyOperator[jobId][key];
            if (operator == address(0)) revert UnknownEnclaveKey(key);
            OperatorStatus status = _operators[jobId][operator].status;
            if (status != OperatorStatus.Joined) revert WrongOperatorStatus(operator, status);
            if (key <= previous) revert SignersNotSorted();
            previous = key;
        }
        // n ≤ activeOperators (distinct active keys), which is a uint32.
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint32(n);
    }

    /// @dev One credit for the round to the operator of each member key that is registered in the
    /// job and active; returns how many were credited.
    function _credit(uint256 jobId, Job storage job, uint64 round, address[] calldata members)
        private
        returns (uint32 credited)
    {
        uint256 n = members.length;
        for (uint256 i; i < n; ++i) {
            address key = members[i];
            address operator = _keyOperator[jobId][key];
            if (operator == address(0)) continue;
            Operator storage op = _operators[jobId][operator];
            if (op.status != OperatorStatus.Joined) continue;
            op.credits += 1;
            op.lastRound = round;
            credited += 1;
            emit OperatorCredited(jobId, round, operator, key);
        }
        job.creditedRounds += credited;
        job.unpaidCredits += credited;
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

    function _checkpointStructHash(
        uint256 jobId,
        Job storage job,
        uint64 round,
        bytes32 modelHash,
        bytes32 receiptHash,
        bytes32 updateSet
    ) private view returns (bytes32) {
        return keccak256(
            abi.encode(
                CHECKPOINT_TYPEHASH, jobId, job.specHash, job.datasetRoot, round, modelHash, receiptHash, updateSet
            )
        );
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
