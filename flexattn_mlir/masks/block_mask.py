"""A torch-compatible BlockMask, and create_block_mask through our compiler.

:func:`create_block_mask` captures the mask_mod (flexattn_mlir.frontend),
classifies each (b, h, q block, kv block) as empty, partial or full, and
builds torch's layout from that. The classification runs in two steps:

1. *Interval analysis* (sound): the mask's IR is evaluated over integer
   intervals, one per block (q and kv range over the block, b and h are
   exact). A block whose mask is provably all-true or all-false is decided
   without evaluating a single element (causal, sliding window, prefix LM,
   ... leave only the blocks along their boundaries undecided).
2. A *JIT-compiled kernel* generated as MLIR evaluates the undecided blocks
   element by element through ``flexattn.apply_mods`` (lowered with
   ``flexattn-inline-mods``), row by row, stopping at the first row that
   shows the block is partial. Rows of blocks are split across threads.

A mask whose IR never reads ``b`` (``h``) is classified for one batch
(head) and broadcast, as its blocks are the same for all of them.

Semantics follow torch exactly: elements past Q_LEN / KV_LEN count as
masked out (torch pads with False), so a clipped edge block is never full;
listed blocks come first in ascending order, the others follow ascending
(torch's stable descending argsort).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import itertools
import logging
import operator
import threading
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from flexattn_runtime.masks import ordered_to_dense

from mlir import ir
from mlir.dialects import arith, func, memref, scf
from mlir.execution_engine import ExecutionEngine

from .. import _native, frontend
from ..compiler.backends.cpu import make_llvm, memref_descriptor
from ..compiler.cache import LRU
from ..compiler.mods import ModIR, parse
from ..dialects import flexattn as fa
from ..compiler.options import CompileOptions
from ..compiler.pipeline import CompilationError, run_pipeline
from . import index_checks
from .combinators import and_masks, noop_mask, or_masks
from .intervals import decide_blocks, reads_batch_head

__all__ = [
    "BlockMask",
    "create_block_mask",
    "and_masks",
    "or_masks",
    "noop_mask",
    "kernel_count",
    "block_size",
]

log = logging.getLogger(__name__)

_DEFAULT_SPARSE_BLOCK_SIZE = 128
EMPTY, PARTIAL, FULL, UNKNOWN = 0, 1, 2, 3
EVERY_ELEMENT = 4  # unknown, and the kernel evaluates all its elements

# Number of create_block_mask kernels compiled by this process.
kernel_count = 0


# ---------------------------------------------------------------------------
# Layout helpers (torch's semantics)
# ---------------------------------------------------------------------------


def block_size(bs) -> tuple[int, int]:
    """A BlockMask's BLOCK_SIZE (an int or a pair) as (Q block, KV block)."""
    return (int(bs), int(bs)) if isinstance(bs, int) else (int(bs[0]), int(bs[1]))


def _dense_to_ordered(dense) -> tuple[torch.Tensor, torch.Tensor]:
    """(num, indices) of a 0/1 block matrix (a tensor or numpy array): the set
    columns in ascending order, then the unset ones ascending (= torch's
    stable descending argsort). numpy: single-threaded small ops."""
    device = dense.device if isinstance(dense, torch.Tensor) else torch.device("cpu")
    d = np.ascontiguousarray(dense.cpu().numpy() if isinstance(dense, torch.Tensor) else dense,
                             dtype=np.int32)
    num = d.sum(axis=-1, dtype=np.int32)
    csum = np.cumsum(d, axis=-1, dtype=np.int32)
    j = np.arange(d.shape[-1], dtype=np.int32)
    pos = np.where(d != 0, csum - 1, num[..., None] + j - csum)
    idx = np.empty_like(d)
    np.put_along_axis(idx, pos.astype(np.int64), np.broadcast_to(j, d.shape), axis=-1)
    return torch.from_numpy(num).to(device), torch.from_numpy(idx).to(device)


def _transpose_ordered(num, idx):
    dense = ordered_to_dense(num, idx, idx.shape[-1])
    return _dense_to_ordered(dense.transpose(-2, -1))


# ---------------------------------------------------------------------------
# BlockMask
# ---------------------------------------------------------------------------


