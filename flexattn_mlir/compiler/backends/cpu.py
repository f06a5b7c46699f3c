"""The CPU backend: its stages, forward and backward, and the runner of
what they make.

    forward:  tiled -> [splitkv] -> sparse -> split -> fused -> inlined
              -> vector -> loops -> llvm  (splitkv: the decode path)
    backward: differentiated -> tiled -> sparse -> decomposed -> inlined
              -> loops -> llvm

A CPU kernel is a relocatable object for this host (its CPU and features),
linked into the process by a small ORC loader in our C library
(python/CpuRuntime.cpp): a cached object loads without code generation. It
is called on ``torch.get_num_threads()`` threads at once, each claiming
tiles from the kernel's work counter (flexattn-distribute-tiles; the
forward's and the backward's kernels alike), with every tensor passed
zero-copy as a memref descriptor over its own storage (bf16/f16 included;
the ABI only sees pointers). docs/cpu-pipeline.md has the details.
"""

from __future__ import annotations

import array
import ctypes
import functools
import math
from typing import Sequence

import torch
from mlir import ir

from ... import _native
from ..options import CompileOptions
from ..pipeline import Backend, make_differentiated, make_sparse, make_tiled, run_pipeline
from ..spec import ENTRY, AttentionSpec

__all__ = ["BACKEND", "CpuKernel", "host_has", "make_llvm", "memref_descriptor"]


