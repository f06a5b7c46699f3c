"""The GPU dynamic-shape kernel (CompileOptions.dynamic on sm_80 and sm_90a:
the mma.sync kernel with B, M, N, the block-mask dims and the scale as
run-time values; docs/inference.md). Without a GPU: every table variant
compiles to a cubin without spills, its launch metadata names the run-time
dims and says how the grid follows from them, and a call through the
runtime (the stub libcuda of test_runtime.py) launches the grid of each
call's shape from one kernel. On a GPU: the issue's acceptance, one kernel
at seven lengths and two batch sizes against torch's flex_attention."""

from __future__ import annotations

import ctypes
import math

import pytest
import torch
import torch.nn.attention.flex_attention as tfa

import flexattn_mlir as fm
from flexattn_mlir.examples import zoo

from test_runtime import stub, stub_libcuda  # noqa: F401

HAS_GPU = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
VARIANTS = ("full", "causal", "document", "alibi_causal")


def _dynamic_spec(variant: str, D: int, dtype: str = "bfloat16"):
    """The dynamic spec flex_attention builds for a zoo variant (H = 4; a
    block mask of torch's 128 x 128 blocks where the variant has one)."""
    return zoo.spec(variant, 1, 4, 1000, D, dtype, return_lse=True, dynamic=True)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("variant", VARIANTS)
def test_dynamic_gpu_kernel_assembles_without_spills(variant, D, dtype):
    """sm_90a (the mma.sync kernel compiled for Hopper) at every case; the
    launch names B, M, N and computes the grid from them."""
    compiled = fm.compile(_dynamic_spec(variant, D, dtype),
                          fm.CompileOptions(target="sm_90a", dynamic=True), keep_ir=False)
    md = compiled.metadata
    assert md["cubin"][:4] == b"\x7fELF"
    res = md["resources"]
    assert res.registers <= 255 and (res.spill_stores, res.spill_loads) == (0, 0), res
    launch = md["launch"]
    args = {a["name"]: a["shape"] for a in launch["arguments"]}
    assert args["q"] == ["B", 4, "M", D] and args["k"] == ["B", 4, "N", D]
    assert args["out"] == ["B", 4, "M", D] and args["lse"] == ["B", 4, "M"]
    # ceil(M / 128) Q tiles of B x H heads, one CTA each.
    from flexattn_runtime import parse_metadata
    from flexattn_runtime.dynamic import evaluate

    meta = parse_metadata(dict(launch, binary="k.cubin", binary_format="cubin"))
    for B, M in ((1, 1), (3, 300), (2, 8192)):
        assert evaluate(meta.grid[0], {"B": B, "M": M, "N": 5}) == B * 4 * math.ceil(M / 128)
    # Memref descriptors, and sizes the host computed (the Q tiles: i64).
    assert {p["kind"] for p in launch["params"]} == {"memref", "i64"}
    sizes = [p["value"] for p in launch["params"] if p["kind"] == "i64"]
    assert sizes == [{"op": "ceildiv", "args": ["M", 128]}]
    assert ".maxntid" in md["ptx"] and "mma.sync.aligned.m16n8k16" in md["ptx"]


@pytest.mark.parametrize("variant,D", [("causal", 128), ("alibi_causal", 64)])
def test_dynamic_sm80_kernel_assembles_without_spills(variant, D):
    compiled = fm.compile(_dynamic_spec(variant, D),
                          fm.CompileOptions(target="sm_80", dynamic=True), keep_ir=False)
    res = compiled.metadata["resources"]
    assert res.registers <= 255 and (res.spill_stores, res.spill_loads) == (0, 0), res


def test_dynamic_gpu_options():
    assert fm.CompileOptions(target="sm_90a", dynamic=True).dynamic is True
    assert fm.CompileOptions(target="sm_80").dynamic is False  # static stays the default
    with pytest.raises(ValueError, match="decode=True and persistent > 0 are static only"):
        fm.CompileOptions(target="sm_90a", dynamic=True, persistent=132)
    with pytest.raises(ValueError, match="decode=True and persistent > 0 are static only"):
        fm.CompileOptions(target="sm_80", dynamic=True, decode=True)


