"""GPU correctness + benchmark suite, in two halves.

  compile (here, no GPU; needs flexattn_mlir):
      python bench/gpu_suite.py compile --out artifacts/gpu [--only check] [--device-cc 9.0]
  run (on the H100/H200; needs only torch + flexattn_runtime):
      python bench/gpu_suite.py run --artifacts artifacts/gpu --json $OUT/gpu.json
      [--only check] [--ours-only] [--peers triton,cudnn,fa4,flash]

Every case exists for both GPU targets: sm_90a (the Hopper kernel) and,
with the suffix `_sm80`, sm_80 (the Ampere kernel, which runs on Hopper
too: compiled for a device of compute capability `--device-cc` that cannot
run its cubin, the artifact is its PTX and the driver compiles it).

The variants are flexattn_mlir.examples.zoo's Python mods, captured by the real
frontend at compile time; the tensors they capture are saved beside the
artifacts in the kernel's operand order. `run` checks every correctness case
against torch's flex_attention on the same GPU (float32 math on the same
bf16/fp16 inputs, rel. error < 2e-2 and every element within 3e-2, lse within
5e-2, -inf rows matching), then times the benchmark cases (B=4, H=16, S=8192): sm_90a beside torch
flex_attention (torch.compile'd: the Triton backend, and the FlashAttention-4
backend with kernel_options={"BACKEND": "FLASH"} where flash-attn-4 is
importable) and SDPA's cuDNN backend (full, causal); sm_80 (full, causal)
beside SDPA's FLASH_ATTENTION backend (FlashAttention-2) and cuDNN. Counting
4*B*H*M*N*D*density FLOPs with density = visited blocks / all blocks.
`--ours-only` runs only our kernels (no references, no peers; for
compute-sanitizer), checking that every output element was written.
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
DEFAULT = {}  # CompileOptions overrides (the target is sm_90a unless named)
SM80 = {"target": "sm_80"}
SERIAL = {"pipeline": False, "pingpong": False}
NO_PINGPONG = {"pingpong": False}
PERSISTENT = {"persistent": "sms"}  # one CTA per SM of the target (resolved at compile)
WIDE = {"tile_q": 192}  # sm_90a's 192-row Q tiles (D = 64)
# sm_80's 16 rows per warp x 128-column KV tiles with Q in registers (the
# D = 128 table choice before 32 x 64; tile_kv=128 picks it).
R16 = {"tile_kv": 128, "warp_rows": 16, "q_in_registers": True}

# (name, variant, B, Hq, Hkv, M, N, D, dtype, options)
CORRECTNESS = (
    # The whole zoo, bf16 and fp16, D = 64 and 128, at a length that is not a
    # multiple of the 128-token blocks.
    [(f"check_{v}_d{d}" + ("" if dt == "bfloat16" else "_f16"), v, 1, 4, 4, 2100, 2100, d, dt,
      DEFAULT)
     for v in ZOO for d in (128, 64) for dt in ("bfloat16", "float16")]
    # Lengths that are multiples of the blocks (no tail: the mods' indices
    # are clamped only where a score_mod converts one to a float).
    + [(f"check_{v}_d{d}_n1024", v, 1, 4, 4, 1024, 1024, d, "bfloat16", DEFAULT)
       for v in ("relative_bias", "alibi_causal", "t5_bias", "natten_2d") for d in (128, 64)]
    + [("check_gqa_causal_d128", "causal", 2, 8, 2, 640, 640, 128, "bfloat16", DEFAULT),
       ("check_full_m300_n1000", "full", 1, 4, 4, 300, 1000, 128, "bfloat16", DEFAULT),
       # Tail splits (132 SMs): 136 Q tiles leave 4 to the split-KV kernel;
       # GQA with a 76-row last Q tile and 2100 keys, in fp16; D = 64.
       ("check_full_tail_d128", "full", 1, 17, 17, 1024, 1024, 128, "bfloat16", DEFAULT),
       ("check_full_tail_gqa_f16", "full", 1, 4, 2, 4300, 2100, 128, "float16", DEFAULT),
       ("check_full_tail_d64", "full", 1, 17, 17, 1024, 1024, 64, "bfloat16", DEFAULT),
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
       ("check_full_d64_persistent", "full", 2, 4, 4, 2100, 2100, 64, "bfloat16", {"persistent": 20}),
       ("check_causal_d64_persistent", "causal", 1, 4, 4, 2100, 2100, 64, "bfloat16",
        {"persistent": 20})]
    # P's exp2 on the FMA pipe (CompileOptions.exp2_poly): every element
    # (16 of 16, the polynomial alone) under masks and mods, and a share.
    + [(f"check_{v}_d{d}" + ("" if dt == "bfloat16" else "_f16") + "_fma16", v, 1, 4, 4, 2100,
        2100, d, dt, {"exp2_poly": 16})
       for v in ("full", "causal", "alibi_causal", "softcap_causal", "document")
       for d in (64, 128) for dt in ("bfloat16", "float16")]
    + [(f"check_{v}_d64_fma3", v, 1, 4, 4, 2100, 2100, 64, "bfloat16", {"exp2_poly": 3})
       for v in ("causal", "document")]
    # 192-row Q tiles at D = 64 (three consumer warpgroups; 2100 rows end
    # in a 180-row tile), the 128-row mask blocks read per tile: the zoo,
    # fp16, GQA, M != N, persistent CTAs, and the schedules.
    + [(f"check_{v}_d64_q192" + ("" if dt == "bfloat16" else "_f16"), v, 1, 4, 4, 2100, 2100,
        64, dt, WIDE) for v in ZOO for dt in ("bfloat16", "float16")]
    + [("check_gqa_causal_d64_q192", "causal", 2, 8, 2, 640, 640, 64, "bfloat16", WIDE),
       ("check_full_m300_n1000_d64_q192", "full", 1, 4, 4, 300, 1000, 64, "bfloat16", WIDE),
       ("check_causal_m1000_n300_d64_q192", "causal", 1, 4, 4, 1000, 300, 64, "bfloat16", WIDE),
       ("check_causal_d64_q192_persistent", "causal", 2, 4, 4, 2100, 2100, 64, "bfloat16",
        dict(WIDE, persistent=20)),
       ("check_document_d64_q192_persistent", "document", 2, 4, 4, 2100, 2100, 64, "bfloat16",
        dict(WIDE, persistent=20)),
       ("check_causal_d64_q192_serial", "causal", 1, 4, 4, 2100, 2100, 64, "bfloat16",
        dict(WIDE, **SERIAL)),
       ("check_causal_d64_q192_nopingpong", "causal", 1, 4, 4, 2100, 2100, 64, "bfloat16",
        dict(WIDE, **NO_PINGPONG)),
       ("check_causal_d64_q192_fma16", "causal", 1, 4, 4, 2100, 2100, 64, "bfloat16",
        dict(WIDE, exp2_poly=16))]
)
# The same zoo for sm_80, and its own options (no schedule: one in-order step).
CORRECTNESS += (
    [(f"{name}_sm80", v, B, Hq, Hkv, M, N, D, dt, SM80)
     for name, v, B, Hq, Hkv, M, N, D, dt, over in CORRECTNESS if over == DEFAULT]
    + [("check_causal_d64_4stages_sm80", "causal", 1, 4, 4, 2100, 2100, 64, "bfloat16",
        dict(SM80, stages=4)),
       # Two m16 tiles per warp (32 rows) under masks and mods: block masks
       # of 64-column blocks give the D = 64 kernel 64-column KV tiles.
       *[(f"check_{v}_d64_bkv64_sm80", v, 1, 4, 4, 2100, 2100, 64, dt, dict(SM80, block_kv=64))
         for v, dt in (("causal", "bfloat16"), ("alibi_causal", "float16"),
                       ("document", "bfloat16"), ("softcap_causal", "bfloat16"))],
       # The table's D = 128 kernel (32 rows x 64 columns, Q read from
       # shared memory) under 64-column mask blocks and persistent CTAs, and
       # the 16 rows x 128 columns kernel (Q in registers; tile_kv=128)
       # under the zoo's masks and mods.
       ("check_causal_d128_bkv64_sm80", "causal", 2, 4, 4, 2100, 2100, 128, "bfloat16",
        dict(SM80, block_kv=64, persistent=20)),
       *[(f"check_{v}_d128_bn128_r16_sm80", v, 1, 4, 4, 2100, 2100, 128, dt, dict(SM80, **R16))
         for v, dt in (("full", "bfloat16"), ("causal", "bfloat16"), ("document", "bfloat16"),
                       ("alibi_causal", "float16"), ("t5_bias", "bfloat16"))],
       ("check_causal_persistent_sm80", "causal", 2, 4, 4, 2100, 2100, 128, "bfloat16",
        dict(SM80, persistent=20)),
       ("check_document_persistent_sm80", "document", 2, 4, 4, 2100, 2100, 128, "bfloat16",
        dict(SM80, persistent=20))]
)
BENCH_VARIANTS = ["full", "causal", "sliding_window", "prefix_lm", "document", "alibi_causal",
                  "softcap_causal", "relative_bias", "t5_bias", "natten_2d"]
BENCH = (
    [(f"bench_{v}_d128", v, 4, 16, 16, 8192, 8192, 128, "bfloat16", DEFAULT) for v in BENCH_VARIANTS]
    + [(f"bench_{v}_d64", v, 4, 16, 16, 8192, 8192, 64, "bfloat16", DEFAULT) for v in ("full", "causal")]
    # What flex_attention picks for sparse masks (density < 0.25): persistent CTAs.
    + [(f"bench_{v}_d128_persistent", v, 4, 16, 16, 8192, 8192, 128, "bfloat16", PERSISTENT)
       for v in ("sliding_window", "document", "natten_2d")]
    # sm_80 beside FlashAttention-2 (SDPA's FLASH_ATTENTION backend; full,
    # causal): every zoo variant at D = 128 with the table's tiling and
    # with 16 rows x 128 columns (R16), in the same process.
    + [(f"bench_{v}_d{d}_sm80", v, 4, 16, 16, 8192, 8192, d, "bfloat16", SM80)
       for d in (128, 64) for v in (ZOO if d == 128 else ("full", "causal"))]
    + [(f"bench_{v}_d128_bn128_r16_sm80", v, 4, 16, 16, 8192, 8192, 128, "bfloat16",
        dict(SM80, **R16)) for v in ZOO]
    # Causal D = 64 on sm_90a under the schedules it could take instead
    # (more K/V stages, no ping-pong between the consumer warpgroups,
    # persistent CTAs): the targets table's choice is made by measurement.
    + [("bench_causal_d64_3stages", "causal", 4, 16, 16, 8192, 8192, 64, "bfloat16",
        {"stages": 3}),
       ("bench_causal_d64_nopingpong", "causal", 4, 16, 16, 8192, 8192, 64, "bfloat16",
        NO_PINGPONG),
       ("bench_causal_d64_persistent", "causal", 4, 16, 16, 8192, 8192, 64, "bfloat16",
        PERSISTENT),
       ("bench_causal_d64_persistent_fma2", "causal", 4, 16, 16, 8192, 8192, 64, "bfloat16",
        dict(PERSISTENT, exp2_poly=2)),
       ("bench_full_d64_persistent", "full", 4, 16, 16, 8192, 8192, 64, "bfloat16", PERSISTENT),
       ("bench_causal_d128_persistent", "causal", 4, 16, 16, 8192, 8192, 128, "bfloat16",
        PERSISTENT),
       # Full D = 128 as one kernel over every tile: persistent CTAs, and one
       # CTA per tile (what flex_attention ran before its tail split): the
       # tail split's A/B in the same process.
       ("bench_full_d128_persistent", "full", 4, 16, 16, 8192, 8192, 128, "bfloat16",
        dict(PERSISTENT, tail_split=False)),
       ("bench_full_d128_grid", "full", 4, 16, 16, 8192, 8192, 128, "bfloat16",
        {"tail_split": False})]
    # D = 64 with 192-row Q tiles (three consumer warpgroups) beside the
    # 128-row kernels above; persistent CTAs too (their tile loop spills
    # 72 bytes at the three groups' 160 registers).
    + [(f"bench_{v}_d64_q192", v, 4, 16, 16, 8192, 8192, 64, "bfloat16", WIDE)
       for v in ("full", "causal")]
    + [("bench_causal_d64_q192_persistent", "causal", 4, 16, 16, 8192, 8192, 64, "bfloat16",
        dict(WIDE, **PERSISTENT))]
    # P's exp2 partly on the FMA pipe (k of every 16 elements: exp2_poly):
    # the targets table's choice per head dim is made by measurement.
    + [(f"bench_{v}_d{d}_fma{k}", v, 4, 16, 16, 8192, 8192, d, "bfloat16", {"exp2_poly": k})
       for d, ks in ((64, (2, 3, 4)), (128, (2, 4))) for v in ("full", "causal") for k in ks]
    # sm_80 beside its other tilings (targets.py picks one per head dim and
    # KV tile; tile_kv, warp_rows / q_in_registers override it):
    # the 16-row kernel at D = 64, causal with 128 x 64 mask blocks
    # (64-column KV blocks instead of torch's default 128 x 128 walked as
    # two 64-column tiles), and the 128-column tile causal D = 64 got before.
    + [("bench_full_d64_bn128_sm80", "full", 4, 16, 16, 8192, 8192, 64, "bfloat16",
        dict(SM80, tile_kv=128)),
       ("bench_causal_d64_bkv64_sm80", "causal", 4, 16, 16, 8192, 8192, 64, "bfloat16",
        dict(SM80, block_kv=64)),
       ("bench_causal_d128_bkv64_sm80", "causal", 4, 16, 16, 8192, 8192, 128, "bfloat16",
        dict(SM80, block_kv=64)),
       ("bench_causal_d64_bn128_sm80", "causal", 4, 16, 16, 8192, 8192, 64, "bfloat16",
        dict(SM80, tile_kv=128))]
)
# Case options that are not CompileOptions: the KV block of the case's block
# mask (128 unless given) and v's head dim (D unless given), which are the
# peers' inputs too, and whether the case runs as flex_attention would with a
# nearly empty last wave (tail_split, default True: a dense attention's last
# `T mod SMs` tiles as split-KV ranges on a second stream,
# flexattn_mlir.execution.tail_split; False: one kernel over every tile).
PEER_INPUTS = ("block_kv", "value_dim")
CASE_ONLY = PEER_INPUTS + ("tail_split",)
# Which peers each target's benchmark cases are timed beside.
PEERS_OF = {"sm_90a": ("triton", "cudnn", "fa4"), "sm_80": ("flash", "cudnn")}


def load_zoo():
    """flexattn_mlir/examples/zoo.py without the compiler: its `..masks`
    import is served by torch's and_masks/or_masks (same semantics)."""
    import torch.nn.attention.flex_attention as tfa

    for name in ("_zoo_pkg", "_zoo_pkg.examples"):
        pkg = types.ModuleType(name)
        pkg.__path__ = []
        sys.modules.setdefault(name, pkg)
    sys.modules.setdefault("_zoo_pkg.masks", tfa)
    spec = importlib.util.spec_from_file_location(
        "_zoo_pkg.examples.zoo", os.path.join(ROOT, "flexattn_mlir", "examples", "zoo.py"))
    zoo = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = zoo  # dataclasses look their module up
    spec.loader.exec_module(zoo)
    return zoo


