"""Reads of captured tensors follow torch's indexing: negative indices wrap
(``t[-1]``), anything outside ``[-size, size)`` is an IndexError, never a
clamped value passed off as the answer.

* provably out of bounds for the call's shapes: IndexError at the call,
  naming the mod, the tensor and the index range, before anything runs;
* provably in bounds: no check in the kernel (the op carries ``bounds``);
* unknown (an index read from another captured tensor, or computed from
  floats): the kernel checks it and the call raises IndexError after it ran.

Right answers are compared with torch's flex_attention (eager, CPU) within
atol 2e-5, rtol 1e-5 (float32, as in test_api); torch raises IndexError for
every out-of-bounds case here too, which the tests assert as well.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn.attention import flex_attention as tfa

import flexattn_mlir as fm
from flexattn_mlir import CompileOptions
from flexattn_mlir.masks import index_checks

tfa._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

F32 = dict(atol=2e-5, rtol=1e-5)
B, H, N, D = 1, 2, 128, 16


def torch_flex(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tfa.flex_attention(*args, **kwargs)


def qkv(n=N):
    return [torch.randn(B, H, n, D) for _ in range(3)]


def torch_raises_index_error(*args, **kwargs):
    with pytest.raises(IndexError):
        torch_flex(*args, **kwargs)


SMALL = torch.randn(4)


def small_bias(score, b, h, q_idx, kv_idx):
    return score + SMALL[kv_idx]


def test_out_of_bounds_read_is_an_error_at_the_call():
    """``SMALL[kv_idx]`` at N=128 used to read SMALL[min(kv_idx, 3)]."""
    q, k, v = qkv()
    torch_raises_index_error(q, k, v, score_mod=small_bias)
    with pytest.raises(IndexError, match=r"SMALL \(shape \(4,\)\) in score_mod 'small_bias', "
                                         r"along dim 0 \(size 4\) is read out of bounds: its "
                                         r"index ranges over \[0, 127\] and is 127 at b=0, h=0, "
                                         r"q_idx=0, kv_idx=127 .* valid indices are -4..3"):
        fm.flex_attention(q, k, v, score_mod=small_bias)
    # Also when only compiling (nothing is compiled for such a call).
    with pytest.raises(IndexError, match="SMALL"):
        fm.compile_flex_attention(q, k, v, score_mod=small_bias)
    # In bounds for N=4: no check in the kernel, and torch's answer.
    q4, k4, v4 = qkv(4)
    spec = fm.attention_spec(q4, k4, v4, score_mod=fm.capture_score_mod(small_bias).ir,
                             captures=[SMALL])
    assert spec.index_report is None and "bounds = array<i64: 0, 3>" in spec.score_mod.text
    torch.testing.assert_close(fm.flex_attention(q4, k4, v4, score_mod=small_bias),
                               torch_flex(q4, k4, v4, score_mod=small_bias), **F32)


def test_short_document_ids_are_an_error():
    """``doc[q_idx]`` with doc shorter than the sequence (a mask_mod): in
    create_block_mask, and in flex_attention given torch's block mask."""
    doc = torch.zeros(100, dtype=torch.int32)

    def same_doc(b, h, q_idx, kv_idx):
        return doc[q_idx] == doc[kv_idx]

    with pytest.raises(IndexError):
        tfa.create_block_mask(same_doc, None, None, N, N, device="cpu")
    with pytest.raises(IndexError, match=r"doc \(shape \(100,\)\) in mask_mod 'same_doc', along "
                                         r"dim 0 \(size 100\) is read out of bounds: its index "
                                         r"ranges over \[0, 127\]"):
        fm.create_block_mask(same_doc, None, None, N, N)
    q, k, v = qkv()
    with pytest.raises(IndexError, match="doc .* in mask_mod 'same_doc'"):
        fm.attention(q, k, v, mask_mod=fm.capture_mask_mod(same_doc).ir, captures=[doc])
    # For 100 tokens the reads are in bounds: torch's answer, unchecked.
    q, k, v = qkv(100)
    mask = fm.create_block_mask(same_doc, None, None, 100, 100, BLOCK_SIZE=32)
    spec = fm.attention_spec(q, k, v, mask_mod=fm.capture_mask_mod(same_doc).ir, captures=[doc],
                             block_mask=mask)
    assert spec.index_report is None
    torch.testing.assert_close(
        fm.flex_attention(q, k, v, block_mask=mask),
        torch_flex(q, k, v, block_mask=tfa.create_block_mask(same_doc, None, None, 100, 100,
                                                             device="cpu", BLOCK_SIZE=32)), **F32)


