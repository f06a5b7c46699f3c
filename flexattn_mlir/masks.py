"""mask_mods: torch's combinators, and a static analysis of captured masks.

* :func:`noop_mask`, :func:`and_masks`, :func:`or_masks` have torch's
  semantics and are written so the frontend can capture them: each
  combinator closes over a tuple of mods, whose captured tensors the
  frontend lifts (flexattn_mlir.frontend).
* :func:`decide_blocks` runs a sound interval analysis over a captured
  mask's IR (a ModIR): for each (b, h, q block, kv block) it proves, where it
  can, that the mask keeps all or none of the block's elements.
  create_block_mask evaluates only the blocks it leaves undecided.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .mods import ModIR

__all__ = ["noop_mask", "and_masks", "or_masks", "decide_blocks"]

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def noop_mask(batch: torch.Tensor, head: torch.Tensor, token_q: torch.Tensor,
              token_kv: torch.Tensor) -> torch.Tensor:
    """Keeps every score."""
    return batch.new_ones(size=(), dtype=torch.bool, device=batch.device)


def _check(mask_mods) -> None:
    if not all(callable(m) for m in mask_mods):
        raise RuntimeError(f"All inputs should be callable mask_mods: {mask_mods}")


def or_masks(*mask_mods: MaskMod) -> MaskMod:
    """The union of ``mask_mods`` (False for none)."""
    _check(mask_mods)

    def or_mask(b, h, q_idx, kv_idx):
        result = b.new_zeros((), dtype=torch.bool)
        for mask in mask_mods:
            result = result | mask(b, h, q_idx, kv_idx)
        return result

    return or_mask


def and_masks(*mask_mods: MaskMod) -> MaskMod:
    """The intersection of ``mask_mods`` (True for none)."""
    _check(mask_mods)

    def and_mask(b, h, q_idx, kv_idx):
        result = b.new_ones((), dtype=torch.bool)
        for mask in mask_mods:
            result = result & mask(b, h, q_idx, kv_idx)
        return result

    return and_mask


# ---------------------------------------------------------------------------
# Interval analysis of a mask_mod's IR: decide blocks without evaluating them
# ---------------------------------------------------------------------------
#
# Each integer value is over-approximated, per block, by an interval
# [lo, hi] of int64 tensors broadcastable to [B, H, Q_BLOCKS, KV_BLOCKS]; i1
# values use {0, 1}. An op the analysis does not model yields the whole range
# of its type (floats: None, i.e. unknown), so the result is always sound: a
# block is decided only when its interval is [1, 1] (all kept) or [0, 0].
# Bounds stay inside (-_INF, _INF); anything reaching them becomes _TOP.

_INF = 2**61
_I1 = "i1"


def _int_width(t) -> Optional[int]:
    from mlir import ir

    if isinstance(t, ir.IntegerType):
        return t.width
    if isinstance(t, ir.IndexType):
        return 64
    return None


def _top(width: int):
    """The whole range of a ``width``-bit value; None (unknown) for 64-bit
    values, whose range the int64 bounds cannot hold with headroom."""
    if width == 1:
        return (torch.tensor(0), torch.tensor(1))
    if width >= 62:
        return None
    return (torch.tensor(-(2 ** (width - 1))), torch.tensor(2 ** (width - 1) - 1))


def _fit(lo, hi, width: int):
    """Clamp an exact-arithmetic interval into what a ``width``-bit value can
    be: on possible wrap-around, the type's whole range (64-bit: unknown)."""
    if width >= 62:
        if bool(((lo <= -_INF) | (hi >= _INF)).any()):
            return None
        return lo, hi
    tlo, thi = _top(width)
    bad = (lo < tlo) | (hi > thi)
    if bool(bad.any()):
        lo = torch.where(bad, tlo, lo)
        hi = torch.where(bad, thi, hi)
    return lo, hi


def _exact(v):
    return v is not None and bool((v[0] == v[1]).all())


def _const_of(v) -> Optional[int]:
    if v is not None and v[0].numel() == 1 and int(v[0]) == int(v[1]):
        return int(v[0])
    return None


def _mul(a, b):
    cands = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    fl = [a[0].double() * b[0].double(), a[0].double() * b[1].double(),
          a[1].double() * b[0].double(), a[1].double() * b[1].double()]
    lo = functools.reduce(torch.minimum, cands)
    hi = functools.reduce(torch.maximum, cands)
    big = functools.reduce(torch.maximum, [f.abs() for f in fl]) >= _INF
    return torch.where(big, -_INF, lo), torch.where(big, _INF, hi)


