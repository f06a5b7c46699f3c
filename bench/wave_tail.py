"""Does the last wave cost full D = 128 its time? A probe of the wave
quantization docs/gpu-pipeline.md §3 names ("What was tried after the
table"): B = 4, H = 16, S = 8192 has 4096 Q tiles on 132 SMs (31.03 waves).

  compile (here, no GPU):  python bench/wave_tail.py compile --out art/tail
  run (on the H200):       python bench/wave_tail.py run --artifacts art/tail
                               --json $OUT/wave_tail.json

It launches the kernel flex_attention picks for full D = 128 (one CTA per
tile, tiles of a head adjacent, a head's last tile first: the grid's last
r CTAs are the first r tiles of the last head) on a smaller grid, and runs
the tiles it leaves out through the GPU decode kernel (split-KV, mma.sync,
f32 partial rows; flexattn_runtime.splitkv's scratch) on views of the last
heads, merging the ranges by their lse:

  full            the whole grid (4096 CTAs)
  main4092        4092 CTAs alone (the last 4 tiles not computed: the bound
                  of any split of the last wave)
  main3960        3960 CTAs alone (30 waves)
  seq16           4092 CTAs, then the 4 tiles in 16 KV ranges + merge, one stream
  after16/first16 the same with the 4 tiles on a second stream, launched after /
                  before the main grid (the hardware fills the main grid's idle
                  SMs with them); *_hi: that stream at high priority
  after136_*/first136_*: 3960 CTAs + the last 136 tiles (one wave + 4) in 2
                  or 4 KV ranges on the second stream

Each split variant's output is checked before timing: the rows of the main
grid bitwise equal to the whole grid's, the tail rows against a float64
reference. Timing: bench/gpu_suite.py's queued device time, rounds of every
variant in turn.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gpu_suite  # noqa: E402

B, H, S, D = 4, 16, 8192, 128
MAIN = "bench_full_d128"
#: name -> (query heads taken from the last batch (a slice of the last ones),
#: query rows from row 0, KV ranges)
TAILS = {"tail_h1_r512_s16": (1, 512, 16), "tail_h1_r512_s32": (1, 512, 32),
         "tail_h2_r8192_s2": (2, 8192, 2), "tail_h2_r8192_s4": (2, 8192, 4),
         "tail_h1_r1024_s8": (1, 1024, 8), "tail_h1_r1024_s16": (1, 1024, 16)}


def compile_all(out: str) -> None:
    import torch

    import flexattn_mlir as fm
    from flexattn_mlir.execution import decode
    from flexattn_mlir.execution.attention import build_spec

    case = next(c for c in gpu_suite.BENCH if c[0] == MAIN)
    spec, _ = gpu_suite.case_spec(case, return_lse=False, check_indices=False)
    items = [(MAIN, spec, fm.CompileOptions(target="sm_90a"))]
    for name, (heads, rows, splits) in TAILS.items():
        q = torch.empty(1, heads, rows, D, dtype=torch.bfloat16, device="meta")
        kv = torch.empty(1, heads, S, D, dtype=torch.bfloat16, device="meta")
        tspec = build_spec(q, kv, kv, score_mod=None, mask_mod=None, block_mask=None,
                           captures=[], scale=1 / math.sqrt(D), return_lse=False, name=name)
        opts = decode.resolve(fm.CompileOptions(target="sm_90a", decode=True, pack_heads=False,
                                                splits=splits), q, kv, kv, None)
        items.append((name, tspec, opts))
    gpu_suite.write_artifacts(items, {n: list(TAILS.get(n, ())) for n, _, _ in items}, out)


def run_all(artifacts: str, out_json: str, rounds: int, reps: int) -> None:
    import torch

    from flexattn_runtime import ArtifactStore
    from flexattn_runtime import driver as _d
    from flexattn_runtime.kernel import PreparedLaunch

    gpu_suite.TIMING = "queued"
    store = ArtifactStore(artifacts)
    kernels = {store.metadata(k)["spec"]["name"]: store.get(k) for k in store.keys()}
    dev = torch.cuda.current_device()
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out = torch.empty_like(q)
    main = kernels[MAIN]
    m, lf = main.metadata, main.load(dev)
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    if m.grid[0] % sms != 4:
        raise SystemExit(f"wave_tail: the tails are cut for 132 SMs (4096 tiles = 31 waves + 4); "
                         f"this device has {sms}")

    def grid(n):  # the main kernel on its first n CTAs
        p = PreparedLaunch(main, dev)
        p.launcher = _d.KernelLaunch(lf.function, (n, 1, 1), m.block, m.shared_mem_bytes,
                                     m.cluster, _d.ensure_context(dev))
        return lambda: p([q, k, v, out])

    class Tail:
        """A decode kernel on the first `rows` rows of the last `heads` heads."""

        def __init__(self, name, heads, first_head=None):
            _, rows, _ = TAILS[name]
            hs = slice(H - heads if first_head is None else first_head,
                       H if first_head is None else first_head + heads)
            kern = kernels[name]
            self.launch = kern.prepare(dev)
            shapes = {a.name: a.shape for a in kern.metadata.arguments}
            self.so = torch.empty(shapes["split_out"], device="cuda")
            self.sl = torch.empty(shapes["split_lse"], device="cuda")
            self.rows = (B - 1, hs, slice(0, rows))
            self.args = [q[B - 1:, hs, :rows], k[B - 1:, hs], v[B - 1:, hs],
                         out[B - 1:, hs, :rows], self.so, self.sl]

        def __call__(self):
            self.launch(self.args)
            s, r = self.sl.shape  # the merge as one batched product
            w = torch.softmax(self.sl, dim=0)
            merged = torch.bmm(w.t().unsqueeze(1), self.so.view(s, r, -1).transpose(0, 1))
            self.args[3].copy_(merged.view(self.args[3].shape))

    tails = {"16": [Tail("tail_h1_r512_s16", 1)], "32": [Tail("tail_h1_r512_s32", 1)],
             "136_2": [Tail("tail_h2_r8192_s2", 2), Tail("tail_h1_r1024_s8", 1, H - 3)],
             "136_4": [Tail("tail_h2_r8192_s4", 2), Tail("tail_h1_r1024_s16", 1, H - 3)]}
    side, side_hi = torch.cuda.Stream(), torch.cuda.Stream(priority=-1)

    def split(main_fn, parts, order, stream=side):
        def fn():
            cur = torch.cuda.current_stream()
            if order == "seq":
                main_fn()
                for t in parts:
                    t()
                return
            ready = torch.cuda.Event()
            ready.record(cur)
            if order == "after":
                main_fn()
            stream.wait_event(ready)
            with torch.cuda.stream(stream):
                for t in parts:
                    t()
            if order == "first":
                main_fn()
            cur.wait_stream(stream)
        return fn

    T = m.grid[0]
    g4092, g3960 = grid(T - T % sms), grid(T - T % sms - sms)
    variants = {"full": grid(T), "main4092": g4092, "main3960": g3960,
                "seq16": split(g4092, tails["16"], "seq"),
                "after16": split(g4092, tails["16"], "after"),
                "first16": split(g4092, tails["16"], "first"),
                "after32": split(g4092, tails["32"], "after"),
                "after16_hi": split(g4092, tails["16"], "after", side_hi),
                "first16_hi": split(g4092, tails["16"], "first", side_hi),
                "after136_2": split(g3960, tails["136_2"], "after"),
                "first136_2": split(g3960, tails["136_2"], "first"),
                "after136_4": split(g3960, tails["136_4"], "after")}
    res = {"device": torch.cuda.get_device_name(), "sms": sms, "tiles": T,
           "timing": "queued", "checks": {}, "ms": {}}
    variants["full"]()
    torch.cuda.synchronize()
    ref = out.clone()
    for name, fn in variants.items():
        if name.startswith(("full", "main")):
            continue
        out.fill_(float("nan"))
        fn()
        torch.cuda.synchronize()
        parts = tails[name.split("after")[-1].split("first")[-1].split("seq")[-1]
                      .removesuffix("_hi")]
        err = 0.0
        for t in parts:
            b, hs, rows = t.rows
            for h in range(hs.start, hs.stop):
                qq, kk, vv = (x[b, h].double() for x in (q, k, v))
                p = torch.softmax(qq[rows] @ kk.t() / math.sqrt(D), -1)
                err = max(err, float((out[b, h, rows].double() - p @ vv).abs().max()))
        main_rows = torch.ones(B, H, S, dtype=torch.bool, device="cuda")
        for t in parts:
            main_rows[t.rows] = False
        res["checks"][name] = {
            "main_rows_bitwise_equal": bool(torch.equal(out[main_rows], ref[main_rows])),
            "tail_max_abs_err_vs_float64": err, "nan": bool(torch.isnan(out).any())}
        print(name, res["checks"][name], flush=True)
    times = {n: [] for n in variants}
    for _ in range(rounds):
        for n, fn in variants.items():
            times[n].append(gpu_suite.median_ms(fn, reps))
    base = statistics.median(times["full"])
    for n, t in times.items():
        res["ms"][n] = {"median": statistics.median(t), "rounds": t,
                        "speedup_vs_full": base / statistics.median(t)}
        print(f"{n:12s} {statistics.median(t):.4f} ms  x{base / statistics.median(t):.4f}",
              flush=True)
    with open(out_json, "w") as f:
        json.dump(res, f, indent=1)


def main() -> None:
    gpu_suite.halves_cli(compile_all, run_all, (("--rounds", 6), ("--reps", 15)))


if __name__ == "__main__":
    main()
