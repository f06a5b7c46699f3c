"""The GPU backward's preprocessing kernel, delta = rowsum(dout * out) - dlse
(flexattn_mlir/compiler/delta.py). Without a GPU: the kernel is built in
upstream dialects, verifies, and compiles through the backend's ``delta``
stages to a cubin for sm_90a and sm_80 with 16-byte loads and a shuffle tree
(ptxas from the test extra's wheel; skipped with the reason where none is
found); head dims it does not cover fall back to torch. With a CUDA GPU:
``autograd.delta`` against float64 (bench/gpu_backward.py checks it on the
H200 too: ``delta_err`` of every case).
"""

from __future__ import annotations

import re

import pytest
import torch
from mlir import ir

import flexattn_mlir as fm
from flexattn_mlir import _native
from flexattn_mlir.compiler import driver
from flexattn_mlir.compiler.delta import THREADS, delta_spec
from flexattn_mlir.compiler.spec import BufferType
from flexattn_mlir.execution import autograd
from test_gpu_backward import needs_ptxas

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU; bench/gpu_backward.py checks the "
                                       "delta kernel on the H200")


def test_spec_covers_16_byte_rows_only():
    spec = delta_spec(BufferType((2, 3, 100, 128), "bf16"), True)
    assert (spec.vector, spec.lanes, spec.rows) == (8, 16, 600)
    assert [n for n, _ in spec.arguments()] == ["dout", "out", "dlse", "delta"]
    assert spec.output_names() == ["delta"]
    assert delta_spec(BufferType((2, 3, 100, 96), "f16"), False).lanes == 16  # 12 lanes used
    assert delta_spec(BufferType((1, 1, 8, 64), "f32"), False).lanes == 16
    assert delta_spec(BufferType((1, 1, 8, 100), "bf16"), False) is None  # not whole 16-byte vectors
    assert delta_spec(BufferType((1, 1, 8, 512), "bf16"), False) is None  # over 32 lanes a row
    assert delta_spec(BufferType((1, 1, 8, 64), "f64"), False) is None
    assert delta_spec(BufferType((1, 1, 0, 64), "bf16"), False) is None
    assert spec.digest() != delta_spec(BufferType((2, 3, 100, 128), "bf16"), False).digest()


@pytest.mark.parametrize("dlse", [False, True])
def test_module_verifies(dlse):
    with _native.new_context(), ir.Location.unknown():
        mod = delta_spec(BufferType((1, 2, 300, 64), "bf16"), dlse).build()
        mod.operation.verify()
        text = str(mod)
    assert len(re.findall(r"gpu.shuffle +xor", text)) == 3  # 8 lanes a row at D = 64
    assert ("memref.load %" in text) == dlse


@needs_ptxas
@pytest.mark.parametrize("target", ["sm_90a", "sm_80"])
@pytest.mark.parametrize("shape,dtype,dlse", [((1, 2, 300, 128), "bf16", False),
                                              ((2, 4, 77, 64), "f16", True),
                                              ((1, 1, 33, 96), "f32", False)])
def test_compiles_to_a_cubin(target, shape, dtype, dlse):
    spec = delta_spec(BufferType(shape, dtype), dlse)
    compiled = driver.compile(spec, fm.CompileOptions(target=target))
    ptx, launch = compiled.metadata["ptx"], compiled.metadata["launch"]
    assert compiled.metadata["cubin"]
    assert compiled.metadata["resources"].spill_stores == 0
    # One 16-byte load of dout and one of out a thread; the row's lanes
    # reduced by a butterfly.
    assert len(re.findall(r"ld\.global\.v4\.b32", ptx)) == 2
    assert len(re.findall(r"shfl\.sync\.bfly", ptx)) == spec.lanes.bit_length() - 1
    rows_per_cta = THREADS // spec.lanes
    assert launch["grid"] == [-(-spec.rows // rows_per_cta), 1, 1]
    assert launch["block"] == [THREADS, 1, 1]
    assert [a["name"] for a in launch["arguments"]] == [n for n, _ in spec.arguments()]
    assert launch["outputs"] == ["delta"]


def test_cpu_tensors_take_torch():
    out, dout = torch.randn(1, 2, 5, 64), torch.randn(1, 2, 5, 64)
    want = (out.double() * dout.double()).sum(-1)
    assert torch.allclose(autograd.delta(out, dout, target="sm_90a").double(), want, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("dtype,dv", [(torch.bfloat16, 128), (torch.float16, 64),
                                      (torch.float32, 64), (torch.bfloat16, 100)])
@pytest.mark.parametrize("dlse", [False, True])
def test_delta_on_gpu_matches_float64(dtype, dv, dlse):
    major, minor = torch.cuda.get_device_capability()
    target = "sm_90a" if (major, minor) == (9, 0) else "sm_80"
    out = torch.randn(2, 3, 333, dv, device="cuda", dtype=dtype)
    dout = torch.randn_like(out)
    lse = torch.randn(2, 3, 333, device="cuda") if dlse else None
    got = autograd.delta(out, dout, lse, target)
    want = (out.double() * dout.double()).sum(-1) - (lse.double() if dlse else 0)
    scale = (out.double() * dout.double()).abs().sum(-1).max()
    assert got.dtype == torch.float32 and got.shape == out.shape[:3]
    assert float((got.double() - want).abs().max() / scale) < 1e-6