def test_negative_indices_wrap_like_torch():
    q, k, v = qkv()

    def last_four(score, b, h, q_idx, kv_idx):
        return score + SMALL[(kv_idx % 4) - 4]  # -4..-1: t[-1] is t[3]

    def too_negative(score, b, h, q_idx, kv_idx):
        return score + SMALL[kv_idx - 5]  # -5 at kv_idx=0

    mod = fm.capture_score_mod(last_four).ir
    spec = fm.attention_spec(q, k, v, score_mod=mod, captures=[SMALL],
                             options=fm.CompileOptions(dynamic=False))
    assert spec.index_report is None and "bounds = array<i64: -4, -1>" in spec.score_mod.text
    # A dynamic-shape kernel carries what the bounds prove: in [-size, size).
    spec = fm.attention_spec(q, k, v, score_mod=mod, captures=[SMALL],
                             options=fm.CompileOptions(dynamic=True))
    assert spec.index_report is None and "bounds = array<i64: -4, 3>" in spec.score_mod.text
    torch.testing.assert_close(fm.flex_attention(q, k, v, score_mod=last_four),
                               torch_flex(q, k, v, score_mod=last_four), **F32)
    torch_raises_index_error(q, k, v, score_mod=too_negative)
    with pytest.raises(IndexError, match=r"is -5 at b=0, h=0, q_idx=0, kv_idx=0 .* valid indices "
                                         r"are -4..3"):
        fm.flex_attention(q, k, v, score_mod=too_negative)


def test_indices_read_from_another_tensor_are_checked_by_the_kernel():
    """``table[idx[kv_idx]]``: the compiler cannot bound a value read from a
    tensor (its values change without recompiling), so the kernel checks it:
    in bounds (negative ones wrapping) it is torch's answer, out of bounds
    the call raises IndexError naming the tensor and the index."""
    table = torch.randn(8)
    idx = torch.randint(-8, 8, (N,))

    def gathered(score, b, h, q_idx, kv_idx):
        return score + table[idx[kv_idx]]

    q, k, v = qkv()
    captured = fm.capture_score_mod(gathered)
    spec = fm.attention_spec(q, k, v, score_mod=captured.ir, captures=captured.captures)
    assert spec.index_report is not None and spec.index_report.shape == (1, 2)
    torch.testing.assert_close(fm.flex_attention(q, k, v, score_mod=gathered),
                               torch_flex(q, k, v, score_mod=gathered), **F32)
    compiles = fm.attention_compile_count()
    for bad in (8, -9, 1000):
        idx[37] = bad
        torch_raises_index_error(q, k, v, score_mod=gathered)
        with pytest.raises(IndexError, match=rf"table \(shape \(8,\)\) in score_mod 'gathered', "
                                             rf"along dim 0 \(size 8\) was read out of bounds: "
                                             rf"index {bad} \(valid indices are -8..7\)"):
            fm.flex_attention(q, k, v, score_mod=gathered)
    idx[37] = 3  # the next call is fine again (the report is fresh per call)
    torch.testing.assert_close(fm.flex_attention(q, k, v, score_mod=gathered),
                               torch_flex(q, k, v, score_mod=gathered), **F32)
    assert fm.attention_compile_count() == compiles  # new values, same kernel


def test_float_indices_are_checked_by_the_kernel():
    table = torch.randn(6)

    def from_float(score, b, h, q_idx, kv_idx):
        return score + table[(kv_idx.float() * 0.1).long()]

    q, k, v = qkv(60)
    torch.testing.assert_close(fm.flex_attention(q, k, v, score_mod=from_float),
                               torch_flex(q, k, v, score_mod=from_float), **F32)
    q, k, v = qkv(61)  # kv_idx = 60 reads table[6]
    torch_raises_index_error(q, k, v, score_mod=from_float)
    with pytest.raises(IndexError, match=r"table .* was read out of bounds: index 6"):
        fm.flex_attention(q, k, v, score_mod=from_float)


@pytest.mark.parametrize("dynamic", [False, True])
def test_unbounded_reads_in_full_tiles_are_checked_by_the_vector_code(dynamic):
    """N = 128: every tile is a full one, whose mod is vectorised with its
    check (the report a reduction along the row): in bounds, the answer is
    torch's; |kv_idx - q_idx| >= 120 reads table[12], which is reported."""
    table = torch.randn(12)

    def from_float(score, b, h, q_idx, kv_idx):
        return score + table[((kv_idx - q_idx).abs().float() * 0.1).long()]

    q, k, v = qkv(N)
    options = {"dynamic": dynamic}
    compiled = fm.compile_flex_attention(q, k, v, score_mod=from_float, kernel_options=options)
    assert "vector.gather" in compiled["vector"] and "vector.reduction <maxsi>" in compiled["vector"]
    def in_bounds(score, b, h, q_idx, kv_idx):  # at most 127 * 0.09: table[11]
        return score + table[((kv_idx - q_idx).abs().float() * 0.09).long()]

    torch.testing.assert_close(fm.flex_attention(q, k, v, score_mod=in_bounds, kernel_options=options),
                               torch_flex(q, k, v, score_mod=in_bounds), **F32)
    torch_raises_index_error(q, k, v, score_mod=from_float)
    with pytest.raises(IndexError, match=r"table .* was read out of bounds: index 12"):
        fm.flex_attention(q, k, v, score_mod=from_float, kernel_options=options)


