"""The whole CPU pipeline (tile -> block sparsity -> online softmax -> inline
mods -> loops -> LLVM -> ExecutionEngine) against a float64 reference.

Tolerances: fp32 inputs compute in f32 and land within 2e-5 of the float64
reference; bf16/fp16 inputs are rounded once on output (the math is f32), so
the error is about one output ulp: 1e-2 (bf16) / 2e-3 (fp16) absolute on
values of order 1. lse is always f32: 1e-4.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.nn.attention import flex_attention as torch_flex

import flexattn_mlir as fm
from flexattn_mlir import CompileOptions, ModIR
from reference import reference_attention

CPU_STAGES = ["flexattn", "tiled", "sparse", "split", "fused", "inlined", "vector", "loops", "llvm"]
TOL = {torch.float32: 2e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}

CAUSAL = ModIR.mask(
    """flexattn.mod mask_mod {
^bb0(%b: i32, %h: i32, %q: i32, %kv: i32):
  %keep = arith.cmpi sge, %q, %kv : i32
  flexattn.yield %keep : i1
}
"""
)

# score + (q - kv) * 0.05: a relative-position bias.
REL_BIAS = ModIR.score(
    """flexattn.mod score_mod {
^bb0(%s: f32, %b: i32, %h: i32, %q: i32, %kv: i32):
  %d = arith.subi %q, %kv : i32
  %f = arith.sitofp %d : i32 to f32
  %c = arith.constant 0.05 : f32
  %bias = arith.mulf %f, %c : f32
  %r = arith.addf %s, %bias : f32
  flexattn.yield %r : f32
}
"""
)


def sliding_mask(window: int) -> ModIR:
    return ModIR.mask(
        """flexattn.mod mask_mod {
^bb0(%b: i32, %h: i32, %q: i32, %kv: i32):
  %c = arith.cmpi sge, %q, %kv : i32
  %d = arith.subi %q, %kv : i32
  %w = arith.constant WINDOW : i32
  %near = arith.cmpi sle, %d, %w : i32
  %keep = arith.andi %c, %near : i1
  flexattn.yield %keep : i1
}
""".replace("WINDOW", str(window))
    )


def inputs(b, hq, hkv, m, n, d, dv=None, dtype=torch.float32):
    dv = dv or d
    q = torch.randn(b, hq, m, d, dtype=dtype)
    k = torch.randn(b, hkv, n, d, dtype=dtype)
    v = torch.randn(b, hkv, n, dv, dtype=dtype)
    return q, k, v


def check(out, lse, ref_out, ref_lse, dtype):
    tol = TOL[dtype]
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ref_out, atol=tol, rtol=tol)
    if lse is not None:
        assert lse.dtype == torch.float32
        finite = torch.isfinite(ref_lse)
        assert torch.equal(torch.isfinite(lse), finite)
        torch.testing.assert_close(lse.double()[finite], ref_lse[finite], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_causal_dtypes(dtype):
    q, k, v = inputs(2, 4, 4, 130, 130, 32, dtype=dtype)
    out, lse = fm.attention(q, k, v, mask_mod=CAUSAL, return_lse=True)
    ref, ref_lse = reference_attention(q, k, v, mask_fn=lambda b, h, i, j: i >= j)
    check(out, lse, ref, ref_lse, dtype)


def test_full_attention_default_scale_m_ne_n():
    q, k, v = inputs(1, 2, 2, 77, 200, 64, dv=48)
    out, lse = fm.attention(q, k, v, return_lse=True)
    ref, ref_lse = reference_attention(q, k, v)
    check(out, lse, ref, ref_lse, torch.float32)


def test_explicit_scale_and_score_bias():
    q, k, v = inputs(2, 3, 3, 100, 90, 16)
    out = fm.attention(q, k, v, score_mod=REL_BIAS, scale=0.3)
    ref, _ = reference_attention(q, k, v, score_fn=lambda s, b, h, i, j: s + (i - j) * 0.05, scale=0.3)
    check(out, None, ref, None, torch.float32)


@pytest.mark.parametrize("hq,hkv", [(8, 2), (6, 3), (4, 1)])
def test_gqa(hq, hkv):
    q, k, v = inputs(2, hq, hkv, 70, 70, 32)
    out, lse = fm.attention(q, k, v, mask_mod=CAUSAL, enable_gqa=True, return_lse=True)
    ref, ref_lse = reference_attention(q, k, v, mask_fn=lambda b, h, i, j: i >= j)
    check(out, lse, ref, ref_lse, torch.float32)


@pytest.mark.parametrize(
    "m,n,block,window", [(384, 384, 64, 130), (300, 200, 64, 130), (400, 300, (64, 128), 200)]
)
def test_sliding_window_block_mask(m, n, block, window):
    """The block mask comes from torch's create_block_mask; kernels visit only
    listed blocks and skip mask_mod on full ones."""
    q, k, v = inputs(2, 2, 2, m, n, 32)

    def torch_mask(b, h, i, j):
        return (i >= j) & (i - j <= window)

    bm = torch_flex.create_block_mask(torch_mask, None, None, m, n, device="cpu", BLOCK_SIZE=block)
    # Partial, full and skipped blocks are all exercised.
    assert int(bm.full_kv_num_blocks.sum()) > 0 and int(bm.kv_num_blocks.sum()) > 0
    assert bm.sparsity() > 0
    out, lse = fm.attention(q, k, v, mask_mod=sliding_mask(window), block_mask=bm, return_lse=True)
    ref, ref_lse = reference_attention(q, k, v, mask_fn=torch_mask)
    check(out, lse, ref, ref_lse, torch.float32)


def test_block_mask_per_batch_and_head():
    """A block mask with real (non-broadcast) B and H dims."""
    m = n = 192
    q, k, v = inputs(2, 3, 3, m, n, 16)

    def torch_mask(b, h, i, j):
        return (i >= j) | (j < 32 * (b + h + 1))

    bm = torch_flex.create_block_mask(torch_mask, 2, 3, m, n, device="cpu", BLOCK_SIZE=64)
    mask = ModIR.mask(
        """flexattn.mod mask_mod {
^bb0(%b: i32, %h: i32, %q: i32, %kv: i32):
  %causal = arith.cmpi sge, %q, %kv : i32
  %one = arith.constant 1 : i32
  %bh = arith.addi %b, %h : i32
  %bh1 = arith.addi %bh, %one : i32
  %c32 = arith.constant 32 : i32
  %lim = arith.muli %bh1, %c32 : i32
  %pre = arith.cmpi slt, %kv, %lim : i32
  %keep = arith.ori %causal, %pre : i1
  flexattn.yield %keep : i1
}
"""
    )
    out, lse = fm.attention(q, k, v, mask_mod=mask, block_mask=bm, return_lse=True)
    ref, ref_lse = reference_attention(q, k, v, mask_fn=torch_mask)
    check(out, lse, ref, ref_lse, torch.float32)


@pytest.mark.parametrize("m,n", [(90, 60), (128, 128)])
def test_fully_masked_rows_give_zero_and_neg_inf_lse(m, n):
    """Rows with no visible key: output 0, lse -inf (torch's convention), in
    edge tiles (90 x 60: scalar loops) and full ones (128 x 128: vectors)."""
    q, k, v = inputs(1, 2, 2, m, n, 16)
    mask = ModIR.mask(
        """flexattn.mod mask_mod {
^bb0(%b: i32, %h: i32, %q: i32, %kv: i32):
  %c = arith.constant 40 : i32
  %shifted = arith.subi %q, %c : i32
  %keep = arith.cmpi sge, %shifted, %kv : i32
  flexattn.yield %keep : i1
}
"""
    )
    out, lse = fm.attention(q, k, v, mask_mod=mask, return_lse=True)
    ref, ref_lse = reference_attention(q, k, v, mask_fn=lambda b, h, i, j: i - 40 >= j)
    assert torch.all(out[:, :, :40] == 0) and torch.all(lse[:, :, :40] == -math.inf)
    check(out, lse, ref, ref_lse, torch.float32)


def test_captured_buffer_alibi_builder_callback():
    """A score_mod built with the Python bindings, reading a captured buffer."""
    from mlir.dialects import arith, memref
    from mlir import ir

    h = 4
    slopes = torch.rand(h)

    def alibi(s, b, hd, qi, kv, sl):
        idx = arith.index_cast(ir.IndexType.get(), hd)
        slope = memref.load(sl, [idx])
        dist = arith.sitofp(ir.F32Type.get(), arith.subi(kv, qi))
        return arith.addf(s, arith.mulf(slope, dist))

    score = ModIR.build_score(alibi, capture_types=[f"memref<{h}xf32>"])
    assert "memref.load" in score.text
    q, k, v = inputs(2, h, h, 65, 65, 32)
    out = fm.attention(q, k, v, score_mod=score, captures=[slopes])
    ref, _ = reference_attention(
        q, k, v, score_fn=lambda s, b, hh, i, j: s + slopes.double()[hh] * (j - i)
    )
    check(out, None, ref, None, torch.float32)
    # New values for the same capture reuse the compiled kernel.
    before = fm.attention_compile_count()
    fm.attention(q, k, v, score_mod=score, captures=[torch.rand(h)])
    assert fm.attention_compile_count() == before


@pytest.mark.parametrize("tile", [(16, 32), (128, 16)])
def test_tile_sizes(tile):
    q, k, v = inputs(1, 2, 2, 100, 150, 32)
    opts = CompileOptions(tile_q=tile[0], tile_kv=tile[1])
    out, lse = fm.attention(q, k, v, mask_mod=CAUSAL, return_lse=True, options=opts)
    ref, ref_lse = reference_attention(q, k, v, mask_fn=lambda b, h, i, j: i >= j)
    check(out, lse, ref, ref_lse, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nan_query_rows_stay_nan(dtype):
    """A NaN in a query row makes that row's output NaN (as torch's), in
    full vectorised tiles too (their row max ignores NaN bookkeeping), and
    leaves the other rows alone."""
    q, k, v = inputs(1, 2, 2, 128, 128, 32, dtype=dtype)
    q[0, 1, 70, 5] = float("nan")
    out = fm.attention(q, k, v, mask_mod=CAUSAL)
    assert torch.isnan(out[0, 1, 70]).all()
    out[0, 1, 70] = 0
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("threads", [2, 5])
def test_threads_share_the_tiles_exactly(threads):
    """Tiles are independent: any number of threads (here more than the
    cores, and than some heads' tiles) computes the same bits as one."""
    q, k, v = inputs(2, 3, 3, 256, 256, 32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fm.attention(q, k, v, mask_mod=CAUSAL, return_lse=True)
        torch.set_num_threads(threads)
        many = fm.attention(q, k, v, mask_mod=CAUSAL, return_lse=True)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])
    ref, ref_lse = reference_attention(q, k, v, mask_fn=lambda b, h, i, j: i >= j)
    check(*many, ref, ref_lse, torch.float32)


