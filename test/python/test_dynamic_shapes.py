"""One CPU kernel for every batch size, sequence length, block-mask shape
and scale (CompileOptions.dynamic, kernel_options={"dynamic": True}),
compared with torch's flex_attention at each shape."""

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask as torch_block_mask
from torch.nn.attention.flex_attention import flex_attention as torch_flex

import flexattn_mlir as fm
from flexattn_mlir.compiler.spec import DYNAMIC

F32 = dict(atol=2e-5, rtol=1e-5)
DYN = {"dynamic": True}
H, D = 4, 32
SLOPES = torch.rand(H)
DOC = torch.randint(0, 3, (8,)).sort().values


def alibi(score, b, h, q_idx, kv_idx):
    return score + SLOPES[h] * (kv_idx - q_idx)


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def test_one_kernel_for_seven_lengths_and_two_batch_sizes():
    """ALiBi + causal block mask at 7 lengths (below, at and across the
    64-row tile and 128-block edges) x 2 batch sizes, each with its own
    scale: the compile counter moves once. (The decode path is off here: it
    is a second kernel, for M <= 64, with its own test in test_decode.py.)"""
    before = fm.attention_compile_count()
    for B in (1, 3):
        for L in (1, 5, 64, 65, 127, 128, 200):
            q, k, v = (torch.randn(B, H, L, D) for _ in range(3))
            scale = 0.05 + L / 1000
            out, lse = fm.flex_attention(q, k, v, score_mod=alibi, scale=scale, return_lse=True,
                                         kernel_options={**DYN, "decode": False},
                                         block_mask=fm.create_block_mask(causal, B, 1, L, L))
            ref, ref_lse = torch_flex(q, k, v, score_mod=alibi, scale=scale, return_lse=True,
                                      block_mask=torch_block_mask(causal, B, 1, L, L, device="cpu"))
            torch.testing.assert_close(out, ref, **F32)
            torch.testing.assert_close(lse, ref_lse, **F32)
    assert fm.attention_compile_count() - before == 1


def test_spec_is_shape_free():
    """B, M, N, the block-mask dims and the scale are not in the spec; heads,
    head dims and captured tensors' shapes are; the scale is an operand."""
    specs = []
    for B, M, N, scale in ((1, 10, 30, None), (2, 70, 90, 0.3)):
        q, k, v = torch.randn(B, H, M, D), torch.randn(B, H, N, D), torch.randn(B, H, N, 16)
        call = dict(score_mod=fm.capture_score_mod(alibi).ir, captures=[SLOPES], scale=scale)
        specs.append(fm.attention_spec(q, k, v, options=fm.CompileOptions(dynamic=True),
                                       **call))
    assert specs[0] == specs[1]
    spec = specs[0]
    assert spec.q.shape == (DYNAMIC, H, DYNAMIC, D) and spec.v.shape == (DYNAMIC, H, DYNAMIC, 16)
    assert spec.scale == 1.0 and spec.captures[-1].shape == () and "?x4x?x32xf32" in spec.to_mlir()
    static = fm.attention_spec(q, k, v, options=fm.CompileOptions(dynamic=False), **call)
    assert static.q.shape == (2, H, 70, D) and static.scale == pytest.approx(0.3)


def test_static_option_and_gpu_targets():
    assert fm.CompileOptions().dynamic is False  # static is faster on the CPU today
    assert fm.CompileOptions(dynamic=True).dynamic is True
    assert fm.CompileOptions(target="sm_90a").dynamic is False
    # GPU targets: test_gpu_dynamic.py.
    assert fm.CompileOptions(target="sm_90a", dynamic=True).dynamic is True
    with pytest.raises(ValueError, match="dynamic must be a bool"):
        fm.CompileOptions(dynamic="yes")


def test_index_bounds_are_decided_per_call():
    """doc[q_idx] is proved in bounds for M <= 8 (one kernel for those
    lengths); at M = 9 it is provably out of bounds: IndexError at the
    call, as torch, decided on the actual length."""
    def same_doc(b, h, q_idx, kv_idx):
        return DOC[q_idx] == DOC[kv_idx]

    before = fm.attention_compile_count()
    for L in (3, 8):
        q = torch.randn(1, 2, L, 16)
        out = fm.flex_attention(q, q, q, block_mask=fm.create_block_mask(same_doc, 1, 1, L, L),
                                kernel_options=DYN)
        ref = torch_flex(q, q, q, block_mask=torch_block_mask(same_doc, 1, 1, L, L, device="cpu"))
        torch.testing.assert_close(out, ref, **F32)
    assert fm.attention_compile_count() - before == 1
    q = torch.randn(1, 2, 9, 16)
    with pytest.raises(IndexError, match="out of bounds"):
        fm.flex_attention(q, q, q, score_mod=lambda s, b, h, qi, kv: s + DOC[qi],
                          kernel_options=DYN)


@pytest.mark.parametrize("kv_batch", [1, 2])
def test_kv_batch_shared_or_not(kv_batch):
    """K/V of batch 1 under a query batch of 2 (read through the kernel's
    broadcast) and K/V of batch 2: both exact."""
    q = torch.randn(2, H, 40, D)
    k, v = torch.randn(kv_batch, H, 50, D), torch.randn(kv_batch, H, 50, D)
    out = fm.flex_attention(q, k, v, score_mod=alibi, kernel_options=DYN)
    ref = torch_flex(q, k.expand(2, -1, -1, -1), v.expand(2, -1, -1, -1), score_mod=alibi)
    torch.testing.assert_close(out, ref, **F32)
