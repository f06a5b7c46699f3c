"""`Kernel`: one compiled kernel (binary + metadata), loaded lazily, launched on
torch CUDA tensors.

Like Triton's CompiledKernel: constructing a Kernel only parses and checks the
metadata (and, for PTX, that the entry's parameter list matches it); the CUDA
module is loaded on the first launch (or an explicit `load()`) for the current
device. A call validates its tensors (`launch.validate_args`) and runs the
Kernel's `PreparedLaunch` for the device: the launch with everything that
does not change between calls made once (function, grid, shared memory, the
ctypes parameter block), where a call writes only the tensors' addresses. Loaded modules are cached per (sha256 of the binary, device), so
several Kernel objects over the same binary share one module. On load the
kernel's target is checked against the device's compute capability
(`UnsupportedDevice`) and its shared memory and block size against the device
and function limits (`OutOfResources`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import operator
import os
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from . import driver as _d
from .dynamic import MemrefParam, bind_sizes, descriptor_words, evaluate, param_words
from .errors import OutOfResources, UnsupportedDevice
from .launch import check_alignment, scalar_value, validate_args
from .metadata import (KernelMetadata, ScalarParam, TensorMapParam, check_binary_params,
                       parse_metadata, target_incompatibility)
from .tensormap import Descriptor, DescriptorCache, GraphStaging, encode, encoding_for, upload

__all__ = ["Kernel", "LoadedFunction", "PreparedLaunch", "current_device"]


@dataclass(frozen=True)
class LoadedFunction:
    device: int
    module: int                 # CUmodule
    function: int               # CUfunction
    num_regs: int
    static_shared_bytes: int
    local_bytes: int
    max_threads_per_block: int  # for this function (registers, .maxntid)
    device_info: _d.DeviceInfo


@dataclass
class _Module:
    handle: int
    functions: dict[str, int]


_modules: dict[tuple[str, int], _Module] = {}
_modules_lock = threading.Lock()


def current_device() -> int:
    """torch's current CUDA device; UnsupportedDevice when there is no CUDA."""
    if not torch.cuda.is_available():
        raise UnsupportedDevice("no CUDA device is available (torch.cuda.is_available() is "
                                "False); flexattn_runtime launches on NVIDIA GPUs only")
    torch.cuda.init()
    return torch.cuda.current_device()


# A launch's queries of torch, bound once: the current CUDA device, and the
# current stream of a device as a CUstream handle (an int), the query
# Inductor's launchers make, without building a torch.cuda.Stream.
_current_index = getattr(torch._C, "_cuda_getDevice", None) or torch.cuda.current_device
_current_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or (
    lambda device: torch.cuda.current_stream(device).cuda_stream)


def _device_index(device: int | str | torch.device | None) -> int:
    if device is None:
        return current_device()
    if isinstance(device, int):
        return device
    dev = torch.device(device)
    if dev.type != "cuda":
        raise UnsupportedDevice(f"flexattn_runtime launches on CUDA devices, not {dev}")
    return dev.index if dev.index is not None else current_device()


