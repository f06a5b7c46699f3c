"""flexattn-fold-tile-divisions against an independent evaluation: each
function below is evaluated by a small interpreter of its integer arithmetic
(two's-complement wrapping at every width, as LLVM computes it) before and
after the pass, on a grid of arguments that includes block indices whose
tile starts wrap in i32 and negative ones; the pass must change the IR where
it says it folds and never change a value."""

from __future__ import annotations

import itertools

import pytest

from flexattn_mlir import _native
from flexattn_mlir.compiler.pipeline import run_pipeline

# Block indices: small, negative, and the ones whose starts wrap i32/index.
BLOCKS = [0, 1, 2, 3, 7, 100, -1, -2, -3, 2**24 - 1, 2**24, 2**25 + 1, -(2**24) - 1,
          2**31 - 1, -(2**31), 2**30 + 5]
LANES = range(0, 40, 3)


def _start_plus(tile: int, op: str, bound: int, times: int = 1) -> str:
    """``%kv32``: a tile start (block index ``%b`` times ``tile``) plus
    ``(%lane op bound) * times``, as i32."""
    scaled = (f"\n  %c_times = arith.constant {times} : index"
              f"\n  %col = arith.muli %j, %c_times : index" if times != 1 else
              "\n  %col = arith.addi %j, %c_zero : index")
    return f"""
  %c_tile = arith.constant {tile} : index
  %c_bound = arith.constant {bound} : index
  %c_zero = arith.constant 0 : index
  %blk = arith.index_cast %b : i32 to index
  %start = arith.muli %blk, %c_tile : index
  %j = arith.{op} %lane, %c_bound : index{scaled}
  %kv = arith.addi %start, %col : index
  %kv32 = arith.index_cast %kv : index to i32"""


def _column(tile: int) -> str:
    """The first column of a thread's scores: a tile start plus 2 x its lane
    in the quad."""
    return _start_plus(tile, "remui", 4, times=2)


def _one_division(tile: int, op: str, bound: int, page: int, i64: bool = False) -> str:
    """`(%b tile + (%lane op bound)) floordiv page` on the i32 column, or on
    its sign extension to i64."""
    t = "i64" if i64 else "i32"
    widen = "\n  %kv64 = arith.extsi %kv32 : i32 to i64" if i64 else ""
    return (f"\nfunc.func @f(%b: i32, %step: index, %lane: index) -> {t} {{"
            + _start_plus(tile, op, bound) + f"""{widen}
  %c_page = arith.constant {page} : {t}
  %p = arith.floordivsi {"%kv64" if i64 else "%kv32"}, %c_page : {t}
  return %p : {t}
}}""")


CASES = {
    # (function text, folds?)
    "page_of_a_64_column_half": ("""
func.func @f(%b: i32, %step: index, %lane: index) -> i32 {
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  %c57 = arith.constant 57 : i32
  %c128_i32 = arith.constant 128 : i32
  %blk = arith.index_cast %b : i32 to index
  %start = arith.muli %blk, %c128 : index
  %s2 = arith.remui %step, %c2 : index
  %half = arith.muli %s2, %c64 : index
  %q = arith.remui %lane, %c4 : index
  %col = arith.muli %q, %c2 : index
  %t = arith.addi %start, %half : index
  %kv = arith.addi %t, %col : index
  %kv32 = arith.index_cast %kv : index to i32
  %e = arith.addi %kv32, %c57 : i32
  %p = arith.floordivsi %e, %c128_i32 : i32
  return %p : i32
}""", True),
    # a 16-aligned start and an offset below 16: G = 16 divides 256
    "i64_mod_of_a_sign_extended_index": (_one_division(16, "remui", 16, 256, i64=True), True),
    "offset_past_the_alignment": (_one_division(64, "andi", 127, 128), False),
    "page_in_i64": (_one_division(256, "andi", 255, 256, i64=True), True),
    "floor_modulo_of_a_page": ("""
func.func @f(%b: i32, %step: index, %lane: index) -> (i64, i32) {""" + _column(64) + """
  %c0_i32 = arith.constant 0 : i32
  %c9 = arith.constant 9 : i32
  %c64_i32 = arith.constant 64 : i32
  %c64_i64 = arith.constant 64 : i64
  %e = arith.addi %kv32, %c9 : i32
  %page = arith.floordivsi %e, %c64_i32 : i32
  %r = arith.remsi %e, %c64_i32 : i32
  %nz = arith.cmpi ne, %r, %c0_i32 : i32
  %neg = arith.cmpi slt, %r, %c0_i32 : i32
  %both = arith.andi %nz, %neg : i1
  %up = arith.addi %r, %c64_i32 : i32
  %m = arith.select %both, %up, %r : i32
  %p64 = arith.extsi %page : i32 to i64
  %first = arith.muli %p64, %c64_i64 : i64
  %m64 = arith.extsi %m : i32 to i64
  %logical = arith.addi %first, %m64 : i64
  return %logical, %m : i64, i32
}""", True),
    "unsigned_division_and_odd_divisor": ("""
func.func @f(%b: i32, %step: index, %lane: index) -> (i32, i32) {""" + _column(64) + """
  %c9 = arith.constant 9 : i32
  %c96 = arith.constant 96 : i32
  %c128 = arith.constant 128 : i32
  %e = arith.addi %kv32, %c9 : i32
  %p = arith.floordivsi %e, %c96 : i32
  %u = arith.divui %e, %c128 : i32
  return %p, %u : i32, i32
}""", True),
}


