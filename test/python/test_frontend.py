"""The torch-mlir frontend: Python score_mod / mask_mod -> flexattn region IR.

Each mod of the variant zoo is captured, run through flexattn_mlir.attention
on the CPU and compared with torch's flex_attention (its eager path) in fp32:
atol 2e-5 / rtol 1e-4 on outputs of order 1 (our kernel and torch both
compute in f32; the difference is summation order). Relative-position bias
produces scores of order S, hence its looser 1e-4 atol.
"""

from __future__ import annotations

import functools
import math
import re
import types

import pytest
import torch
from torch.nn.attention import flex_attention as tfa

import flexattn_mlir as fm
from flexattn_mlir.frontend import capture as fe
from flexattn_mlir.frontend import ModCaptureError, capture_mask_mod, capture_score_mod, combine

tfa._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

B, H, S, D = 2, 4, 200, 32
ATOL, RTOL = 2e-5, 1e-4

# --- the variant zoo (module globals on purpose: the frontend lifts them) ---

SLOPES = torch.tensor([2.0 ** (-8.0 * (i + 1) / H) for i in range(H)])
NUM_BUCKETS = 32
T5_TABLE = torch.randn(H, NUM_BUCKETS, generator=torch.Generator().manual_seed(1))
DOC_LENGTHS = [17, 60, 3, 90, 30]  # jagged, sums to S
DOC = torch.repeat_interleave(torch.arange(len(DOC_LENGTHS), dtype=torch.int32),
                              torch.tensor(DOC_LENGTHS))
WINDOW, PREFIX, GRID_W = 48, 40, 20


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def sliding_window(b, h, q_idx, kv_idx):
    return (q_idx >= kv_idx) & (q_idx - kv_idx <= WINDOW)


def prefix_lm(b, h, q_idx, kv_idx):
    return (kv_idx <= PREFIX) | (q_idx >= kv_idx)


def make_document_mask(doc_ids):
    def document(b, h, q_idx, kv_idx):
        return doc_ids[q_idx] == doc_ids[kv_idx]

    return document


def alibi(score, b, h, q_idx, kv_idx):
    return score + SLOPES[h] * (kv_idx - q_idx)


def softcap(score, b, h, q_idx, kv_idx):
    return 20.0 * torch.tanh(score / 20.0)


def relative_position(score, b, h, q_idx, kv_idx):
    return score + (q_idx - kv_idx) * 0.01


def t5_bucket(relative):
    """T5's bidirectional log-spaced buckets (a helper the mod calls)."""
    n = NUM_BUCKETS // 2
    ret = (relative > 0).to(torch.int32) * n
    rel = torch.abs(relative)
    max_exact = n // 2
    large = max_exact + (torch.log(rel.float() / max_exact) / math.log(128 / max_exact)
                         * (n - max_exact)).to(torch.int32)
    large = torch.clamp(large, max=n - 1)
    return ret + torch.where(rel < max_exact, rel, large)


def t5_bias(score, b, h, q_idx, kv_idx):
    return score + T5_TABLE[h, t5_bucket(kv_idx - q_idx)]


def natten(b, h, q_idx, kv_idx):
    """2-D neighbourhood on a GRID_W-wide image (// and %)."""
    qx, qy = q_idx // GRID_W, q_idx % GRID_W
    kx, ky = kv_idx // GRID_W, kv_idx % GRID_W
    return ((qx - kx).abs() <= 2) & ((qy - ky).abs() <= 2)


@pytest.fixture(scope="module")
def qkv():
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(B, H, S, D, generator=g) for _ in range(3))


def run_ours(qkv, score=None, mask=None, **kw):
    score_c = capture_score_mod(score) if score is not None else None
    mask_c = capture_mask_mod(mask) if mask is not None else None
    score_c, mask_c, captures = combine(score_c, mask_c)
    return fm.attention(*qkv, score_mod=score_c and score_c.ir, mask_mod=mask_c and mask_c.ir,
                        captures=captures, **kw)


def run_torch(qkv, score=None, mask=None, **kw):
    block_mask = None
    if mask is not None:
        block_mask = tfa.create_block_mask(mask, None, None, S, S, device="cpu")
    return tfa.flex_attention(*qkv, score_mod=score, block_mask=block_mask, **kw)


