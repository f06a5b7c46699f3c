"""flexattn_runtime's dynamic-shape kernels (runtime/flexattn_runtime/dynamic.py):
metadata whose shapes name run-time sizes, a grid computed from them, memref
descriptor parameters, the shape checks, and the launch that fills it all in
per call. Against the stub libcuda of test_runtime.py (it records what
cuLaunchKernel received), on CPU tensors."""

from __future__ import annotations

import ctypes

import pytest
import torch

from flexattn_runtime import parse_metadata, validate_args
from flexattn_runtime.dynamic import MemrefParam, evaluate, bind_sizes
from flexattn_runtime.errors import ArgumentError, MetadataError
from flexattn_runtime.kernel import DynamicLaunch, Kernel
from flexattn_runtime.metadata import check_binary_params

from test_prepared_launch import STREAM, stub_cuda_queries
from test_runtime import fake_ptx, stub, stub_libcuda  # noqa: F401

H, HKV, D = 4, 2, 64


def dyn_meta(**over) -> dict:
    """The metadata of a dynamic forward kernel as the compiler writes it
    (flexattn_mlir/compiler/backends/gpu.py launch_metadata)."""
    meta = {
        "version": 1, "key": "k-dyn", "entry": "flexattn_kernel", "target": "sm_80",
        "binary": "dyn.ptx", "binary_format": "ptx",
        "grid": [{"op": "mul", "args": [{"op": "mul", "args": ["B", H]},
                                        {"op": "ceildiv", "args": ["M", 128]}]}, 1, 1],
        "block": [256, 1, 1], "shared_mem_bytes": 49280,
        "arguments": [
            {"name": "q", "shape": ["B", H, "M", D], "dtype": "bfloat16"},
            {"name": "k", "shape": ["B", HKV, "N", D], "dtype": "bfloat16"},
            {"name": "v", "shape": ["B", HKV, "N", D], "dtype": "bfloat16"},
            {"name": "out", "shape": ["B", H, "M", D], "dtype": "bfloat16"},
            {"name": "lse", "shape": ["B", H, "M"], "dtype": "float32"},
            {"name": "scale", "shape": [], "dtype": "float32"},
        ],
        "outputs": ["out", "lse"],
        "params": [{"kind": "memref", "arg": n} for n in ("q", "k", "v", "out", "lse", "scale")]
        + [{"kind": "i64", "value": {"op": "ceildiv", "args": ["M", 128]}}],  # a host size
    }
    meta.update(over)
    return meta


# 3 + 2 rank words per memref descriptor: q/k/v/out rank 4, lse 3, scale 0;
# then the i64 size.
DYN_WORDS = [11, 11, 11, 11, 9, 3, 1]
DYN_PARAM_SIZES = [8] * sum(DYN_WORDS)


def dyn_tensors(b: int, m: int, n: int) -> list[torch.Tensor]:
    return [torch.randn(b, H, m, D, dtype=torch.bfloat16),
            torch.randn(b, HKV, n, D, dtype=torch.bfloat16),
            torch.randn(b, HKV, n, D, dtype=torch.bfloat16),
            torch.empty(b, H, m, D, dtype=torch.bfloat16),
            torch.empty(b, H, m, dtype=torch.float32),
            torch.tensor(0.125, dtype=torch.float32)]


def test_dynamic_metadata_round_trips_and_evaluates_its_grid():
    meta = parse_metadata(dyn_meta())
    assert meta.dynamic and meta.argument("q").shape == ("B", H, "M", D)
    assert meta.to_dict() == dyn_meta()
    assert parse_metadata(meta.to_dict()) == meta
    assert all(isinstance(p, MemrefParam) for p in meta.params[:-1]) and meta.params[-1].computed
    sizes = bind_sizes(meta.arguments, [t.shape for t in dyn_tensors(3, 300, 77)])
    assert sizes == {"B": 3, "M": 300, "N": 77}
    assert [evaluate(g, sizes) for g in meta.grid] == [3 * H * 3, 1, 1]
    # A PTX entry takes 3 + 2 rank words per descriptor.
    check_binary_params(meta, fake_ptx("flexattn_kernel", DYN_PARAM_SIZES))
    with pytest.raises(MetadataError, match=r"takes 56 parameters .* lists 57"):
        check_binary_params(meta, fake_ptx("flexattn_kernel", DYN_PARAM_SIZES[:-1]))


@pytest.mark.parametrize("over, match", [
    ({"grid": ["T", 1, 1]}, r"grid\[0\]: names no run-time size of the arguments: 'T'"),
    ({"grid": [{"op": "pow", "args": ["B", 2]}, 1, 1]}, r"grid\[0\]\.op: expected one of"),
    ({"grid": [{"op": "mul", "args": ["B"]}, 1, 1]}, r"grid\[0\]\.args: expected two sizes"),
    ({"params": [{"kind": "i64", "value": {"op": "ceildiv", "args": ["T", 128]}}]},
     r"params\[0\]\.value\.args\[0\]: names no run-time size"),
    ({"params": [{"kind": "ptr", "arg": "q"}]},
     r"params\[0\]\.kind: argument 'q' has run-time dims \['B', 4, 'M', 64\]: the kernel takes "
     r"it as a 'memref'"),
    ({"arguments": [{"name": "q", "shape": ["B", "4x"], "dtype": "bfloat16"}], "params": [],
      "outputs": []}, r"arguments\[0\]\.shape\[1\]: expected a size name"),
])
def test_dynamic_metadata_errors_name_the_field(over, match):
    with pytest.raises(MetadataError, match=match):
        parse_metadata(dyn_meta(**over))


