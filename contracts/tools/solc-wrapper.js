#!/usr/bin/env node
// Makes solc-js (npm `solc`, the compiler built to WebAssembly) answer like the native `solc`
// binary for the two calls forge makes: `solc --version` and `solc --standard-json [options]`
// (Standard JSON on stdin, Standard JSON on stdout, exit 0 even when the output holds compiler
// errors, as native solc does). Forge cannot download a native solc offline; foundry.toml points
// `solc` at the launcher beside this file.
//
// The compiler package is found at $CONCLAVE_SOLCJS, or else in .tools/node_modules/solc at the
// repository root (scripts/setup-foundry.sh installs it there). Forge inlines every source's
// content in the input; the import callback is there for other callers and, like native solc,
// reads files from disk under the base path and include paths, only inside the allowed
// directories (--allow-paths, base path, include paths). Set CONCLAVE_SOLC_LOG=FILE to append
// each invocation's arguments to FILE.
'use strict';

const fs = require('fs');
const path = require('path');

const solcDir = process.env.CONCLAVE_SOLCJS ||
  path.resolve(__dirname, '..', '..', '.tools', 'node_modules', 'solc');

function fail(message) {
  process.stderr.write(`solc-wrapper: ${message}\n`);
  process.exit(1);
}

function loadSolc() {
  // Emscripten installs handlers that swallow uncaught exceptions; keep node's default behaviour.
  const before = process.listeners('uncaughtException');
  let solc;
  try {
    solc = require(solcDir);
  } catch (e) {
    fail(`cannot load solc-js from ${solcDir} (run scripts/setup-foundry.sh): ${e.message}`);
  }
  process.removeAllListeners('uncaughtException');
  for (const l of before) process.on('uncaughtException', l);
  return solc;
}

// Native solc's version string ends in the platform (".Linux.g++"); solc-js reports
// ".Emscripten.clang". Both parse as semver build metadata, which is all forge reads.
function printVersion(solc) {
  process.stdout.write('solc, the solidity compiler commandline interface\n');
  process.stdout.write(`Version: ${solc.version()}\n`);
}

function parseArgs(argv) {
  const opts = { version: false, standardJson: false, help: false, basePath: null,
    includePaths: [], allowPaths: [], noImportCallback: false, pretty: false, inputFile: null };
  const takesValue = new Set(['--base-path', '--include-path', '--allow-paths']);
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value = null;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (takesValue.has(arg) && value === null) {
      if (i + 1 >= argv.length) fail(`${arg} needs a value`);
      value = argv[++i];
    }
    switch (arg) {
      case '--version': opts.version = true; break;
      case '--help': opts.help = true; break;
      case '--standard-json': opts.standardJson = true; break;
      case '--pretty-json': opts.pretty = true; break;
      case '--no-import-callback': opts.noImportCallback = true; break;
      case '--base-path': opts.basePath = value; break;
      case '--include-path': opts.includePaths.push(value); break;
      case '--allow-paths':
        for (const p of value.split(',')) if (p) opts.allowPaths.push(p);
        break;
      default:
        if (arg.startsWith('-')) fail(`unsupported option ${arg} (this wrapper only speaks --standard-json)`);
        if (opts.inputFile !== null) fail('only one input file is supported with --standard-json');
        opts.inputFile = arg;
    }
  }
  return opts;
}

function isInside(file, dir) {
  const rel = path.relative(dir, file);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

function makeImportCallback(opts) {
  const base = path.resolve(opts.basePath || '.');
  const includes = opts.includePaths.map((p) => path.resolve(p));
  const allowed = [base, ...includes, ...opts.allowPaths.map((p) => path.resolve(p))];
  const roots = [base, ...includes];
  return (sourceUnitName) => {
    const candidates = path.isAbsolute(sourceUnitName)
      ? [sourceUnitName]
      : roots.map((root) => path.join(root, sourceUnitName));
    for (const candidate of candidates) {
      let real;
      try {
        real = fs.realpathSync(candidate);
      } catch (_) {
        continue;
      }
      if (!allowed.some((dir) => isInside(real, dir) || isInside(candidate, dir))) {
        return { error: `${sourceUnitName}: not inside the allowed directories` };
      }
      try {
        return { contents: fs.readFileSync(real, 'utf8') };
      } catch (e) {
        return { error: `${sourceUnitName}: ${e.message}` };
      }
    }
    return { error: `File not found: ${sourceUnitName}` };
  };
}

function main() {
  const argv = process.argv.slice(2);
  if (process.env.CONCLAVE_SOLC_LOG) {
    fs.appendFileSync(process.env.CONCLAVE_SOLC_LOG,
      `${new Date().toISOString()} cwd=${process.cwd()} argv=${JSON.stringify(argv)}\n`);
  }
  const opts = parseArgs(argv);
  if (opts.help) {
    process.stdout.write('usage: solc --version | solc --standard-json [--base-path P] ' +
      '[--include-path P]... [--allow-paths P,...] [--no-import-callback] [--pretty-json] [FILE]\n');
    return;
  }
  const solc = loadSolc();
  if (opts.version) {
    printVersion(solc);
    return;
  }
  if (!opts.standardJson) fail('only --version and --standard-json are supported');
  const input = fs.readFileSync(opts.inputFile === null ? 0 : opts.inputFile, 'utf8');
  const callbacks = opts.noImportCallback ? {} : { import: makeImportCallback(opts) };
  const output = solc.compile(input, callbacks);
  const text = opts.pretty ? JSON.stringify(JSON.parse(output), null, 2) : output;
  // Write synchronously: process.exit must not cut a large output short on a pipe.
  let offset = 0;
  const buf = Buffer.from(text + '\n', 'utf8');
  while (offset < buf.length) {
    try {
      offset += fs.writeSync(1, buf, offset);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
    }
  }
}

main();