def _vector_ops(text: str) -> tuple[int, list[str]]:
    """The tile products' vector ops (f32 FMAs, bf16 dots) of a vector
    stage and its linalg ops with static shapes (not vectorised)."""
    products = text.count("vector.fma") + text.count("x86vector.avx512.dot")
    static = [line for line in text.splitlines()
              if re.match(r"\s*linalg\.(?!yield|index)", line) and "?" not in line]
    return products, static


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dynamic_kernels_vectorise_their_full_tiles(dtype):
    """In a dynamic-shape kernel (B, M, N run-time values) the full tiles
    are vectorised as in a static one: flexattn-split-full-tiles cuts the
    views at the tile's end, so the tile ops' shapes fold to the tile sizes
    whatever M and N are; only edge tiles (dynamic extents) stay linalg."""
    q, k, v = inputs(2, 4, 2, 200, 200, 32, dtype=dtype)
    products = {}
    for dynamic in (False, True):
        options = CompileOptions(dynamic=dynamic)
        spec = fm.attention_spec(q, k, v, mask_mod=CAUSAL, enable_gqa=True, options=options)
        products[dynamic], static = _vector_ops(fm.compile(spec, options)["vector"])
        assert not static, static
        out, lse = fm.attention(q, k, v, mask_mod=CAUSAL, enable_gqa=True, return_lse=True,
                                options=options)
        ref, ref_lse = reference_attention(q, k, v, mask_fn=lambda b, h, i, j: i >= j)
        check(out, lse, ref, ref_lse, dtype)
    assert products[True] == products[False] > 0


