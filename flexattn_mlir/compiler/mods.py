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
        return _digest(self)


FIXED_ARGS = {"score": ("score", "b", "h", "q_idx", "kv_idx"), "mask": ("b", "h", "q_idx", "kv_idx")}


# ---------------------------------------------------------------------------
# ModIR text <-> IR. The text is a region body (the cache and hand-written
# format); MLIR parses a region only inside an op, so it is read as the
# region of a flexattn.apply_mods in a holder function: the one place the
# package writes a mod's surroundings as text. Everything else is built with
# the op builders and printed by MLIR.
# ---------------------------------------------------------------------------


def _region_index(kind: ModKind) -> int:
    return 0 if kind == "score" else 1


def parse(mod: ModIR) -> tuple[ir.Module, ir.Block]:
    """``(holder module, the mod's region block)`` in the current context;
    keep the module while using the block. Raises ``ir.MLIRError`` for
    invalid text."""
    caps = "".join(f", %cap{i}: {t}" for i, t in enumerate(mod.capture_types))
    names = ", ".join(f"%cap{i}" for i in range(len(mod.capture_types)))
    captures = f" captures({names} : {', '.join(mod.capture_types)})" if names else ""
    module = ir.Module.parse(
        f"func.func @holder(%s: f32, %i: index{caps}) -> f32 {{\n"
        f"  %r = flexattn.apply_mods %s at(%i, %i, %i, %i){captures} attributes {{masked}} "
        f"{mod.kind}_mod {{\n{mod.text}\n}} : f32\n"
        f"  return %r : f32\n}}\n")
    return module, holder_region(module, mod.kind).blocks[0]


def holder_region(module: ir.Module, kind: ModKind) -> ir.Region:
    """The ``kind`` region of a holder module's flexattn.apply_mods (found
    afresh: a pass run invalidates the Python handles of nested ops)."""
    apply = module.body.operations[0].regions[0].blocks[0].operations[0]
    return apply.regions[_region_index(kind)]


def holder(kind: ModKind, capture_types: Sequence[ir.Type]) -> tuple[ir.Module, ir.Region]:
    """A module holding one ``flexattn.apply_mods`` (built with the op
    builders) whose ``kind`` region is empty, and that region: the place a
    mod region is built, verified and printed."""
    from ..dialects import flexattn as fa

    f32, index = ir.F32Type.get(), ir.IndexType.get()
    module = ir.Module.create()
    with ir.InsertionPoint(module.body):
        fn = func.FuncOp("holder", ([f32, index, *capture_types], [f32]))
    entry = fn.add_entry_block()
    with ir.InsertionPoint(entry):
        score, i, *caps = entry.arguments
        apply = fa.ApplyModsOp(f32, score, i, i, i, i, caps, masked=True)
        func.ReturnOp([apply.result])
    return module, apply.regions[_region_index(kind)]


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
    module, region = holder(kind, capture_types)
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
    lines = region.owner.get_asm(use_name_loc_as_prefix=True).splitlines()
    return "\n".join(lines[1:-1])  # between `<kind>_mod {` and `} : f32`


@functools.lru_cache(maxsize=1024)
def _digest(mod: ModIR) -> str:
    """:meth:`ModIR.digest`: the region printed without the ``source``
    labels of its index checks."""
    with _native.new_context(), ir.Location.unknown():
        try:
            module, block = parse(mod)
        except ir.MLIRError:  # invalid IR: hashed as written, the driver reports it
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
        module, region = holder(kind, caps)
        block = new_block(region, kind, args)
        with ir.InsertionPoint(block):
            result = fn(*block.arguments)
            fa.YieldOp([result])
        return ModIR(kind, region_text(block, kind), capture_types)
