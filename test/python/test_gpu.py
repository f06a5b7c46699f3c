"""GPU path of flex_attention (sm_90a, H100/H200) against torch's
flex_attention on the same GPU, and the checks made before any launch.

On a machine without an sm_90 GPU the numerics tests skip with the reason;
bench/gpu_suite.py runs the same comparisons on the H100 from AOT artifacts
(results under bench/results/). The argument checks run everywhere.
Tolerance: bf16/fp16 outputs within 2e-2 relative (Frobenius) of torch's
float32 result on the same inputs; lse within 5e-2.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention import flex_attention as tfa

import flexattn_mlir as fm
from flexattn_mlir import CompileOptions
from flexattn_mlir.examples import zoo
from flexattn_mlir.execution import checks
from flexattn_mlir.compiler import targets

tfa._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True

HAS_SM90 = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
needs_sm90 = pytest.mark.skipif(
    not HAS_SM90, reason="needs an sm_90 (H100/H200) CUDA GPU; bench/gpu_suite.py covers it on the H100"
)
GPU = CompileOptions(target="sm_90a")


@needs_sm90
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("variant", zoo.names())
@pytest.mark.parametrize("dtype,d", [(torch.bfloat16, 128), (torch.float16, 64)])
def test_zoo_matches_torch_on_gpu(variant, dtype, d):
    B, H, S = 1, 4, 1000
    score_mod, mask_mod = zoo.make(variant, H, S, "cuda")
    q, k, v = (torch.randn(B, H, S, d, device="cuda", dtype=dtype) for _ in range(3))
    ours_bm = fm.create_block_mask(mask_mod, None, None, S, S, device="cuda") if mask_mod else None
    out, lse = fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=ours_bm, return_lse=True)
    torch_bm = tfa.create_block_mask(mask_mod, None, None, S, S, device="cuda") if mask_mod else None
    ref, ref_lse = tfa.flex_attention(q.float(), k.float(), v.float(), score_mod=score_mod,
                                      block_mask=torch_bm, return_lse=True)
    assert ((out.float() - ref).norm() / ref.norm()) < 2e-2
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    torch.testing.assert_close(lse[finite], ref_lse[finite], atol=5e-2, rtol=0)


@needs_sm90
def test_gqa_and_new_capture_values_on_gpu():
    q = torch.randn(2, 8, 640, 128, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(2, 2, 640, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    slopes = torch.rand(8, device="cuda")

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    out = fm.flex_attention(q, k, v, score_mod=alibi, enable_gqa=True)
    count = fm.attention_compile_count()
    slopes.copy_(torch.rand(8, device="cuda"))
    out2 = fm.flex_attention(q, k, v, score_mod=alibi, enable_gqa=True)
    assert fm.attention_compile_count() == count
    ref = tfa.flex_attention(q.float(), k.float(), v.float(), score_mod=alibi, enable_gqa=True)
    assert ((out2.float() - ref).norm() / ref.norm()) < 2e-2
    assert not torch.equal(out, out2)


# -- checks made before compiling or launching (CPU tensors stand in) ---------

def _t(*shape, dtype=torch.bfloat16):
    return torch.empty(*shape, dtype=dtype)


@pytest.mark.parametrize("d,dv,name,target,top", [
    (100, 96, "query", "sm_90a", 256), (64, 264, "value", "sm_90a", 256),
    (8, 64, "query", "sm_90a", 256), (256, 64, "query", "sm_80", 192)])
def test_gpu_rejects_head_dims(d, dv, name, target, top):
    """Head dims the kernels take: multiples of 8 from 16 to 256 (192 on
    sm_80, whose blocks lack the shared memory for 256), checked before any
    compile."""
    with pytest.raises(ValueError, match=rf"{name} head dim {d if name == 'query' else dv} is "
                                         rf"not supported by the {target} kernel: it handles "
                                         rf"multiples of 8 from 16 to {top}"):
        checks.check_gpu_support(_t(1, 1, 128, d), _t(1, 1, 128, dv), None,
                                 CompileOptions(target=target))


def test_gpu_rejects_tiles_that_overflow_shared_memory():
    """Q + two stages of 128-column K and V tiles at D = 256 need more shared
    memory than a block has: refused before compiling. A 128-column mask
    block is fine: the kernel walks it as two 64-column tiles."""
    class Mask:
        BLOCK_SIZE = (128, 128)

    checks.check_gpu_support(_t(1, 1, 128, 256), _t(1, 1, 128, 256), Mask(), GPU)  # fine
    with pytest.raises(ValueError, match=r"head dims D=256, Dv=256 with 128-column KV tiles and 2 "
                                         r"stages need 327808 bytes of shared memory on sm_90a, "
                                         r"more than the 232448 a block has: use fewer stages or "
                                         r"a smaller tile_kv"):
        checks.check_gpu_support(_t(1, 1, 128, 256), _t(1, 1, 128, 256), Mask(),
                                 CompileOptions(target="sm_90a", tile_kv=128))
    with pytest.raises(ValueError, match=r"fewer stages or a smaller tile_kv"):
        checks.check_gpu_support(_t(1, 1, 128, 192), _t(1, 1, 128, 192), None,
                                 CompileOptions(target="sm_80", stages=3))


def test_gpu_rejects_block_sizes():
    class Mask:
        BLOCK_SIZE = (64, 64)

    with pytest.raises(ValueError, match=r"block_mask.BLOCK_SIZE \(64, 64\) is not supported by the "
                                         r"sm_90a kernel: the Q block must be a multiple of 128"):
        checks.check_gpu_support(_t(1, 1, 128, 64), _t(1, 1, 128, 64), Mask(), GPU)
    Mask.BLOCK_SIZE = (256, 64)
    checks.check_gpu_support(_t(1, 1, 128, 64), _t(1, 1, 128, 64), Mask(), GPU)  # fine


def test_out_of_range_block_indices_rejected_before_launch():
    """Indices past the KV blocks would make the kernel's TMA read another
    head's keys: caught before compiling (the same check runs on CUDA tensors)."""
    q = torch.randn(1, 1, 256, 64)
    num = torch.tensor([[[1, 1]]], dtype=torch.int32)
    idx = torch.tensor([[[[0, 0], [7, 0]]]], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"kv_indices lists KV blocks in \[0, 7\], outside \[0, 2\)"):
        fm.BlockMask.from_kv_blocks(num, idx, BLOCK_SIZE=128, seq_lengths=(256, 256))
    # The constructor does not check (as torch's); flex_attention does.
    bm = fm.BlockMask((256, 256), num, idx, None, None, None, None, None, None, BLOCK_SIZE=(128, 128))
    with pytest.raises(ValueError, match=r"block_mask.kv_indices lists KV blocks in \[0, 7\], "
                                         r"outside \[0, 2\)"):
        fm.flex_attention(q, q, q, block_mask=bm)