# -- compile (here) -----------------------------------------------------------

def captured_case(score_mod, mask_mod, case):
    """A case's mods captured by the frontend (sharing one capture list) and
    meta q, kv of its shape: ``(score, mask, captures, q, kv)``."""
    import torch

    from flexattn_mlir import frontend

    _, _, B, Hq, Hkv, M, N, D, dt, over = case
    score = frontend.capture_score_mod(score_mod) if score_mod else None
    mask = frontend.capture_mask_mod(mask_mod) if mask_mod else None
    score, mask, captures = frontend.combine(score, mask)
    dtype = getattr(torch, dt)
    q = torch.empty(B, Hq, M, D, dtype=dtype, device="meta")
    kv = torch.empty(B, Hkv, N, D, dtype=dtype, device="meta")
    v = torch.empty(B, Hkv, N, over.get("value_dim", D), dtype=dtype, device="meta")
    return score, mask, captures, q, kv, v


def case_spec(case, return_lse: bool, check_indices: bool = True):
    """The AttentionSpec of a case (the zoo's mods captured by the frontend,
    a broadcast 128 x 128 block mask when the variant has a mask_mod) and the
    tensors its mods capture, in operand order."""
    import torch

    from flexattn_mlir.examples import zoo
    from flexattn_mlir.execution.attention import build_spec
    from flexattn_mlir.masks.block_mask import BlockMask

    name, variant, B, Hq, Hkv, M, N, D, dt, _ = case
    score, mask, captures, q, kv, v = captured_case(*zoo.make(variant, Hq, N, "cpu"), case)
    block_mask = None
    if mask is not None:
        block_kv = case[-1].get("block_kv", 128)
        qb, kb = -(-M // 128), -(-N // block_kv)
        num = torch.empty(1, 1, qb, dtype=torch.int32, device="meta")
        idx = torch.empty(1, 1, qb, kb, dtype=torch.int32, device="meta")
        block_mask = BlockMask.from_kv_blocks(num, idx, num, idx, BLOCK_SIZE=(128, block_kv),
                                              seq_lengths=(M, N), compute_q_blocks=False)
    spec = build_spec(q, kv, v, score_mod=score and score.ir, mask_mod=mask and mask.ir,
                      block_mask=block_mask, captures=captures, scale=1.0 / math.sqrt(D),
                      return_lse=return_lse, name=name, check_indices=check_indices,
                      tile_q=case[-1].get("tile_q", 0))
    return spec, captures


def selected(name: str, only: str | None) -> bool:
    """``--only``: comma-separated substrings of case names; ``=name``
    matches that name exactly."""
    return not only or any(name == o[1:] if o.startswith("=") else o in name
                           for o in only.split(","))


def compile_all(out: str, only: str | None, device_cc: tuple[int, int] = (9, 0),
                cases=None) -> None:
    """Compiles ``cases`` (this suite's CORRECTNESS + BENCH by default)."""
    import torch

    import flexattn_mlir as fm
    from flexattn_mlir.execution import tail_split

    items, manifest, tails = [], {}, {}
    for case in cases or CORRECTNESS + BENCH:
        name, over = case[0], case[-1]
        if not selected(name, only):
            continue
        # Checks read back the report of the reads the compiler cannot bound;
        # benchmarks run as flex_attention does on a GPU (unchecked unless
        # FLEXATTN_CHECK_INDICES=1).
        spec, captures = case_spec(case, return_lse=name.startswith("check"),
                                   check_indices=name.startswith("check"))
        if over.get("persistent") == "sms":
            over = dict(over, persistent=fm.compiler.targets.sm_count(over.get("target", "sm_90a")))
        opts = fm.CompileOptions(**{"target": "sm_90a",
                                    **{k: v for k, v in over.items() if k not in CASE_ONLY}})
        split = None
        if over.get("tail_split", True):
            split = tail_split.plan(spec, opts, fm.compiler.targets.sm_count(opts.target))
        if split is None:
            items.append((name, spec, opts))
        else:
            items += [(name, spec, split.main), (split.tail_spec.name, split.tail_spec, split.tail)]
            tails[name] = {"kernel": split.tail_spec.name, "rows": split.rows}
        torch.save([c.contiguous() for c in captures], os.path.join(out, f"{name}.captures.pt"))
        manifest[name] = (*case[:-1], over)
    write_artifacts(items, manifest, out, device_cc, tails)


def write_artifacts(items, manifest, out: str, device_cc: tuple[int, int] = (9, 0),
                    tails=None) -> None:
    """Compiles (name, spec, options) items into `out` with cases.json, for a
    device of compute capability `device_cc`; ``tails``: case -> its tail
    split's tail kernel (its name and key) and rows."""
    from flexattn_mlir.tools import aot

    t0 = time.perf_counter()
    done = aot.write_artifacts(items, out, device_cc=device_cc)
    for tail in (tails or {}).values():  # equal tail kernels share one artifact
        tail["key"] = done[tail["kernel"]]["key"]
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"cases": manifest, "tails": tails or {},
                   "compile_seconds": {n: d["seconds"] for n, d in done.items()}}, f, indent=1)
    print(f"compiled {len(done)} kernels in {time.perf_counter() - t0:.1f} s")