class Kernel:
    """A compiled kernel: `Kernel(metadata_dict, binary_bytes)` or
    `Kernel.from_file("<dir>/<name>.json")`.

    Call it with the tensors named in the metadata's "arguments":
    `kernel(q=q, k=k, ...)`, `kernel({"q": q, ...})`, `kernel([q, k, ...])` or
    `kernel(q, k, ...)`. Every tensor is validated first (see
    `launch.validate_args`); then the kernel is launched on torch's current
    stream of the current device. Returns {name: tensor} of the "outputs".
    """

    def __init__(self, metadata: Mapping[str, Any] | KernelMetadata, binary: bytes, *,
                 name: str | None = None, path: str | None = None,
                 descriptor_cache_size: int = 64):
        self.metadata: KernelMetadata = parse_metadata(metadata)
        if not isinstance(binary, (bytes, bytearray, memoryview)):
            raise TypeError(f"binary: expected bytes, got {type(binary).__name__}")
        self.binary = bytes(binary)
        if not self.binary:
            raise ValueError("binary: empty")
        check_binary_params(self.metadata, self.binary)
        self.binary_hash = hashlib.sha256(self.binary).hexdigest()
        self.name = name or self.metadata.entry
        self.path = path
        self.descriptors = DescriptorCache(descriptor_cache_size)
        self._graph_descriptors: dict[tuple, Descriptor] = {}
        self._staging = GraphStaging()
        self._loaded: dict[int, LoadedFunction] = {}
        self._prepared: dict[int, PreparedLaunch] = {}
        self._lock = threading.RLock()

    @classmethod
    def from_file(cls, metadata_path: str | os.PathLike) -> "Kernel":
        """Read `<name>.json` and the binary it names (in the same directory)."""
        path = os.fspath(metadata_path)
        with open(path, encoding="utf-8") as f:
            meta = parse_metadata(json.load(f))
        with open(os.path.join(os.path.dirname(path), meta.binary), "rb") as f:
            binary = f.read()
        name = os.path.splitext(os.path.basename(path))[0]
        return cls(meta, binary, name=name, path=path)

    # --- convenience accessors ------------------------------------------------
    @property
    def key(self) -> str:
        return self.metadata.key

    @property
    def entry(self) -> str:
        return self.metadata.entry

    @property
    def spec(self) -> dict:
        return self.metadata.spec

    def __repr__(self) -> str:
        m = self.metadata
        return (f"Kernel({self.name!r}, key={m.key!r}, entry={m.entry!r}, target={m.target}, "
                f"grid={list(m.grid)}, block={list(m.block)}, smem={m.shared_mem_bytes})")

    # --- loading --------------------------------------------------------------
    def check_device(self, info: _d.DeviceInfo) -> None:
        """UnsupportedDevice / OutOfResources from the metadata alone (no module)."""
        m = self.metadata
        where = f"cuda:{info.ordinal} ({info.name}, compute capability " \
                f"{info.compute_capability[0]}.{info.compute_capability[1]})"
        why = target_incompatibility(m.target, m.binary_format, info.compute_capability)
        if why:
            raise UnsupportedDevice(f"kernel {self.name!r} cannot run on {where}: {why}")
        if m.cluster != (1, 1, 1) and info.compute_capability < (9, 0):
            raise UnsupportedDevice(f"kernel {self.name!r} uses thread-block clusters "
                                    f"{list(m.cluster)}, which need compute capability >= "
                                    f"9.0; {where}")
        if m.shared_mem_bytes > info.max_shared_per_block_optin:
            raise OutOfResources(
                f"kernel {self.name!r} needs {m.shared_mem_bytes} bytes of dynamic shared "
                f"memory, but {where} allows at most {info.max_shared_per_block_optin} bytes "
                "per block", required=m.shared_mem_bytes,
                limit=info.max_shared_per_block_optin, resource="shared memory")
        if m.threads_per_block > info.max_threads_per_block:
            raise OutOfResources(
                f"kernel {self.name!r} uses {m.threads_per_block} threads per block; {where} "
                f"allows {info.max_threads_per_block}", required=m.threads_per_block,
                limit=info.max_threads_per_block, resource="threads")

    def load(self, device: int | str | torch.device | None = None) -> LoadedFunction:
        """Load the module on `device` (default: torch's current device), check
        it against the device, set its dynamic shared memory limit. Idempotent."""
        dev = _device_index(device)
        lf = self._loaded.get(dev)
        if lf is not None:
            return lf
        with self._lock:
            lf = self._loaded.get(dev)
            if lf is None:
                lf = self._load(dev)
                self._loaded[dev] = lf
        return lf

    def _load(self, dev: int) -> LoadedFunction:
        m = self.metadata
        _d.ensure_context(dev)
        info = _d.device_info(dev)
        self.check_device(info)
        with _modules_lock:
            mod = _modules.get((self.binary_hash, dev))
            if mod is None:
                handle = _d.module_load(self.binary, ptx=m.binary_format == "ptx")
                mod = _modules[(self.binary_hash, dev)] = _Module(handle, {})
            func = mod.functions.get(m.entry)
            if func is None:
                func = mod.functions[m.entry] = _d.module_get_function(mod.handle, m.entry)
            attr = lambda a: _d.func_get_attribute(func, a)  # noqa: E731
            static = attr(_d.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
            limit = info.max_shared_per_block_optin
            if static + m.shared_mem_bytes > limit:
                raise OutOfResources(
                    f"kernel {self.name!r} needs {static} bytes of static + "
                    f"{m.shared_mem_bytes} bytes of dynamic shared memory = "
                    f"{static + m.shared_mem_bytes}, but cuda:{dev} ({info.name}) allows at "
                    f"most {limit} bytes per block", required=static + m.shared_mem_bytes,
                    limit=limit, resource="shared memory")
            if m.shared_mem_bytes > _d.DEFAULT_MAX_DYNAMIC_SHARED:
                # Several Kernels may share this CUfunction: only ever raise the limit.
                cur = attr(_d.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)
                if cur < m.shared_mem_bytes:
                    _d.func_set_attribute(func, _d.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                          m.shared_mem_bytes)
            max_threads = attr(_d.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)
            if m.threads_per_block > max_threads:
                raise OutOfResources(
                    f"kernel {self.name!r} is launched with block {list(m.block)} = "
                    f"{m.threads_per_block} threads, but the compiled function allows at most "
                    f"{max_threads} per block on cuda:{dev} (its registers "
                    f"({attr(_d.CU_FUNC_ATTRIBUTE_NUM_REGS)} per thread) or .maxntid limit it)",
                    required=m.threads_per_block, limit=max_threads, resource="threads")
            return LoadedFunction(
                device=dev, module=mod.handle, function=func,
                num_regs=attr(_d.CU_FUNC_ATTRIBUTE_NUM_REGS), static_shared_bytes=static,
                local_bytes=attr(_d.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES),
                max_threads_per_block=max_threads, device_info=info)

    # --- arguments ---------------------------------------------------------------
    def validate(self, args: Any, device: int | str | torch.device | None = None
                 ) -> list[torch.Tensor]:
        """validate_args against `device` (default: cuda:<current>)."""
        if not isinstance(device, torch.device):
            device = torch.device("cuda", _device_index(device))
        return validate_args(self.metadata, args, device=device)

    def empty_outputs(self, device: int | str | torch.device | None = None
                      ) -> dict[str, torch.Tensor]:
        """Freshly allocated (uninitialized) tensors for the "outputs"."""
        if self.metadata.dynamic:
            raise TypeError(f"kernel {self.name!r} has run-time shapes: its outputs' shapes "
                            "follow the call's inputs; allocate them yourself")
        dev = device if isinstance(device, torch.device) else \
            torch.device("cuda", _device_index(device))
        return {n: torch.empty(self.metadata.argument(n).shape,
                               dtype=self.metadata.argument(n).dtype, device=dev)
                for n in self.metadata.outputs}

    @staticmethod
    def _collect(args: tuple, kwargs: dict) -> Any:
        if args and kwargs:
            raise TypeError("pass the kernel arguments either by name or by position, not both")
        if kwargs:
            return kwargs
        if len(args) == 1 and isinstance(args[0], (Mapping, list, tuple)):
            return args[0]
        return list(args)

    def _descriptor(self, index: int, p: TensorMapParam, t: torch.Tensor, ptr: int,
                    dev: int, stream: int, capturing: bool) -> Descriptor:
        """The uploaded descriptor of parameter `index` over `t` (at `ptr`), for
        a launch on `stream`; the caller holds `self._lock`. The tensor's
        shape, dtype and contiguity are the metadata's (validated, or vouched
        for by the caller of a PreparedLaunch), so the address names it; a
        dynamic kernel's shapes vary, so its key holds the shape too."""
        key = (index, ptr, tuple(t.shape) if self.metadata.dynamic else None, dev, stream)
        if capturing:
            # Graph capture runs on its own stream: accept a descriptor uploaded
            # on another stream by the warm-up (finished by then, as torch's
            # warm-up-then-capture recipe synchronizes), else upload one into
            # the graph from a pinned slot (GraphStaging); pin it, since every
            # replay of the graph reads it.
            desc = self._graph_descriptors.get(key[:-1])
            if desc is None:
                desc = self.descriptors.find(lambda k: k[:-1] == key[:-1])
            if desc is None:
                enc = encoding_for(p, t.shape, ptr)
                desc = self._staging.upload(encode(enc), t.device, stream, enc)
            if desc is None:
                raise RuntimeError(
                    f"kernel {self.name!r}: the TMA descriptor for argument {p.arg!r} "
                    "cannot be uploaded during CUDA graph capture before the kernel "
                    "has run once outside capture (which sets aside the pinned memory "
                    "such uploads copy from); run it once before capturing")
            self._graph_descriptors[key[:-1]] = desc
            return desc

        return self.descriptors.get(key, self._upload, p, t, ptr)

    @staticmethod
    def _upload(p: TensorMapParam, t: torch.Tensor, ptr: int) -> Descriptor:
        enc = encoding_for(p, t.shape, ptr)
        return upload(encode(enc), t.device, enc)

    def _refill_staging(self, capturing: bool) -> None:
        """Tops up the pinned slots graph captures upload descriptors from
        (outside a capture only); the caller holds `self._lock`."""
        if not capturing and self._staging.free < GraphStaging.SLOTS // 4:
            self._staging.refill()

    def prepare(self, device: int | str | torch.device | None = None
                ) -> "PreparedLaunch | DynamicLaunch":
        """The launch on `device` (default: torch's current device) with its
        fixed parts made once (loads the module): a `PreparedLaunch`, or for
        a dynamic-shape kernel a `DynamicLaunch` (grid and descriptors per
        call). Idempotent."""
        dev = _device_index(device)
        prepared = self._prepared.get(dev)
        if prepared is None:
            with self._lock:
                prepared = self._prepared.get(dev)
                if prepared is None:
                    prepared = self._prepared[dev] = self._prepare(dev)
        return prepared

    def _prepare(self, dev: int):
        if not self.metadata.dynamic:
            return PreparedLaunch(self, dev)
        m, lf = self.metadata, self.load(dev)
        context = _d.ensure_context(dev)
        return DynamicLaunch(self, dev, lambda grid: _d.KernelLaunch(
            lf.function, grid, m.block, m.shared_mem_bytes, m.cluster, context))

    # --- launch --------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        m = self.metadata
        dev = current_device()
        tensors = validate_args(m, self._collect(args, kwargs), device=torch.device("cuda", dev))
        self.prepare(dev)(tensors)
        return {n: t for n, t in zip(m.argument_names, tensors) if n in m.outputs}


class PreparedLaunch:
    """A Kernel's launch on one device, made once: the loaded function, its
    grid, block, shared memory and cluster (`driver.KernelLaunch`), and the
    kernel parameter block, scalars written in. A call takes the tensors in
    the metadata's order and writes their addresses into the block (a TMA
    descriptor's address for a tensormap parameter), then launches on torch's
    current stream.

    It checks what the metadata cannot fix: that torch's current device is
    this one (else the tensors are validated against it, which raises the
    Kernel's error), and each tensor's alignment. Each tensor's device, dtype,
    exact shape and contiguity are the caller's to guarantee: `Kernel.__call__`
    validates them first; flexattn_mlir's call plans fix them by their key
    and guards and allocate the outputs themselves.
    """

    __slots__ = ("kernel", "device", "launcher", "values", "scalars", "array", "order",
                 "mask", "aligned", "tensormaps")

    def __init__(self, kernel: Kernel, device: int):
        m = kernel.metadata
        lf = kernel.load(device)
        self.kernel, self.device = kernel, device
        self.launcher = _d.KernelLaunch(lf.function, m.grid, m.block, m.shared_mem_bytes,
                                        m.cluster, _d.ensure_context(device))
        n = len(m.params)
        # One 8-byte slot per parameter: addresses are written per call (all
        # slots at once, in parameter order: `order` picks each slot's
        # tensor's address, any one for a scalar's or a tensormap's slot,
        # which is not read or is written after); scalars keep their own
        # ctypes values, written once.
        self.values = (ctypes.c_uint64 * max(n, 1))()
        base, names = ctypes.addressof(self.values), m.argument_names
        self.scalars, addresses, slots, self.tensormaps = [], [], [], []
        for i, p in enumerate(m.params):
            if isinstance(p, ScalarParam):
                self.scalars.append(scalar_value(p))
                addresses.append(ctypes.addressof(self.scalars[-1]))
                slots.append(0)
                continue
            addresses.append(base + 8 * i)
            slots.append(names.index(p.arg))
            if isinstance(p, TensorMapParam):
                self.tensormaps.append((i, p, slots[-1]))
        self.array = (ctypes.c_void_p * n)(*addresses) if n else None
        self.order = (operator.itemgetter(*slots, 0) if slots else None), n
        masks = {a.align - 1 for a in m.arguments}
        # One OR of all addresses when every argument has the same alignment.
        self.mask = masks.pop() if len(masks) == 1 else None
        self.aligned = tuple((j, a.align - 1) for j, a in enumerate(m.arguments))

    def _check_alignment(self, tensors, ptrs) -> None:
        for j, mask in self.aligned:
            if ptrs[j] & mask:
                check_alignment(self.kernel.metadata.arguments[j], tensors[j])

    def __call__(self, tensors: Sequence[torch.Tensor]) -> None:
        dev = self.device
        if _current_index() != dev:
            # Launches go to torch's current device: tensors that are not on
            # it fail validation there, as a Kernel call with them would.
            cur = _current_index()
            validate_args(self.kernel.metadata, tensors, device=torch.device("cuda", cur))
            return self.kernel.prepare(cur)(tensors)
        ptrs = [t.data_ptr() for t in tensors]
        if self.mask is None or functools.reduce(operator.or_, ptrs, 0) & self.mask:
            self._check_alignment(tensors, ptrs)
        stream = _current_stream(dev)
        values, kernel = self.values, self.kernel
        order, n = self.order
        with kernel._lock:
            if n:
                values[:n] = order(ptrs)[:n]
            if not self.tensormaps:
                self.launcher(stream, self.array)
                return
            capturing = torch.cuda.is_current_stream_capturing()
            kernel._refill_staging(capturing)
            # The descriptors of this launch stay referenced until it is
            # enqueued: one evicted from the LRU meanwhile must not have its
            # memory handed to the next upload before the kernel that reads
            # it is on the stream.
            in_use = []
            for i, p, j in self.tensormaps:
                desc = kernel._descriptor(i, p, tensors[j], ptrs[j], dev, stream, capturing)
                in_use.append(desc)
                values[i] = desc.data_ptr
            self.launcher(stream, self.array)


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
        kernel, dev = self.kernel, self.device
        if _current_index() != dev:
            cur = _current_index()
            validate_args(kernel.metadata, tensors, device=torch.device("cuda", cur))
            return kernel.prepare(cur)(tensors)
        ptrs = [t.data_ptr() for t in tensors]
        for j, mask in self.aligned:
            if ptrs[j] & mask:
                check_alignment(kernel.metadata.arguments[j], tensors[j])
        grid, sizes = self.grid(tensors)
        if 0 in grid:
            return  # an empty batch or sequence: nothing to compute
        stream = _current_stream(dev)
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

