"""Load libFlexAttnCAPI.so and register the flexattn dialect and passes into
the upstream ``mlir`` Python bindings (the xtc MLIR 22 wheels).

The library is a C ABI (see python/FlexAttnCAPI.cpp) linked against the
bindings' own MLIR copy, loaded with ctypes: no nanobind, no Python ABI.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import sys
from pathlib import Path


def _check_import_order() -> None:
    """`mlir` must be loaded before `torch_mlir` in any process that
    JIT-compiles: both carry a whole LLVM, and when torch-mlir's is loaded
    first, MLIR's ExecutionEngine resolves symbols into it (JIT sessions fail
    with "Symbols not found", or libm calls silently return wrong values).
    Nothing can undo that once it is loaded, so it is refused here, with what
    to do, instead of failing (or computing garbage) at the first CPU call."""
    names = list(sys.modules)  # in load order
    theirs = [i for i, name in enumerate(names) if name.startswith("torch_mlir._mlir_libs.")]
    ours = names.index("mlir._mlir_libs._mlir") if "mlir._mlir_libs._mlir" in names else None
    if theirs and (ours is None or ours > theirs[0]):
        raise ImportError(
            "flexattn_mlir must be imported before torch_mlir: torch_mlir's native "
            "libraries (its own LLVM) are already loaded in this process, and they break "
            "the MLIR JIT that runs flexattn_mlir's CPU kernels. Import flexattn_mlir (or "
            "mlir.ir) before the first `import torch_mlir` / `from torch_mlir import ...`, "
            "e.g. at the top of your script; flexattn_mlir imports torch_mlir itself when "
            "it needs it."
        )


# Importing `mlir` here, first thing, keeps that order for every user of the
# package.
_check_import_order()
from mlir import ir  # noqa: E402

__all__ = ["register", "new_context", "tool_path", "source_hash", "flexattn_opt_main",
           "cpu_host_target", "cpu_compile", "cpu_load", "cpu_unload", "cpu_run"]


class _Handle(ctypes.Structure):
    """MlirContext / MlirDialectRegistry: one pointer, passed by value."""

    _fields_ = [("ptr", ctypes.c_void_p)]


_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype, _capsule_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
_capsule_ptr = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_ptr.restype = ctypes.c_void_p
_capsule_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _unwrap(obj) -> _Handle:
    capsule = obj._CAPIPtr
    return _Handle(_capsule_ptr(capsule, _capsule_name(capsule)))


@functools.cache
def _library() -> ctypes.CDLL:
    spec = importlib.util.find_spec(__package__ + "._lib.libFlexAttnCAPI")
    if spec is None or spec.origin is None:
        raise ImportError(
            "flexattn_mlir: libFlexAttnCAPI.so is missing; reinstall the "
            "package with `pip install .` so the C++ part is built"
        )
    lib = ctypes.CDLL(spec.origin)
    lib.flexattnRegisterDialect.argtypes = [_Handle]
    lib.flexattnRegisterDialect.restype = None
    lib.flexattnRegisterPasses.argtypes = []
    lib.flexattnRegisterPasses.restype = None
    lib.flexattnSourceHash.argtypes = []
    lib.flexattnSourceHash.restype = ctypes.c_char_p
    _declare_cpu_runtime(lib)
    lib.flexattnRegisterPasses()
    return lib


def _declare_cpu_runtime(lib: ctypes.CDLL) -> None:
    """python/CpuRuntime.cpp: kernels as objects for this host, run on threads."""
    lib.flexattnCpuHostTarget.argtypes = []
    lib.flexattnCpuHostTarget.restype = ctypes.c_char_p
    lib.flexattnCpuCompile.argtypes = [_Handle, ctypes.c_char_p, ctypes.c_int,
                                       ctypes.POINTER(ctypes.c_void_p),
                                       ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_void_p)]
    lib.flexattnCpuCompile.restype = ctypes.c_int
    lib.flexattnCpuLoad.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                    ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)]
    lib.flexattnCpuLoad.restype = ctypes.c_void_p
    lib.flexattnCpuUnload.argtypes = [ctypes.c_void_p]
    lib.flexattnCpuUnload.restype = None
    lib.flexattnCpuRun.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.flexattnCpuRun.restype = None
    lib.flexattnFree.argtypes = [ctypes.c_void_p]
    lib.flexattnFree.restype = None


def register(ctx: ir.Context) -> None:
    """Add the flexattn dialect to ``ctx``; make the flexattn passes parseable."""
    _library().flexattnRegisterDialect(_unwrap(ctx))


def _take_string(ptr: ctypes.c_void_p) -> str:
    """A malloc'ed C string from the library, freed."""
    text = ctypes.string_at(ptr.value).decode(errors="replace")
    _library().flexattnFree(ptr)
    return text


@functools.cache
def cpu_host_target() -> str:
    """The CPU name and features CPU kernels are compiled for (this host's)."""
    return _library().flexattnCpuHostTarget().decode()


def cpu_compile(module: ir.Module, entry: str, opt_level: int) -> bytes:
    """An LLVM-dialect module -> a relocatable object for this host."""
    obj, size, err = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_void_p()
    if _library().flexattnCpuCompile(_unwrap(module), entry.encode(), opt_level,
                                     ctypes.byref(obj), ctypes.byref(size), ctypes.byref(err)):
        raise RuntimeError(f"CPU code generation failed: {_take_string(err)}")
    data = ctypes.string_at(obj.value, size.value)
    _library().flexattnFree(obj)
    return data


def cpu_load(obj: bytes, entry: str) -> tuple[int, int]:
    """Links a kernel object; returns (handle, address of the packed entry)."""
    fn, err = ctypes.c_void_p(), ctypes.c_void_p()
    handle = _library().flexattnCpuLoad(obj, len(obj), entry.encode(), ctypes.byref(fn),
                                        ctypes.byref(err))
    if not handle:
        raise RuntimeError(f"loading a CPU kernel failed: {_take_string(err)}")
    return handle, fn.value


def cpu_unload(handle: int) -> None:
    _library().flexattnCpuUnload(handle)


def cpu_run(fn: int, packed_args, threads: int) -> None:
    """fn(packed_args) on `threads` threads at once (the GIL is released)."""
    _library().flexattnCpuRun(fn, packed_args, threads)


def source_hash() -> str:
    """SHA-256 of the C++/ODS sources the native library was built from."""
    return _library().flexattnSourceHash().decode()


def new_context() -> ir.Context:
    """A fresh context with every upstream dialect and flexattn."""
    ctx = ir.Context()
    register(ctx)
    return ctx


def tool_path(name: str = "flexattn-opt") -> Path:
    """Path of a tool built with the package (``flexattn-opt`` for lit).

    ``FLEXATTN_OPT`` overrides it (a dev CMake build's binary)."""
    if name == "flexattn-opt" and os.environ.get("FLEXATTN_OPT"):
        return Path(os.environ["FLEXATTN_OPT"])
    spec = importlib.util.find_spec(__package__)
    assert spec is not None and spec.submodule_search_locations
    for base in spec.submodule_search_locations:
        candidate = Path(base) / "_bin" / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{name} was not built with this flexattn_mlir install")


def flexattn_opt_main() -> None:
    """The ``flexattn-opt`` console command: runs the binary shipped in
    ``flexattn_mlir/_bin`` (it stays there, beside the MLIR/LLVM libraries
    its RPATH names) with the command's arguments."""
    try:
        exe = tool_path()
    except FileNotFoundError as err:
        sys.exit(f"flexattn-opt: {err}")
    os.execv(exe, [str(exe), *sys.argv[1:]])
