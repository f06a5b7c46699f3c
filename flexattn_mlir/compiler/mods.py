"""score_mod / mask_mod as MLIR: one ``flexattn.mod`` op, as text.

A mod is the region the flexattn ops carry, held on its own by a
``flexattn.mod`` op (dialect/FlexAttnOps.td) and printed by MLIR::

    flexattn.mod score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32, <captures>):
      ...
      flexattn.yield %r : f32
    }

(mask mods drop the score and yield an ``i1``). That text is what the
caches store and hash; :func:`parse` reads it back with MLIR's parser, and
every mod is built with the op builders and printed by MLIR (no MLIR text
is written here). It comes from the torch-mlir
frontend (:mod:`flexattn_mlir.frontend`), from hand-written text
(:meth:`ModIR.score` / :meth:`ModIR.mask`), or from a builder callback that
emits ops with the upstream Python bindings (:meth:`ModIR.build_score` /
:meth:`ModIR.build_mask`).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

from mlir import ir
from mlir.dialects import func

from .. import _native

__all__ = ["ModIR", "FIXED_ARGS", "parse", "holder", "holder_region", "new_block", "region_text"]

ModKind = Literal["score", "mask"]


@dataclass(frozen=True)
class ModIR:
    """One modification: its kind, its ``flexattn.mod`` op as text, and the
    MLIR types of the captured buffers its trailing block arguments receive,
    in order."""

    kind: ModKind
    text: str
    capture_types: tuple[str, ...] = ()

    @staticmethod
    def score(text: str, capture_types: Sequence[str] = ()) -> "ModIR":
        """A hand-written ``flexattn.mod score_mod {...}`` op."""
        return ModIR("score", text.strip(), tuple(capture_types))

    @staticmethod
    def mask(text: str, capture_types: Sequence[str] = ()) -> "ModIR":
        """A hand-written ``flexattn.mod mask_mod {...}`` op."""
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
        return _digest(self)


MOD_OP = "flexattn.mod"  # the op a ModIR's text holds
FIXED_ARGS = {"score": ("score", "b", "h", "q_idx", "kv_idx"), "mask": ("b", "h", "q_idx", "kv_idx")}


# ---------------------------------------------------------------------------
# ModIR text <-> IR: the text is one flexattn.mod op, which MLIR parses and
# prints on its own.
# ---------------------------------------------------------------------------


def parse(mod: ModIR) -> tuple[ir.Module, ir.Block]:
    """``(module, the mod's region block)`` in the current context; keep the
    module while using the block. Raises ``ir.MLIRError`` for invalid text,
    ``ValueError`` for text that is not one ``flexattn.mod`` of the mod's
    kind."""
    module = ir.Module.parse(mod.text)
    ops = list(module.body.operations)
    names = [op.operation.name for op in ops]
    if names != [MOD_OP]:
        raise ValueError(f"the text of a {mod.kind} mod must hold one {MOD_OP} op, got {names}")
    kind = ir.StringAttr(ops[0].attributes["kind"]).value
    if kind != f"{mod.kind}_mod":
        raise ValueError(f"the text of a {mod.kind} mod holds a {kind}")
    return module, holder_region(module).blocks[0]


def holder_region(module: ir.Module) -> ir.Region:
    """The region of a holder module's flexattn.mod (found afresh: a pass run
    invalidates the Python handles of nested ops)."""
    return module.body.operations[0].regions[0]


def holder(kind: ModKind) -> tuple[ir.Module, ir.Region]:
    """A module holding one ``flexattn.mod`` of ``kind`` (built with the op
    builder) with an empty region, and that region: the place a mod region
    is built, verified and printed."""
    from ..dialects import flexattn as fa

    module = ir.Module.create()
    with ir.InsertionPoint(module.body):
        op = fa.ModOp(f"{kind}_mod")
    return module, op.regions[0]


def new_block(region: ir.Region, kind: ModKind, arg_types: Sequence[ir.Type]) -> ir.Block:
    """The mod block of ``region``: arguments of ``arg_types`` named (by
    their locations) %score, %b, %h, %q_idx, %kv_idx, then %cap0, ..."""
    n_caps = len(arg_types) - len(FIXED_ARGS[kind])
    names = list(FIXED_ARGS[kind]) + [f"cap{i}" for i in range(n_caps)]
    return region.blocks.append(*arg_types, arg_locs=[ir.Location.name(n) for n in names])


def region_text(block: ir.Block, kind: ModKind, capture_types: Sequence[ir.Type] | None = None,
                arg_map: Sequence[int] | None = None,
                prologue: Callable[[ir.Block], dict] | None = None) -> str:
    """The ModIR text of a mod region's ``block``, which it consumes: its
    ops move into a :func:`new_block` of a fresh :func:`holder`, printed by
    MLIR. ``capture_types`` (default: the block's own) are the new block's
    captures; argument ``i`` of ``block`` becomes argument ``arg_map[i]``
    of the new one (default: the same position), so a mod can be given
    another capture list. ``prologue(new_block)``, called with an insertion
    point at the new block's start, may emit ops there and returns
    ``{i: value}``: the uses of ``block``'s argument ``i`` read ``value``
    instead (e.g. a scaled score)."""
    nfixed = len(FIXED_ARGS[kind])
    old = list(block.arguments)
    if capture_types is None:
        capture_types = [a.type for a in old[nfixed:]]
    module, region = holder(kind)
    fixed = [a.type for a in old[:nfixed]]
    target = new_block(region, kind, [*fixed, *capture_types])
    replaced = {}
    if prologue is not None:
        with ir.InsertionPoint(target):
            replaced = prologue(target)
    for i, arg in enumerate(old):
        arg.replace_all_uses_with(replaced.get(i, target.arguments[arg_map[i] if arg_map else i]))
    for op in list(block.operations):
        op.detach_from_parent()
        target.append(op)
    module.operation.verify()
    return region.owner.get_asm(use_name_loc_as_prefix=True)


@functools.lru_cache(maxsize=1024)
def _digest(mod: ModIR) -> str:
    """:meth:`ModIR.digest`: the region printed without the ``source``
    labels of its index checks."""
    with _native.new_context(), ir.Location.unknown():
        try:
            module, block = parse(mod)
        except (ir.MLIRError, ValueError):  # invalid: hashed as written, the driver reports it
            return hashlib.sha256("\0".join((mod.kind, mod.text, *mod.capture_types))
                                  .encode()).hexdigest()

        def unlabel(op):
            if op.name == "flexattn.check_index" and "source" in op.attributes:
                del op.attributes["source"]
            return ir.WalkResult.ADVANCE

        for op in block.operations:
            op.operation.walk(unlabel)
        text = region_text(block, mod.kind)
    h = hashlib.sha256()
    for part in (mod.kind, text, *mod.capture_types):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _build(kind: ModKind, fn, capture_types: tuple[str, ...], index_type: str) -> ModIR:
    from ..dialects import flexattn as fa

    with _native.new_context(), ir.Location.unknown():
        idx = ir.Type.parse(index_type)
        caps = [ir.Type.parse(t) for t in capture_types]
        args = ([ir.F32Type.get()] if kind == "score" else []) + [idx] * 4 + caps
        module, region = holder(kind)
        block = new_block(region, kind, args)
        with ir.InsertionPoint(block):
            result = fn(*block.arguments)
            fa.YieldOp([result])
        return ModIR(kind, region_text(block, kind), capture_types)
