"""TMA descriptors (CUtensorMap) for kernel parameters of kind "tensormap".

The kernel takes a *pointer* to a 128-byte CUtensorMap in global memory
(docs/gpu-pipeline.md §10.3). The host encodes it with cuTensorMapEncodeTiled over the
tensor seen innermost-dimension first:

    globalDim     = reversed(shape)                         (or of "view")
    globalStrides = reversed(contiguous strides[:-1]) * elem_size   (bytes)
    boxDim        = metadata "box" (already innermost first)
    elementStrides = [1] * rank

then copies the 128 bytes into a uint8 CUDA tensor whose data_ptr is the
kernel argument. `tensormap_geometry` / `check_tensormap` / `encoding_for`
are pure (tested on CPU); `DescriptorCache` holds uploaded descriptors.

Strides come from the *shape* (the contiguous strides), not from
`tensor.stride()`: arguments must be contiguous, and for a contiguous tensor
the two differ only on size-1 dimensions, where torch may report any stride
and the stride never matters.
"""

from __future__ import annotations

import ctypes
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

import torch

from . import driver as _d


@dataclass(frozen=True)
class ElemType:
    name: str
    dtype: torch.dtype
    size: int
    cu_type: int        # CUtensorMapDataType


ELEM_TYPES: dict[str, ElemType] = {
    "bf16": ElemType("bf16", torch.bfloat16, 2, _d.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16),
    "f16": ElemType("f16", torch.float16, 2, _d.CU_TENSOR_MAP_DATA_TYPE_FLOAT16),
    "f32": ElemType("f32", torch.float32, 4, _d.CU_TENSOR_MAP_DATA_TYPE_FLOAT32),
    "i32": ElemType("i32", torch.int32, 4, _d.CU_TENSOR_MAP_DATA_TYPE_INT32),
}
SWIZZLE = {"none": _d.CU_TENSOR_MAP_SWIZZLE_NONE, "32B": _d.CU_TENSOR_MAP_SWIZZLE_32B,
           "64B": _d.CU_TENSOR_MAP_SWIZZLE_64B, "128B": _d.CU_TENSOR_MAP_SWIZZLE_128B}
SWIZZLE_SPAN = {"none": None, "32B": 32, "64B": 64, "128B": 128}
L2_PROMOTION = {"none": _d.CU_TENSOR_MAP_L2_PROMOTION_NONE,
                "64B": _d.CU_TENSOR_MAP_L2_PROMOTION_L2_64B,
                "128B": _d.CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                "256B": _d.CU_TENSOR_MAP_L2_PROMOTION_L2_256B}
OOB_FILL = {"zero": _d.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            "nan": _d.CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA}
INTERLEAVE = {"none": _d.CU_TENSOR_MAP_INTERLEAVE_NONE}

MAX_RANK = 5
MAX_BOX = 256
MAX_DIM = 1 << 32
MAX_STRIDE = 1 << 40


