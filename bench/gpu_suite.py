"""GPU correctness + benchmark suite, in two halves.

  compile (here, no GPU; needs flexattn_mlir):
      python bench/gpu_suite.py compile --out artifacts/gpu
  run (on the H100; needs only torch + flexattn_runtime):
      python bench/gpu_suite.py run --artifacts artifacts/gpu --json $OUT/gpu.json

The variants are flexattn_mlir.zoo's Python mods, captured by the real
frontend at compile time; the tensors they capture are saved beside the
artifacts in the kernel's operand order. `run` checks every correctness case
against torch's flex_attention on the same GPU (float32 math on the same
bf16/fp16 inputs, rel. error < 2e-2, lse within 5e-2, -inf rows matching),
then times the benchmark cases (B=4, H=16, S=8192) beside torch
flex_attention (torch.compile'd, Triton) and SDPA (flash, cuDNN), counting
4*B*H*M*N*D*density FLOPs with density = visited blocks / all blocks.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "runtime"))

ZOO = ["full", "causal", "sliding_window", "prefix_lm", "document", "alibi_causal",
       "softcap_causal", "relative_bias", "t5_bias", "natten_2d", "causal_and_document",
       "prefix_or_sliding"]
DEFAULT = {}  # CompileOptions overrides
SERIAL = {"pipeline": False, "pingpong": False}
NO_PINGPONG = {"pingpong": False}
PERSISTENT = {"persistent": 132}

# (name, variant, B, Hq, Hkv, M, N, D, dtype, options)
CORRECTNESS = (
    # The whole zoo, bf16 and fp16, D = 64 and 128, at a length that is not a
    # multiple of the 128-token blocks.
    [(f"check_{v}_d{d}" + ("" if dt == "bfloat16" else "_f16"), v, 1, 4, 4, 2100, 2100, d, dt,
      DEFAULT)
     for v in ZOO for d in (128, 64) for dt in ("bfloat16", "float16")]
    + [("check_gqa_causal_d128", "causal", 2, 8, 2, 640, 640, 128, "bfloat16", DEFAULT),
       ("check_full_m300_n1000", "full", 1, 4, 4, 300, 1000, 128, "bfloat16", DEFAULT),
       ("check_causal_m1000_n300", "causal", 1, 4, 4, 1000, 300, 128, "bfloat16", DEFAULT),
       ("check_causal_serial", "causal", 1, 4, 4, 2100, 2100, 128, "bfloat16", SERIAL),
       ("check_alibi_serial", "alibi_causal", 1, 4, 4, 2100, 2100, 128, "bfloat16", SERIAL),
       ("check_causal_nopingpong", "causal", 1, 4, 4, 2100, 2100, 128, "bfloat16", NO_PINGPONG),
       ("check_causal_3stages", "causal", 1, 4, 4, 2100, 2100, 128, "bfloat16", {"stages": 3}),
       # persistent CTAs looping over more tiles than CTAs (17 x 4 x 2 tiles)
       ("check_causal_persistent", "causal", 2, 4, 4, 2100, 2100, 128, "bfloat16", {"persistent": 20}),
       ("check_document_persistent", "document", 2, 4, 4, 2100, 2100, 128, "bfloat16",
        {"persistent": 20}),
       ("check_alibi_persistent_serial", "alibi_causal", 2, 4, 4, 2100, 2100, 128, "bfloat16",
        {"persistent": 20, "pipeline": False, "pingpong": False}),
       ("check_full_d64_persistent", "full", 2, 4, 4, 2100, 2100, 64, "bfloat16", {"persistent": 20})]
)
BENCH_VARIANTS = ["full", "causal", "sliding_window", "prefix_lm", "document", "alibi_causal",
                  "softcap_causal", "relative_bias", "t5_bias", "natten_2d"]
BENCH = (
    [(f"bench_{v}_d128", v, 4, 16, 16, 8192, 8192, 128, "bfloat16", DEFAULT) for v in BENCH_VARIANTS]
    + [(f"bench_{v}_d64", v, 4, 16, 16, 8192, 8192, 64, "bfloat16", DEFAULT) for v in ("full", "causal")]
    + [(f"bench_{v}_d128_persistent", v, 4, 16, 16, 8192, 8192, 128, "bfloat16", PERSISTENT)
       for v in ("full", "causal", "sliding_window", "document", "alibi_causal")]
    + [(f"bench_{v}_d64_persistent", v, 4, 16, 16, 8192, 8192, 64, "bfloat16", PERSISTENT)
       for v in ("full", "causal")]
    + [(f"bench_{v}_d64_stages{n}", v, 4, 16, 16, 8192, 8192, 64, "bfloat16", {"stages": n})
       for v in ("full", "causal") for n in (3, 4)]
)


def load_zoo():
    """flexattn_mlir/zoo.py without the compiler: its `.masks` import is
    served by torch's and_masks/or_masks (same semantics)."""
    import torch.nn.attention.flex_attention as tfa

    pkg = types.ModuleType("_zoo_pkg")
    pkg.__path__ = []
    sys.modules.setdefault("_zoo_pkg", pkg)
    sys.modules.setdefault("_zoo_pkg.masks", tfa)
    spec = importlib.util.spec_from_file_location(
        "_zoo_pkg.zoo", os.path.join(ROOT, "flexattn_mlir", "zoo.py"))
    zoo = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = zoo  # dataclasses look their module up
    spec.loader.exec_module(zoo)
    return zoo


