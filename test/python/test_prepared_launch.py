"""flexattn_runtime's PreparedLaunch (runtime/flexattn_runtime/kernel.py): the
launch with its fixed parts made once, which a call fills with the tensors'
addresses. Run against the stub libcuda of test_runtime.py (it records what
cuLaunchKernel received), with torch's CUDA queries (current device, stream,
capture) and the descriptor upload replaced, so everything here runs on the
CPU. What moved out of the per-call path is checked where it went: the
alignment still raises the Kernel's error before any driver call, a launch
from another current device still raises the validation error."""

from __future__ import annotations

import ctypes

import pytest
import torch

from flexattn_runtime import driver as drv
from flexattn_runtime import kernel as kernel_mod
from flexattn_runtime.errors import ArgumentError
from flexattn_runtime.kernel import Kernel
from flexattn_runtime.tensormap import Descriptor, GraphStaging

from test_runtime import (ATTN_PARAM_SIZES, B, D, H, M, N, NQ, attn_binary,  # noqa: F401
                          attn_meta, attn_tensors, stub, stub_libcuda)

STREAM = 0x5555


def stub_cuda_queries(set_attr) -> None:
    """What a launch needs beyond libcuda (the stub), on a machine without a
    GPU: torch's CUDA queries answered with constants (device 0, STREAM, no
    capture), TMA descriptors uploaded into CPU tensors, no pinned memory.
    ``set_attr``: ``setattr``, or a monkeypatch's (bench/gpu_hit_profile.py
    uses this too)."""
    set_attr(kernel_mod, "_current_index", lambda: 0)
    set_attr(kernel_mod, "_current_stream", lambda device: STREAM)
    set_attr(kernel_mod, "upload", lambda raw, device, encoding: Descriptor(
        torch.zeros(len(raw), dtype=torch.uint8), None, encoding))
    set_attr(torch.cuda, "is_current_stream_capturing", lambda: False)
    set_attr(GraphStaging, "refill", lambda self: setattr(self, "free", self.SLOTS))


def stub_gpu_target(set_attr, target: str) -> None:
    """flex_attention on CPU tensors compiles ``target``'s kernel (ptxas) and
    launches it through the runtime and the stub libcuda, as on a GPU: a
    first call validates its tensors as CPU tensors."""
    from flexattn_mlir.compiler import targets
    from flexattn_mlir.execution import kernels

    stub_cuda_queries(set_attr)
    set_attr(kernel_mod, "_device_index", lambda device: 0)
    set_attr(kernel_mod, "current_device", lambda: 0)
    validate = kernel_mod.validate_args
    set_attr(kernel_mod, "validate_args",
             lambda meta, args, device: validate(meta, args, device="cpu"))
    gpu = targets.target(target)
    set_attr(targets, "for_device", lambda device: gpu)
    # The stub device's compute capability: an sm_80 kernel is its PTX.
    set_attr(kernels, "current_capability", lambda: (9, 0))


@pytest.fixture
def prepared(stub, monkeypatch):
    """A PreparedLaunch of the attention-shaped metadata on device 0; uploads
    of TMA descriptors are recorded."""
    uploads = []
    stub_cuda_queries(monkeypatch.setattr)
    make = kernel_mod.upload

    def upload(raw, device, encoding):
        uploads.append(encoding.global_address)
        return make(raw, device, encoding)

    monkeypatch.setattr(kernel_mod, "upload", upload)
    stub.stub_set_param_sizes(len(ATTN_PARAM_SIZES),
                              (ctypes.c_int * len(ATTN_PARAM_SIZES))(*ATTN_PARAM_SIZES))
    kernel = Kernel(attn_meta(), attn_binary())
    return kernel, kernel.prepare(0), uploads


def _ordered(t):
    return [t[n] for n in ("q", "k", "v", "out", "lse", "kv_num_blocks", "kv_indices")]


