"""The context-parallel tests' cases and their gloo worker.

Spawned ranks import this module (not a test module: pytest does not
collect it). A case is a whole-sequence problem (q, k, v, learnable ALiBi
slopes, per-token tensors) with its mods; the parent computes it in one
process, every rank computes its shard with context_parallel_flex_attention
and checks its rows of out, lse and the gradients against the parent's.
"""

from __future__ import annotations

import flexattn_mlir  # noqa: F401  (first: before anything imports torch_mlir)
import torch
import torch.distributed as dist

from flexattn_mlir import create_block_mask, flex_attention
from flexattn_mlir.distributed import (SequenceSharding, context_parallel_flex_attention,
                                       create_cp_block_mask)

S, B, H, D, BLOCK = 91, 1, 2, 16, 16  # S divisible by neither 2 nor 4
WINDOW = 20
DOCS = (30, 41, 20)
CASES = ("causal", "document", "sliding_window")
# Fast codegen: every rank JIT-compiles its kernels (a CI budget, not a
# property of context parallelism).
KERNEL_OPTIONS = {"opt_level": 0}


def inputs(case: str) -> dict:
    """The whole-sequence tensors of ``case`` (the same on every rank)."""
    g = torch.Generator().manual_seed(sum(map(ord, case)))
    t = {n: torch.randn(B, H, S, D, generator=g) for n in ("q", "k", "v", "dout")}
    t["dlse"] = torch.randn(B, H, S, generator=g)
    t["slopes"] = torch.rand(H, generator=g)
    t["doc"] = torch.repeat_interleave(torch.arange(len(DOCS), dtype=torch.int32),
                                       torch.tensor(DOCS))
    t["bias"] = 0.1 * torch.randn(S, generator=g)
    return t


def mods(case: str, slopes, doc, bias):
    """(score_mod, mask_mod, per-token tensors the mods read) of ``case``;
    ``doc`` and ``bias`` are the whole sequence's or a rank's shard."""

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    def alibi_bias(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx) + bias[kv_idx]

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def document(b, h, q_idx, kv_idx):
        return (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)

    def sliding_window(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx <= WINDOW)

    if case == "causal":
        return alibi, causal, []
    if case == "document":
        return alibi_bias, document, [doc, bias]
    return alibi, sliding_window, []


def sharding(case: str, world: int) -> SequenceSharding:
    """Load-balanced layouts: zig-zag for causal, block-mask-aware for
    documents, contiguous for a sliding window (already balanced)."""
    if case == "causal":
        return SequenceSharding.head_tail(S, world)
    if case == "document":
        t = inputs(case)
        _, mask_mod, _ = mods(case, t["slopes"], t["doc"], t["bias"])
        return SequenceSharding.balanced(create_block_mask(mask_mod, None, None, S, S,
                                                           BLOCK_SIZE=BLOCK), world)
    return SequenceSharding.contiguous(S, world)


GRADS = ("q", "k", "v", "slopes", "bias")


def one_process(case: str) -> dict:
    """out, lse and the gradients of sum(out * dout) + sum(lse * dlse) in one process."""
    t = inputs(case)
    leaves = {n: t[n].clone().requires_grad_() for n in GRADS}
    score_mod, mask_mod, _ = mods(case, leaves["slopes"], t["doc"], leaves["bias"])
    bm = create_block_mask(mask_mod, None, None, S, S, BLOCK_SIZE=BLOCK)
    out, lse = flex_attention(leaves["q"], leaves["k"], leaves["v"], score_mod, bm,
                              return_lse=True, kernel_options=KERNEL_OPTIONS)
    ((out * t["dout"]).sum() + (lse * t["dlse"]).sum()).backward()
    result = {"out": out.detach(), "lse": lse.detach()}
    for n in GRADS:
        result["d" + n] = leaves[n].grad if leaves[n].grad is not None else torch.zeros_like(t[n])
    return result


def check_rank(case: str, world: int, rotate: str, expected: dict, group) -> None:
    """This rank's part of ``case`` on ``group`` against the one-process ``expected``."""
    rank = dist.get_rank(group)
    t = inputs(case)
    sh = sharding(case, world)
    local = {n: sh.shard(t[n], 2, rank) for n in ("q", "k", "v", "dout", "dlse")}
    local["doc"], local["bias"] = sh.shard(t["doc"], 0, rank), sh.shard(t["bias"], 0, rank)
    leaves = {n: local[n].clone().requires_grad_() for n in ("q", "k", "v", "bias")}
    leaves["slopes"] = t["slopes"].clone().requires_grad_()
    score_mod, mask_mod, tokens = mods(case, leaves["slopes"], local["doc"], leaves["bias"])
    bm = create_cp_block_mask(mask_mod, None, None, sh, group=group, BLOCK_SIZE=BLOCK,
                              token_tensors=[local["doc"]] if tokens else [])
    out, lse = context_parallel_flex_attention(
        leaves["q"], leaves["k"], leaves["v"], score_mod, bm, rotate=rotate, return_lse=True,
        token_tensors=[leaves["bias"]] if tokens else [], kernel_options=KERNEL_OPTIONS)
    valid = sh.positions(rank) < S  # padding rows: no keys, lse -inf
    ((out * local["dout"]).sum() + (lse[..., valid] * local["dlse"][..., valid]).sum()).backward()
    if case == "sliding_window" and rotate == "ring" and world == 2:
        # Contiguous shards, causal window: rank 0 never needs rank 1's keys
        # (that step is skipped), rank 1 needs rank 0's.
        empty = bm.rotation("ring", "cpu").empty((rank + 1) % world)
        assert empty == (rank == 0), f"ring step skipping ({case}, rank {rank}): {empty}"
    got = {"out": out, "lse": lse}
    for n in ("q", "k", "v", "bias"):
        got["d" + n] = leaves[n].grad if leaves[n].grad is not None else torch.zeros_like(
            leaves[n])
    got["dslopes"] = leaves["slopes"].grad
    where = f"{case}, {world} ranks, rotate={rotate}, rank {rank}"
    for name, value in got.items():
        want = expected[name]
        if name in ("out", "lse", "dq", "dk", "dv"):
            want = sh.shard(want, 2, rank)
        elif name == "dbias":
            want = sh.shard(want, 0, rank)
        if name == "lse":
            value, want = value[..., valid], want[..., valid]
        tol = 1e-4 if name in ("dslopes", "dbias") else 2e-5
        torch.testing.assert_close(value.detach(), want, rtol=tol, atol=tol,
                                   msg=lambda m: f"{name} ({where}): {m}")


def worker(rank: int, world: int, port: int, expected: dict, plans) -> None:
    """A gloo rank: runs every (case, group size, rotate) of ``plans``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        groups = {world: dist.group.WORLD}
        for size in sorted({p[1] for p in plans} - {world}):
            groups[size] = dist.new_group(list(range(size)))  # every rank calls new_group
        for case, size, rotate in plans:
            if rank < size:
                check_rank(case, size, rotate, expected[case], groups[size])
        dist.barrier()
    finally:
        dist.destroy_process_group()
