"""Dynamic-shape kernels: one CPU kernel for every length.

With ``CompileOptions.dynamic`` (``kernel_options={"dynamic": True}``; static is
the default, a few percent faster: docs/inference.md) a kernel is specialised on
the mods, the head counts and head dims, the dtypes, the block size, the
shapes of the captured tensors, the target and the options; the batch size,
the sequence lengths M and N, every block-mask dimension and the scale are
run-time values:

* :func:`buffer_types` writes q/k/v and the block-mask tensors with dynamic
  dims (``memref<?x8x?x64xbf16>``). K/V shared by the query batch (batch 1
  under a larger query batch) keep their static 1, which ``flexattn-tile``
  reads through a batch-stride-0 view; K/V with the query's batch get a
  dynamic batch like q's.
* :func:`scaled_mods` makes the scale a kernel operand: a 0-d f32 buffer
  after the captured tensors, which the score_mod region multiplies the
  score by before the mod's own code (the op's ``scale`` attribute is 1.0).
* Reads of captured tensors are still proved in bounds per call, on the
  call's sizes (:mod:`..masks.index_checks`, ``dynamic=True``), and the kernel
  carries what the proof established, not the bounds it found.
"""

from __future__ import annotations

import functools
from typing import Optional

from mlir import ir
from mlir.dialects import arith
from mlir.dialects import memref as memref_d

from .. import _native
from ..compiler.mods import ModIR, parse, region_text
from ..compiler.pipeline import CompilationError
from ..compiler.spec import DYNAMIC, BufferType

__all__ = ["SCALE_TYPE", "buffer_types", "scaled_mods"]

#: The scale operand's type: a 0-d f32 buffer.
SCALE_TYPE = "memref<f32>"
# q, k, v: heads and head dims stay static.
_STATIC_DIMS = (1, 3)


def _dynamic(t: BufferType, keep=()) -> BufferType:
    return BufferType(tuple(d if i in keep else DYNAMIC for i, d in enumerate(t.shape)), t.elem)


def buffer_types(q: BufferType, k: BufferType, v: BufferType, masks: dict) -> tuple:
    """The dynamic-shape types of q, k, v and the block-mask tensors
    (``masks``: name -> BufferType): ``(q, k, v, masks)``."""
    def kv(t: BufferType) -> BufferType:
        shared = t.shape[0] == 1 and q.shape[0] != 1  # broadcast over the query batch
        return _dynamic(t, _STATIC_DIMS + ((0,) if shared else ()))

    return (_dynamic(q, _STATIC_DIMS), kv(k), kv(v), {n: _dynamic(t) for n, t in masks.items()})


@functools.lru_cache(maxsize=256)
def scaled_mods(score: Optional[ModIR], mask: Optional[ModIR],
                captures: tuple[str, ...]) -> tuple[ModIR, Optional[ModIR]]:
    """score_mod and mask_mod taking the scale operand after ``captures``
    (the captured tensors' types), the score_mod applying it: ``x = score *
    scale`` then the mod's code on ``x`` (an identity score_mod when there
    is none). Built on IR (parsed regions, rebuilt with one more argument)."""
    try:
        return _scaled_mods(score, mask, captures)
    except ir.MLIRError as err:  # a hand-written mod that does not verify
        raise CompilationError(f"invalid mod IR: {err}") from None


def _scaled_mods(score, mask, captures):
    types = captures + (SCALE_TYPE,)
    with _native.new_context(), ir.Location.unknown():
        new_types = [ir.Type.parse(t) for t in types]
        if score is None:
            score = _identity_score(mask, captures)
        _, block = parse(score)

        def scale_first(target: ir.Block) -> dict:
            factor = memref_d.load(target.arguments[-1], [])
            return {0: arith.mulf(target.arguments[0], factor)}

        scaled = ModIR("score", region_text(block, "score", new_types, prologue=scale_first),
                       types)
        if mask is not None:
            _, block = parse(mask)
            mask = ModIR("mask", region_text(block, "mask", new_types), types)
    return scaled, mask


def _identity_score(mask: Optional[ModIR], captures: tuple[str, ...]) -> ModIR:
    """``score -> score`` with the mods' index type (the mask_mod's, else the
    frontend's), in the current context."""
    if mask is not None:
        _, block = parse(mask)
        index = str(block.arguments[0].type)
    else:
        from ..frontend.convert import INDEX_TYPE

        index = INDEX_TYPE
    return ModIR.build_score(lambda score, *rest: score, captures, index)
