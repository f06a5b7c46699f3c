"""Argument checks shared by the entry points: each error names the argument
and says what was expected, before anything is compiled or launched."""

from __future__ import annotations

import torch

from ..compiler.cache import LRU
from ..compiler.targets import target
from ..masks.block_mask import agrees_with_mask_mod, block_size
from ..masks.intervals import reads_batch_head

__all__ = ["check_qkv", "check_block_mask", "check_mask_broadcast",
           "check_captures", "check_gpu_support", "check_sinks"]

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _tensor(name: str, t, rank: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != rank:
        raise ValueError(f"{name} must be {rank}-D {layout}, got shape {tuple(t.shape)}")


def check_qkv(query, key, value, enable_gqa: bool) -> None:
    _tensor("query", query, 4, "[B, Hq, M, D]")
    _tensor("key", key, 4, "[B, Hkv, N, D]")
    _tensor("value", value, 4, "[B, Hkv, N, Dv]")
    if query.dtype not in _FLOATS:
        raise TypeError(f"query dtype must be float32, float16 or bfloat16, got {query.dtype}")
    for name, t in (("key", key), ("value", value)):
        if t.dtype != query.dtype:
            raise TypeError(f"{name} dtype {t.dtype} must match query dtype {query.dtype}")
        if t.device != query.device:
            raise ValueError(f"{name} is on {t.device} but query is on {query.device}")
    (b, hq, _, d), (bk, hkv, n, dk), (bv, hv, nv, dv) = query.shape, key.shape, value.shape
    if d == 0 or dv == 0:
        raise ValueError(f"query/value head dims must be positive, got D={d}, Dv={dv}")
    if bk not in (1, b) or bv not in (1, b):
        raise ValueError(f"key/value batch sizes ({bk}, {bv}) must each match query batch size "
                         f"{b} or be 1 (shared by every query batch)")
    if dk != d:
        raise ValueError(f"key head dim {dk} must match query head dim {d}")
    if hv != hkv or nv != n:
        raise ValueError(
            f"value [B, Hkv, N, Dv] = {tuple(value.shape)} must match key's Hkv={hkv} and N={n}"
        )
    if hkv == 0 or hq % hkv:
        raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    if hq != hkv and not enable_gqa:
        raise ValueError(
            f"query has {hq} heads but key/value have {hkv}: pass enable_gqa=True "
            f"for grouped-query attention"
        )


def check_sinks(sinks, query) -> None:
    """Attention-sink logits: one per query head, floating point, on the
    query's device."""
    if sinks is None:
        return
    _tensor("sinks", sinks, 1, "[Hq] (one logit per query head)")
    if not sinks.dtype.is_floating_point:
        raise TypeError(f"sinks must be a floating-point tensor, got {sinks.dtype}")
    if sinks.shape[0] != query.shape[1]:
        raise ValueError(f"sinks must hold one logit per query head: shape ({query.shape[1]},), "
                         f"got {tuple(sinks.shape)}")
    if sinks.device != query.device:
        raise ValueError(f"sinks is on {sinks.device} but query is on {query.device}")


_MASK_FIELDS = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices")
_MASK_MEMO_SIZE = 64
# (storage, version, shape of each mask tensor; q/k geometry) -> (visited
# block count, the tensors, held so their storage cannot be reused).
_checked_masks = LRU(_MASK_MEMO_SIZE)


def check_block_mask(block_mask, query, key) -> int:
    """A BlockMask-like object (ours or torch's) fits q/k and is in range;
    returns the number of KV blocks it visits. Memoised on the mask tensors'
    storage and version counter: a mask reused unchanged across calls is
    checked once (the checks synchronise with the GPU), and any in-place
    change to it is checked again."""
    tensors = [getattr(block_mask, n, None) for n in _MASK_FIELDS]
    if not all(t is None or isinstance(t, torch.Tensor) for t in tensors):
        return _check_block_mask(block_mask, query, key)  # raises, naming the field
    memo = (tuple(None if t is None else (t.data_ptr(), t._version, tuple(t.shape), t.dtype,
                                          t.device) for t in tensors),
            tuple(query.shape), query.device, key.shape[2], block_mask.BLOCK_SIZE,
            tuple(getattr(block_mask, "seq_lengths", None) or ()))
    hit = _checked_masks.get(memo)
    if hit is not None:
        return hit[0]
    visited = _check_block_mask(block_mask, query, key)
    _checked_masks[memo] = (visited, tensors)
    return visited


def _check_block_mask(block_mask, query, key) -> int:
    b, hq, m, _ = query.shape
    n = key.shape[2]
    seq = getattr(block_mask, "seq_lengths", None)
    if seq is not None and tuple(seq) != (m, n):
        raise ValueError(
            f"block_mask was created for (Q_LEN, KV_LEN) = {tuple(seq)} but query/key "
            f"have ({m}, {n})"
        )
    bq, bkv = block_size(block_mask.BLOCK_SIZE)
    qb, kb = -(-m // bq), -(-n // bkv)
    pairs = [("kv_num_blocks", "kv_indices")]
    if getattr(block_mask, "full_kv_num_blocks", None) is not None:
        pairs.append(("full_kv_num_blocks", "full_kv_indices"))
    visited = 0
    for num_name, idx_name in pairs:
        num, idx = getattr(block_mask, num_name), getattr(block_mask, idx_name)
        for name, t, rank in ((num_name, num, 3), (idx_name, idx, 4)):
            _tensor(f"block_mask.{name}", t, rank, "")
            if t.dtype != torch.int32:
                raise TypeError(f"block_mask.{name} must be int32, got {t.dtype}")
            if t.device != query.device:
                raise ValueError(f"block_mask.{name} is on {t.device} but query is on {query.device}")
            if t.shape[0] not in (1, b) or t.shape[1] not in (1, hq):
                raise ValueError(
                    f"block_mask.{name} batch/head dims {tuple(t.shape[:2])} must be 1 or "
                    f"({b}, {hq})"
                )
            if t.shape[2] != qb:
                raise ValueError(
                    f"block_mask.{name} covers {t.shape[2]} query blocks; query length {m} "
                    f"needs {qb} blocks of {bq}"
                )
        if idx.shape[3] != kb:
            raise ValueError(
                f"block_mask.{idx_name} has {idx.shape[3]} KV block slots; key length {n} "
                f"needs {kb} blocks of {bkv}"
            )
        if tuple(num.shape) != tuple(idx.shape[:3]):
            raise ValueError(
                f"block_mask.{num_name} shape {tuple(num.shape)} must equal the first three "
                f"dims of block_mask.{idx_name} {tuple(idx.shape)}"
            )
        if num.numel() and (int(num.min()) < 0 or int(num.max()) > idx.shape[3]):
            raise ValueError(
                f"block_mask.{num_name} must lie in [0, {idx.shape[3]}], got "
                f"[{int(num.min())}, {int(num.max())}]"
            )
        # Only the listed slots are ever read; they must name real KV blocks.
        slots = torch.arange(idx.shape[3], device=idx.device)
        used = idx[slots < num.unsqueeze(-1)]
        if used.numel() and (int(used.min()) < 0 or int(used.max()) >= kb):
            raise ValueError(
                f"block_mask.{idx_name} lists KV blocks in [{int(used.min())}, {int(used.max())}], "
                f"outside [0, {kb}) for key length {n} and KV block size {bkv}"
            )
        visited += int(num.sum())
    return visited


def check_mask_broadcast(block_mask, query, mask_mod) -> None:
    """A block mask made for B=None / H=None (batch or head dim 1) holds one
    pattern for every batch / head: wrong for the others when mask_mod (its
    IR, a ModIR) reads b / h, so such a call is refused."""

    if mask_mod is None:
        return
    reads = reads_batch_head(mask_mod)
    fn = getattr(block_mask, "mask_mod", None)
    label = f"mask_mod {getattr(fn, '__name__', None) or type(fn).__name__!r}" if fn else "mask_mod"
    tensors = [getattr(block_mask, n, None) for n in _MASK_FIELDS]
    for dim, index, arg, what, whats in ((0, "b", "B", "batch", "batches"),
                                         (1, "h", "H", "head", "heads")):
        n = query.shape[dim]
        if not reads[dim] or n == 1 or all(t is None or t.shape[dim] != 1 for t in tensors):
            continue
        raise ValueError(
            f"block_mask is shared by every {what} (its {what} dim is 1: made with {arg}=None "
            f"or {arg}=1) but its {label} reads {index}, so it lists {index}=0's blocks for "
            f"all {n} {whats} of the query, skipping blocks the others need. Create it for "
            f"the query's {whats}: create_block_mask(mask_mod, B, H, ...) with {arg}={n}")


def check_captures(captures, device) -> None:
    for i, t in enumerate(captures):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"captures[{i}] must be a torch.Tensor, got {type(t).__name__}")
        if t.device != device:
            raise ValueError(f"captures[{i}] is on {t.device} but query is on {device}")


def check_gpu_support(query, value, block_mask, options) -> None:
    """What the target's kernel handles (flexattn_mlir.compiler.targets), checked
    before compiling: element types, head dims, Q and KV block sizes, and the
    shared memory of the mma.sync kernel's tiles."""

    t = target(options.target)
    names = " or ".join(t.dtypes)
    dtype = str(query.dtype).replace("torch.", "")
    if dtype not in t.dtypes:
        raise TypeError(
            f"query dtype {query.dtype} is not supported by the {options.target} kernel: "
            f"use {names}"
        )
    lo, hi = min(t.head_dims), max(t.head_dims)
    for name, d in (("query", query.shape[-1]), ("value", value.shape[-1])):
        if d not in t.head_dims:
            raise ValueError(f"{name} head dim {d} is not supported by the {options.target} "
                             f"kernel: it handles multiples of 8 from {lo} to {hi}")
    if not options.decode and not t.takes_q_tile(options.tile_q, query.shape[-1],
                                                 value.shape[-1], dtype, options.dynamic):
        raise ValueError(
            f"kernel_options BLOCK_M (CompileOptions.tile_q) = {options.tile_q} is not "
            f"supported by the "
            f"{options.target} kernel of {dtype} head dims D={query.shape[-1]}, "
            f"Dv={value.shape[-1]}{' (dynamic shapes)' if options.dynamic else ''}: it "
            f"takes {t.q_block}" + (f", or {t.wide_q_tile} at bfloat16/float16 D = Dv = "
                                    f"{t.wide_q_head_dim} with static shapes"
                                    if t.wide_q_tile else ""))
    # (A mask the ops rebuilt from their lists carries no mask_mod: the call
    # that chose the tile checked the user's mask.)
    if (block_mask is not None and options.tile_q == t.wide_q_tile
            and hasattr(block_mask, "mask_mod")
            and block_size(block_mask.BLOCK_SIZE)[0] % options.tile_q
            and not agrees_with_mask_mod(block_mask, query.shape[2], value.shape[2])):
        raise ValueError(
            f"kernel_options BLOCK_M (CompileOptions.tile_q) = {options.tile_q}: the kernel "
            f"reads the block "
            f"mask's {block_size(block_mask.BLOCK_SIZE)[0]}-row blocks as each tile's union and "
            f"applies mask_mod to it, which needs lists that agree with mask_mod (full blocks "
            f"keep every element, unlisted blocks none, as create_block_mask makes them); "
            f"this mask's do not (mask_mod reassigned, or lists made by hand): leave BLOCK_M "
            f"unset (the {t.q_block}-row kernel reads the mask as it is)")
    if block_mask is not None:
        bq, bkv = block_size(block_mask.BLOCK_SIZE)
        if bq % t.q_block or bkv not in t.kv_blocks:
            raise ValueError(
                f"block_mask.BLOCK_SIZE {tuple((bq, bkv))} is not supported by the "
                f"{options.target} kernel: the Q block must be a multiple of {t.q_block} and "
                f"the KV block {' or '.join(str(b) for b in t.kv_blocks)}"
            )
    # The mma.sync kernel's rings (Q, then K and V per stage) must fit a
    # block's shared memory: large head dims need 64-column KV tiles.
    D, Dv = query.shape[-1], value.shape[-1]
    kernel = t.kernel(D, Dv, dtype, dynamic=options.dynamic)
    if t.general and kernel is t:
        return  # the target's own kernel (sm_90a wgmma: D = Dv in 64, 128)
    fixed = block_mask is not None
    kv = options.tile_kv or kernel.kv_tile(max(D, Dv), dtype, dynamic=options.dynamic)
    if fixed:
        # A mask's KV block is the tile, or (block_tiles) walked in tiles
        # that divide it (pipeline.make_tiled).
        block = block_size(block_mask.BLOCK_SIZE)[1]
        fixed = not (kernel.block_tiles and block % kv == 0)
        kv = block if fixed else kv
    need = kernel.ring_bytes(D, Dv, kv, options.stages, dtype)
    if need > t.max_shared_per_block:
        fix = ("a block mask with BLOCK_SIZE=(128, 64)" if fixed and kv > 64
               else "bfloat16 or float16 (float32 tiles take twice the bytes)"
               if dtype == "float32" else "fewer stages or a smaller tile_kv")
        raise ValueError(
            f"{dtype} head dims D={D}, Dv={Dv} with {kv}-column KV tiles and "
            f"{options.stages} stages "
            f"need {need} bytes of shared memory on {options.target}, more than the "
            f"{t.max_shared_per_block} a block has: use {fix}"
            + ("" if fixed or kernel.block_tiles else " (block_mask.BLOCK_SIZE fixes the KV tile)"))
