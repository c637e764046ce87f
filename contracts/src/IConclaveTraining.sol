// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title The ConclaveTraining interface: types, events, errors and functions.
/// @notice What the chain client binds to (alloy's `sol!` over this file or the ABI) and what an
/// indexer reads. The behaviour is documented on `ConclaveTraining` and in contracts/README.md.
interface IConclaveTraining {
    // ----------------------------------------------------------------------------------------
    // Types
    // ----------------------------------------------------------------------------------------

    enum JobStatus {
        None,
        Open, // created; operators join and register; the customer may cancel
        Running, // started; checkpoints are accepted until the deadline
        Completed, // the final round's checkpoint is accepted
        Cancelled // cancelled before start; the escrow went back to the customer
    }

    enum OperatorStatus {
        None,
        Joined, // stake deposited; active once its enclave key is registered
        Leaving, // unbonding; still slashable
        Exited, // stake returned; payment (if any) once the job settles
        Slashed // stake taken; never paid
    }

    /// @notice What a customer gives `createJob`.
    struct JobParams {
        address token; // address(0): native token; otherwise an ERC-20 (no fee-on-transfer)
        uint256 escrow; // payment for the whole job
        uint256 stake; // stake each operator deposits when joining
        bytes32 specHash; // hash of the job spec (model, optimizer, data and round configuration)
        bytes32 datasetRoot; // Merkle root over the dataset's shards
        bytes32[] measurements; // allowed measurement hashes (SNP launch digest / TDX MRTD+RTMRs)
        uint32 minOperators; // active operators needed to start
        uint64 totalRounds; // rounds 1..totalRounds; the last one completes the job
        uint64 checkpointInterval; // checkpoints at rounds that are multiples of this
        uint64 deadline; // unix time: joining and starting stop, a running job expires
        address evidenceVerifier; // optional on-chain evidence check; address(0): off chain only
    }

    struct Job {
        address customer;
        JobStatus status;
        uint32 minOperators;
        uint32 activeOperators; // joined, key registered, not leaving or slashed
        address token;
        uint64 deadline;
        uint64 totalRounds;
        uint64 checkpointInterval;
        uint64 latestRound; // highest round with an accepted checkpoint (0: none)
        uint64 acceptedCheckpoints; // rounds with an accepted checkpoint
        uint64 startedAt;
        uint64 completedAt;
        uint64 creditedRounds; // credits of operators not slashed before settlement (C)
        uint64 unpaidCredits; // credits neither paid nor forfeited by slashing (U)
        address evidenceVerifier;
        uint256 escrow; // deposited by the customer
        uint256 stake; // per operator
        uint256 paidOut; // escrow paid to operators
        uint256 refunded; // escrow returned to the customer
        uint256 slashedStakeOwed; // slashed stake owed to the customer, not yet pulled
        bytes32 specHash;
        bytes32 datasetRoot;
    }

    struct Operator {
        OperatorStatus status;
        bool paid; // payment settled (possibly zero)
        uint64 lastRound; // last round this operator's enclave committed (0: none)
        uint64 credits; // checkpoint rounds credited
        uint64 unbondsAt; // when Leaving: the stake can be withdrawn from then on
        address enclaveKey; // address(0) until registered
        uint256 stake; // held by the contract
        bytes32 measurement;
        bytes32 evidenceHash;
        bytes32 lastStatement; // EIP-712 struct hash of the last committed checkpoint
    }

    /// @notice One enclave-signed checkpoint statement, as `slash` takes it.
    struct SignedCheckpoint {
        bytes32 modelHash;
        bytes32 receiptHash;
        bytes signature; // 65 bytes r ‖ s ‖ v over checkpointDigest(jobId, round, modelHash, receiptHash)
    }

    /// @notice The accepted checkpoint of a round: the first valid statement submitted for it.
    struct Checkpoint {
        bytes32 modelHash;
        bytes32 receiptHash;
        address operator;
        uint64 acceptedAt;
    }

    // ----------------------------------------------------------------------------------------
    // Events
    // ----------------------------------------------------------------------------------------

    event JobCreated(uint256 indexed jobId, address indexed customer, address indexed token, JobParams params);
    event JobCancelled(uint256 indexed jobId, uint256 refund);
    event JobStarted(uint256 indexed jobId, uint32 activeOperators);
    event JobCompleted(uint256 indexed jobId, uint64 round, bytes32 modelHash);
    event OperatorJoined(uint256 indexed jobId, address indexed operator, uint256 stake);
    event EnclaveRegistered(
        uint256 indexed jobId,
        address indexed operator,
        address indexed enclaveKey,
        bytes32 evidenceHash,
        bytes32 measurement
    );
    /// @param accepted true for the round's first valid statement (it fixes the model hash)
    event CheckpointSubmitted(
        uint256 indexed jobId,
        uint64 indexed round,
        address indexed operator,
        address enclaveKey,
        bytes32 modelHash,
        bytes32 receiptHash,
        bool accepted
    );
    /// @param statementA,statementB EIP-712 struct hashes of the two conflicting statements
    event Equivocation(
        uint256 indexed jobId,
        uint64 indexed round,
        address indexed operator,
        address enclaveKey,
        bytes32 statementA,
        bytes32 statementB
    );
    event OperatorSlashed(
        uint256 indexed jobId, address indexed operator, address indexed reporter, uint256 amount, uint256 reward
    );
    event LeaveRequested(uint256 indexed jobId, address indexed operator, uint64 unbondsAt);
    event Withdrawn(uint256 indexed jobId, address indexed operator, uint256 stake, uint256 payment);
    event Refunded(uint256 indexed jobId, address indexed customer, uint256 escrow, uint256 slashedStake);

