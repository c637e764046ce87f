// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConclaveTraining} from "../src/ConclaveTraining.sol";
import {IConclaveTraining} from "../src/IConclaveTraining.sol";
import {Fixture} from "./utils/Fixture.sol";

/// @notice Enclave statements: EIP-712 encoding, submitCertificate, slash, and the views.
contract CheckpointsTest is Fixture {
    // ---- EIP-712: the exact strings and a fixed vector for other implementations ----

    function test_typehashes_areTheDocumentedTypeStrings() public view {
        assertEq(
            training.CHECKPOINT_TYPEHASH(),
            keccak256(
                "Checkpoint(uint256 jobId,bytes32 specHash,bytes32 datasetRoot,uint64 round,bytes32 modelHash,bytes32 receiptHash,bytes32 updateSet)"
            ),
            "checkpoint type"
        );
        assertEq(
            training.REGISTRATION_TYPEHASH(),
            keccak256(
                "EnclaveRegistration(uint256 jobId,bytes32 specHash,bytes32 datasetRoot,address operator,bytes32 evidenceHash,bytes32 measurement)"
            ),
            "registration type"
        );
        assertEq(
            training.APPROVAL_TYPEHASH(),
            keccak256(
                "EnclaveApproval(uint256 jobId,address operator,address enclaveKey,bytes32 evidenceHash,bytes32 measurement)"
            ),
            "approval type"
        );
    }

    function test_domainSeparator_isEip712WithNameVersionChainAndContract() public view {
        bytes32 expected = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("ConclaveTraining"),
                keccak256("1"),
                block.chainid,
                address(training)
            )
        );
        assertEq(training.domainSeparator(), expected, "domain separator");
        (, string memory name, string memory version, uint256 chainId, address verifying,,) = training.eip712Domain();
        assertEq(keccak256(bytes(name)), keccak256("ConclaveTraining"), "name");
        assertEq(keccak256(bytes(version)), keccak256("1"), "version");
        assertEq(chainId, block.chainid, "chain id");
        assertEq(verifying, address(training), "verifying contract");
    }

    function test_domainSeparator_followsTheChainId() public {
        bytes32 before = training.domainSeparator();
        vm.chainId(10);
        assertTrue(training.domainSeparator() != before, "a fork gets another domain");
    }

    /// @dev Computed independently (keccak256 in JavaScript) for chain 31337, the contract at
    /// 0x5615dEB798BB3E4dFa0139dFa1b3D433Cc23b72f and job 1 with specHash keccak256("spec") and
    /// datasetRoot keccak256("dataset"); contracts/README.md lists the same values.
    function test_digests_matchTheDocumentedVector() public {
        assertEq(block.chainid, 31337, "chain id");
        assertEq(address(training), 0x5615dEB798BB3E4dFa0139dFa1b3D433Cc23b72f, "contract address");
        assertEq(
            training.domainSeparator(), 0x77a75ff733d1c03bc7450083ee85657d0d668b6cddd3c46fe7e76eaf737af858, "domain"
        );
        assertEq(_createDefault(NATIVE), 1, "job 1");
        assertEq(SPEC, 0x00986e475ba431f6b784d4b894e14fedb92aa33826fe0df41d0a552c12d684f4, "spec hash");
        assertEq(DATA_ROOT, 0x64cb15b01d3638acae07043a5d3c77157b4b4c00b7a2de479ec7160340129cd0, "dataset root");
        address k1 = 0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf; // private key 1
        address k2 = 0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF; // private key 2
        assertEq(vm.addr(1), k1, "address of key 1");
        assertEq(vm.addr(2), k2, "address of key 2");
        address[] memory members = new address[](2);
        members[0] = k2;
        members[1] = k1;
        bytes32 updateSet = training.updateSetHash(members);
        assertEq(updateSet, 0x6f38a18f90c24a6aa38eda02c5dc2f6e3adf7739725dd7189e4ae8604265e3a6, "update set");
        bytes32 model = bytes32(0x1111111111111111111111111111111111111111111111111111111111111111);
        bytes32 receipt = bytes32(0x2222222222222222222222222222222222222222222222222222222222222222);
        bytes32 evidence = bytes32(0x3333333333333333333333333333333333333333333333333333333333333333);
        bytes32 measurement = bytes32(0x4444444444444444444444444444444444444444444444444444444444444444);
        address operator = 0x1111111111111111111111111111111111111111;
        bytes32 digest = training.checkpointDigest(1, 2, model, receipt, updateSet);
        assertEq(digest, 0xb6936e95c4b52077b70423bf9d189af93804f7a8f66e82b06c6e51da4ad9f840, "checkpoint digest");
        assertEq(
            training.registrationDigest(1, operator, evidence, measurement),
            0x15d70bbc36f2daff22b3b333fcd5b6aaf13636744550889237092599a9d71c82,
            "registration digest"
        );
        assertEq(
            training.approvalDigest(1, operator, k1, evidence, measurement),
            0xd259a179b267d3ba5b7e4b38750937dd7bc8380a44feb7c341ab1438d2aac942,
            "approval digest"
        );
        // RFC 6979 signatures are deterministic: key 1 signs the checkpoint digest as below.
        // Checked independently in JavaScript (secp256k1 verification, low s).
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(1, digest);
        assertEq(r, 0x0dfe8a87751933ac970d63c2ed48841f9ef20cc776398350e0aa3d4f3788012a, "r");
        assertEq(s, 0x21cf56c81e9337063552dac70552194954859c642d3ee81b76a7fcf4d28edd3c, "s");
        assertEq(v, 28, "v");
        assertEq(ecrecover(digest, v, r, s), k1, "recovers key 1");
    }

    function test_updateSetHash_isTheHashOfThePaddedAddresses() public view {
        address[] memory members = _keysOf(7);
        bytes memory words;
        for (uint256 i; i < members.length; ++i) {
            words = bytes.concat(words, bytes32(uint256(uint160(members[i]))));
        }
        assertEq(training.updateSetHash(members), keccak256(words), "32-byte words");
        assertEq(training.updateSetHash(members), _updateSet(members), "abi.encodePacked");
    }

    function test_digests_nameTheJobsSpecAndDataset() public {
        uint256 a = _createDefault(NATIVE);
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.specHash = keccak256("another spec");
        uint256 b = _create(p);
        p = _params(NATIVE);
        p.datasetRoot = keccak256("another dataset");
        uint256 c = _create(p);
        // The digests read the job's own spec hash and dataset root from storage.
        assertEq(
            training.checkpointDigest(a, 2, "m", "r", "u"),
            keccak256(abi.encodePacked(hex"1901", training.domainSeparator(), _statement(a, 2, "m", "r", "u"))),
            "job a: SPEC, DATA_ROOT"
        );
        bytes32 expected = keccak256(
            abi.encode(
                training.CHECKPOINT_TYPEHASH(),
                b,
                keccak256("another spec"),
                DATA_ROOT,
                uint64(2),
                bytes32("m"),
                bytes32("r"),
                bytes32("u")
            )
        );
        assertEq(
            training.checkpointDigest(b, 2, "m", "r", "u"),
            keccak256(abi.encodePacked(hex"1901", training.domainSeparator(), expected)),
            "the struct names the job's spec hash"
        );
        expected = keccak256(
            abi.encode(
                training.REGISTRATION_TYPEHASH(), c, SPEC, keccak256("another dataset"), ops[0], bytes32("e"), M_SNP
            )
        );
        assertEq(
            training.registrationDigest(c, ops[0], "e", M_SNP),
            keccak256(abi.encodePacked(hex"1901", training.domainSeparator(), expected)),
            "the registration names the job's dataset root"
        );
    }

    // ---- submitCertificate ----

    function test_submitCertificate_quorumCertifiesAndCreditsTheMembers() public {
        uint256 jobId = _running(NATIVE, 3);
        _waitFor(jobId, 2);
        address[] memory members = _keysOf(7);
        bytes32 updateSet = _updateSet(members);
        bytes32 model = _model(jobId, 2);
        bytes32 receipt = _receipt(jobId, 2);
        bytes[] memory sigs = _certSigs(jobId, 2, model, receipt, members, _pksOf(3)); // 2 of 3 sign
        for (uint256 k; k < 3; ++k) {
            address operator = training.operatorOfKey(jobId, members[k]);
            vm.expectEmit(true, true, true, true, address(training));
            emit IConclaveTraining.OperatorCredited(jobId, 2, operator, members[k]);
        }
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.CheckpointCertified(jobId, 2, model, receipt, updateSet, members, 2, 3);
        vm.prank(stranger);
        training.submitCertificate(jobId, 2, model, receipt, members, sigs);

        IConclaveTraining.Checkpoint memory cp = training.getCheckpoint(jobId, 2);
        assertEq(cp.modelHash, model, "model");
        assertEq(cp.receiptHash, receipt, "receipt");
        assertEq(cp.updateSet, updateSet, "update set");
        assertEq(cp.certifiedAt, block.timestamp, "certified at");
        assertEq(cp.signers, 2, "signers");
        assertEq(cp.credited, 3, "credited");
        IConclaveTraining.Job memory job = training.getJob(jobId);
        assertEq(job.latestRound, 2, "latest round");
        assertEq(training.certifiedRounds(jobId), 1, "certified rounds");
        assertEq(job.creditedRounds, 3, "credited");
        assertEq(job.unpaidCredits, 3, "unpaid");
        for (uint256 i; i < 3; ++i) {
            IConclaveTraining.Operator memory op = training.getOperator(jobId, ops[i]);
            assertEq(op.lastRound, 2, "operator's last round");
            assertEq(op.credits, 1, "operator's credits");
        }
    }

    function test_submitCertificate_creditsOnlyMembersNotSigners() public {
        uint256 jobId = _running(NATIVE, 3);
        _certify(jobId, 2, 7, 1 << 2); // all three sign; only operator 2's update was aggregated
        assertEq(training.getOperator(jobId, ops[0]).credits, 0, "signer 0 not credited");
        assertEq(training.getOperator(jobId, ops[1]).credits, 0, "signer 1 not credited");
        assertEq(training.getOperator(jobId, ops[2]).credits, 1, "member credited");
        assertEq(training.getCheckpoint(jobId, 2).credited, 1, "one credited");
        assertEq(training.getJob(jobId).creditedRounds, 1, "one credit");
    }

    function test_submitCertificate_unregisteredAndInactiveMembersGetNothing() public {
        uint256 jobId = _running(NATIVE, 3);
        _join(jobId, 3); // joined, no key
        vm.prank(ops[2]);
        training.requestLeave(jobId); // leaving: not active
        _waitFor(jobId, 2);
        address[] memory members = new address[](4);
        members[0] = enclaves[0];
        members[1] = enclaves[2];
        members[2] = enclaves[3]; // not registered
        members[3] = address(0xdead); // no one's key
        _sort(members);
        bytes32 model = _model(jobId, 2);
        bytes[] memory sigs = _certSigs(jobId, 2, model, "r", members, _pksOf(3));
        training.submitCertificate(jobId, 2, model, "r", members, sigs);
        assertEq(training.getOperator(jobId, ops[0]).credits, 1, "active member credited");
        assertEq(training.getOperator(jobId, ops[2]).credits, 0, "leaving member not credited");
        assertEq(training.getOperator(jobId, ops[3]).credits, 0, "unregistered member not credited");
        assertEq(training.getCheckpoint(jobId, 2).credited, 1, "one credited");
        assertEq(training.getJob(jobId).creditedRounds, 1, "one credit");
    }

    function test_submitCertificate_roundsMayBeSkipped() public {
        uint256 jobId = _running(NATIVE, 2);
        _certifyAll(jobId, 4, 2);
        _certifyAll(jobId, 6, 2);
        assertEq(training.certifiedRounds(jobId), 2, "two rounds");
        assertEq(training.getOperator(jobId, ops[0]).credits, 2, "credits");
        assertEq(training.getOperator(jobId, ops[0]).lastRound, 6, "last round");
    }

    function test_submitCertificate_finalRoundCompletesTheJob() public {
        uint256 jobId = _running(NATIVE, 2);
        _certifyAll(jobId, 2, 2);
        _waitFor(jobId, 6);
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.JobCompleted(jobId, 6, _model(jobId, 6));
        _certifyAll(jobId, 6, 2);
        IConclaveTraining.Job memory job = training.getJob(jobId);
        assertTrue(job.status == IConclaveTraining.JobStatus.Completed, "completed");
        assertEq(job.completedAt, block.timestamp, "completed at");
        assertFalse(training.commitsOpen(jobId), "a completed job takes no certificates");
        assertFalse(training.isSettled(jobId), "not settled during the grace");
        vm.warp(block.timestamp + GRACE - 1);
        assertFalse(training.isSettled(jobId), "not settled just before the grace ends");
        vm.warp(block.timestamp + 1);
        assertTrue(training.isSettled(jobId), "settled");
    }

    function test_submitCertificate_signersMayIncludeNonMembersAndMoreThanTheQuorum() public {
        uint256 jobId = _running(address(token), 4);
        _certify(jobId, 2, 15, 3);
        assertEq(training.getCheckpoint(jobId, 2).signers, 4, "four signers");
        assertEq(training.getCheckpoint(jobId, 2).credited, 2, "two members");
    }

    function test_submitCertificate_revertsOnUnknownJob() public {
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownJob.selector, 1));
        training.submitCertificate(1, 2, "m", "r", new address[](0), new bytes[](0));
    }

    function test_submitCertificate_revertsBeforeStart() public {
        uint256 jobId = _createDefault(NATIVE);
        _joinAndRegister(jobId, 0);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.CommitsClosed.selector, jobId));
        training.submitCertificate(jobId, 2, "m", "r", _keysOf(1), new bytes[](0));
    }

    function test_submitCertificate_revertsOnCancelledJob() public {
        uint256 jobId = _createDefault(NATIVE);
        vm.prank(customer);
        training.cancelJob(jobId);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.CommitsClosed.selector, jobId));
        training.submitCertificate(jobId, 2, "m", "r", _keysOf(1), new bytes[](0));
    }

    function test_submitCertificate_revertsAtTheDeadline() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.warp(training.getJob(jobId).deadline);
        address[] memory members = _keysOf(3);
        bytes[] memory sigs = _certSigs(jobId, 2, "m", "r", members, _pksOf(3));
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.CommitsClosed.selector, jobId));
        training.submitCertificate(jobId, 2, "m", "r", members, sigs);
    }

    function test_submitCertificate_revertsOnceCompleted() public {
        uint256 jobId = _running(NATIVE, 2);
        _certifyAll(jobId, 6, 2);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.CommitsClosed.selector, jobId));
        training.submitCertificate(jobId, 6, _model(jobId, 6), "r", _keysOf(3), new bytes[](0));
    }

    function test_submitCertificate_revertsOnZeroModelHash() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.expectRevert(IConclaveTraining.ZeroHash.selector);
        training.submitCertificate(jobId, 2, 0, "r", _keysOf(3), new bytes[](0));
    }

    function test_submitCertificate_revertsOnRoundZero() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotACheckpointRound.selector, 0));
        training.submitCertificate(jobId, 0, "m", "r", _keysOf(3), new bytes[](0));
    }

    function test_submitCertificate_revertsBetweenCheckpoints() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotACheckpointRound.selector, 3));
        training.submitCertificate(jobId, 3, "m", "r", _keysOf(3), new bytes[](0));
    }

    function test_submitCertificate_revertsPastTheLastRound() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NotACheckpointRound.selector, 8));
        training.submitCertificate(jobId, 8, "m", "r", _keysOf(3), new bytes[](0));
    }

    function test_submitCertificate_revertsOnACertifiedRound() public {
        uint256 jobId = _running(NATIVE, 2);
        _certifyAll(jobId, 2, 2);
        address[] memory members = _keysOf(3);
        bytes32 model = _model(jobId, 2);
        bytes32 receipt = _receipt(jobId, 2);
        bytes[] memory sigs = _certSigs(jobId, 2, model, receipt, members, _pksOf(3));
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.RoundBehind.selector, 2, 2));
        training.submitCertificate(jobId, 2, model, receipt, members, sigs);
    }

    function test_submitCertificate_revertsBehindTheLatestRound() public {
        uint256 jobId = _running(NATIVE, 2);
        _certifyAll(jobId, 4, 2); // round 2 was skipped
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.RoundBehind.selector, 2, 4));
        training.submitCertificate(jobId, 2, "m", "r", _keysOf(3), new bytes[](0));
    }

    function test_submitCertificate_revertsBeforeTheRoundsTime() public {
        uint256 jobId = _running(NATIVE, 2);
        uint256 notBefore = block.timestamp + 4 * ROUND_TIME;
        vm.warp(notBefore - 1);
        address[] memory members = _keysOf(3);
        bytes[] memory sigs = _certSigs(jobId, 4, "m", "r", members, _pksOf(3));
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.TooEarly.selector, 4, notBefore));
        training.submitCertificate(jobId, 4, "m", "r", members, sigs);
        vm.warp(notBefore);
        training.submitCertificate(jobId, 4, "m", "r", members, sigs);
    }

    function test_submitCertificate_revertsOnAnEmptyUpdateSet() public {
        uint256 jobId = _running(NATIVE, 2);
        _waitFor(jobId, 2);
        vm.expectRevert(IConclaveTraining.BadUpdateSet.selector);
        training.submitCertificate(jobId, 2, "m", "r", new address[](0), new bytes[](0));
    }

    function test_submitCertificate_revertsOnAnUnsortedUpdateSet() public {
        uint256 jobId = _running(NATIVE, 2);
        _waitFor(jobId, 2);
        address[] memory members = _keysOf(3);
        (members[0], members[1]) = (members[1], members[0]);
        vm.expectRevert(IConclaveTraining.BadUpdateSet.selector);
        training.submitCertificate(jobId, 2, "m", "r", members, new bytes[](0));
    }

    function test_submitCertificate_revertsOnARepeatedMember() public {
        uint256 jobId = _running(NATIVE, 2);
        _waitFor(jobId, 2);
        address[] memory members = new address[](2);
        members[0] = enclaves[0];
        members[1] = enclaves[0];
        vm.expectRevert(IConclaveTraining.BadUpdateSet.selector);
        training.submitCertificate(jobId, 2, "m", "r", members, new bytes[](0));
    }

    function test_submitCertificate_revertsOnTooManyMembers() public {
        uint256 jobId = _running(NATIVE, 2);
        _waitFor(jobId, 2);
        address[] memory members = new address[](257);
        for (uint256 i; i < 257; ++i) {
            members[i] = address(uint160(i + 1));
        }
        vm.expectRevert(IConclaveTraining.BadUpdateSet.selector);
        training.submitCertificate(jobId, 2, "m", "r", members, new bytes[](0));
    }

    function test_submitCertificate_acceptsTheMaximumMembers() public {
        uint256 jobId = _running(NATIVE, 2);
        _waitFor(jobId, 2);
        address[] memory members = new address[](256);
        for (uint256 i; i < 254; ++i) {
            members[i] = address(uint160(i + 1));
        }
        members[254] = enclaves[0];
        members[255] = enclaves[1];
        _sort(members);
        bytes[] memory sigs = _certSigs(jobId, 2, "m", "r", members, _pksOf(3));
        training.submitCertificate(jobId, 2, "m", "r", members, sigs);
        assertEq(training.getCheckpoint(jobId, 2).credited, 2, "the two operators credited");
    }

    function test_submitCertificate_revertsOnMalformedSignature() public {
        uint256 jobId = _running(NATIVE, 2);
        _waitFor(jobId, 2);
        bytes[] memory sigs = new bytes[](1);
        sigs[0] = new bytes(65); // v = 0
        vm.expectRevert(IConclaveTraining.InvalidSignature.selector);
        training.submitCertificate(jobId, 2, "m", "r", _keysOf(3), sigs);
    }

    function test_submitCertificate_revertsOnHighS() public {
        uint256 jobId = _running(NATIVE, 1);
        _waitFor(jobId, 2);
        address[] memory members = _keysOf(1);
        bytes32 digest = training.checkpointDigest(jobId, 2, "m", "r", _updateSet(members));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(keys[0], digest);
        // The same signature with s' = n - s and the other parity recovers the same key on
        // plain ecrecover; it must be refused so statements have one encoding.
        bytes[] memory sigs = new bytes[](1);
        sigs[0] = abi.encodePacked(r, bytes32(SECP256K1_N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        assertEq(ecrecover(digest, v == 27 ? 28 : 27, r, bytes32(SECP256K1_N - uint256(s))), enclaves[0], "malleable");
        vm.expectRevert(IConclaveTraining.InvalidSignature.selector);
        training.submitCertificate(jobId, 2, "m", "r", members, sigs);
    }

    function test_submitCertificate_revertsOnAnUnregisteredSigner() public {
        uint256 jobId = _running(NATIVE, 2);
        _waitFor(jobId, 2);
        uint256 rogue = 0xbad;
        address[] memory members = _keysOf(3);
        bytes[] memory sigs = new bytes[](1);
        sigs[0] = sign(rogue, training.checkpointDigest(jobId, 2, "m", "r", _updateSet(members)));
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownEnclaveKey.selector, vm.addr(rogue)));
        training.submitCertificate(jobId, 2, "m", "r", members, sigs);
    }

    function test_submitCertificate_revertsWhenTheStatementWasForAnotherRound() public {
        uint256 jobId = _running(NATIVE, 1);
        _waitFor(jobId, 4);
        address[] memory members = _keysOf(1);
        bytes[] memory sigs = _certSigs(jobId, 2, "m", "r", members, _pksOf(1));
        // Replayed for round 4 it recovers some other address, unknown to the job.
        bytes32 digest4 = training.checkpointDigest(jobId, 4, "m", "r", _updateSet(members));
        bytes memory sig = sigs[0];
        bytes32 r;
        bytes32 s;
        assembly {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
        }
        address recovered = ecrecover(digest4, uint8(sig[64]), r, s);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownEnclaveKey.selector, recovered));
        training.submitCertificate(jobId, 4, "m", "r", members, sigs);
    }

    function test_submitCertificate_revertsForALeavingSigner() public {
        uint256 jobId = _running(NATIVE, 3);
        vm.prank(ops[0]);
        training.requestLeave(jobId);
        _waitFor(jobId, 2);
        address[] memory members = _keysOf(7);
        bytes[] memory sigs = _certSigs(jobId, 2, "m", "r", members, _pksOf(1));
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Leaving
            )
        );
        training.submitCertificate(jobId, 2, "m", "r", members, sigs);
    }

    function test_submitCertificate_revertsForASlashedSigner() public {
        uint256 jobId = _running(NATIVE, 3);
        _equivocate(jobId, 0, 2);
        _waitFor(jobId, 4);
        address[] memory members = _keysOf(7);
        bytes[] memory sigs = _certSigs(jobId, 4, "m", "r", members, _pksOf(1));
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Slashed
            )
        );
        training.submitCertificate(jobId, 4, "m", "r", members, sigs);
    }

    function test_submitCertificate_revertsOnUnsortedSigners() public {
        uint256 jobId = _running(NATIVE, 2);
        _waitFor(jobId, 2);
        address[] memory members = _keysOf(3);
        bytes[] memory sigs = _certSigs(jobId, 2, "m", "r", members, _pksOf(3));
        (sigs[0], sigs[1]) = (sigs[1], sigs[0]);
        vm.expectRevert(IConclaveTraining.SignersNotSorted.selector);
        training.submitCertificate(jobId, 2, "m", "r", members, sigs);
    }

    function test_submitCertificate_revertsOnARepeatedSigner() public {
        uint256 jobId = _running(NATIVE, 2);
        _waitFor(jobId, 2);
        address[] memory members = _keysOf(3);
        bytes[] memory sigs = _certSigs(jobId, 2, "m", "r", members, _pksOf(1));
        bytes[] memory twice = new bytes[](2);
        twice[0] = sigs[0];
        twice[1] = sigs[0];
        vm.expectRevert(IConclaveTraining.SignersNotSorted.selector);
        training.submitCertificate(jobId, 2, "m", "r", members, twice);
    }

    function test_submitCertificate_revertsWithoutQuorum() public {
        uint256 jobId = _running(NATIVE, 2);
        _waitFor(jobId, 2);
        address[] memory members = _keysOf(3);
        bytes[] memory sigs = _certSigs(jobId, 2, "m", "r", members, _pksOf(1));
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NoQuorum.selector, 1, 2));
        training.submitCertificate(jobId, 2, "m", "r", members, sigs);
    }

    function test_submitCertificate_revertsWithoutSignaturesWhenNoOneIsActive() public {
        uint256 jobId = _running(NATIVE, 1);
        vm.prank(ops[0]);
        training.requestLeave(jobId);
        assertEq(training.quorumNeeded(jobId), 1, "at least one signature");
        _waitFor(jobId, 2);
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.NoQuorum.selector, 0, 1));
        training.submitCertificate(jobId, 2, "m", "r", _keysOf(1), new bytes[](0));
    }

    function test_quorumNeeded_isTheCeilingOfTheShareOfActiveOperators() public {
        IConclaveTraining.JobParams memory p = _params(NATIVE);
        p.minOperators = 1;
        p.quorumBps = 5_001; // just over half
        uint256 half = _create(p);
        p.quorumBps = 6_667; // two thirds, rounded up
        uint256 twoThirds = _create(p);
        p.quorumBps = 10_000; // everyone
        uint256 all = _create(p);
        uint256[3] memory jobs = [half, twoThirds, all];
        uint256[4][3] memory expected = [[uint256(1), 2, 2, 3], [uint256(1), 2, 3, 3], [uint256(1), 2, 3, 4]];
        for (uint256 j; j < 3; ++j) {
            assertEq(training.quorumNeeded(jobs[j]), 1, "no one active: one");
        }
        for (uint256 i; i < N_OPS; ++i) {
            for (uint256 j; j < 3; ++j) {
                _joinAndRegister(jobs[j], i);
                assertEq(training.quorumNeeded(jobs[j]), expected[j][i], "quorum");
            }
        }
    }

    // ---- slash ----

    function test_slash_takesTheStakeAndRewardsTheReporter() public {
        uint256 jobId = _running(address(token), 3);
        _certify(jobId, 2, 7, 4); // operator 2 credited for round 2
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 2, 4, "model a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 2, 4, "model b", "r");
        uint256 reward = STAKE * REWARD_BPS / 10_000;
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.Equivocation(
            jobId,
            4,
            ops[2],
            enclaves[2],
            _statement(jobId, 4, "model a", "r", "set"),
            _statement(jobId, 4, "model b", "r", "set")
        );
        vm.expectEmit(true, true, true, true, address(training));
        emit IConclaveTraining.OperatorSlashed(jobId, ops[2], reporter, STAKE, reward);
        vm.prank(reporter);
        training.slash(jobId, 4, a, b);
        assertEq(token.balanceOf(reporter), reward, "reward");
        IConclaveTraining.Job memory job = training.getJob(jobId);
        assertEq(job.slashedStakeOwed, STAKE - reward, "owed to customer");
        assertEq(job.activeOperators, 2, "active");
        assertEq(job.creditedRounds, 0, "forfeited credits leave the split before settlement");
        assertEq(job.unpaidCredits, 0, "unpaid credits");
        assertEq(training.paymentOf(jobId, ops[2]), 0, "never paid");
    }

    function test_slash_statementsThatDifferOnlyInReceiptOrUpdateSetConflict() public {
        uint256 jobId = _running(NATIVE, 3);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "m", "r", "set a");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 0, 2, "m", "r", "set b");
        vm.prank(reporter);
        training.slash(jobId, 2, a, b);
        a = _signed(jobId, 1, 2, "m", "r1", "set");
        b = _signed(jobId, 1, 2, "m", "r2", "set");
        vm.prank(reporter);
        training.slash(jobId, 2, a, b);
        assertTrue(training.getOperator(jobId, ops[0]).status == IConclaveTraining.OperatorStatus.Slashed, "update set");
        assertTrue(training.getOperator(jobId, ops[1]).status == IConclaveTraining.OperatorStatus.Slashed, "receipt");
    }

    function test_slash_aSignerOfACertifiedRoundThatSignedAnotherStatement() public {
        uint256 jobId = _running(NATIVE, 3);
        _certifyAll(jobId, 2, 3);
        address[] memory members = _keysOf(7);
        IConclaveTraining.SignedCheckpoint memory honest =
            _signed(jobId, 1, 2, _model(jobId, 2), _receipt(jobId, 2), _updateSet(members));
        IConclaveTraining.SignedCheckpoint memory forked =
            _signed(jobId, 1, 2, _model(jobId, 2), _receipt(jobId, 2), _updateSet(_keysOf(1)));
        vm.prank(reporter);
        training.slash(jobId, 2, honest, forked);
        IConclaveTraining.Job memory job = training.getJob(jobId);
        assertEq(job.creditedRounds, 2, "its credit left the split");
        assertEq(job.activeOperators, 2, "active");
        assertEq(training.getCheckpoint(jobId, 2).modelHash, _model(jobId, 2), "the certified round stays");
    }

    function test_slash_aLeavingOperator() public {
        uint256 jobId = _running(NATIVE, 2);
        vm.prank(ops[1]);
        training.requestLeave(jobId);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 1, 2, "a", "r1");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 1, 2, "a", "r2");
        vm.prank(reporter);
        training.slash(jobId, 2, a, b);
        assertTrue(training.getOperator(jobId, ops[1]).status == IConclaveTraining.OperatorStatus.Slashed, "slashed");
        assertEq(training.getJob(jobId).activeOperators, 1, "leaving was already inactive");
    }

    function test_slash_anOperatorOfACancelledJob() public {
        uint256 jobId = _createDefault(NATIVE);
        _joinAndRegister(jobId, 0);
        vm.prank(customer);
        training.cancelJob(jobId);
        _equivocate(jobId, 0, 2);
        assertEq(training.refundable(jobId), STAKE - STAKE * REWARD_BPS / 10_000, "owed to customer");
    }

    function test_slash_withFullReporterReward() public {
        training = new ConclaveTraining(UNBONDING, GRACE, 10_000);
        uint256 jobId = _running(NATIVE, 2);
        _equivocate(jobId, 0, 2);
        assertEq(reporter.balance, STAKE, "all to the reporter");
        assertEq(training.getJob(jobId).slashedStakeOwed, 0, "nothing to the customer");
    }

    function test_slash_revertsOnUnknownJob() public {
        IConclaveTraining.SignedCheckpoint memory a;
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownJob.selector, 1));
        training.slash(1, 2, a, a);
    }

    function test_slash_revertsOnTheSameStatement() public {
        uint256 jobId = _running(NATIVE, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        vm.expectRevert(IConclaveTraining.NotConflicting.selector);
        training.slash(jobId, 2, a, a);
    }

    function test_slash_revertsOnMalformedSignature() public {
        uint256 jobId = _running(NATIVE, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = IConclaveTraining.SignedCheckpoint("b", "r", "set", hex"01");
        vm.expectRevert(IConclaveTraining.InvalidSignature.selector);
        training.slash(jobId, 2, a, b);
    }

    function test_slash_revertsWhenTwoKeysSigned() public {
        uint256 jobId = _running(NATIVE, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 1, 2, "b", "r");
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.DifferentSigners.selector, enclaves[0], enclaves[1]));
        training.slash(jobId, 2, a, b);
    }

    function test_slash_revertsWhenStatementsAreForDifferentRounds() public {
        // Statements for rounds 2 and 4 are not a conflict: checked as round 2, the second
        // signature recovers some other address.
        uint256 jobId = _running(NATIVE, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 0, 4, "b", "r");
        vm.expectRevert(); // DifferentSigners(enclave, some address)
        training.slash(jobId, 2, a, b);
    }

    function test_slash_revertsOnAKeyTheJobDoesNotKnow() public {
        uint256 jobId = _running(NATIVE, 2);
        uint256 other = _createDefault(NATIVE);
        // The enclave's key is registered in `jobId`, not in `other`.
        IConclaveTraining.SignedCheckpoint memory a = _signed(other, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(other, 0, 2, "b", "r");
        vm.expectRevert(abi.encodeWithSelector(IConclaveTraining.UnknownEnclaveKey.selector, enclaves[0]));
        training.slash(other, 2, a, b);
        // Nor can statements signed for one job be used against it in another.
        vm.expectRevert();
        training.slash(jobId, 2, a, b);
    }

    function test_slash_revertsTwice() public {
        uint256 jobId = _running(NATIVE, 2);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 0, 2, "b", "r");
        vm.prank(reporter);
        training.slash(jobId, 2, a, b);
        vm.prank(reporter);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Slashed
            )
        );
        training.slash(jobId, 2, a, b);
    }

    function test_slash_revertsOnceTheStakeIsWithdrawn() public {
        uint256 jobId = _running(NATIVE, 2);
        _leaveAndUnbond(jobId, 0);
        vm.prank(ops[0]);
        training.withdraw(jobId);
        IConclaveTraining.SignedCheckpoint memory a = _signed(jobId, 0, 2, "a", "r");
        IConclaveTraining.SignedCheckpoint memory b = _signed(jobId, 0, 2, "b", "r");
        vm.expectRevert(
            abi.encodeWithSelector(
                IConclaveTraining.WrongOperatorStatus.selector, ops[0], IConclaveTraining.OperatorStatus.Exited
            )
        );
        training.slash(jobId, 2, a, b);
    }

    // ---- views on unknown ids ----

    function test_views_ofUnknownIdsAreEmpty() public view {
        assertTrue(training.getJob(42).status == IConclaveTraining.JobStatus.None, "job");
        assertTrue(training.getOperator(42, ops[0]).status == IConclaveTraining.OperatorStatus.None, "operator");
        assertEq(training.getCheckpoint(42, 2).modelHash, 0, "checkpoint");
        assertEq(training.operatorOfKey(42, enclaves[0]), address(0), "key");
        assertEq(training.measurements(42).length, 0, "measurements");
        assertEq(training.verifiers(42).length, 0, "verifiers");
        assertEq(training.quorumNeeded(42), 1, "quorum");
        assertFalse(training.commitsOpen(42), "commits");
        assertFalse(training.isSettled(42), "settled");
        assertEq(training.paymentOf(42, ops[0]), 0, "payment");
        assertEq(training.refundable(42), 0, "refundable");
    }
}
