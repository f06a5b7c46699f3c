"""The GPU decode kernel (split-KV, GQA-packed; docs/inference.md) on the
H100/H200: correctness against torch's flex_attention on the same GPU, and
decode speed (GB/s of K+V read) beside SDPA cuDNN, SDPA FLASH_ATTENTION,
torch flex's Triton backend and (when flash-attn-4 is importable) its FA4
backend, in one process, with the card's device-to-device copy bandwidth.

  compile (here, no GPU; needs flexattn_mlir):
      python bench/gpu_decode.py compile --out artifacts/decode
  run (on the GPU; needs only torch + flexattn_runtime):
      python bench/gpu_decode.py run --artifacts artifacts/decode --json $OUT/decode.json \\
          [--only check] [--peers triton,cudnn,flash,fa4]

Checks: GQA 4:1 and 8:1, M = 1, 4, 64, causal from each sequence's offset,
a per-sequence length mask (on every tile, and as a block mask of one row
per sequence), ALiBi, with lse; one sequence of the batch is empty (zeros
and -inf, as torch). Passing: output relative error < 2e-2 against torch's
float32 flex_attention on the same inputs, lse within 5e-2 where finite,
-inf in the same places, every output element written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_suite  # noqa: E402  (artifact writing, timing)

# (name, variant, B, Hq, Hkv, M, N, D, dtype)
CHECKS = [
    ("check_causal_offset_g4_m1", "causal_offset", 3, 8, 2, 1, 1000, 128, "bfloat16"),
    ("check_alibi_causal_offset_g4_m4", "alibi_causal_offset", 3, 8, 2, 4, 1000, 128, "bfloat16"),
    ("check_length_g4_m64", "length", 3, 8, 2, 64, 1000, 128, "bfloat16"),
    ("check_length_g8_m1_f16_d64", "length", 3, 16, 2, 1, 1000, 64, "float16"),
    ("check_causal_offset_g8_m4", "causal_offset", 3, 16, 2, 4, 1000, 128, "bfloat16"),
    ("check_alibi_causal_offset_g8_m64", "alibi_causal_offset", 3, 16, 2, 64, 1000, 128,
     "bfloat16"),
    ("check_length_blocks_g8_m1", "length_blocks", 3, 16, 2, 1, 1000, 128, "bfloat16"),
    ("check_alibi_length_blocks_g4_m4_f16", "alibi_length_blocks", 3, 8, 2, 4, 1000, 128,
     "float16"),
]
# The issue's decode shape: bf16, B = 8, Hq = 32, Hkv = 8, D = 128, one row.
BENCH = [
    ("bench_decode_n8192", "full", 8, 32, 8, 1, 8192, 128, "bfloat16"),
    ("bench_decode_n32768", "full", 8, 32, 8, 1, 32768, 128, "bfloat16"),
]
# Checks also run with the other tilings (names + "_kv128", "_s3").
CHECK_TILINGS = [CHECKS[1], CHECKS[5], CHECKS[7]]
# Other tilings of the same kernel timed beside the default (64-column KV
# tiles, 2 stages: 80 KiB of shared memory, two CTAs per SM): 128-column
# tiles (one CTA per SM, half the splits), and 3 stages.
VARIANTS = {"kv128": {"tile_kv": 128}, "s3": {"stages": 3}}
# The bench shapes over a paged cache (flexattn_mlir.PagedAttention, pages of
# PAGE tokens handed out to the sequences in turn, so a sequence's pages are
# spread over the cache), timed beside the contiguous cache.
PAGE = 128
PAGED = [(c[0].replace("bench_decode", "bench_paged"), "paged", *c[2:]) for c in BENCH]
# And the contiguous cache under the same logical block mask (torch's
# create_block_mask of the paged case's mask_mod before convert_logical_block_mask:
# partial blocks, its mask_mod run per score): what paging adds to it is
# the page table, read by the converted mask_mod.
LOGICAL = [(c[0].replace("bench_decode", "bench_logical"), "logical", *c[2:]) for c in BENCH]
# Other builds of the paged and logical kernels timed beside them (names +
# "_nopf", "_nohoist"): without loading the block indices and page entries
# iterations ahead (CompileOptions.prefetch_loads; nor the loads before
# the KV loop while Q is copied), and without the latter only
# (CompileOptions.hoist_loads). 3 stages ran 0.96-0.98x of 2 (docs/inference.md).
MASKED_VARIANTS = {"nopf": {"prefetch_loads": False}, "nohoist": {"hoist_loads": False}}


def case_tensors(case, dev: str):
    """The captured tensors' values of a case: per-sequence lengths (the
    last one 0), the queries' offsets, ALiBi slopes."""
    import torch

    _, _, B, Hq, _, M, N, _, _ = case
    lengths = torch.tensor([N, N // 3] + [0] * (B - 2), dtype=torch.int32, device=dev)[:B]
    slopes = torch.exp2(-8.0 * torch.arange(1, Hq + 1, device=dev) / Hq)
    return lengths, lengths - M, slopes


def case_mods(variant: str, lengths, offset, slopes):
    """(score_mod, mask_mod) of a variant over the case's tensors."""
    def causal_offset(b, h, q_idx, kv_idx):
        return (q_idx + offset[b] >= kv_idx) & (kv_idx < lengths[b])

    def length(b, h, q_idx, kv_idx):
        return kv_idx < lengths[b]

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx - offset[b])

    score = alibi if variant.startswith("alibi") else None
    mask = {"causal_offset": causal_offset, "alibi_causal_offset": causal_offset,
            "length": length, "length_blocks": length, "alibi_length_blocks": length,
            "full": None}[variant]
    return score, mask


def _torch_block_mask(case, mask_mod, dev):
    from torch.nn.attention.flex_attention import create_block_mask

    _, variant, B, _, _, M, N, _, _ = case
    if not variant.endswith("blocks"):
        return None
    return create_block_mask(mask_mod, B, None, M, N, device=dev)


def compile_all(out: str, only: str | None) -> None:
    import torch

    import flexattn_mlir as fm
    from flexattn_mlir.execution import decode
    from flexattn_mlir.execution.attention import build_spec
    from flexattn_mlir.masks.block_mask import BlockMask

    os.makedirs(out, exist_ok=True)
    items, manifest = [], {}
    cases = CHECKS + BENCH + [(f"{c[0]}_{v}", *c[1:]) for c in BENCH + CHECK_TILINGS
                              for v in VARIANTS]
    for case in cases:
        name, variant, B, Hq, Hkv, M, N, D, dt = case
        if only and not any(o in name for o in only.split(",")):
            continue
        over = VARIANTS.get(name.rsplit("_", 1)[-1], {})
        score_mod, mask_mod = case_mods(variant, *case_tensors(case, "cpu"))
        score, mask, captures, q, kv, _ = gpu_suite.captured_case(score_mod, mask_mod,
                                                                 (*case, {}))
        tbm = _torch_block_mask(case, mask_mod, "cpu")
        bm = BlockMask.from_torch(tbm) if tbm is not None else None
        # flex_attention's own choice for this shape on an H200 (132 SMs).
        opts = decode.resolve(fm.CompileOptions(target="sm_90a", **over), q, kv, kv, bm)
        assert opts.decode, name
        spec = build_spec(q, kv, kv, score_mod=score and score.ir, mask_mod=mask and mask.ir,
                          block_mask=bm, captures=captures, scale=1.0 / math.sqrt(D),
                          return_lse=name.startswith("check"), name=name,
                          check_indices=False)
        items.append((name, spec, opts))
        torch.save([c.contiguous() for c in captures], os.path.join(out, f"{name}.captures.pt"))
        manifest[name] = {"case": list(case), "splits": opts.splits,
                          "pack_heads": opts.pack_heads, "options": over}
    for cases, build in ((PAGED, _compile_paged), (LOGICAL, _compile_logical)):
        for case in cases:
            if only and not any(o in case[0] for o in only.split(",")):
                continue
            items.append(build(case, out, manifest, {}))
            for v, over in MASKED_VARIANTS.items():
                items.append(build((f"{case[0]}_{v}", *case[1:]), out, manifest, over))
    gpu_suite.write_artifacts(items, manifest, out)


def paged_cache(B: int, N: int, page: int, device: str):
    """A ``flexattn_mlir.PagedAttention`` with room for B sequences of N
    tokens, its pages handed out one per sequence in turn (so each
    sequence's pages are spread over the whole cache, as in a server)."""
    import torch

    import flexattn_mlir as fm

    cache = fm.PagedAttention(B * N // page, page, B, device=device)
    for block in range(N // page):
        for b in range(B):
            cache.reserve(torch.tensor(b), torch.tensor((block + 1) * page))
    return cache


def _masked_decode_spec(case, bm, kv, out: str, over: dict):
    """The sm_90a decode kernel's spec and options (``over``: CompileOptions
    fields) for a bench case under the block mask ``bm`` (its mask_mod's
    captures saved beside it); ``kv`` the K/V tensor when it is not the
    case's own."""
    import torch

    import flexattn_mlir as fm
    from flexattn_mlir.execution import decode
    from flexattn_mlir.execution.attention import build_spec

    name, D = case[0], case[7]
    _, mask, captures, q, case_kv, _ = gpu_suite.captured_case(None, bm.mask_mod, (*case, {}))
    kv = case_kv if kv is None else kv
    opts = decode.resolve(fm.CompileOptions(target="sm_90a", **over), q, kv, kv, bm)
    assert opts.decode and opts.pack_heads, name
    spec = build_spec(q, kv, kv, score_mod=None, mask_mod=mask.ir, block_mask=bm,
                      captures=captures, scale=1.0 / math.sqrt(D), return_lse=False,
                      name=name, check_indices=False)
    torch.save([c.contiguous() for c in captures], os.path.join(out, f"{name}.captures.pt"))
    return spec, opts


def _compile_paged(case, out: str, manifest: dict, over: dict):
    """A paged bench case: the cache, its page table and block mask are made
    here (the run needs no flexattn_mlir) and saved beside the kernel."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, noop_mask

    name, _, B, Hq, Hkv, M, N, D, dt = case
    cache = paged_cache(B, N, PAGE, "cpu")
    pages = cache.n_pages
    logical = create_block_mask(noop_mask, B, None, M, N, BLOCK_SIZE=PAGE, device="cpu")
    bm = cache.convert_logical_block_mask(logical)
    kv = torch.empty(1, Hkv, pages * PAGE, D, dtype=getattr(torch, dt), device="meta")
    spec, opts = _masked_decode_spec(case, bm, kv, out, over)
    torch.save({"page_table": cache.page_table.clone(),
                **{n: getattr(bm, n).to(torch.int32).contiguous() for n in _MASK_FIELDS}},
               os.path.join(out, f"{name}.paged.pt"))
    manifest[name] = {"case": list(case), "splits": opts.splits, "pack_heads": True,
                      "options": over, "pages": pages, "page_size": PAGE}
    return name, spec, opts


def _compile_logical(case, out: str, manifest: dict, over: dict):
    """The contiguous cache under the paged case's logical block mask (its
    fields saved beside the kernel)."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, noop_mask

    from flexattn_mlir.masks.block_mask import BlockMask

    name, _, B, Hq, Hkv, M, N, D, dt = case
    bm = BlockMask.from_torch(create_block_mask(noop_mask, B, None, M, N, BLOCK_SIZE=PAGE,
                                                device="cpu"))
    spec, opts = _masked_decode_spec(case, bm, None, out, over)
    torch.save({n: getattr(bm, n).to(torch.int32).contiguous() for n in _MASK_FIELDS},
               os.path.join(out, f"{name}.logical.pt"))
    manifest[name] = {"case": list(case), "splits": opts.splits, "pack_heads": True,
                      "options": over}
    return name, spec, opts


# -- run (on the GPU) ---------------------------------------------------------

_MASK_FIELDS = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices")

def _ours(store, by_name, name, args, prepared: bool = False):
    """A call of kernel `name` on `args`: validated (`Kernel.__call__`, every
    tensor checked per call), or with `prepared` as flex_attention's call
    plans launch at a cache hit (validated once here, then the
    `PreparedLaunch`: no per-call checks, whose cost grows with the
    arguments: the block mask's four and the page table's)."""
    from flexattn_runtime.splitkv import run_split

    kernel = store.get(by_name[name])
    if not prepared:
        return lambda: run_split(kernel, args)
    run_split(kernel, args)
    launch = kernel.prepare()
    return lambda: run_split(kernel, args, launch)


def _args(artifacts, case, q, k, v, tbm, dev):
    import torch

    name, _, B, Hq, _, M, _, D, _ = case
    nan = float("nan")
    args = {"q": q, "k": k, "v": v,
            "out": torch.full((B, Hq, M, D), nan, device=dev, dtype=q.dtype)}
    if name.startswith("check"):
        args["lse"] = torch.full((B, Hq, M), nan, device=dev)
    if tbm is not None:
        for n in _MASK_FIELDS:
            args[n] = getattr(tbm, n).to(torch.int32).contiguous()
    for i, c in enumerate(torch.load(os.path.join(artifacts, f"{name}.captures.pt"))):
        args[f"capture{i}"] = c.to(dev)
    return args


def _paged_args(artifacts, name, q, k, v, dev):
    """The arguments of a paged case: ``k``/``v`` ``[B, Hkv, N, D]`` written
    into a ``[1, Hkv, pages * PAGE, D]`` cache at their pages."""
    import torch

    saved = torch.load(os.path.join(artifacts, f"{name}.paged.pt"))
    B, Hkv, N, D = k.shape
    table = saved["page_table"].to(dev)
    pos = torch.arange(N, device=dev)
    addr = (table[:, pos // PAGE] * PAGE + pos % PAGE).reshape(-1)
    caches = []
    for x in (k, v):
        cache = torch.zeros(1, Hkv, table.shape[1] * PAGE, D, device=dev, dtype=x.dtype)
        cache[0][:, addr] = x.permute(1, 0, 2, 3).reshape(Hkv, B * N, D)
        caches.append(cache)
    args = {"q": q, "k": caches[0], "v": caches[1], "out": torch.full_like(q, float("nan"))}
    for n in _MASK_FIELDS:
        args[n] = saved[n].to(dev)
    for i, c in enumerate(torch.load(os.path.join(artifacts, f"{name}.captures.pt"))):
        args[f"capture{i}"] = c.to(dev)
    return args


def _selected(name: str, only: str | None) -> bool:
    """`only`: None (everything), "check", "bench", or case names."""
    if only in (None, "check", "bench"):
        return only is None or name.startswith(only)
    return any(o in name for o in only.split(","))


def run_checks(store, by_name, artifacts, only, results, ours_only=False) -> None:
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    dev = "cuda"
    for case in CHECKS + [(f"{c[0]}_{v}", *c[1:]) for c in CHECK_TILINGS for v in VARIANTS]:
        name, variant, B, Hq, Hkv, M, N, D, dt = case
        if name not in by_name or not _selected(name, only):
            continue
        row = {"case": name, "variant": variant, "B": B, "Hq": Hq, "Hkv": Hkv, "M": M, "N": N,
               "D": D, "dtype": dt, "splits": results["manifest"][name]["splits"]}
        results["checks"].append(row)
        try:
            lengths, offset, slopes = case_tensors(case, dev)
            score_mod, mask_mod = case_mods(variant, lengths, offset, slopes)
            gen = torch.Generator(device=dev).manual_seed(1)
            dtype = getattr(torch, dt)
            q = torch.randn(B, Hq, M, D, device=dev, dtype=dtype, generator=gen)
            k = torch.randn(B, Hkv, N, D, device=dev, dtype=dtype, generator=gen)
            v = torch.randn(B, Hkv, N, D, device=dev, dtype=dtype, generator=gen)
            tbm = _torch_block_mask(case, mask_mod, dev)
            args = _args(artifacts, case, q, k, v, tbm, dev)
            _ours(store, by_name, name, args)()
            torch.cuda.synchronize()
            if ours_only:  # under compute-sanitizer: every element written
                row["ok"] = not bool(torch.isnan(args["out"]).any() or
                                     torch.isnan(args["lse"]).any())
                print(f"{name:40s} ours only ok={row['ok']}", flush=True)
                continue
            # torch's reference: every tile masked (a block mask only skips).
            ref_bm = _torch_block_mask(case, mask_mod, dev) if mask_mod is not None else None
            if ref_bm is None and mask_mod is not None:
                from torch.nn.attention.flex_attention import create_block_mask

                ref_bm = create_block_mask(mask_mod, B, None, M, N, device=dev)
            ref, ref_lse = flex_attention(q.float(), k.float(), v.float(), score_mod=score_mod,
                                          block_mask=ref_bm, enable_gqa=True, return_lse=True)
        except Exception as e:  # noqa: BLE001 - report and go on
            row["error"] = f"{type(e).__name__}: {e}"[:500]
            print(name, "ERROR", row["error"], flush=True)
            continue
        out, lse = args["out"].float(), args["lse"]
        row["rel_err"] = float((out - ref).norm() / ref.norm())
        row["nan"] = bool(torch.isnan(out).any() or torch.isnan(lse).any())
        fin = torch.isfinite(ref_lse)
        row["lse_max_abs_err"] = float((lse[fin] - ref_lse[fin]).abs().max()) if fin.any() else 0.0
        row["lse_inf_match"] = bool(torch.equal(torch.isfinite(lse), fin))
        empty = lengths == 0
        row["empty_rows_ok"] = bool((out[empty] == 0).all()) and bool(
            torch.isneginf(lse[empty]).all())
        row["ok"] = (row["rel_err"] < 2e-2 and not row["nan"] and row["lse_inf_match"]
                     and row["lse_max_abs_err"] < 5e-2 and row["empty_rows_ok"])
        print(f"{name:40s} rel_err={row['rel_err']:.2e} lse_err={row['lse_max_abs_err']:.2e} "
              f"ok={row['ok']}", flush=True)


class DecodePeers:
    """The peers of a decode step, each a no-argument callable: SDPA's cuDNN
    and FLASH_ATTENTION backends (GQA through enable_gqa; K/V repeated per
    query head where a backend refuses it, noted), torch flex's Triton and
    FA4 backends (torch.compile'd, enable_gqa)."""

    def __init__(self, names):
        import torch
        from torch.nn.attention.flex_attention import flex_attention

        self.names, self.fns, self.notes = names, {}, {}
        torch._dynamo.config.cache_size_limit = 64
        if "triton" in names:
            self.fns["triton"] = torch.compile(flex_attention, dynamic=False)
        if "fa4" in names:
            from functools import partial

            self.fns["fa4"] = torch.compile(
                partial(flex_attention, kernel_options={"BACKEND": "FLASH"}), dynamic=False)

    def call(self, name, q, k, v):
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel

        if name in ("cudnn", "flash"):
            backend = (SDPBackend.CUDNN_ATTENTION if name == "cudnn"
                       else SDPBackend.FLASH_ATTENTION)
            sdpa = torch.nn.functional.scaled_dot_product_attention

            def gqa():
                with sdpa_kernel(backend):
                    return sdpa(q, k, v, enable_gqa=True)
            try:
                gqa()
                return gqa
            except RuntimeError:
                g = q.shape[1] // k.shape[1]
                kr, vr = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
                self.notes[name] = "K/V repeated per query head (enable_gqa refused)"

                def repeated():
                    with sdpa_kernel(backend):
                        return sdpa(q, kr, vr)
                return repeated
        fn = self.fns[name]
        return lambda: fn(q, k, v, enable_gqa=True)


def copy_bandwidth(reps: int) -> float:
    """GB/s of a 2 GiB device-to-device copy (bytes read + written)."""
    import torch

    src = torch.randn(2 ** 29, device="cuda")
    dst = torch.empty_like(src)
    ms = gpu_suite.median_ms(lambda: dst.copy_(src), reps)
    return 2 * src.numel() * 4 / ms / 1e6


def throughput_ms(fn, calls: int = 20) -> float:
    """Milliseconds per call of `calls` back-to-back calls (host overhead
    overlapped by the previous call's GPU work)."""
    import torch

    fn()
    torch.cuda.synchronize()
    return gpu_suite.back_to_back_ms(fn, calls)


def paired_ms(fns: dict, rounds: int) -> dict:
    """Median milliseconds of single calls of each of ``fns``, called in
    turn for ``rounds`` rounds (each call event-timed and waited for): the
    implementations' calls are spread over the same seconds, so a clock
    change between them (the card's clocks move while single calls leave it
    idle half the time) hits all of them alike, and their ratio is steadier
    than that of medians taken one after the other."""
    import torch

    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(rounds):
        for k, fn in fns.items():
            s.record()
            fn()
            e.record()
            e.synchronize()
            times[k].append(s.elapsed_time(e))
    return {k: sorted(t)[len(t) // 2] for k, t in times.items()}


def run_bench(store, by_name, artifacts, only, reps, peers, results) -> None:
    import torch

    dev = "cuda"
    results["copy_gbps"] = copy_bandwidth(reps)
    print(f"copy bandwidth {results['copy_gbps']:.0f} GB/s", flush=True)
    p = DecodePeers(peers)
    for case in BENCH:
        name, variant, B, Hq, Hkv, M, N, D, dt = case
        if name not in by_name or not _selected(name, only):
            continue
        dtype = getattr(torch, dt)
        gen = torch.Generator(device=dev).manual_seed(0)
        q = torch.randn(B, Hq, M, D, device=dev, dtype=dtype, generator=gen)
        k = torch.randn(B, Hkv, N, D, device=dev, dtype=dtype, generator=gen)
        v = torch.randn(B, Hkv, N, D, device=dev, dtype=dtype, generator=gen)
        kv_bytes = 2 * k.numel() * k.element_size()
        args = _args(artifacts, case, q, k, v, None, dev)
        row = {"case": name, "B": B, "Hq": Hq, "Hkv": Hkv, "M": M, "N": N, "D": D, "dtype": dt,
               "kv_bytes": kv_bytes, "splits": results["manifest"].get(name, {}).get("splits")}
        results["bench"].append(row)
        fns = {"ours": _ours(store, by_name, name, args, True)}
        paged = name.replace("bench_decode", "bench_paged")
        masked_args = {}
        if paged in by_name:
            paged_args = _paged_args(artifacts, paged, q, k, v, dev)
            fns["ours_paged"] = _ours(store, by_name, paged, paged_args, True)
            masked_args["paged"] = paged_args
            row["ours_paged_splits"] = results["manifest"][paged]["splits"]
        logical = name.replace("bench_decode", "bench_logical")
        if logical in by_name:
            logical_args = _args(artifacts, (logical, *case[1:]), q, k, v, None, dev)
            saved = torch.load(os.path.join(artifacts, f"{logical}.logical.pt"))
            logical_args.update({n: saved[n].to(dev) for n in _MASK_FIELDS})
            fns["ours_logical"] = _ours(store, by_name, logical, logical_args, True)
            masked_args["logical"] = logical_args
        for impl, masked in (("paged", paged), ("logical", logical)):
            for build in MASKED_VARIANTS:  # the paged and logical kernels' other builds
                if f"ours_{impl}" in fns and f"{masked}_{build}" in by_name:
                    own = dict(masked_args[impl], out=torch.full_like(q, float("nan")))
                    fns[f"ours_{impl}_{build}"] = _ours(store, by_name, f"{masked}_{build}", own,
                                                        True)
                    masked_args[f"{impl}_{build}"] = own
        # The contiguous and paged kernels through Kernel.__call__ (every
        # argument validated per call: bench runs before 2026-12-02's chain).
        fns["ours_validated"] = _ours(store, by_name, name, args)
        if "ours_paged" in fns:
            own = masked_args["paged_validated"] = dict(paged_args,
                                                        out=torch.full_like(q, float("nan")))
            fns["ours_paged_validated"] = _ours(store, by_name, paged, own)
        for tiling in VARIANTS:  # the same kernel with other tilings
            if f"{name}_{tiling}" in by_name:
                fns[f"ours_{tiling}"] = _ours(store, by_name, f"{name}_{tiling}", dict(args), True)
                row[f"ours_{tiling}_splits"] = results["manifest"][f"{name}_{tiling}"]["splits"]
        for peer in peers:
            try:
                t0 = time.perf_counter()
                fns[peer] = p.call(peer, q, k, v)
                fns[peer]()
                torch.cuda.synchronize()
                row[f"{peer}_first_call_s"] = round(time.perf_counter() - t0, 2)
            except Exception as e:  # noqa: BLE001
                row[f"{peer}_error"] = f"{type(e).__name__}: {e}"[:300]
                fns.pop(peer, None)
        fns["ours"]()
        ref = fns.get("flash") or fns.get("cudnn")
        if ref is not None:
            row["ours_maxdiff_vs_sdpa"] = float((args["out"].float() - ref().float()).abs().max())
        if "ours_paged" in fns:  # the same K/V through the pages
            fns["ours_paged"]()
            row["paged_maxdiff_vs_contiguous"] = float(
                (paged_args["out"].float() - args["out"].float()).abs().max())
        for impl in [i for i in fns if i.startswith(("ours_paged_", "ours_logical_"))]:
            fns[impl]()  # every build of the kernel gives the contiguous cache's output
            row[f"{impl[5:]}_maxdiff_vs_contiguous"] = float(
                (masked_args[impl[5:]]["out"].float() - args["out"].float()).abs().max())
        # Interleaved rounds, best of 3 medians each (the same process).
        for rnd in range(3):
            for impl, fn in fns.items():
                ms = gpu_suite.median_ms(fn, reps)
                tput = throughput_ms(fn)
                row[f"{impl}_ms"] = min(row.get(f"{impl}_ms", ms), ms)
                row[f"{impl}_loop_ms"] = min(row.get(f"{impl}_loop_ms", tput), tput)
        for impl in fns:
            row[f"{impl}_gbps"] = kv_bytes / row[f"{impl}_ms"] / 1e6
            row[f"{impl}_loop_gbps"] = kv_bytes / row[f"{impl}_loop_ms"] / 1e6
        for impl in fns:
            if not impl.startswith("ours"):
                row[f"ours_vs_{impl}"] = row[f"{impl}_ms"] / row["ours_ms"]
                row[f"ours_vs_{impl}_loop"] = row[f"{impl}_loop_ms"] / row["ours_loop_ms"]
        row["ours_of_copy"] = row["ours_gbps"] / results["copy_gbps"]
        if "ours_paged" in fns:
            row["paged_vs_contiguous"] = row["ours_ms"] / row["ours_paged_ms"]
            row["paged_vs_contiguous_loop"] = row["ours_loop_ms"] / row["ours_paged_loop_ms"]
            row["paged_vs_contiguous_validated"] = (row["ours_validated_ms"]
                                                    / row["ours_paged_validated_ms"])
        for impl in [i for i in fns if i.startswith(("ours_paged_", "ours_logical_"))]:
            base = impl.rsplit("_", 1)[0]  # this build beside the default one
            row[f"{base}_vs_{impl.rsplit('_', 1)[1]}"] = row[f"{impl}_ms"] / row[f"{base}_ms"]
            if base == "ours_paged":
                row[f"paged_{impl.rsplit('_', 1)[1]}_vs_contiguous"] = (row["ours_ms"]
                                                                      / row[f"{impl}_ms"])
        if "ours_paged" in fns:
            # The acceptance ratio: single calls of the contiguous and paged
            # kernels (and the logical mask's) in turn, 10 x reps rounds.
            pair = paired_ms({k: fns[k] for k in ("ours", "ours_paged", "ours_logical")
                              if k in fns}, 10 * reps)
            for impl, ms in pair.items():
                row[f"{impl}_paired_ms"] = ms
            row["paged_vs_contiguous_paired"] = pair["ours"] / pair["ours_paged"]
            if "ours_logical" in pair:
                row["logical_vs_contiguous_paired"] = pair["ours"] / pair["ours_logical"]
        if "ours_paged" in fns and "ours_logical" in fns:
            # the same logical mask on both: what the pages cost
            row["paged_vs_logical"] = row["ours_logical_ms"] / row["ours_paged_ms"]
            row["paged_vs_logical_loop"] = (row["ours_logical_loop_ms"]
                                            / row["ours_paged_loop_ms"])
            fns["ours_logical"]()
            row["paged_maxdiff_vs_logical"] = float(
                (paged_args["out"].float() - logical_args["out"].float()).abs().max())
        row["notes"] = dict(p.notes)
        print(name, " ".join(f"{i}={row[f'{i}_gbps']:.0f}GB/s({row[f'{i}_loop_gbps']:.0f})"
                             for i in fns), flush=True)
        if "paged_vs_contiguous_paired" in row:
            print(f"{name} paged/contiguous: single {row['paged_vs_contiguous']:.3f} "
                  f"paired {row['paged_vs_contiguous_paired']:.3f} "
                  f"back to back {row['paged_vs_contiguous_loop']:.3f}", flush=True)


def warm_up(seconds: float) -> None:
    """Keeps the GPU busy for ``seconds`` (bf16 matmuls) so its clocks have
    ramped up before the first timed call: single decode calls of ~100 us
    timed right after start-up ran up to 25 % slow."""
    import torch

    if seconds <= 0:
        return
    x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            x = (x @ x).clamp_(-1, 1)
        torch.cuda.synchronize()


def run_all(artifacts: str, out_json: str, only: str | None, reps: int, peers,
            ours_only: bool = False, warmup_s: float = 0.0) -> None:
    import torch

    from flexattn_runtime import ArtifactStore

    torch.backends.cuda.matmul.allow_tf32 = False
    store = ArtifactStore(artifacts)
    by_name = {store.metadata(key)["spec"]["name"]: key for key in store.keys()}
    with open(os.path.join(artifacts, "cases.json")) as f:
        manifest = json.load(f)["cases"]
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "label": os.environ.get("LABEL", ""), "manifest": manifest,
               "checks": [], "bench": []}
    try:
        run_checks(store, by_name, artifacts, only, results, ours_only)
        if any(_selected(c[0], only) for c in BENCH):
            warm_up(warmup_s)
            run_bench(store, by_name, artifacts, only, reps, peers, results)
    finally:
        with open(out_json, "w") as f:
            json.dump(results, f, indent=1)
    ok = sum(bool(r.get("ok")) for r in results["checks"])
    print(f"checks ok {ok}/{len(results['checks'])}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compile")
    c.add_argument("--out", required=True)
    c.add_argument("--only", default=None)
    r = sub.add_parser("run")
    r.add_argument("--artifacts", required=True)
    r.add_argument("--json", required=True)
    r.add_argument("--only", default=None, help="check, bench, or case names (comma-separated)")
    r.add_argument("--reps", type=int, default=30)
    r.add_argument("--peers", default="triton,cudnn,flash,fa4")
    r.add_argument("--ours-only", action="store_true", help="checks without the reference")
    r.add_argument("--warmup-s", type=float, default=4.0,
                   help="seconds of GPU work before the benchmark (clocks ramping up)")
    a = ap.parse_args()
    if a.cmd == "compile":
        compile_all(a.out, a.only)
    else:
        run_all(a.artifacts, a.json, a.only, a.reps, [p for p in a.peers.split(",") if p],
                a.ours_only, a.warmup_s)


if __name__ == "__main__":
    main()