def test_prepared_launch_writes_each_calls_addresses(stub, prepared):
    kernel, launch, uploads = prepared
    assert kernel.prepare(0) is launch
    t = attn_tensors()
    launch(_ordered(t))
    assert stub.last() == "cuLaunchKernel"
    rec = stub.rec()
    assert rec[:10] == [0xF00, NQ, B * H, 1, 384, 1, 1, 200 * 1024, STREAM, 1]
    descs = list(kernel.descriptors._entries.values())
    f32 = int.from_bytes(ctypes.c_float(0.125), "little")
    assert rec[10:] == [*(d.data_ptr for d in descs), t["out"].data_ptr(),
                        t["lse"].data_ptr(), t["kv_num_blocks"].data_ptr(),
                        t["kv_indices"].data_ptr(), f32, N, (1 << 64) - 5]
    assert uploads == [t["q"].data_ptr(), t["k"].data_ptr(), t["v"].data_ptr()]
    # Another call: new outputs, the same q/k/v (their descriptors are reused).
    t2 = dict(t, out=torch.empty_like(t["out"]), lse=torch.empty_like(t["lse"]))
    launch(_ordered(t2))
    assert stub.rec()[13:15] == [t2["out"].data_ptr(), t2["lse"].data_ptr()]
    assert len(uploads) == 3 and kernel.descriptors.hits == 3
    # A new q gets its own descriptor.
    t3 = dict(t2, q=torch.randn_like(t["q"]))
    launch(_ordered(t3))
    assert uploads[3:] == [t3["q"].data_ptr()]
    (desc,) = [d for d in kernel.descriptors._entries.values()
               if d.encoding.global_address == t3["q"].data_ptr()]
    assert stub.rec()[10] == desc.data_ptr


def test_prepared_launch_checks_alignment_before_any_driver_call(stub, prepared):
    _, launch, _ = prepared
    t = attn_tensors()
    flat = torch.empty(B * H * M * D + 1, dtype=torch.bfloat16)
    t["q"] = flat[1:].view(B, H, M, D)
    stub.stub_fail_next(999)  # any driver call would raise CudaError
    with pytest.raises(ArgumentError, match="argument 'q': data_ptr .* is not 16-byte aligned"):
        launch(_ordered(t))
    stub.stub_fail_next(0)


def test_prepared_launch_from_another_current_device_is_validated(stub, prepared, monkeypatch):
    _, launch, _ = prepared
    monkeypatch.setattr(kernel_mod, "_current_index", lambda: 1)
    with pytest.raises(ArgumentError, match="argument 'q': expected a CUDA tensor on cuda:1, "
                                            "got a CPU tensor"):
        launch(_ordered(attn_tensors()))


def test_kernel_launch_cluster_config_takes_each_calls_stream(stub):
    stub.stub_set_param_sizes(1, (ctypes.c_int * 1)(8))
    drv.init()
    value = ctypes.c_uint64(0xABC)
    params = (ctypes.c_void_p * 1)(ctypes.addressof(value))
    launch = drv.KernelLaunch(0xF00, (8, 4, 1), (128, 1, 1), 4096, (2, 1, 1))
    for stream in (0x77, 0x78):
        launch(stream, params)
        assert stub.last() == "cuLaunchKernelEx"
        assert stub.rec()[8] == stream and stub.rec()[-1] == 0xABC


def _hit(stub, meta, call):
    """Runs ``call`` (a flex_attention call that launches the kernel of
    ``meta``) with the stub recording that kernel's parameters: its result,
    and the first 8 bytes of each pointer/descriptor parameter by argument."""
    from flexattn_runtime.metadata import param_size

    sizes = [param_size(p) for p in meta.params]
    assert len(sizes) <= 118, len(sizes)  # what the stub records
    stub.stub_set_param_sizes(len(sizes), (ctypes.c_int * len(sizes))(*sizes))
    result = call()
    assert stub.last() == "cuLaunchKernel"
    params = stub.rec()[10:]
    return result, {p.arg: params[i] for i, p in enumerate(meta.params) if hasattr(p, "arg")}