MASKS = [causal, sliding_window, prefix_lm, make_document_mask(DOC), natten,
         tfa.and_masks(causal, make_document_mask(DOC)),
         tfa.or_masks(prefix_lm, sliding_window)]
SCORES = [alibi, softcap, relative_position, t5_bias]


@pytest.mark.parametrize("mask", MASKS, ids=lambda m: m.__name__)
def test_mask_mods_match_torch(qkv, mask):
    torch.testing.assert_close(run_ours(qkv, mask=mask), run_torch(qkv, mask=mask),
                               atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("score", SCORES, ids=lambda m: m.__name__)
def test_score_mods_match_torch(qkv, score):
    atol = 1e-4 if score is relative_position else ATOL
    torch.testing.assert_close(run_ours(qkv, score=score), run_torch(qkv, score=score),
                               atol=atol, rtol=RTOL)


def test_score_and_mask_share_captures(qkv):
    """ALiBi's slopes and the document ids end up in one capture list; a
    tensor both mods read appears once."""

    def doc_alibi(score, b, h, q_idx, kv_idx):
        same = DOC[q_idx] == DOC[kv_idx]
        return score + SLOPES[h] * (kv_idx - q_idx) + same.float()

    mask = make_document_mask(DOC)
    s, m, captures = combine(capture_score_mod(doc_alibi), capture_mask_mod(mask))
    assert len(captures) == 2 and captures[0] is DOC and captures[1] is SLOPES or \
        {id(c) for c in captures} == {id(DOC), id(SLOPES)}
    assert s.ir.capture_types == m.ir.capture_types
    out, lse = fm.attention(*qkv, score_mod=s.ir, mask_mod=m.ir, captures=captures,
                            return_lse=True)
    ref, ref_lse = run_torch(qkv, score=doc_alibi, mask=mask, return_lse=True)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(lse, ref_lse, atol=1e-4, rtol=RTOL)


def test_combine_reorders_captures():
    zz, aa = torch.randn(H), torch.arange(S, dtype=torch.int32)

    def score(s, b, h, q, kv):
        return s + zz[h]

    def mask(b, h, q, kv):
        return aa[kv] >= zz[h]  # closure cells are ordered by name: (aa, zz)

    sc, mc = capture_score_mod(score), capture_mask_mod(mask)
    assert [id(t) for t in mc.captures] == [id(aa), id(zz)]
    s2, m2, caps = combine(sc, mc)
    assert [id(t) for t in caps] == [id(zz), id(aa)]
    assert s2.ir.capture_types == m2.ir.capture_types == ("memref<4xf32>", "memref<200xi32>")
    assert "%cap0: memref<4xf32>, %cap1: memref<200xi32>" in m2.ir.text.splitlines()[1]
    assert "memref.load %cap1[" in m2.ir.text and "memref.load %cap0[" in m2.ir.text
    assert combine(None, mc)[1] is mc
    g = torch.Generator().manual_seed(5)
    qkv = tuple(torch.randn(1, H, S, D, generator=g) for _ in range(3))
    out = fm.attention(*qkv, score_mod=s2.ir, mask_mod=m2.ir, captures=caps)
    ref = tfa.flex_attention(*qkv, score_mod=score,
                             block_mask=tfa.create_block_mask(mask, None, None, S, S, device="cpu"))
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=RTOL)


def test_replace_tensors_reaches_closures_globals_and_helpers():
    local = torch.arange(4, dtype=torch.int32)
    whole = torch.arange(S, dtype=torch.int32)

    def helper(i):
        return local[i] + DOC[i]

    def mask(b, h, q, kv):
        return helper(q) >= local[kv]

    assert fe.replace_tensors(mask, {id(torch.zeros(1)): whole}) is mask
    swapped = fe.replace_tensors(mask, {id(local): whole})
    assert swapped is not mask and swapped.__name__ == "mask"
    captured = capture_mask_mod(swapped)
    assert [id(t) for t in captured.captures] == [id(whole), id(DOC)]
    assert capture_mask_mod(mask).captures[0] is local  # the original is untouched


