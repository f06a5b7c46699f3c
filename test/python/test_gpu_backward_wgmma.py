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


def test_atomic_dq_rule():
    """backward_atomic_dq asks for dq in f32 only where the dk/dv tiles can
    add into it: sm_90a, no capture gradients, not deterministic."""
    def f32(variant="causal", **kw):
        spec = _backward_spec(variant, 64, length=256, **kw)
        return spec.dq_f32 and dict(spec.arguments())["dq"].elem == "f32"

    assert f32(target="sm_90a", atomic_dq=True)
    assert not f32(target="sm_90a")  # off by default
    assert not f32(target="sm_90a", atomic_dq=True, deterministic=True)
    assert not f32("alibi_causal", target="sm_90a", atomic_dq=True)  # learnable slopes
    assert not f32(target="sm_80", atomic_dq=True)  # no bulk reductions
    with pytest.raises(ValueError, match="backward_atomic_dq must be a bool"):
        fm.CompileOptions(target="sm_90a", backward_atomic_dq=1)


@needs_ptxas
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("S_", [512, 300])
def test_atomic_dq_backward(D, S_):
    """backward_atomic_dq: one launch of dk/dv tiles only, which add each
    64-query chunk's dQ (dX K, wgmma with a row-major B) into the f32 dq the
    launcher zeroes, by one bulk reduction per staging slot; without spills
    on whole tiles (a tile crossing M or N, at S = 300, spills at D = 128:
    64-row chunks beside the selects)."""
    spec = _backward_spec("causal", D, length=S_, atomic_dq=True)
    md = fm.compile(spec, replace(WGMMA, backward_atomic_dq=True)).metadata
    launch, ptx, res = md["launch"], md["ptx"], md["resources"]
    tiles = -(-S_ // 128)
    assert launch["grid"] == [2 * tiles, 1, 1] and launch["block"] == [256, 1, 1]
    assert launch["spec"]["zero_init"] == ["dq"]
    assert [a["dtype"] for a in launch["arguments"] if a["name"] == "dq"] == ["float32"]
    assert "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32" in ptx
    assert not re.search(r"(red|atom)\.global\.add\.f32", ptx)
    # dQ = dX K: shared A, row-major B (imm-trans-b 1)
    assert re.search(r"wgmma\.mma_async\.sync\.aligned\.m64n64k16\.f32\.bf16\.bf16 "
                     r"\{[^}]*\}, %rd\d+, %rd\d+, p, 1,\s*1, 0,\s*1;", ptx)
    if S_ % 128 == 0:
        assert _spills(res) == 0, res


@needs_ptxas
@pytest.mark.parametrize("variant,D,S_", [("causal", 128, 512), ("alibi_causal", 128, 512),
                                          ("document", 128, 512), ("causal", 64, 300)])
def test_wgmma_backward_overlap(variant, D, S_):
    """backward_overlap (the default with wgmma): a 64-row chunk's math in
    four parts, part 0's P while dP's MMA runs (wait_group 1), part i's
    dV/dK (dQ) from B's rows 16 i.. while part i + 1's math runs, and the
    two groups' Sᵀ/dPᵀ MMAs in turns (named barriers 1 and 2); without
    spills. backward_overlap=False keeps one wait per GEMM pair and no
    turns."""
    spec = _backward_spec(variant, D, length=S_)
    on = fm.compile(spec, WGMMA).metadata
    off = fm.compile(spec, replace(WGMMA, backward_overlap=False)).metadata
    for md in (on, off):
        assert _spills(md["resources"]) == 0, md["resources"]
    wait1 = r"wgmma\.wait_group\.sync\.aligned\s+1;"
    assert re.search(wait1, on["ptx"])
    assert re.search(r"bar\.arrive\s", on["ptx"]) and "bar.sync" in on["ptx"]
    assert not re.search(wait1, off["ptx"])
    assert not re.search(r"bar\.arrive\s", off["ptx"])
    # Register-A products over 16 queries (1 k16 step) instead of 64 (4):
    # more commit groups per chunk.
    commits = [md["ptx"].count("wgmma.commit_group") for md in (on, off)]
    assert commits[0] > commits[1], commits


@needs_ptxas
def test_wgmma_backward_overlap_rule():
    """Only where a chunk is 64 rows on wgmma: 32-row chunks (D = 128 on
    ragged tiles) and sm_80 compile the same with and without it."""
    ragged = _backward_spec("causal", 128)  # S = 300
    ptx = [fm.compile(ragged, replace(WGMMA, backward_overlap=o)).metadata["ptx"]
           for o in (True, False)]
    assert ptx[0] == ptx[1]
    sm80 = fm.CompileOptions(target="sm_80")
    spec = _backward_spec("causal", 64, length=256, target="sm_80")
    ptx = [fm.compile(spec, replace(sm80, backward_overlap=o)).metadata["ptx"]
           for o in (True, False)]
    assert ptx[0] == ptx[1] and "wgmma" not in ptx[0]
    with pytest.raises(ValueError, match="backward_overlap must be a bool"):
        fm.CompileOptions(target="sm_90a", backward_overlap=1)
