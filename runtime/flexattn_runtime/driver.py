"""A minimal layer over the CUDA driver API (libcuda), through ctypes.

Why ctypes and not `cuda.bindings.driver`: the runtime needs about twenty
driver entry points with plain C signatures, and ctypes on `libcuda.so.1` (which
torch itself has already loaded on any CUDA machine) reaches all of them with one
code path and no extra dependency. `cuda.bindings` changes its Python-level API
between major versions (12.x and 13.x differ in several call signatures and in
how structs such as `CUlaunchConfig` are built), while the C ABI of the functions
used here has been stable since CUDA 12.0. The enum values and struct layouts
below were checked against CUDA 13.0's `cuda.h` (sizeof/offsetof printed by a C
program), and `test_runtime.py` cross-checks them against `cuda.bindings` when
that package is installed (the `cuda` extra of the package).

Symbol versions: every function used here is exported under its plain name in
`cuda.h` (none of them is `#define`d to a `_v2`/`_ptsz` variant), so the plain
symbol is the current ABI. `cuLaunchKernel`/`cuLaunchKernelEx` are the
legacy-default-stream variants, which matches torch (its default stream is the
legacy stream 0).

Every call is checked; a failing call raises `CudaError` naming the function and
the driver's error name and description.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from ctypes import (POINTER, Structure, Union, byref, c_char, c_char_p, c_int,
                    c_uint, c_uint32, c_uint64, c_void_p)
from dataclasses import dataclass
from typing import Sequence

__all__ = [
    "CudaError", "DeviceInfo", "available", "init", "ensure_context",
    "device_info", "module_load", "module_unload", "module_get_function",
    "func_get_attribute", "func_set_attribute", "launch", "KernelLaunch", "ensure_current",
    "tensor_map_encode_tiled", "driver_version",
]

# --- constants (values from cuda.h, CUDA 13.0; unchanged since 12.0) --------

CUDA_SUCCESS = 0

# CUdevice_attribute
CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1
CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK = 8
CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR = 81
CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97

# CUfunction_attribute
CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0
CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1
CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES = 2
CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES = 3
CU_FUNC_ATTRIBUTE_NUM_REGS = 4
CU_FUNC_ATTRIBUTE_PTX_VERSION = 5
CU_FUNC_ATTRIBUTE_BINARY_VERSION = 6
CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8

# CUjit_option (only used to fetch the JIT log after a failed PTX load)
CU_JIT_INFO_LOG_BUFFER = 3
CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4
CU_JIT_ERROR_LOG_BUFFER = 5
CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6

# CUlaunchAttributeID
CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION = 4

# CUtensorMapDataType
CU_TENSOR_MAP_DATA_TYPE_UINT8 = 0
CU_TENSOR_MAP_DATA_TYPE_INT32 = 3
CU_TENSOR_MAP_DATA_TYPE_FLOAT16 = 6
CU_TENSOR_MAP_DATA_TYPE_FLOAT32 = 7
CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9
# CUtensorMapInterleave
CU_TENSOR_MAP_INTERLEAVE_NONE = 0
# CUtensorMapSwizzle
CU_TENSOR_MAP_SWIZZLE_NONE = 0
CU_TENSOR_MAP_SWIZZLE_32B = 1
CU_TENSOR_MAP_SWIZZLE_64B = 2
CU_TENSOR_MAP_SWIZZLE_128B = 3
# CUtensorMapL2promotion
CU_TENSOR_MAP_L2_PROMOTION_NONE = 0
CU_TENSOR_MAP_L2_PROMOTION_L2_64B = 1
CU_TENSOR_MAP_L2_PROMOTION_L2_128B = 2
CU_TENSOR_MAP_L2_PROMOTION_L2_256B = 3
# CUtensorMapFloatOOBfill
CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0
CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA = 1

CU_TENSOR_MAP_NUM_BYTES = 128      # sizeof(CUtensorMap)
CU_TENSOR_MAP_ALIGN = 128          # alignof(CUtensorMap) in CUDA 13 (64 in 12.x)

DEFAULT_MAX_DYNAMIC_SHARED = 48 * 1024  # above this, the attribute must be set


# --- structs for cuLaunchKernelEx (layout checked against cuda.h) ----------

class _ClusterDim(Structure):
    _fields_ = [("x", c_uint), ("y", c_uint), ("z", c_uint)]


class CUlaunchAttributeValue(Union):
    # a 64-byte union; the u64 member gives it the 8-byte alignment of the C union
    _fields_ = [("pad", c_char * 64), ("clusterDim", _ClusterDim), ("_align", c_uint64)]


class CUlaunchAttribute(Structure):  # sizeof 72, value at offset 8
    _fields_ = [("id", c_int), ("pad", c_char * 4), ("value", CUlaunchAttributeValue)]


class CUlaunchConfig(Structure):  # sizeof 56: hStream at 32, attrs at 40, numAttrs at 48
    _fields_ = [
        ("gridDimX", c_uint), ("gridDimY", c_uint), ("gridDimZ", c_uint),
        ("blockDimX", c_uint), ("blockDimY", c_uint), ("blockDimZ", c_uint),
        ("sharedMemBytes", c_uint),
        ("hStream", c_void_p),
        ("attrs", POINTER(CUlaunchAttribute)),
        ("numAttrs", c_uint),
    ]


# --- errors ----------------------------------------------------------------

class CudaError(RuntimeError):
    """A CUDA driver call failed.

    Attributes: `func` (driver function name), `code` (CUresult, or None when the
    driver could not be reached at all), `name` (e.g. "CUDA_ERROR_INVALID_PTX"),
    `description` (cuGetErrorString), `detail` (extra context such as a JIT log).
    """

    def __init__(self, func: str, code: int | None, name: str = "",
                 description: str = "", detail: str = ""):
        self.func, self.code, self.name = func, code, name
        self.description, self.detail = description, detail
        if code is None:
            msg = f"{func}: {description}"
        else:
            msg = f"{func} failed: {name or 'CUDA error'} ({code}): {description}"
        if detail:
            msg += "\n" + detail
        super().__init__(msg)


# --- the library -----------------------------------------------------------

_P = POINTER
# name -> argtypes; every function returns CUresult (int)
_PROTOTYPES: dict[str, list] = {
    "cuInit": [c_uint],
    "cuDriverGetVersion": [_P(c_int)],
    "cuGetErrorName": [c_int, _P(c_char_p)],
    "cuGetErrorString": [c_int, _P(c_char_p)],
    "cuDeviceGetCount": [_P(c_int)],
    "cuDeviceGet": [_P(c_int), c_int],
    "cuDeviceGetName": [c_char_p, c_int, c_int],
    "cuDeviceGetAttribute": [_P(c_int), c_int, c_int],
    "cuDevicePrimaryCtxRetain": [_P(c_void_p), c_int],
    "cuCtxGetCurrent": [_P(c_void_p)],
    "cuCtxSetCurrent": [c_void_p],
    "cuModuleLoadData": [_P(c_void_p), c_void_p],
    "cuModuleLoadDataEx": [_P(c_void_p), c_void_p, c_uint, _P(c_int), _P(c_void_p)],
    "cuModuleUnload": [c_void_p],
    "cuModuleGetFunction": [_P(c_void_p), c_void_p, c_char_p],
    "cuFuncGetAttribute": [_P(c_int), c_int, c_void_p],
    "cuFuncSetAttribute": [c_void_p, c_int, c_int],
    "cuLaunchKernel": [c_void_p, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint,
                       c_uint, c_void_p, _P(c_void_p), _P(c_void_p)],
    "cuLaunchKernelEx": [_P(CUlaunchConfig), c_void_p, _P(c_void_p), _P(c_void_p)],
    "cuMemcpyHtoDAsync_v2": [c_uint64, c_void_p, ctypes.c_size_t, c_void_p],
    "cuTensorMapEncodeTiled": [c_void_p, c_int, c_uint32, c_void_p, _P(c_uint64),
                               _P(c_uint64), _P(c_uint32), _P(c_uint32),
                               c_int, c_int, c_int, c_int],
}

_LIB_NAMES = {"win32": ["nvcuda.dll"]}.get(sys.platform, ["libcuda.so.1", "libcuda.so"])

_lock = threading.RLock()
_lib_handle: ctypes.CDLL | None = None
_lib_error: str | None = None
_functions: dict[str, object] = {}
_initialized = False
_primary: dict[int, int] = {}          # device ordinal -> retained primary context
_device_info: dict[int, "DeviceInfo"] = {}


def _load_library() -> ctypes.CDLL:
    global _lib_handle, _lib_error
    with _lock:
        if _lib_handle is not None:
            return _lib_handle
        if _lib_error is None:
            errors = []
            for name in _LIB_NAMES:
                try:
                    _lib_handle = ctypes.CDLL(name)
                    return _lib_handle
                except OSError as e:
                    errors.append(f"{name}: {e}")
            _lib_error = "; ".join(errors)
        raise CudaError("dlopen", None, description=(
            f"cannot load the CUDA driver library ({_lib_error}); "
            "flexattn_runtime needs an NVIDIA driver"))


def _fn(name: str):
    f = _functions.get(name)
    if f is None:
        lib = _load_library()
        try:
            f = getattr(lib, name)
        except AttributeError:
            raise CudaError(name, None, description=(
                f"the CUDA driver library has no {name} (driver too old? "
                "flexattn_runtime needs a CUDA 12.0+ driver)")) from None
        f.argtypes = _PROTOTYPES[name]
        f.restype = c_int
        _functions[name] = f
    return f


def _error_text(code: int) -> tuple[str, str]:
    name, desc = c_char_p(), c_char_p()
    try:
        if _fn("cuGetErrorName")(code, byref(name)) != CUDA_SUCCESS:
            name.value = None
        if _fn("cuGetErrorString")(code, byref(desc)) != CUDA_SUCCESS:
            desc.value = None
    except CudaError:
        pass
    return ((name.value or b"").decode(errors="replace") or f"CUresult {code}",
            (desc.value or b"").decode(errors="replace") or "unknown error")


def _call(name: str, *args, detail: str = "") -> None:
    _check(name, _fn(name)(*args), detail)


def _check(name: str, code: int, detail: str = "") -> None:
    if code != CUDA_SUCCESS:
        ename, desc = _error_text(code)
        raise CudaError(name, code, ename, desc, detail)


def available() -> bool:
    """True when libcuda loads and cuInit succeeds (does not raise)."""
    try:
        init()
        return True
    except CudaError:
        return False


def init() -> None:
    """cuInit(0), once per process."""
    global _initialized
    if _initialized:
        return
    with _lock:
        if not _initialized:
            _call("cuInit", 0)
            _initialized = True


def driver_version() -> int:
    """cuDriverGetVersion, e.g. 13000 for CUDA 13.0."""
    init()
    v = c_int()
    _call("cuDriverGetVersion", byref(v))
    return v.value


def _device(ordinal: int) -> int:
    dev = c_int()
    _call("cuDeviceGet", byref(dev), int(ordinal))
    return dev.value


def ensure_context(ordinal: int) -> int:
    """Make the primary context of device `ordinal` current on this thread.

    torch uses the primary context of each device, so kernels loaded here share
    torch's memory and streams. As in Triton's launcher: if another context (or
    none) is current, retain the device's primary context once and make it
    current. The retain is never released (the context lives as long as torch's).
    Returns the context handle.
    """
    init()
    ctx = _primary.get(ordinal)
    if ctx is None:
        with _lock:
            ctx = _primary.get(ordinal)
            if ctx is None:
                h = c_void_p()
                _call("cuDevicePrimaryCtxRetain", byref(h), _device(ordinal))
                ctx = _primary[ordinal] = h.value
    ensure_current(ctx)
    return ctx


def ensure_current(ctx: int) -> None:
    """Make the context `ctx` (one `ensure_context` returned) current on this
    thread unless it is: one cuCtxGetCurrent per call (a launch's check)."""
    cur = c_void_p()
    _check("cuCtxGetCurrent", _fn("cuCtxGetCurrent")(byref(cur)))
    if cur.value != ctx:
        _call("cuCtxSetCurrent", c_void_p(ctx))


@dataclass(frozen=True)
class DeviceInfo:
    ordinal: int
    name: str
    compute_capability: tuple[int, int]
    sm_count: int
    max_threads_per_block: int
    max_shared_per_block: int          # without opt-in (48 KiB)
    max_shared_per_block_optin: int    # the real limit for dynamic + static smem
    max_shared_per_sm: int

    @property
    def arch(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


def device_attribute(attr: int, ordinal: int) -> int:
    init()
    v = c_int()
    _call("cuDeviceGetAttribute", byref(v), attr, _device(ordinal))
    return v.value


def device_info(ordinal: int) -> DeviceInfo:
    """Compute capability, SM count and shared-memory limits of a device (cached)."""
    info = _device_info.get(ordinal)
    if info is None:
        init()
        buf = ctypes.create_string_buffer(256)
        _call("cuDeviceGetName", buf, 256, _device(ordinal))
        a = lambda attr: device_attribute(attr, ordinal)  # noqa: E731
        info = DeviceInfo(
            ordinal=ordinal,
            name=buf.value.decode(errors="replace"),
            compute_capability=(a(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                                a(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)),
            sm_count=a(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
            max_threads_per_block=a(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
            max_shared_per_block=a(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK),
            max_shared_per_block_optin=a(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
            max_shared_per_sm=a(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR),
        )
        _device_info[ordinal] = info
    return info


# --- modules and functions --------------------------------------------------

def module_load(image: bytes, *, ptx: bool) -> int:
    """cuModuleLoadData on the current context; returns the CUmodule handle.

    PTX gets a trailing NUL if it lacks one. If loading fails, the load is
    retried once with cuModuleLoadDataEx and JIT log buffers so that the raised
    CudaError carries the ptxas/JIT error log (the success path is the plain
    call, as the first Hopper kernels were checked with).
    """
    if ptx and not image.endswith(b"\0"):
        image = image + b"\0"
    buf = ctypes.create_string_buffer(image, len(image))
    mod = c_void_p()
    code = _fn("cuModuleLoadData")(byref(mod), buf)
    if code == CUDA_SUCCESS:
        return mod.value
    log = _jit_log(buf) if ptx else ""
    ename, desc = _error_text(code)
    raise CudaError("cuModuleLoadData", code, ename, desc,
                    ("JIT log:\n" + log) if log else "")


def _jit_log(buf) -> str:
    size = 1 << 16
    err_log = ctypes.create_string_buffer(size)
    info_log = ctypes.create_string_buffer(size)
    opts = (c_int * 4)(CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                       CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES)
    vals = (c_void_p * 4)(ctypes.addressof(err_log), size, ctypes.addressof(info_log), size)
    mod = c_void_p()
    try:
        code = _fn("cuModuleLoadDataEx")(byref(mod), buf, 4, opts, vals)
    except CudaError:
        return ""
    if code == CUDA_SUCCESS:  # should not happen; do not leak the module
        _fn("cuModuleUnload")(mod)
    text = "\n".join(t for t in (err_log.value.decode(errors="replace").strip(),
                                 info_log.value.decode(errors="replace").strip()) if t)
    return text


def module_unload(module: int) -> None:
    _call("cuModuleUnload", c_void_p(module))


def module_get_function(module: int, entry: str) -> int:
    f = c_void_p()
    _call("cuModuleGetFunction", byref(f), c_void_p(module), entry.encode(),
          detail=f"(looking up kernel entry {entry!r})")
    return f.value


def func_get_attribute(func: int, attr: int) -> int:
    v = c_int()
    _call("cuFuncGetAttribute", byref(v), attr, c_void_p(func))
    return v.value


def func_set_attribute(func: int, attr: int, value: int) -> None:
    _call("cuFuncSetAttribute", c_void_p(func), attr, int(value))


# --- launch -------------------------------------------------------------------

def launch(func: int, grid: Sequence[int], block: Sequence[int], shared_mem_bytes: int,
           stream: int, params: Sequence[ctypes._SimpleCData],
           cluster: Sequence[int] = (1, 1, 1)) -> None:
    """Launch `func` on `stream` (a CUstream handle as an int; 0 = legacy default).

    `params` are ctypes scalars (c_uint64 for pointers, c_int32, ...), one per
    kernel parameter in order; the driver copies their values during the call.
    Cluster dims other than (1, 1, 1) go through cuLaunchKernelEx with a
    CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION attribute.
    """
    n = len(params)
    arr = (c_void_p * n)(*[ctypes.addressof(p) for p in params]) if n else None
    KernelLaunch(func, grid, block, shared_mem_bytes, cluster)(stream, arr)


def _unchecked(name: str):
    """A second function object for `name` without argtypes, for calls whose
    arguments are ctypes values made beforehand: ctypes converts nothing per
    call (about half the cost of a call through the checked one)."""
    _fn(name)  # the symbol exists (else a CudaError naming it)
    f = _load_library()[name]
    f.restype = c_int
    return f


class KernelLaunch:
    """The launch of one function with a fixed grid, block, dynamic shared
    memory and cluster, its ctypes values made once: a call passes the stream
    (a CUstream handle as an int; 0 = legacy default) and the parameter array
    (`void *[]`, one pointer to each kernel parameter's value, or None).
    cuLaunchKernel, or cuLaunchKernelEx with a
    CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION attribute for clusters other than
    (1, 1, 1). With `context` (the function's, from `ensure_context`), a call
    first checks that it is current on this thread (one cuCtxGetCurrent) and
    makes it so if not. Calls on one object must not overlap (PreparedLaunch
    holds its Kernel's lock): the current-context buffer is shared."""

    __slots__ = ("fixed", "config", "attr", "func", "context", "current", "current_ref",
                 "get_current", "launch_kernel")

    def __init__(self, func: int, grid: Sequence[int], block: Sequence[int],
                 shared_mem_bytes: int, cluster: Sequence[int] = (1, 1, 1),
                 context: int | None = None):
        gx, gy, gz = (int(x) for x in grid)
        bx, by, bz = (int(x) for x in block)
        cx, cy, cz = (int(x) for x in cluster)
        self.func = c_void_p(func)
        self.context = context
        self.current = c_void_p()
        self.current_ref = byref(self.current)
        self.get_current = _unchecked("cuCtxGetCurrent")
        self.config = self.attr = None
        if (cx, cy, cz) == (1, 1, 1):
            self.fixed = (self.func, *(c_uint(x) for x in (gx, gy, gz, bx, by, bz)),
                          c_uint(int(shared_mem_bytes)))
            self.launch_kernel = _unchecked("cuLaunchKernel")
            return
        self.attr = CUlaunchAttribute()
        self.attr.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
        dim = self.attr.value.clusterDim
        dim.x, dim.y, dim.z = cx, cy, cz
        self.config = CUlaunchConfig(gx, gy, gz, bx, by, bz, int(shared_mem_bytes),
                                     None, ctypes.pointer(self.attr), 1)
        self.launch_kernel = _unchecked("cuLaunchKernelEx")

    def __call__(self, stream: int, params) -> None:
        if self.context is not None and (self.get_current(self.current_ref)
                                         or self.current.value != self.context):
            ensure_current(self.context)
        if self.config is None:
            _check("cuLaunchKernel",
                   self.launch_kernel(*self.fixed, c_void_p(stream), params, None))
            return
        self.config.hStream = stream
        _check("cuLaunchKernelEx",
               self.launch_kernel(byref(self.config), self.func, params, None))


def memcpy_htod_async(dst: int, src: int, nbytes: int, stream: int) -> None:
    """Copy ``nbytes`` from host address ``src`` (pinned memory) to device
    address ``dst``, ordered on ``stream``; captured as a graph memcpy node
    when the stream is capturing."""
    _call("cuMemcpyHtoDAsync_v2", ctypes.c_uint64(dst), c_void_p(src), nbytes, c_void_p(stream))


# --- TMA descriptors ----------------------------------------------------------

def tensor_map_encode_tiled(data_type: int, global_address: int,
                            global_dim: Sequence[int], global_strides: Sequence[int],
                            box_dim: Sequence[int], element_strides: Sequence[int],
                            interleave: int, swizzle: int, l2_promotion: int,
                            oob_fill: int) -> bytes:
    """cuTensorMapEncodeTiled; returns the 128 bytes of the CUtensorMap.

    All lists are innermost dimension first; `global_strides` has rank-1 byte
    strides (the innermost dimension is dense). The host-side CUtensorMap is
    placed in a 128-byte-aligned buffer as cuda.h's alignas() requires.
    """
    rank = len(global_dim)
    if not (len(box_dim) == len(element_strides) == rank and len(global_strides) == rank - 1):
        raise ValueError("tensor map: global_dim, box_dim and element_strides need "
                         "rank entries and global_strides rank-1 entries")
    init()
    raw = (ctypes.c_uint8 * (CU_TENSOR_MAP_NUM_BYTES + CU_TENSOR_MAP_ALIGN))()
    base = ctypes.addressof(raw)
    ptr = base + (-base) % CU_TENSOR_MAP_ALIGN
    dims = (c_uint64 * rank)(*global_dim)
    strides = (c_uint64 * max(rank - 1, 1))(*global_strides)
    box = (c_uint32 * rank)(*box_dim)
    estr = (c_uint32 * rank)(*element_strides)
    _call("cuTensorMapEncodeTiled", c_void_p(ptr), data_type, rank,
          c_void_p(global_address), dims, strides, box, estr,
          interleave, swizzle, l2_promotion, oob_fill,
          detail=(f"(dtype {data_type}, dims {list(global_dim)}, strides {list(global_strides)}"
                  f" bytes, box {list(box_dim)}, address {global_address:#x}, "
                  f"swizzle {swizzle})"))
    return ctypes.string_at(ptr, CU_TENSOR_MAP_NUM_BYTES)
