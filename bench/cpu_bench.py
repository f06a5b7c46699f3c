"""CPU benchmark: flexattn_mlir's kernels beside torch's, in one process.

    python bench/cpu_bench.py                    # writes bench/results/<date>_cpu_bench_<cpu>-<n>cpu_<commit>.json
    python bench/cpu_bench.py --quick            # the headline table only
    python bench/cpu_bench.py --smoke            # S=256, one round: does it all run? (~1-2 min)
    python bench/cpu_bench.py --only causal,alibi_causal --lengths 2048 --dtypes float32
    python bench/cpu_bench.py --only t5_bias,document --lengths 1024 --dynamic   # + dynamic-shape kernels

For every case (B=1, H=8, D=64; the zoo's variants, flexattn_mlir.examples.zoo, at
S = 1024, 2048, 4096, fp32 and bf16) it times, interleaved (one call of each
per round; ``*_ms`` the median of the rounds, ``*_best_ms`` the best, the
figure to compare on a shared machine):

* ours: ``flexattn_mlir.flex_attention`` (its first call, with an empty
  compile cache, is reported separately as ``first_call_s``: capture +
  compile + load, with ``first_call_cpu_s`` its process CPU time, the
  quiet-machine figure; torch-mlir's one-off import is paid before any case);
* torch: ``torch.compile(flex_attention)`` on the same CPU tensors and the
  same BlockMask (torch's C++ CPU template; ``torch_first_call_s`` is its
  compile);
* SDPA: ``scaled_dot_product_attention`` for the variants it expresses
  (full, causal);
* with ``--dynamic``, ours again as a dynamic-shape kernel
  (``kernel_options={"dynamic": True}``, docs/inference.md), checked against
  the static one; ``static_over_dynamic`` compares their best rounds (< 1:
  the dynamic kernel is slower);

on ``torch.get_num_threads()`` threads, and checks ours against torch's
compiled result (max abs error). Ratios are torch / ours (> 1: ours is
faster). A last check runs one cached kernel in a fresh process (warm disk
cache) and records that it did no code generation and how long its first
call took. The JSON records the machine (lscpu summary, the CPU name and
LLVM target features our kernels are built for, threads, load averages
before and after) since the machine may be shared; the run ends with the
ratio tables (markdown), the issue's headline table first.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import flexattn_mlir as fm  # first: before anything imports torch_mlir
from flexattn_mlir.examples import zoo

import torch  # noqa: E402
from torch.nn.attention import flex_attention as tfa  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, H, D = 1, 8, 64
HEADLINE = [("causal", "float32"), ("full", "float32"), ("causal", "bfloat16"),
            ("full", "bfloat16")]
LENGTHS = [1024, 2048, 4096]
DTYPES = ["float32", "bfloat16"]
SDPA_CAUSAL = {"full": False, "causal": True}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def machine() -> dict:
    """lscpu's summary lines, the ISA extensions that matter here, threads."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    keep = ("Architecture", "Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket",
            "Socket(s)", "L1d cache", "L2 cache", "L3 cache", "Hypervisor vendor", "CPU max MHz")
    summary = {}
    flags = []
    for line in lscpu.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keep:
            summary[key.strip()] = value.strip()
        if key.strip() == "Flags":
            flags = [f for f in value.split() if f.startswith(("avx512", "amx", "avx_vnni", "fma"))]
    cpu, features = fm._native.cpu_host_target().split(" ")
    opts = fm.CompileOptions()
    return {"lscpu": summary, "isa": flags, "torch_threads": torch.get_num_threads(),
            "host_target": cpu, "llvm_features": features,
            "compile_options": {"tile_q": opts.tile_q, "tile_kv": opts.tile_kv,
                                "opt_level": opts.opt_level},
            "python": platform.python_version(), "torch": torch.__version__}


def make_inputs(S: int, dtype: str):
    g = torch.Generator().manual_seed(S)
    dt = getattr(torch, dtype)
    return [torch.randn(B, H, S, D, generator=g).to(dt) for _ in range(3)]


