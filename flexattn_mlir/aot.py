"""Ahead-of-time compilation: specs -> an artifact directory that
:mod:`flexattn_runtime` runs on a GPU machine without MLIR.

    <dir>/index.json           key -> <name>.json
    <dir>/<name>.json          launch metadata (runtime/README.md, schema v1)
    <dir>/<name>.cubin|.ptx    the kernel

Compilation needs no GPU. ``flexattn-aot --help`` compiles the
example variants; :func:`write_artifacts` is the library entry.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Iterable

from . import driver, targets
from .gpu import binary_of
from .options import CompileOptions
from .spec import AttentionSpec

__all__ = ["write_artifacts", "artifact_key"]


def artifact_key(spec: AttentionSpec, opts: CompileOptions) -> str:
    """The key a kernel is stored under: the metadata's "key", and what
    :func:`flexattn_mlir.flex_attention` looks up in ``FLEXATTN_ARTIFACTS``."""
    from .cache import kernel_key

    return kernel_key(spec.digest(), opts)


def write_artifacts(items: Iterable[tuple[str, AttentionSpec, CompileOptions]],
                    out_dir: str | Path, *, keep_ir: bool = False) -> dict[str, dict]:
    """Compiles each (name, spec, options) for its GPU target and writes it
    to ``out_dir``. Returns name -> {"key", "seconds", "metadata"}."""
    from flexattn_runtime import write_kernel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = {}
    for name, spec, opts in items:
        if opts.target == "cpu":
            raise ValueError(f"{name}: AOT artifacts are for GPU targets, got target='cpu'")
        start = time.perf_counter()
        compiled = driver.compile(spec, opts, keep_ir=keep_ir)
        binary, fmt = binary_of(compiled)
        meta = dict(compiled.metadata["launch"], binary_format=fmt, binary=f"{name}.{fmt}")
        meta["spec"] = dict(meta["spec"], name=name)
        write_kernel(out, name, meta, binary)
        if keep_ir:
            for stage, text in compiled.ir.items():
                (out / f"{name}.{stage}.mlir").write_text(text)
        done[name] = {"key": meta["key"], "seconds": time.perf_counter() - start,
                      "metadata": meta}
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="flexattn-aot",
        description="Compile example attention variants to a flexattn_runtime artifact directory.")
    parser.add_argument("--out", required=True, help="artifact directory")
    parser.add_argument("--variants", default="all",
                        help="comma-separated example variant names (default: all)")
    parser.add_argument("--shape", default="4,16,8192,128",
                        help="B,H,S,D of q/k/v (default 4,16,8192,128)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--target", default=targets.gpu_targets()[0],
                        choices=targets.gpu_targets())
    args = parser.parse_args(argv)
    from . import zoo

    b, h, s, d = (int(x) for x in args.shape.split(","))
    names = zoo.names() if args.variants == "all" else args.variants.split(",")
    opts = CompileOptions(target=args.target)
    items = [(n, zoo.spec(n, b, h, s, d, dtype=args.dtype), opts) for n in names]
    done = write_artifacts(items, args.out)
    print(json.dumps({n: {"key": v["key"], "seconds": round(v["seconds"], 3)}
                      for n, v in done.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
