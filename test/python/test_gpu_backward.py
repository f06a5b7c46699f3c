"""The GPU backward. Without a GPU: every zoo variant's backward (learnable
float captures included) compiles to an sm_90a cubin with ptxas (from the
nvidia-cuda-nvcc wheel of the test extra; skipped with the reason where none
is found), as one launch of dk/dv and dq tiles whose IR holds no M x N
buffer, and launch metadata that names what the launcher zeroes. With an
sm_90 GPU: flex_attention's gradients (q, k, v, a learnable bias table)
against torch's flex_attention in float32 on the same inputs.
bench/gpu_backward.py runs the zoo on the H200 from AOT artifacts.
"""

from __future__ import annotations

import re

import pytest
import torch

import flexattn_mlir as fm
from flexattn_mlir.compiler import backward, ptxas
from flexattn_mlir.examples import zoo

try:
    ptxas.find()
    HAS_PTXAS = True
except ptxas.PtxasNotFound:
    HAS_PTXAS = False
needs_ptxas = pytest.mark.skipif(
    not HAS_PTXAS, reason="no ptxas (install the test extra's nvidia-cuda-nvcc wheel, or set "
                          "FLEXATTN_PTXAS): the GPU backward is checked down to a cubin")
HAS_SM90 = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
needs_sm90 = pytest.mark.skipif(
    not HAS_SM90, reason="needs an sm_90 (H100/H200) CUDA GPU; bench/gpu_backward.py covers it "
                         "on the H200")
# The mma.sync kernel (sm_90a's default is wgmma: test_gpu_backward_wgmma.py).
GPU = fm.CompileOptions(target="sm_90a", backward_wgmma=False)
S = 300  # not a multiple of the 128-token tiles