# -- run (on the GPU) ---------------------------------------------------------

class Peers:
    """The implementations ours is timed beside, each called as (q, k, v,
    score_mod, block_mask, variant): torch flex's Triton backend, its
    FlashAttention-4 backend (flash-attn-4 must be importable), SDPA cuDNN
    and SDPA FLASH_ATTENTION (FlashAttention-2; masks they have: full,
    causal)."""

    def __init__(self, names):
        import torch
        from torch.nn.attention.flex_attention import flex_attention

        self.names = names
        self.fns = {}
        if "triton" in names:
            self.fns["triton"] = torch.compile(flex_attention, dynamic=False)
        if "fa4" in names:
            from functools import partial

            self.fns["fa4"] = torch.compile(
                partial(flex_attention, kernel_options={"BACKEND": "FLASH"}), dynamic=False)

    def call(self, name, q, k, v, score_mod, bm, variant):
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel

        if name in ("cudnn", "flash"):
            if variant not in ("full", "causal"):
                return None
            backend = (SDPBackend.CUDNN_ATTENTION if name == "cudnn"
                       else SDPBackend.FLASH_ATTENTION)
            def f():  # noqa: E306
                with sdpa_kernel(backend):
                    return torch.nn.functional.scaled_dot_product_attention(
                        q, k, v, is_causal=variant == "causal")
            return f
        fn = self.fns[name]
        return lambda: fn(q, k, v, score_mod=score_mod, block_mask=bm)


