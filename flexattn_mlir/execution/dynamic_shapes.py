"""Dynamic-shape kernels: one CPU kernel for every length.

With ``CompileOptions.dynamic`` (the CPU default) a kernel is specialised on
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
import re
from typing import Optional

from ..compiler.mods import ModIR
from ..compiler.spec import DYNAMIC, BufferType

__all__ = ["SCALE_TYPE", "buffer_types", "scaled_mods"]

#: The scale operand's type: a 0-d f32 buffer.
SCALE_TYPE = "memref<f32>"
# q, k, v: heads and head dims stay static.
_STATIC_DIMS = (1, 3)
_FIRST_ARG = re.compile(r"\^bb0\((%[\w$.\-]+):")


def _dynamic(t: BufferType, keep=()) -> BufferType:
    return BufferType(tuple(d if i in keep else DYNAMIC for i, d in enumerate(t.shape)), t.elem)


def buffer_types(q: BufferType, k: BufferType, v: BufferType, masks: dict) -> tuple:
    """The dynamic-shape types of q, k, v and the block-mask tensors
    (``masks``: name -> BufferType): ``(q, k, v, masks)``."""
    def kv(t: BufferType) -> BufferType:
        shared = t.shape[0] == 1 and q.shape[0] != 1  # broadcast over the query batch
        return _dynamic(t, _STATIC_DIMS + ((0,) if shared else ()))

    return (_dynamic(q, _STATIC_DIMS), kv(k), kv(v), {n: _dynamic(t) for n, t in masks.items()})


def _with_argument(text: str, name: str, type_: str) -> tuple[str, str]:
    header, _, body = text.partition("\n")
    if not header.endswith("):"):
        raise ValueError(f"not a mod region: {header!r}")
    return header[:-2] + f", %{name}: {type_}):", body


@functools.lru_cache(maxsize=256)
def scaled_mods(score: Optional[ModIR], mask: Optional[ModIR],
                captures: tuple[str, ...]) -> tuple[ModIR, Optional[ModIR]]:
    """score_mod and mask_mod taking the scale operand after ``captures``
    (the captured tensors' types), the score_mod applying it: ``x = score *
    scale`` then the mod's code on ``x`` (an identity score_mod when there
    is none)."""
    name = "scale_operand"
    types = captures + (SCALE_TYPE,)
    if score is None:
        index = _index_type(mask)
        caps = "".join(f", %cap{i}: {t}" for i, t in enumerate(captures))
        text = (f"^bb0(%score: f32, %b: {index}, %h: {index}, %q_idx: {index}, "
                f"%kv_idx: {index}{caps}):\n  flexattn.yield %score : f32")
        score = ModIR.score(text, captures)
    header, body = _with_argument(score.text, name, SCALE_TYPE)
    arg = _FIRST_ARG.match(header).group(1)  # the score argument's name
    uses = re.compile(re.escape(arg) + r"(?![\w$.\-])")
    scaled = (f"{header}\n  %scale_factor = memref.load %{name}[] : {SCALE_TYPE}\n"
              f"  %scaled_score = arith.mulf {arg}, %scale_factor : f32\n"
              + uses.sub("%scaled_score", body))
    score = ModIR("score", scaled, types)
    if mask is not None:
        mask = ModIR("mask", "\n".join(_with_argument(mask.text, name, SCALE_TYPE)), types)
    return score, mask


def _index_type(mask: Optional[ModIR]) -> str:
    """The mods' index type: the mask_mod's, else the frontend's (i32)."""
    if mask is not None:
        found = re.search(r", %[\w$.\-]+: (\w+)", mask.text.partition("\n")[0])
        if found:
            return found.group(1)
    from ..frontend.convert import INDEX_TYPE

    return INDEX_TYPE