def _backward_spec(variant: str, D: int = 64, dtype: str = "bfloat16",
                   deterministic: bool = False, length: int | None = None,
                   target: str = "sm_90a", atomic_dq: bool = False):
    length = length or S
    fwd = zoo.spec(variant, 1, 2, length, D, dtype=dtype)
    q_side = []
    if fwd.kv_num_blocks is not None:
        blocks = -(-length // 128)
        num = torch.empty(1, 1, blocks, dtype=torch.int32, device="meta")
        idx = torch.empty(1, 1, blocks, blocks, dtype=torch.int32, device="meta")
        q_side = [num, idx, num, idx]
    learnable = [i for i, c in enumerate(fwd.captures) if c.elem.startswith("f")]
    return backward.backward_spec(fwd, q_side, learnable, False, target=target,
                                  deterministic=deterministic, atomic_dq=atomic_dq)


@needs_ptxas
@pytest.mark.parametrize("variant", zoo.names())
def test_zoo_backward_compiles_to_a_cubin_for_sm90a(variant):
    spec = _backward_spec(variant)
    compiled = fm.compile(spec, GPU, keep_ir=True)
    md, ptx = compiled.metadata, compiled.metadata["ptx"]
    assert md["cubin"][:4] == b"\x7fELF"
    assert md["resources"].registers <= 255
    assert ".target sm_90a" in ptx and "ex2.approx.ftz.f32" in ptx
    # One launch: the dk/dv tiles (Hkv x ceil(S/128)) then the dq tiles, two
    # groups of 4 warps (a 64-row band each) per 128-row tile, on tensor cores
    # without spills.
    launch = md["launch"]
    tiles = -(-S // 128)
    assert launch["grid"] == [2 * tiles + 2 * tiles, 1, 1] and launch["block"] == [256, 1, 1]
    res = md["resources"]
    assert (res.spill_stores, res.spill_loads) == (0, 0), res
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in ptx
    assert "cp.async.cg.shared.global" in ptx and "ldmatrix.sync.aligned" in ptx
    assert launch["outputs"][:3] == ["dq", "dk", "dv"]
    grads = [f"capture_grad{i}" for i in range(len(spec.grad_captures))]
    assert launch["spec"]["zero_init"] == grads
    if grads:  # learnable tables accumulate with f32 atomics
        assert re.search(r"(red|atom)\.global\.add\.f32", ptx)
    # No M x N (S x S) buffer at any stage of the backward.
    for stage, text in compiled.ir.items():
        assert not re.search(rf"memref<(\d+x)*{S}x{S}x", text), stage


@needs_ptxas
@pytest.mark.parametrize("variant", ["causal", "alibi_causal"])
@pytest.mark.parametrize("dtype,D", [("bfloat16", 128), ("float16", 64), ("float16", 128)])
def test_tensor_core_backward_has_no_spills(variant, dtype, D):
    """bf16/fp16 at D 64 and 128 (bf16 D = 64: the zoo test above) through
    flexattn-lower-backward-mma: mma.sync, no spills, no stack."""
    md = fm.compile(_backward_spec(variant, D, dtype), GPU).metadata
    res = md["resources"]
    assert res.registers <= 255 and (res.spill_stores, res.spill_loads) == (0, 0), res
    elem = "bf16" if dtype == "bfloat16" else "f16"
    assert f"mma.sync.aligned.m16n8k16.row.col.f32.{elem}.{elem}.f32" in md["ptx"]


@needs_ptxas
@pytest.mark.parametrize("variant,dtype,D", [
    ("alibi_causal", "bfloat16", 128), ("alibi_causal", "float16", 128),
    ("alibi_causal", "float16", 64), ("t5_bias", "bfloat16", 64), ("t5_bias", "float16", 64)])
def test_deterministic_backward_adds_partials_without_atomics(variant, dtype, D):
    """kernel_options deterministic: each capture gradient gains a trailing
    dim of per-thread partial sums (one slot per thread of every dq tile,
    zeroed by the launcher); the kernel adds into its own slots with plain
    loads and stores (no f32 atomics anywhere), on tensor cores, no spills.
    (T5 bias at D = 128 spills a few words in both modes, as before the
    running sums: its bucket math beside dQ's 64 registers.)"""
    spec = _backward_spec(variant, D, dtype, deterministic=True)
    tiles = -(-S // 128)
    assert spec.capture_partials == 1 * 2 * tiles * 256
    md = fm.compile(spec, GPU).metadata
    res, ptx = md["resources"], md["ptx"]
    assert res.registers <= 255 and (res.spill_stores, res.spill_loads) == (0, 0), res
    elem = "bf16" if dtype == "bfloat16" else "f16"
    assert f"mma.sync.aligned.m16n8k16.row.col.f32.{elem}.{elem}.f32" in ptx
    assert not re.search(r"(red|atom)\.global\.add\.f32", ptx)
    args = dict(spec.arguments())
    for i, c in enumerate(spec.grad_captures):
        assert args[f"capture_grad{i}"].shape == (*spec.forward.captures[c].shape,
                                                  spec.capture_partials)
    assert md["launch"]["spec"]["zero_init"] == [f"capture_grad{i}"
                                                 for i in range(len(spec.grad_captures))]


@needs_ptxas
def test_deterministic_partials_must_cover_the_threads():
    import dataclasses

    spec = _backward_spec("alibi_causal", deterministic=True)
    spec = dataclasses.replace(spec, capture_partials=spec.capture_partials - 1)
    with pytest.raises(fm.CompilationError, match="partial capture gradients need a trailing "
                                                  "dim of at least 1536 slots"):
        fm.compile(spec, GPU)


def test_deterministic_scratch_is_bounded():
    fwd = zoo.spec("t5_bias", 64, 16, 8192, 64)
    learnable = [i for i, c in enumerate(fwd.captures) if c.elem.startswith("f")]
    with pytest.raises(ValueError, match="per-thread partial sums would take .* GiB"):
        backward.backward_spec(fwd, [], learnable, False, target="sm_90a", deterministic=True)
    # The CPU's accumulation order is fixed already: no partials there.
    assert backward.backward_spec(fwd, [], learnable, False, deterministic=True).capture_partials == 0


def test_backward_kernel_rule():
    """One rule picks the kernel: the tensor-core one where it covers the
    steps, the CUDA-core one otherwise (here: 128 x 64 tiles), each named."""
    from mlir import ir

    from flexattn_mlir import _native
    from flexattn_mlir.compiler.backends import gpu

    def gap(variant, tile_kv=0):
        opts = fm.CompileOptions(target="sm_90a", tile_kv=tile_kv)
        with _native.new_context():
            ir_text = fm.compile(_backward_spec(variant), opts, keep_ir=True).ir["grid"]
            return gpu.backward_kernel_gap(ir.Module.parse(ir_text))

    assert gap("causal") is None and gap("full") is None
    assert "tiles 128 x 64" in gap("full", tile_kv=64)


def test_gpu_backward_needs_a_precomputed_delta():
    spec = _backward_spec("causal")
    spec = backward.BackwardSpec(**{**spec.__dict__, "delta_input": False})
    with pytest.raises(fm.CompilationError, match="reads a precomputed delta"):
        fm.compile(spec, GPU)


@needs_sm90
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("variant", ["causal", "alibi_causal", "t5_bias", "document"])
@pytest.mark.parametrize("dtype,d", [(torch.bfloat16, 128), (torch.float16, 64)])
@pytest.mark.parametrize("options", [{"backward_wgmma": False}, None, {"backward_atomic_dq": True}],
                         ids=["mma", "wgmma", "atomic_dq"])
def test_gradients_match_torch_on_gpu(variant, dtype, d, options):
    from torch.nn.attention import flex_attention as tfa

    B, H = 1, 2
    score_mod, mask_mod = zoo.make(variant, H, S, "cuda")
    tables = [c.cell_contents for c in (getattr(score_mod, "__closure__", None) or ())
              if isinstance(c.cell_contents, torch.Tensor) and c.cell_contents.is_floating_point()]
    q, k, v, dout = (torch.randn(B, H, S, d, device="cuda", dtype=dtype) for _ in range(4))

    def grads(fn, bm, *inputs, **kw):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        for t in tables:
            t.requires_grad_(True)
            t.grad = None
        fn(*leaves, score_mod=score_mod, block_mask=bm, **kw).backward(dout.to(leaves[0].dtype))
        out = [t.grad for t in leaves] + [t.grad.clone() for t in tables]
        for t in tables:
            t.requires_grad_(False)
        return out

    ours_bm = fm.create_block_mask(mask_mod, None, None, S, S, device="cuda") if mask_mod else None
    torch_bm = tfa.create_block_mask(mask_mod, None, None, S, S, device="cuda") if mask_mod else None
    mine = grads(fm.flex_attention, ours_bm, q, k, v, kernel_options=options)
    # torch flex's eager path gives captured tensors no gradient: compile it.
    ref = grads(torch.compile(tfa.flex_attention), torch_bm, q.float(), k.float(), v.float())
    for name, a, b in zip(["dq", "dk", "dv", "dtable"], mine, ref):
        assert not torch.isnan(a).any(), name
        assert (a.float() - b).norm() / b.norm() < 3e-2, name


@needs_sm90
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("variant", ["alibi_causal", "t5_bias"])
def test_deterministic_gradients_are_bitwise_reproducible_on_gpu(variant):
    """kernel_options={"deterministic": True}: two backward passes give the
    same bits for the capture gradients (and dq, dk, dv), which match the
    default mode's within rounding."""
    B, H, d = 1, 2, 64
    score_mod, mask_mod = zoo.make(variant, H, S, "cuda")
    tables = [c.cell_contents for c in (getattr(score_mod, "__closure__", None) or ())
              if isinstance(c.cell_contents, torch.Tensor) and c.cell_contents.is_floating_point()]
    q, k, v, dout = (torch.randn(B, H, S, d, device="cuda", dtype=torch.bfloat16)
                     for _ in range(4))
    bm = fm.create_block_mask(mask_mod, None, None, S, S, device="cuda") if mask_mod else None

    def grads(options):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        for t in tables:
            t.requires_grad_(True)
            t.grad = None
        fm.flex_attention(*leaves, score_mod=score_mod, block_mask=bm,
                          kernel_options=options).backward(dout)
        out = [t.grad for t in leaves] + [t.grad.clone() for t in tables]
        for t in tables:
            t.requires_grad_(False)
        return out

    first, second = grads({"deterministic": True}), grads({"deterministic": True})
    default = grads(None)
    for name, a, b, c in zip(["dq", "dk", "dv", "dtable"], first, second, default):
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8)), name
        assert (a.float() - c.float()).norm() / c.float().norm() < 1e-2, name
