"""Times the DeMo reference codec (PyPI detonation 0.5.2) on the benchmark's tensor shapes:
DCTTransform.encode + DCTCompress.compress over every tensor, REPS times; prints JSON with the
median seconds. usage: demo_reference_bench.py SHAPES_JSON TOPK CHUNK REPS"""
import json, statistics, sys, time

import torch
from detonation.util.dct_transform import DCTTransform
from detonation.util.dct_compress import DCTCompress

shapes, topk, chunk, reps = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(2)
torch.manual_seed(0)
params = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
transform = DCTTransform([{"params": params}], chunk)
times = []
for _ in range(reps):
    t0 = time.perf_counter()
    for p in params:
        idx, val, xshape = DCTCompress.compress(transform.encode(p.data), topk)
    times.append(time.perf_counter() - t0)
print(json.dumps({"median_s": statistics.median(times), "threads": torch.get_num_threads()}))
