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
        Running, // started; round certificates are accepted until the deadline
        Completed, // the final round is certified
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
        address evidenceVerifier; // optional IEvidenceVerifier hook; address(0): none
        address[] verifiers; // appointed evidence verifiers (≤ MAX_VERIFIERS, distinct, non-zero)
        uint32 verifierThreshold; // distinct verifier approvals a key needs (≤ verifiers.length)
        uint16 quorumBps; // share of active operators' enclave signatures a round certificate needs
        uint64 minRoundSeconds; // round r is certified no earlier than startedAt + r · minRoundSeconds
    }

    struct Job {
        address customer;
        JobStatus status;
        uint32 minOperators;
        uint32 activeOperators; // joined, key registered, not leaving or slashed
        uint16 quorumBps; // certificate quorum, basis points of activeOperators
        address token;
        uint32 verifierThreshold; // distinct verifier approvals needed to register a key
        uint64 deadline;
        uint64 totalRounds;
        uint64 checkpointInterval;
        uint64 latestRound; // highest certified round (0: none)
        uint64 startedAt;
        uint64 completedAt;
        uint64 creditedRounds; // credits of operators not slashed before settlement (C)
        uint64 unpaidCredits; // credits neither paid nor forfeited by slashing (U)
        address evidenceVerifier;
        uint64 minRoundSeconds; // round r is certified no earlier than startedAt + r · minRoundSeconds
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
        uint64 lastRound; // last certified round this operator was credited for (0: none)
        uint64 credits; // certified rounds whose update set named its enclave key
        uint64 unbondsAt; // when Leaving: the stake can be withdrawn from then on
        address enclaveKey; // address(0) until registered
        uint256 stake; // held by the contract
        bytes32 measurement;
        bytes32 evidenceHash;
    }

    /// @notice One enclave-signed checkpoint statement, as `slash` takes it.
    struct SignedCheckpoint {
        bytes32 modelHash;
        bytes32 receiptHash;
        bytes32 updateSet; // updateSetHash(members)
        bytes signature; // 65 bytes r ‖ s ‖ v over checkpointDigest(jobId, round, modelHash, receiptHash, updateSet)
    }

    /// @notice A certified round: the statement a quorum of active enclaves signed.
    struct Checkpoint {
        bytes32 modelHash;
        bytes32 receiptHash;
        bytes32 updateSet; // keccak256(abi.encodePacked(members)), members the aggregated enclave keys
        uint64 certifiedAt;
        uint32 signers; // enclave signatures the certificate carried
        uint32 credited; // members credited (registered to an active operator)
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
    /// @param members the enclave keys whose updates the round aggregated (strictly ascending)
    /// @param signers enclave signatures on the certificate
    /// @param credited members credited (registered to an active operator)
    event CheckpointCertified(
        uint256 indexed jobId,
        uint64 indexed round,
        bytes32 modelHash,
        bytes32 receiptHash,
        bytes32 updateSet,
        address[] members,
        uint32 signers,
        uint32 credited
    );
    /// @notice One credit for the round, to the operator of a member key.
    event OperatorCredited(uint256 indexed jobId, uint64 indexed round, address indexed operator, address enclaveKey);
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
    error RoundBehind(uint64 round, uint64 latestRound);
    error VerifierCount(uint256 count);
    error DuplicateVerifier(address verifier);
    error ZeroVerifier();
    error BadThreshold(uint32 threshold, uint256 verifiers);
    error NoEvidenceCheck();
    error InvalidQuorum(uint16 quorumBps);
    error ZeroRoundTime();
    error DeadlineTooSoon(uint64 deadline, uint256 earliestEnd);
    error UnknownApprover(address signer);
    error DuplicateApproval(address verifier);
    error NotEnoughApprovals(uint256 got, uint256 needed);
    error TooEarly(uint64 round, uint256 notBefore);
    error BadUpdateSet();
    error SignersNotSorted();
    error NoQuorum(uint256 signers, uint256 needed);
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
        bytes calldata evidence,
        bytes[] calldata approvals
    ) external;
    function startJob(uint256 jobId) external;
    function requestLeave(uint256 jobId) external;
    function withdraw(uint256 jobId) external;
    function submitCertificate(
        uint256 jobId,
        uint64 round,
        bytes32 modelHash,
        bytes32 receiptHash,
        address[] calldata members,
        bytes[] calldata signatures
    ) external;
    function slash(uint256 jobId, uint64 round, SignedCheckpoint calldata a, SignedCheckpoint calldata b) external;

    function getJob(uint256 jobId) external view returns (Job memory);
    function getOperator(uint256 jobId, address operator) external view returns (Operator memory);
    function getCheckpoint(uint256 jobId, uint64 round) external view returns (Checkpoint memory);
    function operatorOfKey(uint256 jobId, address enclaveKey) external view returns (address);
    function measurements(uint256 jobId) external view returns (bytes32[] memory);
    function verifiers(uint256 jobId) external view returns (address[] memory);
    function quorumNeeded(uint256 jobId) external view returns (uint256);
    /// @notice Rounds certified so far (checkpoint rounds with a certificate).
    function certifiedRounds(uint256 jobId) external view returns (uint64);
    function isMeasurementAllowed(uint256 jobId, bytes32 measurement) external view returns (bool);
    function commitsOpen(uint256 jobId) external view returns (bool);
    function isSettled(uint256 jobId) external view returns (bool);
    function paymentOf(uint256 jobId, address operator) external view returns (uint256);
    function refundable(uint256 jobId) external view returns (uint256);
    function checkpointDigest(uint256 jobId, uint64 round, bytes32 modelHash, bytes32 receiptHash, bytes32 updateSet)
        external
        view
        returns (bytes32);
    function registrationDigest(uint256 jobId, address operator, bytes32 evidenceHash, bytes32 measurement)
        external
        view
        returns (bytes32);
    function approvalDigest(
        uint256 jobId,
        address operator,
        address enclaveKey,
        bytes32 evidenceHash,
        bytes32 measurement
    ) external view returns (bytes32);
    function updateSetHash(address[] calldata members) external pure returns (bytes32);
    function domainSeparator() external view returns (bytes32);
    function nextJobId() external view returns (uint256);
    function unbondingDelay() external view returns (uint64);
    function commitGrace() external view returns (uint64);
    function reporterRewardBps() external view returns (uint256);
}
