"""The dense products of a ViT block, alone: minivit's linear products (kernels/cpu/dense.py's
_blas: OpenBLAS at one thread per chunk on minivit's threads) against PyTorch's, at the shapes of
vit_mini (width 128, MLP 256) and vit_cifar (192, 768), batch 128, 32 px (64 tokens) and 16 px
(16): forward x @ W^T, dx = g @ W, dW = g^T @ x, GFLOP/s, medians of 15 with the same arrays each
time (so their inputs stay in cache, unlike in a training step). Compare with the linear rows of
benchmarks/profile_step.py, which time the same products inside a step.

    python benchmarks/linear_shapes.py
"""
import time

import numpy as np
import torch

from kernels.cpu.dense import _blas  # noqa: E402  (after numpy and torch, as a user's script)
torch.set_num_threads(2)
def med(f, n=15):
    f(); f()
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return np.median(ts)
rng=np.random.default_rng(0)
def run(M, Din, Dout, tag):
    x=rng.standard_normal((M,Din),dtype=np.float32); w=rng.standard_normal((Dout,Din),dtype=np.float32)
    g=rng.standard_normal((M,Dout),dtype=np.float32)
    tx,tw,tg=map(torch.from_numpy,(x,w,g))
    fl=2*M*Din*Dout/1e9
    res=[]
    for name,f in [("fwd", lambda: _blas(x, w.T)), ("dx", lambda: _blas(g, w)), ("dw", lambda: _blas(g.T, x)),
                   ("t fwd", lambda: tx@tw.T), ("t dx", lambda: tg@tw), ("t dw", lambda: tg.T@tx)]:
        res.append(f"{name} {fl/med(f):6.1f}")
    print(f"{tag:18s} M={M} {Din}->{Dout}: " + " | ".join(res), flush=True)
a=np.ones((2048,2048),np.float32); ta=torch.from_numpy(a)
print("peak np", 2*2048**3/1e9/med(lambda: a@a,5), "torch", 2*2048**3/1e9/med(lambda: ta@ta,5))
for B in (128,):
  for N,res in ((64,32),(16,16)):
    M=B*N
    for D,H in ((128,256),(192,768)):
        run(M,D,3*D,f"qkv D{D} {res}px"); run(M,D,D,f"proj D{D} {res}px"); run(M,D,H,f"fc1 D{D} {res}px"); run(M,H,D,f"fc2 D{D} {res}px")
