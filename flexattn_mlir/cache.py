"""The on-disk compile cache.

Everything lives under ``FLEXATTN_CACHE_DIR`` (default
``$XDG_CACHE_HOME/flexattn_mlir`` or ``~/.cache/flexattn_mlir``):

    cpu/<key>.o           a CPU kernel's machine code for this host (an ELF
                          object; a hit only links it)
    gpu/                  a flexattn_runtime artifact store (index.json,
                          <name>.json, <name>.cubin|.ptx)
    mods/<key>.json       captured score_mod/mask_mod IR (the frontend)

Keys hash the kernel spec (captured IR, shapes, dtypes), the options, the
compiler version (a hash of the C++ and Python sources) and what the code is
built for: for GPU targets the ptxas that assembles the cubin (version and
path), for the CPU this host's CPU name and features. So a changed compiler,
assembler or CPU never reuses stale code, and AOT artifacts built on another
machine from the same sources and toolchain are found. Writes go to a temporary file in
the same directory and are renamed into place, so concurrent processes see
either nothing or a whole entry.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "compiler_version", "kernel_key", "DiskCache", "atomic_write"]


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
    package's Python sources. Equal on every machine with the same code."""
    from . import __version__, _native

    h = hashlib.sha256(__version__.encode())
    h.update(_native.source_hash().encode())
    pkg = Path(__file__).parent
    for path in sorted(pkg.rglob("*.py")):
        h.update(str(path.relative_to(pkg)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def kernel_key(spec_digest: str, options) -> str:
    """The key of a kernel: spec, ``options`` (a CompileOptions), compiler
    and the machine code's target: for GPU targets ptxas (raises
    PtxasNotFound without one), for the CPU this host's CPU and features."""
    from . import _native, ptxas, targets

    parts = [spec_digest, options.digest(), compiler_version()]
    if targets.target(options.target).is_gpu:
        parts.append(ptxas.find().identity)
    else:
        parts.append(_native.cpu_host_target())
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