def tensormap_geometry(shape: Sequence[int], elem_size: int,
                       view: Sequence[int] | None = None
                       ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(globalDim, globalStrides in bytes), both innermost first, for a
    contiguous tensor of `shape` (outermost first), optionally reshaped to
    `view` (outermost first; must have the same number of elements).

    [B, H, M, D] -> dims (D, M, H, B), strides (D*e, M*D*e, H*M*D*e).
    """
    dims_outer = tuple(int(x) for x in (view if view is not None else shape))
    if view is not None and math.prod(dims_outer) != math.prod(shape):
        raise ValueError(f"view {list(dims_outer)} has {math.prod(dims_outer)} elements, "
                         f"the tensor has {math.prod(shape)}")
    strides_outer = []
    acc = 1
    for d in reversed(dims_outer):
        strides_outer.append(acc)
        acc *= d
    strides_outer.reverse()
    dims = tuple(reversed(dims_outer))
    strides = tuple(s * elem_size for s in reversed(strides_outer[:-1]))
    return dims, strides


def check_tensormap(dims: Sequence[int], strides: Sequence[int], box: Sequence[int],
                    elem_size: int, swizzle: str) -> None:
    """Raise ValueError unless cuTensorMapEncodeTiled's rules hold (innermost
    first lists; interleave none). Saying why here beats the driver's bare
    CUDA_ERROR_INVALID_VALUE."""
    rank = len(dims)
    if not 1 <= rank <= MAX_RANK:
        raise ValueError(f"rank {rank}: TMA supports 1 to {MAX_RANK} dimensions")
    if len(box) != rank:
        raise ValueError(f"box {list(box)} has {len(box)} entries; the tensor map has "
                         f"rank {rank} (dims innermost first: {list(dims)})")
    for i, d in enumerate(dims):
        if not 1 <= d <= MAX_DIM:
            raise ValueError(f"dimension {i} (innermost first) is {d}; TMA needs 1..2^32")
    for i, s in enumerate(strides):
        if s % 16:
            raise ValueError(f"global stride {i + 1} (innermost first) is {s} bytes; TMA "
                             f"needs multiples of 16 bytes (dims {list(dims)})")
        if s >= MAX_STRIDE:
            raise ValueError(f"global stride {i + 1} is {s} bytes; TMA needs < 2^40")
    for i, b in enumerate(box):
        if not 1 <= b <= MAX_BOX:
            raise ValueError(f"box[{i}] is {b}; TMA needs 1..{MAX_BOX}")
    inner = box[0] * elem_size
    if inner % 16:
        raise ValueError(f"box[0] is {box[0]} elements = {inner} bytes; the innermost box "
                         "dimension must be a multiple of 16 bytes")
    span = SWIZZLE_SPAN[swizzle]
    if span is not None and inner > span:
        raise ValueError(f"box[0] is {inner} bytes; swizzle {swizzle} allows at most "
                         f"{span} bytes in the innermost box dimension")


@dataclass(frozen=True)
class TensorMapEncoding:
    """The arguments of cuTensorMapEncodeTiled (all lists innermost first)."""
    data_type: int
    global_address: int
    global_dim: tuple[int, ...]
    global_strides: tuple[int, ...]
    box_dim: tuple[int, ...]
    element_strides: tuple[int, ...]
    interleave: int
    swizzle: int
    l2_promotion: int
    oob_fill: int

    @property
    def rank(self) -> int:
        return len(self.global_dim)


def encoding_for(param, shape: Sequence[int], data_ptr: int) -> TensorMapEncoding:
    """The encoding for a TensorMapParam over a contiguous tensor (pure)."""
    et = ELEM_TYPES[param.elem]
    dims, strides = tensormap_geometry(shape, et.size, param.view)
    check_tensormap(dims, strides, param.box, et.size, param.swizzle)
    if data_ptr % 16:
        raise ValueError(f"address {data_ptr:#x} is not 16-byte aligned (TMA needs it)")
    return TensorMapEncoding(
        data_type=et.cu_type, global_address=int(data_ptr), global_dim=dims,
        global_strides=strides, box_dim=tuple(param.box),
        element_strides=(1,) * len(dims), interleave=INTERLEAVE[param.interleave],
        swizzle=SWIZZLE[param.swizzle], l2_promotion=L2_PROMOTION[param.l2_promotion],
        oob_fill=OOB_FILL[param.oob_fill])


def encode(enc: TensorMapEncoding) -> bytes:
    """The 128 bytes of the CUtensorMap (calls the driver)."""
    return _d.tensor_map_encode_tiled(
        enc.data_type, enc.global_address, enc.global_dim, enc.global_strides,
        enc.box_dim, enc.element_strides, enc.interleave, enc.swizzle,
        enc.l2_promotion, enc.oob_fill)


@dataclass
class Descriptor:
    """An uploaded CUtensorMap: `device` holds the 128 bytes on the GPU (its
    data_ptr is the kernel argument); `host` is the pinned staging buffer of
    the asynchronous copy, kept alive with the entry."""
    device: torch.Tensor
    host: torch.Tensor | None
    encoding: TensorMapEncoding
    data_ptr: int = field(init=False)  # the device address: the kernel argument

    def __post_init__(self):
        self.data_ptr = self.device.data_ptr()


def _device_buffer(n: int, device) -> torch.Tensor:
    """``n`` bytes of device memory from torch's caching allocator (a CUDA
    graph's pool during capture), CU_TENSOR_MAP_ALIGN-aligned."""
    dev = torch.empty(n, dtype=torch.uint8, device=device)
    if dev.data_ptr() % _d.CU_TENSOR_MAP_ALIGN:
        # torch's caching allocator returns 512-byte-aligned blocks; never expected
        dev = torch.empty(2 * _d.CU_TENSOR_MAP_ALIGN + n, dtype=torch.uint8, device=device)
        off = (-dev.data_ptr()) % _d.CU_TENSOR_MAP_ALIGN
        dev = dev[off:off + n]
    return dev