class BlockMask:
    """Block-sparse mask in torch's layout (see
    ``torch.nn.attention.flex_attention.BlockMask``): ``kv_num_blocks``
    ``[B, H, Q_BLOCKS]`` counts the partial KV blocks listed first in
    ``kv_indices [B, H, Q_BLOCKS, KV_BLOCKS]``; ``full_kv_*`` list the blocks
    the mask keeps entirely; ``q_*`` / ``full_q_*`` are the transposed
    (per KV block) lists a backward pass uses."""

    _TENSOR_ATTRS = [
        "kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
        "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices",
    ]

    def __init__(
        self,
        seq_lengths: tuple[int, int],
        kv_num_blocks: torch.Tensor,
        kv_indices: torch.Tensor,
        full_kv_num_blocks: Optional[torch.Tensor],
        full_kv_indices: Optional[torch.Tensor],
        q_num_blocks: Optional[torch.Tensor],
        q_indices: Optional[torch.Tensor],
        full_q_num_blocks: Optional[torch.Tensor],
        full_q_indices: Optional[torch.Tensor],
        BLOCK_SIZE: tuple[int, int] = (_DEFAULT_SPARSE_BLOCK_SIZE, _DEFAULT_SPARSE_BLOCK_SIZE),
        mask_mod: Callable = noop_mask,
        captured_mask=None,
    ) -> None:
        if kv_indices.dim() < 2:
            raise RuntimeError("BlockMask must have at least 2 dimensions")
        if (full_kv_num_blocks is None) != (full_kv_indices is None):
            raise AssertionError("full_kv_num_blocks and full_kv_indices must be both provided or omitted")
        if (full_q_num_blocks is None) != (full_q_indices is None):
            raise AssertionError("full_q_num_blocks and full_q_indices must be both provided or omitted")
        self.seq_lengths = tuple(seq_lengths)
        self.kv_num_blocks = kv_num_blocks
        self.kv_indices = kv_indices
        self.full_kv_num_blocks = full_kv_num_blocks
        self.full_kv_indices = full_kv_indices
        self.q_num_blocks = q_num_blocks
        self.q_indices = q_indices
        self.full_q_num_blocks = full_q_num_blocks
        self.full_q_indices = full_q_indices
        self.BLOCK_SIZE = tuple(BLOCK_SIZE)
        self.mask_mod = mask_mod
        # torch 2.13's deterministic-backward metadata: never computed here.
        self.dq_write_order = None
        self.dq_write_order_full = None
        self.dq_kv_order = None
        self.dq_kv_order_spt = None
        #: The frontend's CapturedMod of mask_mod, when create_block_mask made it.
        self.captured_mask = captured_mask

    @classmethod
    def from_kv_blocks(
        cls,
        kv_num_blocks: torch.Tensor,
        kv_indices: torch.Tensor,
        full_kv_num_blocks: Optional[torch.Tensor] = None,
        full_kv_indices: Optional[torch.Tensor] = None,
        BLOCK_SIZE: Union[int, tuple[int, int]] = _DEFAULT_SPARSE_BLOCK_SIZE,
        mask_mod: Optional[Callable] = None,
        seq_lengths: Optional[tuple[int, int]] = None,
        compute_q_blocks: bool = True,
    ) -> "BlockMask":
        """From the KV-side lists; the Q-side lists are derived (as torch)."""
        if kv_indices.dim() < 2:
            raise RuntimeError("BlockMask must have at least 2 dimensions")
        if (full_kv_num_blocks is None) != (full_kv_indices is None):
            raise AssertionError("full_kv_num_blocks and full_kv_indices must be both provided or omitted")
        q_num = q_idx = full_q_num = full_q_idx = None
        for num_name, idx_name, num, idx in (
                ("kv_num_blocks", "kv_indices", kv_num_blocks, kv_indices),
                ("full_kv_num_blocks", "full_kv_indices", full_kv_num_blocks, full_kv_indices)):
            if num is None or num.device.type == "meta":
                continue
            listed = idx[torch.arange(idx.shape[-1], device=idx.device) < num.unsqueeze(-1)]
            if listed.numel() and (int(listed.min()) < 0 or int(listed.max()) >= idx.shape[-1]):
                raise ValueError(
                    f"{idx_name} lists KV blocks in [{int(listed.min())}, {int(listed.max())}], "
                    f"outside [0, {idx.shape[-1]}) (the {idx_name} width)")
        if compute_q_blocks:
            q_num, q_idx = _transpose_ordered(kv_num_blocks, kv_indices)
            if full_kv_num_blocks is not None:
                full_q_num, full_q_idx = _transpose_ordered(full_kv_num_blocks, full_kv_indices)
        BLOCK_SIZE = block_size(BLOCK_SIZE)
        if seq_lengths is None:
            seq_lengths = (kv_indices.shape[-2] * BLOCK_SIZE[0], kv_indices.shape[-1] * BLOCK_SIZE[1])
        return cls(seq_lengths, kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices,
                   q_num, q_idx, full_q_num, full_q_idx, BLOCK_SIZE,
                   mask_mod if mask_mod is not None else noop_mask)

    @classmethod
    def from_torch(cls, bm) -> "BlockMask":
        """A view of a ``torch.nn.attention.flex_attention.BlockMask`` (the
        tensors are shared, not copied)."""
        if isinstance(bm, BlockMask):
            return bm
        return cls(tuple(bm.seq_lengths), *(getattr(bm, a) for a in cls._TENSOR_ATTRS),
                   BLOCK_SIZE=tuple(bm.BLOCK_SIZE), mask_mod=bm.mask_mod)

    def to_torch(self):
        """The same mask as a torch BlockMask (tensors shared)."""
        from torch.nn.attention.flex_attention import BlockMask as TorchBlockMask

        return TorchBlockMask(self.seq_lengths, *(getattr(self, a) for a in self._TENSOR_ATTRS),
                              BLOCK_SIZE=self.BLOCK_SIZE, mask_mod=self.mask_mod)

    def as_tuple(self, flatten: bool = True) -> tuple[Any, ...]:
        """torch 2.13's tuple: seq lengths, the 8 tensors, the 4 dq fields
        (None here), BLOCK_SIZE, mask_mod."""
        block_size = tuple(self.BLOCK_SIZE) if flatten else (self.BLOCK_SIZE,)
        seq_lengths = tuple(self.seq_lengths) if flatten else (self.seq_lengths,)
        return (
            *seq_lengths,
            *(getattr(self, a) for a in self._TENSOR_ATTRS),
            self.dq_write_order, self.dq_write_order_full, self.dq_kv_order, self.dq_kv_order_spt,
            *block_size,
            self.mask_mod,
        )

    @property
    def shape(self) -> tuple[int, ...]:
        *batch_dims, _, _ = self.kv_indices.shape
        return tuple(batch_dims) + tuple(self.seq_lengths)

    def numel(self) -> int:
        return functools.reduce(operator.mul, self.shape, 1)

    def sparsity(self) -> float:
        """Percentage of blocks that are skipped (not computed)."""
        computed = self.kv_num_blocks.sum()
        if self.full_kv_num_blocks is not None:
            computed = computed + self.full_kv_num_blocks.sum()
        computed_size = computed.item() * self.BLOCK_SIZE[0] * self.BLOCK_SIZE[1]
        return 100 * (1 - computed_size / self.numel())

    def to_dense(self) -> torch.Tensor:
        """The int32 [.., Q_BLOCKS, KV_BLOCKS] matrix of visited blocks."""
        cols = self.kv_indices.shape[-1]
        dense = ordered_to_dense(self.kv_num_blocks, self.kv_indices, cols)
        if self.full_kv_num_blocks is not None:
            dense = dense | ordered_to_dense(self.full_kv_num_blocks, self.full_kv_indices,
                                              self.full_kv_indices.shape[-1])
        return dense

    def to_string(self, grid_size: Union[int, tuple[int, int]] = (20, 20), limit: int = 4) -> str:
        """The block pattern: █ full, ░ partial, blank empty (as torch draws it)."""
        dense_mask = self.to_dense()
        *batch_dims, num_rows, num_cols = dense_mask.shape
        if isinstance(grid_size, int):
            max_rows = max_cols = grid_size
        elif grid_size == -1:
            max_rows, max_cols = num_rows, num_cols
        else:
            max_rows, max_cols = grid_size

        def cdiv(a, b):
            return (a + (b - 1)) // b

        def block_vis(*batch_idx):
            vis = f"{batch_idx}\n"
            row_step = max(1, cdiv(num_rows, max_rows))
            col_step = max(1, cdiv(num_cols, max_cols))
            cur = dense_mask
            for i in batch_idx:
                cur = cur[i]
            for r in range(0, num_rows, row_step):
                for c in range(0, num_cols, col_step):
                    frac = cur[r:r + row_step, c:c + col_step].float().mean().item()
                    vis += ("█" if frac == 1 else " " if frac == 0 else "░") * 2
                vis += "\n"
            return vis

        out = []
        for i, batch_idx in enumerate(itertools.product(*[range(n) for n in batch_dims])):
            if i == limit:
                out.append("...")
                out.append("To print out more, set BlockMask.to_string(limit=N)")
                out.append("You can also index (BlockMask[batch, head]) to choose a specific batch or head")
                break
            out.append(block_vis(*batch_idx))
        return "\n".join(out)

    def __str__(self) -> str:
        return (f"BlockMask(shape={self.shape}, sparsity={self.sparsity():.2f}%, \n"
                f"{self.to_string().strip()}\n)")

    def __repr__(self) -> str:
        def shape_or_none(x):
            return x.shape if x is not None else None

        name = getattr(self.mask_mod, "__name__", self.mask_mod)
        return (
            "BlockMask(\n"
            f"    kv_num_blocks={self.kv_num_blocks.shape},\n"
            f"    kv_indices={self.kv_indices.shape},\n"
            f"    full_kv_num_blocks={shape_or_none(self.full_kv_num_blocks)},\n"
            f"    full_kv_indices={shape_or_none(self.full_kv_indices)},\n"
            f"    q_num_blocks={shape_or_none(self.q_num_blocks)},\n"
            f"    q_indices={shape_or_none(self.q_indices)},\n"
            f"    full_q_num_blocks={shape_or_none(self.full_q_num_blocks)},\n"
            f"    full_q_indices={shape_or_none(self.full_q_indices)},\n"
            f"    BLOCK_SIZE={self.BLOCK_SIZE},\n"
            f"    shape={self.shape},\n"
            f"    sparsity={self.sparsity():.2f}%,\n"
            f"    mask_mod={name}\n"
            ")"
        )

    def __getitem__(self, index) -> "BlockMask":
        """Index the batch / head / query-block dims, as torch does."""
        index = (index,) if not isinstance(index, tuple) else index
        padded = (*index, slice(None), slice(None), slice(None))[:3]
        sizes = self.kv_num_blocks.shape[:3]
        index = tuple(
            (slice(i + n, i + n + 1) if -n <= i < 0 else slice(i, i + 1)) if isinstance(i, int) else i
            for i, n in zip(padded, sizes)
        )
        full = (None, None)
        if self.full_kv_num_blocks is not None:
            full = (self.full_kv_num_blocks[index], self.full_kv_indices[index])
        return BlockMask.from_kv_blocks(
            self.kv_num_blocks[index], self.kv_indices[index], *full,
            BLOCK_SIZE=self.BLOCK_SIZE, mask_mod=self.mask_mod, seq_lengths=self.seq_lengths,
            compute_q_blocks=self.q_indices is not None,
        )

    def to(self, device) -> "BlockMask":
        moved = [None if t is None else t.to(device) for t in (getattr(self, a) for a in self._TENSOR_ATTRS)]
        return BlockMask(self.seq_lengths, *moved, BLOCK_SIZE=self.BLOCK_SIZE,
                         mask_mod=self.mask_mod, captured_mask=self.captured_mask)