def _floordiv_const(a, c: int, ceil: bool = False, trunc: bool = False):
    def f(x):
        if trunc:
            return torch.div(x, c, rounding_mode="trunc")
        if ceil:
            return -torch.div(-x, c, rounding_mode="floor")
        return torch.div(x, c, rounding_mode="floor")

    x, y = f(a[0]), f(a[1])
    return (torch.minimum(x, y), torch.maximum(x, y))  # monotone in x for a fixed c


def _cmp(pred: str, a, b, width: int):
    """[lo, hi] of an i1 comparison result."""
    true = torch.tensor(1)
    false = torch.tensor(0)
    if pred in ("eq", "ne"):
        same = (a[0] == a[1]) & (b[0] == b[1]) & (a[0] == b[0])
        apart = (a[1] < b[0]) | (b[1] < a[0])
        if pred == "ne":
            same, apart = apart, same
        return (torch.where(same, true, false), torch.where(apart, false, true))
    if width == 1:
        return None
    if pred.startswith("u"):
        if not (bool((a[0] >= 0).all()) and bool((b[0] >= 0).all())):
            return None  # negative values compare as huge unsigned ones
        pred = "s" + pred[1:]
    if pred == "slt":
        yes, no = a[1] < b[0], a[0] >= b[1]
    elif pred == "sle":
        yes, no = a[1] <= b[0], a[0] > b[1]
    elif pred == "sgt":
        yes, no = a[0] > b[1], a[1] <= b[0]
    elif pred == "sge":
        yes, no = a[0] >= b[1], a[1] < b[0]
    else:
        return None
    return (torch.where(yes, true, false), torch.where(no, false, true))


_CMP_PREDICATES = ["eq", "ne", "slt", "sle", "sgt", "sge", "ult", "ule", "ugt", "uge"]


class _RangeTable:
    """Range min / max queries along one dim of an integer capture (sparse
    tables), for loads whose index varies over a block."""

    def __init__(self, t: torch.Tensor, dim: int):
        t = t.to(torch.int64).movedim(dim, -1)
        n = t.shape[-1]
        self.levels = max(1, n.bit_length())
        mins, maxs = [t], [t]
        for k in range(1, self.levels):
            step = 1 << (k - 1)
            prev_min, prev_max = mins[-1], maxs[-1]
            shifted_min = torch.cat([prev_min[..., step:], prev_min[..., -1:].expand(*t.shape[:-1], step)], -1)
            shifted_max = torch.cat([prev_max[..., step:], prev_max[..., -1:].expand(*t.shape[:-1], step)], -1)
            mins.append(torch.minimum(prev_min, shifted_min))
            maxs.append(torch.maximum(prev_max, shifted_max))
        self.mins = torch.stack(mins)  # [K, ..., n]
        self.maxs = torch.stack(maxs)

    def query(self, lead: list, lo, hi):
        length = (hi - lo + 1).clamp(min=1)
        k = torch.floor(torch.log2(length.double())).long().clamp(max=self.levels - 1)
        # guard against log2 rounding: make sure 2^k <= length < 2^(k+1)
        k = torch.where((1 << k) > length, k - 1, k)
        k = torch.where((1 << (k + 1)) <= length, (k + 1).clamp(max=self.levels - 1), k)
        right = hi - (1 << k) + 1
        mn = torch.minimum(self.mins[(k, *lead, lo)], self.mins[(k, *lead, right)])
        mx = torch.maximum(self.maxs[(k, *lead, lo)], self.maxs[(k, *lead, right)])
        return mn, mx


def _load(step, env, captures, tables):
    """The interval of a memref.load from a capture."""
    t = captures.get(step.operands[0])
    if t is None or step.width is None or t.is_floating_point() or t.is_complex():
        return None
    idx = [env.get(v) for v in step.operands[1:]]
    if any(v is None for v in idx):
        return None
    if t.dim() == 0:
        v = torch.tensor(int(t))
        return (v, v)
    varying = [d for d, v in enumerate(idx) if not _exact(v)]
    if len(varying) > 1:
        return None
    dim = varying[0] if varying else t.dim() - 1
    key = (step.operands[0], dim)
    if key not in tables:
        tables[key] = _RangeTable(t, dim)
    # The region clamps every load index into the buffer (frontend).
    lead = [idx[d][0].clamp(0, t.shape[d] - 1) for d in range(t.dim()) if d != dim]
    lo = idx[dim][0].clamp(0, t.shape[dim] - 1)
    hi = idx[dim][1].clamp(0, t.shape[dim] - 1)
    return tables[key].query(lead, lo, hi)


