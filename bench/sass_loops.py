"""The SASS of a kernel's KV loop, counted: how many instructions one KV step
issues and of which kinds (the numbers docs/gpu-pipeline.md §3 and §5 quote).

    python bench/sass_loops.py ARTIFACTS/bench_full_d128.cubin [more.cubin ...]
        [--min-mufu 60] [--min-hgmma 8] [--print]

Disassembles each cubin with nvdisasm (FLEXATTN_NVDISASM, else on PATH, else
the `nvidia-cuda-nvdisasm` wheel's: `pip download --no-deps
nvidia-cuda-nvdisasm`, unzipped), finds every loop (a backward branch and
the instructions from its target up to it) and reports the shortest one
holding at least `--min-mufu` MUFU and `--min-hgmma` HGMMA instructions: the
steady-state KV step (a D = 128 step has 66 exponentials per thread and 16
wgmmas). Uniform-datapath instructions (U*, R2UR) are counted apart.
No GPU needed.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys

_INSN = re.compile(r"\s+/\*([0-9a-f]+)\*/\s+(.*?);")
_LABEL = re.compile(r"(\.L_x_\d+):")
_BACK = re.compile(r"BRA\s+`\((\.L_x_\d+)\)")


def nvdisasm() -> str:
    path = os.environ.get("FLEXATTN_NVDISASM") or shutil.which("nvdisasm")
    if not path:
        raise SystemExit("sass_loops: no nvdisasm: set FLEXATTN_NVDISASM, put it on PATH, or "
                         "unzip the nvidia-cuda-nvdisasm wheel (pip download --no-deps "
                         "nvidia-cuda-nvdisasm)")
    return path


def loops(sass: str) -> list[list[str]]:
    """Every loop of the listing: the instructions from a backward branch's
    target up to the branch."""
    insns, labels, pending = [], {}, []
    for line in sass.splitlines():
        m = _LABEL.match(line)
        if m:
            pending.append(m.group(1))
            continue
        m = _INSN.match(line)
        if m:
            addr = int(m.group(1), 16)
            for label in pending:
                labels[label] = addr
            pending = []
            insns.append((addr, m.group(2).strip()))
    found = []
    for addr, text in insns:
        m = _BACK.search(text)
        if m and labels.get(m.group(1), 1 << 62) < addr:
            start = labels[m.group(1)]
            found.append([t for a, t in insns if start <= a <= addr])
    return found


def opcode(text: str) -> str:
    """The opcode without predicate or modifiers: `@!P0 FMNMX.FTZ R1, ...` -> FMNMX."""
    return re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]


def kv_step(sass: str, min_mufu: int, min_hgmma: int) -> list[str] | None:
    candidates = [b for b in loops(sass)
                  if sum(opcode(t) == "MUFU" for t in b) >= min_mufu
                  and sum(opcode(t) == "HGMMA" for t in b) >= min_hgmma]
    return min(candidates, key=len) if candidates else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cubins", nargs="+")
    ap.add_argument("--min-mufu", type=int, default=60)
    ap.add_argument("--min-hgmma", type=int, default=8)
    ap.add_argument("--print", action="store_true", help="print the loop's instructions too")
    a = ap.parse_args()
    tool = nvdisasm()
    for cubin in a.cubins:
        sass = subprocess.run([tool, "-c", cubin], capture_output=True, text=True,
                              check=True).stdout
        step = kv_step(sass, a.min_mufu, a.min_hgmma)
        if step is None:
            print(f"{cubin}: no loop with >= {a.min_mufu} MUFU and >= {a.min_hgmma} HGMMA")
            continue
        counts = collections.Counter(opcode(t) for t in step)
        uniform = sum(n for k, n in counts.items() if k.startswith("U") or k == "R2UR")
        print(f"{cubin}: {len(step)} instructions per KV step, {uniform} uniform-datapath; "
              + ", ".join(f"{k} {n}" for k, n in counts.most_common(16)))
        if a.print:
            for i, t in enumerate(step):
                print(f"  {i:4d} {t}")


if __name__ == "__main__":
    sys.exit(main())
