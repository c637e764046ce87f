// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IConclaveTraining} from "../src/IConclaveTraining.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

import {Fixture} from "./utils/Fixture.sol";

/// @notice The attacks the quorum-certified design closes, replayed: keys registered without
/// appraised evidence, one operator certifying (or completing) a job alone, sybils credited for
/// rounds they never trained, forged update sets, front-running, and statements for another job
/// spec or dataset. Operators 0..2 are honest; operator 3 is the attacker.
contract AttacksTest is Fixture {
    uint256 internal constant ATTACKER = 3;
    uint256 internal constant ROGUE_KEY = 0xa77ac;
    uint256 internal constant N_SYBILS = 2;

    address[N_SYBILS] internal sybils;
    uint256[N_SYBILS] internal sybilKeys;

    function setUp() public override {
        super.setUp();
        for (uint256 j; j < N_SYBILS; ++j) {
            sybils[j] = makeAddr(string.concat("sybil", Strings.toString(j)));
            sybilKeys[j] = uint256(keccak256(abi.encode("sybil enclave key", j)));
        }
    }

    // ---- 1. a self-made key without appraised evidence cannot register ----

    function test_selfMadeKeyWithoutApprovalCannotRegister() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, ATTACKER);
        address rogue = vm.addr(ROGUE_KEY);
        bytes32 anyEvidence = bytes32(uint256(1));
        bytes memory consent = sign(ROGUE_KEY, training.registrationDigest(jobId, ops[ATTACKER], anyEvidence, M_SNP));
        vm.prank(ops[ATTACKER]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotEnoughApprovals.selector, 0, THRESHOLD));
        training.registerEnclave(jobId, rogue, anyEvidence, M_SNP, consent, "", new bytes[](0));
        assertEq(training.getJob(jobId).activeOperators, 0, "not active");
    }

    function test_approvalByANonVerifierIsRefused() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, ATTACKER);
        address rogue = vm.addr(ROGUE_KEY);
        bytes32 anyEvidence = bytes32(uint256(1));
        bytes memory consent = sign(ROGUE_KEY, training.registrationDigest(jobId, ops[ATTACKER], anyEvidence, M_SNP));
        // The attacker approves its own key, twice over, with keys it controls.
        bytes32 digest = training.approvalDigest(jobId, ops[ATTACKER], rogue, anyEvidence, M_SNP);
        bytes[] memory approvals = new bytes[](2);
        approvals[0] = sign(ROGUE_KEY, digest);
        approvals[1] = sign(ROGUE_KEY + 1, digest);
        vm.prank(ops[ATTACKER]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownApprover.selector, rogue));
        training.registerEnclave(jobId, rogue, anyEvidence, M_SNP, consent, "", approvals);
    }

    function test_approvalsForAnotherKeyOrEvidenceDoNotCarryOver() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, ATTACKER);
        address rogue = vm.addr(ROGUE_KEY);
        bytes32 evidenceHash = _evidenceHash(ATTACKER);
        bytes memory consent = sign(ROGUE_KEY, training.registrationDigest(jobId, ops[ATTACKER], evidenceHash, M_SNP));
        // Real approvals, of the operator's genuine enclave key: they do not cover the rogue key.
        bytes[] memory forGenuineKey = _approvals(jobId, ops[ATTACKER], enclaves[ATTACKER], evidenceHash, M_SNP);
        bytes32 digest = training.approvalDigest(jobId, ops[ATTACKER], rogue, evidenceHash, M_SNP);
        address recovered = _recover(digest, forGenuineKey[0]); // before the prank: ecrecover is a call
        vm.prank(ops[ATTACKER]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownApprover.selector, recovered));
        training.registerEnclave(jobId, rogue, evidenceHash, M_SNP, consent, "", forGenuineKey);
        // Approvals of other evidence do not cover this evidence hash.
        bytes32 otherEvidence = _evidenceHash(99);
        bytes[] memory forOtherEvidence = _approvals(jobId, ops[ATTACKER], rogue, otherEvidence, M_SNP);
        recovered = _recover(digest, forOtherEvidence[0]);
        vm.prank(ops[ATTACKER]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownApprover.selector, recovered));
        training.registerEnclave(jobId, rogue, evidenceHash, M_SNP, consent, "", forOtherEvidence);
        // Nor do approvals given to another operator for the same key.
        bytes[] memory forOtherOperator = _approvals(jobId, ops[0], rogue, evidenceHash, M_SNP);
        vm.prank(ops[ATTACKER]);
        vm.expectRevert();
        training.registerEnclave(jobId, rogue, evidenceHash, M_SNP, consent, "", forOtherOperator);
    }

    function test_oneVerifierApprovingTwiceCountsOnce() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, ATTACKER);
        address rogue = vm.addr(ROGUE_KEY);
        bytes32 evidenceHash = _evidenceHash(ATTACKER);
        bytes memory consent = sign(ROGUE_KEY, training.registrationDigest(jobId, ops[ATTACKER], evidenceHash, M_SNP));
        // One verifier (say, bribed) approves; its signature is given twice to reach the threshold.
        bytes[] memory one = _approvalsBy(jobId, ops[ATTACKER], rogue, evidenceHash, M_SNP, 1);
        bytes[] memory twice = new bytes[](2);
        twice[0] = one[0];
        twice[1] = one[0];
        vm.prank(ops[ATTACKER]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.DuplicateApproval.selector, verifierAddrs[0]));
        training.registerEnclave(jobId, rogue, evidenceHash, M_SNP, consent, "", twice);
        vm.prank(ops[ATTACKER]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotEnoughApprovals.selector, 1, THRESHOLD));
        training.registerEnclave(jobId, rogue, evidenceHash, M_SNP, consent, "", one);
    }

    function test_aJobWithoutAnyEvidenceCheckCannotBeCreated() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.verifierThreshold = 0; // and no on-chain verifier
        vm.deal(customer, ESCROW);
        vm.prank(customer);
        vm.expectRevert(IConclaveTraining.NoEvidenceCheck.selector);
        training.createJob{value: ESCROW}(p);
    }

    // ---- 2. one operator cannot certify a round, nor complete the job ----

    function test_loneOperatorCannotCompleteTheJobRightAfterStart() public {
        uint256 jobId = _running(NATIVE, 4);
        uint64 startedAt = training.getJob(jobId).startedAt;
        // The final round, signed by the attacker alone, naming only itself, at once.
        (address[] memory members, bytes[] memory sigs) = _alone(jobId, 6, "shortcut");
        vm.prank(ops[ATTACKER]);
        vm.expectRevert(
            abi.encodeWithSelector(IConclaveTraining.TooEarly.selector, 6, uint256(startedAt) + 6 * ROUND_TIME)
        );
        training.submitCertificate(jobId, 6, "shortcut", "r", members, sigs);
        // Once the time has come, it is still one signature of the three needed.
        vm.warp(uint256(startedAt) + 6 * ROUND_TIME);
        vm.prank(ops[ATTACKER]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NoQuorum.selector, 1, 3));
        training.submitCertificate(jobId, 6, "shortcut", "r", members, sigs);
        assertTrue(training.getJob(jobId).status == IConclaveTraining.JobStatus.Running, "still running");
        assertEq(training.getOperator(jobId, ops[ATTACKER]).credits, 0, "no credit");
    }

    function test_loneOperatorCannotCertifyAnyRound() public {
        uint256 jobId = _running(NATIVE, 3);
        _join(jobId, ATTACKER);
        _register(jobId, ATTACKER); // four active: quorum 3
        for (uint64 r = 2; r <= 6; r += 2) {
            _waitFor(jobId, r);
            (address[] memory members, bytes[] memory sigs) = _alone(jobId, r, "made up");
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NoQuorum.selector, 1, 3));
            training.submitCertificate(jobId, r, "made up", "r", members, sigs);
        }
        assertEq(training.getJob(jobId).latestRound, 0, "no round certified");
    }

    function test_finalRoundBeforeItsTimeIsTooEarlyEvenWithEveryone() public {
        uint256 jobId = _running(NATIVE, 4);
        uint256 notBefore = uint256(training.getJob(jobId).startedAt) + 6 * ROUND_TIME;
        vm.warp(notBefore - 1);
        address[] memory members = _keysOf(15);
        bytes32 model = _model(jobId, 6);
        bytes[] memory sigs = _certSigs(jobId, 6, model, "r", members, _pksOf(15));
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.TooEarly.selector, 6, notBefore));
        training.submitCertificate(jobId, 6, model, "r", members, sigs);
    }

    // ---- 3. sybils earn nothing for rounds they did not train ----

    function test_sybilsSigningTheHonestStatementEarnNothing() public {
        uint256 jobId = _runningWithSybils(); // operators 0..2 and two sybils: five active, quorum 3
        _waitFor(jobId, 2);
        // The sybils copy the honest model hash and sign the honest statement too.
        address[] memory members = _keysOf(7);
        uint256[] memory pks = new uint256[](5);
        pks[0] = keys[0];
        pks[1] = keys[1];
        pks[2] = keys[2];
        pks[3] = sybilKeys[0];
        pks[4] = sybilKeys[1];
        bytes32 model = _model(jobId, 2);
        bytes[] memory sigs = _certSigs(jobId, 2, model, "r", members, pks);
        training.submitCertificate(jobId, 2, model, "r", members, sigs);
        assertEq(training.getCheckpoint(jobId, 2).signers, 5, "five signatures");
        for (uint256 j; j < N_SYBILS; ++j) {
            assertEq(training.getOperator(jobId, sybils[j]).credits, 0, "sybil not credited");
        }
        for (uint256 i; i < 3; ++i) {
            assertEq(training.getOperator(jobId, ops[i]).credits, 1, "honest operator credited");
        }
    }

    function test_sybilsNamingThemselvesCannotReachQuorum() public {
        uint256 jobId = _runningWithSybils();
        _waitFor(jobId, 2);
        address[] memory members = new address[](5);
        members[0] = enclaves[0];
        members[1] = enclaves[1];
        members[2] = enclaves[2];
        members[3] = vm.addr(sybilKeys[0]);
        members[4] = vm.addr(sybilKeys[1]);
        _sort(members);
        bytes32 model = _model(jobId, 2); // the copied model hash
        uint256[] memory pks = new uint256[](2);
        pks[0] = sybilKeys[0];
        pks[1] = sybilKeys[1];
        bytes[] memory sigs = _certSigs(jobId, 2, model, "r", members, pks);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NoQuorum.selector, 2, 3));
        training.submitCertificate(jobId, 2, model, "r", members, sigs);
    }

    function test_forgingTheUpdateSetAfterSigningFails() public {
        uint256 jobId = _runningWithSybils();
        _waitFor(jobId, 2);
        bytes32 model = _model(jobId, 2);
        bytes32 receipt = _receipt(jobId, 2);
        address[] memory honest = _keysOf(7);
        bytes[] memory sigs = _certSigs(jobId, 2, model, receipt, honest, _pksOf(7));
        // A relayer adds a sybil to the members of the honest certificate.
        address[] memory forged = new address[](4);
        forged[0] = honest[0];
        forged[1] = honest[1];
        forged[2] = honest[2];
        forged[3] = vm.addr(sybilKeys[0]);
        _sort(forged);
        address garbage = _recover(training.checkpointDigest(jobId, 2, model, receipt, _updateSet(forged)), sigs[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownEnclaveKey.selector, garbage));
        training.submitCertificate(jobId, 2, model, receipt, forged, sigs);
        // Or drops an honest member: the same.
        address[] memory dropped = new address[](2);
        dropped[0] = honest[0];
        dropped[1] = honest[1];
        garbage = _recover(training.checkpointDigest(jobId, 2, model, receipt, _updateSet(dropped)), sigs[0]);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownEnclaveKey.selector, garbage));
        training.submitCertificate(jobId, 2, model, receipt, dropped, sigs);
        // The certificate as signed lands and credits exactly its members.
        training.submitCertificate(jobId, 2, model, receipt, honest, sigs);
        assertEq(training.getOperator(jobId, sybils[0]).credits, 0, "sybil not credited");
        assertEq(training.getJob(jobId).creditedRounds, 3, "three credits");
    }

    // ---- 4. honest operators are never blocked ----

    function test_honestQuorumLandsAfterFailedAttacksAndIsPaid() public {
        uint256 jobId = _running(NATIVE, 4);
        for (uint64 r = 2; r <= 6; r += 2) {
            _waitFor(jobId, r);
            // The attacker tries first, every round.
            (address[] memory members, bytes[] memory sigs) = _alone(jobId, r, "attacker's model");
            vm.prank(ops[ATTACKER]);
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NoQuorum.selector, 1, 3));
            training.submitCertificate(jobId, r, "attacker's model", "r", members, sigs);
            // The honest quorum (operators 0..2) certifies its own update set.
            _certify(jobId, r, 7, 7);
        }
        assertTrue(training.getJob(jobId).status == IConclaveTraining.JobStatus.Completed, "completed");
        assertEq(training.getCheckpoint(jobId, 6).modelHash, _model(jobId, 6), "the honest model");
        vm.warp(block.timestamp + GRACE);
        for (uint256 i; i < N_OPS; ++i) {
            _leaveAndUnbond(jobId, i);
            uint256 before = ops[i].balance;
            vm.prank(ops[i]);
            training.withdraw(jobId);
            uint256 expected = i == ATTACKER ? STAKE : STAKE + ESCROW / 3;
            assertEq(ops[i].balance - before, expected, i == ATTACKER ? "attacker: stake only" : "honest: paid");
        }
    }

    function test_frontRunningTheHonestCertificateChangesNothing() public {
        uint256 jobId = _running(NATIVE, 4);
        _waitFor(jobId, 2);
        bytes32 model = _model(jobId, 2);
        bytes32 receipt = _receipt(jobId, 2);
        address[] memory members = _keysOf(7);
        bytes[] memory sigs = _certSigs(jobId, 2, model, receipt, members, _pksOf(7));
        // The attacker copies the pending certificate and relays it first.
        vm.prank(ops[ATTACKER]);
        training.submitCertificate(jobId, 2, model, receipt, members, sigs);
        // The honest relayer's transaction then finds the round certified.
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.RoundBehind.selector, 2, 2));
        training.submitCertificate(jobId, 2, model, receipt, members, sigs);
        for (uint256 i; i < 3; ++i) {
            assertEq(training.getOperator(jobId, ops[i]).credits, 1, "honest operator credited");
        }
        assertEq(training.getOperator(jobId, ops[ATTACKER]).credits, 0, "relaying earns nothing");
        // Relaying only a bare quorum of the signatures changes nothing about who is credited.
        _waitFor(jobId, 4);
        model = _model(jobId, 4);
        receipt = _receipt(jobId, 4);
        sigs = _certSigs(jobId, 4, model, receipt, members, _pksOf(7));
        bytes[] memory firstThree = new bytes[](3);
        for (uint256 k; k < 3; ++k) {
            firstThree[k] = sigs[k];
        }
        vm.prank(ops[ATTACKER]);
        training.submitCertificate(jobId, 4, model, receipt, members, firstThree);
        for (uint256 i; i < 3; ++i) {
            assertEq(training.getOperator(jobId, ops[i]).credits, 2, "honest operators credited again");
        }
        assertEq(training.getOperator(jobId, ops[ATTACKER]).credits, 0, "still nothing");
    }

    // ---- 5. statements name the job's spec and dataset ----

    function test_statementForAnotherSpecOrDatasetDoesNotCount() public {
        uint256 jobId = _running(NATIVE, 2);
        _waitFor(jobId, 2);
        address[] memory members = _keysOf(3);
        bytes32 updateSet = _updateSet(members);
        bytes32 model = _model(jobId, 2);
        bytes32 typehash = training.CHECKPOINT_TYPEHASH();
        bytes32[2] memory structs = [
            keccak256(
                abi.encode(
                    typehash, jobId, keccak256("another spec"), DATA_ROOT, uint64(2), model, bytes32("r"), updateSet
                )
            ),
            keccak256(
                abi.encode(
                    typehash, jobId, SPEC, keccak256("another dataset"), uint64(2), model, bytes32("r"), updateSet
                )
            )
        ];
        for (uint256 k; k < 2; ++k) {
            bytes32 digest = keccak256(abi.encodePacked(hex"1901", training.domainSeparator(), structs[k]));
            bytes[] memory sigs = _sigs(digest, _pksOf(3));
            address recovered = _recover(training.checkpointDigest(jobId, 2, model, "r", updateSet), sigs[0]);
            vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownEnclaveKey.selector, recovered));
            training.submitCertificate(jobId, 2, model, "r", members, sigs);
        }
        // The same enclaves' statement under the job's own spec and dataset counts.
        bytes32 own = keccak256(abi.encode(typehash, jobId, SPEC, DATA_ROOT, uint64(2), model, bytes32("r"), updateSet));
        bytes[] memory good = _sigs(keccak256(abi.encodePacked(hex"1901", training.domainSeparator(), own)), _pksOf(3));
        training.submitCertificate(jobId, 2, model, "r", members, good);
        assertEq(training.getJob(jobId).latestRound, 2, "certified");
    }

    function test_registrationConsentForAnotherSpecDoesNotCount() public {
        uint256 jobId = _createDefault(NATIVE);
        _join(jobId, 0);
        bytes32 evidenceHash = _evidenceHash(0);
        bytes32 otherSpec = keccak256(
            abi.encode(
                training.REGISTRATION_TYPEHASH(),
                jobId,
                keccak256("another spec"),
                DATA_ROOT,
                ops[0],
                evidenceHash,
                M_SNP
            )
        );
        bytes memory consent =
            sign(keys[0], keccak256(abi.encodePacked(hex"1901", training.domainSeparator(), otherSpec)));
        bytes[] memory approvals = _approvals(jobId, ops[0], enclaves[0], evidenceHash, M_SNP);
        vm.prank(ops[0]);
        vm.expectRevert(IConclaveTraining.InvalidSignature.selector);
        training.registerEnclave(jobId, enclaves[0], evidenceHash, M_SNP, consent, "", approvals);
    }

    // ---- helpers ----

    /// @dev The attacker's enclave signs `model` for the round, naming only itself.
    function _alone(uint256 jobId, uint64 round, bytes32 model)
        internal
        returns (address[] memory members, bytes[] memory sigs)
    {
        members = _keysOf(1 << ATTACKER);
        sigs = _certSigs(jobId, round, model, "r", members, _pksOf(1 << ATTACKER));
    }

    /// @dev A running job with operators 0..2 and the sybils active (the verifiers approved the
    /// sybils' enclaves: they are real enclaves that simply do not train).
    function _runningWithSybils() internal returns (uint256 jobId) {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.minOperators = 5;
        jobId = _create(p);
        for (uint256 i; i < 3; ++i) {
            _joinAndRegister(jobId, i);
        }
        for (uint256 j; j < N_SYBILS; ++j) {
            _joinAs(jobId, sybils[j]);
            _registerAs(jobId, sybils[j], sybilKeys[j], keccak256(abi.encode("sybil evidence", j)));
        }
        training.startJob(jobId);
        assertEq(training.quorumNeeded(jobId), 3, "quorum of five");
    }

    function _recover(bytes32 digest, bytes memory sig) internal pure returns (address) {
        bytes32 r;
        bytes32 s;
        assembly {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
        }
        return ecrecover(digest, uint8(sig[64]), r, s);
    }
}
