"""score_mod / mask_mod as MLIR: the region text the flexattn ops carry.

A mod is the body of one region, printed as MLIR::

    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32, <captures>):
      ...
      flexattn.yield %r : f32

(mask mods drop the score and yield an ``i1``). It comes from the torch-mlir
frontend (:mod:`flexattn_mlir.frontend`), from hand-written text
(:meth:`ModIR.score` / :meth:`ModIR.mask`), or from a builder callback that
emits ops with the upstream Python bindings (:meth:`ModIR.build_score` /
:meth:`ModIR.build_mask`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

from mlir import ir

from . import _native

__all__ = ["ModIR"]

ModKind = Literal["score", "mask"]


@dataclass(frozen=True)
class ModIR:
    """One modification: its kind, its region text, and the MLIR types of the
    captured buffers its trailing block arguments receive, in order."""

    kind: ModKind
    text: str
    capture_types: tuple[str, ...] = ()

    @staticmethod
    def score(text: str, capture_types: Sequence[str] = ()) -> "ModIR":
        return ModIR("score", text.strip(), tuple(capture_types))

    @staticmethod
    def mask(text: str, capture_types: Sequence[str] = ()) -> "ModIR":
        return ModIR("mask", text.strip(), tuple(capture_types))

    @staticmethod
    def build_score(
        fn: Callable[..., ir.Value],
        capture_types: Sequence[str] = (),
        index_type: str = "i32",
    ) -> "ModIR":
        """``fn(score, b, h, q_idx, kv_idx, *captures) -> f32 Value``, called
        with an insertion point inside the region's block."""
        return _build("score", fn, tuple(capture_types), index_type)

    @staticmethod
    def build_mask(
        fn: Callable[..., ir.Value],
        capture_types: Sequence[str] = (),
        index_type: str = "i32",
    ) -> "ModIR":
        """``fn(b, h, q_idx, kv_idx, *captures) -> i1 Value``."""
        return _build("mask", fn, tuple(capture_types), index_type)

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.kind, self.text, *self.capture_types):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()


def _build(kind: ModKind, fn, capture_types: tuple[str, ...], index_type: str) -> ModIR:
    from .dialects import flexattn as fa

    with _native.new_context(), ir.Location.unknown():
        idx = ir.Type.parse(index_type)
        caps = [ir.Type.parse(t) for t in capture_types]
        args = ([ir.F32Type.get()] if kind == "score" else []) + [idx] * 4 + caps
        module = ir.Module.create()
        # Any op with a mod region will hold the block while it is built.
        with ir.InsertionPoint(module.body):
            holder = ir.Operation.create("flexattn.apply_mods", results=[ir.F32Type.get()],
                                         regions=2)
        region = holder.regions[0 if kind == "score" else 1]
        block = region.blocks.append(*args)
        with ir.InsertionPoint(block):
            result = fn(*block.arguments)
            fa.YieldOp([result])
        return ModIR(kind, str(block).strip(), capture_types)