# ---------------------------------------------------------------------------
# create_block_mask
# ---------------------------------------------------------------------------


def create_block_mask(
    mask_mod: Callable,
    B: Optional[int],
    H: Optional[int],
    Q_LEN: int,
    KV_LEN: int,
    device: Union[str, torch.device, None] = None,
    BLOCK_SIZE: Union[int, tuple[int, int]] = _DEFAULT_SPARSE_BLOCK_SIZE,
    _compile: bool = False,
    separate_full_blocks: bool = True,
    compute_dq_write_order: bool = False,
    dq_kv_order: bool = True,
    *,
    analyze: bool = True,
    num_threads: Optional[int] = None,
) -> BlockMask:
    """torch's ``create_block_mask``, evaluated by the flexattn compiler.

    ``mask_mod`` is a Python mask_mod (captured with the frontend) or a
    :class:`~flexattn_mlir.frontend.CapturedMod`. ``B`` / ``H`` of None give
    size-1 (broadcast) dims; a mask_mod that reads ``b`` / ``h`` needs the
    real ``B`` / ``H`` (a ValueError otherwise: its blocks differ per batch /
    head). ``analyze=False`` skips the interval analysis
    (every block is then evaluated element by element). The signature is
    torch's: ``device`` None means torch's default device; ``_compile`` is
    accepted and ignored (the mask is always compiled here), as are the
    backward-pass ordering flags (no backward pass yet)."""
    broadcast_b, broadcast_h = B is None, H is None
    B = 1 if B is None else int(B)
    H = 1 if H is None else int(H)
    Q_LEN, KV_LEN = int(Q_LEN), int(KV_LEN)
    bq, bkv = block_size(BLOCK_SIZE)
    for name, v in (("B", B), ("H", H), ("Q_LEN", Q_LEN), ("KV_LEN", KV_LEN), ("Q block size", bq),
                    ("KV block size", bkv)):
        if v <= 0:
            raise ValueError(f"create_block_mask: {name} must be positive, got {v}")
    if max(Q_LEN, KV_LEN, B, H) >= 2**31:
        raise ValueError("create_block_mask: sizes must be below 2**31 (int32 indices)")
    if isinstance(mask_mod, frontend.CapturedMod):
        captured, python_mod = mask_mod, mask_mod.fn or noop_mask
        if captured.kind != "mask":
            raise TypeError("create_block_mask needs a mask_mod, got a captured score_mod")
    else:
        captured, python_mod = frontend.capture_mask_mod(mask_mod), mask_mod
    reads = reads_batch_head(captured.ir)
    for index, name, broadcast, read in (("b", "B", broadcast_b, reads[0]),
                                         ("h", "H", broadcast_h, reads[1])):
        if broadcast and read:
            raise ValueError(
                f"create_block_mask: mask_mod {captured.name!r} reads {index} (the "
                f"{'batch' if index == 'b' else 'head'} index), but {name}=None makes one "
                f"mask shared by every {'batch' if index == 'b' else 'head'}: it would hold "
                f"{index}=0's pattern only. Pass {name}=<the query's "
                f"{'batch size' if index == 'b' else 'number of heads'}> ({name}=1 if there "
                f"is one)")

    device = torch.get_default_device() if device is None else device
    threads = num_threads or torch.get_num_threads()
    tensors = _classify_and_order(captured, B, H, Q_LEN, KV_LEN, bq, bkv,
                                  separate_full_blocks, analyze, threads)
    if torch.device(device) != torch.device("cpu"):
        tensors = [None if t is None else t.to(device) for t in tensors]
    return BlockMask((Q_LEN, KV_LEN), *tensors, BLOCK_SIZE=(bq, bkv), mask_mod=python_mod,
                     captured_mask=captured)


