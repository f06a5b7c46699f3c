"""Reads of captured tensors: proved in bounds, refused, or checked at run time.

A mod reads a captured tensor at positions that go through
``flexattn.check_index`` (the frontend emits one per indexed dimension): the
index the mod computed, with torch's semantics (``t[-1]`` wraps, anything
outside ``[-size, size)`` is an IndexError in torch). For one call the shapes
bound b, h, q_idx and kv_idx (``[0, B)``, ``[0, H)``, ``[0, M)``, ``[0, N)``),
and the interval analysis of :mod:`.masks` bounds every checked index:

* provably inside ``[-size, size)``: the op gets ``bounds`` and the kernel
  does no check (only the wrap, unless the index is never negative); for a
  dynamic-shape kernel, which serves other shapes, the bounds say only what
  this call proved (``[-size, size - 1]`` or ``[0, size - 1]``);
* provably outside at some concrete ``(b, h, q_idx, kv_idx)`` (found by
  evaluating the mod at the corners of the domain and at sampled points):
  :func:`annotate` raises IndexError at the call, naming the mod, the tensor,
  the index range and the example;
* unknown (an index computed from another captured value, or from floats):
  the kernel checks it. The op gets a ``site`` and the report buffer, a
  ``[sites, 2]`` i64 capture appended after the others (``index_report`` in
  the kernel's arguments): the kernel writes ``[1, index]`` into the site's
  row on an out-of-bounds read (and reads element 0, inside the buffer), and
  :func:`raise_reported` raises IndexError after the call. On the CPU this is
  always on (a zeroed 16-byte buffer and one check per read); on the GPU only
  with ``FLEXATTN_CHECK_INDICES=1``, as reading the buffer back synchronises
  with the device. Without it the GPU kernel reads element 0 for such an
  index, and :func:`warn_unchecked` says so once per kernel.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..compiler.mods import ModIR, parse, region_text
from ..compiler.spec import BufferType
from . import intervals

__all__ = ["Site", "Checked", "ENV", "enabled", "annotate", "report_capture", "raise_reported",
           "warn_unchecked"]

#: Set to 1 to check, on the GPU, the reads the compiler cannot bound.
ENV = "FLEXATTN_CHECK_INDICES"

_SAMPLES = 64  # random points of the domain tried as witnesses, besides its corners


def enabled(target: str) -> bool:
    """Whether reads the compiler cannot bound are checked at run time on
    ``target``: always on the CPU, on GPUs with FLEXATTN_CHECK_INDICES=1."""
    return target == "cpu" or os.environ.get(ENV, "") not in ("", "0")


@dataclass(frozen=True)
class Site:
    """One flexattn.check_index: which read it is (for messages) and the
    range of its index over the call's domain (None: unknown)."""

    source: str  # "doc (shape (256,)) in mask_mod 'document'"
    dim: int
    size: int
    lo: Optional[int] = None
    hi: Optional[int] = None

    def where(self) -> str:
        return f"{self.source}, along dim {self.dim} (size {self.size})"


@dataclass(frozen=True)
class Checked:
    """The mods of one call with their index checks decided: ``report`` is
    the report buffer's shape when some read is checked at run time,
    ``sites`` those reads (by row of the report), ``unchecked`` the reads
    left unchecked (a GPU without FLEXATTN_CHECK_INDICES)."""

    score: Optional[ModIR]
    mask: Optional[ModIR]
    report: Optional[tuple[int, int]] = None
    sites: tuple[Site, ...] = ()
    unchecked: tuple[Site, ...] = ()


def _domain(shape, points: bool):
    """b, h, q_idx, kv_idx as (lo, hi) arrays: the whole domain as one
    interval each, or concrete points (its corners, then seeded samples)."""
    if not points:
        return [(np.array(0), np.array(n - 1)) for n in shape]
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(4, -1)
    rng = np.random.default_rng(0)
    sampled = np.stack([rng.integers(0, n, _SAMPLES) for n in shape])
    grid = np.concatenate([corners, sampled], axis=1).astype(np.int64)
    return [(row, row) for row in grid]


