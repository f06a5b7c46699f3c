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
import re
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

from mlir import ir

from . import _native

__all__ = ["ModIR", "region_text"]

ModKind = Literal["score", "mask"]

# The label attribute of flexattn.check_index (a quoted string).
_SOURCE = re.compile(r'source = "(?:[^"\\]|\\.)*"')


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
        """A hash of what the generated code depends on: not the ``source``
        labels of index checks (names for messages), so equal mods under
        other names share kernels."""
        h = hashlib.sha256()
        for part in (self.kind, _SOURCE.sub('source = ""', self.text), *self.capture_types):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()


FIXED_ARGS = {"score": ("score", "b", "h", "q_idx", "kv_idx"), "mask": ("b", "h", "q_idx", "kv_idx")}


def region_text(block: ir.Block, kind: ModKind) -> str:
    """The text of a mod region's ``block``, its arguments named as in every
    ModIR: %score, %b, %h, %q_idx, %kv_idx, then %cap0, %cap1, ..."""
    body = str(block).strip()
    n_caps = len(block.arguments) - len(FIXED_ARGS[kind])
    names = list(FIXED_ARGS[kind]) + [f"cap{i}" for i in range(n_caps)]
    header, _, rest = body.partition("\n")
    printed = re.findall(r"(%[\w$.\-]+):", header)
    if len(printed) != len(names):
        raise AssertionError(f"unexpected region header {header!r}")
    rename = dict(zip(printed, ("%" + n for n in names)))
    header = "^bb0(" + ", ".join(f"{rename[p]}: {a.type}" for p, a in zip(
        printed, block.arguments)) + "):"
    rest = re.sub(r"%[\w$.\-]+", lambda m: rename.get(m.group(0), m.group(0)), rest)
    return header + "\n" + rest


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