def test_dynamic_shapes_are_checked_per_argument():
    meta = parse_metadata(dyn_meta())
    validate_args(meta, dyn_tensors(2, 300, 70), device="cpu")  # any B, M, N
    t = dyn_tensors(2, 300, 70)
    t[1] = torch.randn(3, HKV, 70, D, dtype=torch.bfloat16)
    with pytest.raises(ArgumentError, match=r"argument 'k': dim 0 \(B\) is 3, but argument "
                                            r"'q' has B = 2 \(expected shape \[B, 2, N, 64\]\)"):
        validate_args(meta, t, device="cpu")
    t = dyn_tensors(2, 300, 70)
    t[2] = torch.randn(2, HKV, 71, D, dtype=torch.bfloat16)
    with pytest.raises(ArgumentError, match=r"argument 'v': dim 2 \(N\) is 71, but argument "
                                            r"'k' has N = 70"):
        validate_args(meta, t, device="cpu")
    t = dyn_tensors(2, 300, 70)
    t[0] = torch.randn(2, H + 1, 300, D, dtype=torch.bfloat16)
    with pytest.raises(ArgumentError, match=r"argument 'q': expected shape \[B, 4, M, 64\], got "
                                            r"\[2, 5, 300, 64\] \(dim 1 must be 4\)"):
        validate_args(meta, t, device="cpu")
    t = dyn_tensors(2, 300, 70)
    t[4] = torch.empty(2, H, 300, 1, dtype=torch.float32)
    with pytest.raises(ArgumentError, match=r"argument 'lse': expected shape \[B, 4, M\] "
                                            r"\(rank 3\), got \[2, 4, 300, 1\]"):
        validate_args(meta, t, device="cpu")


@pytest.fixture
def dynamic_kernel(stub, monkeypatch):
    stub_cuda_queries(monkeypatch.setattr)
    stub.stub_set_param_sizes(len(DYN_PARAM_SIZES),
                              (ctypes.c_int * len(DYN_PARAM_SIZES))(*DYN_PARAM_SIZES))
    return Kernel(dyn_meta(), fake_ptx("flexattn_kernel", DYN_PARAM_SIZES))


def _descriptor(t: torch.Tensor) -> list[int]:
    strides = list(t.stride())
    return [t.data_ptr(), t.data_ptr(), 0, *t.shape, *strides]


def test_dynamic_launch_computes_grid_and_descriptors_per_call(stub, dynamic_kernel):
    launch = dynamic_kernel.prepare(0)
    assert isinstance(launch, DynamicLaunch) and dynamic_kernel.prepare(0) is launch
    for b, m, n in ((1, 128, 128), (2, 300, 77), (3, 1, 4000)):
        t = dyn_tensors(b, m, n)
        launch(t)
        assert stub.last() == "cuLaunchKernel"
        rec = stub.rec()
        assert rec[:10] == [0xF00, b * H * -(-m // 128), 1, 1, 256, 1, 1, 49280, STREAM, 1]
        assert rec[10:] == [w for x in t for w in _descriptor(x)] + [-(-m // 128)]
    assert len(launch.launchers) == 3  # one launch object per grid


def test_dynamic_kernel_call_validates_before_launching(stub, dynamic_kernel, monkeypatch):
    from flexattn_runtime import kernel as kernel_mod

    monkeypatch.setattr(kernel_mod, "current_device", lambda: 0)
    validate = kernel_mod.validate_args
    monkeypatch.setattr(kernel_mod, "validate_args",
                        lambda meta, args, device: validate(meta, args, device="cpu"))
    t = dyn_tensors(2, 200, 90)
    t[3] = torch.empty(2, H, 201, D, dtype=torch.bfloat16)
    stub.stub_fail_next(999)  # any driver call would raise CudaError
    with pytest.raises(ArgumentError, match=r"argument 'out': dim 2 \(M\) is 201, but argument "
                                            r"'q' has M = 200"):
        dynamic_kernel(t)
    stub.stub_fail_next(0)
    with pytest.raises(TypeError, match="run-time shapes"):
        dynamic_kernel.empty_outputs(0)


def test_descriptor_cache_keys_a_dynamic_kernels_shape(stub, monkeypatch):
    """A TMA descriptor encodes the tensor's shape: for a dynamic kernel the
    same address with another shape is another descriptor."""
    from flexattn_runtime import kernel as kernel_mod

    stub_cuda_queries(monkeypatch.setattr)
    uploads = []
    make = kernel_mod.upload

    def upload(raw, device, encoding):
        uploads.append(encoding.global_dim)
        return make(raw, device, encoding)

    monkeypatch.setattr(kernel_mod, "upload", upload)
    meta = dyn_meta(params=[{"kind": "tensormap", "arg": "q", "elem": "bf16",
                             "box": [64, 128, 1, 1], "swizzle": "128B"}]
                    + [{"kind": "memref", "arg": n} for n in ("k", "v", "out", "lse", "scale")])
    sizes = [8] + DYN_PARAM_SIZES[11:-1]  # q's tensormap, then k..scale as dyn_meta
    stub.stub_set_param_sizes(len(sizes), (ctypes.c_int * len(sizes))(*sizes))
    kernel = Kernel(meta, fake_ptx("flexattn_kernel", sizes))
    launch = kernel.prepare(0)
    storage = torch.randn(2 * H * 512 * D, dtype=torch.bfloat16)
    for m in (512, 256, 512):
        t = dyn_tensors(2, m, 64)
        t[0] = storage[:2 * H * m * D].view(2, H, m, D)  # one address, two shapes
        launch(t)
    assert uploads == [(D, 512, H, 2), (D, 256, H, 2)]
    assert kernel.descriptors.hits == 1
