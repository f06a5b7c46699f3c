"""Tail splits (flexattn_mlir.execution.tail_split, docs/gpu-pipeline.md §3):
which calls get one, the two kernels' options and shapes, both compiled to
cubins without a GPU (the main kernel's grid stops at its T - r tiles; the
tail kernel is sm_90a's wgmma kernel walking KV ranges into f32 scratch),
the options' errors, and on a GPU flex_attention against torch. The H200
runs bench/gpu_suite.py's ``check_full_tail_*`` cases."""

from __future__ import annotations

import math

import pytest
import torch

import flexattn_mlir as fm
from flexattn_mlir.compiler import driver
from flexattn_mlir.execution import tail_split
from flexattn_mlir.execution.attention import build_spec
from flexattn_mlir.examples import zoo

HAS_SM90 = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def _spec(B, Hq, Hkv, M, N, D, dtype=torch.bfloat16, score_mod=None, lse=True):
    q = torch.empty(B, Hq, M, D, dtype=dtype, device="meta")
    k = torch.empty(B, Hkv, N, D, dtype=dtype, device="meta")
    return build_spec(q, k, k, score_mod=score_mod, mask_mod=None, block_mask=None,
                      captures=(), scale=1 / math.sqrt(D), return_lse=lse, name="full")


SM90 = fm.CompileOptions(target="sm_90a")


def test_plan_of_the_benchmark_shape():
    """B = 4, H = 16, S = 8192: 4096 tiles on 132 SMs leave 4; the main kernel
    runs 31 whole rounds of 132 persistent CTAs, the tail 512 rows of the last
    head in 32 KV ranges of 2 KV tiles each."""
    split = tail_split.plan(_spec(4, 16, 16, 8192, 8192, 128), SM90, 132)
    assert split.main == fm.CompileOptions(target="sm_90a", tiles=4092, persistent=132)
    assert split.tail == fm.CompileOptions(target="sm_90a", splits=32)
    assert split.rows == 512
    t = split.tail_spec
    assert (t.q.shape, t.k.shape, t.v.shape) == ((1, 1, 512, 128), (1, 1, 8192, 128),
                                                 (1, 1, 8192, 128))
    assert not t.return_lse and t.q.elem == "bf16" and t.name == "full_tail"
    # A persistent count of the caller's stays; the tail has its own grid.
    own = tail_split.plan(_spec(4, 16, 16, 8192, 8192, 128),
                          fm.CompileOptions(target="sm_90a", persistent=44), 132)
    assert own.main.persistent == 44 and own.tail.persistent == 0


@pytest.mark.parametrize("shape,sms,expect", [
    ((1, 17, 17, 1024, 1024, 128), 132, (132, 4, 512)),  # 136 tiles: r = 4
    ((1, 4, 2, 4300, 2100, 128), 132, (132, 8, 512)),    # GQA, a 76-row last tile, 17 KV tiles
    ((1, 17, 17, 1024, 1024, 64), 132, (132, 4, 512)),
    ((4, 16, 16, 8192, 8192, 128), 128, None),           # whole waves
    ((4, 16, 16, 8192, 8192, 128), 114, None),           # r = 106: not nearly empty
    ((2, 8, 2, 640, 640, 128), 132, None),               # less than a wave
    ((1, 134, 134, 128, 1024, 128), 132, None),          # r = 2 tiles in 2 heads
    ((1, 17, 17, 1024, 128, 128), 132, None),            # one KV tile: no ranges
])
def test_plan_needs_a_nearly_empty_last_wave(shape, sms, expect):
    split = tail_split.plan(_spec(*shape), SM90, sms)
    if expect is None:
        assert split is None
        return
    tiles, splits, rows = expect
    assert (split.main.tiles, split.main.persistent, split.tail.splits, split.rows) == (
        tiles, sms, splits, rows)


def test_plan_only_for_dense_attention_on_the_own_kernel():
    shape = (4, 16, 16, 8192, 8192, 128)
    assert tail_split.plan(_spec(*shape), SM90, 132) is not None
    score, _ = zoo.make("relative_bias", 16, 8192, "cpu")
    from flexattn_mlir.frontend import capture_score_mod

    mod = capture_score_mod(score).ir
    assert tail_split.plan(_spec(*shape, score_mod=mod), SM90, 132) is None  # any score_mod
    q = torch.empty(*shape[:2], 8192, 128, dtype=torch.bfloat16, device="meta")
    for extra in ({"sinks": torch.zeros(16)}, {"return_max": True}):
        spec = build_spec(q, q, q, score_mod=None, mask_mod=None, block_mask=None, captures=(),
                          scale=0.1, return_lse=True, **extra)
        assert tail_split.plan(spec, SM90, 132) is None, extra
    assert tail_split.plan(_spec(*shape, dtype=torch.float32), SM90, 132) is None  # sm_80's kernel
    assert tail_split.plan(_spec(4, 16, 16, 8192, 8192, 96), SM90, 132) is None  # padded head dim
    for options in (fm.CompileOptions(target="sm_90a", dynamic=True),
                    fm.CompileOptions(target="sm_90a", tiles=4000),
                    fm.CompileOptions(target="sm_90a", splits=2),
                    fm.CompileOptions(target="sm_90a", decode=True),
                    fm.CompileOptions(target="sm_80"), fm.CompileOptions(target="cpu")):
        assert tail_split.plan(_spec(*shape), options, 132) is None, options