def test_one_dynamic_gpu_kernel_serves_every_call_through_the_runtime(stub, monkeypatch):
    """flex_attention with kernel_options={"dynamic": True} on (CPU tensors
    standing in for) an sm_90a device: one compilation for every B, M, N;
    each launch gets the grid and the memref descriptors of its own call."""
    from flexattn_mlir.execution import kernels
    from flexattn_runtime.metadata import param_sizes
    from test_prepared_launch import STREAM, stub_gpu_target

    stub_gpu_target(monkeypatch.setattr, "sm_90a")
    H, D = 2, 64
    slopes = torch.rand(H)

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    def call(B, M, N):
        q = torch.randn(B, H, M, D, dtype=torch.bfloat16)
        k, v = (torch.randn(B, H, N, D, dtype=torch.bfloat16) for _ in range(2))
        return q, fm.flex_attention(q, k, v, score_mod=alibi, kernel_options={"dynamic": True})

    before = fm.attention_compile_count()
    call(1, 100, 100)  # compiles
    meta = next(reversed(kernels._kernels._items.values())).kernel.metadata
    ranks = {a.name: len(a.shape) for a in meta.arguments}
    sizes = [n for p in meta.params for n in param_sizes(p, ranks)]
    assert len(sizes) <= 118, len(sizes)  # what the stub records
    stub.stub_set_param_sizes(len(sizes), (ctypes.c_int * len(sizes))(*sizes))
    for B, M, N in ((1, 100, 100), (2, 300, 77), (3, 129, 1000)):
        q, out = call(B, M, N)
        assert out.shape == (B, H, M, D) and stub.last() == "cuLaunchKernel"
        rec = stub.rec()
        assert rec[1:4] == [B * H * math.ceil(M / 128), 1, 1] and rec[8] == STREAM
        # q's descriptor: pointers, offset, sizes, strides.
        assert rec[10:21] == [q.data_ptr(), q.data_ptr(), 0, B, H, M, D, H * M * D, M * D, D, 1]
    assert fm.attention_compile_count() - before == 1


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU of compute capability 8.0 or later "
                                        "(bench/gpu_dynamic.py runs this on the H200)")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_one_gpu_kernel_for_seven_lengths_and_two_batch_sizes(dtype):
    """The issue's acceptance on the GPU: ALiBi + a causal block mask at seven
    (M, N) pairs (lengths not multiples of 128, M != N) and two batch sizes,
    each with its own scale; the compile counter moves once."""
    H, D = 4, 64
    slopes = torch.rand(H, device="cuda")

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    before = fm.attention_compile_count()
    for B in (1, 3):
        for M, N in ((1, 1), (77, 77), (128, 128), (300, 1000), (1000, 300), (1100, 1100),
                     (2049, 2049)):
            q = torch.randn(B, H, M, D, dtype=dtype, device="cuda")
            k, v = (torch.randn(B, H, N, D, dtype=dtype, device="cuda") for _ in range(2))
            scale = 0.05 + M / 10000
            bm = fm.create_block_mask(causal, B, 1, M, N, device="cuda")
            out, lse = fm.flex_attention(q, k, v, score_mod=alibi, block_mask=bm, scale=scale,
                                         return_lse=True, kernel_options={"dynamic": True})
            ref, ref_lse = tfa.flex_attention(
                q.float(), k.float(), v.float(), score_mod=alibi, scale=scale, return_lse=True,
                block_mask=tfa.create_block_mask(causal, B, 1, M, N, device="cuda"))
            assert ((out.float() - ref).norm() / ref.norm()) < 2e-2, (B, M, N)
            fin = torch.isfinite(ref_lse)
            assert torch.equal(torch.isfinite(lse), fin)
            assert (lse[fin] - ref_lse[fin]).abs().max() < 5e-2, (B, M, N)
    assert fm.attention_compile_count() - before == 1