def test_gpu_stages_compile_without_a_gpu():
    """The whole GPU pipeline runs on a CPU-only machine (AOT): the PTX holds
    the tensor-core and TMA instructions."""
    q = torch.empty(1, 2, 300, 128, dtype=torch.bfloat16)
    bm = fm.create_block_mask(lambda b, h, qi, kv: qi >= kv, None, None, 300, 300)
    compiled = fm.compile_flex_attention(q, q, q, block_mask=bm, target="sm_90a")
    ptx = compiled.metadata["ptx"]
    assert "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16" in ptx
    assert "cp.async.bulk.tensor.4d" in ptx
    launch = compiled.metadata["launch"]
    # One CTA per (Q tile, head, batch) tile, in a 1-D grid.
    assert launch["grid"] == [math.ceil(300 / 128) * 2 * 1, 1, 1] and launch["block"] == [384, 1, 1]
    maps = {p["arg"]: p for p in launch["params"] if p["kind"] == "tensormap"}
    assert sorted(maps) == ["k", "q", "v"]
    assert maps["q"]["box"] == [64, 128, 1, 1] and maps["q"]["swizzle"] == "128B"


def test_sparse_block_masks_pick_persistent_ctas():
    """flex_attention runs sparse masks (few KV blocks per Q tile) with
    persistent CTAs on the GPU, dense ones with one CTA per tile (the
    density bound per head dim from the target table), and never overrides
    an explicit kernel_options['persistent']."""
    from flexattn_mlir.api import _prefers_persistent

    gpu = CompileOptions(target="sm_90a")
    qk = torch.empty(1, 1, 2048, 64, dtype=torch.bfloat16)
    window = fm.create_block_mask(lambda b, h, q, kv: (q >= kv) & (q - kv < 128), None, None,
                                  2048, 2048)
    causal = fm.create_block_mask(lambda b, h, q, kv: q >= kv, None, None, 2048, 2048)
    assert _prefers_persistent(gpu, window, None, qk, qk, qk)
    # Causal (density 0.53 here): persistent at D = 64 on sm_90a (the
    # target's persistent_density), one CTA per tile at D = 128 and on sm_80.
    assert _prefers_persistent(gpu, causal, None, qk, qk, qk)
    qk128 = torch.empty(1, 1, 2048, 128, dtype=torch.bfloat16)
    assert not _prefers_persistent(gpu, causal, None, qk128, qk128, qk128)
    assert not _prefers_persistent(CompileOptions(target="sm_80"), causal, None, qk, qk, qk)
    assert not _prefers_persistent(gpu, window, {"persistent": 0}, qk, qk, qk)
    assert not _prefers_persistent(CompileOptions(), window, None, qk, qk, qk)  # CPU
    assert not _prefers_persistent(gpu, None, None, qk, qk, qk)
    # Without a device to ask, persistent CTAs number the reference part's SMs.
    assert targets.sm_count("sm_90a") == targets.TARGETS["sm_90a"].sm_count == 132