@dataclass(frozen=True)
class _Step:
    """One op of a mask region, detached from MLIR: value ids are ints
    (block arguments first, then op results in order)."""

    name: str
    result: int
    width: Optional[int]  # integer width of the result; None: not an integer
    operands: tuple[int, ...]
    in_width: Optional[int] = None  # integer width of the first operand
    const: Optional[int] = None  # arith.constant's integer / bool value
    predicate: Optional[str] = None  # arith.cmpi's


@functools.lru_cache(maxsize=256)
def _program(text: str, capture_types: tuple[str, ...]):
    """(arg widths, steps, yielded value id) of a mask region's text."""
    from mlir import ir

    from . import _native

    cap_args = "".join(f", %bm_cap{i}: {t}" for i, t in enumerate(capture_types))
    cap_clause = ""
    if capture_types:
        cap_clause = (f" captures({', '.join(f'%bm_cap{i}' for i in range(len(capture_types)))}"
                      f" : {', '.join(capture_types)})")
    holder = (f"func.func @holder(%bm_i: index{cap_args}) -> f32 {{\n"
              f"  %bm_s = arith.constant 0.0 : f32\n"
              f"  %bm_r = flexattn.apply_mods %bm_s at(%bm_i, %bm_i, %bm_i, %bm_i){cap_clause} "
              f"attributes {{masked}} mask_mod {{\n{text}\n}} : f32\n"
              f"  return %bm_r : f32\n}}\n")
    with _native.new_context(), ir.Location.unknown():
        module = ir.Module.parse(holder)
        apply = list(module.body.operations[0].regions[0].blocks[0].operations)[1]
        blk = apply.regions[1].blocks[0]
        ids: dict = {}
        for a in blk.arguments:
            ids[a] = len(ids)
        arg_widths = tuple(_int_width(a.type) for a in blk.arguments)
        steps, result = [], None
        for op in blk.operations:
            name = op.operation.name
            if name == "flexattn.yield":
                result = ids.get(op.operands[0])
                break
            for r in op.results:
                ids[r] = len(ids)
            if len(op.results) != 1 or any(v not in ids for v in op.operands):
                continue  # multi-result or unknown operands: results stay unknown
            const = predicate = None
            if name == "arith.constant":
                attr = op.attributes["value"]
                if isinstance(attr, ir.BoolAttr):
                    const = int(attr.value)
                elif isinstance(attr, ir.IntegerAttr):
                    const = attr.value
            elif name == "arith.cmpi":
                k = ir.IntegerAttr(op.attributes["predicate"]).value
                predicate = _CMP_PREDICATES[k] if 0 <= k < len(_CMP_PREDICATES) else None
            steps.append(_Step(
                name, ids[op.results[0]], _int_width(op.results[0].type),
                tuple(ids[v] for v in op.operands),
                _int_width(op.operands[0].type) if len(op.operands) else None, const, predicate))
    return arg_widths, tuple(steps), result


def decide_blocks(mask: ModIR, captures, shape, lengths, block):
    """Per block of ``shape = (B, H, Q_BLOCKS, KV_BLOCKS)``: ``(all_kept,
    none_kept)`` bool tensors, True where the interval analysis proves the
    mask keeps every / no element of the block's real (clipped) extent; both
    False where it cannot tell. ``captures`` are CPU copies of the mask's
    captured tensors, in order."""
    B, H, QB, KB = shape
    (Q, KV), (bq, bkv) = lengths, block
    arg_widths, steps, result_id = _program(mask.text, tuple(mask.capture_types))
    q0 = torch.arange(QB).view(1, 1, QB, 1) * bq
    k0 = torch.arange(KB).view(1, 1, 1, KB) * bkv
    inputs = [
        (torch.arange(B).view(B, 1, 1, 1),) * 2,
        (torch.arange(H).view(1, H, 1, 1),) * 2,
        (q0, torch.clamp(q0 + bq, max=Q) - 1),
        (k0, torch.clamp(k0 + bkv, max=KV) - 1),
    ]
    env: dict = {i: _fit(v[0], v[1], arg_widths[i]) for i, v in enumerate(inputs)}
    cap_map = {4 + i: t for i, t in enumerate(captures)}
    tables: dict = {}
    for step in steps:
        try:
            value = _transfer(step, env, cap_map, tables)
        except Exception:  # noqa: BLE001 - an unmodelled corner: unknown
            value = None
        if step.width is not None:
            if value is None:
                value = _top(step.width)  # an i1 is never unknown: [0, 1] at worst
            else:
                value = _fit(torch.as_tensor(value[0]), torch.as_tensor(value[1]), step.width)
        env[step.result] = value
    result = env.get(result_id)
    if result is None:
        none = torch.zeros(shape, dtype=torch.bool)
        return none, none
    lo, hi = (t.expand(shape) for t in result)
    return lo == 1, hi == 0


