"""max_scores and attention sinks on the GPU, against torch on the same GPU.

  compile (here, no GPU; needs flexattn_mlir):
      python bench/aux_check.py compile --out artifacts/aux
  run (on the H100/H200; needs only torch + flexattn_runtime):
      python bench/aux_check.py run --artifacts artifacts/aux --json $OUT/aux.json

Each case runs our sm_90a (or sm_80) kernel with a random per-head sink, lse and
max_scores, and compares with torch's flex_attention on the same GPU (the
Triton backend, float32 math on the same bf16/fp16 inputs, which returns
max_scores on CUDA) with the sink folded in exactly:
lse' = logaddexp(lse, sink), out' = out exp(lse - lse'). Passing: output
relative error < 2e-2, lse and max_scores within 5e-2 where finite, -inf in
the same places; rows without a visible key give 0 and lse = the sink.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_suite  # noqa: E402  (the zoo loader, inputs and runtime path)


def holes_causal(b, h, q_idx, kv_idx):
    """Causal, and every 97th query row (from row 3) sees no key: rows with
    only the sink."""
    return (q_idx >= kv_idx) & (q_idx % 97 != 3)


# (name, variant, B, Hq, Hkv, M, N, D, dtype, options); variant "holes"
# is holes_causal above (mask_mod applied on every block, no block mask).
CASES = [
    ("aux_full_d128", "full", 1, 4, 4, 1000, 1000, 128, "bfloat16", {}),
    ("aux_alibi_causal_d128", "alibi_causal", 2, 4, 4, 1000, 1000, 128, "bfloat16", {}),
    ("aux_holes_d128", "holes", 1, 4, 4, 1000, 1000, 128, "bfloat16", {}),
    ("aux_holes_d64_f16_serial", "holes", 1, 4, 4, 700, 900, 64, "float16",
     {"pipeline": False, "pingpong": False}),
    ("aux_softcap_gqa_d128", "softcap_causal", 1, 8, 2, 640, 640, 128, "bfloat16", {}),
    # The sm_80 kernel (mma.sync) shares the epilogue (flexattn.frag.finalize).
    ("aux_holes_d128_sm80", "holes", 1, 4, 4, 1000, 1000, 128, "bfloat16", {"target": "sm_80"}),
    ("aux_alibi_causal_d64_sm80", "alibi_causal", 2, 4, 4, 700, 700, 64, "float16",
     {"target": "sm_80"}),
    # sm_90a's 192-row Q tiles at D = 64 (three consumer warpgroups).
    ("aux_holes_d64_q192", "holes", 1, 4, 4, 1000, 1000, 64, "bfloat16", {"tile_q": 192}),
    ("aux_softcap_gqa_d64_q192", "softcap_causal", 1, 8, 2, 640, 640, 64, "float16",
     {"tile_q": 192}),
    # Sinks and lse without max_scores (the kernel without that output).
    ("aux_holes_d128_nomax", "holes", 1, 4, 4, 1000, 1000, 128, "bfloat16", {}),
    ("aux_softcap_gqa_d128_nomax", "softcap_causal", 1, 8, 2, 640, 640, 128, "bfloat16", {}),
]


def _writes_max(name: str) -> bool:
    return not name.endswith("_nomax")


def _mods(zoo, variant, Hq, N, dev):
    if variant == "holes":
        return None, holes_causal
    return zoo.make(variant, Hq, N, dev)


def compile_all(out: str) -> None:
    import torch

    import flexattn_mlir as fm
    from flexattn_mlir.examples import zoo
    from flexattn_mlir.execution.attention import build_spec
    from flexattn_mlir.tools import aot

    os.makedirs(out, exist_ok=True)
    items = []
    for case in CASES:
        name, variant, B, Hq, Hkv, M, N, D, dt, over = case
        score, mask, captures, q, kv, _ = gpu_suite.captured_case(
            *_mods(zoo, variant, Hq, N, "cpu"), case)
        spec = build_spec(q, kv, kv, score_mod=score and score.ir, mask_mod=mask and mask.ir,
                          block_mask=None, captures=captures, scale=1.0 / math.sqrt(D),
                          return_lse=True, name=name, sinks=torch.empty(Hq, device="meta"),
                          return_max=_writes_max(name))
        items.append((name, spec, fm.CompileOptions(**{"target": "sm_90a", **over})))
        torch.save([c.contiguous() for c in captures], os.path.join(out, f"{name}.captures.pt"))
    t0 = time.perf_counter()
    # For the H100/H200 (compute capability 9.0): sm_80 kernels as PTX.
    done = aot.write_artifacts(items, out, device_cc=(9, 0))
    print(f"compiled {len(done)} kernels in {time.perf_counter() - t0:.1f} s")


def _reference(q, k, v, score_mod, mask_mod, sinks, enable_gqa):
    """torch flex_attention (float32, Triton) with the sink folded in."""
    import torch
    from torch.nn.attention.flex_attention import AuxRequest, create_block_mask, flex_attention

    B, Hq, M, _ = q.shape
    bm = None
    if mask_mod is not None:
        bm = create_block_mask(mask_mod, None, None, M, k.shape[2], device=q.device)
    flex = torch.compile(flex_attention, dynamic=False)
    out, aux = flex(q.float(), k.float(), v.float(), score_mod=score_mod, block_mask=bm,
                    enable_gqa=enable_gqa, return_aux=AuxRequest(lse=True, max_scores=True))
    sink = sinks.view(1, Hq, 1).expand(B, Hq, M)
    lse = torch.logaddexp(aux.lse, sink)
    return out * torch.exp(aux.lse - lse).unsqueeze(-1), lse, aux.max_scores


def _close(ours, ref, tol):
    import torch

    fin = torch.isfinite(ref)
    err = float((ours[fin] - ref[fin]).abs().max()) if fin.any() else 0.0
    return err, bool(torch.equal(torch.isfinite(ours), fin)) and err < tol


def run_all(artifacts: str, out_json: str) -> None:
    import torch

    from flexattn_runtime import ArtifactStore

    torch.backends.cuda.matmul.allow_tf32 = False
    zoo = gpu_suite.load_zoo()
    store = ArtifactStore(artifacts)
    by_name = {store.metadata(key)["spec"]["name"]: key for key in store.keys()}
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "checks": []}
    for name, variant, B, Hq, Hkv, M, N, D, dt, over in CASES:
        dev, dtype = "cuda", getattr(torch, dt)
        score_mod, mask_mod = _mods(zoo, variant, Hq, N, dev)
        gen = torch.Generator(device=dev).manual_seed(0)
        q = torch.randn(B, Hq, M, D, device=dev, dtype=dtype, generator=gen)
        k = torch.randn(B, Hkv, N, D, device=dev, dtype=dtype, generator=gen)
        v = torch.randn(B, Hkv, N, D, device=dev, dtype=dtype, generator=gen)
        sinks = torch.randn(Hq, device=dev, generator=gen) * 2
        # The GPU kernel reads K/V expanded to the query batch and heads as
        # attention() passes them (GQA: heads shared through the index map).
        args = {"q": q, "k": k, "v": v, "sinks": sinks}
        for i, c in enumerate(torch.load(os.path.join(artifacts, f"{name}.captures.pt"))):
            args[f"capture{i}"] = c.to(dev)
        nan = float("nan")
        args["out"] = torch.full((B, Hq, M, D), nan, device=dev, dtype=dtype)
        args["lse"] = torch.full((B, Hq, M), nan, device=dev)
        if _writes_max(name):
            args["max_scores"] = torch.full((B, Hq, M), nan, device=dev)
        row = {"case": name, "variant": variant, "B": B, "Hq": Hq, "Hkv": Hkv, "M": M, "N": N,
               "D": D, "dtype": dt, "options": over}
        results["checks"].append(row)
        try:
            store.get(by_name[name])(**args)
            torch.cuda.synchronize()
            ref_out, ref_lse, ref_max = _reference(q, k, v, score_mod, mask_mod, sinks, Hq != Hkv)
        except Exception as e:  # noqa: BLE001 - report and go on
            row["error"] = f"{type(e).__name__}: {e}"[:500]
            print(name, "ERROR", row["error"], flush=True)
            continue
        out = args["out"].float()
        row["rel_err"] = float((out - ref_out).norm() / ref_out.norm())
        row["nan"] = bool(torch.isnan(out).any())
        row["lse_max_abs_err"], lse_ok = _close(args["lse"], ref_lse, 5e-2)
        row["max_scores_max_abs_err"], max_ok = (
            _close(args["max_scores"], ref_max, 5e-2) if _writes_max(name) else (None, True))
        empty = torch.isneginf(ref_max)
        row["empty_rows"] = int(empty.sum())
        sink_rows = sinks.view(1, Hq, 1).expand(B, Hq, M)[empty]
        row["empty_rows_ok"] = bool((out[empty] == 0).all()) and bool(
            torch.allclose(args["lse"][empty], sink_rows))
        row["ok"] = (row["rel_err"] < 2e-2 and not row["nan"] and lse_ok and max_ok
                     and row["empty_rows_ok"])
        print(f"{name:28s} rel_err={row['rel_err']:.2e} lse_err={row['lse_max_abs_err']:.2e} "
              f"max_err={row['max_scores_max_abs_err'] or 0:.2e} empty={row['empty_rows']} "
              f"ok={row['ok']}", flush=True)
    with open(out_json, "w") as f:
        json.dump(results, f, indent=1)


def main() -> None:
    gpu_suite.halves_cli(compile_all, run_all)


if __name__ == "__main__":
    main()