def _witness(mod: ModIR, shape, site: int, size: int):
    """A concrete (b, h, q_idx, kv_idx, index) where the ``site``-th check
    of ``mod`` reads out of bounds, or None. Only exact values count: the
    analysis computes them exactly, so the read provably fails there (the
    region is straight-line code: every read runs for every element)."""
    inputs = _domain(shape, points=True)
    _, checks = intervals.evaluate(mod, inputs)
    index = checks[site]
    if index is None:
        return None
    lo, hi = (np.broadcast_to(v, inputs[0][0].shape) for v in index)
    bad = np.flatnonzero((lo == hi) & ((lo < -size) | (lo >= size)))
    if not bad.size:
        return None
    p = bad[0]
    return tuple(int(v[0][p]) for v in inputs) + (int(lo[p]),)


def _out_of_bounds(site: Site, shape, witness) -> IndexError:
    B, H, M, N = shape
    b, h, q, kv, index = witness
    where = "" if site.lo is None else f" ranges over [{site.lo}, {site.hi}] and"
    return IndexError(
        f"{site.where()} is read out of bounds: its index{where} is {index} at b={b}, h={h}, "
        f"q_idx={q}, kv_idx={kv} (for B={B}, H={H}, Q_LEN={M}, KV_LEN={N}); valid indices "
        f"are {-site.size}..{site.size - 1}. torch raises IndexError here too")


@dataclass(frozen=True)
class _Op:
    """A flexattn.check_index of a region, as parsed: ``nested`` inside an
    scf region (not analysed), ``preset`` with bounds or a report already."""

    dim: int
    source: str
    size: int
    nested: bool
    preset: bool


@functools.lru_cache(maxsize=256)
def _check_ops(mod: ModIR) -> tuple[_Op, ...]:
    return tuple(_parse(mod, lambda block, ops: [_describe(op, mod.kind) for op in ops]))


def _has_checks(mod: ModIR) -> bool:
    """Whether the mod's region reads a captured tensor (has check_index
    ops); invalid IR has none here: the driver reports it."""
    from mlir import ir

    try:
        return bool(_check_ops(mod))
    except ir.MLIRError:
        return False


def _describe(op, kind: str) -> _Op:
    from mlir import ir

    attrs = op.attributes
    return _Op(ir.IntegerAttr(attrs["dim"]).value if "dim" in attrs else 0,
               ir.StringAttr(attrs["source"]).value if "source" in attrs
               else f"a captured tensor in the {kind}_mod",
               ir.IntegerAttr(attrs["size"]).value,
               op.parent.name != "flexattn.mod",
               "bounds" in attrs or len(op.operands) > 1)


def _parse(mod: ModIR, fn):
    """``fn(block, check_index ops in walk order)`` on the parsed region."""
    from mlir import ir

    from .. import _native

    with _native.new_context(), ir.Location.unknown():
        module, block = parse(mod)
        ops = []

        def collect(op):
            if op.name == "flexattn.check_index":
                ops.append(op)
            return ir.WalkResult.ADVANCE

        for op in block.operations:
            op.operation.walk(collect)
        return fn(block, ops)


def _plan(mod: ModIR, shape, check: bool) -> list:
    """Per check_index of ``mod`` in walk order: ("bounds", lo, hi),
    ("check", Site), ("clamp", Site) or ("keep",) (set by the IR's writer).
    Raises IndexError for a provably out-of-bounds read."""
    ops = _check_ops(mod)
    _, indices = intervals.evaluate(mod, _domain(shape, points=False))
    top = iter(enumerate(indices))  # the analysed (top-level) checks, in order
    plan = []
    for op in ops:
        i, index = next(top) if not op.nested else (None, None)
        if op.preset:
            plan.append(("keep",))
            continue
        lo = hi = None
        if index is not None:
            lo, hi = int(index[0]), int(index[1])
            if lo >= -op.size and hi < op.size:
                plan.append(("bounds", lo, hi))
                continue
        site = Site(op.source, op.dim, op.size, lo, hi)
        witness = None if i is None else _witness(mod, shape, i, op.size)
        if witness is not None:
            raise _out_of_bounds(site, shape, witness)
        plan.append(("check" if check else "clamp", site))
    return plan


