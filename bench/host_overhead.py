"""Host overhead of ``flexattn_mlir.flex_attention`` per call at a cache hit,
beside ``torch.compile``'d torch ``flex_attention``, on tiny shapes.

    venv/bin/python bench/host_overhead.py [--device cpu|cuda] [--calls N] [--rounds R] [--out X.json]

Cases: no mods, a causal block mask, ALiBi (captured slopes) with a causal
mask, a relative-bias table (captured [H, 2S-1]) and a document mask
(captured document ids). Per case, after warm-up (compilation, capture memo,
mask checks), the two sides are timed in alternating rounds of ``--calls``
calls in one process, so both see the same machine load; the medians of the
per-call times over all rounds are reported (and the best round's median,
less sensitive to load). Every timed call of ours must be a hit of its call
plan (execution/call_plans.py; asserted). Each call's time splits in three:
``call`` (flex_attention's Python down to the kernel object: key, guards,
output allocation, argument list), ``launcher`` (the kernel object's Python:
on the CPU the JIT runner's argument checks and packing, on CUDA
flexattn_runtime's prepared launch: alignment, stream, TMA descriptors, the
addresses written into its parameter block) and ``native`` (the CPU kernel's
run itself, or the cuLaunchKernel call through ctypes).
``host`` = call + launcher is the host overhead; on the CPU ``native`` is the
kernel's work, on CUDA the driver's enqueue (the kernel runs asynchronously),
so there ``total`` is what to set beside torch.compile's total:
``ours_total_over_torch_total`` per case (printed, and in the JSON's
top-level ``ours_total_over_torch_total``).
On CUDA no timed call is followed by a synchronisation
except at the end of a round (both sides alike): the times are what the
host spends enqueueing, and a hit that synchronised would show up in them.

Fails loudly: ``--device cuda`` without a usable GPU (torch sees none, it is
no flexattn_mlir target, libcuda does not load) exits before timing; a case
that raises, or whose result differs from torch's beyond a sanity bound, is
recorded in the JSON and makes the script exit with status 1 after writing
it. ``bench/gpu_hit_profile.py`` times the same GPU hit path on a machine
without a GPU (a stub driver).

Writes ``bench/results/<date>_<device>_host_overhead_<commit>.json`` (or
``--out``) with the date, machine, load average, commit and versions.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import flexattn_mlir as fm  # first: imports mlir before torch_mlir
import torch
from flexattn_mlir.execution import call_plans
from torch.nn.attention import flex_attention as tf

ROOT = Path(__file__).resolve().parent.parent


def alibi_slopes(h):
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / h) for i in range(h)])


def make_cases(device, h, s):
    """The five variants, each reading its tensors (ALiBi slopes, a
    relative-bias table, document ids) from a closure: captured operands."""
    slopes = alibi_slopes(h).to(device)
    table = torch.randn(h, 2 * s - 1, device=device)
    doc = torch.repeat_interleave(torch.arange(4, device=device), s // 4)
    doc = torch.cat([doc, doc.new_full((s - doc.numel(),), 3)]).to(torch.int32)

    def alibi(score, b, hh, q, kv):
        return score + slopes[hh] * (kv - q)

    def rel_bias(score, b, hh, q, kv):
        return score + table[hh, q - kv + s - 1]

    def causal(b, hh, q, kv):
        return q >= kv

    def document(b, hh, q, kv):
        return doc[q] == doc[kv]

    return {
        "dense": dict(score_mod=None, mask_mod=None),
        "causal_mask": dict(score_mod=None, mask_mod=causal),
        "alibi_causal": dict(score_mod=alibi, mask_mod=causal),
        "relative_bias": dict(score_mod=rel_bias, mask_mod=None),
        "document_mask": dict(score_mod=None, mask_mod=document),
    }


class KernelTimer:
    """Wraps what a call's plan launches (``plan.kernel``,
    execution/call_plans.py: the CPU kernel, or flexattn_runtime's prepared
    launch of a GPU kernel) so that each launch records how long it took, and
    the native call inside it (the CPU kernel's run, or the driver's
    cuLaunchKernel through flexattn_runtime's ``driver.KernelLaunch``), so
    that the launcher's own Python is ``kernel - native``."""

    def __init__(self, plan):
        self.plan = plan
        self.seconds, self.native = [], []
        self._real = plan.kernel
        if plan.launch.gpu:
            from flexattn_runtime import driver
            self._owner, self._name = driver.KernelLaunch, "__call__"
        else:
            self._owner, self._name = fm._native, "cpu_run"
        self._real_native = getattr(self._owner, self._name)

    def __enter__(self):
        def timed(args):
            t = time.perf_counter()
            self._real(args)
            self.seconds.append(time.perf_counter() - t)

        def timed_native(*args):
            t = time.perf_counter()
            self._real_native(*args)
            self.native.append(time.perf_counter() - t)

        self.plan.kernel = timed
        setattr(self._owner, self._name, timed_native)
        return self

    def __exit__(self, *exc):
        self.plan.kernel = self._real
        setattr(self._owner, self._name, self._real_native)


def time_calls(fn, calls, sync):
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    sync()
    return out


def run_case(name, mods, shape, dtype, device, calls, rounds, sync, peer=True):
    """Times one case's hits (and, with ``peer``, torch.compile'd
    flex_attention's calls in alternating rounds); returns its JSON record."""
    b, h, s, d = shape
    q, k, v = (torch.randn(b, h, s, d, dtype=dtype, device=device) for _ in range(3))
    ours_mask = torch_mask = None
    if mods["mask_mod"] is not None:
        ours_mask = fm.create_block_mask(mods["mask_mod"], None, None, s, s, device=device)
        if peer:
            torch_mask = tf.create_block_mask(mods["mask_mod"], None, None, s, s, device=device)
    compiled = torch.compile(tf.flex_attention, dynamic=False) if peer else None

    def ours():
        return fm.flex_attention(q, k, v, score_mod=mods["score_mod"], block_mask=ours_mask)

    def theirs():
        return compiled(q, k, v, score_mod=mods["score_mod"], block_mask=torch_mask)

    with torch.no_grad():
        err = (ours().float() - theirs().float()).abs().max().item() if peer else None
        for _ in range(20):  # warm-up: compiled, memoised, checked
            ours()
            if peer:
                theirs()
        sync()
        key = call_plans.call_key(q, k, v, mods["score_mod"], ours_mask, None, False, False,
                                  False, None, None)
        plan = call_plans.find(key, mods["score_mod"], ours_mask)
        assert plan is not None, f"{name}: no call plan after warm-up (every call is a miss)"
        hits = call_plans.hits
        totals, kernels, natives, torch_totals = [], [], [], []
        for _ in range(rounds):
            with KernelTimer(plan) as kt:
                totals += time_calls(ours, calls, sync)
            kernels += kt.seconds
            natives += kt.native
            if peer:
                torch_totals += time_calls(theirs, calls, sync)
        assert call_plans.hits - hits == rounds * calls, f"{name}: a timed call missed its plan"
    assert len(kernels) == len(natives) == len(totals), f"{name}: a launch was not timed"
    us = lambda xs: round(1e6 * statistics.median(xs), 2)  # noqa: E731
    best = lambda xs: round(1e6 * min(statistics.median(xs[i:i + calls])  # noqa: E731
                                      for i in range(0, len(xs), calls)), 2)
    python = [t - k for t, k in zip(totals, kernels)]
    launcher = [k - n for k, n in zip(kernels, natives)]
    host = [t - n for t, n in zip(totals, natives)]
    record = {
        "case": name, "shape": list(shape), "dtype": str(dtype).removeprefix("torch."),
        "calls": len(totals), "max_abs_diff_vs_torch": err,
        "ours_total_us": us(totals), "ours_kernel_us": us(kernels), "ours_python_us": us(python),
        "ours_launcher_python_us": us(launcher), "ours_native_call_us": us(natives),
        "ours_host_us": us(host),
        "ours_python_best_round_us": best(python), "ours_host_best_round_us": best(host),
        "ours_total_best_round_us": best(totals),
        "ours_python_p90_us": round(1e6 * sorted(python)[math.ceil(0.9 * len(python)) - 1], 2),
    }
    if peer:
        ratio = lambda xs: round(statistics.median(xs) / statistics.median(torch_totals), 3)  # noqa: E731
        record.update({
            "torch_compiled_total_us": us(torch_totals),
            "torch_compiled_total_best_round_us": best(torch_totals),
            "ours_python_over_torch_total": ratio(python),
            "ours_host_over_torch_total": ratio(host),
            "ours_total_over_torch_total": ratio(totals),
            "ours_total_over_torch_total_best_round": round(
                best(totals) / best(torch_totals), 3),
        })
    return record


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                       text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


#: max |ours - torch| beyond which a case is reported as wrong (the bench's
#: sanity check, not the tests' tolerance).
SANITY_ATOL = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 5e-2}