_consistent_memo = LRU(64)


def agrees_with_mask_mod(block_mask, q_len: int, kv_len: int) -> bool:
    """Whether ``block_mask``'s lists are the ones its mask_mod gives, as
    torch's create_block_mask makes them: a block listed as full keeps every
    element, a block not listed keeps none (a partial one may be anything).
    Then a kernel may read several query blocks' lists as their union and
    apply mask_mod to it (masks from create_block_mask always agree; a
    mask_mod reassigned since, or hand-made lists, may not, and torch's
    rule, mask_mod skipped on full blocks, would differ). The mask_mod is
    evaluated here on the CPU, once per mask (memoised on its tensors'
    storage and version counters); False where it cannot be (a mask_mod the
    frontend cannot capture)."""
    names = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices")
    tensors = [getattr(block_mask, n, None) for n in names]
    memo = (id(getattr(block_mask, "mask_mod", None)), tuple(None if t is None else (
        t.data_ptr(), t._version, tuple(t.shape), t.device) for t in tensors),
        block_size(block_mask.BLOCK_SIZE), q_len, kv_len)
    hit = _consistent_memo.get(memo)
    if hit is not None:
        return hit[0]
    result = _agrees(block_mask, q_len, kv_len)
    _consistent_memo[memo] = (result, getattr(block_mask, "mask_mod", None), tensors)
    return result