def test_gqa_and_lse(qkv):
    q = qkv[0]
    k, v = qkv[1][:, :2], qkv[2][:, :2]
    out, lse = run_ours((q, k, v), score=alibi, mask=causal, enable_gqa=True, return_lse=True)
    ref, ref_lse = run_torch((q, k, v), score=alibi, mask=causal, enable_gqa=True,
                             return_lse=True)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(lse, ref_lse, atol=1e-4, rtol=RTOL)


# --- captured tensors are operands: keys, memo, values ------------------------


def test_changed_capture_values_keep_key_and_skip_export(qkv):
    first = capture_mask_mod(make_document_mask(DOC))
    before = fe.export_count
    other_doc = torch.repeat_interleave(torch.arange(2, dtype=torch.int32), torch.tensor([150, 50]))
    second = capture_mask_mod(make_document_mask(other_doc))
    assert fe.export_count == before, "an equal mod must not be exported again"
    assert second.key == first.key and second.ir == first.ir
    assert second.captures[0] is other_doc
    # and the new values are used
    out = fm.attention(*qkv, mask_mod=second.ir, captures=second.captures)
    torch.testing.assert_close(out, run_torch(qkv, mask=make_document_mask(other_doc)),
                               atol=ATOL, rtol=RTOL)


def test_in_place_update_of_a_global_is_seen(qkv):
    global SLOPES
    saved = SLOPES.clone()
    try:
        capture_score_mod(alibi)
        before = fe.export_count
        SLOPES.mul_(3.0)
        captured = capture_score_mod(alibi)
        assert fe.export_count == before
        out = fm.attention(*qkv, score_mod=captured.ir, captures=captured.captures)
        torch.testing.assert_close(out, run_torch(qkv, score=alibi), atol=ATOL, rtol=RTOL)
    finally:
        SLOPES.copy_(saved)


def test_python_scalars_are_baked_and_keyed():
    def make(window):
        def win(b, h, q, kv):
            return (q - kv).abs() <= window

        return win

    a, b_ = capture_mask_mod(make(5)), capture_mask_mod(make(5))
    c = capture_mask_mod(make(7))
    assert a.key == b_.key and a.key != c.key
    assert "5 :" in a.ir.text and "7 :" in c.ir.text
    assert a.captures == () and c.captures == ()


LIMIT = 10
CFG = types.ModuleType("flexattn_test_config")
CFG.LIMIT = 10


def near_global(b, h, q, kv):
    return (q - kv).abs() <= LIMIT


def near_module_attr(b, h, q, kv):
    return (q - kv).abs() <= CFG.LIMIT


def test_changed_global_scalars_re_export():
    global LIMIT
    for mod, set_limit in ((near_global, lambda v: globals().__setitem__("LIMIT", v)),
                           (near_module_attr, lambda v: setattr(CFG, "LIMIT", v))):
        try:
            first = capture_mask_mod(mod)
            set_limit(11)
            before = fe.export_count
            second = capture_mask_mod(mod)
            assert fe.export_count == before + 1 and second.key != first.key
            assert "11 :" in second.ir.text
        finally:
            set_limit(10)


def test_capture_shape_enters_key():
    a = capture_mask_mod(make_document_mask(torch.zeros(S, dtype=torch.int32)))
    b_ = capture_mask_mod(make_document_mask(torch.zeros(S + 1, dtype=torch.int32)))
    c = capture_mask_mod(make_document_mask(torch.zeros(S, dtype=torch.int64)))
    assert len({a.key, b_.key, c.key}) == 3


