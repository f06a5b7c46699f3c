"""The host time of ``flex_attention``'s GPU cache hit, measured on a machine
without a GPU.

    venv/bin/python bench/gpu_hit_profile.py [--target sm_90a|sm_80] [--calls N] [--rounds R]
                                             [--profile CASE] [--out X.json]

The cases, shapes and split (call / launcher / native) of
``bench/host_overhead.py --device cuda`` (B=1, H=2, S=128, D=64, bfloat16),
with real GPU kernels: each case compiles the target's kernel here (ptxas)
and its call plan launches it through flexattn_runtime's prepared launch.
What needs a GPU is replaced, and nothing else:

- the CUDA driver is the stub libcuda of ``test/python/test_runtime.py`` (C,
  built here with gcc against cuda.h): the per-launch driver calls
  (cuCtxGetCurrent, cuLaunchKernel) go through ctypes into it; its
  cuLaunchKernel records the launch and returns. **The real driver's
  launch is not timed** (``native`` here is the ctypes call into the stub;
  on the device, ``bench/host_overhead.py --device cuda`` times it);
- torch's CUDA queries (current device, current stream, capture status)
  return constants, where on a GPU they are C calls into torch;
- q/k/v, the outputs and the mods' tensors are CPU tensors of the case's
  shapes and dtypes, so ``torch.empty`` is the CPU allocator's, not the CUDA
  caching allocator's (a few µs more on a GPU);
- a TMA descriptor's upload (the first call with a tensor only) writes into a
  CPU tensor, and a first call (a plan's miss) validates its tensors as CPU
  tensors (the hits timed here do not validate: their plan's key and guards
  fix what validation checks).

``--profile CASE`` runs cProfile over that case's hits and prints the
functions by own time. Writes
``bench/results/<date>_gpu_hit_profile_<target>_<commit>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import os
import pstats
import sys
import tempfile
from pathlib import Path

import flexattn_mlir as fm  # first: imports mlir before torch_mlir
import torch
from flexattn_mlir.compiler import targets
from flexattn_mlir.execution import call_plans

from host_overhead import (ROOT, commit, cpu_model, make_cases, run_case, summary_line,
                           write_json)

sys.path.insert(0, str(ROOT / "test" / "python"))
from test_prepared_launch import stub_gpu_target  # noqa: E402
from test_runtime import build_stub_libcuda  # noqa: E402

def fake_gpu(target: str, stub_dir: Path) -> None:
    """Binds flexattn_runtime to the stub driver and answers torch's CUDA
    queries with constants; flexattn_mlir compiles ``target``'s kernels for
    CPU tensors (test_prepared_launch.stub_gpu_target)."""
    from flexattn_runtime import driver

    so = build_stub_libcuda(stub_dir)
    if so is None:
        raise SystemExit("needs a C compiler and the CUDA toolkit's cuda.h (the stub driver)")
    driver._LIB_NAMES = [str(so)]
    lib = driver._load_library()
    for attr, value in ((driver.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 1024),
                        (driver.CU_FUNC_ATTRIBUTE_NUM_REGS, 128)):
        lib.stub_set_func_attr(attr, value)
    stub_gpu_target(setattr, target)


def profile(name, mods, shape, dtype, calls) -> str:
    """cProfile of ``calls`` hits of one case: the top functions by own time."""
    b, h, s, d = shape
    device = torch.device("cpu")
    q, k, v = (torch.randn(b, h, s, d, dtype=dtype) for _ in range(3))
    mask = (fm.create_block_mask(mods["mask_mod"], None, None, s, s, device=device)
            if mods["mask_mod"] is not None else None)
    with torch.no_grad():
        for _ in range(5):
            fm.flex_attention(q, k, v, score_mod=mods["score_mod"], block_mask=mask)
        hits = call_plans.hits
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(calls):
            fm.flex_attention(q, k, v, score_mod=mods["score_mod"], block_mask=mask)
        prof.disable()
    assert call_plans.hits - hits == calls, f"{name}: a profiled call missed its plan"
    out = tempfile.SpooledTemporaryFile(mode="w+")
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    out.seek(0)
    return out.read()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="sm_90a", choices=targets.gpu_targets())
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--shape", type=int, nargs=4, default=(1, 2, 128, 64),
                    metavar=("B", "H", "S", "D"))
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--profile", default=None, metavar="CASE",
                    help="also print a cProfile of this case's hits")
    ap.add_argument("--out", default=None, help="JSON path (default: bench/results/...)")
    ap.add_argument("--note", default="", help="recorded in the JSON (e.g. the machine's load)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dtype, shape, device = getattr(torch, args.dtype), tuple(args.shape), torch.device("cpu")
    with tempfile.TemporaryDirectory() as stub_dir:
        fake_gpu(args.target, Path(stub_dir))
        cases = make_cases(device, shape[1], shape[2])
        results = []
        for name, mods in cases.items():
            try:
                results.append(run_case(name, mods, shape, dtype, device, args.calls,
                                        args.rounds, lambda: None, peer=False))
            except Exception as err:  # e.g. a variant the target refuses
                results.append({"case": name, "error": f"{type(err).__name__}: {err}"})
        report = (profile(args.profile, cases[args.profile], shape, dtype, 20 * args.calls)
                  if args.profile else None)
    for r in results:
        print(f"{r['case']:14s} FAILED: {r['error']}" if "error" in r else summary_line(r))
    if report:
        print(report)
    doc = {
        "what": "flex_attention's GPU cache hit timed without a GPU (stub driver, CPU "
                "tensors, torch's CUDA queries as constants; the driver's launch not timed); "
                "medians",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs",
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "commit": commit(), "target": args.target, "torch": torch.__version__,
        "calls_per_round": args.calls, "rounds": args.rounds, "note": args.note,
        "results": results,
    }
    write_json(doc, args.out, f"gpu_hit_profile_{args.target}")
    if any("error" in r for r in results):
        raise SystemExit("some case failed")


if __name__ == "__main__":
    main()
