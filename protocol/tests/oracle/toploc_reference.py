"""Oracle for protocol/tests/toploc.rs and protocol/benches/toploc.rs: the reference `toploc`
(0.1.6) on bf16 tensors given as raw little-endian bytes.

Every job passes one [rows, hidden] tensor with skip_prefill=True, so the reference runs its C++
path (toploc/C/csrc/poly.cpp), the one the Rust port follows. Several jobs share one process
(importing torch dominates); each job's output ends with a line "--".

  build  TENSOR:ROWS:HIDDEN:BATCH:TOPK ...         one line per proof: hex bytes, space, base64
  verify TENSOR:ROWS:HIDDEN:BATCH:TOPK:PROOFS ...  PROOFS holds one hex proof per line; one line
                                                   per group: exp_mismatches mean median
  bench  TENSOR:ROWS:HIDDEN:BATCH:TOPK REPS        median seconds of build_proofs_bytes and of
                                                   verify_proofs_bytes over REPS runs
"""

import sys
import time

import torch
import toploc


def load(path, rows, hidden):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    return torch.frombuffer(data, dtype=torch.bfloat16).view(int(rows), int(hidden))


def median(xs):
    return sorted(xs)[len(xs) // 2]


def job(spec):
    path, rows, hidden, batch, topk, *rest = spec.split(":")
    return load(path, rows, hidden), int(batch), int(topk), rest


def main(argv):
    mode, specs = argv[0], argv[1:]
    if mode == "build":
        for spec in specs:
            acts, batch, topk, _ = job(spec)
            for p in toploc.build_proofs(acts, batch, topk, skip_prefill=True):
                print(p.to_bytes().hex(), p.to_base64())
            print("--")
    elif mode == "verify":
        for spec in specs:
            acts, batch, topk, (proofs_path,) = job(spec)
            with open(proofs_path) as f:
                proofs = [bytes.fromhex(line) for line in f.read().split()]
            results = toploc.verify_proofs_bytes(acts, proofs, batch, topk, skip_prefill=True)
            for r in results:
                print(r.exp_mismatches, repr(r.mant_err_mean), repr(r.mant_err_median))
            print("--")
    elif mode == "bench":
        acts, batch, topk, _ = job(specs[0])
        reps = int(specs[1])
        proofs = toploc.build_proofs_bytes(acts, batch, topk, skip_prefill=True)
        toploc.verify_proofs_bytes(acts, proofs, batch, topk, skip_prefill=True)
        build, verify = [], []
        for _ in range(reps):
            t = time.perf_counter()
            toploc.build_proofs_bytes(acts, batch, topk, skip_prefill=True)
            build.append(time.perf_counter() - t)
            t = time.perf_counter()
            toploc.verify_proofs_bytes(acts, proofs, batch, topk, skip_prefill=True)
            verify.append(time.perf_counter() - t)
        print(repr(median(build)), repr(median(verify)))
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
