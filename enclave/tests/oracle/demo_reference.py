"""Runs the DeMo reference codec (PyPI detonation 0.5.2: DCTTransform / DCTCompress, a copy of
bloc97/DeMo's TransformDCT / CompressDCT) on tensors from a safetensors file.

Input tensors are named "peer<P>/<name>". For every <name> it writes "peer<P>/<name>" (that
peer's update decoded alone) and "agg/<name>" (all peers' updates through batch_decompress, the
scatter-mean over the peers that chose each coefficient, then decoded).

usage: demo_reference.py IN.safetensors OUT.safetensors TOPK CHUNK
"""
import sys
from collections import defaultdict

import torch
from safetensors.torch import load_file, save_file
from detonation.util.dct_transform import DCTTransform
from detonation.util.dct_compress import DCTCompress

src, dst, topk, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(2)
tensors = load_file(src)
by_name = defaultdict(dict)
for key, t in tensors.items():
    peer, name = key.split("/", 1)
    by_name[name][peer] = t.float()

out = {}
for name, peers in by_name.items():
    params = [torch.nn.Parameter(t.clone()) for t in peers.values()]
    transform = DCTTransform([{"params": params}], chunk)
    idxs, vals, xshape = [], [], None
    for peer in sorted(peers):
        enc = transform.encode(peers[peer])
        idx, val, xshape = DCTCompress.compress(enc, topk)
        dense = DCTCompress.decompress(idx, val, xshape, "cpu", torch.float32)
        out[f"{peer}/{name}"] = transform.decode(dense).contiguous()
        idxs.append(idx)
        vals.append(val)
    agg = DCTCompress.batch_decompress(idxs, vals, xshape, "cpu", torch.float32)
    out[f"agg/{name}"] = transform.decode(agg).contiguous()
save_file(out, dst)
