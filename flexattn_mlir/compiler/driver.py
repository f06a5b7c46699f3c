"""The staged compiler: builds the ``flexattn`` module of a spec, then runs
the stages of the backend registered for ``opts.target`` (one function per
IR level, each a flat list of passes; :mod:`.backends`), e.g.

    flexattn -> tiled -> sparse -> split -> fused -> inlined -> vector -> loops
             -> llvm   (CPU)

Every stage's output can be written out (``FLEXATTN_DUMP_IR=<dir>``) and any
stage can be replaced by a file (``FLEXATTN_OVERRIDE_IR=<dir>`` holding
``<kernel>.<stage>.mlir``), as Triton's driver does; ``<kernel>`` is
:func:`kernel_name`, the variant's name and a prefix of the kernel's cache
key, so the kernels of one process never overwrite each other's dumps.
:func:`compile` runs the stages and returns a :class:`Compiled` holding every
stage's text.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlir import ir

from .. import _native
from .backends import backend
from .cache import kernel_key
from .options import CompileOptions
from .pipeline import CompilationError, Stage, run_pipeline
from .spec import AttentionSpec

__all__ = ["CompilationError", "Compiled", "compile", "kernel_name", "run_pipeline", "stages"]

log = logging.getLogger(__name__)


# -- the stages --------------------------------------------------------------


def make_flexattn(spec: AttentionSpec, opts: CompileOptions) -> ir.Module:
    """The flexattn.attention module of ``spec``, built (the spec's
    :meth:`~.spec.AttentionSpec.build`) and verified."""
    try:
        module = spec.build()
        module.operation.verify()
        return module
    except ir.MLIRError as err:
        raise CompilationError(f"the flexattn IR of {spec.name!r} is invalid: {err}") from None


def stages(opts: CompileOptions, kind: str = "forward") -> dict[str, Stage]:
    """The ordered stages of a ``kind`` kernel for ``opts.target`` (the
    registered backend's); names double as file suffixes."""
    return backend(opts.target).stages(kind, opts)


@dataclass
class Compiled:
    """The result of :func:`compile`: every stage's IR text, in order, and the
    final module (LLVM dialect for the CPU; PTX text for GPUs is in
    ``metadata``)."""

    spec: AttentionSpec
    options: CompileOptions
    ir: dict[str, str] = field(default_factory=dict)
    module: ir.Module | None = None
    metadata: dict = field(default_factory=dict)
    seconds: float = 0.0

    def stage_names(self) -> list[str]:
        return list(self.ir)

    def __getitem__(self, stage: str) -> str:
        return self.ir[stage]


def kernel_name(spec: AttentionSpec, opts: CompileOptions) -> str:
    """``<variant>-<key prefix>``: the name of the kernel's dumped and
    overridden stages (the variant is the spec's name, e.g. the mods' Python
    names; the key prefix tells apart kernels of one variant)."""
    return f"{spec.name}-{kernel_key(spec.digest(), opts)[:12]}"


def _env_dir(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value) if value else None


def compile(
    spec: AttentionSpec,
    opts: CompileOptions = CompileOptions(),
    *,
    context: ir.Context | None = None,
    keep_ir: bool = True,
) -> Compiled:
    """Runs every stage of ``opts.target`` on ``spec``."""
    start = time.perf_counter()
    ctx = context or _native.new_context()
    dump, override = _env_dir("FLEXATTN_DUMP_IR"), _env_dir("FLEXATTN_OVERRIDE_IR")
    label = kernel_name(spec, opts) if dump or override else spec.name
    result = Compiled(spec, opts)
    with ctx, ir.Location.unknown():
        check = getattr(spec, "check", None)  # what a spec kind needs of a target
        if check is not None:
            check(opts)
        mod = make_flexattn(spec, opts)
        target = backend(opts.target)
        table = target.stages(spec.kind, opts)
        steps: list[tuple[str, Stage | None]] = [("flexattn", None), *table.items()]
        for name, step in steps:
            replacement = override / f"{label}.{name}.mlir" if override else None
            if replacement is not None and replacement.exists():
                log.info("stage %s of %s taken from %s", name, label, replacement)
                mod = ir.Module.parse(replacement.read_text())
            elif step is not None:
                step(mod, opts)
            if keep_ir or dump:
                text = str(mod)
                if keep_ir:
                    result.ir[name] = text
                if dump:
                    dump.mkdir(parents=True, exist_ok=True)
                    (dump / f"{label}.{name}.mlir").write_text(text)
        result.module = mod
        if target.finish is not None:
            result.metadata = target.finish(mod, spec, opts)
    result.seconds = time.perf_counter() - start
    return result