def _apply(mod: ModIR, plan: list, report_type: Optional[str], first_site: int,
           dynamic: bool) -> ModIR:
    """``mod`` with ``plan`` applied: bounds set, checked reads given the
    report buffer (a new last argument) and their site (row) numbers. For a
    ``dynamic`` kernel, which serves other shapes, the bounds are not this
    call's range but what it proves: ``[-size, size - 1]`` (in bounds) or
    ``[0, size - 1]`` (in bounds, never negative), true for every call
    whose analysis proves as much (the captures' sizes are in the key)."""
    from mlir import ir

    from ..dialects import flexattn as fa

    def rewrite(block, ops):
        report = block.add_argument(ir.Type.parse(report_type), ir.Location.unknown()) \
            if report_type else None
        i64 = ir.IntegerType.get_signless(64)
        site = first_site
        for op, decision in zip(ops, plan):
            if decision[0] == "bounds":
                lo, hi = decision[1], decision[2]
                if dynamic:
                    size = ir.IntegerAttr(op.attributes["size"]).value
                    lo, hi = (0 if lo >= 0 else -size), size - 1
                op.attributes["bounds"] = ir.DenseI64ArrayAttr.get([lo, hi])
            elif decision[0] == "check":
                attrs = {n: op.attributes[n] for n in op.attributes}
                attrs["site"] = ir.IntegerAttr.get(i64, site)
                site += 1
                with ir.InsertionPoint(op):
                    new = fa.CheckIndexOp(op.operands[0], attrs["size"], report=report)
                for name, value in attrs.items():
                    new.attributes[name] = value
                op.result.replace_all_uses_with(new.result)
                op.erase()
        return region_text(block, mod.kind)

    text = _parse(mod, rewrite)
    return ModIR(mod.kind, text, mod.capture_types + ((report_type,) if report_type else ()))


@functools.lru_cache(maxsize=256)
def annotate(score: Optional[ModIR], mask: Optional[ModIR], shape: tuple[int, int, int, int],
             check: bool, dynamic: bool = False) -> Checked:
    """The mods of a call on ``shape = (B, H, M, N)`` with their index checks
    decided (see the module docstring). ``check``: whether reads the
    compiler cannot bound are checked at run time (:func:`enabled`);
    ``dynamic``: the mods go into a kernel that serves every shape, so they
    carry what this shape's bounds prove, not the bounds (equal decisions
    give equal mods, hence one kernel; see :func:`_apply`)."""
    mods = [m for m in (score, mask) if m is not None]
    if not mods or min(shape) <= 0 or not any(map(_has_checks, mods)):
        return Checked(score, mask)
    plans = [_plan(m, shape, check) for m in mods]
    sites = [d[1] for plan in plans for d in plan if d[0] == "check"]
    clamped = [d[1] for plan in plans for d in plan if d[0] == "clamp"]
    report_type = BufferType((len(sites), 2), "i64").memref if sites else None
    out, first = [], 0
    for m, plan in zip(mods, plans):
        out.append(_apply(m, plan, report_type, first, dynamic))
        first += sum(d[0] == "check" for d in plan)
    new = dict(zip((m.kind for m in mods), out))
    return Checked(new.get("score"), new.get("mask"), (len(sites), 2) if sites else None,
                   tuple(sites), tuple(clamped))


def report_capture(checked: Checked, device):
    """The zeroed report tensor the kernel takes as its last capture, or None."""
    if checked.report is None:
        return None
    import torch

    return torch.zeros(checked.report, dtype=torch.int64, device=device)


def raise_reported(report, checked: Checked) -> None:
    """Raises IndexError for the first read the kernel found out of bounds
    (``report``: the [sites, 2] int64 tensor it wrote; read back to the CPU)."""
    rows = report.cpu()
    for i in range(rows.shape[0]):
        if int(rows[i, 0]):
            site = checked.sites[i]
            raise IndexError(
                f"{site.where()} was read out of bounds: index {int(rows[i, 1])} (valid indices "
                f"are {-site.size}..{site.size - 1}). torch raises IndexError here too")


_warned: set = set()


def warn_unchecked(checked: Checked, target: str) -> None:
    """Once per set of reads: the GPU kernel reads element 0 for an index
    the compiler cannot bound, unless FLEXATTN_CHECK_INDICES=1."""
    key = (checked.unchecked, target)
    if not checked.unchecked or key in _warned:
        return
    _warned.add(key)
    reads = "; ".join(s.where() for s in checked.unchecked)
    warnings.warn(
        f"flexattn_mlir cannot prove these reads of captured tensors in bounds: {reads}. The "
        f"{target} kernel does not check them (an out-of-bounds index reads element 0); set "
        f"{ENV}=1 to check them, which synchronises with the GPU after each call",
        RuntimeWarning, stacklevel=3)
