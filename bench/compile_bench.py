"""Compile-time benchmark of the Python API and the compile cache (CPU only;
the sm_90a compile runs here too, no GPU needed).

    python bench/compile_bench.py --json bench/results/<date>_cpu_compile_bench_<commit>.json

Per example variant (flexattn_mlir.examples.zoo):

* capture, process-first: capturing the variant's mods as the first thing a
  fresh process does after ``import flexattn_mlir`` (includes importing
  torch_mlir and torch.export's first-use set-up), one subprocess per variant;
* capture, in-process: exporting the mods again in a warm process (memo
  cleared), and the memoised re-capture;
* compile, CPU: ``kernel_for`` on a new spec with an empty cache: every pass,
  the LLVM code generation of the object and the disk write (``pipeline`` = the passes
  alone, ``driver.compile``); f32 q/k/v ``CPU_SHAPE``;
* compile, sm_90a: ``kernel_for`` on the bf16 ``GPU_SHAPE`` spec: passes,
  PTX, ptxas (when installed) and the artifact-store write;
* cache hits: in-process memory hit (``kernel_for`` of a compiled key), an
  in-process disk hit (memory table cleared: link the cached object),
  the GPU artifact-store load (``kernels.load_kernel``), and the new-process disk
  hit: ``flex_attention``'s first call in a fresh subprocess with the warm
  cache dir, reported as is (it includes capturing the score_mod, and for the
  first capture of that process importing torch_mlir; the block mask is
  built before it and timed separately);

and ``create_block_mask`` at S = 8192 and 65536 (B = H = None) for causal,
sliding_window, document, natten_2d, prefix_lm: ours (first call with the
capture memo cleared: capture + mask-kernel JIT + classification; then warm)
next to torch's ``create_block_mask(device="cpu")``. Torch runs in the bench
process at 8192 and in a subprocess capped at ``TORCH_MEM_CAP`` bytes of
address space at 65536 (it materialises the S x S mask; an allocation
failure is recorded as the error message; a B*H*S*S-byte estimate above
the cap skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings

import flexattn_mlir as fm  # first: before anything imports torch_mlir
from flexattn_mlir.examples import zoo
from flexattn_mlir.frontend import capture as frontend
from flexattn_mlir.compiler import cache
from flexattn_mlir.api import _lower_call

import torch  # noqa: E402
from torch.nn.attention import flex_attention as tfa  # noqa: E402

tfa._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True
from flexattn_mlir.execution import kernels  # noqa: E402  (the kernel table)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_SHAPE = (1, 4, 512, 64)          # B, H, S, D (float32)
GPU_SHAPE = (4, 16, 8192, 128)       # B, H, S, D (bfloat16), the README's H100 shape
MASK_VARIANTS = ["causal", "sliding_window", "document", "natten_2d", "prefix_lm"]
MASK_LENGTHS = [8192, 65536]
TORCH_MEM_CAP = 8 << 30
TORCH_TIMEOUT_S = 120


def _now() -> float:
    return time.perf_counter()


def _median_time(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = _now()
        fn()
        times.append(_now() - t)
    return statistics.median(times)


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"unknown ({e})"


def machine_info() -> dict:
    ptxas = os.environ.get("FLEXATTN_PTXAS") or shutil.which("ptxas")
    ptxas_version = None
    if ptxas:
        out = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout
        ptxas_version = out.strip().splitlines()[-1] if out.strip() else None
    cpu_model = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), None)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "flexattn_mlir": fm.__version__,
        "compiler_version": cache.compiler_version(),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "ptxas": ptxas,
        "ptxas_version": ptxas_version,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ---------------------------------------------------------------------------
# Subprocess scripts (flexattn_mlir imported first)
# ---------------------------------------------------------------------------

PROCESS_FIRST = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import flexattn_mlir as fm
    from flexattn_mlir.examples import zoo
    from flexattn_mlir.frontend import capture as frontend
    t1 = time.perf_counter()
    name, H, S = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    score_mod, mask_mod = zoo.make(name, H, S)
    t2 = time.perf_counter()
    if score_mod is not None:
        frontend.capture_score_mod(score_mod)
    if mask_mod is not None:
        frontend.capture_mask_mod(mask_mod)
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0,
                      "capture_s": (t3 - t2) if (score_mod or mask_mod) else None,
                      "exports": frontend.export_count}))
""")