def run_case(variant: str, S: int, dtype: str, rounds: int, torch_flex,
             dynamic: bool = False) -> dict:
    score_mod, mask_mod = zoo.make(variant, H, S, "cpu")
    q, k, v = make_inputs(S, dtype)
    block_mask = (tfa.create_block_mask(mask_mod, None, None, S, S, device="cpu")
                  if mask_mod is not None else None)

    def ours():
        return fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)

    def theirs():
        return torch_flex(q, k, v, score_mod=score_mod, block_mask=block_mask)

    calls = {"ours": ours, "torch": theirs}
    if dynamic:
        calls["dynamic"] = lambda: fm.flex_attention(q, k, v, score_mod=score_mod,
                                                     block_mask=block_mask,
                                                     kernel_options={"dynamic": True})
    if variant in SDPA_CAUSAL:
        calls["sdpa"] = lambda: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=SDPA_CAUSAL[variant])

    row = {"variant": variant, "S": S, "dtype": dtype}
    t, cpu = time.perf_counter(), time.process_time()
    out = ours()
    row["first_call_s"] = time.perf_counter() - t
    # CPU seconds of the process: what the first call costs on a quiet
    # machine (the compile runs on one thread), even when this one is shared.
    row["first_call_cpu_s"] = time.process_time() - cpu
    t = time.perf_counter()
    ref = theirs()
    row["torch_first_call_s"] = time.perf_counter() - t
    row["max_abs_err_vs_torch"] = float((out.float() - ref.float()).abs().max())
    if dynamic:
        row["max_abs_err_dynamic_vs_static"] = float((calls["dynamic"]().float() - out.float()).abs().max())
    for fn in calls.values():  # warm-up
        fn()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    for name, ts in times.items():
        row[f"{name}_ms"] = 1e3 * statistics.median(ts)
        row[f"{name}_best_ms"] = 1e3 * min(ts)
    row["speedup_vs_torch"] = row["torch_ms"] / row["ours_ms"]
    row["speedup_vs_torch_best"] = row["torch_best_ms"] / row["ours_best_ms"]
    if dynamic:
        row["static_over_dynamic"] = row["ours_best_ms"] / row["dynamic_best_ms"]
    if "sdpa_ms" in row:
        row["speedup_vs_sdpa"] = row["sdpa_ms"] / row["ours_ms"]
    return row


WARM_SCRIPT = textwrap.dedent("""
    import json, time, importlib
    t0 = time.perf_counter()
    import flexattn_mlir as fm
    from flexattn_mlir.examples import zoo
    import torch
    from torch.nn.attention import flex_attention as tfa
    kernels = importlib.import_module("flexattn_mlir.execution.kernels")
    variant, S, dtype = {case!r}
    g = torch.Generator().manual_seed(S)
    q, k, v = [torch.randn(1, 8, S, 64, generator=g).to(getattr(torch, dtype)) for _ in range(3)]
    score_mod, mask_mod = zoo.make(variant, 8, S, "cpu")
    bm = tfa.create_block_mask(mask_mod, None, None, S, S, device="cpu") if mask_mod else None
    fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm)  # capture (cached) + kernel
    t1 = time.perf_counter()
    kernels.clear_table()
    t2, c2 = time.perf_counter(), time.process_time()
    fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm)  # the disk hit alone
    t3, c3 = time.perf_counter(), time.process_time()
    print(json.dumps({{"compiles": kernels.compile_count, "first_call_s": t1 - t0,
                      "disk_hit_call_s": t3 - t2, "disk_hit_call_cpu_s": c3 - c2}}))
""")


FIRST_CALL_LIMIT_S = 1.5  # the bound on a new variant's first call


def tables(rows: list[dict], headline_s: int = 2048) -> str:
    """The ratio tables (markdown): the headline cases (at ``headline_s``)
    then the zoo, torch / ours and SDPA / ours (> 1: ours is faster)."""
    def line(r):
        sdpa = f"{r['sdpa_ms']:.1f}" if "sdpa_ms" in r else "-"
        vs_sdpa = f"{r['speedup_vs_sdpa']:.2f}" if "speedup_vs_sdpa" in r else "-"
        slow = "" if r["first_call_s"] < FIRST_CALL_LIMIT_S else " (over 1.5 s)"
        slow += f", cpu {r['first_call_cpu_s']:.2f}" if "first_call_cpu_s" in r else ""
        return (f"| {r['variant']} | {r['S']} | {r['dtype']} | {r['ours_ms']:.1f} | "
                f"{r['torch_ms']:.1f} | {sdpa} | {r['speedup_vs_torch']:.2f} | {vs_sdpa} | "
                f"{r['first_call_s']:.2f}{slow} | {r['torch_first_call_s']:.1f} |")

    head = ("| case | S | dtype | ours ms | torch.compile flex ms | SDPA ms | torch/ours | "
            "SDPA/ours | first call s (cpu s) | torch first s |\n|" + "---|" * 10)
    headline = [r for r in rows if (r["variant"], r["dtype"]) in HEADLINE and r["S"] == headline_s]
    zoo_rows = [r for r in rows if r not in headline]
    out = ["B=1, H=8, D=64; ms, median of the rounds"]
    for part in (headline, zoo_rows):
        if part:
            out += ["", head, *map(line, part)]
    dynamic = [r for r in rows if "static_over_dynamic" in r]
    if dynamic:
        out += ["", "| case | S | dtype | static best ms | dynamic best ms | static/dynamic |",
                "|" + "---|" * 6]
        out += [f"| {r['variant']} | {r['S']} | {r['dtype']} | {r['ours_best_ms']:.1f} | "
                f"{r['dynamic_best_ms']:.1f} | {r['static_over_dynamic']:.3f} |" for r in dynamic]
    ratios = [r["speedup_vs_torch"] for r in rows]
    out += ["", f"torch/ours: min {min(ratios):.2f}, geomean "
            f"{statistics.geometric_mean(ratios):.2f} over {len(rows)} cases; first calls over "
            f"{FIRST_CALL_LIMIT_S} s: {sum(r['first_call_s'] >= FIRST_CALL_LIMIT_S for r in rows)}"]
    return "\n".join(out)


