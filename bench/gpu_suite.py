"""GPU correctness + benchmark suite, in two halves.

  compile (here, no GPU; needs flexattn_mlir):
      python bench/gpu_suite.py compile --out artifacts/gpu
  run (on the H100; needs only torch + flexattn_runtime):
      python bench/gpu_suite.py run --artifacts artifacts/gpu --json $OUT/gpu.json

`run` checks every correctness case against torch's flex_attention on the
same GPU (float32 math on the same bf16/fp16 inputs), then times the
benchmark cases (B=4, H=16, S=8192) beside torch flex_attention
(torch.compile'd, Triton) and SDPA (flash, cuDNN), counting
4*B*H*M*N*D*density FLOPs with density = visited blocks / all blocks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "runtime"))

# -- the variants: torch functions (reference, block masks) and their IR ------

WINDOW, PREFIX, SOFTCAP, DOCS = 1024, 2048, 30.0, 12


def mask_ir(body: str, caps: list[str]) -> str:
    extra = "".join(f", %cap{i}: {t}" for i, t in enumerate(caps))
    return f"^bb0(%b: i32, %h: i32, %q: i32, %kv: i32{extra}):\n{body}"


def score_ir(body: str, caps: list[str]) -> str:
    extra = "".join(f", %cap{i}: {t}" for i, t in enumerate(caps))
    return f"^bb0(%s: f32, %b: i32, %h: i32, %q: i32, %kv: i32{extra}):\n{body}"


CAUSAL_BODY = "  %k = arith.cmpi sge, %q, %kv : i32\n  flexattn.yield %k : i1"


def variant_ir(name: str, S: int, H: int):
    """(score_mod text | None, mask_mod text | None, capture types)."""
    if name == "full":
        return None, None, []
    if name == "causal":
        return None, mask_ir(CAUSAL_BODY, []), []
    if name == "sliding":
        body = (f"  %c = arith.cmpi sge, %q, %kv : i32\n  %d = arith.subi %q, %kv : i32\n"
                f"  %w = arith.constant {WINDOW} : i32\n  %n = arith.cmpi sle, %d, %w : i32\n"
                f"  %k = arith.andi %c, %n : i1\n  flexattn.yield %k : i1")
        return None, mask_ir(body, []), []
    if name == "prefix":
        body = (f"  %c = arith.cmpi sge, %q, %kv : i32\n  %p = arith.constant {PREFIX} : i32\n"
                f"  %n = arith.cmpi slt, %kv, %p : i32\n  %k = arith.ori %c, %n : i1\n"
                f"  flexattn.yield %k : i1")
        return None, mask_ir(body, []), []
    if name == "document":
        t = f"memref<{S}xi32>"
        body = (f"  %qi = arith.index_cast %q : i32 to index\n  %ki = arith.index_cast %kv : i32 to index\n"
                f"  %dq = memref.load %cap0[%qi] : {t}\n  %dk = memref.load %cap0[%ki] : {t}\n"
                f"  %s = arith.cmpi eq, %dq, %dk : i32\n  %c = arith.cmpi sge, %q, %kv : i32\n"
                f"  %k = arith.andi %s, %c : i1\n  flexattn.yield %k : i1")
        return None, mask_ir(body, [t]), [t]
    if name == "alibi":
        t = f"memref<{H}xf32>"
        body = (f"  %hi = arith.index_cast %h : i32 to index\n  %sl = memref.load %cap0[%hi] : {t}\n"
                f"  %d = arith.subi %kv, %q : i32\n  %df = arith.sitofp %d : i32 to f32\n"
                f"  %bias = arith.mulf %sl, %df : f32\n  %r = arith.addf %s, %bias : f32\n"
                f"  flexattn.yield %r : f32")
        return score_ir(body, [t]), mask_ir(CAUSAL_BODY, [t]), [t]
    if name == "softcap":
        body = (f"  %c = arith.constant {SOFTCAP} : f32\n  %x = arith.divf %s, %c : f32\n"
                f"  %t = math.tanh %x : f32\n  %r = arith.mulf %t, %c : f32\n"
                f"  flexattn.yield %r : f32")
        return score_ir(body, []), mask_ir(CAUSAL_BODY, []), []
    raise KeyError(name)


def torch_variant(name: str, S: int, H: int, device: str, gen):
    """(score_mod, mask_mod, captures) as torch functions + tensors."""
    import torch

    causal = lambda b, h, q, kv: q >= kv  # noqa: E731
    if name == "full":
        return None, None, []
    if name == "causal":
        return None, causal, []
    if name == "sliding":
        return None, lambda b, h, q, kv: (q >= kv) & (q - kv <= WINDOW), []
    if name == "prefix":
        return None, lambda b, h, q, kv: (q >= kv) | (kv < PREFIX), []
    if name == "document":
        cuts = torch.sort(torch.randperm(S - 1, generator=gen)[: DOCS - 1] + 1).values
        lengths = torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([S])]))
        doc = torch.repeat_interleave(torch.arange(DOCS), lengths).to(torch.int32).to(device)
        return None, lambda b, h, q, kv: (doc[q] == doc[kv]) & (q >= kv), [doc]
    if name == "alibi":
        slopes = torch.exp2(-8.0 * torch.arange(1, H + 1, dtype=torch.float32) / H).to(device)
        return (lambda s, b, h, q, kv: s + slopes[h] * (kv - q)), causal, [slopes]
    if name == "softcap":
        return (lambda s, b, h, q, kv: SOFTCAP * torch.tanh(s / SOFTCAP)), causal, []
    raise KeyError(name)


VARIANTS = ["full", "causal", "sliding", "prefix", "document", "alibi", "softcap"]

# (name, variant, B, Hq, Hkv, M, N, D, dtype)
CORRECTNESS = (
    [(f"check_{v}_d128_bf16", v, 2, 4, 4, 1000, 1000, 128, "bf16") for v in VARIANTS]
    + [(f"check_{v}_d64_bf16", v, 2, 4, 4, 1000, 1000, 64, "bf16") for v in ("full", "causal", "alibi")]
    + [(f"check_{v}_d128_f16", v, 2, 4, 4, 1000, 1000, 128, "f16") for v in ("causal", "softcap")]
    + [("check_gqa_causal_d128_bf16", "causal", 2, 8, 2, 640, 640, 128, "bf16"),
       ("check_full_m300_n1000_d128_bf16", "full", 1, 4, 4, 300, 1000, 128, "bf16")]
)
BENCH = ([(f"bench_{v}_d128", v, 4, 16, 16, 8192, 8192, 128, "bf16") for v in VARIANTS]
         + [(f"bench_{v}_d64", v, 4, 16, 16, 8192, 8192, 64, "bf16") for v in ("full", "causal")])


def uses_block_mask(variant: str) -> bool:
    return variant != "full"


# -- compile (here) -----------------------------------------------------------

def compile_all(out: str, only: str | None) -> None:
    import flexattn_mlir as fm
    from flexattn_mlir import aot
    from flexattn_mlir.mods import ModIR
    from flexattn_mlir.spec import AttentionSpec, BufferType

    items, manifest = [], {}
    for case in CORRECTNESS + BENCH:
        name, variant, B, Hq, Hkv, M, N, D, dt = case
        if only and only not in name:
            continue
        score, mask, caps = variant_ir(variant, N, Hq)
        fields = {}
        if uses_block_mask(variant):
            qb, kb = -(-M // 128), -(-N // 128)
            fields = dict(block_size=(128, 128),
                          kv_num_blocks=BufferType((1, 1, qb), "i32"),
                          kv_indices=BufferType((1, 1, qb, kb), "i32"),
                          full_kv_num_blocks=BufferType((1, 1, qb), "i32"),
                          full_kv_indices=BufferType((1, 1, qb, kb), "i32"))
        capture_types = []
        for t in caps:
            shape = tuple(int(x) for x in t[len("memref<"):t.rindex("x")].split("x"))
            capture_types.append(BufferType(shape, t[t.rindex("x") + 1:-1]))
        spec = AttentionSpec(
            q=BufferType((B, Hq, M, D), dt), k=BufferType((B, Hkv, N, D), dt),
            v=BufferType((B, Hkv, N, D), dt), scale=1.0 / math.sqrt(D),
            return_lse=name.startswith("check"), captures=tuple(capture_types),
            score_mod=ModIR.score(score, caps) if score else None,
            mask_mod=ModIR.mask(mask, caps) if mask else None, **fields)
        items.append((name, spec, fm.CompileOptions(target="sm_90a")))
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
    store = ArtifactStore(artifacts)
    with open(os.path.join(artifacts, "cases.json")) as f:
        cases = json.load(f)["cases"]
    by_name = {}
    for key in store.keys():
        meta = store.metadata(key)
        by_name[meta["spec"]["name"]] = key
    flex_compiled = torch.compile(flex_attention, dynamic=False)
    dtypes = {"bf16": torch.bfloat16, "f16": torch.float16}
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "checks": [], "bench": []}

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
        _, variant, B, Hq, Hkv, M, N, D, dt = case
        gen = torch.Generator().manual_seed(0)
        score_mod, mask_mod, caps = torch_variant(variant, N, Hq, dev, gen)
        dtype = dtypes[dt]
        q = torch.randn(B, Hq, M, D, device=dev, dtype=dtype)
        k = torch.randn(B, Hkv, N, D, device=dev, dtype=dtype)
        v = torch.randn(B, Hkv, N, D, device=dev, dtype=dtype)
        bm = None
        args = {"q": q, "k": k, "v": v}
        density = 1.0
        if uses_block_mask(variant):
            bm = create_block_mask(mask_mod, None, None, M, N, device=dev, BLOCK_SIZE=128)
            args.update(kv_num_blocks=bm.kv_num_blocks, kv_indices=bm.kv_indices,
                        full_kv_num_blocks=bm.full_kv_num_blocks,
                        full_kv_indices=bm.full_kv_indices)
            visited = int(bm.kv_num_blocks.sum() + bm.full_kv_num_blocks.sum())
            density = visited / (bm.kv_indices.shape[2] * bm.kv_indices.shape[3])
        for i, c in enumerate(caps):
            args[f"capture{i}"] = c
        kernel = store.get(by_name[name])
        # Poisoned outputs: every element must be written.
        args["out"] = torch.full_like(q[..., :1].expand(B, Hq, M, D).contiguous(), float("nan"))
        if name.startswith("check"):
            args["lse"] = torch.full((B, Hq, M), float("nan"), device=dev)
        row = {"case": name, "variant": variant, "B": B, "Hq": Hq, "Hkv": Hkv, "M": M,
               "N": N, "D": D, "dtype": dt, "density": density}
        try:
            t0 = time.perf_counter()
            outs = kernel(**args)
            torch.cuda.synchronize()
            row["first_call_s"] = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - report and go on
            row["error"] = f"{type(e).__name__}: {e}"
            (results["checks"] if name.startswith("check") else results["bench"]).append(row)
            print(name, "ERROR", row["error"], flush=True)
            continue
        out = outs["out"]
        if name.startswith("check"):
            ref, ref_lse = flex_attention(q.float(), k.float(), v.float(), score_mod=score_mod,
                                          block_mask=bm, enable_gqa=Hq != Hkv, return_lse=True)
            err = (out.float() - ref).norm() / ref.norm()
            row["rel_err"] = float(err)
            row["max_abs_err"] = float((out.float() - ref).abs().max())
            row["nan"] = bool(torch.isnan(out).any())
            lse = outs["lse"]
            fin = torch.isfinite(ref_lse)
            row["lse_max_abs_err"] = float((lse[fin] - ref_lse[fin]).abs().max()) if fin.any() else 0.0
            row["lse_inf_match"] = bool(torch.equal(torch.isfinite(lse), fin))
            tol = 2e-2
            row["ok"] = (row["rel_err"] < tol and not row["nan"] and row["lse_inf_match"]
                         and row["lse_max_abs_err"] < 5e-2)
            results["checks"].append(row)
            print(f"{name:40s} rel_err={row['rel_err']:.2e} max_abs={row['max_abs_err']:.2e} "
                  f"lse_err={row['lse_max_abs_err']:.2e} ok={row['ok']}", flush=True)
        else:
            flops = 4 * B * Hq * M * N * D * density
            ms = timeit(lambda: kernel(**args))
            row.update(ms=ms, tflops=flops / ms / 1e9)
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
            print(f"{name:24s} ours {row['tflops']:6.1f} TF/s ({ms:.3f} ms)  "
                  f"triton {row.get('triton_tflops', float('nan')):6.1f}  "
                  f"ratio {row.get('ratio_vs_triton', float('nan')):.2f}  "
                  f"sdpa_flash {row.get('sdpa_flash_tflops', float('nan')):6.1f} "
                  f"cudnn {row.get('sdpa_cudnn_tflops', float('nan')):6.1f}", flush=True)
    with open(out_json, "w") as f:
        json.dump(results, f, indent=1)


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
        compile_all(a.out, a.only)
    else:
        run_all(a.artifacts, a.json, a.only, a.reps)


if __name__ == "__main__":
    main()