def test_tiles_option_errors():
    for bad in ({"target": "cpu", "tiles": 4}, {"target": "sm_90a", "tiles": -1},
                {"target": "sm_90a", "tiles": 4, "dynamic": True},
                {"target": "sm_90a", "tiles": 4, "splits": 2},
                {"target": "sm_90a", "tiles": True}):
        with pytest.raises(ValueError, match="CompileOptions.tiles must be 0"):
            fm.CompileOptions(**bad)


def test_callers_cannot_ask_for_a_part_of_the_grid():
    """``tiles`` alone computes only part of the output: flex_attention's
    kernel_options and the attention entry refuse it, naming the option;
    a prefill call refuses ``splits`` as before the tail split."""
    q = torch.randn(1, 2, 64, 64)
    with pytest.raises(ValueError, match="'tiles' is the main kernel's part of a tail split"):
        fm.flex_attention(q, q, q, kernel_options={"tiles": 1})
    with pytest.raises(ValueError, match="options.tiles=4: a kernel over the grid's first tiles"):
        fm.attention(q, q, q, options=fm.CompileOptions(target="sm_90a", tiles=4))
    # KV ranges of a prefill call are planned too (the decode kernel's stay
    # the caller's to choose).
    with pytest.raises(ValueError, match="splits=4: a call's KV ranges are the decode kernel's"):
        fm.attention(torch.randn(1, 2, 200, 64), q, q,
                     options=fm.CompileOptions(target="sm_90a", splits=4))


def test_both_kernels_compile_to_cubins():
    """The main kernel's grid: 31 rounds of 132 persistent CTAs over the
    first 4092 tiles; without persistent CTAs, 4092 CTAs (cubin as the full
    grid's: the tile decode is the same). The tail: 4 tiles x 32 ranges,
    the wgmma kernel, its partial rows and lse into two f32 scratch
    arguments."""
    spec = _spec(4, 16, 16, 8192, 8192, 128)
    split = tail_split.plan(spec, SM90, 132)
    main = driver.compile(spec, split.main, keep_ir=False).metadata
    assert main["launch"]["grid"] == [132, 1, 1] and main["cubin"][:4] == b"\x7fELF"
    grid = driver.compile(spec, fm.CompileOptions(target="sm_90a", tiles=4092), keep_ir=False)
    full = driver.compile(spec, SM90, keep_ir=False)
    assert grid.metadata["launch"]["grid"] == [4092, 1, 1]
    assert full.metadata["launch"]["grid"] == [4096, 1, 1]
    assert grid.metadata["cubin"] == full.metadata["cubin"]
    tail = driver.compile(split.tail_spec, split.tail, keep_ir=False).metadata
    launch = tail["launch"]
    assert launch["grid"] == [4 * 32, 1, 1] and launch["block"] == [384, 1, 1]
    args = {a["name"]: (a["shape"], a["dtype"]) for a in launch["arguments"]}
    assert args["split_out"] == ([32, 512 * 128], "float32")
    assert args["split_lse"] == ([32, 512], "float32")
    assert "lse" not in args
    assert "wgmma.mma_async" in tail["ptx"] and tail["resources"].spill_stores == 0


@pytest.mark.skipif(not HAS_SM90, reason="needs an sm_90 GPU (the tail split is sm_90a's); "
                                         "bench/gpu_suite.py's check_full_tail_* run it on the H200")
@pytest.mark.parametrize("B,Hq,Hkv,M,N,D,dtype", [
    (1, 17, 17, 1024, 1024, 128, torch.bfloat16), (1, 4, 2, 4300, 2100, 128, torch.float16)])
def test_flex_attention_with_a_tail_split_matches_torch(B, Hq, Hkv, M, N, D, dtype):
    from torch.nn.attention.flex_attention import flex_attention as torch_flex

    q = torch.randn(B, Hq, M, D, device="cuda", dtype=dtype)
    k, v = (torch.randn(B, Hkv, N, D, device="cuda", dtype=dtype) for _ in range(2))
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    out, lse = fm.flex_attention(q, k, v, enable_gqa=Hq != Hkv, return_lse=True)
    ref, ref_lse = torch_flex(q.float(), k.float(), v.float(), enable_gqa=Hq != Hkv,
                              return_lse=True)
    assert float((out.float() - ref).norm() / ref.norm()) < 1e-2
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=0)
    # A CUDA graph captures both streams' work: its replay gives the same.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fm.flex_attention(q, k, v, enable_gqa=Hq != Hkv, return_lse=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        g_out, g_lse = fm.flex_attention(q, k, v, enable_gqa=Hq != Hkv, return_lse=True)
    g_out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(g_out, out) and torch.equal(g_lse, lse)
    if tail_split.plan(_spec(B, Hq, Hkv, M, N, D, dtype), SM90, sms) is None:
        pytest.skip(f"{sms} SMs leave no nearly empty wave here (the numbers above still hold)")
