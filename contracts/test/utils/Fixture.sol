// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConclaveTraining} from "../../src/ConclaveTraining.sol";
import {IConclaveTraining} from "../../src/IConclaveTraining.sol";
import {MockERC20} from "../mocks/MockERC20.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {TestBase} from "./TestBase.sol";

/// @notice A deployed contract, a mock ERC-20, a customer, operators with enclave keys, and
/// helpers that drive a job through its life.
abstract contract Fixture is TestBase {
    uint64 internal constant UNBONDING = 7 days;
    uint64 internal constant GRACE = 1 days;
    uint256 internal constant REWARD_BPS = 1_000;
    uint256 internal constant ESCROW = 10 ether;
    uint256 internal constant STAKE = 1 ether;
    bytes32 internal constant SPEC = keccak256("spec");
    bytes32 internal constant DATA_ROOT = keccak256("dataset");
    bytes32 internal constant M_SNP = keccak256("snp launch digest");
    bytes32 internal constant M_TDX = keccak256("tdx mrtd+rtmrs");
    uint256 internal constant N_OPS = 4;
    address internal constant NATIVE = address(0);

    ConclaveTraining internal training;
    MockERC20 internal token;
    address internal customer;
    address internal reporter;
    address internal stranger;
    address[N_OPS] internal ops;
    uint256[N_OPS] internal keys; // enclave private keys
    address[N_OPS] internal enclaves; // their addresses

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        training = new ConclaveTraining(UNBONDING, GRACE, REWARD_BPS);
        token = new MockERC20();
        customer = makeAddr("customer");
        reporter = makeAddr("reporter");
        stranger = makeAddr("stranger");
        for (uint256 i; i < N_OPS; ++i) {
            ops[i] = makeAddr(string.concat("operator", Strings.toString(i)));
            keys[i] = uint256(keccak256(abi.encode("enclave key", i)));
            enclaves[i] = vm.addr(keys[i]);
        }
    }

    // ---- jobs ----

    function _params(address token_) internal view returns (IConclaveTraining.JobParams memory p) {
        bytes32[] memory ms = new bytes32[](2);
        ms[0] = M_SNP;
        ms[1] = M_TDX;
        p = IConclaveTraining.JobParams({
            token: token_,
            escrow: ESCROW,
            stake: STAKE,
            specHash: SPEC,
            datasetRoot: DATA_ROOT,
            measurements: ms,
            minOperators: 2,
            totalRounds: 6,
            checkpointInterval: 2,
            deadline: uint64(block.timestamp + 30 days),
            evidenceVerifier: address(0)
        });
    }

    /// @dev Funds the customer and creates the job.
    function _create(IConclaveTraining.JobParams memory p) internal returns (uint256 jobId) {
        _fund(p.token, customer, p.escrow);
        vm.prank(customer);
        jobId = training.createJob{value: p.token == NATIVE ? p.escrow : 0}(p);
    }

    function _createDefault(address token_) internal returns (uint256) {
        return _create(_params(token_));
    }

    /// @dev Gives `who` the amount and, for the ERC-20, approves the contract for it.
    function _fund(address token_, address who, uint256 amount) internal {
        if (token_ == NATIVE) {
            vm.deal(who, who.balance + amount);
        } else {
            token.mint(who, amount);
            vm.prank(who);
            token.approve(address(training), type(uint256).max);
        }
    }

    function _join(uint256 jobId, uint256 i) internal {
        IConclaveTraining.Job memory job = training.getJob(jobId);
        _fund(job.token, ops[i], job.stake);
        vm.prank(ops[i]);
        training.join{value: job.token == NATIVE ? job.stake : 0}(jobId);
    }

    function _evidenceHash(uint256 i) internal pure returns (bytes32) {
        return sha256(abi.encode("evidence", i));
    }

    function _registrationSig(uint256 jobId, uint256 i, bytes32 measurement) internal returns (bytes memory) {
        return sign(keys[i], training.registrationDigest(jobId, ops[i], _evidenceHash(i), measurement));
    }

    function _register(uint256 jobId, uint256 i) internal {
        bytes memory sig = _registrationSig(jobId, i, M_SNP);
        bytes32 evidenceHash = _evidenceHash(i); // sha256 is a call: compute it before the prank
        vm.prank(ops[i]);
        training.registerEnclave(jobId, enclaves[i], evidenceHash, M_SNP, sig, "");
    }

    function _joinAndRegister(uint256 jobId, uint256 i) internal {
        _join(jobId, i);
        _register(jobId, i);
    }

    /// @dev A running job with operators 0..n-1 active.
    function _running(address token_, uint256 n) internal returns (uint256 jobId) {
        IConclaveTraining.JobParams memory p = _params(token_);
        p.minOperators = uint32(n);
        jobId = _create(p);
        for (uint256 i; i < n; ++i) {
            _joinAndRegister(jobId, i);
        }
        training.startJob(jobId);
    }

    // ---- checkpoints ----

    function _model(uint256 jobId, uint64 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("model", jobId, round));
    }

    function _receipt(uint256 i, uint64 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("receipt", i, round));
    }

    function _checkpointSig(uint256 jobId, uint256 i, uint64 round, bytes32 model, bytes32 receipt)
        internal
        returns (bytes memory)
    {
        return sign(keys[i], training.checkpointDigest(jobId, round, model, receipt));
    }

    /// @dev Operator i's enclave signs the honest statement for the round; a stranger relays it.
    function _submit(uint256 jobId, uint256 i, uint64 round) internal {
        bytes32 model = _model(jobId, round);
        bytes32 receipt = _receipt(i, round);
        bytes memory sig = _checkpointSig(jobId, i, round, model, receipt);
        vm.prank(stranger);
        training.submitCheckpoint(jobId, round, model, receipt, sig);
    }

    function _signed(uint256 jobId, uint256 i, uint64 round, bytes32 model, bytes32 receipt)
        internal
        returns (IConclaveTraining.SignedCheckpoint memory)
    {
        return IConclaveTraining.SignedCheckpoint(model, receipt, _checkpointSig(jobId, i, round, model, receipt));
    }

    function _balance(address token_, address who) internal view returns (uint256) {
        return token_ == NATIVE ? who.balance : token.balanceOf(who);
    }

    function _leaveAndUnbond(uint256 jobId, uint256 i) internal {
        vm.prank(ops[i]);
        training.requestLeave(jobId);
        vm.warp(block.timestamp + UNBONDING);
    }
}