def _agrees(block_mask, q_len: int, kv_len: int) -> bool:
    # Without a mask_mod (noop) a partial block keeps every element, so only
    # lists that name every block agree.
    mask_mod = getattr(block_mask, "mask_mod", None) or noop_mask
    num, idx = block_mask.kv_num_blocks, block_mask.kv_indices
    b, h, _, cols = idx.shape
    try:
        ref = create_block_mask(mask_mod, b if b > 1 else None,
                                h if h > 1 else None, q_len, kv_len, device="cpu",
                                BLOCK_SIZE=block_mask.BLOCK_SIZE)
    except (CompilationError, ValueError, TypeError, IndexError, NotImplementedError) as err:
        # (a mask_mod the frontend cannot capture, or one whose reads the
        # attention call checks and reports itself)
        log.debug("block mask not checked against its mask_mod (%s): kept as it is", err)
        return False
    listed = ordered_to_dense(num.cpu(), idx.cpu(), cols).bool()
    full = torch.zeros_like(listed)
    if block_mask.full_kv_num_blocks is not None:
        full = ordered_to_dense(block_mask.full_kv_num_blocks.cpu(),
                                block_mask.full_kv_indices.cpu(), cols).bool()
    ref_any = ordered_to_dense(ref.kv_num_blocks, ref.kv_indices, cols).bool()
    ref_full = ordered_to_dense(ref.full_kv_num_blocks, ref.full_kv_indices, cols).bool()
    ref_any = (ref_any | ref_full).expand_as(listed)
    ref_full = ref_full.expand_as(listed)
    # Full blocks keep everything; unlisted blocks keep nothing.
    return bool((~full | ref_full).all()) and bool((listed | full | ~ref_any).all())


