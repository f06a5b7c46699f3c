"""The decode path's per-call choices (docs/inference.md, "Decoding"):
whether a call decodes and whether its query heads are packed, and on a
GPU the number of KV ranges (static: :func:`gpu_splits`; the CPU runner
chooses its own per call, compiler/backends/cpu.py; the GPU's merge of
the ranges is flexattn_runtime.splitkv's)."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..compiler import targets
from ..compiler.options import CompileOptions

__all__ = ["DECODE_MAX_ROWS", "resolve", "rows_agree", "gpu_splits"]

#: Calls with at most this many query rows decode by default.
DECODE_MAX_ROWS = 64

#: What the GPU decode kernel takes (float32 runs the prefill kernel).
_GPU_DECODE_DTYPES = (torch.bfloat16, torch.float16)

#: At most this many KV ranges per tile on a GPU.
_MAX_GPU_SPLITS = 64
#: The shared memory per SM the GPU's occupancy estimate divides (Hopper
#: and the A100: 228 / 164 KiB; a smaller part only runs fewer CTAs).
_SMEM_PER_SM = {"sm_90a": 233472, "sm_80": 167936}


def gpu_splits(options: CompileOptions, q, k, v, pack: bool, sms: int) -> int:
    """KV ranges per tile of a GPU decode call (FlashDecoding's choice, as
    FlashAttention-2's num_splits heuristic): the fewest ranges whose CTAs
    fill the ``sms`` SMs' waves within 85 % of the best, at most one range
    per KV tile. One CTA's shared memory (Q tile, the K/V ring) sets how
    many CTAs an SM runs."""
    t = targets.target(options.target)
    b, hq, m, d = q.shape
    hkv = k.shape[1]
    heads, rows = (hkv, hq // hkv * m) if pack else (hq, m)
    tiles = b * heads * math.ceil(rows / t.decode_rows)
    kernel = t.kernel(d, v.shape[3], decode=True)
    kv_tile = options.tile_kv or kernel.kv_tile(max(d, v.shape[3]))
    smem = kernel.ring_bytes(d, v.shape[3], kv_tile, options.stages) \
        - 2 * (kernel.q_block - t.decode_rows) * targets.padded_head_dim(d)
    per_sm = max(1, _SMEM_PER_SM.get(options.target, smem) // smem)
    slots = sms * per_sm
    most = max(1, min(_MAX_GPU_SPLITS, math.ceil(k.shape[2] / kv_tile)))

    def efficiency(s: int) -> float:
        waves = tiles * s / slots
        return waves / math.ceil(waves)

    best = max(efficiency(s) for s in range(1, most + 1))
    return next(s for s in range(1, most + 1) if efficiency(s) >= 0.85 * best)


def rows_agree(block_mask) -> bool:
    """Whether every query head and row of a KV group reads the same
    block-mask row (so a packed tile's union is that row): no block mask,
    or one with head dim 1 and one query block."""
    if block_mask is None:
        return True
    num = block_mask.kv_num_blocks
    return num.shape[1] == 1 and num.shape[2] == 1


def resolve(options: CompileOptions, q, k, v, block_mask, row_stats: bool = False) -> CompileOptions:
    """``options`` with ``decode`` and ``pack_heads`` decided for this call
    (both in the kernel's key). ``row_stats``: the call has attention sinks
    or asks for max_scores, which the decode path does not merge across KV
    ranges yet: it runs the prefill kernel (forcing decode is an error)."""
    if row_stats:
        if options.decode or options.pack_heads:
            raise ValueError("kernel_options decode/pack_heads: the decode path does not take "
                             "attention sinks or max_scores yet; leave them unset")
        return replace(options, decode=False, pack_heads=False)
    gpu = targets.target(options.target).is_gpu
    if gpu and options.dynamic:
        # One dynamic kernel serves every M: the prefill kernel (the split-KV
        # kernel's split count follows the shape; CompileOptions refuses
        # decode=True with dynamic on a GPU).
        if options.pack_heads:
            raise ValueError("kernel_options pack_heads=True: the GPU dynamic-shape kernel is "
                             "the prefill kernel; leave pack_heads unset or pass dynamic=False")
        return replace(options, decode=False, pack_heads=False)
    if gpu and q.dtype not in _GPU_DECODE_DTYPES:
        if options.decode or options.pack_heads:
            raise ValueError(f"kernel_options decode/pack_heads: the GPU decode kernel takes "
                             f"bfloat16 or float16 q/k/v, got {q.dtype}; leave them unset "
                             f"(the prefill kernel runs it)")
        return replace(options, decode=False, pack_heads=False)
    if options.decode is not None and options.pack_heads is not None:
        if options.pack_heads and not rows_agree(block_mask):
            raise ValueError(_PACK_ERROR)
        if not (gpu and options.decode and not options.splits):
            return options
    decode = options.decode if options.decode is not None else q.shape[2] <= DECODE_MAX_ROWS
    agree = rows_agree(block_mask)
    pack = options.pack_heads
    if pack is None:
        pack = decode and q.shape[1] > k.shape[1] and agree
    elif pack and not agree:
        raise ValueError(_PACK_ERROR)
    if not decode:
        return replace(options, decode=False, pack_heads=False)
    if gpu:
        # The split-KV kernel's grid is its own (no persistent CTAs).
        t = targets.target(options.target)
        kernel = t.kernel(q.shape[3], v.shape[3], decode=True)
        chosen = replace(options, decode=True, pack_heads=pack, tile_q=t.decode_rows,
                         persistent=0, tile_kv=options.tile_kv or kernel.decode_kv_tile)
        return replace(chosen, splits=options.splits or gpu_splits(
            chosen, q, k, v, pack, targets.sm_count(options.target, q.device)))
    tile_q = options.tile_q
    if not options.dynamic:
        # A tile no taller than the (packed) rows: only whole tiles take the
        # vectorised path, which a static kernel has. (A dynamic kernel's
        # tiles are scalar and cost what their live rows do; one tile size
        # keeps one kernel for every M.)
        rows = q.shape[2] * (q.shape[1] // k.shape[1] if pack else 1)
        tile_q = min(tile_q, 1 << max(rows - 1, 0).bit_length())
    return replace(options, decode=True, pack_heads=pack, tile_q=tile_q)


_PACK_ERROR = ("kernel_options pack_heads=True: the query heads of a KV group share a tile "
               "only when they read the same block-mask row; this block mask has a head "
               "dim > 1 or several query blocks (pass pack_heads=None to decode unpacked)")
