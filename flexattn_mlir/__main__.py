"""``flexattn`` (or ``python -m flexattn_mlir``): print the IR of every
compiler stage for an example variant (see ``--list``), for the CPU or the H100.

    flexattn causal                     # every CPU stage
    flexattn alibi_causal --target sm_90a --stage roles
    flexattn --list
"""

from __future__ import annotations

import argparse
import sys

from . import driver, targets, zoo
from .options import CompileOptions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flexattn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", nargs="?", help="example variant name")
    parser.add_argument("--list", action="store_true", help="list the example variants")
    parser.add_argument("--target", default="cpu", choices=list(targets.TARGETS))
    parser.add_argument("--stage", help="print only this stage (default: all)")
    parser.add_argument("--shape", help="B,H,S,D (default 1,2,256,64 on cpu, 1,2,1024,128 on sm_90a)")
    parser.add_argument("--dtype", help="float32 | bfloat16 | float16 (default: f32 cpu, bf16 gpu)")
    args = parser.parse_args(argv)
    if args.list or not args.variant:
        for name, v in zoo.VARIANTS.items():
            print(f"{name:22s} {v.description}")
        return 0
    gpu = targets.target(args.target).is_gpu
    shape = args.shape or ("1,2,1024,128" if gpu else "1,2,256,64")
    b, h, s, d = (int(x) for x in shape.split(","))
    dtype = args.dtype or ("bfloat16" if gpu else "float32")
    try:
        spec = zoo.spec(args.variant, b, h, s, d, dtype=dtype)
    except KeyError as e:
        parser.error(str(e.args[0]))
    compiled = driver.compile(spec, CompileOptions(target=args.target))
    stages = [args.stage] if args.stage else compiled.stage_names()
    for stage in stages:
        if stage not in compiled.ir:
            parser.error(f"unknown stage {stage!r}; stages: {compiled.stage_names()}")
        print(f"// ===== {args.variant}: stage {stage} =====")
        print(compiled.ir[stage])
    if gpu and (not args.stage or args.stage == "ptx"):
        print(f"// ===== {args.variant}: PTX =====")
        print(compiled.metadata["ptx"])
    print(f"// compiled in {compiled.seconds:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
