"""What every stage and every backend is made of: running a pass pipeline
with a reproducer on failure, the :data:`Stage` signature, the
:class:`Backend` record a target family registers, and the two stages every
target starts with (``tiled``, ``sparse``)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from mlir import ir
from mlir.passmanager import PassManager

from .options import CompileOptions

__all__ = ["Backend", "CompilationError", "Stage", "make_differentiated", "make_sparse",
           "make_tiled", "run_pipeline"]


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


#: A stage: runs its passes on the module in place.
Stage = Callable[[ir.Module, CompileOptions], None]


def make_tiled(mod: ir.Module, opts: CompileOptions, block_tiles: bool = False) -> None:
    """``flexattn-tile``; ``block_tiles``: a block mask's KV blocks are walked
    in tiles of ``opts.tile_kv`` where it divides them."""
    pack = " pack-heads=true" if opts.pack_heads else ""
    blocks = " block-tiles=true" if block_tiles else ""
    run_pipeline(mod, f"flexattn-tile{{tile-q={opts.tile_q} tile-kv={opts.tile_kv}{pack}{blocks}}}",
                 "tiled")


def make_sparse(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-block-sparsity", "sparse")


def make_differentiated(mod: ir.Module, opts: CompileOptions) -> None:
    """The backward's first stage on every target: score_mod -> score_mod_vjp."""
    run_pipeline(mod, "flexattn-differentiate-mods", "differentiated")


@dataclass(frozen=True)
class Backend:
    """A target family, as the driver sees it (Triton's backends have the
    same shape): the ``CompileOptions.target`` names it serves, its ordered
    stage tables (names double as file suffixes of dumps and overrides) for
    the forward and the backward kernel, and what turns the last stage's
    module into the compiled result's metadata (PTX, cubin, launch facts).

    forward, backward: ``opts -> {stage name: Stage}``, the stages after the
      ``flexattn`` module; ``backward`` None: no backward kernel on this
      target.
    delta: the stages of the backward's preprocessing kernel
      (:class:`~flexattn_mlir.compiler.delta.DeltaSpec`; None: the backward
      reads no precomputed delta on this target).
    finish: ``(module, spec, opts) -> metadata``; None: the module is the
      result (the CPU's LLVM dialect, JIT-compiled by the runner)."""

    name: str
    targets: tuple[str, ...]
    forward: Callable[[CompileOptions], dict[str, Stage]]
    backward: Optional[Callable[[CompileOptions], dict[str, Stage]]] = None
    delta: Optional[Callable[[CompileOptions], dict[str, Stage]]] = None
    finish: Optional[Callable[..., dict]] = None

    def stages(self, kind: str, opts: CompileOptions) -> dict[str, Stage]:
        """The stage table of a ``kind`` (``"forward"`` / ``"backward"`` /
        ``"delta"``) kernel."""
        if kind == "delta":
            if self.delta is None:
                raise NotImplementedError(f"no delta kernel on {opts.target}")
            return self.delta(opts)
        if kind == "backward":
            if self.backward is None:
                raise NotImplementedError(
                    f"flex_attention's backward runs on the CPU only so far; {opts.target} "
                    f"gradients are not implemented yet")
            return self.backward(opts)
        return self.forward(opts)
