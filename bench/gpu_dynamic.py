"""The GPU dynamic-shape kernel (CompileOptions.dynamic) against torch and
against the static kernel, in two halves.

  compile (here, no GPU; needs flexattn_mlir):
      python bench/gpu_dynamic.py compile --out artifacts/dyn
  run (on the H200; needs only torch + flexattn_runtime):
      python bench/gpu_dynamic.py run --artifacts artifacts/dyn --json $OUT/dyn.json
      [--only check,time,<kernel name part>] [--ours-only] [--label <commit>]

`check` runs each dynamic kernel (one per variant, head dim, dtype and
target: sm_90a and sm_80) at every shape of SHAPES (lengths that are not
multiples of 128, M != N, batch sizes 1 to 3) and compares it with torch's
flex_attention in float32 on the same inputs (rel. error < 2e-2, lse within
5e-2, -inf rows matching), counting one kernel for all of them.
`--ours-only` runs only our kernels (for compute-sanitizer), checking that
every output element was written. `time` runs the forward table's cases
(B=4, H=16, S=8192, bf16: full/causal D=128 and D=64, document, ALiBi)
with the static kernel flex_attention picks by default (sm_90a: wgmma; the
document mask's persistent CTAs) and the dynamic one (the mma.sync kernel),
and the sm_80 target's static and dynamic kernels (the same mma.sync kernel,
PTX the driver compiles: what run-time shapes cost that kernel), interleaved
in one process: ROUNDS rounds of a median of 10 CUDA-event-timed calls each, the
best round of each reported, and dynamic / static time. `--only` takes the
phases (check, time) and parts of kernel names (all when none is named).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)
import gpu_suite as suite  # noqa: E402  (its zoo loader, inputs, check, timing)

H_TABLE, S_TABLE = 16, 8192
# The forward table's cases: (variant, D).
TABLE = [("full", 128), ("causal", 128), ("full", 64), ("causal", 64), ("document", 128),
         ("alibi_causal", 128)]
# The table's cases also timed on the sm_80 target's kernels (static and
# dynamic: the same mma.sync kernel, so their ratio is what run-time shapes
# cost it).
TABLE_SM80 = [("causal", 128), ("causal", 64)]
# (B, M, N) every dynamic kernel is checked at.
SHAPES = [(1, 1, 1), (2, 77, 77), (1, 128, 128), (3, 300, 1000), (2, 1000, 300),
          (1, 2100, 2100), (2, 513, 4097)]
# Dynamic kernels checked beyond the table's (variant, D, dtype, target).
EXTRA = [("causal", 64, "float16", "sm_80"), ("alibi_causal", 64, "float16", "sm_80"),
         ("document", 64, "bfloat16", "sm_80"), ("causal", 64, "float16", "sm_90a")]


def _name(kind, variant, d, dtype="bfloat16", target="sm_90a"):
    return (f"{kind}_{variant}_d{d}" + ("" if dtype == "bfloat16" else "_f16")
            + ("" if target == "sm_90a" else "_sm80"))


def kernels():
    """(name, case, options) of every artifact: a case as gpu_suite's, at the
    table's shape (the static kernel's; the dynamic one serves every shape)."""
    items = []
    for variant, d in TABLE:
        for target in ("sm_90a", "sm_80") if (variant, d) in TABLE_SM80 else ("sm_90a",):
            for kind in ("static", "dynamic"):
                name = _name(kind, variant, d, target=target)
                case = (name, variant, 4, H_TABLE, H_TABLE, S_TABLE, S_TABLE, d, "bfloat16", {})
                over = {"target": target}
                over.update({"dynamic": True} if kind == "dynamic" else {"static_default": True})
                items.append((name, case, over))
    for variant, d, dt, target in EXTRA:
        name = _name("dynamic", variant, d, dt, target)
        case = (name, variant, 1, 4, 4, S_TABLE, S_TABLE, d, dt, {})
        items.append((name, case, {"target": target, "dynamic": True}))
    return items


def compile_all(out: str, only: str | None, device_cc=(9, 0), cases=None) -> None:
    import torch

    import flexattn_mlir as fm
    from flexattn_mlir.examples import zoo
    from flexattn_mlir.execution.attention import build_spec

    items, manifest = [], {}
    for name, case, over in kernels():
        if only and not any(o in name for o in only.split(",")):
            continue
        over = dict(over)
        if over.pop("static_default", False):
            spec, captures = suite.case_spec(case, return_lse=True, check_indices=False)
            # What flex_attention picks for this shape: persistent CTAs for
            # sparse masks.
            target = fm.compiler.targets.target(over["target"])
            if _density(case) < target.persistent_below(case[7], case[7], case[8]):
                over["persistent"] = fm.compiler.targets.sm_count(over["target"])
        else:
            _, variant, B, Hq, Hkv, M, N, D, dt, _ = case
            score, mask, captures, q, kv, v = suite.captured_case(*zoo.make(variant, Hq, N), case)
            spec = build_spec(q, kv, v, score_mod=score and score.ir, mask_mod=mask and mask.ir,
                              block_mask=_mask(case) if mask is not None else None,
                              captures=captures, scale=1.0 / math.sqrt(D), return_lse=True,
                              name=name, check_indices=False, dynamic=True)
        items.append((name, spec, fm.CompileOptions(**over)))
        torch.save([c.contiguous() for c in captures], os.path.join(out, f"{name}.captures.pt"))
        manifest[name] = (*case[:-1], over)
    suite.write_artifacts(items, manifest, out, device_cc)


def _mask(case):
    import torch

    from flexattn_mlir.masks.block_mask import BlockMask

    _, _, B, Hq, Hkv, M, N, *_ = case
    qb, kb = -(-M // 128), -(-N // 128)
    num = torch.empty(1, 1, qb, dtype=torch.int32, device="meta")
    idx = torch.empty(1, 1, qb, kb, dtype=torch.int32, device="meta")
    return BlockMask.from_kv_blocks(num, idx, num, idx, BLOCK_SIZE=128, seq_lengths=(M, N),
                                    compute_q_blocks=False)


def _density(case) -> float:
    from torch.nn.attention.flex_attention import create_block_mask

    from flexattn_mlir.examples import zoo

    _, variant, B, Hq, Hkv, M, N, *_ = case
    _, mask_mod = zoo.make(variant, Hq, N)
    if mask_mod is None:
        return 1.0
    bm = create_block_mask(mask_mod, None, None, M, N, device="cpu")
    return float(bm.kv_num_blocks.sum() + bm.full_kv_num_blocks.sum()) / (
        bm.kv_indices.shape[2] * bm.kv_indices.shape[3])


# -- run (on the GPU) ---------------------------------------------------------

def _args(store, key, zoo, case, B, M, N, dev, captures, poison=True):
    """The kernel's arguments for a (B, M, N) call of a case's kernel: q, k,
    v, torch's block mask for M x N, the captures, the scale, poisoned
    outputs. The mods are the kernel's: those of the case's length (its
    captured tensors' shapes are in the kernel's key; the document ids of
    that length cover every M and N here)."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask

    _, variant, _, Hq, Hkv, _, Nmax, D, dt, over = case
    score_mod, mask_mod = zoo.make(variant, Hq, Nmax, dev)
    dtype = getattr(torch, dt)
    gen = torch.Generator(device=dev).manual_seed(B * 100003 + M * 101 + N)
    q = torch.randn(B, Hq, M, D, device=dev, dtype=dtype, generator=gen)
    k = torch.randn(B, Hkv, N, D, device=dev, dtype=dtype, generator=gen)
    v = torch.randn(B, Hkv, N, D, device=dev, dtype=dtype, generator=gen)
    bm, density = None, 1.0
    if mask_mod is not None:
        bm = create_block_mask(mask_mod, None, None, M, N, device=dev)
        visited = int(bm.kv_num_blocks.sum() + bm.full_kv_num_blocks.sum())
        density = visited / (bm.kv_indices.shape[2] * bm.kv_indices.shape[3])
    args = {"q": q, "k": k, "v": v}
    if bm is not None:
        args.update(kv_num_blocks=bm.kv_num_blocks, kv_indices=bm.kv_indices,
                    full_kv_num_blocks=bm.full_kv_num_blocks, full_kv_indices=bm.full_kv_indices)
    names = [a["name"] for a in store.metadata(key)["arguments"]]
    for i, c in enumerate(captures):
        args[f"capture{i}"] = c.to(dev)
    if f"capture{len(captures)}" in names:  # the dynamic kernel's scale operand
        args[f"capture{len(captures)}"] = torch.tensor(1.0 / math.sqrt(D), device=dev)
    fill = float("nan") if poison else 0.0
    args["out"] = torch.full((B, Hq, M, D), fill, device=dev, dtype=q.dtype)
    args["lse"] = torch.full((B, Hq, M), fill, device=dev)
    return args, (q, k, v, score_mod, bm, density)