    // ----------------------------------------------------------------------------------------
    // Errors
    // ----------------------------------------------------------------------------------------

    error InvalidConfig();
    error UnknownJob(uint256 jobId);
    error NotCustomer(address caller);
    error WrongJobStatus(uint256 jobId, JobStatus status);
    error DeadlinePassed(uint64 deadline);
    error ZeroEscrow();
    error ZeroStake();
    error ZeroMinOperators();
    error ZeroHash();
    error InvalidRounds(uint64 totalRounds, uint64 checkpointInterval);
    error DeadlineNotInFuture(uint64 deadline);
    error MeasurementCount(uint256 count);
    error DuplicateMeasurement(bytes32 measurement);
    error NotAToken(address token);
    error NotAVerifier(address verifier);
    error UnsupportedToken(address token);
    error WrongValue(uint256 expected, uint256 sent);
    error NotEnoughOperators(uint32 active, uint32 needed);
    error AlreadyJoined(address operator);
    error WrongOperatorStatus(address operator, OperatorStatus status);
    error KeyAlreadyRegistered(address operator, address enclaveKey);
    error ZeroEnclaveKey();
    error KeyInUse(address enclaveKey);
    error MeasurementNotAllowed(bytes32 measurement);
    error InvalidSignature();
    error EvidenceRejected(address verifier);
    error CommitsClosed(uint256 jobId);
    error NotACheckpointRound(uint64 round);
    error UnknownEnclaveKey(address enclaveKey);
    error AlreadySubmitted(uint64 round);
    error RoundNotAfter(uint64 round, uint64 lastRound);
    error RoundBehind(uint64 round, uint64 latestRound);
    error ModelMismatch(uint64 round, bytes32 acceptedModelHash);
    error NotConflicting();
    error DifferentSigners(address signerA, address signerB);
    error StillUnbonding(uint64 unbondsAt);
    error NotSettled(uint256 jobId);
    error NothingToWithdraw();
    error NothingToRefund();

    // ----------------------------------------------------------------------------------------
    // Functions
    // ----------------------------------------------------------------------------------------

    function createJob(JobParams calldata p) external payable returns (uint256 jobId);
    function cancelJob(uint256 jobId) external;
    function refund(uint256 jobId) external;
    function join(uint256 jobId) external payable;
    function registerEnclave(
        uint256 jobId,
        address enclaveKey,
        bytes32 evidenceHash,
        bytes32 measurement,
        bytes calldata keySignature,
        bytes calldata evidence
    ) external;
    function startJob(uint256 jobId) external;
    function requestLeave(uint256 jobId) external;
    function withdraw(uint256 jobId) external;
    function submitCheckpoint(
        uint256 jobId,
        uint64 round,
        bytes32 modelHash,
        bytes32 receiptHash,
        bytes calldata signature
    ) external;
    function slash(uint256 jobId, uint64 round, SignedCheckpoint calldata a, SignedCheckpoint calldata b) external;

    function getJob(uint256 jobId) external view returns (Job memory);
    function getOperator(uint256 jobId, address operator) external view returns (Operator memory);
    function getCheckpoint(uint256 jobId, uint64 round) external view returns (Checkpoint memory);
    function operatorOfKey(uint256 jobId, address enclaveKey) external view returns (address);
    function measurements(uint256 jobId) external view returns (bytes32[] memory);
    function isMeasurementAllowed(uint256 jobId, bytes32 measurement) external view returns (bool);
    function commitsOpen(uint256 jobId) external view returns (bool);
    function isSettled(uint256 jobId) external view returns (bool);
    function paymentOf(uint256 jobId, address operator) external view returns (uint256);
    function refundable(uint256 jobId) external view returns (uint256);
    function checkpointDigest(uint256 jobId, uint64 round, bytes32 modelHash, bytes32 receiptHash)
        external
        view
        returns (bytes32);
    function registrationDigest(uint256 jobId, address operator, bytes32 evidenceHash, bytes32 measurement)
        external
        view
        returns (bytes32);
    function domainSeparator() external view returns (bytes32);
    function nextJobId() external view returns (uint256);
    function unbondingDelay() external view returns (uint64);
    function commitGrace() external view returns (uint64);
    function reporterRewardBps() external view returns (uint256);
}