def test_stages_are_inspectable():
    q, k, v = inputs(1, 1, 1, 64, 64, 16)
    spec = fm.attention_spec(q, k, v, mask_mod=CAUSAL)
    compiled = fm.compile(spec)
    assert compiled.stage_names() == CPU_STAGES
    assert "flexattn.attention" in compiled["flexattn"]
    assert "flexattn.kv_loop" in compiled["tiled"]
    assert "flexattn.tile_step" in compiled["sparse"]
    assert "scf.if" in compiled["split"]  # full KV tiles or not
    assert "flexattn.apply_mods" in compiled["fused"]
    assert "flexattn." not in compiled["inlined"]
    assert "vector.fma" in compiled["vector"] and "linalg." not in compiled["vector"]
    assert "linalg." not in compiled["loops"]
    assert "llvm.func" in compiled["llvm"]


def test_dump_ir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEXATTN_DUMP_IR", str(tmp_path))
    q, k, v = inputs(1, 1, 1, 32, 32, 16)
    fm.compile(fm.attention_spec(q, k, v, mask_mod=CAUSAL))
    names = sorted(p.name for p in tmp_path.iterdir())
    spec = fm.attention_spec(q, k, v, mask_mod=CAUSAL)
    kernel = fm.compiler.driver.kernel_name(spec, fm.CompileOptions())
    assert kernel.startswith("flexattn-")
    assert names == sorted(f"{kernel}.{s}.mlir" for s in CPU_STAGES)
