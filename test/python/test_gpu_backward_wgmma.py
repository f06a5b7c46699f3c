"""The tensor-core backward's GEMMs as warpgroup MMAs on sm_90a (the
default; ``CompileOptions.backward_wgmma``: flexattn-lower-to-ampere on a
launch marked ``flexattn.wgmma``), without a GPU: every case the
tensor-core kernel covers compiles to a cubin of wgmma (no mma.sync, no
ldmatrix), without spills; the rule picks it only on sm_90a. The gradients on an H200:
test_gpu_backward.py's GPU tests (both GEMM lowerings) and
bench/gpu_backward.py.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

import flexattn_mlir as fm
from test_gpu_backward import S, _backward_spec, needs_ptxas

WGMMA = fm.CompileOptions(target="sm_90a")


def _spills(res):
    return res.spill_stores + res.spill_loads


def _cubin(variant, D=64, dtype="bfloat16", deterministic=False):
    spec = _backward_spec(variant, D, dtype, deterministic)
    md = fm.compile(spec, WGMMA).metadata
    res, ptx = md["resources"], md["ptx"]
    assert md["cubin"][:4] == b"\x7fELF" and res.registers <= 255
    if (variant, D) == ("t5_bias", 128):
        # The bucket math beside dK, dV's 128 registers spills a few words.
        assert _spills(res) <= 16, res
    else:
        assert _spills(res) == 0, res
    elem = "bf16" if dtype == "bfloat16" else "f16"
    # Sᵀ, dPᵀ (S, dP): 64 x chunk per warpgroup from the shared band (64-row
    # chunks; 32 at D = 128 on S = 300's ragged tiles); dV, dK (dQ): the
    # register-A wgmma over D columns.
    chunk = 32 if D == 128 and S % 128 else 64
    assert f"wgmma.mma_async.sync.aligned.m64n{chunk}k16.f32.{elem}.{elem}" in ptx
    assert f"wgmma.mma_async.sync.aligned.m64n{D}k16.f32.{elem}.{elem}" in ptx
    assert "fence.proxy.async.shared::cta" in ptx and "cp.async.cg.shared.global" in ptx
    assert "mma.sync" not in ptx and "ldmatrix" not in ptx
    assert md["launch"]["block"] == [256, 1, 1]
    return md


@needs_ptxas
@pytest.mark.parametrize("variant", ["causal", "alibi_causal", "t5_bias", "document"])
@pytest.mark.parametrize("dtype,D", [("bfloat16", 128), ("bfloat16", 64), ("float16", 64),
                                     ("float16", 128)])
def test_wgmma_backward_compiles_without_spills(variant, dtype, D):
    md = _cubin(variant, D, dtype)
    if md["launch"]["spec"]["zero_init"]:  # learnable tables: f32 atomics
        assert re.search(r"(red|atom)\.global\.add\.f32", md["ptx"])


@needs_ptxas
@pytest.mark.parametrize("variant,dtype,D", [("alibi_causal", "bfloat16", 128),
                                             ("t5_bias", "float16", 64)])
def test_wgmma_backward_keeps_the_deterministic_mode(variant, dtype, D):
    """Partial sums in the thread's own slots, no atomics, as with mma.sync."""
    md = _cubin(variant, D, dtype, deterministic=True)
    assert not re.search(r"(red|atom)\.global\.add\.f32", md["ptx"])


def test_wgmma_backward_rule():
    """backward_wgmma: sm_90a's default, off when asked, only where the
    tensor-core kernel runs (the CUDA-core one has no MMAs to lower)."""
    from mlir import ir

    from flexattn_mlir import _native
    from flexattn_mlir.compiler.backends import gpu

    def rule(opts):
        with _native.new_context():
            text = fm.compile(_backward_spec("causal"), opts, keep_ir=True).ir["steps"]
            return gpu.backward_wgmma(ir.Module.parse(text), opts)

    assert rule(WGMMA)
    assert not rule(replace(WGMMA, backward_wgmma=False))
    assert not rule(fm.CompileOptions(target="sm_80", backward_wgmma=True))
    assert not rule(replace(WGMMA, tile_kv=64))  # 128 x 64 tiles: CUDA cores
    with pytest.raises(ValueError, match="backward_wgmma must be a bool"):
        fm.CompileOptions(target="sm_90a", backward_wgmma=1)


@needs_ptxas
def test_wgmma_backward_has_no_score_buffer():
    """No M x N (S x S) buffer at any stage, with wgmma as without."""
    spec = _backward_spec("alibi_causal")
    compiled = fm.compile(spec, WGMMA, keep_ir=True)
    for stage, text in compiled.ir.items():
        assert not re.search(rf"memref<(\d+x)*{S}x{S}x", text), stage


@needs_ptxas
@pytest.mark.parametrize("variant", ["causal", "alibi_causal"])
def test_wgmma_backward_on_whole_tiles(variant, monkeypatch):
    """S = 512 (no tile crosses M or N): 64-row chunks at D = 128 too, no
    select of scores past M x N, P's exponent one fma, the scale once on
    the dK and dQ sums, lse and delta loaded in pairs; without spills."""
    import test_gpu_backward

    monkeypatch.setattr(test_gpu_backward, "S", 512)
    md = fm.compile(_backward_spec(variant, 128), WGMMA).metadata
    res, ptx = md["resources"], md["ptx"]
    assert _spills(res) == 0, res
    assert "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16" in ptx
    assert "wgmma.mma_async.sync.aligned.m64n32k16" not in ptx
    assert "fma.rn.f32" in ptx and "ex2.approx" in ptx
    # A thread's queries in adjacent pairs: lse and delta by 8-byte loads.
    assert "ld.global.v2.b32" in ptx