def _signed(x: int, width: int) -> int:
    x &= (1 << width) - 1
    return x - (1 << width) if x >> (width - 1) else x


def _width(type_) -> int:
    text = str(type_)
    return 64 if text == "index" else int(text[1:])


def _floordiv(a: int, b: int) -> int:
    return a // b  # Python's // is floor division


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def evaluate(func, args: list[int]) -> list[int]:
    """The function's results on `args`: each value a signed integer of its
    type's width, every operation wrapping as two's complement."""
    block = func.regions[0].blocks[0]
    env = {}
    for arg, value in zip(block.arguments, args):
        env[arg] = _signed(value, _width(arg.type))
    for op in block.operations:
        name = op.operation.name
        if name == "func.return":
            return [env[v] for v in op.operands]
        w = _width(op.results[0].type)
        x = [env[v] for v in op.operands]
        unsigned = [v & ((1 << _width(o.type)) - 1) for v, o in zip(x, op.operands)]
        if name == "arith.constant":
            r = int(str(op.attributes["value"]).split(":")[0])
        elif name == "arith.addi":
            r = x[0] + x[1]
        elif name == "arith.subi":
            r = x[0] - x[1]
        elif name == "arith.muli":
            r = x[0] * x[1]
        elif name == "arith.andi":
            r = x[0] & x[1]
        elif name == "arith.remui":
            r = unsigned[0] % unsigned[1]
        elif name == "arith.divui":
            r = unsigned[0] // unsigned[1]
        elif name == "arith.floordivsi":
            r = _floordiv(x[0], x[1])
        elif name == "arith.divsi":
            r = _trunc_div(x[0], x[1])
        elif name == "arith.remsi":
            r = x[0] - x[1] * _trunc_div(x[0], x[1])
        elif name == "arith.cmpi":
            pred = str(op.attributes["predicate"]).split(":")[0].strip()
            r = {"0": x[0] == x[1], "1": x[0] != x[1], "2": x[0] < x[1], "3": x[0] <= x[1],
                 "4": x[0] > x[1], "5": x[0] >= x[1]}[pred]
            r = -1 if r else 0  # i1 true is all ones
        elif name == "arith.select":
            r = x[1] if x[0] else x[2]
        elif name in ("arith.index_cast", "arith.extsi", "arith.trunci"):
            r = x[0]
        elif name in ("arith.index_castui", "arith.extui"):
            r = unsigned[0]
        else:
            raise NotImplementedError(name)
        env[op.results[0]] = _signed(r, w)
    raise AssertionError("no return")


@pytest.mark.parametrize("case", sorted(CASES))
def test_fold_tile_divisions_keeps_every_value(case):
    from mlir import ir

    text, folds = CASES[case]
    with _native.new_context():
        before, after = ir.Module.parse(text), ir.Module.parse(text)
        run_pipeline(before, "canonicalize, cse", "fold")
        run_pipeline(after, "flexattn-fold-tile-divisions, canonicalize, cse", "fold")
        assert (str(after) != str(before)) == folds, str(after)
        f0, f1 = before.body.operations[0], after.body.operations[0]
        for b, step, lane in itertools.product(BLOCKS, [0, 1, 2, 3], LANES):
            args = [b, step, lane]
            assert evaluate(f0, args) == evaluate(f1, args), (case, args, str(after))
