"""Dynamic-shape kernels: shapes that name run-time sizes, a grid computed
from them, and memref-descriptor parameters.

A dynamic kernel's metadata writes each run-time dim of an argument's shape
as a name (``"shape": ["B", 8, "M", 64]``); one name is one size, so every
argument that names it must agree. Its ``grid`` entries are sizes: an int,
a name, or ``{"op": "ceildiv", "args": [size, size]}`` (ops: SIZE_OPS), the
host arithmetic the compiler's grid was made of. Its memref parameters are
``{"kind": "memref", "arg": name}``: upstream MLIR's memref descriptor,
passed as separate 8-byte kernel parameters (allocated and aligned pointer,
offset 0, the sizes, the row-major strides), from which the kernel reads its
sizes. Pure Python: everything but `DynamicLaunch.__call__` runs without
CUDA.
"""

from __future__ import annotations

import ctypes
import operator
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .errors import ArgumentError, MetadataError

__all__ = ["SIZE_OPS", "MemrefParam", "parse_size", "evaluate", "bind_sizes",
           "check_shapes", "contiguous_strides", "descriptor_words", "DynamicLaunch"]

#: The grid's operations on sizes (the compiler's unsigned index arithmetic).
SIZE_OPS = {
    "mul": operator.mul, "add": operator.add, "sub": operator.sub,
    "div": operator.floordiv, "ceildiv": lambda a, b: -(-a // b), "rem": operator.mod,
    "min": min, "max": max,
}
_NAME_RE = re.compile(r"^[A-Za-z_][\w.]*$")


@dataclass(frozen=True)
class MemrefParam:
    """A memref descriptor of tensor `arg`: 3 + 2 rank 8-byte parameters."""
    arg: str
    kind: str = "memref"


def is_name(d: Any) -> bool:
    """Whether a shape entry is a run-time size's name."""
    return isinstance(d, str)


def check_name(d: Any, path: str) -> str:
    if not isinstance(d, str) or not _NAME_RE.match(d):
        raise MetadataError(f"{path}: expected a size name such as 'M' or 'kv_indices.3', "
                            f"got {d!r}")
    return d


def parse_size(v: Any, path: str, names: set) -> Any:
    """A grid entry: an int >= 1, a name among `names`, or an op over sizes.
    Returns it as the evaluator takes it (ints, names, (fn, args) tuples)."""
    if isinstance(v, bool):
        raise MetadataError(f"{path}: expected a size, got {v!r}")
    if isinstance(v, int):
        if v < 0:
            raise MetadataError(f"{path}: must be >= 0, got {v}")
        return v
    if isinstance(v, str):
        if v not in names:
            raise MetadataError(f"{path}: names no run-time size of the arguments: {v!r} "
                                f"(sizes: {sorted(names)})")
        return v
    if isinstance(v, Mapping):
        op = v.get("op")
        if op not in SIZE_OPS:
            raise MetadataError(f"{path}.op: expected one of {sorted(SIZE_OPS)}, got {op!r}")
        args = v.get("args")
        if not isinstance(args, (list, tuple)) or len(args) != 2:
            raise MetadataError(f"{path}.args: expected two sizes, got {args!r}")
        return (SIZE_OPS[op], tuple(parse_size(a, f"{path}.args[{i}]", names)
                                    for i, a in enumerate(args)))
    raise MetadataError(f"{path}: expected an int, a size name or {{'op', 'args'}}, got {v!r}")


def evaluate(expr: Any, sizes: Mapping[str, int]) -> int:
    """The value of a parsed size for the call's `sizes` (name -> int)."""
    if isinstance(expr, int):
        return expr
    if isinstance(expr, str):
        return sizes[expr]
    fn, args = expr
    return fn(*(evaluate(a, sizes) for a in args))


def bind_sizes(arguments: Sequence, shapes: Sequence[Sequence[int]]) -> dict[str, int]:
    """name -> size from the call's shapes (the first argument naming it),
    without checks (a caller that vouches for the shapes: a call plan)."""
    sizes: dict[str, int] = {}
    for spec, shape in zip(arguments, shapes):
        for d, n in zip(spec.shape, shape):
            if is_name(d) and d not in sizes:
                sizes[d] = int(n)
    return sizes


def check_shapes(arguments: Sequence, shapes: Sequence[Sequence[int]]) -> dict[str, int]:
    """Each argument's shape against its metadata: rank, static dims, and one
    size per name (the first argument naming it fixes it). ArgumentError
    names the argument, the dim and what was expected. Returns the sizes."""
    sizes: dict[str, int] = {}
    where: dict[str, str] = {}
    for spec, shape in zip(arguments, shapes):
        shape = tuple(shape)
        want = "[" + ", ".join(str(d) for d in spec.shape) + "]"
        if len(shape) != len(spec.shape):
            raise ArgumentError(f"argument {spec.name!r}: expected shape {want} (rank "
                                f"{len(spec.shape)}), got {list(shape)}")
        for axis, (d, n) in enumerate(zip(spec.shape, shape)):
            if not is_name(d):
                if d != n:
                    raise ArgumentError(f"argument {spec.name!r}: expected shape {want}, got "
                                        f"{list(shape)} (dim {axis} must be {d})")
                continue
            if d not in sizes:
                sizes[d], where[d] = int(n), spec.name
            elif sizes[d] != n:
                raise ArgumentError(
                    f"argument {spec.name!r}: dim {axis} ({d}) is {n}, but argument "
                    f"{where[d]!r} has {d} = {sizes[d]} (expected shape {want})")
    return sizes


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(int(n), 1)
    return strides[::-1]


def descriptor_words(ptr: int, shape: Sequence[int]) -> list[int]:
    """A contiguous tensor's memref descriptor as 8-byte words: allocated
    and aligned pointer, offset 0, sizes, strides."""
    return [ptr, ptr, 0, *(int(n) for n in shape), *contiguous_strides(shape)]


def param_words(p: Any, rank: int) -> int:
    """8-byte kernel parameters of a metadata parameter of a tensor of `rank`."""
    return 3 + 2 * rank if isinstance(p, MemrefParam) else 1


class DynamicLaunch:
    """The PreparedLaunch of a dynamic kernel on one device: per call it
    reads the tensors' shapes, computes the grid from the metadata's sizes,
    writes every memref descriptor (pointers, sizes, strides) and TMA
    descriptor (keyed by address and shape) and launches. Launch objects are
    kept per grid. As `PreparedLaunch`, it checks the current device and the
    tensors' alignment; their shapes are the caller's to guarantee
    (`Kernel.__call__` validates them against the metadata first)."""

    #: At most this many grids keep their launch object.
    GRIDS = 256

    def __init__(self, kernel, device: int, launch_for_grid):
        from . import kernel as kernel_module  # its device and stream queries, at call time
        from .launch import check_alignment, scalar_value, validate_args
        from .metadata import ScalarParam, TensorMapParam

        self._queries = kernel_module
        self._check_alignment, self._validate = check_alignment, validate_args

        m = kernel.metadata
        self.kernel, self.device = kernel, device
        self.launch_for_grid = launch_for_grid
        self.launchers: dict[tuple, Any] = {}
        names = m.argument_names
        ranks = [len(a.shape) for a in m.arguments]
        # (first word, argument index, kind) per parameter.
        self.layout, words, self.scalars = [], 0, []
        self.sizes = []  # (ctypes value, size expression): written per call
        for p in m.params:
            if isinstance(p, ScalarParam):
                self.layout.append((words, -1, "scalar"))
                value = scalar_value(ScalarParam(p.kind, 0) if p.computed else p)
                self.scalars.append((words, value))
                if p.computed:
                    self.sizes.append((value, p.value))
                words += 1
                continue
            j = names.index(p.arg)
            kind = "memref" if isinstance(p, MemrefParam) else (
                "tensormap" if isinstance(p, TensorMapParam) else "ptr")
            self.layout.append((words, j, kind))
            words += param_words(p, ranks[j])
        self.values = (ctypes.c_uint64 * max(words, 1))()
        base = ctypes.addressof(self.values)
        addresses = [base + 8 * w for w in range(words)]
        for w, value in self.scalars:  # scalars keep their own ctypes values
            addresses[w] = ctypes.addressof(value)
        self.array = (ctypes.c_void_p * words)(*addresses) if words else None
        self.aligned = tuple((j, a.align - 1) for j, a in enumerate(m.arguments))

    def grid(self, tensors: Sequence) -> tuple[tuple[int, int, int], dict]:
        """The call's grid and its run-time sizes (name -> int)."""
        m = self.kernel.metadata
        sizes = bind_sizes(m.arguments, [t.shape for t in tensors])
        return tuple(evaluate(g, sizes) for g in m.grid), sizes

    def __call__(self, tensors: Sequence) -> None:
        import torch

        kernel, dev = self.kernel, self.device
        queries = self._queries
        if queries._current_index() != dev:
            cur = queries._current_index()
            self._validate(kernel.metadata, tensors, device=torch.device("cuda", cur))
            return kernel.prepare(cur)(tensors)
        ptrs = [t.data_ptr() for t in tensors]
        for j, mask in self.aligned:
            if ptrs[j] & mask:
                self._check_alignment(kernel.metadata.arguments[j], tensors[j])
        grid, sizes = self.grid(tensors)
        if 0 in grid:
            return  # an empty batch or sequence: nothing to compute
        stream = queries._current_stream(dev)
        values = self.values
        with kernel._lock:
            launcher = self.launchers.get(grid)
            if launcher is None:
                if len(self.launchers) >= self.GRIDS:
                    self.launchers.clear()
                launcher = self.launchers[grid] = self.launch_for_grid(grid)
            for value, expr in self.sizes:
                value.value = evaluate(expr, sizes)
            capturing, in_use = None, []  # TMA descriptors: as PreparedLaunch's
            for i, (w, j, kind) in enumerate(self.layout):
                if kind == "scalar":
                    continue
                t = tensors[j]
                if kind == "memref":
                    words = descriptor_words(ptrs[j], t.shape)
                    values[w:w + len(words)] = words
                elif kind == "ptr":
                    values[w] = ptrs[j]
                else:
                    if capturing is None:
                        capturing = torch.cuda.is_current_stream_capturing()
                        kernel._refill_staging(capturing)
                    desc = kernel._descriptor(i, kernel.metadata.params[i], t, ptrs[j], dev,
                                              stream, capturing)
                    in_use.append(desc)
                    values[w] = desc.data_ptr
            launcher(stream, self.array)

