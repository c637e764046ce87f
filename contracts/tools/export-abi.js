#!/usr/bin/env node
// Writes contracts/abi/ConclaveTraining.json (ABI, creation and runtime bytecode) from forge's
// artifact, for the chain client's `sol!` bindings (host/src/chain.rs). Run after `forge build`
// or `forge test` in contracts/ (scripts/test-contracts.sh does). Prints whether it changed.
'use strict';

const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const artifact = path.join(root, 'out', 'ConclaveTraining.sol', 'ConclaveTraining.json');
const dest = path.join(root, 'abi', 'ConclaveTraining.json');

const a = JSON.parse(fs.readFileSync(artifact, 'utf8'));
const text = JSON.stringify({
  abi: a.abi,
  bytecode: { object: a.bytecode.object },
  deployedBytecode: { object: a.deployedBytecode.object },
}, null, 1) + '\n';
const before = fs.existsSync(dest) ? fs.readFileSync(dest, 'utf8') : null;
fs.mkdirSync(path.dirname(dest), { recursive: true });
fs.writeFileSync(dest, text);
console.log(before === text
  ? 'export-abi: contracts/abi/ConclaveTraining.json is up to date'
  : 'export-abi: contracts/abi/ConclaveTraining.json updated from the build (commit it)');
