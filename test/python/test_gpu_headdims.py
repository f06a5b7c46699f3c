"""Every common head dim on the GPU targets, compiled to cubins on a machine
without a GPU (ptxas here): the mma.sync kernel pads D and Dv to whole
64-column panels in shared memory, sm_90a keeps its wgmma kernel for
D = Dv in (64, 128) and runs every other head dim with the mma.sync kernel
(targets.py's ``Target.kernel``). Each kernel assembles without spills and
within its target's shared memory; the numerics run on a GPU (skipped here)
and in bench/gpu_headdims.py on the H200."""

from __future__ import annotations

import re

import pytest
import torch
from torch.nn.attention import flex_attention as tfa

import flexattn_mlir as fm
from flexattn_mlir.compiler import targets
from flexattn_mlir.examples import zoo

HEAD_DIMS = (16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256)
MMA_SYNC = r"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16\.bf16\.f32"


def _compile(target: str, D: int, Dv: int | None = None, **options):
    """The unmasked kernel of q/k head dim D and v head dim Dv (bf16)."""
    from flexattn_mlir.execution.attention import build_spec

    q = torch.empty(1, 2, 1000, D, dtype=torch.bfloat16, device="meta")
    v = torch.empty(1, 2, 1000, Dv or D, dtype=torch.bfloat16, device="meta")
    spec = build_spec(q, q, v, score_mod=None, mask_mod=None, block_mask=None, captures=[],
                      scale=D ** -0.5, return_lse=True, name=f"d{D}_dv{Dv or D}")
    return fm.compile(spec, fm.CompileOptions(target=target, **options), keep_ir=False)


def _assert_kernel(compiled, target: str):
    md, ptx = compiled.metadata, compiled.metadata["ptx"]
    assert md["cubin"][:4] == b"\x7fELF"
    res = md["resources"]
    assert res.registers <= 255 and (res.spill_stores, res.spill_loads) == (0, 0), res
    assert md["launch"]["shared_mem_bytes"] <= targets.target(target).max_shared_per_block
    return ptx


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_every_head_dim_compiles(target, D):
    t = targets.target(target)
    if D not in t.head_dims:
        pytest.skip(f"{target} takes head dims up to {max(t.head_dims)} (shared memory)")
    compiled = _compile(target, D)
    ptx = _assert_kernel(compiled, target)
    kernel = t.kernel(D, D)
    if kernel is t and t.general:  # sm_90a's own kernel
        assert "wgmma.mma_async" in ptx and not re.search(MMA_SYNC, ptx)
        return
    assert re.search(MMA_SYNC, ptx) and "wgmma" not in ptx
    # Per KV step and m16 tile of a warp: S = Q.Kᵀ over D's k16 steps (the
    # zero padding of D's 64-column panel is skipped) for each 8 KV columns,
    # O += P.V over the KV tile's k16 steps for each 8 columns of Dv. Every
    # copy of the KV loop's body has that many.
    kv = kernel.kv_tile(D)
    tiles = kernel.tiling(D, kv).warp_rows // 16
    per_step = tiles * ((kv // 8) * -(-D // 16) + (kv // 16) * (D // 8))
    count = len(re.findall(MMA_SYNC, ptx))
    assert count >= per_step and count % per_step == 0, (count, per_step)
    # The copies zero-fill the padding columns: cp.async with a source size.
    if targets.padded_head_dim(D) != D:
        assert re.search(r"cp\.async\.cg\.shared\.global \[%rd?\d+\], \[%rd\d+\], 16, %r\d+;", ptx)
    assert compiled.metadata["launch"]["shared_mem_bytes"] == kernel.ring_bytes(D, D, kv, 2)


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("D,Dv", [(32, 64), (64, 128), (16, 48), (192, 128)])
def test_value_head_dim_differs(target, D, Dv):
    """Dv != D: the V tile and the accumulator have Dv padded to 64-column
    panels, the output's Dv columns are stored; the launch's shared memory
    is the table's ring size."""
    compiled = _compile(target, D, Dv)
    ptx = _assert_kernel(compiled, target)
    assert re.search(MMA_SYNC, ptx) and "wgmma" not in ptx
    kernel = targets.target(target).kernel(D, Dv)
    assert compiled.metadata["launch"]["shared_mem_bytes"] == \
        kernel.ring_bytes(D, Dv, kernel.kv_tile(max(D, Dv)), 2)


def test_table_routes_head_dims():
    """One row per head dim: sm_90a's wgmma kernel for D = Dv in (64, 128),
    the mma.sync kernel for the rest; 64-column KV tiles at 128 (unpadded)
    and above."""
    h100, a100 = targets.TARGETS["sm_90a"], targets.TARGETS["sm_80"]
    assert h100.head_dims == tuple(range(16, 257, 8)) and max(a100.head_dims) == 192
    assert h100.kernel(64, 64) is h100 and h100.kernel(128, 128) is h100
    assert h100.kernel(64, 128) is a100 and h100.kernel(32, 32) is a100
    assert a100.kernel(64, 64) is a100
    assert [targets.padded_head_dim(d) for d in (16, 64, 80, 192, 200)] == [64, 64, 128, 192, 256]
    assert [a100.kv_tile(d) for d in (24, 64, 96, 128, 160, 256)] == [64, 64, 128, 64, 64, 64]
    assert a100.tiling(24, 64) == a100.tiling(64, 64) == targets.Tiling(32)
    assert a100.tiling(128, 64) == targets.Tiling(32, q_in_registers=False)
    assert a100.tiling(96, 128) == targets.Tiling()  # padded to 128: Tiling.prefill_only


HAS_GPU = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU of compute capability 8.0 or later; "
                                        "bench/gpu_headdims.py runs these on the H200")
@pytest.mark.parametrize("D,Dv", [(16, 16), (24, 24), (80, 80), (32, 64), (256, 256)])
@pytest.mark.parametrize("variant", ["full", "causal"])
def test_head_dims_match_torch_on_gpu(variant, D, Dv):
    B, H, S = 1, 2, 1000
    score_mod, mask_mod = zoo.make(variant, H, S, "cuda")
    q, k = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    v = torch.randn(B, H, S, Dv, device="cuda", dtype=torch.bfloat16)
    blocks = (128, 64) if max(D, Dv) > 128 else (128, 128)
    bm = fm.create_block_mask(mask_mod, None, None, S, S, device="cuda", BLOCK_SIZE=blocks) \
        if mask_mod else None
    out = fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm)
    ref = tfa.flex_attention(q.float(), k.float(), v.float(), score_mod=score_mod,
                             block_mask=tfa.create_block_mask(mask_mod, None, None, S, S,
                                                              device="cuda")
                             if mask_mod else None)
    assert ((out.float() - ref).norm() / ref.norm()) < 2e-2