NEW_PROCESS_HIT = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import flexattn_mlir as fm
    from flexattn_mlir.examples import zoo
    from flexattn_mlir.compiler import cache
    import torch
    t1 = time.perf_counter()
    name = sys.argv[1]
    B, H, S, D = (int(x) for x in sys.argv[2].split(","))
    score_mod, mask_mod = zoo.make(name, H, S)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, generator=g) for _ in range(3))
    t2 = time.perf_counter()
    bm = fm.create_block_mask(mask_mod, None, None, S, S) if mask_mod is not None else None
    t3 = time.perf_counter()
    fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm)
    t4 = time.perf_counter()
    fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm)
    t5 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0,
                      "create_block_mask_s": (t3 - t2) if mask_mod is not None else None,
                      "first_call_s": t4 - t3, "second_call_s": t5 - t4,
                      "compiles": fm.attention_compile_count(),
                      "compiler_version": cache.compiler_version()}))
""")

TORCH_BLOCK_MASK = textwrap.dedent("""
    import json, resource, sys, time
    cap = int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import flexattn_mlir
    from flexattn_mlir.examples import zoo
    import warnings
    warnings.simplefilter("ignore")
    from torch.nn.attention import flex_attention as tfa
    name, S = sys.argv[1], int(sys.argv[2])
    _, mask_mod = zoo.make(name, 1, S)
    t = time.perf_counter()
    try:
        bm = tfa.create_block_mask(mask_mod, None, None, S, S, device="cpu")
        print(json.dumps({"seconds": time.perf_counter() - t, "error": None,
                          "sparsity": bm.sparsity()}))
    except Exception as e:
        print(json.dumps({"seconds": time.perf_counter() - t,
                          "error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"}))
