"""The CPU backend: its stages, forward and backward, and the runner of
what they make.

    forward:  tiled -> sparse -> fused -> inlined -> loops -> llvm
    backward: differentiated -> tiled -> sparse -> decomposed -> inlined
              -> loops -> llvm

The LLVM-dialect module is JIT-compiled by MLIR's ExecutionEngine and run on
torch CPU tensors zero-copy: each tensor is passed as a memref descriptor
over its own storage (bf16/f16 included; the ABI only sees pointers).
"""

from __future__ import annotations

import ctypes
import functools
from typing import Sequence

from mlir import ir
from mlir.execution_engine import ExecutionEngine

from ... import _native
from ..options import CompileOptions
from ..pipeline import Backend, make_differentiated, make_sparse, make_tiled, run_pipeline
from ..spec import ENTRY, AttentionSpec

__all__ = ["BACKEND", "CpuKernel", "make_llvm", "memref_descriptor"]


def make_fused(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-fuse-online-softmax", "fused")


def make_inlined(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-inline-mods, canonicalize, cse", "inlined")


def make_loops(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-lower-to-loops, canonicalize, cse", "loops")


def make_llvm(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(
        mod,
        "arith-expand, convert-scf-to-cf, expand-strided-metadata, lower-affine, "
        "finalize-memref-to-llvm, convert-math-to-llvm, convert-arith-to-llvm, "
        "convert-index-to-llvm, convert-func-to-llvm, convert-cf-to-llvm, "
        "reconcile-unrealized-casts",
        "llvm",
    )


def make_decomposed(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-decompose-backward", "decomposed")


def forward_stages(opts: CompileOptions) -> dict:
    return {"tiled": make_tiled, "sparse": make_sparse, "fused": make_fused,
            "inlined": make_inlined, "loops": make_loops, "llvm": make_llvm}


def backward_stages(opts: CompileOptions) -> dict:
    return {"differentiated": make_differentiated, "tiled": make_tiled,
            "sparse": make_sparse, "decomposed": make_decomposed,
            "inlined": make_inlined, "loops": make_loops, "llvm": make_llvm}


BACKEND = Backend("cpu", ("cpu",), forward_stages, backward_stages)


# -- the runner ----------------------------------------------------------------


@functools.cache
def _descriptor_type(rank: int) -> type[ctypes.Structure]:
    fields = [
        ("allocated", ctypes.c_void_p),
        ("aligned", ctypes.c_void_p),
        ("offset", ctypes.c_int64),
    ]
    if rank:
        fields += [("sizes", ctypes.c_int64 * rank), ("strides", ctypes.c_int64 * rank)]
    return type(f"MemRef{rank}D", (ctypes.Structure,), {"_fields_": fields})


@functools.cache
def _dims_type(rank: int) -> type:
    return ctypes.c_int64 * rank


def memref_descriptor(tensor) -> ctypes.Structure:
    """A ranked memref descriptor over ``tensor``'s storage (no copy)."""
    rank = tensor.dim()
    ptr = tensor.data_ptr()
    if not rank:
        return _descriptor_type(0)(ptr, ptr, 0)
    dims = _dims_type(rank)
    return _descriptor_type(rank)(ptr, ptr, 0, dims(*tensor.shape), dims(*tensor.stride()))


class CpuKernel:
    """A JIT-compiled kernel; call it with the spec's arguments in order."""

    def __init__(self, compiled):
        if compiled.options.target != "cpu":
            raise ValueError(f"CpuKernel needs a cpu-target compilation, got {compiled.options.target!r}")
        self._init(compiled.module, compiled.spec, compiled.options)

    @classmethod
    def from_llvm_ir(cls, text: str, spec: AttentionSpec, opts: CompileOptions) -> "CpuKernel":
        """A kernel from cached LLVM-dialect IR (only LLVM code generation runs)."""
        kernel = cls.__new__(cls)
        with _native.new_context():
            module = ir.Module.parse(text)
        kernel._init(module, spec, opts)
        return kernel

    def _init(self, module, spec: AttentionSpec, opts: CompileOptions) -> None:
        self.module, self.spec = module, spec
        self.engine = ExecutionEngine(module, opt_level=opts.opt_level)
        self._entry = self.engine.lookup(ENTRY)
        self._expected = spec.arguments()

    def __call__(self, tensors: Sequence) -> None:
        expected = self._expected
        if len(tensors) != len(expected):
            raise TypeError(f"{self.spec.name}: expected {len(expected)} buffers, got {len(tensors)}")
        descriptors = []
        for (name, btype), t in zip(expected, tensors):
            if t.device.type != "cpu" or not t.is_contiguous() or not btype.admits(t.shape):
                raise ValueError(
                    f"{self.spec.name}: argument {name} must be a contiguous CPU tensor "
                    f"of shape {btype.shape}, got {tuple(t.shape)} on {t.device}"
                )
            descriptors.append(memref_descriptor(t))
        # The packed ABI: an array of pointers to (pointers to descriptors).
        pointers = [ctypes.pointer(d) for d in descriptors]
        packed = (ctypes.c_void_p * len(pointers))(*map(ctypes.addressof, pointers))
        self._entry(packed)
