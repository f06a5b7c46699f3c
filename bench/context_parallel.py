"""Context-parallel attention: all-gather vs ring K/V rotation, per group size.

    python bench/context_parallel.py --ranks 2 4 --seq 16384 --json out.json
    python bench/context_parallel.py --device cuda --ranks 2 4 8 --seq 131072   # NCCL, one GPU a rank

Spawns W ranks (gloo on CPUs, NCCL on GPUs, one GPU per rank) on this
machine. Each holds its zig-zag (head-tail) shard of a causal attention with
ALiBi (B=1, H heads, head dim D; float32 on the CPU, bfloat16 on GPUs) and
times ``context_parallel_flex_attention`` with ``rotate="allgather"`` and
``rotate="ring"``: the forward, and forward + backward where the device has
a backward. A time is the slowest rank's median over ``--iters`` calls
after a warm-up call (which compiles). W=1 is the one-process call on the
whole sequence, for scale. On the CPU the ranks share the machine's cores
(``torch.set_num_threads`` = cores / W each), so the numbers show the
communication pattern's cost, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time

import flexattn_mlir as fm  # first: before anything imports torch_mlir
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from flexattn_mlir.distributed import (SequenceSharding, context_parallel_flex_attention,
                                       create_cp_block_mask)


def _problem(args, device, dtype):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, args.heads, args.seq, args.dim, generator=g).to(device, dtype)
               for _ in range(3))
    slopes = torch.rand(args.heads, generator=g).to(device)

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    return q, k, v, alibi, causal


def _time(fn, iters, sync, group):
    """The slowest rank's median seconds of ``fn`` over ``iters`` calls."""
    times = []
    for _ in range(iters):
        dist.barrier(group)
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    m = torch.tensor([statistics.median(times)], dtype=torch.float64)
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    return float(m)


def _rank(rank, world, port, args, out_path):
    cuda = args.device == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dtype = torch.bfloat16 if cuda else torch.float32
    q, k, v, alibi, causal = _problem(args, device, dtype)
    sh = SequenceSharding.head_tail(args.seq, world)
    ql, kl, vl = (sh.shard(t, 2, rank) for t in (q, k, v))
    bm = create_cp_block_mask(causal, None, None, sh, BLOCK_SIZE=args.block)
    backward = not cuda or args.backward
    row = {"ranks": world, "seq": args.seq}
    for rotate in ("allgather", "ring"):
        def fwd():
            with torch.no_grad():
                context_parallel_flex_attention(ql, kl, vl, alibi, bm, rotate=rotate)

        def fwd_bwd():
            leaves = [t.detach().requires_grad_() for t in (ql, kl, vl)]
            context_parallel_flex_attention(*leaves, alibi, bm, rotate=rotate).sum().backward()

        fwd()  # compiles
        row[f"{rotate}_fwd_s"] = _time(fwd, args.iters, sync, None)
        if backward:
            fwd_bwd()
            row[f"{rotate}_fwd_bwd_s"] = _time(fwd_bwd, args.iters, sync, None)
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(row, f)
    dist.destroy_process_group()


def _one_process(args):
    q, k, v, alibi, causal = _problem(args, "cpu", torch.float32)
    bm = fm.create_block_mask(causal, None, None, args.seq, args.seq, BLOCK_SIZE=args.block)
    with torch.no_grad():
        fm.flex_attention(q, k, v, alibi, bm)
        times = []
        for _ in range(args.iters):
            t = time.perf_counter()
            fm.flex_attention(q, k, v, alibi, bm)
            times.append(time.perf_counter() - t)
    return {"ranks": 1, "seq": args.seq, "fwd_s": statistics.median(times)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--backward", action="store_true",
                   help="also time forward + backward on GPUs (needs the GPU backward)")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    rows = [] if args.device == "cuda" else [_one_process(args)]
    tmp = f"/tmp/flexattn-cp-bench-{os.getpid()}.json"
    for world in args.ranks:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.start_processes(_rank, args=(world, port, args, tmp), nprocs=world,
                           start_method="spawn")
        with open(tmp) as f:
            rows.append(json.load(f))
        os.unlink(tmp)
    for row in rows:
        print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()))
    if args.json:
        meta = {"device": args.device, "heads": args.heads, "dim": args.dim,
                "block": args.block, "iters": args.iters, "cpus": os.cpu_count(),
                "torch": torch.__version__, "argv": sys.argv[1:]}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
