"""The GPU decode kernel (docs/inference.md, "The GPU decode kernel"): the
query heads of a KV group packed into one 64-row tile, the KV range split
across CTAs (static splits on the grid), partial rows merged by their lse
after the launch. Compiled to cubins without a GPU (ptxas here: no
spills); the numerics against torch's flex_attention run on a GPU (skipped
here) and in bench/gpu_decode.py on the H200."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask as torch_block_mask
from torch.nn.attention.flex_attention import flex_attention as torch_flex

import flexattn_mlir as fm
from flexattn_mlir import compile_flex_attention, create_block_mask, flex_attention
from flexattn_mlir.compiler import targets
from flexattn_mlir.execution import decode
from test_decode import _alibi, _masks

MMA_SYNC = r"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.(bf16\.bf16|f16\.f16)\.f32"
HAS_GPU = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


def _compile(dtype, D, hq, hkv, m=1, n=4096, B=2, mods=False, **kernel_options):
    """The sm_90a kernel flex_attention would run for a decode call of this
    shape (CPU tensors; an H200's 132 SMs choose the splits)."""
    q = torch.empty(B, hq, m, D, dtype=dtype)
    k, v = torch.empty(B, hkv, n, D, dtype=dtype), torch.empty(B, hkv, n, D, dtype=dtype)
    score_mod = block_mask = None
    if mods:
        lengths = torch.tensor([n, n // 3] + [0] * (B - 2))[:B]
        score_mod = _alibi(torch.rand(hq))
        block_mask = create_block_mask(_masks(lengths, m)["causal_offset"], B, None, m, n)
    return compile_flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask,
                                  enable_gqa=True, return_lse=True, target="sm_90a",
                                  kernel_options=kernel_options or None)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("group", [4, 8])
def test_decode_kernel_compiles_without_spills(dtype, D, group):
    hkv, B, m, n = 2, 2, 1, 4096
    c = _compile(dtype, D, group * hkv, hkv, m=m, n=n, B=B)
    opts, md = c.options, c.metadata
    assert opts.decode and opts.pack_heads and opts.tile_q == 64 and opts.splits >= 1
    assert "splitkv" in c.stage_names()
    res = md["resources"]
    assert res.registers <= 255 and (res.spill_stores, res.spill_loads) == (0, 0), res
    ptx = md["ptx"]
    assert re.search(MMA_SYNC, ptx) and "wgmma" not in ptx
    launch = md["launch"]
    # grid = B x Hkv x splits x packed Q tiles; one band of 4 warps
    assert launch["grid"] == [B * hkv * opts.splits * math.ceil(group * m / 64), 1, 1]
    assert launch["block"] == [128, 1, 1]
    args = {a["name"]: a for a in launch["arguments"]}
    rows = B * group * hkv * m
    assert args["split_out"]["shape"] == [opts.splits, rows * D]
    assert args["split_lse"]["shape"] == [opts.splits, rows]
    assert args["split_out"]["dtype"] == "float32"
    assert launch["shared_mem_bytes"] <= targets.target("sm_90a").max_shared_per_block


def test_decode_kernel_reads_a_shared_cache_in_place():
    """K/V of batch 1 under a query batch of 3 (a paged cache): the decode
    kernel takes the [1, Hkv, N, D] tensors as they are (its rings copy
    batch 0, flexattn-multistage); the prefill kernel's spec expands them
    to the query batch (sm_90a's TMA descriptors are per argument)."""
    q = torch.empty(3, 8, 1, 64, dtype=torch.bfloat16)
    cache = torch.empty(1, 2, 1024, 64, dtype=torch.bfloat16)
    c = compile_flex_attention(q, cache, cache, enable_gqa=True, target="sm_90a")
    assert c.options.decode
    args = {a["name"]: a for a in c.metadata["launch"]["arguments"]}
    assert args["k"]["shape"] == args["v"]["shape"] == [1, 2, 1024, 64]
    assert args["q"]["shape"] == [3, 8, 1, 64]
    res = c.metadata["resources"]
    assert (res.spill_stores, res.spill_loads) == (0, 0), res
    # every K/V copy reads the shared batch: no address term in the batch
    assert "ring.copy" in c["roles"] and "memref<3x2x1024x64xbf16" not in c["roles"]
    prefill = compile_flex_attention(q, cache, cache, enable_gqa=True, target="sm_90a",
                                     kernel_options={"decode": False})
    args = {a["name"]: a for a in prefill.metadata["launch"]["arguments"]}
    assert args["k"]["shape"] == [3, 2, 1024, 64]


def _paged_decode(page, **kernel_options):
    """The sm_90a decode kernel over a paged cache of 4 sequences of 8 pages
    (a no-op logical mask); and the page table's memref type."""
    from torch.nn.attention.flex_attention import noop_mask

    B, hkv, hq, n, D = 4, 2, 8, 8 * page, 128
    cache = fm.PagedAttention(B * n // page, page, B, "cpu")
    for block in range(n // page):
        for b in range(B):
            cache.reserve(torch.tensor(b), torch.tensor((block + 1) * page))
    q = torch.empty(B, hq, 1, D, dtype=torch.bfloat16)
    kc = torch.empty(1, hkv, cache.n_pages * page, D, dtype=torch.bfloat16)
    logical = create_block_mask(noop_mask, B, None, 1, n, BLOCK_SIZE=(128, page))
    c = compile_flex_attention(q, kc, kc, block_mask=cache.convert_logical_block_mask(logical),
                               enable_gqa=True, target="sm_90a",
                               kernel_options=kernel_options or None)
    assert c.options.decode and c.options.tile_kv == 64
    return c, f"memref<{B}x{cache.n_pages}xi64>"


@pytest.mark.parametrize("page", [64, 128])
def test_paged_decode_kernel_reads_the_page_table_once_per_tile(page):
    """The wrapped paged mask_mod reads `physical_to_logical[b, kv // page]`;
    a 64-column KV tile never crosses a page, so after
    flexattn-fold-tile-divisions every score of a tile divides the tile's
    start: one page-table load per KV loop (the masked one) instead of one
    per column a thread holds (16)."""
    c, table = _paged_decode(page)
    loads = [line for line in c.ir["fragments"].splitlines()
             if "memref.load" in line and table in line]
    loops = c.ir["fragments"].count("scf.for")
    assert 1 <= len(loads) <= loops, (len(loads), loops)
    res = c.metadata["resources"]
    assert (res.spill_stores, res.spill_loads) == (0, 0), res


def test_paged_decode_kernel_masks_raw_scores():
    """The decode kernel's launch is marked flexattn.masked_raw_max: the
    paged cache's wrapped mask_mod (its tiles are partial) applies to the
    raw scores, so a masked tile's P takes one fma per element as a full
    tile's (math.fma feeding every exp2 of P), not scale, log2(e) and a
    subtraction. The prefill kernel over the same mask keeps the scaled path."""
    c, _ = _paged_decode(128)
    frags = c.ir["fragments"]
    assert "flexattn.masked_raw_max" in c.ir["fragments"]
    # Both KV loops (partial blocks masked, full blocks not) are fma-fed.
    assert frags.count("math.fma") >= 2 * frags.count("math.exp2") // 3, frags.count("math.fma")
    from torch.nn.attention.flex_attention import noop_mask

    q = torch.empty(1, 2, 300, 64, dtype=torch.bfloat16)
    k = torch.empty(1, 2, 300, 64, dtype=torch.bfloat16)
    bm = create_block_mask(noop_mask, 1, None, 300, 300)
    prefill = compile_flex_attention(q, k, k, block_mask=bm, target="sm_90a")
    assert not prefill.options.decode
    assert "flexattn.masked_raw_max" not in prefill.ir["fragments"]


@pytest.mark.parametrize("prefetch", [None, False])
def test_paged_decode_kernel_loads_the_page_table_a_step_ahead(prefetch):
    """CompileOptions.prefetch_loads (None: on for the decode kernel): the
    masked KV loop loads its block indices and page-table entries iterations
    ahead and carries them (flexattn-lower-to-ampere, passes/PrefetchLoads.h),
    so the loop body reads the table before its first cp.async wait, for a
    later step; the first step's entry is read before the loop. Off: the
    step reads its own entry after the wait (the softmax waits on it)."""
    c, table = _paged_decode(128, **({} if prefetch is None else {"prefetch_loads": prefetch}))
    assert c.options.prefetch_loads is prefetch
    lines = c.ir["kernel"].splitlines()
    loop = next(i for i, line in enumerate(lines) if "scf.for" in line and "iter_args" in line)
    loads = [i for i, line in enumerate(lines) if "memref.load" in line and table in line]
    wait = next(i for i, line in enumerate(lines[loop:], loop) if "cp.async.wait.group" in line)
    in_loop = [i for i in loads if loop < i]
    if prefetch is None:
        assert lines[loop].endswith("i64) {"), lines[loop]  # the entry is carried
        assert loads[0] < loop and loop < in_loop[0] < wait, (loads, loop, wait)
    else:
        assert loads[0] > wait, (loads, loop, wait)
    res = c.metadata["resources"]
    assert res.registers <= 255 and (res.spill_stores, res.spill_loads) == (0, 0), res


@pytest.mark.parametrize("hoist", [None, False])
def test_paged_decode_kernel_reads_the_block_mask_while_q_is_copied(hoist):
    """CompileOptions.hoist_loads (None: as prefetch_loads, on for the
    decode kernel): the block mask's counts, the first block index and page
    entry are read before the Q tile's wait (flexattn-lower-to-ampere,
    passes/PrefetchLoads.h), so the first K/V copy waits on one latency
    (Q's) instead of Q's and then the chain of loads. Off: after it."""
    c, table = _paged_decode(128, **({} if hoist is None else {"hoist_loads": hoist}))
    assert c.options.hoist_loads is hoist
    lines = c.ir["kernel"].splitlines()
    q_wait = next(i for i, line in enumerate(lines) if "cp.async.wait.group" in line)
    loop = next(i for i, line in enumerate(lines) if "scf.for" in line)
    counts = [i for i, line in enumerate(lines[:loop]) if "memref.load" in line
              and "memref<4x1x1xi32>" in line]
    first = [i for i, line in enumerate(lines[:loop]) if "memref.load" in line
             and ("memref<4x1x1x" in line or table in line)]
    assert len(counts) == 2 and len(first) >= 3, (counts, first)
    before = q_wait > max(counts + first)
    assert before if hoist is None else q_wait < min(counts + first), (counts, first, q_wait)
    res = c.metadata["resources"]
    assert res.registers <= 255 and (res.spill_stores, res.spill_loads) == (0, 0), res


@pytest.mark.parametrize("group", [4, 8])
@pytest.mark.parametrize("m", [1, 64])
def test_decode_kernel_with_mods_compiles_without_spills(group, m):
    """ALiBi and causal-from-offset over a per-sequence block mask (one row
    per sequence: read in place by the packed tiles)."""
    c = _compile(torch.bfloat16, 128, group * 2, 2, m=m, n=2048, B=3, mods=True)
    res = c.metadata["resources"]
    assert (res.spill_stores, res.spill_loads) == (0, 0), res
    # the mask's row is read in place: no union built per tile
    assert "packed(" in c.ir["tiled"] and "memref<1x1x1xi32>" not in c.ir["tiled"]


def test_gpu_decode_choice():
    """M <= 64 decodes on a GPU target (packed, splits from the SMs); a
    larger M, decode=False, sinks or max_scores take the prefill kernel."""
    q1 = torch.empty(8, 32, 1, 128, dtype=torch.bfloat16)
    q65 = torch.empty(8, 32, 65, 128, dtype=torch.bfloat16)
    k = torch.empty(8, 8, 8192, 128, dtype=torch.bfloat16)
    opts = fm.CompileOptions(target="sm_90a")
    d = decode.resolve(opts, q1, k, k, None)
    assert d.decode and d.pack_heads and d.tile_q == 64 and d.persistent == 0
    # the decode kernel's 64-column KV tiles (the table's decode_kv_tile):
    # 64 packed tiles on 132 SMs, two 80 KiB CTAs per SM: 4 ranges fill a wave
    assert d.tile_kv == 64
    assert d.splits == decode.gpu_splits(d, q1, k, k, True, 132) == 4
    wide = decode.resolve(fm.CompileOptions(target="sm_90a", tile_kv=128), q1, k, k, None)
    assert wide.tile_kv == 128 and wide.splits == 2  # one 147 KiB CTA per SM
    assert decode.resolve(d, q1, k, k, None) == d  # idempotent
    assert not decode.resolve(opts, q65, k, k, None).decode
    forced = decode.resolve(fm.CompileOptions(target="sm_90a", decode=False), q1, k, k, None)
    assert not forced.decode and forced.tile_q == 128
    assert not decode.resolve(opts, q1, k, k, None, row_stats=True).decode
    one = torch.empty(1, 32, 1, 128, dtype=torch.bfloat16)
    k1 = torch.empty(1, 8, 32768, 128, dtype=torch.bfloat16)
    assert decode.gpu_splits(d, one, k1, k1, True, 132) >= 8  # 8 tiles: many ranges
    # KV ranges are for static GPU kernels (the decode kernel, a tail split's).
    for bad in ({"target": "cpu"}, {"target": "sm_90a", "dynamic": True}):
        with pytest.raises(ValueError, match="splits must be 0"):
            fm.CompileOptions(splits=4, **bad)


def test_gpu_decode_refuses_float32():
    """float32 on a GPU target runs the prefill kernel; forcing the decode
    kernel (bf16/fp16 only) is an error naming the dtype."""
    q = torch.empty(2, 8, 1, 64, dtype=torch.float32)
    k = torch.empty(2, 2, 512, 64, dtype=torch.float32)
    chosen = decode.resolve(fm.CompileOptions(target="sm_90a"), q, k, k, None)
    assert not chosen.decode and not chosen.pack_heads
    for forced in ({"decode": True}, {"pack_heads": True}):
        with pytest.raises(ValueError, match="takes bfloat16 or float16 q/k/v, got torch.float32"):
            decode.resolve(fm.CompileOptions(target="sm_90a", **forced), q, k, k, None)
    assert decode.resolve(fm.CompileOptions(target="cpu"), q, k, k, None).decode  # the CPU decodes
    with pytest.raises(ValueError, match="tile_q must be 64"):
        fm.CompileOptions(target="sm_90a", decode=True, tile_q=128)


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU of compute capability 8.0 or later; "
                                        "bench/gpu_decode.py runs these on the H200")
@pytest.mark.parametrize("group", [4, 8])
@pytest.mark.parametrize("m", [1, 4, 64])
@pytest.mark.parametrize("mask", ["causal_offset", "length"])
@pytest.mark.parametrize("alibi", [False, True])
def test_gpu_decode_matches_torch(group, m, mask, alibi):
    hkv, n, D = 2, 1000, 128
    lengths = torch.tensor([1000, 333, 0], device="cuda")
    B, hq = len(lengths), group * hkv
    q = torch.randn(B, hq, m, D, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(B, hkv, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    mask_mod = _masks(lengths, m)[mask]
    score_mod = _alibi(torch.rand(hq, device="cuda")) if alibi else None
    block_mask = create_block_mask(mask_mod, B, None, m, n, device="cuda")
    out, lse = flex_attention(q, k, v, score_mod=score_mod, enable_gqa=True, return_lse=True,
                              block_mask=block_mask)
    # The same call again is a call plan's hit (its prepared launch, with the
    # split scratch and merge around it): the same result.
    again, again_lse = flex_attention(q, k, v, score_mod=score_mod, enable_gqa=True,
                                      return_lse=True, block_mask=block_mask)
    assert torch.equal(again, out) and torch.equal(again_lse, lse)
    ref, ref_lse = torch_flex(q.float(), k.float(), v.float(), score_mod=score_mod,
                              enable_gqa=True, return_lse=True,
                              block_mask=torch_block_mask(mask_mod, B, None, m, n,
                                                          device="cuda"))
    assert float((out.float() - ref).norm() / ref.norm()) < 2e-2
    fin = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), fin)
    torch.testing.assert_close(lse[fin], ref_lse[fin], atol=5e-2, rtol=0)
    assert torch.all(out[2] == 0) and torch.all(lse[2] == float("-inf"))


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU of compute capability 8.0 or later")
@pytest.mark.parametrize("group", [4, 8])
def test_gpu_paged_decode_matches_torch(group):
    """flexattn_mlir.PagedAttention on CUDA tensors through the decode kernel
    (the shared cache read in place: its rings copy batch 0), against
    torch's PagedAttention + flex."""
    from torch.nn.attention.experimental._paged_attention import PagedAttention as TorchPaged

    hkv, D, page, pages, m = 2, 64, 64, 16, 1
    lengths = torch.tensor([200, 45, 130], device="cuda")
    B, hq = len(lengths), group * hkv
    caches = [tuple(torch.zeros(1, hkv, pages * page, D, device="cuda", dtype=torch.bfloat16)
                    for _ in range(2)) for _ in range(2)]
    ours = fm.PagedAttention(pages, page, B, "cuda")
    theirs = TorchPaged(pages, page, B, "cuda")
    for i, n in enumerate(lengths.tolist()):
        k, v = (torch.randn(1, hkv, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        for paged, (kc, vc) in zip((ours, theirs), caches):
            paged.reserve(torch.tensor(i, device="cuda"), torch.tensor(n, device="cuda"))
            paged.assign(torch.tensor([i], device="cuda"), torch.arange(n, device="cuda")[None],
                         k, v, kc, vc)
    q = torch.randn(B, hq, m, D, device="cuda", dtype=torch.bfloat16)
    causal = _masks(lengths, m)["causal_offset"]
    alibi = _alibi(torch.rand(hq, device="cuda"))
    n_max = int(lengths.max())
    logical = create_block_mask(causal, B, 1, m, n_max, BLOCK_SIZE=(128, page), device="cuda")
    out = flex_attention(q, *caches[0], score_mod=ours.get_score_mod(alibi),
                         block_mask=ours.convert_logical_block_mask(logical), enable_gqa=True)
    torch_logical = torch_block_mask(causal, B, 1, m, n_max, device="cuda",
                                     BLOCK_SIZE=(128, page))
    ref = torch_flex(q.float(), *(c.float() for c in caches[1]),
                     score_mod=theirs.get_score_mod(alibi),
                     block_mask=theirs.convert_logical_block_mask(torch_logical), enable_gqa=True)
    assert float((out.float() - ref).norm() / ref.norm()) < 2e-2
