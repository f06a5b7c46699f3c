"""ptxas: finding it, naming it (for the cache key), and assembling PTX.

Looked up in this order: ``FLEXATTN_PTXAS`` (a path), the ``nvidia-cuda-nvcc``
wheel (the ``test`` extra installs it: ``site-packages/nvidia/cu13/bin/ptxas``),
then ``PATH``. A GPU compile without ptxas is an error: the compiler never
hands out PTX that no assembler has checked.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PtxasNotFound", "Ptxas", "find", "assemble", "Resources"]

# Where the nvidia-cuda-nvcc wheels put the binary, per CUDA major version.
_WHEEL_DIRS = ("cu13/bin", "cuda_nvcc/bin")


class PtxasNotFound(RuntimeError):
    """No ptxas: GPU kernels cannot be assembled to cubins."""


@dataclass(frozen=True)
class Ptxas:
    path: str
    version: str  # e.g. "13.0.88"

    @property
    def identity(self) -> str:
        """What enters the kernel cache key: a new ptxas makes new cubins."""
        return f"ptxas {self.version} at {self.path}"


def _wheel_candidates() -> list[Path]:
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(base) / sub / "ptxas" for base in spec.submodule_search_locations
            for sub in _WHEEL_DIRS]


def _version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"V(\d+\.\d+\.\d+)", out)
    if not m:
        raise PtxasNotFound(f"{path} --version printed no version:\n{out}")
    return m.group(1)


@functools.cache
def _find(env: str | None, path_env: str | None) -> Ptxas:
    tried = []
    if env:
        if not os.access(env, os.X_OK):
            raise PtxasNotFound(f"FLEXATTN_PTXAS={env!r} is not an executable ptxas")
        return Ptxas(env, _version(env))
    for candidate in _wheel_candidates():
        tried.append(str(candidate))
        if os.access(candidate, os.X_OK):
            return Ptxas(str(candidate), _version(str(candidate)))
    on_path = shutil.which("ptxas", path=path_env)
    if on_path:
        return Ptxas(on_path, _version(on_path))
    raise PtxasNotFound(
        "no ptxas found, so GPU kernels cannot be assembled: install the test extra "
        "(`pip install 'flexattn-mlir[test]'`, which brings the nvidia-cuda-nvcc wheel) or the "
        "CUDA toolkit, or set FLEXATTN_PTXAS to a ptxas binary (looked at FLEXATTN_PTXAS, "
        f"{', '.join(tried) or 'no nvidia wheel'}, PATH)")


def find() -> Ptxas:
    """The ptxas GPU compiles use (raises :class:`PtxasNotFound`)."""
    return _find(os.environ.get("FLEXATTN_PTXAS") or None, os.environ.get("PATH"))


@dataclass(frozen=True)
class Resources:
    """What ``ptxas -v`` reports for a kernel."""

    registers: int
    spill_stores: int
    spill_loads: int
    shared_bytes: int  # static shared memory (dynamic is in the launch metadata)

    @classmethod
    def parse(cls, log: str) -> "Resources":
        def num(pattern: str) -> int:
            m = re.search(pattern, log)
            return int(m.group(1)) if m else 0

        if not re.search(r"Used \d+ registers", log):
            raise ValueError(f"ptxas -v printed no register count:\n{log}")
        return cls(registers=num(r"Used (\d+) registers"),
                   spill_stores=num(r"(\d+) bytes spill stores"),
                   spill_loads=num(r"(\d+) bytes spill loads"),
                   shared_bytes=num(r"(\d+) bytes smem"))


def assemble(ptx: str, chip: str, *, error=RuntimeError) -> tuple[bytes, Resources]:
    """The cubin of ``ptx`` for ``chip`` and its resource usage. A failure
    raises ``error`` with the log and a reproducing command line."""
    tool = find()
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "k.ptx"), os.path.join(d, "k.cubin")
        Path(src).write_text(ptx)
        cmd = [tool.path, f"-arch={chip}", "-O3", "-v", src, "-o", out]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            repro = Path(tempfile.mkdtemp(prefix="flexattn-ptxas-")) / "kernel.ptx"
            repro.write_text(ptx)
            raise error(f"ptxas failed:\n{proc.stderr}\nreproduce with: "
                        f"{tool.path} -arch={chip} -O3 {repro}")
        return Path(out).read_bytes(), Resources.parse(proc.stderr + proc.stdout)
