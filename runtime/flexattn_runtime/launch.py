"""Argument validation and kernel-parameter packing.

Both are pure functions of (metadata, tensors): `validate_args` takes the
expected device as a parameter and never calls CUDA, so every error message is
tested on CPU-only machines with CPU tensors. `Kernel.__call__` runs
`validate_args` before anything else; nothing is launched on bad input.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable, Mapping, Sequence

import torch

from .dynamic import MemrefParam, bind_sizes, check_shapes, descriptor_words, evaluate
from .errors import ArgumentError, ArgumentTypeError
from .metadata import ArgumentSpec, KernelMetadata, PtrParam, ScalarParam, TensorMapParam

__all__ = ["validate_args", "build_params", "normalize_args", "check_alignment", "scalar_value"]


def _dt(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


def normalize_args(meta: KernelMetadata, args: Any) -> list[Any]:
    """Arguments in metadata order from a dict {name: tensor} or a sequence.

    Raises ArgumentTypeError for missing, unexpected or miscounted arguments.
    """
    names = meta.argument_names
    if isinstance(args, (list, tuple)):
        if len(args) != len(names):
            raise ArgumentTypeError(f"kernel {meta.entry!r}: expected {len(names)} "
                                    f"arguments {list(names)}, got {len(args)}")
        return list(args)
    if isinstance(args, Mapping):
        missing = [n for n in names if n not in args]
        extra = [k for k in args if k not in names]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing argument(s) {missing}")
            if extra:
                parts.append(f"unexpected argument(s) {extra}")
            raise ArgumentTypeError(f"kernel {meta.entry!r}: {'; '.join(parts)}; "
                                    f"expected {list(names)}")
        return [args[n] for n in names]
    raise ArgumentTypeError(f"kernel {meta.entry!r}: arguments must be a dict "
                            f"{{name: tensor}} or a list in the order {list(names)}, "
                            f"got {type(args).__name__}")


def _check_one(spec: ArgumentSpec, t: Any, device: torch.device) -> None:
    name = spec.name
    if not isinstance(t, torch.Tensor):
        raise ArgumentTypeError(f"argument {name!r}: expected a torch.Tensor "
                                f"({spec.describe()}), got {type(t).__name__}")
    if t.device != device:
        where = "a CPU tensor" if t.device.type == "cpu" else f"a tensor on {t.device}"
        raise ArgumentError(f"argument {name!r}: expected a CUDA tensor on {device}, got "
                            f"{where}")
    if t.dtype != spec.dtype:
        raise ArgumentTypeError(f"argument {name!r}: expected dtype {_dt(spec.dtype)}, got "
                                f"{_dt(t.dtype)}")
    if tuple(t.shape) != spec.shape and not spec.dynamic:  # run-time dims: check_shapes
        raise ArgumentError(f"argument {name!r}: expected shape {list(spec.shape)}, got "
                            f"{list(t.shape)}")
    if not t.is_contiguous():
        raise ArgumentError(f"argument {name!r}: expected a contiguous (row-major) tensor, "
                            f"got strides {list(t.stride())} for shape {list(t.shape)}; "
                            "pass t.contiguous()")
    check_alignment(spec, t)


def check_alignment(spec: ArgumentSpec, t: torch.Tensor) -> None:
    """ArgumentError unless a non-empty tensor's data_ptr has the argument's
    alignment (`align` bytes)."""
    if t.numel() and t.data_ptr() % spec.align:
        raise ArgumentError(
            f"argument {spec.name!r}: data_ptr {t.data_ptr():#x} is not {spec.align}-byte "
            f"aligned (storage offset {t.storage_offset()} elements); the kernel needs "
            f"{spec.align}-byte aligned bases (TMA and vector loads): pass t.clone()")


def validate_args(meta: KernelMetadata, args: Any, *, device: torch.device | str
                  ) -> list[torch.Tensor]:
    """Check every argument against the metadata; return them in metadata order.

    Per argument, in order: is a torch.Tensor (ArgumentTypeError), is on
    `device` (ArgumentError), dtype (ArgumentTypeError), exact shape,
    contiguous, data_ptr aligned (`align`, default 16 bytes) (ArgumentError).
    A dynamic kernel's shapes are checked after (`dynamic.check_shapes`:
    rank, static dims, one size per name). Then no output may overlap
    another argument in memory (ArgumentError).
    Global strides of tensor maps are a function of the (exact) shape and were
    checked with the metadata.
    """
    device = torch.device(device)
    tensors = normalize_args(meta, args)
    for spec, t in zip(meta.arguments, tensors):
        _check_one(spec, t, device)
    if meta.dynamic:
        check_shapes(meta.arguments, [t.shape for t in tensors])
    if meta.outputs:
        ranges = {s.name: (t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())
                  for s, t in zip(meta.arguments, tensors) if t.numel()}
        for out in meta.outputs:
            if out not in ranges:
                continue
            lo, hi = ranges[out]
            for other, (olo, ohi) in ranges.items():
                if other != out and lo < ohi and olo < hi:
                    raise ArgumentError(f"output {out!r} overlaps argument {other!r} in "
                                        "memory; outputs must not alias other arguments")
    return tensors


def build_params(meta: KernelMetadata, tensors: Sequence[torch.Tensor],
                 tensormap_ptr: Callable[[int, TensorMapParam, torch.Tensor], int]
                 ) -> list[ctypes._SimpleCData]:
    """ctypes values of the kernel parameters, in the metadata's params order.

    ptr -> c_uint64(data_ptr); memref -> the c_uint64 words of its descriptor
    (`dynamic.descriptor_words`); tensormap -> c_uint64(tensormap_ptr(index,
    param, tensor)) (the device address of the uploaded CUtensorMap);
    i32/i64/f32 -> c_int32/c_int64/c_float by value.
    """
    by_name = dict(zip(meta.argument_names, tensors))
    out: list[ctypes._SimpleCData] = []
    for i, p in enumerate(meta.params):
        if isinstance(p, PtrParam):
            out.append(ctypes.c_uint64(by_name[p.arg].data_ptr()))
        elif isinstance(p, MemrefParam):
            t = by_name[p.arg]
            out.extend(ctypes.c_uint64(w) for w in descriptor_words(t.data_ptr(), t.shape))
        elif isinstance(p, TensorMapParam):
            out.append(ctypes.c_uint64(tensormap_ptr(i, p, by_name[p.arg])))
        elif isinstance(p, ScalarParam) and p.computed:  # a size of this call
            sizes = bind_sizes(meta.arguments, [t.shape for t in tensors])
            out.append(scalar_value(ScalarParam(p.kind, evaluate(p.value, sizes))))
        elif isinstance(p, ScalarParam):
            out.append(scalar_value(p))
        else:  # pragma: no cover - parse_metadata admits no other kind
            raise TypeError(f"params[{i}]: unknown parameter {p!r}")
    return out


_SCALAR_TYPES = {"i32": ctypes.c_int32, "i64": ctypes.c_int64, "f32": ctypes.c_float}


def scalar_value(p: ScalarParam) -> ctypes._SimpleCData:
    """The ctypes value of a scalar kernel parameter."""
    return _SCALAR_TYPES[p.kind](p.value)