def _transfer(step: _Step, env, captures, tables):
    """The interval of ``step``'s result, or None (unknown)."""
    name, width, in_width = step.name, step.width, step.in_width
    if name == "arith.constant":
        if step.const is None or width is None:
            return None
        v = torch.tensor(step.const & 1 if width == 1 else step.const)
        return (v, v)
    if name == "memref.load":
        return _load(step, env, captures, tables)
    ops = [env.get(v) for v in step.operands]
    if width is None or any(o is None for o in ops):
        return None
    if name == "arith.addi":
        a, b = ops
        return (a[0] + b[0], a[1] + b[1])
    if name == "arith.subi":
        a, b = ops
        return (a[0] - b[1], a[1] - b[0])
    if name == "arith.muli":
        return _mul(*ops)
    if name in ("arith.extsi", "arith.index_cast", "arith.trunci"):
        a = ops[0]
        if in_width == 1 and name == "arith.extsi":
            return (-a[1], -a[0])
        return a  # _fit widens a truncation that may wrap
    if name in ("arith.extui", "arith.index_castui"):
        a = ops[0]
        return a if bool((a[0] >= 0).all()) else None
    if name == "arith.cmpi":
        return _cmp(step.predicate, ops[0], ops[1], in_width) if step.predicate else None
    if name in ("arith.andi", "arith.ori", "arith.xori") and width == 1:
        a, b = ops
        if name == "arith.andi":
            return (a[0] * b[0], a[1] * b[1])
        if name == "arith.ori":
            return (torch.maximum(a[0], b[0]), torch.maximum(a[1], b[1]))
        exact = (a[0] == a[1]) & (b[0] == b[1])
        x = a[0] ^ b[0]
        return (torch.where(exact, x, 0), torch.where(exact, x, 1))
    if name == "arith.select":
        c, a, b = ops
        lo = torch.where(c[0] == 1, a[0], torch.where(c[1] == 0, b[0], torch.minimum(a[0], b[0])))
        hi = torch.where(c[0] == 1, a[1], torch.where(c[1] == 0, b[1], torch.maximum(a[1], b[1])))
        return (lo, hi)
    if width == 1:
        return None
    if name in ("arith.maxsi", "arith.minsi"):
        f = torch.maximum if name == "arith.maxsi" else torch.minimum
        return (f(ops[0][0], ops[1][0]), f(ops[0][1], ops[1][1]))
    if name == "math.absi":
        a = ops[0]
        lo = torch.where(a[0] >= 0, a[0], torch.where(a[1] <= 0, -a[1], 0))
        hi = torch.maximum(a[0].abs(), a[1].abs())
        tlo = -(2 ** (width - 1))
        hi = torch.where(a[0] <= tlo, _INF, hi)  # abs(INT_MIN) wraps: widened by _fit
        return (lo, hi)
    c = _const_of(ops[1]) if len(ops) == 2 else None
    if c is None or c == 0:
        return None
    if name == "arith.floordivsi":
        return _floordiv_const(ops[0], c)
    if name == "arith.ceildivsi":
        return _floordiv_const(ops[0], c, ceil=True)
    if name == "arith.divsi" and c != -1:
        return _floordiv_const(ops[0], c, trunc=True)
    if name == "arith.shrsi" and 0 <= c < width:
        return _floordiv_const(ops[0], 1 << c)
    if name == "arith.shli" and 0 <= c < min(width, 30):
        return _mul(ops[0], (torch.tensor(1 << c),) * 2)
    if name == "arith.remsi" and c > 0:
        a = ops[0]
        same = (a[0] >= 0) & (torch.div(a[0], c, rounding_mode="floor")
                              == torch.div(a[1], c, rounding_mode="floor"))
        lo = torch.where(same, a[0] % c, torch.where(a[0] >= 0, 0, -(c - 1)))
        hi = torch.where(same, a[1] % c, c - 1)
        return (lo, hi)
    return None
