"""The compiler's backends, one module per target family, registered in one
table the driver looks up by ``options.target`` (as Triton's backends are):
each takes the ``flexattn`` module of a spec and hands on machine code, the
CPU's as an LLVM-dialect module its runner JIT-compiles (:mod:`.cpu`), the
GPU's as PTX, a cubin and launch metadata (:mod:`.gpu`). A new target family
is a module with a :class:`~flexattn_mlir.compiler.pipeline.Backend` named
``BACKEND``, added to :data:`BACKENDS` here."""

from ..pipeline import Backend
from . import cpu, gpu

__all__ = ["BACKENDS", "backend"]

#: ``CompileOptions.target`` -> the backend that compiles for it.
BACKENDS: dict[str, Backend] = {t: b.BACKEND for b in (cpu, gpu) for t in b.BACKEND.targets}


def backend(target: str) -> Backend:
    """The backend registered for ``target``; a clear error naming the
    registered targets otherwise."""
    try:
        return BACKENDS[target]
    except KeyError:
        raise ValueError(f"no backend for target {target!r}; registered: "
                         f"{tuple(BACKENDS)}") from None