def _classify_and_order(captured, B, H, Q_LEN, KV_LEN, bq, bkv, separate_full_blocks,
                        analyze, threads) -> list:
    """The 8 tensors of the BlockMask of ``captured``, in BlockMask order.
    The bookkeeping is numpy: many small elementwise ops, which torch's
    intra-op threads only slow down (barriers; badly so on a loaded machine)."""
    # A mask that never reads b (h) is the same for every batch (head):
    # classify one and broadcast.
    uses_b, uses_h = reads_batch_head(captured.ir)
    shape = (B if uses_b else 1, H if uses_h else 1, -(-Q_LEN // bq), -(-KV_LEN // bkv))
    # Reads of captured tensors: proved in bounds, refused (IndexError), or
    # checked by the kernel (reported after it ran).
    checked = index_checks.annotate(None, captured.ir, (B, H, Q_LEN, KV_LEN), True)
    cls = np.full(shape, UNKNOWN, dtype=np.int8)
    captures = [c.detach().to("cpu").contiguous() for c in captured.captures]
    fault = np.True_
    if analyze:
        all_kept, none_kept, fault = decide_blocks(captured.ir, captures, shape,
                                                   (Q_LEN, KV_LEN), (bq, bkv), with_faults=True)
        # torch pads with False: a clipped edge block is never full.
        q0 = np.arange(shape[2]).reshape(1, 1, -1, 1) * bq
        k0 = np.arange(shape[3]).reshape(1, 1, 1, -1) * bkv
        whole = (q0 + bq <= Q_LEN) & (k0 + bkv <= KV_LEN)
        cls[all_kept & whole] = FULL
        cls[all_kept & ~whole] = PARTIAL
        cls[none_kept] = EMPTY
    if checked.report is not None:
        # A block where a read may be out of bounds is evaluated element by
        # element to its end (no early exit), so every read is checked.
        cls[(cls == UNKNOWN) & fault] = EVERY_ELEMENT
    _evaluate(checked, captures, cls, (Q_LEN, KV_LEN), (bq, bkv), threads)

    if separate_full_blocks:
        partial, full = cls == PARTIAL, cls == FULL
    else:
        partial, full = cls != EMPTY, None
    kv_num, kv_idx = _dense_to_ordered(partial)
    q_num, q_idx = _dense_to_ordered(np.swapaxes(partial, -2, -1))
    fkv_num = fkv_idx = fq_num = fq_idx = None
    if full is not None:
        fkv_num, fkv_idx = _dense_to_ordered(full)
        fq_num, fq_idx = _dense_to_ordered(np.swapaxes(full, -2, -1))
    tensors = [kv_num, kv_idx, fkv_num, fkv_idx, q_num, q_idx, fq_num, fq_idx]
    if (shape[0], shape[1]) != (B, H):
        tensors = [None if t is None else t.expand(B, H, *t.shape[2:]).contiguous()
                   for t in tensors]
    return tensors


# ---------------------------------------------------------------------------
# The element-evaluation kernel
# ---------------------------------------------------------------------------

_kernel_lock = threading.Lock()
#: Evaluation kernels this process keeps (each holds a JIT session).
KERNELS_SIZE = 64
_kernels = LRU(KERNELS_SIZE)  # (mask, shape, lengths, block) -> _MaskKernel


def _build_kernel(mask: ModIR, shape, lengths, block, name: str) -> ir.Module:
    """The evaluation kernel ``@name(cls, rows, *captures)``, built with the
    op builders in the current context: for each row (b, h, q block) in
    ``rows = [lo, hi)`` and each of its blocks still UNKNOWN or
    EVERY_ELEMENT in ``cls`` ([B, H, QB, KB] i8), it counts the kept
    elements row by row (``flexattn.apply_mods`` over the mask region),
    stopping early (not for EVERY_ELEMENT) once the block shows both kept
    and dropped elements, and stores EMPTY, PARTIAL or FULL."""
    B, H, QB, KB = shape
    Q, KV = lengths
    bq, bkv = block
    index, i8, i64, f32 = (ir.IndexType.get(), ir.IntegerType.get_signless(8),
                           ir.IntegerType.get_signless(64), ir.F32Type.get())
    ct = ir.IntegerType.get_signless(32 if bq * bkv < 2**31 else 64)  # element counts
    cls_t = ir.MemRefType.get([B, H, QB, KB], i8)
    cap_types = [ir.Type.parse(t) for t in mask.capture_types]
    module = ir.Module.create()
    with ir.InsertionPoint(module.body):
        fn = func.FuncOp(name, ([cls_t, ir.MemRefType.get([2], i64), *cap_types], []))
        fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
    entry = fn.add_entry_block()
    cls, rows, *caps = entry.arguments

    def const(typ, value):
        return arith.constant(typ, value)

    def tag(value):
        return const(i8, value)

    with ir.InsertionPoint(entry):
        c0, c1 = const(index, 0), const(index, 1)
        zero, full = const(ct, 0), const(ct, bq * bkv)
        lo, hi = (arith.index_cast(index, memref.load(rows, [c])) for c in (c0, c1))
        row_loop = scf.ForOp(lo, hi, c1)
        with ir.InsertionPoint(row_loop.body):
            row = row_loop.induction_variable
            qb, bh = arith.remui(row, const(index, QB)), arith.divui(row, const(index, QB))
            h, b = arith.remui(bh, const(index, H)), arith.divui(bh, const(index, H))
            q0 = arith.muli(qb, const(index, bq))
            q1 = arith.minui(arith.addi(q0, const(index, bq)), const(index, Q))
            kb_loop = scf.ForOp(c0, const(index, KB), c1)
            with ir.InsertionPoint(kb_loop.body):
                kb = kb_loop.induction_variable
                state = memref.load(cls, [b, h, qb, kb])
                todo = arith.cmpi(arith.CmpIPredicate.uge, state, tag(UNKNOWN))
                every = arith.cmpi(arith.CmpIPredicate.eq, state, tag(EVERY_ELEMENT))
                if_todo = scf.IfOp(todo)
                with ir.InsertionPoint(if_todo.then_block):
                    k0 = arith.muli(kb, const(index, bkv))
                    k1 = arith.minui(arith.addi(k0, const(index, bkv)), const(index, KV))
                    width = arith.index_cast(ct, arith.subi(k1, k0))
                    # (q, kept so far, seen so far) over the block's rows
                    loop = scf.WhileOp([index, ct, ct], [q0, zero, zero])
                    before = loop.before.blocks.append(index, ct, ct)
                    with ir.InsertionPoint(before):
                        q, kept, seen = before.arguments
                        inside = arith.cmpi(arith.CmpIPredicate.ult, q, q1)
                        mixed = arith.andi(arith.cmpi(arith.CmpIPredicate.ne, kept, zero),
                                           arith.cmpi(arith.CmpIPredicate.ne, kept, seen))
                        true = const(ir.IntegerType.get_signless(1), 1)
                        more = arith.ori(arith.xori(mixed, true), every)
                        scf.ConditionOp(arith.andi(inside, more), [q, kept, seen])
                    after = loop.after.blocks.append(index, ct, ct)
                    with ir.InsertionPoint(after):
                        q, kept, seen = after.arguments
                        kv_loop = scf.ForOp(k0, k1, c1, [kept])
                        with ir.InsertionPoint(kv_loop.body):
                            apply = fa.ApplyModsOp(f32, const(f32, 0.0), b, h, q,
                                                   kv_loop.induction_variable, caps, masked=True)
                            _, body = parse(mask)
                            body.append_to(apply.regions[1])
                            keep = arith.cmpf(arith.CmpFPredicate.UNE, apply.result,
                                              const(f32, float("-inf")))
                            scf.YieldOp([arith.addi(kv_loop.inner_iter_args[0],
                                                    arith.extui(ct, keep))])
                        scf.YieldOp([arith.addi(q, c1), kv_loop.results[0],
                                     arith.addi(seen, width)])
                    count = loop.results[1]
                    partial_or_full = arith.select(
                        arith.cmpi(arith.CmpIPredicate.eq, count, full), tag(FULL), tag(PARTIAL))
                    result = arith.select(arith.cmpi(arith.CmpIPredicate.eq, count, zero),
                                          tag(EMPTY), partial_or_full)
                    memref.store(result, cls, [b, h, qb, kb])
                    scf.YieldOp([])
                scf.YieldOp([])
            scf.YieldOp([])
        func.ReturnOp([])
    return module


class _MaskKernel:
    """The compiled evaluation kernel of one (mask, shape, block size)."""

    def __init__(self, mask: ModIR, shape, lengths, block):
        self.name = "flexattn_block_mask"
        with _native.new_context(), ir.Location.unknown():
            try:
                module = _build_kernel(mask, shape, lengths, block, self.name)
                module.operation.verify()
                self.text = str(module)
            except ir.MLIRError as err:
                raise CompilationError(f"the block-mask kernel is invalid: {err}") from None
            run_pipeline(module, "flexattn-inline-mods, canonicalize, cse, arith-expand",
                         "block_mask")
            make_llvm(module, CompileOptions())
            self.engine = ExecutionEngine(module, opt_level=3)
        self._entry = self.engine.lookup(self.name)

    def __call__(self, cls: torch.Tensor, captures, rows: tuple[int, int]) -> None:
        bounds = torch.tensor(rows, dtype=torch.int64)
        tensors = [cls, bounds, *captures]
        descs = [memref_descriptor(t) for t in tensors]
        ptrs = [ctypes.pointer(d) for d in descs]
        packed = (ctypes.c_void_p * len(ptrs))()
        for i, p in enumerate(ptrs):
            packed[i] = ctypes.cast(ctypes.pointer(p), ctypes.c_void_p)
        self._entry(packed)  # ctypes drops the GIL: threads run in parallel


def _kernel_for(mask: ModIR, shape, lengths, block) -> _MaskKernel:
    global kernel_count
    key = (mask, shape, lengths, block)
    with _kernel_lock:
        kernel = _kernels.get(key)
        if kernel is None:
            kernel = _kernels[key] = _MaskKernel(mask, shape, lengths, block)
            kernel_count += 1
    return kernel


_pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
_PARALLEL_ELEMENTS = 1 << 22  # below this much work, threads cost more than they save


def _thread_pool(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _kernel_lock:
        if _pool is None or _pool._max_workers < threads:
            _pool = concurrent.futures.ThreadPoolExecutor(threads, "flexattn-block-mask")
        return _pool


def _evaluate(checked, captures, cls: np.ndarray, lengths, block, threads: int) -> None:
    """Replaces every UNKNOWN entry of ``cls`` (in place) by the block's
    class, evaluating ``checked.mask``; raises IndexError for a read out of
    bounds the kernel reported."""
    todo = cls >= UNKNOWN
    todo_blocks = int(todo.sum())
    if todo_blocks == 0:
        return
    rows = np.flatnonzero(todo.reshape(-1, cls.shape[-1]).any(axis=-1))
    kernel = _kernel_for(checked.mask, tuple(cls.shape), lengths, block)
    cls = torch.from_numpy(cls)  # shares the memory the kernel writes
    captures = [c.view(torch.uint8) if c.dtype == torch.bool else c for c in captures]
    report = index_checks.report_capture(checked, "cpu")
    if report is not None:
        captures.append(report)
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    n = hi - lo
    if threads <= 1 or n < 2 or todo_blocks * block[0] * block[1] < _PARALLEL_ELEMENTS:
        kernel(cls, captures, (lo, hi))
    else:
        # Interleaved chunks spread the expensive regions over the threads;
        # the kernel drops the GIL (ctypes), so they run in parallel.
        chunks = min(n, threads * 8)
        edges = [lo + (n * i) // chunks for i in range(chunks + 1)]
        pool = _thread_pool(threads)
        list(pool.map(lambda i: kernel(cls, captures, (edges[i], edges[i + 1])), range(chunks)))
    if report is not None:
        index_checks.raise_reported(report, checked)