# -- compile (here) -----------------------------------------------------------

def compile_all(out: str, only: str | None) -> None:
    import torch

    import flexattn_mlir as fm
    from flexattn_mlir import aot, frontend, zoo
    from flexattn_mlir.attention import build_spec
    from flexattn_mlir.block_mask import BlockMask

    items, manifest = [], {}
    for case in CORRECTNESS + BENCH:
        name, variant, B, Hq, Hkv, M, N, D, dt, over = case
        if only and only not in name:
            continue
        score_mod, mask_mod = zoo.make(variant, Hq, N, "cpu")
        score = frontend.capture_score_mod(score_mod) if score_mod else None
        mask = frontend.capture_mask_mod(mask_mod) if mask_mod else None
        score, mask, captures = frontend.combine(score, mask)
        dtype = getattr(torch, dt)
        q = torch.empty(B, Hq, M, D, dtype=dtype, device="meta")
        kv = torch.empty(B, Hkv, N, D, dtype=dtype, device="meta")
        block_mask = None
        if mask is not None:
            qb, kb = -(-M // 128), -(-N // 128)
            num = torch.empty(1, 1, qb, dtype=torch.int32, device="meta")
            idx = torch.empty(1, 1, qb, kb, dtype=torch.int32, device="meta")
            block_mask = BlockMask.from_kv_blocks(num, idx, num, idx, BLOCK_SIZE=128,
                                                  seq_lengths=(M, N), compute_q_blocks=False)
        spec = build_spec(q, kv, kv, score_mod=score and score.ir, mask_mod=mask and mask.ir,
                          block_mask=block_mask, captures=captures, scale=1.0 / math.sqrt(D),
                          return_lse=name.startswith("check"), name=name)
        items.append((name, spec, fm.CompileOptions(target="sm_90a", **over)))
        torch.save([c.contiguous() for c in captures], os.path.join(out, f"{name}.captures.pt"))
        manifest[name] = case
    t0 = time.perf_counter()
    done = aot.write_artifacts(items, out)
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"cases": manifest, "compile_seconds": {n: d["seconds"] for n, d in done.items()}},
                  f, indent=1)
    print(f"compiled {len(done)} kernels in {time.perf_counter() - t0:.1f} s")


# -- run (on the GPU) ---------------------------------------------------------