""")


def _subprocess_json(script: str, args: list[str], env: dict, cwd: str,
                     timeout: float = 300) -> dict:
    try:
        proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                              text=True, env=env, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


def _capture(score_mod, mask_mod) -> None:
    if score_mod is not None:
        frontend.capture_score_mod(score_mod)
    if mask_mod is not None:
        frontend.capture_mask_mod(mask_mod)


def bench_variant(name: str, env: dict, workdir: str) -> dict:
    B, H, S, D = CPU_SHAPE
    score_mod, mask_mod = zoo.make(name, H, S)
    row: dict = {"name": name}

    # -- capture in this (warm) process: an export, then a memo hit
    has_mods = score_mod is not None or mask_mod is not None
    frontend.clear_memo()
    exports = frontend.export_count
    t = _now()
    _capture(score_mod, mask_mod)
    row["capture_s"] = _now() - t if has_mods else None
    row["capture_exports"] = frontend.export_count - exports
    row["capture_memo_hit_s"] = _median_time(lambda: _capture(score_mod, mask_mod)) if has_mods else None

    # -- CPU: a new spec, an empty cache
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, generator=g) for _ in range(3))
    bm = fm.create_block_mask(mask_mod, None, None, S, S) if mask_mod is not None else None
    call, _ = _lower_call(q, k, v, score_mod, bm, False, None)
    opts = call.pop("options")
    spec = fm.attention_spec(q, k, v, **call)
    key = cache.kernel_key(spec.digest(), opts)
    compiled = fm.compile(spec, opts, keep_ir=False)
    row["cpu_pipeline_s"] = compiled.seconds
    compiles = fm.attention_compile_count()
    t = _now()
    kernels.kernel_for(spec, opts)
    row["cpu_compile_s"] = _now() - t
    assert fm.attention_compile_count() == compiles + 1, "expected a compile (cache not empty?)"
    row["cpu_memory_hit_s"] = _median_time(lambda: kernels.kernel_for(spec, opts), 20)

    def disk_hit():
        kernels.clear_table()
        kernels.kernel_for(spec, opts)

    row["cpu_disk_hit_inprocess_s"] = _median_time(disk_hit, 3)
    assert fm.attention_compile_count() == compiles + 1, "disk hit compiled"
    row["flex_attention_warm_call_s"] = _median_time(
        lambda: fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm), 5)

    # -- sm_90a: passes + PTX + ptxas + artifact-store write, then loads
    gspec = zoo.spec(name, *GPU_SHAPE)
    gopts = fm.CompileOptions(target="sm_90a")
    gkey = cache.kernel_key(gspec.digest(), gopts)
    row["sm90a_compile_s"] = row["sm90a_memory_hit_s"] = row["sm90a_artifact_load_s"] = None
    try:
        t = _now()
        kernels.kernel_for(gspec, gopts)
        row["sm90a_compile_s"] = _now() - t
    except Exception as e:  # noqa: BLE001 - recorded, the other measurements go on
        row["sm90a_error"] = f"{type(e).__name__}: {str(e).strip()[:500]}"
    else:
        row["sm90a_memory_hit_s"] = _median_time(lambda: kernels.kernel_for(gspec, gopts), 20)
        row["sm90a_artifact_load_s"] = _median_time(lambda: kernels.load_kernel(gkey), 3)
        assert kernels.load_kernel(gkey) is not None

    # -- a new process with the warm cache dir
    hit = _subprocess_json(NEW_PROCESS_HIT, [name, ",".join(map(str, CPU_SHAPE))], env, workdir)
    row["new_process"] = hit
    if hit.get("compiles") not in (0, None):
        row["new_process_warning"] = "the new process compiled: no disk hit"
        if hit.get("compiler_version") != cache.compiler_version():
            row["new_process_warning"] += (
                f" (its compiler_version {hit.get('compiler_version')} differs from this "
                f"process's {cache.compiler_version()}: sources changed during the run)")
    return row


def bench_block_masks(env: dict, workdir: str) -> dict:
    results: dict = {}
    for S in MASK_LENGTHS:
        results[str(S)] = {}
        for name in MASK_VARIANTS:
            _, mask_mod = zoo.make(name, 1, S)
            frontend.clear_memo()
            t = _now()
            ours = fm.create_block_mask(mask_mod, None, None, S, S)
            first = _now() - t
            warm = _median_time(lambda: fm.create_block_mask(mask_mod, None, None, S, S), 3)
            entry = {"ours_first_s": first, "ours_warm_s": warm,
                     "ours_sparsity": ours.sparsity(), "torch_s": None, "torch_error": None}
            estimate = S * S  # B*H*S*S bytes of boolean mask, B = H = 1
            if S <= 8192:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = _now()
                    theirs = tfa.create_block_mask(mask_mod, None, None, S, S, device="cpu")
                    entry["torch_s"] = _now() - t
                entry["equal_to_torch"] = bool(torch.equal(ours.to_dense(), theirs.to_dense()))
            elif estimate > TORCH_MEM_CAP:
                entry["torch_error"] = f"skipped: {estimate} byte mask estimate > {TORCH_MEM_CAP}"
            else:
                res = _subprocess_json(TORCH_BLOCK_MASK, [name, str(S), str(TORCH_MEM_CAP)],
                                       env, workdir, timeout=TORCH_TIMEOUT_S)
                entry["torch_in_subprocess_capped_bytes"] = TORCH_MEM_CAP
                if res.get("error"):
                    entry["torch_error"] = res["error"]
                    entry["torch_s_until_error"] = res.get("seconds")
                else:
                    entry["torch_s"] = res["seconds"]
                    entry["torch_sparsity"] = res.get("sparsity")
            results[str(S)][name] = entry
            print(f"  create_block_mask S={S:6d} {name:15s} ours first {first:7.3f} s, "
                  f"warm {warm:7.4f} s; torch "
                  + (f"{entry['torch_s']:.3f} s" if entry["torch_s"] is not None
                     else str(entry["torch_error"])[:80]), flush=True)
    return results


def _fmt(x, digits=3) -> str:
    if x is None:
        return "-"
    if x < 0.01:
        return f"{x * 1e3:.2f}ms"
    return f"{x:.{digits}f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--variants", default="all", help="comma-separated zoo names")
    parser.add_argument("--skip-block-masks", action="store_true")
    args = parser.parse_args(argv)
    names = zoo.names() if args.variants == "all" else args.variants.split(",")

    start = _now()
    workdir = tempfile.mkdtemp(prefix="flexattn-compile-bench-")
    cache_root = os.path.join(workdir, "cache")
    os.environ["FLEXATTN_CACHE_DIR"] = cache_root  # an empty cache for this run
    os.environ.pop("FLEXATTN_DISABLE_CACHE", None)
    os.environ.pop("FLEXATTN_ARTIFACTS", None)
    env = dict(os.environ)
    info = machine_info()
    print(f"machine: {info['nproc']} cpus ({info['cpu_model']}), torch {info['torch']}, "
          f"commit {info['git_commit']}{' (dirty)' if info['git_dirty'] else ''}, "
          f"ptxas {'yes' if info['ptxas'] else 'no'}", flush=True)

    # Fresh processes: the first capture of a process (imports torch_mlir).
    process_first = {}
    for name in names:
        process_first[name] = _subprocess_json(
            PROCESS_FIRST, [name, str(CPU_SHAPE[1]), str(CPU_SHAPE[2])], env, workdir)
    print("process-first captures done", flush=True)

    # This process: import torch_mlir with a throwaway capture first.
    t = _now()
    frontend.capture_mask_mod(lambda b, h, q_idx, kv_idx: q_idx >= kv_idx + 1)
    bench_process_first_capture = _now() - t

    rows = []
    for name in names:
        row = bench_variant(name, env, workdir)
        row["process_first"] = process_first[name]
        rows.append(row)
        print(f"  {name}: done", flush=True)
    masks = {} if args.skip_block_masks else bench_block_masks(env, workdir)

    result = {
        "machine": info,
        "config": {"cpu_shape_BHSD_f32": CPU_SHAPE, "gpu_shape_BHSD_bf16": GPU_SHAPE,
                   "mask_lengths": MASK_LENGTHS, "torch_mem_cap_bytes": TORCH_MEM_CAP,
                   "cache_dir": "fresh temporary directory"},
        "bench_process_first_capture_s": bench_process_first_capture,
        "variants": rows,
        "create_block_mask": masks,
        "total_seconds": _now() - start,
    }

    hdr = (f"{'variant':20s} {'cap 1st-proc':>12s} {'cap':>8s} {'memo':>8s} {'cpu comp':>8s} "
           f"{'(passes)':>8s} {'sm90a':>8s} {'mem hit':>8s} {'disk hit':>8s} "
           f"{'new proc':>8s} {'(2nd)':>8s}")
    print("\nseconds (ms where marked); CPU shape", CPU_SHAPE, "f32; sm_90a shape", GPU_SHAPE, "bf16")
    print(hdr)
    for r in rows:
        npr = r["new_process"]
        print(f"{r['name']:20s} {_fmt(r['process_first'].get('capture_s')):>12s} "
              f"{_fmt(r['capture_s']):>8s} {_fmt(r['capture_memo_hit_s']):>8s} "
              f"{_fmt(r['cpu_compile_s']):>8s} {_fmt(r['cpu_pipeline_s']):>8s} "
              f"{_fmt(r['sm90a_compile_s']):>8s} {_fmt(r['cpu_memory_hit_s']):>8s} "
              f"{_fmt(r['cpu_disk_hit_inprocess_s']):>8s} {_fmt(npr.get('first_call_s')):>8s} "
              f"{_fmt(npr.get('second_call_s')):>8s}")
    if masks:
        print(f"\n{'create_block_mask':20s} {'S':>6s} {'ours 1st':>9s} {'ours warm':>9s} {'torch':>9s}")
        for S, per in masks.items():
            for name, e in per.items():
                torch_col = _fmt(e["torch_s"]) if e["torch_s"] is not None else "error"
                print(f"{name:20s} {S:>6s} {_fmt(e['ours_first_s']):>9s} "
                      f"{_fmt(e['ours_warm_s']):>9s} {torch_col:>9s}")
    for r in rows:
        if r.get("new_process_warning"):
            print(f"WARNING {r['name']}: {r['new_process_warning']}")
    print(f"\ntotal {result['total_seconds']:.1f} s")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print(f"wrote {args.json}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
