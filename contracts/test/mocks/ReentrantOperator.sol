// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConclaveTraining} from "../../src/ConclaveTraining.sol";

/// @notice An operator contract whose receive hook calls back into the training contract
/// (withdraw again, or refund), to show the guard holds.
contract ReentrantOperator {
    ConclaveTraining public immutable training;
    uint256 public jobId;
    bool public reenter;

    constructor(ConclaveTraining training_) {
        training = training_;
    }

    function joinJob(uint256 jobId_) external payable {
        jobId = jobId_;
        training.join{value: msg.value}(jobId_);
    }

    function leave() external {
        training.requestLeave(jobId);
    }

    function withdrawTwice() external {
        reenter = true;
        training.withdraw(jobId);
    }

    receive() external payable {
        if (reenter) {
            reenter = false;
            training.withdraw(jobId);
        }
    }
}