def test_create_block_mask_checks_reads_it_cannot_bound():
    doc = torch.randint(0, 4, (N,), dtype=torch.int32)
    lengths = torch.tensor([5, 70, 128, 31])

    def prefix_of_doc(b, h, q_idx, kv_idx):
        return kv_idx < lengths[doc[q_idx]]

    ours = fm.create_block_mask(prefix_of_doc, None, None, N, N, BLOCK_SIZE=16)
    ref = tfa.create_block_mask(prefix_of_doc, None, None, N, N, device="cpu", BLOCK_SIZE=16)
    for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
        assert torch.equal(getattr(ours, name), getattr(ref, name)), name
    doc[77] = 4
    with pytest.raises(IndexError):
        tfa.create_block_mask(prefix_of_doc, None, None, N, N, device="cpu", BLOCK_SIZE=16)
    for analyze in (True, False):  # the kernel reads every element of such blocks
        with pytest.raises(IndexError, match=r"lengths \(shape \(4,\)\) in mask_mod "
                                             r"'prefix_of_doc'.* was read out of bounds: index 4"):
            fm.create_block_mask(prefix_of_doc, None, None, N, N, BLOCK_SIZE=16, analyze=analyze)


def test_gpu_checks_under_the_debug_option(monkeypatch):
    """On the GPU, reads the compiler cannot bound are checked only with
    FLEXATTN_CHECK_INDICES=1 (reading the report synchronises); otherwise the
    kernel reads element 0 for an out-of-bounds index, and a warning says
    so. Provably bad reads are refused on every target."""
    table = torch.randn(8)
    idx = torch.randint(0, 8, (256,))

    def gathered(score, b, h, q_idx, kv_idx):
        return score + table[idx[kv_idx]]

    q, k, v = (torch.randn(1, 2, 256, 64, dtype=torch.bfloat16) for _ in range(3))
    gpu = CompileOptions(target="sm_90a")
    captured = fm.capture_score_mod(gathered)
    mod = captured.ir
    monkeypatch.delenv(index_checks.ENV, raising=False)
    plain = fm.attention_spec(q, k, v, score_mod=mod, captures=captured.captures, options=gpu)
    assert plain.index_report is None
    checked = index_checks.annotate(mod, None, (1, 2, 256, 256), False)
    with pytest.warns(RuntimeWarning, match=r"cannot prove these reads of captured tensors in "
                                            r"bounds: table .* FLEXATTN_CHECK_INDICES=1"):
        index_checks.warn_unchecked(checked, "sm_90a")
    monkeypatch.setenv(index_checks.ENV, "1")
    debug = fm.attention_spec(q, k, v, score_mod=mod, captures=captured.captures, options=gpu)
    assert debug.index_report is not None
    # To PTX: the kernel takes the report and stores into it (more global
    # stores than without the checks).
    compiled, unchecked = fm.compile(debug, gpu), fm.compile(plain, gpu, keep_ir=False)
    params = [p["arg"] for p in compiled.metadata["launch"]["params"]]
    assert "index_report" in params
    assert "memref<1x2xi64>" in compiled.ir["fragments"] and "scf.if" in compiled.ir["fragments"]
    assert (compiled.metadata["ptx"].count("st.global")
            > unchecked.metadata["ptx"].count("st.global"))
    with pytest.raises(IndexError, match="SMALL"):
        fm.attention_spec(q, k, v, score_mod=fm.capture_score_mod(small_bias).ir,
                          captures=[SMALL], options=gpu)


def test_labels_of_reads_do_not_enter_the_kernel_key():
    """The check's ``source`` (tensor and mod names, for messages) is no
    part of the code: equal mods under other names share one kernel, and
    each call's messages still name its own mod."""
    q, k, v = qkv()
    first, second = torch.randn(8), torch.randn(8)
    idx = torch.randint(0, 8, (N,))

    def bias_a(score, b, h, q_idx, kv_idx):
        return score + first[idx[kv_idx]]

    def bias_b(score, b, h, q_idx, kv_idx):
        return score + second[idx[kv_idx]]

    fm.flex_attention(q, k, v, score_mod=bias_a)
    compiles = fm.attention_compile_count()
    torch.testing.assert_close(fm.flex_attention(q, k, v, score_mod=bias_b),
                               torch_flex(q, k, v, score_mod=bias_b), **F32)
    assert fm.attention_compile_count() == compiles
    idx[3] = 8
    with pytest.raises(IndexError, match=r"second \(shape \(8,\)\) in score_mod 'bias_b'"):
        fm.flex_attention(q, k, v, score_mod=bias_b)
