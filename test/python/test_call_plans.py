"""The cache-hit path of flex_attention (flexattn_mlir/execution/call_plans.py):
a repeated call launches its kernel after a key lookup and identity guards,
sees what changed since (captured tensors changed in place, rebound globals
and closure variables, block masks changed in place or reassigned mask_mods),
raises the same errors as a first call, and reads nothing back from the device
(checked on CPU tensors by :func:`forbid_host_reads`, on CUDA with torch's
sync debug mode). CUDA-graph capture of a step that calls flex_attention is at
the end (skips without a GPU of a supported target).

Tolerances: float32 against torch's eager flex_attention, atol 2e-5, rtol 1e-5.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.nn.attention import flex_attention as tfa

import flexattn_mlir as fm
from flexattn_mlir.compiler import targets
from flexattn_mlir.execution import call_plans, kernels
from flexattn_mlir.frontend import capture

from test_api import F32, torch_flex

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

B, H, S, D = 1, 2, 128, 16


def qkv(device="cpu", dtype=torch.float32):
    return [torch.randn(B, H, S, D, device=device, dtype=dtype) for _ in range(3)]


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


SLOPES = torch.tensor([0.5, 0.25])
OFFSET = 3.0


def alibi(score, b, h, q_idx, kv_idx):
    return score + SLOPES[h] * (kv_idx - q_idx)


def shifted(score, b, h, q_idx, kv_idx):
    return score + OFFSET * (kv_idx > q_idx)


class Hits:
    """How many calls found their plan since it was made."""

    def __init__(self):
        self.start = call_plans.hits

    @property
    def count(self) -> int:
        return call_plans.hits - self.start


def test_a_repeated_call_is_a_hit_and_gives_the_same_result():
    q, k, v = qkv()
    bm = fm.create_block_mask(causal, None, None, S, S)
    first = fm.flex_attention(q, k, v, score_mod=alibi, block_mask=bm)
    compiles, hits = fm.attention_compile_count(), Hits()
    again = fm.flex_attention(q, k, v, score_mod=alibi, block_mask=bm)
    assert hits.count == 1 and fm.attention_compile_count() == compiles
    assert torch.equal(first, again)
    ref = torch_flex(q, k, v, score_mod=alibi,
                     block_mask=tfa.create_block_mask(causal, None, None, S, S, device="cpu"))
    torch.testing.assert_close(again, ref, **F32)
    # New tensors of the same shapes: a hit too (the key holds no tensor).
    q2, k2, v2 = qkv()
    out, lse = fm.flex_attention(q2, k2, v2, score_mod=alibi, block_mask=bm, return_lse=True)
    assert hits.count == 1, "return_lse is in the key"
    out2, lse2 = fm.flex_attention(q2, k2, v2, score_mod=alibi, block_mask=bm, return_lse=True)
    assert hits.count == 2 and torch.equal(out, out2) and torch.equal(lse, lse2)


def test_captured_tensor_changed_in_place_is_seen_at_a_hit():
    q, k, v = qkv()
    saved = SLOPES.clone()
    try:
        before = fm.flex_attention(q, k, v, score_mod=alibi)
        hits = Hits()
        SLOPES.mul_(4.0)
        after = fm.flex_attention(q, k, v, score_mod=alibi)
        assert hits.count == 1, "a value changed in place needs no new plan"
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, torch_flex(q, k, v, score_mod=alibi), **F32)
    finally:
        SLOPES.copy_(saved)


def test_rebound_global_and_closure_variables_are_seen():
    global OFFSET
    q, k, v = qkv()
    fm.flex_attention(q, k, v, score_mod=shifted)
    hits = Hits()
    OFFSET = -2.0  # a scalar baked into the IR: a new capture, a new kernel
    try:
        out = fm.flex_attention(q, k, v, score_mod=shifted)
        assert hits.count == 0
        torch.testing.assert_close(out, torch_flex(q, k, v, score_mod=shifted), **F32)
    finally:
        OFFSET = 3.0

    bias = torch.randn(S)

    def by_key(score, b, h, q_idx, kv_idx):
        return score + bias[kv_idx]

    fm.flex_attention(q, k, v, score_mod=by_key)
    bias = torch.randn(S)  # the closure cell now holds another tensor
    hits = Hits()
    out = fm.flex_attention(q, k, v, score_mod=by_key)
    assert hits.count == 0
    torch.testing.assert_close(out, torch_flex(q, k, v, score_mod=by_key), **F32)

    tables = [torch.randn(S), torch.randn(S)]

    def from_list(score, b, h, q_idx, kv_idx):
        return score + tables[1][q_idx]

    fm.flex_attention(q, k, v, score_mod=from_list)
    tables[1] = torch.randn(S)  # a list item replaced
    hits = Hits()
    out = fm.flex_attention(q, k, v, score_mod=from_list)
    assert hits.count == 0
    torch.testing.assert_close(out, torch_flex(q, k, v, score_mod=from_list), **F32)


def test_block_mask_changed_in_place_or_reassigned_is_checked_again():
    q, k, v = qkv()
    bm = fm.create_block_mask(causal, None, None, S, S, BLOCK_SIZE=32)
    fm.flex_attention(q, k, v, block_mask=bm)
    saved = bm.kv_indices.clone()
    bm.kv_indices.fill_(99)  # the version counter moves: checked again, and refused
    try:
        with pytest.raises(ValueError, match=r"block_mask.kv_indices lists KV blocks in \[99, 99\]"):
            fm.flex_attention(q, k, v, block_mask=bm)
    finally:
        bm.kv_indices.copy_(saved)

    def upper(b, h, q_idx, kv_idx):
        return q_idx <= kv_idx

    fm.flex_attention(q, k, v, block_mask=bm)
    bm.mask_mod = upper  # torch's masks allow it; the partial blocks now apply `upper`
    hits = Hits()
    out = fm.flex_attention(q, k, v, block_mask=bm)
    assert hits.count == 0
    # as a new mask object (a first call) with the same tensors and mask_mod
    assert torch.equal(out, fm.flex_attention(q, k, v, block_mask=bm.to_torch()))
    assert not torch.equal(out, fm.flex_attention(
        q, k, v, block_mask=fm.create_block_mask(causal, None, None, S, S, BLOCK_SIZE=32)))


def test_torch_block_mask_and_kernel_options_hit():
    q, k, v = qkv()
    tbm = tfa.create_block_mask(causal, None, None, S, S, device="cpu", BLOCK_SIZE=64)
    opts = {"BLOCK_M": 64, "BLOCK_N": 64}
    first = fm.flex_attention(q, k, v, block_mask=tbm, kernel_options=opts)
    hits = Hits()
    again = fm.flex_attention(q, k, v, block_mask=tbm, kernel_options=dict(opts))
    assert hits.count == 1 and torch.equal(first, again)
    torch.testing.assert_close(again, torch_flex(q, k, v, block_mask=tbm), **F32)


def test_errors_after_a_hit_are_the_first_calls():
    q, k, v = qkv()
    fm.flex_attention(q, k, v, score_mod=alibi)
    fm.flex_attention(q, k, v, score_mod=alibi)
    with pytest.raises(TypeError, match="key dtype torch.float64 must match query dtype"):
        fm.flex_attention(q, k.double(), v, score_mod=alibi)
    with pytest.raises(ValueError, match="key head dim 8 must match query head dim 16"):
        fm.flex_attention(q, k[..., :8], v, score_mod=alibi)
    with pytest.raises(TypeError, match="scale must be a finite float"):
        fm.flex_attention(q, k, v, score_mod=alibi, scale=float("nan"))
    with pytest.raises(ValueError, match="query has 2 heads but key/value have 1"):
        fm.flex_attention(q, k[:, :1], v[:, :1], score_mod=alibi)


def test_a_call_that_needs_gradients_is_not_served_by_a_plan():
    q, k, v = qkv()
    fm.flex_attention(q, k, v, score_mod=alibi)
    qg = q.clone().requires_grad_()
    hits = Hits()
    out = fm.flex_attention(qg, k, v, score_mod=alibi)
    assert hits.count == 0 and out.requires_grad
    with torch.no_grad():
        assert fm.flex_attention(qg, k, v, score_mod=alibi) is not None
    assert hits.count == 1


def test_clearing_the_tables_forgets_the_plans():
    q, k, v = qkv()
    fm.flex_attention(q, k, v, score_mod=alibi)
    hits = Hits()
    kernels.clear_table()
    fm.flex_attention(q, k, v, score_mod=alibi)
    capture.clear_memo()
    fm.flex_attention(q, k, v, score_mod=alibi)
    assert hits.count == 0
    fm.flex_attention(q, k, v, score_mod=alibi)
    assert hits.count == 1


def test_the_keys_environment_variables_are_read_at_every_call(monkeypatch):
    """FLEXATTN_CHECK_INDICES and FLEXATTN_OVERRIDE_IR are in the key (read
    from os.environ's own mapping): setting one after a plan was made makes
    the next call a miss, unsetting it finds the plan again."""
    from flexattn_mlir.masks import index_checks

    monkeypatch.delenv(index_checks.ENV, raising=False)
    monkeypatch.delenv("FLEXATTN_OVERRIDE_IR", raising=False)
    q, k, v = qkv()
    fm.flex_attention(q, k, v, score_mod=alibi)

    def key():
        return call_plans.call_key(q, k, v, alibi, None, None, False, False, False, None, None)

    planned = key()
    monkeypatch.setenv("FLEXATTN_OVERRIDE_IR", "unused")
    assert key() != planned
    monkeypatch.delenv("FLEXATTN_OVERRIDE_IR")
    monkeypatch.setenv(index_checks.ENV, "1")
    assert key() != planned
    hits = Hits()
    fm.flex_attention(q, k, v, score_mod=alibi)
    assert hits.count == 0
    monkeypatch.delenv(index_checks.ENV)
    assert key() == planned
    fm.flex_attention(q, k, v, score_mod=alibi)
    assert hits.count == 1


# -- no host synchronisation at a hit ----------------------------------------

# What reads a CUDA tensor on the host (so waits for the GPU): reading values,
# copies to the CPU, ops whose output shape depends on the data, explicit syncs.
_HOST_READS = [(torch.Tensor, n) for n in (
    "item", "tolist", "cpu", "numpy", "nonzero", "masked_select", "unique", "argwhere",
    "__bool__", "__int__", "__float__", "__index__")] + [
    (torch, n) for n in ("nonzero", "masked_select", "unique", "argwhere")] + [
    (torch.cuda, "synchronize"), (torch.cuda.Stream, "synchronize"),
    (torch.cuda.Event, "synchronize")]


@contextlib.contextmanager
def forbid_host_reads():
    """Makes every call that would read a device tensor on the host (or wait
    for the device) raise, and ``.to()`` a CPU device too."""
    saved = [(owner, name, owner.__dict__.get(name)) for owner, name in _HOST_READS]
    real_to = torch.Tensor.to

    def refuse(owner, name):
        label = f"{getattr(owner, '__name__', owner)}.{name}"

        def call(*args, **kwargs):
            raise AssertionError(f"host read on the hit path: {label}")
        return call

    def to(self, *args, **kwargs):
        for a in (*args, kwargs.get("device")):
            if isinstance(a, (str, torch.device)) and torch.device(a).type == "cpu":
                raise AssertionError("host read on the hit path: Tensor.to(cpu)")
        return real_to(self, *args, **kwargs)

    try:
        for owner, name, _ in saved:
            setattr(owner, name, refuse(owner, name))
        torch.Tensor.to = to
        yield
    finally:
        for owner, name, fn in saved:
            if fn is None:
                delattr(owner, name)  # the inherited one shows again
            else:
                setattr(owner, name, fn)
        torch.Tensor.to = real_to


def test_a_hit_reads_nothing_back_from_the_device():
    q, k, v = qkv()
    doc = torch.repeat_interleave(torch.arange(4, dtype=torch.int32), S // 4)

    def document(b, h, q_idx, kv_idx):
        return doc[q_idx] == doc[kv_idx]

    bm = fm.create_block_mask(document, None, None, S, S, BLOCK_SIZE=32)
    sinks = torch.randn(H)
    calls = [dict(score_mod=alibi, block_mask=bm), dict(block_mask=bm, return_lse=True),
             dict(score_mod=alibi, sinks=sinks)]
    refs = [fm.flex_attention(q, k, v, **c) for c in calls]
    hits = Hits()
    with forbid_host_reads():
        outs = [fm.flex_attention(q, k, v, **c) for c in calls]
    assert hits.count == len(calls)
    for out, ref in zip(outs, refs):
        for a, b in zip(out if isinstance(out, tuple) else [out],
                        ref if isinstance(ref, tuple) else [ref]):
            assert torch.equal(a, b)
    # The checker is not vacuous: a new mask is checked, which reads it.
    other = fm.create_block_mask(document, None, None, S, S, BLOCK_SIZE=32)
    with forbid_host_reads(), pytest.raises(AssertionError, match="host read on the hit path"):
        fm.flex_attention(q, k, v, block_mask=other)


# -- CUDA: no sync at a hit, CUDA-graph capture -------------------------------

def _gpu_target():
    if not torch.cuda.is_available():
        return None
    try:
        return targets.for_device(torch.device("cuda"))
    except ValueError:
        return None


needs_gpu = pytest.mark.skipif(
    _gpu_target() is None,
    reason="needs a CUDA GPU of a flexattn_mlir GPU target (sm_80 / sm_90a); "
           "CPU tests cover the hit path, forbid_host_reads its host reads")
GPU_S, GPU_D = 256, 64


def _gpu_step_inputs():
    return [torch.randn(2, 4, GPU_S, GPU_D, device="cuda", dtype=torch.bfloat16)
            for _ in range(3)]


@needs_gpu
def test_gpu_hit_does_not_synchronise():
    q, k, v = _gpu_step_inputs()
    slopes = torch.rand(4, device="cuda")

    def alibi_gpu(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    bm = fm.create_block_mask(causal, None, None, GPU_S, GPU_S, device="cuda")
    ref = fm.flex_attention(q, k, v, score_mod=alibi_gpu, block_mask=bm)
    hits = Hits()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = fm.flex_attention(q, k, v, score_mod=alibi_gpu, block_mask=bm)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert hits.count == 1
    torch.testing.assert_close(out, ref)


@needs_gpu
def test_cuda_graph_captures_and_replays_a_step():
    """Warm up on a side stream, capture one step (two flex_attention calls:
    a causal ALiBi one and a document-masked one, as a layer might), replay
    it with new q/k/v copied into the static inputs: the outputs equal the
    eager calls' on the new inputs."""
    static = _gpu_step_inputs()
    slopes = torch.rand(4, device="cuda")
    doc = torch.repeat_interleave(torch.arange(4, device="cuda", dtype=torch.int32), GPU_S // 4)

    def alibi_gpu(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    def document(b, h, q_idx, kv_idx):
        return doc[q_idx] == doc[kv_idx]

    causal_bm = fm.create_block_mask(causal, None, None, GPU_S, GPU_S, device="cuda")
    doc_bm = fm.create_block_mask(document, None, None, GPU_S, GPU_S, device="cuda")

    def step(q, k, v):
        a = fm.flex_attention(q, k, v, score_mod=alibi_gpu, block_mask=causal_bm)
        return fm.flex_attention(a, k, v, block_mask=doc_bm)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    compiles, hits = fm.attention_compile_count(), Hits()
    with torch.cuda.graph(graph):
        static_out = step(*static)
    assert hits.count == 2 and fm.attention_compile_count() == compiles
    previous = None
    for _ in range(3):
        new = _gpu_step_inputs()
        for dst, src in zip(static, new):
            dst.copy_(src)
        slopes.copy_(torch.rand(4, device="cuda"))  # a captured tensor, read at replay
        graph.replay()
        # (the same kernels on the same values: equal but for the last bit at most)
        torch.testing.assert_close(static_out, step(*new), atol=1e-2, rtol=0)
        assert previous is None or not torch.allclose(static_out, previous)
        previous = static_out.clone()