def _inputs(zoo, case, dev):
    """q, k, v, mods, the torch block mask and its density for a case."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask

    _, variant, B, Hq, Hkv, M, N, D, dt, over = case
    score_mod, mask_mod = zoo.make(variant, Hq, N, dev)
    dtype = getattr(torch, dt)
    gen = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(B, Hq, M, D, device=dev, dtype=dtype, generator=gen)
    k = torch.randn(B, Hkv, N, D, device=dev, dtype=dtype, generator=gen)
    v = torch.randn(B, Hkv, N, over.get("value_dim", D), device=dev, dtype=dtype, generator=gen)
    bm, density = None, 1.0
    if mask_mod is not None:
        bm = create_block_mask(mask_mod, None, None, M, N, device=dev,
                               BLOCK_SIZE=(128, over.get("block_kv", 128)))
        visited = int(bm.kv_num_blocks.sum() + bm.full_kv_num_blocks.sum())
        density = visited / (bm.kv_indices.shape[2] * bm.kv_indices.shape[3])
    return q, k, v, score_mod, bm, density


def _check(row, out, lse, q, k, v, score_mod, bm, enable_gqa):
    """Against torch's flex_attention in float32 on the same inputs."""
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    ref, ref_lse = flex_attention(q.float(), k.float(), v.float(), score_mod=score_mod,
                                  block_mask=bm, enable_gqa=enable_gqa, return_lse=True)
    row["rel_err"] = float((out.float() - ref).norm() / ref.norm())
    row["max_abs_err"] = float((out.float() - ref).abs().max())
    row["nan"] = bool(torch.isnan(out).any())
    fin = torch.isfinite(ref_lse)
    row["lse_max_abs_err"] = float((lse[fin] - ref_lse[fin]).abs().max()) if fin.any() else 0.0
    row["lse_inf_match"] = bool(torch.equal(torch.isfinite(lse), fin))
    # The largest error of any element too: a wrong tile among many
    # correct ones moves the relative error little.
    row["ok"] = (row["rel_err"] < 2e-2 and row["max_abs_err"] < 3e-2 and not row["nan"]
                 and row["lse_inf_match"] and row["lse_max_abs_err"] < 5e-2)


