// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Vm} from "forge-std/Vm.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

/// @notice The few test helpers these suites need. forge-std from npm (1.1.2, the only version
/// there) is a 2022 snapshot whose Test.sol imports ds-test, which the package does not ship; its
/// cheatcode interface (Vm.sol) still matches forge's, so the suites use that and this base:
/// assertions that revert with both values, `bound`, labelled addresses and the invariant target
/// functions forge reads (the same ABI as forge-std's StdInvariant).
abstract contract TestBase {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    /// @dev Marks the contract as a test suite (DSTest convention).
    bool public constant IS_TEST = true;

    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    address[] private _targetedContracts;
    FuzzSelector[] private _targetedSelectors;

    function targetContracts() public view returns (address[] memory) {
        return _targetedContracts;
    }

    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetedSelectors;
    }

    function targetContract(address target) internal {
        _targetedContracts.push(target);
    }

    function targetSelector(FuzzSelector memory selector) internal {
        _targetedSelectors.push(selector);
    }

    // ---- assertions ----

    function assertTrue(bool ok, string memory what) internal pure {
        if (!ok) revert(string.concat("assertion failed: ", what));
    }

    function assertFalse(bool ok, string memory what) internal pure {
        if (ok) revert(string.concat("assertion failed (expected false): ", what));
    }

    function assertEq(uint256 a, uint256 b, string memory what) internal pure {
        if (a != b) {
            revert(string.concat("assertion failed: ", what, ": ", Strings.toString(a), " != ", Strings.toString(b)));
        }
    }

    function assertEq(address a, address b, string memory what) internal pure {
        if (a != b) {
            revert(
                string.concat("assertion failed: ", what, ": ", Strings.toHexString(a), " != ", Strings.toHexString(b))
            );
        }
    }

    function assertEq(bytes32 a, bytes32 b, string memory what) internal pure {
        if (a != b) {
            revert(
                string.concat(
                    "assertion failed: ",
                    what,
                    ": ",
                    Strings.toHexString(uint256(a), 32),
                    " != ",
                    Strings.toHexString(uint256(b), 32)
                )
            );
        }
    }

    function assertEq(bool a, bool b, string memory what) internal pure {
        if (a != b) revert(string.concat("assertion failed: ", what, a ? ": true != false" : ": false != true"));
    }

    function assertLe(uint256 a, uint256 b, string memory what) internal pure {
        if (a > b) {
            revert(string.concat("assertion failed: ", what, ": ", Strings.toString(a), " > ", Strings.toString(b)));
        }
    }

    function assertGt(uint256 a, uint256 b, string memory what) internal pure {
        if (a <= b) {
            revert(string.concat("assertion failed: ", what, ": ", Strings.toString(a), " <= ", Strings.toString(b)));
        }
    }

    // ---- helpers ----

    /// @dev Maps any x into [min, max] (wrapping, like forge-std's bound).
    function bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        require(min <= max, "bound: min > max");
        uint256 size = max - min;
        if (size == type(uint256).max) return x;
        return min + (x % (size + 1));
    }

    function makeAddr(string memory name) internal returns (address who) {
        who = address(uint160(uint256(keccak256(bytes(name)))));
        vm.label(who, name);
    }

    /// @dev A 65-byte r ‖ s ‖ v signature by `privateKey` over `digest`.
    function sign(uint256 privateKey, bytes32 digest) internal returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(privateKey, digest);
        return abi.encodePacked(r, s, v);
    }
}