def test_region_is_scalar_ir():
    captured = capture_score_mod(t5_bias)
    text = captured.ir.text
    assert text.startswith("flexattn.mod score_mod {\n"
                           "^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32, "
                           "%cap0: memref<4x32xf32>)")
    ops = {re.match(r"\s*(?:%\S+ = )?([\w.]+)", line).group(1)
           for line in text.splitlines()[2:-1]}
    assert all(op.split(".")[0] in ("arith", "math", "memref") or op == "flexattn.check_index"
               for op in ops - {"flexattn.yield"}), ops
    assert "memref.load" in ops and "tensor" not in text
    # The table's two indices (h, the bucket) are checked reads, by name.
    assert text.count("flexattn.check_index") == 2
    assert 'source = "T5_TABLE (shape (4, 32)) in score_mod \'t5_bias\'"' in text
    assert text.rstrip().splitlines()[-2].strip().startswith("flexattn.yield")
    # parses and verifies inside a flexattn op
    spec = fm.attention_spec(*[torch.zeros(1, H, 8, 16)] * 3, score_mod=captured.ir,
                             captures=captured.captures)
    from flexattn_mlir import _native
    from flexattn_mlir.compiler import driver
    from mlir import ir

    with _native.new_context(), ir.Location.unknown():
        driver.make_flexattn(spec, fm.CompileOptions())


def test_floor_division_becomes_floordivsi():
    text = capture_mask_mod(natten).ir.text
    assert "arith.floordivsi" in text and "math.floor" not in text and "f64" not in text


def test_nested_helpers_partials_and_bool_captures(qkv):
    keep = torch.rand(S, generator=torch.Generator().manual_seed(3)) > 0.3

    def helper(kv):
        return keep[kv]  # a closure of the helper, not of the mod

    def mask(b, h, q, kv):
        return helper(kv) | (q == kv)

    def biased(score, b, h, q, kv, table=None):
        return score + table[h]

    bias = functools.partial(biased, table=torch.randn(H))
    m, s = capture_mask_mod(mask), capture_score_mod(bias)
    assert "memref<200xi8>" in m.ir.capture_types[0] and m.captures[0] is keep
    sc, mc, caps = combine(s, m)
    out = fm.attention(*qkv, score_mod=sc.ir, mask_mod=mc.ir, captures=caps)
    torch.testing.assert_close(out, run_torch(qkv, score=bias, mask=mask), atol=ATOL, rtol=RTOL)


def test_captured_elements_returned_or_compared_directly(qkv):
    """A Hugging Face padding mask (``return keep[b, q_idx, kv_idx]``), a
    score_mod returning a bias element (float or int), a T5 bias
    ``[1, H, M, N]`` read at ``[0, h, q, kv]`` (a unit dim), a length per
    batch compared with kv_idx, a 0-d bool capture returned as is: torch's
    answer (block masks made for the real B/H where the mod reads b/h)."""
    g = torch.Generator().manual_seed(4)
    keep = torch.rand(B, S, S, generator=g) > 0.4
    keep[:, :, 0] = True
    bias = torch.randn(H, S, S, generator=g)
    int_bias = torch.randint(-3, 4, (H, S, S), generator=g, dtype=torch.int32)
    lengths = torch.tensor([150, S])
    everything = torch.tensor(True)

    def padding(b, h, q_idx, kv_idx):
        return keep[b, q_idx, kv_idx]

    def per_batch_length(b, h, q_idx, kv_idx):
        return lengths[b] > kv_idx

    def constant(b, h, q_idx, kv_idx):
        return everything

    def bias_element(score, b, h, q_idx, kv_idx):
        return bias[h, q_idx, kv_idx]

    def int_bias_element(score, b, h, q_idx, kv_idx):
        return int_bias[h, q_idx, kv_idx]

    t5_bias = bias.unsqueeze(0)

    def unit_dim_bias(score, b, h, q_idx, kv_idx):
        return score + t5_bias[0, h, q_idx, kv_idx]

    for mask in (padding, per_batch_length, constant):
        ours = fm.flex_attention(*qkv, block_mask=fm.create_block_mask(mask, B, H, S, S))
        ref = tfa.flex_attention(*qkv, block_mask=tfa.create_block_mask(mask, B, H, S, S,
                                                                         device="cpu"))
        torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)
    for score in (bias_element, int_bias_element, unit_dim_bias):
        torch.testing.assert_close(fm.flex_attention(*qkv, score_mod=score),
                                   tfa.flex_attention(*qkv, score_mod=score),
                                   atol=ATOL, rtol=RTOL)
    with pytest.raises(ModCaptureError, match="must return a bool tensor, got torch.float32"):
        capture_mask_mod(lambda b, h, q_idx, kv_idx: bias[h, q_idx, kv_idx])


