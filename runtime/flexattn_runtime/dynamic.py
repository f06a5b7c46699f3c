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
sizes. Pure Python, without CUDA (the launch object of a dynamic kernel,
`flexattn_runtime.kernel.DynamicLaunch`, uses these).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .errors import ArgumentError, MetadataError

__all__ = ["SIZE_OPS", "MemrefParam", "parse_size", "evaluate", "bind_sizes",
           "check_shapes", "contiguous_strides", "descriptor_words", "param_words"]

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