def test_flex_attention_gpu_hit_launches_its_prepared_launch(stub, monkeypatch):
    """flex_attention's GPU path on the stub: a hit launches the plan's
    PreparedLaunch with this call's addresses; a misaligned query (same
    shape, dtype and device: the same plan) raises at a hit what a first call
    raises."""
    import flexattn_mlir as fm
    from flexattn_mlir.execution import call_plans, kernels

    stub_gpu_target(monkeypatch.setattr, "sm_90a")
    b, h, s, d = 1, 2, 128, 64
    q, k, v = (torch.randn(b, h, s, d, dtype=torch.bfloat16) for _ in range(3))
    mask = fm.create_block_mask(lambda b, h, q_idx, kv_idx: q_idx >= kv_idx, None, None, s, s)
    fm.flex_attention(q, k, v, block_mask=mask)  # compiles (ptxas), plans
    key = call_plans.call_key(q, k, v, None, mask, None, False, False, False, None, None)
    launch = call_plans.find(key, None, mask).kernel
    meta = launch.kernel.metadata
    hits = call_plans.hits
    out, by_arg = _hit(stub, meta, lambda: fm.flex_attention(q, k, v, block_mask=mask))
    assert call_plans.hits == hits + 1
    assert by_arg["out"] == out.data_ptr()
    described = {d.data_ptr: d.encoding.global_address
                 for d in launch.kernel.descriptors._entries.values()}
    assert described[by_arg["q"]] == q.data_ptr()

    flat = torch.empty(q.numel() + 8, dtype=torch.bfloat16)
    misaligned = flat[1:q.numel() + 1].view(q.shape)
    misaligned.copy_(q)
    message = "argument 'q': data_ptr .* is not 16-byte aligned"
    with pytest.raises(ArgumentError, match=message):
        fm.flex_attention(misaligned, k, v, block_mask=mask)
    assert call_plans.hits == hits + 2  # raised at a hit
    kernels.clear_table()  # forgets the plans: a first call
    with pytest.raises(ArgumentError, match=message):
        fm.flex_attention(misaligned, k, v, block_mask=mask)
    assert call_plans.hits == hits + 2


def test_flex_attention_gpu_decode_hit_passes_its_split_scratch(stub, monkeypatch):
    """A decode kernel's hit on the stub: the prepared launch gets the split
    scratch (``split_out``, ``split_lse``: torch allocations of their own)
    besides this call's q/k/v, and the merge makes out."""
    import flexattn_mlir as fm
    from flexattn_mlir.execution import call_plans

    stub_gpu_target(monkeypatch.setattr, "sm_90a")
    q = torch.randn(1, 8, 1, 64, dtype=torch.bfloat16)
    k, v = (torch.randn(1, 2, 512, 64, dtype=torch.bfloat16) for _ in range(2))
    stub.stub_set_param_sizes(0, None)  # records no parameters until this kernel's are known
    fm.flex_attention(q, k, v, enable_gqa=True)  # compiles the decode kernel (ptxas), plans
    key = call_plans.call_key(q, k, v, None, None, None, True, False, False, None, None)
    run = call_plans.find(key, None, None).kernel
    launch = run.keywords["launch"]  # the PreparedLaunch inside the split's run
    meta = launch.kernel.metadata
    assert {"split_out", "split_lse"} <= set(meta.argument_names)
    hits = call_plans.hits
    out, by_arg = _hit(stub, meta, lambda: fm.flex_attention(q, k, v, enable_gqa=True))
    assert call_plans.hits == hits + 1
    # The kernel reads this call's q/k/v and writes only the scratch (the
    # merge after it writes out).
    assert [by_arg[n] for n in "qkv"] == [t.data_ptr() for t in (q, k, v)]
    assert "out" not in by_arg and out.shape == q.shape
    scratch = {by_arg["split_out"], by_arg["split_lse"]}
    assert 0 not in scratch and len(scratch) == 2
    assert not scratch & {q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()}
