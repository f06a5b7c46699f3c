"""Run a compiled attention kernel on torch CPU tensors.

A CPU kernel is a relocatable object for this host (its CPU and features),
linked into the process by a small ORC loader in our C library
(python/CpuRuntime.cpp): a cached object loads without code generation. It
is called on ``torch.get_num_threads()`` threads at once, each claiming
tiles from the kernel's work counter (flexattn-distribute-tiles; the
forward's and the backward's kernels alike), with every
tensor passed zero-copy as a memref descriptor over its own storage (bf16/f16
included; the ABI only sees pointers).
"""

from __future__ import annotations

import ctypes
import functools
import math
from typing import Sequence

import torch

from . import _native
from .driver import Compiled
from .options import CompileOptions
from .spec import ENTRY, AttentionSpec

__all__ = ["CpuKernel"]


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


def memref_descriptor(tensor) -> ctypes.Structure:
    """A ranked memref descriptor over ``tensor``'s storage (no copy)."""
    desc = _descriptor_type(tensor.dim())()
    desc.allocated = desc.aligned = tensor.data_ptr()
    desc.offset = 0
    if tensor.dim():
        desc.sizes[:] = list(tensor.shape)
        desc.strides[:] = list(tensor.stride())
    return desc


def _counter_descriptor(counter: ctypes.Array) -> ctypes.Structure:
    """The memref<1xi64> descriptor of the kernel's work counter."""
    desc = _descriptor_type(1)()
    desc.allocated = desc.aligned = ctypes.addressof(counter)
    desc.offset = 0
    desc.sizes[0] = desc.strides[0] = 1
    return desc


def _tiles(spec, opts: CompileOptions) -> int:
    """About how many tiles the kernel's work queue holds (more threads
    would find no work): the forward's Q tiles; a backward (a spec with a
    ``forward``) also has a KV-tile loop."""
    forward = getattr(spec, "forward", spec)
    b, hq, m, _ = forward.q.shape
    tiles = b * hq * math.ceil(m / opts.tile_q)
    if forward is not spec:
        tiles += b * forward.k.shape[1] * math.ceil(forward.k.shape[2] / opts.tile_kv)
    return tiles


class CpuKernel:
    """A loaded kernel; call it with the spec's arguments in order.

    ``object`` holds the machine code (what the disk cache stores)."""

    def __init__(self, obj: bytes, spec: AttentionSpec, opts: CompileOptions):
        self.object, self.spec, self.options = obj, spec, opts
        self._handle, self._entry = _native.cpu_load(obj, ENTRY)
        self.tiles = _tiles(spec, opts)

    @classmethod
    def compile(cls, compiled: Compiled) -> "CpuKernel":
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
        expected = self.spec.arguments()
        if len(tensors) != len(expected):
            raise TypeError(f"{self.spec.name}: expected {len(expected)} buffers, got {len(tensors)}")
        descriptors = []
        for (name, btype), t in zip(expected, tensors):
            if t.device.type != "cpu" or not t.is_contiguous() or tuple(t.shape) != btype.shape:
                raise ValueError(
                    f"{self.spec.name}: argument {name} must be a contiguous CPU tensor "
                    f"of shape {btype.shape}, got {tuple(t.shape)} on {t.device}"
                )
            descriptors.append(memref_descriptor(t))
        counter = (ctypes.c_int64 * 1)(0)
        descriptors.append(_counter_descriptor(counter))
        pointers = [ctypes.pointer(d) for d in descriptors]
        packed = (ctypes.c_void_p * len(pointers))()
        for i, p in enumerate(pointers):
            packed[i] = ctypes.cast(ctypes.pointer(p), ctypes.c_void_p)
        n = threads if threads is not None else torch.get_num_threads()
        _native.cpu_run(self._entry, packed, max(1, min(n, self.tiles)))
