"""The backward's preprocessing kernel on GPUs: ``delta = rowsum(dout * out)
- dlse`` in float32 (FlashAttention-2's D), which the GPU backward kernel
reads as an argument (``BackwardSpec.delta_input``).

A row dot product has nothing to tile, fuse or differentiate, so
:class:`DeltaSpec` builds its kernel directly in upstream dialects (gpu,
vector, memref, arith) and the backend's ``delta`` stages only outline,
lower to NVVM and assemble it:

    delta module (func + gpu.launch) -> kernel (outlined) -> nvvm -> ptx

The kernel reads each row once: ``lanes`` threads per row, each loading 16
bytes of dout and of out (``vector.load``, one ``ld.global.v4``), products
summed in float32 (exact for 16-bit inputs), then across the row's lanes
by ``gpu.shuffle xor``; the row's first lane writes delta. torch's eager
``einsum`` over float32 copies, which the backward used before, moves seven
times the bytes (docs/training.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

from mlir import ir

from .spec import BufferType

__all__ = ["DeltaSpec", "delta_spec"]

#: Threads per CTA of the kernel.
THREADS = 256
#: Bytes each thread loads per row of dout (and of out).
_VECTOR_BYTES = 16
_ELEM_BYTES = {"bf16": 2, "f16": 2, "f32": 4}


@dataclass(frozen=True)
class DeltaSpec:
    """What one delta kernel is specialised on: the shape and element type
    of ``out`` (= dout, ``[B, H, M, Dv]``) and whether ``dlse`` (``[B, H,
    M]`` float32) is subtracted."""

    out: BufferType
    has_dlse: bool = False

    @property
    def name(self) -> str:
        return "backward_delta"

    @property
    def kind(self) -> str:
        """Which stage table of the backend compiles it."""
        return "delta"

    @property
    def rows(self) -> int:
        b, h, m, _ = self.out.shape
        return b * h * m

    @property
    def vector(self) -> int:
        """Elements a thread loads per row and tensor (16 bytes)."""
        return _VECTOR_BYTES // _ELEM_BYTES[self.out.elem]

    @property
    def lanes(self) -> int:
        """Threads per row: Dv / vector, rounded up to a power of two (the
        shuffle tree's width; the lanes past Dv add 0)."""
        need = self.out.shape[-1] // self.vector
        return 1 << (need - 1).bit_length()

    def arguments(self) -> list[tuple[str, BufferType]]:
        """dout, out, [dlse], delta."""
        rows = BufferType(self.out.shape[:3], "f32")
        return ([("dout", self.out), ("out", self.out)]
                + ([("dlse", rows)] if self.has_dlse else []) + [("delta", rows)])

    def output_names(self) -> list[str]:
        return ["delta"]

    def digest(self) -> str:
        return hashlib.sha256(repr(("delta", self.out, self.has_dlse)).encode()).hexdigest()

    def build(self) -> ir.Module:
        """The module: ``func.func @backward_delta`` launching the kernel
        (in the current context)."""
        return ir.Module.parse(self.text())

    def text(self) -> str:
        b, h, m, dv = self.out.shape
        rows, vec, lanes, elem = self.rows, self.vector, self.lanes, self.out.elem
        per_block = THREADS // lanes
        grid = -(-rows // per_block)
        t4 = f"memref<{b}x{h}x{m}x{dv}x{elem}>"
        t3 = f"memref<{b}x{h}x{m}xf32>"
        flat2, flat1 = f"memref<{rows}x{dv}x{elem}>", f"memref<{rows}xf32>"
        vt = f"vector<{vec}x{elem}>"
        vf = f"vector<{vec}xf32>"
        dlse_arg = f", %dlse: {t3}" if self.has_dlse else ""
        load = (f"%{{n}}v = vector.load %{{n}}2[%row, %col] {{{{alignment = 16 : i64}}}} : {flat2}, {vt}\n"
                + ("" if elem == "f32" else f"        %{{n}}f = arith.extf %{{n}}v : {vt} to {vf}\n"))
        val = (lambda n: f"%{n}v") if elem == "f32" else (lambda n: f"%{n}f")
        shuffles, total = [], "%part"
        width = lanes // 2
        while width >= 1:
            shuffles.append(
                f"        %o{width}, %ok{width} = gpu.shuffle xor {total}, %c{width}_i32, %c32_i32 : f32\n"
                f"        %s{width} = arith.addf {total}, %o{width} : f32\n")
            total = f"%s{width}"
            width //= 2
        consts = "".join(f"        %c{w}_i32 = arith.constant {w} : i32\n"
                         for w in sorted({1 << i for i in range(max(lanes.bit_length() - 1, 0))} | {32}))
        sub = (f"        %dl = memref.collapse_shape %dlse [[0, 1, 2]] : {t3} into {flat1}\n"
               f"        %lse = memref.load %dl[%row] : {flat1}\n"
               f"        %res = arith.subf {total}, %lse : f32\n") if self.has_dlse else ""
        res = "%res" if self.has_dlse else total
        return f"""
module {{
  func.func @{self.name}(%dout: {t4}, %out: {t4}{dlse_arg}, %delta: {t3}) {{
    %one = arith.constant 1 : index
    %grid = arith.constant {grid} : index
    %threads = arith.constant {THREADS} : index
    gpu.launch blocks(%bx, %by, %bz) in (%gx = %grid, %gy = %one, %gz = %one)
               threads(%tx, %ty, %tz) in (%sx = %threads, %sy = %one, %sz = %one) {{
        %lanes = arith.constant {lanes} : index
        %per_block = arith.constant {per_block} : index
        %vec = arith.constant {vec} : index
        %last = arith.constant {rows - 1} : index
        %dv = arith.constant {dv} : index
        %zero = arith.constant 0 : index
        %zf = arith.constant 0.0 : f32
{consts}        %lane = arith.remui %tx, %lanes : index
        %in_block = arith.divui %tx, %lanes : index
        %base = arith.muli %bx, %per_block : index
        %row_raw = arith.addi %base, %in_block : index
        %row = arith.minui %row_raw, %last : index
        %col_raw = arith.muli %lane, %vec : index
        %has_col = arith.cmpi ult, %col_raw, %dv : index
        %col = arith.select %has_col, %col_raw, %zero : index
        %dout2 = memref.collapse_shape %dout [[0, 1, 2], [3]] : {t4} into {flat2}
        %out2 = memref.collapse_shape %out [[0, 1, 2], [3]] : {t4} into {flat2}
        {load.format(n="dout")}        {load.format(n="out")}        %prod = arith.mulf {val("dout")}, {val("out")} : {vf}
        %sum = vector.reduction <add>, %prod : {vf} into f32
        %part = arith.select %has_col, %sum, %zf : f32
{"".join(shuffles)}{sub}        %first = arith.cmpi eq, %lane, %zero : index
        %inside = arith.cmpi eq, %row, %row_raw : index
        %write = arith.andi %first, %inside : i1
        scf.if %write {{
          %d1 = memref.collapse_shape %delta [[0, 1, 2]] : {t3} into {flat1}
          memref.store {res}, %d1[%row] : {flat1}
        }}
        gpu.terminator
    }}
    return
  }}
}}
"""


def delta_spec(out_shape, dtype: str, has_dlse: bool) -> Optional[DeltaSpec]:
    """The delta kernel of ``out`` (``[B, H, M, Dv]``, MLIR element type
    ``dtype``), or None where it does not apply: Dv not a multiple of 16
    bytes' elements, or over 32 such (torch's reduction computes those)."""
    if dtype not in _ELEM_BYTES or len(out_shape) != 4:
        return None
    spec = DeltaSpec(BufferType(tuple(int(s) for s in out_shape), dtype), has_dlse)
    dv = spec.out.shape[-1]
    if dv % spec.vector or dv // spec.vector > 32 or spec.rows == 0:
        return None
    return spec
