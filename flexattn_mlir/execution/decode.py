"""The decode path's per-call choices (docs/inference.md, "Decoding"):
whether a call decodes and whether its query heads are packed (the CPU
runner chooses the number of KV ranges, compiler/backends/cpu.py)."""

from __future__ import annotations

from dataclasses import replace

from ..compiler.options import CompileOptions

__all__ = ["DECODE_MAX_ROWS", "resolve", "rows_agree"]

#: Calls with at most this many query rows decode by default (CPU).
DECODE_MAX_ROWS = 64


def rows_agree(block_mask) -> bool:
    """Whether every query head and row of a KV group reads the same
    block-mask row (so a packed tile's union is that row): no block mask,
    or one with head dim 1 and one query block."""
    if block_mask is None:
        return True
    num = block_mask.kv_num_blocks
    return num.shape[1] == 1 and num.shape[2] == 1


def resolve(options: CompileOptions, q, k, block_mask, row_stats: bool = False) -> CompileOptions:
    """``options`` with ``decode`` and ``pack_heads`` decided for this call
    (both in the kernel's key). ``row_stats``: the call has attention sinks
    or asks for max_scores, which the decode path does not merge across KV
    ranges yet: it runs the prefill kernel (forcing decode is an error)."""
    if row_stats:
        if options.decode or options.pack_heads:
            raise ValueError("kernel_options decode/pack_heads: the decode path does not take "
                             "attention sinks or max_scores yet; leave them unset")
        return replace(options, decode=False, pack_heads=False)
    if options.decode is not None and options.pack_heads is not None:
        if options.pack_heads and not rows_agree(block_mask):
            raise ValueError(_PACK_ERROR)
        return options
    if options.target != "cpu":
        return replace(options, decode=False, pack_heads=False)
    decode = options.decode if options.decode is not None else q.shape[2] <= DECODE_MAX_ROWS
    agree = rows_agree(block_mask)
    pack = options.pack_heads
    if pack is None:
        pack = decode and q.shape[1] > k.shape[1] and agree
    elif pack and not agree:
        raise ValueError(_PACK_ERROR)
    if not decode:
        return replace(options, decode=False, pack_heads=False)
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
