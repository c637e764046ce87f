// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConclaveTraining} from "../../src/ConclaveTraining.sol";
import {IConclaveTraining} from "../../src/IConclaveTraining.sol";
import {MockERC20} from "../mocks/MockERC20.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {TestBase} from "./TestBase.sol";

/// @notice A deployed contract, a mock ERC-20, a customer, evidence verifiers, operators with
/// enclave keys, and helpers that drive a job through its life: registration with verifier
/// approvals, and round certificates signed by a quorum of enclave keys.
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
    /// @dev 60 %: quorum 1 of 1, 2 of 2, 2 of 3, 3 of 4.
    uint16 internal constant QUORUM_BPS = 6_000;
    uint64 internal constant ROUND_TIME = 1 hours;
    uint256 internal constant N_OPS = 4;
    uint256 internal constant N_VERIFIERS = 3;
    uint32 internal constant THRESHOLD = 2;
    address internal constant NATIVE = address(0);
    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    ConclaveTraining internal training;
    MockERC20 internal token;
    address internal customer;
    address internal reporter;
    address internal stranger;
    address[N_OPS] internal ops;
    uint256[N_OPS] internal keys; // enclave private keys
    address[N_OPS] internal enclaves; // their addresses
    uint256[N_VERIFIERS] internal verifierKeys; // the job's evidence verifiers (private keys)
    address[N_VERIFIERS] internal verifierAddrs;

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
        for (uint256 i; i < N_VERIFIERS; ++i) {
            verifierKeys[i] = uint256(keccak256(abi.encode("verifier key", i)));
            verifierAddrs[i] = vm.addr(verifierKeys[i]);
        }
    }

    // ---- jobs ----

    function _params(address token_) internal view returns (IConclaveTraining.JobParams memory p) {
        bytes32[] memory ms = new bytes32[](2);
        ms[0] = M_SNP;
        ms[1] = M_TDX;
        address[] memory vs = new address[](N_VERIFIERS);
        for (uint256 i; i < N_VERIFIERS; ++i) {
            vs[i] = verifierAddrs[i];
        }
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
            evidenceVerifier: address(0),
            verifiers: vs,
            verifierThreshold: THRESHOLD,
            quorumBps: QUORUM_BPS,
            minRoundSeconds: ROUND_TIME
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

    function _joinAs(uint256 jobId, address who) internal {
        IConclaveTraining.Job memory job = training.getJob(jobId);
        _fund(job.token, who, job.stake);
        vm.prank(who);
        training.join{value: job.token == NATIVE ? job.stake : 0}(jobId);
    }

    function _join(uint256 jobId, uint256 i) internal {
        _joinAs(jobId, ops[i]);
    }

    function _evidenceHash(uint256 i) internal pure returns (bytes32) {
        return sha256(abi.encode("evidence", i));
    }

    function _registrationSig(uint256 jobId, uint256 i, bytes32 measurement) internal returns (bytes memory) {
        return sign(keys[i], training.registrationDigest(jobId, ops[i], _evidenceHash(i), measurement));
    }

    /// @dev Approvals of `enclaveKey` for `operator` by the verifiers whose bits are set in `mask`.
    function _approvalsBy(
        uint256 jobId,
        address operator,
        address enclaveKey,
        bytes32 evidenceHash,
        bytes32 measurement,
        uint256 mask
    ) internal returns (bytes[] memory approvals) {
        bytes32 digest = training.approvalDigest(jobId, operator, enclaveKey, evidenceHash, measurement);
        uint256 n;
        for (uint256 v; v < N_VERIFIERS; ++v) {
            if ((mask >> v) & 1 == 1) n++;
        }
        approvals = new bytes[](n);
        n = 0;
        for (uint256 v; v < N_VERIFIERS; ++v) {
            if ((mask >> v) & 1 == 1) approvals[n++] = sign(verifierKeys[v], digest);
        }
    }

    /// @dev The default approvals: verifiers 0 and 1 (the threshold).
    function _approvals(uint256 jobId, address operator, address enclaveKey, bytes32 evidenceHash, bytes32 measurement)
        internal
        returns (bytes[] memory)
    {
        return _approvalsBy(jobId, operator, enclaveKey, evidenceHash, measurement, 3);
    }

    /// @dev `who` registers the enclave key `pk` with evidence hash `evidenceHash`, consent and
    /// approvals all in order.
    function _registerAs(uint256 jobId, address who, uint256 pk, bytes32 evidenceHash) internal {
        address key = vm.addr(pk);
        bytes memory sig = sign(pk, training.registrationDigest(jobId, who, evidenceHash, M_SNP));
        bytes[] memory approvals = _approvals(jobId, who, key, evidenceHash, M_SNP);
        vm.prank(who);
        training.registerEnclave(jobId, key, evidenceHash, M_SNP, sig, "", approvals);
    }

    function _register(uint256 jobId, uint256 i) internal {
        _registerAs(jobId, ops[i], keys[i], _evidenceHash(i));
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

    // ---- certificates ----

    function _model(uint256 jobId, uint64 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("model", jobId, round));
    }

    function _receipt(uint256 jobId, uint64 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("receipt", jobId, round));
    }

    /// @dev Operators' enclave keys whose bits are set in `mask`, ascending.
    function _keysOf(uint256 mask) internal view returns (address[] memory list) {
        uint256 n;
        for (uint256 i; i < N_OPS; ++i) {
            if ((mask >> i) & 1 == 1) n++;
        }
        list = new address[](n);
        n = 0;
        for (uint256 i; i < N_OPS; ++i) {
            if ((mask >> i) & 1 == 1) list[n++] = enclaves[i];
        }
        _sort(list);
    }

    /// @dev Operators' enclave private keys whose bits are set in `mask`.
    function _pksOf(uint256 mask) internal view returns (uint256[] memory list) {
        uint256 n;
        for (uint256 i; i < N_OPS; ++i) {
            if ((mask >> i) & 1 == 1) n++;
        }
        list = new uint256[](n);
        n = 0;
        for (uint256 i; i < N_OPS; ++i) {
            if ((mask >> i) & 1 == 1) list[n++] = keys[i];
        }
    }

    function _sort(address[] memory list) internal pure {
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

    function _updateSet(address[] memory members) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(members));
    }

    /// @dev Signatures over `digest` by each private key in `pks`, in ascending order of signer.
    function _sigs(bytes32 digest, uint256[] memory pks) internal returns (bytes[] memory sigs) {
        uint256[] memory sorted = new uint256[](pks.length);
        for (uint256 i; i < pks.length; ++i) {
            uint256 x = pks[i];
            uint256 j = i;
            while (j > 0 && vm.addr(sorted[j - 1]) > vm.addr(x)) {
                sorted[j] = sorted[j - 1];
                j--;
            }
            sorted[j] = x;
        }
        sigs = new bytes[](pks.length);
        for (uint256 i; i < pks.length; ++i) {
            sigs[i] = sign(sorted[i], digest);
        }
    }

    /// @dev The signatures of a certificate for the statement, by `pks`, sorted by signer.
    function _certSigs(
        uint256 jobId,
        uint64 round,
        bytes32 model,
        bytes32 receipt,
        address[] memory members,
        uint256[] memory pks
    ) internal returns (bytes[] memory) {
        return _sigs(training.checkpointDigest(jobId, round, model, receipt, _updateSet(members)), pks);
    }

    /// @dev Warps to the earliest time the round may be certified, if that is later than now.
    function _waitFor(uint256 jobId, uint64 round) internal {
        IConclaveTraining.Job memory job = training.getJob(jobId);
        uint256 notBefore = uint256(job.startedAt) + uint256(round) * job.minRoundSeconds;
        if (block.timestamp < notBefore) vm.warp(notBefore);
    }

    /// @dev The honest certificate for the round, signed by the operators in `signersMask`, with the
    /// operators in `membersMask` as the update set; waits for the round's time; a stranger relays.
    function _certify(uint256 jobId, uint64 round, uint256 signersMask, uint256 membersMask) internal {
        _waitFor(jobId, round);
        address[] memory members = _keysOf(membersMask);
        bytes32 model = _model(jobId, round);
        bytes32 receipt = _receipt(jobId, round);
        bytes[] memory sigs = _certSigs(jobId, round, model, receipt, members, _pksOf(signersMask));
        vm.prank(stranger);
        training.submitCertificate(jobId, round, model, receipt, members, sigs);
    }

    /// @dev Operators 0..n-1 sign and are the update set.
    function _certifyAll(uint256 jobId, uint64 round, uint256 n) internal {
        _certify(jobId, round, (1 << n) - 1, (1 << n) - 1);
    }

    /// @dev The EIP-712 struct hash of a checkpoint statement of the job (SPEC, DATA_ROOT).
    function _statement(uint256 jobId, uint64 round, bytes32 model, bytes32 receipt, bytes32 updateSet)
        internal
        view
        returns (bytes32)
    {
        return keccak256(
            abi.encode(training.CHECKPOINT_TYPEHASH(), jobId, SPEC, DATA_ROOT, round, model, receipt, updateSet)
        );
    }

    function _signed(uint256 jobId, uint256 i, uint64 round, bytes32 model, bytes32 receipt, bytes32 updateSet)
        internal
        returns (IConclaveTraining.SignedCheckpoint memory)
    {
        return IConclaveTraining.SignedCheckpoint(
            model, receipt, updateSet, sign(keys[i], training.checkpointDigest(jobId, round, model, receipt, updateSet))
        );
    }

    function _signed(uint256 jobId, uint256 i, uint64 round, bytes32 model, bytes32 receipt)
        internal
        returns (IConclaveTraining.SignedCheckpoint memory)
    {
        return _signed(jobId, i, round, model, receipt, bytes32("set"));
    }

    /// @dev Operator i's enclave signs two different statements for the round; a reporter proves it.
    function _equivocate(uint256 jobId, uint256 i, uint64 round) internal {
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, i, round, "model a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, i, round, "model b", "r");
        vm.prank(reporter);
        training.slash(jobId, round, a, b);
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