ROUNDS = 5


def _selected(only: str | None, phase: str, name: str = "") -> bool:
    words = (only or "").split(",")
    phases = [w for w in words if w in ("check", "time")]
    parts = [w for w in words if w and w not in ("check", "time")]
    return (not phases or phase in phases) and (not parts or any(p in name for p in parts))


def run_all(artifacts: str, out_json: str, only: str | None, reps: int, peers, ours_only: bool,
            label: str) -> None:
    import torch

    from flexattn_runtime import ArtifactStore

    torch.backends.cuda.matmul.allow_tf32 = False
    dev, zoo = "cuda", suite.load_zoo()
    store = ArtifactStore(artifacts)
    with open(os.path.join(artifacts, "cases.json")) as f:
        cases = json.load(f)["cases"]
    by_name = {store.metadata(key)["spec"]["name"]: key for key in store.keys()}
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "label": label, "checks": [], "timing": []}

    def save():
        with open(out_json, "w") as f:
            json.dump(results, f, indent=1)

    # Static vs dynamic at the table's shape, interleaved (first: a check
    # that fails on the device cannot take the timing with it).
    for variant, d in TABLE:
        if not _selected(only, "time", _name("dynamic", variant, d)):
            continue
        targets = (("sm_90a", ""), ("sm_80", "_sm80")) if (variant, d) in TABLE_SM80 else (
            ("sm_90a", ""),)
        pair = {f"{k}{suffix}": _name(k, variant, d, target=target)
                for target, suffix in targets for k in ("static", "dynamic")}
        case = cases[pair["static"]]
        _, _, B, Hq, Hkv, M, N, D, dt, _ = case
        row = {"variant": variant, "D": d, "B": B, "H": Hq, "S": M}
        results["timing"].append(row)
        calls = {}
        for kind, name in pair.items():
            caps = torch.load(os.path.join(artifacts, f"{name}.captures.pt"))
            kernel = store.get(by_name[name])
            args, (*_, density) = _args(store, by_name[name], zoo, cases[name], B, M, N, dev,
                                        caps, poison=False)
            calls[kind] = (lambda kernel=kernel, args=args: kernel(**args))
            row["density"] = density
        flops = 4 * B * Hq * M * N * D * row["density"]
        best = {k: math.inf for k in calls}
        for _ in range(ROUNDS):
            for kind, fn in calls.items():
                best[kind] = min(best[kind], suite.median_ms(fn, 10, warmup=2))
        for kind in calls:
            row[f"{kind}_ms"] = best[kind]
            row[f"{kind}_tflops"] = flops / best[kind] / 1e9
        row["dynamic_over_static_time"] = best["dynamic"] / best["static"]
        line = (f"{variant:12s} D={d:3d} TF/s static {row['static_tflops']:6.1f} dynamic "
                f"{row['dynamic_tflops']:6.1f} (x{row['dynamic_over_static_time']:.3f} time)")
        if "static_sm80" in best:
            row["dynamic_over_static_time_sm80"] = best["dynamic_sm80"] / best["static_sm80"]
            line += (f" | sm80 kernel static {row['static_sm80_tflops']:6.1f} dynamic "
                     f"{row['dynamic_sm80_tflops']:6.1f} "
                     f"(x{row['dynamic_over_static_time_sm80']:.3f})")
        print(line, flush=True)
        save()
    # Correctness: each dynamic kernel at every shape, one kernel object.
    for name, case in cases.items():
        if not name.startswith("dynamic") or not _selected(only, "check", name):
            continue
        kernel = store.get(by_name[name])
        caps = torch.load(os.path.join(artifacts, f"{name}.captures.pt"))
        # The table's sm_80 kernels (timed below) at two shapes, the rest at all.
        shapes = SHAPES[3:5] if name.endswith("_sm80") and case[3] == H_TABLE else SHAPES
        for B, M, N in SHAPES[:3] if ours_only else shapes:
            row = {"kernel": name, "B": B, "M": M, "N": N, "dtype": case[8],
                   "target": case[-1]["target"]}
            results["checks"].append(row)
            try:
                args, (q, k, v, score_mod, bm, _) = _args(store, by_name[name], zoo, case,
                                                           B, M, N, dev, caps)
                kernel(**args)
                torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001 - report and go on
                row["error"] = f"{type(e).__name__}: {e}"[:400]
                print(name, B, M, N, "ERROR", row["error"], flush=True)
                save()
                continue
            if ours_only:
                row["ok"] = not bool(torch.isnan(args["out"]).any() or
                                     torch.isnan(args["lse"]).any())
            else:
                suite._check(row, args["out"], args["lse"], q, k, v, score_mod, bm, False)
            print(f"{name:30s} B={B} M={M:5d} N={N:5d} rel_err={row.get('rel_err', 0):.2e} "
                  f"ok={row['ok']}", flush=True)
            save()
    save()


if __name__ == "__main__":
    suite.main(compile_all, run_all, reps=10, peers="")
