"""CPU decode benchmark: the decode path beside the prefill kernel and torch's
SDPA, in one process, interleaved (one call of each per round, best of the
rounds).

    python bench/cpu_decode_bench.py                 # writes bench/results/<date>_cpu_decode_<cpu>-<n>cpu_<commit>.json
    python bench/cpu_decode_bench.py --rounds 3 --lengths 4096

Cases: B=4, Hq=32, Hkv=8 (GQA 4:1), D=128, one query row (M=1) and M=4,
causal from the offset N - M (the queries are the last M positions of a KV
cache of N keys), fp32 and bf16. Timed: ``flex_attention`` with the decode
path (the default for M <= 64), the same call through the prefill kernel
(``kernel_options={"decode": False}``), and
``scaled_dot_product_attention(enable_gqa=True)`` (M = 1: no mask, every key
is visible; M > 1: the same causal mask as a boolean attn_mask); each
checked against SDPA. "paged": the decode path over the same K/V in a
``flexattn_mlir.PagedAttention`` cache of 128-token pages handed out to the
sequences in turn (the mask mapped by ``convert_logical_block_mask``).
GB/s counts the K and V bytes read once. Ratios are theirs / ours (> 1:
ours is faster); ``paged_vs_contiguous`` is decode's time over paged's, in
wall time and in the process's CPU time (all threads; steadier when other
jobs share the machine).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import time

import flexattn_mlir as fm  # first: before anything imports torch_mlir

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gpu_decode import paged_cache  # noqa: E402  (bench/, beside this script)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, HQ, HKV, D = 4, 32, 8, 128
PAGE = 128


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def run_case(n: int, m: int, dtype: str, rounds: int) -> dict:
    dt = getattr(torch, dtype)
    q = torch.randn(B, HQ, m, D, dtype=dt)
    k, v = (torch.randn(B, HKV, n, D, dtype=dt) for _ in range(2))
    offset = n - m

    def causal(b, h, q_idx, kv_idx):
        return q_idx + offset >= kv_idx

    mask = fm.create_block_mask(causal, 1, None, m, n)
    # The same K/V in a paged cache (one page per sequence in turn).
    cache = paged_cache(B, n, PAGE, "cpu")
    kc, vc = (torch.zeros(1, HKV, cache.n_pages * PAGE, D, dtype=dt) for _ in range(2))
    cache.assign(torch.arange(B), torch.arange(n).expand(B, n), k, v, kc, vc)
    paged_mask = cache.convert_logical_block_mask(fm.create_block_mask(causal, B, None, m, n))
    attn_mask = None
    if m > 1:
        attn_mask = torch.arange(m)[:, None] + offset >= torch.arange(n)[None, :]
    calls = {
        "decode": lambda: fm.flex_attention(q, k, v, block_mask=mask, enable_gqa=True),
        "prefill": lambda: fm.flex_attention(q, k, v, block_mask=mask, enable_gqa=True,
                                             kernel_options={"decode": False}),
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                       enable_gqa=True),
        "paged": lambda: fm.flex_attention(q, kc, vc, block_mask=paged_mask, enable_gqa=True),
    }
    ref = calls["sdpa"]().float()
    errors = {name: (fn().float() - ref).abs().max().item() for name, fn in calls.items()}
    best = {name: float("inf") for name in calls}
    cpu = dict(best)  # process CPU time (all threads): steadier on a loaded machine
    for _ in range(rounds):
        for name, fn in calls.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    kv_bytes = 2 * B * HKV * n * D * q.element_size()
    return {"N": n, "M": m, "dtype": dtype, "seconds": best, "cpu_seconds": cpu,
            "max_abs_err_vs_sdpa": errors,
            "gbps": {name: kv_bytes / s / 1e9 for name, s in best.items()},
            "prefill_over_decode": best["prefill"] / best["decode"],
            "paged_vs_contiguous": best["decode"] / best["paged"],
            "paged_vs_contiguous_cpu_time": cpu["decode"] / cpu["paged"],
            "sdpa_over_decode": best["sdpa"] / best["decode"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="output path")
    p.add_argument("--lengths", default="4096,32768")
    p.add_argument("--rows", default="1,4")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    load_before = os.getloadavg()
    rows = []
    for dtype in args.dtypes.split(","):
        for n in map(int, args.lengths.split(",")):
            for m in map(int, args.rows.split(",")):
                row = run_case(n, m, dtype, args.rounds)
                rows.append(row)
                print(f"{dtype:8s} N={n:6d} M={m:2d}  decode {row['seconds']['decode'] * 1e3:8.2f} ms "
                      f"({row['gbps']['decode']:6.1f} GB/s)  prefill/decode "
                      f"{row['prefill_over_decode']:5.2f}x  sdpa/decode {row['sdpa_over_decode']:5.2f}x  "
                      f"paged {row['paged_vs_contiguous']:5.2f}x of contiguous "
                      f"({row['paged_vs_contiguous_cpu_time']:4.2f}x in CPU time)",
                      flush=True)
    commit = _git("rev-parse", "--short", "HEAD")
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "commit": commit,
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "threads": torch.get_num_threads(), "load_before": load_before,
              "load_after": os.getloadavg(), "shape": {"B": B, "Hq": HQ, "Hkv": HKV, "D": D},
              "rows": rows}
    path = args.json or os.path.join(
        ROOT, "bench", "results",
        f"{datetime.date.today().isoformat()}_cpu_decode_{os.cpu_count()}cpu_{commit}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