def make_splitkv(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-split-kv", "splitkv")


def make_split(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-split-full-tiles", "split")


def make_fused(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-fuse-online-softmax", "fused")


def make_inlined(mod: ir.Module, opts: CompileOptions) -> None:
    # The mods compute in torch's int64 on i32 indices (q_idx - kv_idx > 0 is
    # an i64 compare of sign extensions); upstream's range narrowing moves what
    # provably fits back to i32, which the vectoriser packs 16 to a register.
    # A division by a page (block) of the tile's columns divides the tile's
    # start instead: a paged mask's page-table read is one broadcast scalar.
    run_pipeline(mod, "flexattn-inline-mods, canonicalize, cse, "
                      "flexattn-fold-tile-divisions, cse, "
                      "arith-int-range-narrowing{int-bitwidths-supported=32}, canonicalize",
                 "inlined")


def host_has(feature: str) -> bool:
    """Whether this host's CPU has the LLVM target feature ``feature`` (the
    CPU kernels are built for this host; its features are in the cache key)."""
    return f"+{feature}" in _native.cpu_host_target().split(" ")[1].split(",")


def make_vector(mod: ir.Module, opts: CompileOptions) -> None:
    bf16_dot = "true" if host_has("avx512bf16") else "false"
    run_pipeline(mod, f"flexattn-vectorize-tiles{{bf16-dot={bf16_dot}}}, canonicalize, cse",
                 "vector")


def make_loops(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-distribute-tiles, flexattn-lower-to-loops, canonicalize, cse",
                 "loops")


def make_llvm(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(
        mod,
        "arith-expand, convert-vector-to-scf{full-unroll=true}, convert-scf-to-cf, "
        "expand-strided-metadata, lower-affine, "
        "convert-vector-to-llvm{vector-transpose-lowering=shuffle16x16 enable-x86vector=true}, "
        "finalize-memref-to-llvm, convert-math-to-llvm, convert-arith-to-llvm, "
        "convert-index-to-llvm, convert-func-to-llvm, convert-cf-to-llvm, convert-ub-to-llvm, "
        "reconcile-unrealized-casts",
        "llvm",
    )


def make_decomposed(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-decompose-backward", "decomposed")


def forward_stages(opts: CompileOptions) -> dict:
    decode = {"splitkv": make_splitkv} if opts.decode else {}
    return {"tiled": make_tiled, **decode, "sparse": make_sparse, "split": make_split,
            "fused": make_fused, "inlined": make_inlined, "vector": make_vector,
            "loops": make_loops, "llvm": make_llvm}


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


def packed_arguments(tensors: Sequence, counter: ctypes.Array) -> tuple[int, tuple]:
    """The packed ABI's argument array for ``tensors`` then the work
    ``counter`` (a memref<1xi64>): an array of pointers to pointers to
    ranked memref descriptors. Every field of a descriptor is 8 bytes
    (allocated, aligned, offset, sizes, strides), so all of them are laid out
    in one int64 buffer (three arrays per call rather than a ctypes structure
    and two pointers per argument). Returns the array's address and what
    must stay alive while the kernel runs."""
    words, starts = [], []
    for t in tensors:
        starts.append(len(words))
        ptr = t.data_ptr()
        words += (ptr, ptr, 0)
        words += t.shape
        words += t.stride()
    starts.append(len(words))
    address = ctypes.addressof(counter)
    words += (address, address, 0, 1, 1)
    buf = array.array("q", words)
    base = buf.buffer_info()[0]
    descs = array.array("Q", [base + 8 * i for i in starts])
    dbase = descs.buffer_info()[0]
    packed = array.array("Q", range(dbase, dbase + 8 * len(starts), 8))
    return packed.buffer_info()[0], (buf, descs, packed)


def _tiles(spec, opts: CompileOptions, tensors: Sequence, splits: int = 1) -> int:
    """About how many tiles the kernel's work queue holds for this call (more
    threads would find no work): the forward's Q tiles (packed and split on
    the decode path); a backward (a spec with a ``forward``) also has a
    KV-tile loop. From the call's tensors, as a dynamic-shape kernel's spec
    has no lengths: q is the first, k the second argument."""
    b, hq, m, _ = tensors[0].shape
    if opts.pack_heads:
        hq, m = tensors[1].shape[1], hq // tensors[1].shape[1] * m
    tiles = b * hq * math.ceil(m / opts.tile_q) * splits
    if hasattr(spec, "forward"):
        k = tensors[1]
        tiles += b * k.shape[1] * math.ceil(k.shape[2] / opts.tile_kv)
    return tiles


#: Tickets per thread a decode call's split aims at (the work queue
#: balances the rest); at most this many KV ranges.
_TICKETS_PER_THREAD = 4
_MAX_SPLITS = 64


def split_count(opts: CompileOptions, q, k, threads: int) -> int:
    """How many KV ranges each tile of a decode call is split into: enough
    tiles for ``threads`` threads to share, no more ranges than KV tiles."""
    b, hq, m, _ = q.shape
    heads, rows = (k.shape[1], hq // k.shape[1] * m) if opts.pack_heads else (hq, m)
    tiles = b * heads * math.ceil(rows / opts.tile_q)
    kv_tiles = math.ceil(k.shape[2] / opts.tile_kv)
    want = math.ceil(_TICKETS_PER_THREAD * threads / max(tiles, 1))
    return max(1, min(want, kv_tiles, _MAX_SPLITS))


def _split_scratch(opts: CompileOptions, tensors: Sequence, threads: int) -> tuple:
    """flexattn-split-kv's scratch arguments for this call: partial outputs
    [S, B*Hq*M*Dv], their lse [S, B*Hq*M] (f32) and the tiles' arrival
    counters (zero; B*Hq*M is at least the number of tiles)."""
    q, k, v = tensors[:3]
    s = split_count(opts, q, k, threads)
    rows = q.shape[0] * q.shape[1] * q.shape[2]
    return (torch.empty((s, rows * v.shape[3]), dtype=torch.float32),
            torch.empty((s, rows), dtype=torch.float32),
            torch.zeros(rows, dtype=torch.int32))


class CpuKernel:
    """A loaded kernel; call it with the spec's arguments in order.

    ``object`` holds the machine code (what the disk cache stores)."""

    def __init__(self, obj: bytes, spec: AttentionSpec, opts: CompileOptions):
        self.object, self.spec, self.options = obj, spec, opts
        self._handle, self._entry = _native.cpu_load(obj, ENTRY)
        self._expected = spec.arguments()

    @classmethod
    def compile(cls, compiled) -> "CpuKernel":
        """Code generation for this host from a cpu-target compilation."""
        if compiled.options.target != "cpu":
            raise ValueError(f"CpuKernel needs a cpu-target compilation, got {compiled.options.target!r}")
        obj = _native.cpu_compile(compiled.module, ENTRY, compiled.options.opt_level)
        return cls(obj, compiled.spec, compiled.options)

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle:
            _native.cpu_unload(handle)

    def __call__(self, tensors: Sequence, threads: int | None = None) -> None:
        """Runs the kernel on ``threads`` threads (default
        ``torch.get_num_threads()``)."""
        expected = self._expected
        if len(tensors) != len(expected):
            raise TypeError(f"{self.spec.name}: expected {len(expected)} buffers, got {len(tensors)}")
        for (name, btype), t in zip(expected, tensors):
            if not t.is_cpu or not t.is_contiguous() or not btype.admits(t.shape):
                raise ValueError(
                    f"{self.spec.name}: argument {name} must be a contiguous CPU tensor "
                    f"of shape {btype.shape}, got {tuple(t.shape)} on {t.device}"
                )
        n = threads if threads is not None else torch.get_num_threads()
        splits = 1
        args = tensors
        if self.options.decode and not hasattr(self.spec, "forward"):
            scratch = _split_scratch(self.options, tensors, n)
            splits = scratch[0].shape[0]
            args = [*tensors, *scratch]
        counter = (ctypes.c_int64 * 1)(0)
        packed, keep_alive = packed_arguments(args, counter)
        tiles = _tiles(self.spec, self.options, tensors, splits)
        _native.cpu_run(self._entry, packed, max(1, min(n, tiles)))
        del keep_alive