def write_json(doc: dict, out, what: str) -> None:
    """Writes ``doc`` to ``out``, default
    ``bench/results/<date>_<what>_<commit>.json``."""
    day = datetime.date.today().isoformat()
    path = Path(out) if out else (
        ROOT / "bench" / "results" / f"{day}_{what}_{doc['commit']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")


def check_device(device) -> None:
    """Raises SystemExit, saying what is missing, unless ``device`` can run
    the bench: for CUDA, a GPU torch sees, of a flexattn_mlir GPU target, and
    the CUDA driver flexattn_runtime launches through."""
    if device.type == "cpu":
        return
    if device.type != "cuda" or not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: torch sees no CUDA device "
                         f"(torch {torch.__version__}, torch.version.cuda "
                         f"{torch.version.cuda}); run on a GPU machine or with --device cpu")
    from flexattn_mlir.compiler import targets
    from flexattn_runtime import driver

    try:
        targets.for_device(device)
    except ValueError as err:
        raise SystemExit(f"--device {device}: {err}") from None
    if not driver.available():
        raise SystemExit(f"--device {device}: flexattn_runtime cannot load the CUDA driver "
                         "(libcuda.so.1)")


def summary_line(r) -> str:
    line = (f"{r['case']:14s} ours {r['ours_total_us']:8.1f} us (host {r['ours_host_us']:6.1f}: "
            f"call {r['ours_python_us']:5.1f} + launcher {r['ours_launcher_python_us']:5.1f}; "
            f"native {r['ours_native_call_us']:7.1f})")
    if "torch_compiled_total_us" in r:
        line += (f"   torch.compile {r['torch_compiled_total_us']:8.1f} us   ours/torch "
                 f"{r['ours_total_over_torch_total']:.2f}   max|diff| "
                 f"{r['max_abs_diff_vs_torch']:.1e}")
    return line


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--shape", type=int, nargs=4, default=None, metavar=("B", "H", "S", "D"),
                    help="default: 1 2 64 16 on the CPU, 1 2 128 64 on CUDA (a head dim "
                         "every GPU target takes)")
    ap.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--out", default=None, help="JSON path (default: bench/results/...)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: tiny shapes gain nothing from "
                         "more, and on a loaded machine thread barriers add noise to both sides)")
    ap.add_argument("--note", default="", help="recorded in the JSON (e.g. the machine's load)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    check_device(device)
    dtype = getattr(torch, args.dtype) if args.dtype else (
        torch.float32 if device.type == "cpu" else torch.bfloat16)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    shape = tuple(args.shape or ((1, 2, 64, 16) if device.type == "cpu" else (1, 2, 128, 64)))
    results = []
    for name, mods in make_cases(device, shape[1], shape[2]).items():
        try:
            results.append(run_case(name, mods, shape, dtype, device, args.calls, args.rounds,
                                    sync))
        except Exception as err:  # one case failing (e.g. refused on this GPU) keeps the rest
            results.append({"case": name, "error": f"{type(err).__name__}: {err}"})
    failed = [r for r in results if "error" in r]
    for r in results:
        if "error" not in r and r["max_abs_diff_vs_torch"] > SANITY_ATOL[dtype]:
            r["error"] = (f"max |ours - torch| = {r['max_abs_diff_vs_torch']:.3g} exceeds "
                          f"{SANITY_ATOL[dtype]}")
            failed.append(r)
    ratios = {r["case"]: r["ours_total_over_torch_total"] for r in results if "error" not in r}
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    doc = {
        "what": "flex_attention per call at a cache hit vs torch.compile(flex_attention); medians",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs",
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "commit": commit(), "device": label or device.type, "torch": torch.__version__,
        "python": platform.python_version(), "threads": args.threads,
        "calls_per_round": args.calls,
        "rounds": args.rounds, "note": args.note,
        "ours_total_over_torch_total": ratios,
        "worst_ours_total_over_torch_total": max(ratios.values(), default=None),
        "failed_cases": [r["case"] for r in failed], "results": results,
    }
    for r in results:
        print(f"{r['case']:14s} FAILED: {r['error']}" if "error" in r else summary_line(r))
    if ratios:
        print(f"worst ours/torch.compile: {doc['worst_ours_total_over_torch_total']:.2f} "
              f"(per case: {ratios})")
    write_json(doc, args.out, f"{device.type}_host_overhead")
    if failed:
        raise SystemExit(f"{len(failed)} case(s) failed: {[r['case'] for r in failed]}")


if __name__ == "__main__":
    main()