def warm_cache_check(cache_dir: str, case: tuple[str, int, str]) -> dict:
    """A fresh process runs a kernel this process compiled (``case``):
    ``compiles`` must be 0 (no pass ran, no code generation); its first call
    includes importing the package and loading the cached mods."""
    env = dict(os.environ, FLEXATTN_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", WARM_SCRIPT.format(case=case)], env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        return {"case": case, "error": proc.stderr[-2000:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["case"] = case
    result["no_code_generation"] = result["compiles"] == 0
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="output path (default bench/results/<date>_cpu_bench_<cpu>-<n>cpu_<commit>.json)")
    p.add_argument("--quick", action="store_true", help="the headline cases at S=2048 only")
    p.add_argument("--smoke", action="store_true",
                   help="S=256, one round, the headline cases and two zoo variants: checks "
                        "that the script runs end to end (its numbers mean nothing)")
    p.add_argument("--only", help="comma-separated zoo variants")
    p.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dynamic", action="store_true",
                   help="also time ours as a dynamic-shape kernel (static/dynamic ratio)")
    a = p.parse_args()

    import torch._dynamo

    torch._dynamo.config.cache_size_limit = 1024  # one recompile per variant and shape
    torch._dynamo.config.accumulated_cache_size_limit = 4096
    tfa._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True
    torch_flex = torch.compile(tfa.flex_attention, dynamic=False)

    cache_dir = tempfile.mkdtemp(prefix="flexattn-cpu-bench-")
    os.environ["FLEXATTN_CACHE_DIR"] = cache_dir  # first calls compile for real
    fm.frontend.capture_score_mod(lambda s, b, h, q, kv: s * 2.0)  # torch-mlir's import

    if a.smoke:
        a.rounds = 1
        cases = [(v, 256, dt) for v, dt in HEADLINE]
        cases += [(v, 256, "float32") for v in ("alibi_causal", "document")
                  if v in zoo.names()]
    elif a.quick:
        cases = [(v, 2048, dt) for v, dt in HEADLINE]
    else:
        variants = a.only.split(",") if a.only else zoo.names()
        lengths = [int(s) for s in a.lengths.split(",")]
        dtypes = a.dtypes.split(",")
        cases = [(v, 2048, dt) for v, dt in HEADLINE if v in variants and dt in dtypes]
        cases += [(v, s, dt) for dt in dtypes for s in lengths for v in variants
                  if (v, s, dt) not in cases]

    result = {"date": datetime.date.today().isoformat(), "commit": _git("rev-parse", "--short", "HEAD"),
              "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
              "machine": machine(), "load_before": os.getloadavg(),
              "shape": {"B": B, "H": H, "D": D}, "rounds": a.rounds, "smoke": a.smoke,
              "cases": []}
    for variant, S, dtype in cases:
        row = run_case(variant, S, dtype, a.rounds, torch_flex, a.dynamic)
        result["cases"].append(row)
        sdpa = f" sdpa {row['sdpa_ms']:8.1f}" if "sdpa_ms" in row else ""
        print(f"{variant:20s} S={S:5d} {dtype:9s} ours {row['ours_ms']:8.1f} ms  torch "
              f"{row['torch_ms']:8.1f}{sdpa}  x{row['speedup_vs_torch']:.2f}  first "
              f"{row['first_call_s']:.2f}s (torch {row['torch_first_call_s']:.1f}s)  "
              f"err {row['max_abs_err_vs_torch']:.1e}  best x{row['speedup_vs_torch_best']:.2f}"
              + (f"  static/dynamic {row['static_over_dynamic']:.3f}" if a.dynamic else ""),
              flush=True)
    result["warm_cache"] = warm_cache_check(cache_dir, cases[0])
    print("warm disk cache, new process:", result["warm_cache"])
    result["load_after"] = os.getloadavg()
    result["tables"] = tables(result["cases"], cases[0][1])
    print(result["tables"])
    host = f"{result['machine']['host_target']}-{os.cpu_count()}cpu"  # e.g. znver5-2cpu
    smoke = "_smoke" if a.smoke else ""
    path = a.json or os.path.join(
        ROOT, "bench", "results",
        f"{result['date']}_cpu_bench_{host}_{result['commit']}{smoke}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
