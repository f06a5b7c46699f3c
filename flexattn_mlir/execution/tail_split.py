"""Tail splits: a dense GPU attention whose Q tiles leave a last, nearly
empty wave (``T mod SMs`` tiles on a grid of one CTA per tile) runs as two
kernels (docs/gpu-pipeline.md §3, "Wave quantization"): the main kernel on
the grid's first ``T - r`` tiles (``CompileOptions.tiles``; persistent
CTAs, one per SM, each running ``(T - r) / SMs`` whole rounds), and the same
kernel compiled with ``splits`` (each of the last ``r`` tiles' KV blocks in
S ranges, f32 partial rows merged by their lse) on a second stream, which
the hardware runs on the SMs the main grid leaves idle at its end
(flexattn_runtime.splitkv.TailSplit).

The last ``r`` tiles of the grid's order are the first ``r`` Q tiles of the
last (batch, head) (flexattn-map-to-grid: a head's tiles adjacent, its last
Q tile first), so the tail kernel runs on views of those rows, as batch 0
and head 0: a tail split is planned only for attention whose result does
not depend on b and h (:func:`dense`: no score_mod, mask_mod, block mask,
sinks or max_scores) on the own kernel of a target that takes it
(``Target.tail_split``: sm_90a's TMA + wgmma kernel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..compiler import targets
from ..compiler.options import CompileOptions
from ..compiler.spec import AttentionSpec, BufferType

__all__ = ["TailPlan", "plan", "dense", "MAX_TAIL_SHARE", "MIN_KV_TILES_PER_SPLIT"]

#: The tail is at most this share of a wave (r <= SMs / 8; measured at r = 4
#: of 132, bench/wave_tail.py).
MAX_TAIL_SHARE = 8
#: Each KV range holds at least this many KV tiles.
MIN_KV_TILES_PER_SPLIT = 2


@dataclass(frozen=True)
class TailPlan:
    """``main``: the main kernel's options (``tiles`` = T - r, persistent
    CTAs); ``tail``: the
    tail kernel's options (``splits`` = S) and spec (q ``[1, 1, rows, D]``,
    k/v ``[1, 1, N, D]``, no lse: the merge makes it); ``rows``: the
    tail's query rows (r Q tiles from row 0 of the last batch and head)."""

    main: CompileOptions
    tail: CompileOptions
    tail_spec: AttentionSpec
    rows: int


def dense(spec: AttentionSpec) -> bool:
    """Whether the attention of ``spec`` reads nothing but q, k, v (no mods,
    captured tensors, block mask, sinks, max_scores): its rows do not depend
    on their batch and head indices."""
    return (spec.score_mod is None and spec.mask_mod is None and not spec.captures
            and spec.kv_num_blocks is None and spec.sinks is None and not spec.return_max
            and spec.index_report is None)


def plan(spec: AttentionSpec, options: CompileOptions, sms: int) -> TailPlan | None:
    """The tail split of (spec, options) on a device of ``sms`` SMs, or None:
    when the attention is not :func:`dense`, the target takes no tail split
    (``Target.tail_split``) or runs another kernel (the general one, the
    decode or dynamic-shape kernel), the options already set ``tiles`` or
    ``splits``, or the grid's last wave is not nearly empty (``0 < T mod
    sms <= sms / 8`` tiles, all in the last head, and at least two KV tiles
    per range). The main kernel runs persistent CTAs, ``sms`` of them
    (``options.persistent`` where set): its tiles are whole rounds of them."""
    t = targets.target(options.target)
    if not (t.is_gpu and t.tail_split and dense(spec)) or options.dynamic or options.decode:
        return None
    if options.tiles or options.splits:
        return None
    q, k, v = spec.q.shape, spec.k.shape, spec.v.shape
    dtype = _DTYPES.get(spec.q.elem)
    if dtype is None or t.kernel(q[3], v[3], dtype) is not t:
        return None
    q_tiles = math.ceil(q[2] / options.tile_q)
    tiles = q[0] * q[1] * q_tiles
    r = tiles % sms
    if tiles < sms or r == 0 or r * MAX_TAIL_SHARE > sms or r >= q_tiles:
        return None
    kv_tile = options.tile_kv or t.kv_tile(max(q[3], v[3]), dtype)
    splits = min(sms // r, math.ceil(k[2] / kv_tile) // MIN_KV_TILES_PER_SPLIT)
    if splits < 2:
        return None
    rows = r * options.tile_q
    tail_spec = replace(spec, q=BufferType((1, 1, rows, q[3]), spec.q.elem),
                        k=BufferType((1, 1, k[2], k[3]), spec.k.elem),
                        v=BufferType((1, 1, v[2], v[3]), spec.v.elem),
                        return_lse=False, name=f"{spec.name}_tail")
    # The main kernel's T - r tiles are whole rounds of `sms` persistent CTAs.
    return TailPlan(main=replace(options, tiles=tiles - r, persistent=options.persistent or sms),
                    tail=replace(options, splits=splits, persistent=0),
                    tail_spec=tail_spec, rows=rows)


_DTYPES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}