def _check_size(raw: bytes) -> None:
    if len(raw) != _d.CU_TENSOR_MAP_NUM_BYTES:
        raise ValueError(f"a CUtensorMap has {_d.CU_TENSOR_MAP_NUM_BYTES} bytes, got {len(raw)}")


def upload(raw: bytes, device: torch.device, encoding: TensorMapEncoding) -> Descriptor:
    """Copy a CUtensorMap to a fresh uint8 CUDA tensor, asynchronously on the
    current stream (stream-ordered before any kernel later launched on it).

    The host side is a pinned tensor: torch's pinned-memory allocator records
    the copy on the stream and does not reuse the block until the copy is done,
    and the Descriptor keeps the tensor alive as well.
    """
    _check_size(raw)
    host = torch.empty(len(raw), dtype=torch.uint8, pin_memory=True)
    ctypes.memmove(host.data_ptr(), raw, len(raw))
    dev = _device_buffer(len(raw), device)
    dev.copy_(host, non_blocking=True)
    return Descriptor(dev, host, encoding)


class GraphStaging:
    """Pinned host slots for the descriptors a Kernel makes while a CUDA graph
    is being captured (a tensor allocated inside the graph, e.g. the output
    of an earlier op, has an address no launch before the capture saw).

    Pinned memory is allocated outside capture only (:meth:`refill`, at an
    ordinary launch). During capture, :meth:`upload` writes the 128 bytes
    into a fresh slot and copies it with ``cuMemcpyHtoDAsync`` on the
    capturing stream, into device memory from torch's allocator (the graph's
    pool): the graph gets a memcpy node that every replay runs again, from
    the same slot, so a slot is never reused while the Kernel lives."""

    SLOTS = 64

    def __init__(self):
        self.arenas: list[torch.Tensor] = []
        self.free = 0

    def refill(self) -> None:
        """A new arena when fewer than a quarter of the slots are left
        (call outside capture)."""
        if self.free >= self.SLOTS // 4:
            return
        n = _d.CU_TENSOR_MAP_NUM_BYTES
        self.arenas.append(torch.empty(self.SLOTS * n, dtype=torch.uint8, pin_memory=True))
        self.free = self.SLOTS

    def upload(self, raw: bytes, device: torch.device, stream: int,
               encoding: TensorMapEncoding) -> Descriptor | None:
        """The descriptor uploaded from a fresh slot on ``stream``; None when
        no slot is left (no ordinary launch refilled the arena)."""
        _check_size(raw)
        if not self.free:
            return None
        n = len(raw)
        start = (self.SLOTS - self.free) * n
        self.free -= 1
        host = self.arenas[-1][start:start + n]
        ctypes.memmove(host.data_ptr(), raw, n)
        dev = _device_buffer(n, device)
        _d.memcpy_htod_async(dev.data_ptr(), host.data_ptr(), n, stream)
        return Descriptor(dev, host, encoding)


class DescriptorCache:
    """A small LRU of uploaded descriptors.

    Keys are the parameter index, the tensor's data_ptr, the device and the
    stream (the tensor's shape, dtype and contiguity are the metadata's, so
    its address names it): a descriptor is reused only on the
    stream it was uploaded on, so its copy is always stream-ordered before the
    launch that reads it, and an evicted descriptor's memory (freed to torch's
    caching allocator, which is stream-ordered too) cannot be overwritten
    before the kernels that read it have run.
    """

    def __init__(self, maxsize: int = 64):
        if maxsize < 1:
            raise ValueError(f"descriptor cache size must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._entries: OrderedDict[Hashable, Descriptor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, make: Callable[..., Descriptor], *args) -> Descriptor:
        """The entry of `key`, else `make(*args)`, stored."""
        d = self._entries.get(key)
        if d is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return d
        self.misses += 1
        d = make(*args)
        self._entries[key] = d
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return d

    def find(self, match: Callable[[Hashable], bool]) -> Descriptor | None:
        """The most recently used entry whose key satisfies `match`, or None."""
        for key in reversed(self._entries):
            if match(key):
                return self._entries[key]
        return None

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