# How median_ms times a call: "call" (events around the call on an idle GPU:
# the device time plus whatever the host spends before the launch reaches
# the GPU), "queued" (a spin kernel of QUEUE_MS enqueued first, so that
# the host prepares the launch while the GPU is busy and the events measure
# the device time, as back-to-back training steps see it) or "sustained"
# (SUSTAIN_S seconds of back-to-back calls, the mean: the card at its power
# limit, as a long training run sees it; nvidia-smi's SM clock and board
# power sampled meanwhile, in the row as <impl>_clock_mhz / _power_w).
TIMING = "call"
QUEUE_MS = 5.0
SUSTAIN_S = 3.0
POWER = {}  # the last sustained run's samples: clock_mhz, power_w


def sustained_ms(fn) -> float:
    """The mean time of SUSTAIN_S seconds of back-to-back calls of fn; the
    median SM clock and board power while they ran go to POWER."""
    import subprocess

    import torch

    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    n = max(20, int(SUSTAIN_S / max(time.perf_counter() - t0, 1e-5)))
    POWER.clear()
    try:
        smi = subprocess.Popen(["nvidia-smi", "--query-gpu=clocks.sm,power.draw",
                                "--format=csv,noheader,nounits", "-lms", "50"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    except OSError:
        smi = None
    ms = back_to_back_ms(fn, n)
    if smi is not None:
        smi.terminate()
        out, _ = smi.communicate()
        busy = sorted((float(c), float(w)) for c, w in
                      (r.split(", ") for r in out.strip().splitlines() if r.count(",") == 1)
                      if float(c) > 1000)  # samples while the SMs ran (idle: 345 MHz)
        if busy:
            POWER.update(clock_mhz=busy[len(busy) // 2][0],
                         power_w=sorted(w for _, w in busy)[len(busy) // 2])
    return ms


def back_to_back_ms(fn, calls: int) -> float:
    """Milliseconds per call of `calls` back-to-back calls, events around
    them all (each call's host time overlapped by the previous one's GPU
    work)."""
    import torch

    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(calls):
        fn()
    e.record()
    e.synchronize()
    return s.elapsed_time(e) / calls


def median_ms(fn, reps: int, warmup: int = 3) -> float:
    """The median of `reps` CUDA-event-timed calls of fn, after `warmup`
    calls (TIMING says whether the host's launch time is included)."""
    import torch

    if TIMING == "sustained":
        return sustained_ms(fn)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if TIMING == "queued":
            torch.cuda._sleep(int(QUEUE_MS * 1e-3 * 2.0e9))  # ~QUEUE_MS at <= 2 GHz
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def _tail_split(main, tail, rows: int):
    """The main and tail kernels of a tail split called as one kernel, by
    argument name."""
    from flexattn_runtime.splitkv import TailSplit

    split = TailSplit(main, tail, tail.metadata, rows)
    names = main.metadata.argument_names
    return lambda **args: split([args[n] for n in names])


def run_all(artifacts: str, out_json: str, only: str | None, reps: int,
            peers: list[str], ours_only: bool, label: str) -> None:
    import torch

    from flexattn_runtime import ArtifactStore
    from flexattn_runtime.masks import retile_q

    torch.backends.cuda.matmul.allow_tf32 = False
    # One compiled flex_attention serves every case: lift dynamo's limit on
    # recompilations (one per variant and shape).
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 4096
    dev = "cuda"
    zoo = load_zoo()
    store = ArtifactStore(artifacts)
    with open(os.path.join(artifacts, "cases.json")) as f:
        manifest = json.load(f)
    cases, tails = manifest["cases"], manifest.get("tails", {})
    # Each case's kernel by its own metadata file (cases whose kernels are
    # equal, e.g. a tail split's main kernel and a persistent case's, share
    # one key in the store's index).
    by_name = {store.metadata(key)["spec"]["name"]: key for key in store.keys()}
    for name in cases:
        path = os.path.join(artifacts, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                by_name[name] = json.load(f)["key"]
    peer = Peers([] if ours_only else peers)
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "label": label, "timing": TIMING, "peers": peer.names, "checks": [], "bench": []}

    def save():
        # After every case: a hung kernel (killed by a timeout) keeps the rest.
        with open(out_json, "w") as f:
            json.dump(results, f, indent=1)

    def timeit(fn, n=reps):
        return median_ms(fn, n)

    for name, case in cases.items():
        if not selected(name, only):
            continue
        _, variant, B, Hq, Hkv, M, N, D, dt, over = case
        q, k, v, score_mod, bm, density = _inputs(zoo, case, dev)
        args = {"q": q, "k": k, "v": v}
        if bm is not None:
            lists = [bm.kv_num_blocks, bm.kv_indices, bm.full_kv_num_blocks, bm.full_kv_indices]
            # A kernel of wider Q tiles (tile_q 192) reads the mask per tile.
            tile = (store.metadata(by_name[name])["spec"].get("block_size") or [128])[0]
            if tile != bm.BLOCK_SIZE[0]:
                lists = retile_q(lists, bm.BLOCK_SIZE[0], tile, M)
            args.update(zip(("kv_num_blocks", "kv_indices", "full_kv_num_blocks",
                             "full_kv_indices"), lists))
        caps = torch.load(os.path.join(artifacts, f"{name}.captures.pt"))
        for i, c in enumerate(caps):
            args[f"capture{i}"] = c.to(dev)
        # Reads of captured tensors the compiler could not bound (t5_bias's
        # bucket table) report out-of-bounds indices here: it must stay 0.
        for a in store.metadata(by_name[name])["arguments"]:
            if a["name"] == "index_report":
                args["index_report"] = torch.zeros(a["shape"], dtype=getattr(torch, a["dtype"]),
                                                   device=dev)
        # Poisoned outputs: every element must be written.
        args["out"] = torch.full((B, Hq, M, v.shape[-1]), float("nan"), device=dev, dtype=q.dtype)
        check = name.startswith("check")
        if check:
            args["lse"] = torch.full((B, Hq, M), float("nan"), device=dev)
        row = {"case": name, "variant": variant, "B": B, "Hq": Hq, "Hkv": Hkv, "M": M,
               "N": N, "D": D, "dtype": dt, "options": over, "density": density}
        (results["checks"] if check else results["bench"]).append(row)
        try:
            kernel = store.get(by_name[name])
            if name in tails:  # flex_attention's tail split (flexattn_runtime.splitkv)
                kernel = _tail_split(kernel, store.get(tails[name]["key"]), tails[name]["rows"])
                row["tail_rows"] = tails[name]["rows"]
            t0 = time.perf_counter()
            kernel(**args)
            torch.cuda.synchronize()
            row["first_call_s"] = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - report and go on
            row["error"] = f"{type(e).__name__}: {e}"
            print(name, "ERROR", row["error"], flush=True)
            save()
            continue
        out = args["out"]
        if "index_report" in args:
            row["index_report_clean"] = not bool(args["index_report"].any())
        if ours_only:
            row["ok"] = not bool(torch.isnan(out).any()) and (
                not check or not bool(torch.isnan(args["lse"]).any()))
            print(f"{name:34s} written={row['ok']}", flush=True)
        elif check:
            _check(row, out, args["lse"], q, k, v, score_mod, bm, Hq != Hkv)
            row["ok"] = row["ok"] and row.get("index_report_clean", True)
            print(f"{name:34s} rel_err={row['rel_err']:.2e} max_abs={row['max_abs_err']:.2e} "
                  f"lse_err={row['lse_max_abs_err']:.2e} ok={row['ok']}", flush=True)
        else:
            flops = 2 * B * Hq * M * N * (D + v.shape[-1]) * density
            ms = timeit(lambda: kernel(**args))
            row.update(ms=ms, tflops=flops / ms / 1e9, **POWER)
            target = over.get("target", "sm_90a")
            # Peers for cases with default compile options (a case's mask
            # block size and value head dim are the peers' inputs too).
            plain = {k: v for k, v in over.items()
                     if k != "target" and k not in PEER_INPUTS} == DEFAULT
            for p in [p for p in peer.names if plain and p in PEERS_OF[target]]:
                try:
                    fn = peer.call(p, q, k, v, score_mod, bm, variant)
                    if fn is None:
                        continue
                    t0 = time.perf_counter()
                    ref = fn()
                    torch.cuda.synchronize()
                    row[f"{p}_first_call_s"] = time.perf_counter() - t0
                    row[f"{p}_max_abs_diff"] = float((out.float() - ref.float()).abs().max())
                    pms = timeit(fn)
                    row.update({f"{p}_ms": pms, f"{p}_tflops": flops / pms / 1e9,
                                **{f"{p}_{k}": v for k, v in POWER.items()}})
                except Exception as e:  # noqa: BLE001
                    row[f"{p}_error"] = f"{type(e).__name__}: {e}"[:300]
            print(f"{name:30s} ours {row['tflops']:6.1f} TF/s ({ms:.3f} ms)  " + "  ".join(
                f"{p} {row.get(f'{p}_tflops', float('nan')):6.1f}" for p in peer.names), flush=True)
        save()
    save()


def halves_cli(compile_fn, run_fn, run_options: tuple = ()) -> None:
    """The command line of a bench script in two halves of its own:
    ``compile --out DIR`` (here) calls ``compile_fn(DIR)``, ``run --artifacts
    DIR --json FILE`` (on the GPU) ``run_fn(DIR, FILE, **options)``, with
    ``run_options`` as (flag, default) pairs (bench/aux_check.py, bench/wave_tail.py)."""
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("compile").add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--artifacts", required=True)
    r.add_argument("--json", required=True)
    for flag, default in run_options:
        r.add_argument(flag, type=type(default), default=default)
    a = ap.parse_args()
    if a.cmd == "compile":
        os.makedirs(a.out, exist_ok=True)
        compile_fn(a.out)
    else:
        names = [flag.lstrip("-").replace("-", "_") for flag, _ in run_options]
        run_fn(a.artifacts, a.json, **{n: getattr(a, n) for n in names})


def main(compile_fn=None, run_fn=None, reps: int = 30, peers: str = "triton,cudnn,fa4") -> None:
    """The compile/run command line (bench/gpu_backward.py brings its own halves)."""
    compile_fn, run_fn = compile_fn or compile_all, run_fn or run_all
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compile")
    c.add_argument("--out", required=True)
    c.add_argument("--only")
    c.add_argument("--device-cc", default="9.0",
                   help="compute capability of the device that runs the artifacts")
    c.add_argument("--backward-mma-sync", action="store_true",
                   help="gpu_backward.py: the backward's GEMMs as mma.sync, not "
                        "sm_90a's wgmma (CompileOptions.backward_wgmma=False)")
    c.add_argument("--backward-no-overlap", action="store_true",
                   help="gpu_backward.py: a chunk's MMAs and element math in turn "
                        "(CompileOptions.backward_overlap=False)")
    c.add_argument("--backward-atomic-dq", action="store_true",
                   help="gpu_backward.py: dq added into f32 by the dk/dv tiles "
                        "(CompileOptions.backward_atomic_dq=True)")
    r = sub.add_parser("run")
    r.add_argument("--artifacts", required=True)
    r.add_argument("--json", required=True)
    r.add_argument("--only", help="comma-separated substrings of case names (=name: exactly)")
    r.add_argument("--reps", type=int, default=reps)
    r.add_argument("--peers", default=peers)
    r.add_argument("--ours-only", action="store_true")
    r.add_argument("--label", default="", help="recorded in the JSON (e.g. the commit)")
    r.add_argument("--timing", choices=("call", "queued", "sustained"), default="call",
                   help="call: events around each call on an idle GPU (host launch time "
                        "included); queued: a spin kernel first, the device time alone; "
                        "sustained: the mean of 3 s of back-to-back calls (the card at its "
                        "power limit), with the SM clock and board power sampled")
    a = ap.parse_args()
    global TIMING
    TIMING = getattr(a, "timing", "call")
    if a.cmd == "compile":
        os.makedirs(a.out, exist_ok=True)
        extra = {"backward_wgmma": False} if a.backward_mma_sync else {}
        if a.backward_atomic_dq:
            extra["backward_atomic_dq"] = True
        if a.backward_no_overlap:
            extra["backward_overlap"] = False
        compile_fn(a.out, a.only, tuple(int(x) for x in a.device_cc.split(".")), **extra)
    else:
        run_fn(a.artifacts, a.json, a.only, a.reps, [p for p in a.peers.split(",") if p],
                a.ours_only, a.label)


if __name__ == "__main__":
    main()