def run_all(artifacts: str, out_json: str, only: str | None, reps: int) -> None:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from flexattn_runtime import ArtifactStore

    torch.backends.cuda.matmul.allow_tf32 = False
    # One compiled flex_attention serves every case: lift dynamo's limit on
    # recompilations (one per variant and shape).
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 4096
    dev = "cuda"
    zoo = load_zoo()
    store = ArtifactStore(artifacts)
    with open(os.path.join(artifacts, "cases.json")) as f:
        cases = json.load(f)["cases"]
    by_name = {store.metadata(key)["spec"]["name"]: key for key in store.keys()}
    flex_compiled = torch.compile(flex_attention, dynamic=False)
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "checks": [], "bench": []}

    def save():
        # After every case: a hung kernel (killed by a timeout) keeps the rest.
        with open(out_json, "w") as f:
            json.dump(results, f, indent=1)

    def timeit(fn, n=reps):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(n):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
        times.sort()
        return times[len(times) // 2]

    for name, case in cases.items():
        if only and only not in name:
            continue
        _, variant, B, Hq, Hkv, M, N, D, dt, over = case
        score_mod, mask_mod = zoo.make(variant, Hq, N, dev)
        dtype = getattr(torch, dt)
        gen = torch.Generator(device=dev).manual_seed(0)
        q = torch.randn(B, Hq, M, D, device=dev, dtype=dtype, generator=gen)
        k = torch.randn(B, Hkv, N, D, device=dev, dtype=dtype, generator=gen)
        v = torch.randn(B, Hkv, N, D, device=dev, dtype=dtype, generator=gen)
        bm = None
        args = {"q": q, "k": k, "v": v}
        density = 1.0
        if mask_mod is not None:
            bm = create_block_mask(mask_mod, None, None, M, N, device=dev, BLOCK_SIZE=128)
            args.update(kv_num_blocks=bm.kv_num_blocks, kv_indices=bm.kv_indices,
                        full_kv_num_blocks=bm.full_kv_num_blocks,
                        full_kv_indices=bm.full_kv_indices)
            visited = int(bm.kv_num_blocks.sum() + bm.full_kv_num_blocks.sum())
            density = visited / (bm.kv_indices.shape[2] * bm.kv_indices.shape[3])
        caps = torch.load(os.path.join(artifacts, f"{name}.captures.pt"))
        for i, c in enumerate(caps):
            args[f"capture{i}"] = c.to(dev)
        kernel = store.get(by_name[name])
        # Poisoned outputs: every element must be written.
        args["out"] = torch.full((B, Hq, M, D), float("nan"), device=dev, dtype=dtype)
        if name.startswith("check"):
            args["lse"] = torch.full((B, Hq, M), float("nan"), device=dev)
        row = {"case": name, "variant": variant, "B": B, "Hq": Hq, "Hkv": Hkv, "M": M,
               "N": N, "D": D, "dtype": dt, "options": over, "density": density}
        try:
            t0 = time.perf_counter()
            kernel(**args)
            torch.cuda.synchronize()
            row["first_call_s"] = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - report and go on
            row["error"] = f"{type(e).__name__}: {e}"
            (results["checks"] if name.startswith("check") else results["bench"]).append(row)
            print(name, "ERROR", row["error"], flush=True)
            save()
            continue
        out = args["out"]
        if name.startswith("check"):
            ref, ref_lse = flex_attention(q.float(), k.float(), v.float(), score_mod=score_mod,
                                          block_mask=bm, enable_gqa=Hq != Hkv, return_lse=True)
            err = (out.float() - ref).norm() / ref.norm()
            row["rel_err"] = float(err)
            row["max_abs_err"] = float((out.float() - ref).abs().max())
            row["nan"] = bool(torch.isnan(out).any())
            lse = args["lse"]
            fin = torch.isfinite(ref_lse)
            row["lse_max_abs_err"] = float((lse[fin] - ref_lse[fin]).abs().max()) if fin.any() else 0.0
            row["lse_inf_match"] = bool(torch.equal(torch.isfinite(lse), fin))
            row["ok"] = (row["rel_err"] < 2e-2 and not row["nan"] and row["lse_inf_match"]
                         and row["lse_max_abs_err"] < 5e-2)
            results["checks"].append(row)
            save()
            print(f"{name:34s} rel_err={row['rel_err']:.2e} max_abs={row['max_abs_err']:.2e} "
                  f"lse_err={row['lse_max_abs_err']:.2e} ok={row['ok']}", flush=True)
        else:
            flops = 4 * B * Hq * M * N * D * density
            ms = timeit(lambda: kernel(**args))
            row.update(ms=ms, tflops=flops / ms / 1e9)
            if over == DEFAULT:
                try:
                    tms = timeit(lambda: flex_compiled(q, k, v, score_mod=score_mod, block_mask=bm))
                    row.update(triton_ms=tms, triton_tflops=flops / tms / 1e9,
                               ratio_vs_triton=tms / ms)
                    ref = flex_compiled(q, k, v, score_mod=score_mod, block_mask=bm)
                    row["max_abs_diff_vs_triton"] = float((out.float() - ref.float()).abs().max())
                except Exception as e:  # noqa: BLE001
                    row["triton_error"] = f"{type(e).__name__}: {e}"[:300]
                if variant in ("full", "causal"):
                    for backend, label in ((SDPBackend.FLASH_ATTENTION, "sdpa_flash"),
                                           (SDPBackend.CUDNN_ATTENTION, "sdpa_cudnn")):
                        try:
                            with sdpa_kernel(backend):
                                f = lambda: torch.nn.functional.scaled_dot_product_attention(  # noqa: E731
                                    q, k, v, is_causal=variant == "causal")
                                sms = timeit(f)
                            row[f"{label}_ms"] = sms
                            row[f"{label}_tflops"] = flops / sms / 1e9
                        except Exception as e:  # noqa: BLE001
                            row[f"{label}_error"] = f"{type(e).__name__}: {e}"[:200]
            results["bench"].append(row)
            save()
            print(f"{name:30s} ours {row['tflops']:6.1f} TF/s ({ms:.3f} ms)  "
                  f"triton {row.get('triton_tflops', float('nan')):6.1f}  "
                  f"ratio {row.get('ratio_vs_triton', float('nan')):.2f}  "
                  f"flash {row.get('sdpa_flash_tflops', float('nan')):6.1f} "
                  f"cudnn {row.get('sdpa_cudnn_tflops', float('nan')):6.1f}", flush=True)
    save()


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compile")
    c.add_argument("--out", required=True)
    c.add_argument("--only")
    r = sub.add_parser("run")
    r.add_argument("--artifacts", required=True)
    r.add_argument("--json", required=True)
    r.add_argument("--only")
    r.add_argument("--reps", type=int, default=30)
    a = ap.parse_args()
    if a.cmd == "compile":
        os.makedirs(a.out, exist_ok=True)
        compile_all(a.out, a.only)
    else:
        run_all(a.artifacts, a.json, a.only, a.reps)


if __name__ == "__main__":
    main()