@pytest.mark.parametrize("mod,kind", [
    (lambda s, b, h, q, kv: q >= kv, "bool"),
    (lambda s, b, h, q, kv: kv - q, "int"),
    (lambda s, b, h, q, kv: s.double() * 0.5 + 1, "f64"),
], ids=["bool", "int", "f64"])
def test_score_results_convert_to_f32_like_torch(qkv, mod, kind):
    out = run_ours(qkv, score=mod)
    torch.testing.assert_close(out, run_torch(qkv, score=mod), atol=ATOL, rtol=RTOL)


def test_python_scalar_results(qkv):
    """torch's vmap rejects a bare Python float; we take it as a constant."""
    out = run_ours(qkv, score=lambda s, b, h, q, kv: 0.25)
    ref = run_torch(qkv, score=lambda s, b, h, q, kv: torch.full_like(s, 0.25))
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=RTOL)
    assert "arith.constant true" in capture_mask_mod(lambda b, h, q, kv: True).ir.text


def test_noop_and_identity():
    assert "arith.constant true" in capture_mask_mod(tfa.noop_mask).ir.text
    assert capture_score_mod(lambda s, b, h, q, kv: s).ir.text.endswith(
        "flexattn.yield %score : f32\n}")


# --- errors -----------------------------------------------------------------


def data_dependent(score, b, h, q_idx, kv_idx):
    if q_idx > kv_idx:
        return score
    return score * 2


def float_mask(b, h, q_idx, kv_idx):
    return (q_idx - kv_idx).float()


def vector_mask(b, h, q_idx, kv_idx):
    return torch.ones(3, dtype=torch.bool) & (q_idx >= kv_idx)


def returns_none(b, h, q_idx, kv_idx):
    return None


def sorts(score, b, h, q_idx, kv_idx):
    return score + torch.sort(SLOPES)[0][h]


def inner_tensor(b, h, q_idx, kv_idx):
    return torch.tensor([3, 1, 2])[h] > 1


U8 = torch.arange(S, dtype=torch.uint8)


def reads_uint8(b, h, q_idx, kv_idx):
    return U8[kv_idx] > 3


def three_args(b, h, q_idx):
    return q_idx > 0


@pytest.mark.parametrize("capture,mod,message", [
    (capture_score_mod, data_dependent, r"score_mod 'data_dependent' uses data-dependent Python control flow"),
    (capture_mask_mod, float_mask, r"mask_mod 'float_mask' must return a bool tensor, got torch.float32"),
    (capture_mask_mod, vector_mask, r"mask_mod 'vector_mask' must return a 0-d tensor .* shape \(3,\)"),
    (capture_mask_mod, returns_none, r"mask_mod 'returns_none' must return a tensor, got NoneType"),
    (capture_score_mod, sorts, r"score_mod 'sorts' uses operations that cannot be evaluated per score element: tm_tensor.sort"),
    (capture_mask_mod, inner_tensor, r"mask_mod 'inner_tensor' uses operations .*a tensor created inside the mod"),
    (capture_mask_mod, reads_uint8, r"mask_mod 'reads_uint8' captures a torch.uint8 tensor"),
    (capture_mask_mod, three_args, r"mask_mod 'three_args' must take 4 positional arguments \(b, h, q_idx, kv_idx\)"),
    (capture_score_mod, causal, r"score_mod 'causal' must take 5 positional arguments"),
    (capture_mask_mod, 42, r"mask_mod 'int' must be callable"),
], ids=["control-flow", "float-mask", "non-0d", "none", "sort", "inner-tensor", "uint8",
        "arity-mask", "arity-score", "not-callable"])
def test_errors(capture, mod, message):
    with pytest.raises(ModCaptureError, match=message):
        capture(mod)
    assert issubclass(ModCaptureError, TypeError)


def test_errors_leave_the_process_usable(qkv):
    with pytest.raises(ModCaptureError):
        capture_mask_mod(inner_tensor)
    torch.testing.assert_close(run_ours(qkv, mask=causal), run_torch(qkv, mask=causal),
                               atol=ATOL, rtol=RTOL)
