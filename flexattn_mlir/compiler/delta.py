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
from mlir.dialects import arith, func, gpu, memref, scf, vector

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
        (in the current context; built with the bindings)."""
        dv = self.out.shape[-1]
        rows, vec, lanes = self.rows, self.vector, self.lanes
        per_block = THREADS // lanes
        elem = ir.Type.parse(self.out.elem)
        f32, i32 = ir.F32Type.get(), ir.IntegerType.get_signless(32)
        index = ir.IndexType.get()
        args = self.arguments()
        module = ir.Module.create()
        with ir.InsertionPoint(module.body):
            fn = func.FuncOp(self.name, ([t.memref_type() for _, t in args], []))
        entry = fn.add_entry_block()
        a = dict(zip([n for n, _ in args], entry.arguments))

        def cst(v, t=index):
            return arith.ConstantOp(t, v).result

        with ir.InsertionPoint(entry):
            one = cst(1)
            launch = gpu.LaunchOp((cst(-(-rows // per_block)), one, one), (cst(THREADS), one, one))
            func.ReturnOp([])
        body = launch.body.blocks[0]  # the builder made it (ids, counts)
        bx, tx = body.arguments[0], body.arguments[3]
        flat2 = ir.MemRefType.get([rows, dv], elem)
        flat1 = ir.MemRefType.get([rows], f32)
        with ir.InsertionPoint(body):
            lane = arith.RemUIOp(tx, cst(lanes)).result
            row_raw = arith.AddIOp(arith.MulIOp(bx, cst(per_block)).result,
                                   arith.DivUIOp(tx, cst(lanes)).result).result
            row = arith.MinUIOp(row_raw, cst(rows - 1)).result  # loads stay inside
            col_raw = arith.MulIOp(lane, cst(vec)).result
            has_col = arith.CmpIOp(arith.CmpIPredicate.ult, col_raw, cst(dv)).result
            col = arith.SelectOp(has_col, col_raw, cst(0)).result
            vt, vf = ir.VectorType.get([vec], elem), ir.VectorType.get([vec], f32)

            def load(name):
                flat = memref.CollapseShapeOp(flat2, a[name], [[0, 1, 2], [3]]).result
                x = vector.LoadOp(vt, flat, [row, col], alignment=16).result  # ld.global.v4
                return x if self.out.elem == "f32" else arith.ExtFOp(vf, x).result

            prod = arith.MulFOp(load("dout"), load("out")).result
            part = vector.ReductionOp(f32, vector.CombiningKind.ADD, prod).result
            total = arith.SelectOp(has_col, part, cst(0.0, f32)).result
            width = lanes // 2
            while width >= 1:  # the row's lanes, a butterfly
                other = gpu.ShuffleOp(total, cst(width, i32), cst(32, i32),
                                      gpu.ShuffleMode.XOR).results[0]
                total = arith.AddFOp(total, other).result
                width //= 2
            rows_of = lambda name: memref.CollapseShapeOp(flat1, a[name], [[0, 1, 2]]).result
            if self.has_dlse:
                total = arith.SubFOp(total, memref.LoadOp(rows_of("dlse"), [row]).result).result
            write = arith.AndIOp(
                arith.CmpIOp(arith.CmpIPredicate.eq, lane, cst(0)).result,
                arith.CmpIOp(arith.CmpIPredicate.eq, row, row_raw).result).result
            guard = scf.IfOp(write)
            with ir.InsertionPoint(guard.then_block):
                memref.StoreOp(total, rows_of("delta"), [row])
                scf.YieldOp([])
            gpu.TerminatorOp()
        return module


def delta_spec(out: BufferType, has_dlse: bool) -> Optional[DeltaSpec]:
    """The delta kernel of ``out`` (``[B, H, M, Dv]``), or None where it
    does not apply: another element type or rank, Dv not a multiple of 16
    bytes' elements, or over 32 such (torch's reduction computes those)."""
    if out.elem not in _ELEM_BYTES or len(out.shape) != 4:
        return None
    spec = DeltaSpec(out, has_dlse)
    dv = out.shape[-1]
    if dv % spec.vector or dv // spec.vector > 32 or spec.rows == 0:
        return None
    return spec
