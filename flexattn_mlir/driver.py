"""The staged compiler: one function per IR level, each a flat list of passes.

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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from mlir import ir
from mlir.passmanager import PassManager

from . import _native
from .options import CompileOptions
from .spec import AttentionSpec

__all__ = ["CompilationError", "Compiled", "compile", "kernel_name", "run_pipeline", "stages"]

log = logging.getLogger(__name__)


class CompilationError(RuntimeError):
    """A pass pipeline failed; the message holds the diagnostics and a
    ``flexattn-opt`` command line that reproduces the failure."""


def _repro_dir() -> Path:
    base = Path(os.environ.get("FLEXATTN_CACHE_DIR") or tempfile.gettempdir())
    path = base / "repro"
    path.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="flexattn-", dir=path))


def run_pipeline(module: ir.Module, pipeline: str | Sequence[str], stage: str) -> None:
    """Runs ``builtin.module(<pipeline>)`` (a pipeline string, or a list of
    passes) on ``module`` in place. On failure writes the input IR to a fresh
    directory and raises CompilationError with the diagnostics and the exact
    reproducer command."""
    if not isinstance(pipeline, str):
        pipeline = ", ".join(pipeline)
    before = str(module)
    full = f"builtin.module({pipeline})"
    try:
        PassManager.parse(full).run(module.operation)
    except ir.MLIRError as err:
        repro = _repro_dir() / f"{stage}.input.mlir"
        repro.write_text(before)
        raise CompilationError(
            f"stage {stage!r} failed: {err}\n"
            f"reproduce with: flexattn-opt --pass-pipeline='{full}' {repro}"
        ) from None


# -- the stages --------------------------------------------------------------


def make_flexattn(spec: AttentionSpec, opts: CompileOptions) -> ir.Module:
    """The flexattn.attention module of ``spec`` (parsed and verified)."""
    try:
        return ir.Module.parse(spec.to_mlir())
    except ir.MLIRError as err:
        raise CompilationError(f"the flexattn IR of {spec.name!r} is invalid: {err}") from None


def make_tiled(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, f"flexattn-tile{{tile-q={opts.tile_q} tile-kv={opts.tile_kv}}}", "tiled")


def make_sparse(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-block-sparsity", "sparse")


def make_split(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-split-full-tiles", "split")


def make_fused(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-fuse-online-softmax", "fused")


def make_inlined(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-inline-mods, canonicalize, cse", "inlined")


def host_has(feature: str) -> bool:
    """Whether this host's CPU has the LLVM target feature ``feature`` (the
    CPU kernels are built for this host; its features are in the cache key)."""
    return f"+{feature}" in _native.cpu_host_target().split(" ")[1].split(",")


def make_vector(mod: ir.Module, opts: CompileOptions) -> None:
    bf16_dot = "true" if host_has("avx512bf16") else "false"
    run_pipeline(mod, f"flexattn-vectorize-tiles{{bf16-dot={bf16_dot}}}, canonicalize, cse",
                 "vector")


def make_loops(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-distribute-tiles, flexattn-lower-to-loops, canonicalize, cse",
                 "loops")


def make_llvm(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(
        mod,
        "arith-expand, convert-vector-to-scf{full-unroll=true}, convert-scf-to-cf, "
        "expand-strided-metadata, lower-affine, "
        "convert-vector-to-llvm{vector-transpose-lowering=shuffle16x16 enable-x86vector=true}, "
        "finalize-memref-to-llvm, convert-math-to-llvm, convert-arith-to-llvm, "
        "convert-index-to-llvm, convert-func-to-llvm, convert-cf-to-llvm, convert-ub-to-llvm, "
        "reconcile-unrealized-casts",
        "llvm",
    )


Stage = Callable[[ir.Module, CompileOptions], None]


def stages(opts: CompileOptions) -> dict[str, Stage]:
    """The ordered stages for ``opts.target``; names double as file suffixes."""
    common: dict[str, Stage] = {
        "tiled": make_tiled,
        "sparse": make_sparse,
    }
    if opts.target == "cpu":
        return {**common, "split": make_split, "fused": make_fused,
                "inlined": make_inlined, "vector": make_vector, "loops": make_loops,
                "llvm": make_llvm}
    from . import gpu  # the GPU stages live beside the GPU code

    return {**common, **gpu.stages(opts)}


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
    from .cache import kernel_key

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
        mod = make_flexattn(spec, opts)
        # A spec may bring its own stages (the backward's).
        table = spec.stages(opts) if hasattr(spec, "stages") else stages(opts)
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
        if opts.target != "cpu":
            from . import gpu

            result.metadata = gpu.finish(mod, spec, opts)
    result.seconds = time.perf_counter() - start
    return result
