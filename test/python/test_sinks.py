"""``return_aux=AuxRequest(max_scores=True)`` and attention sinks on the CPU,
against torch's own definition of max_scores and a float64 dense reference.

* max_scores: each row's largest score after score_mod (natural units,
  float32, -inf for a row with no visible key), as torch's dense
  ``math_attention`` defines it (torch's CPU flex_attention refuses
  max_scores). It is the online softmax's running max: exact up to the
  log2/ln2 round trip (float32: rtol 1e-5, atol 1e-5 against the float64
  reference; bf16 inputs: the scores of the bf16 values, atol/rtol 1e-2).
* sinks: out = sum_j exp(s_j) v_j / (exp(sink_h) + sum_j exp(s_j)); lse
  includes the sink; a row with no visible key gives 0 and lse = sink_h.
  float32 tolerances as test_training's (1e-4), bf16 3e-2.
* gradients of the sinks (and q, k, v through them) against float64
  autograd of the dense reference (test_training.check_grads).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention.flex_attention import AuxRequest

import flexattn_mlir as fm
from flexattn_mlir.execution import autograd
from reference import reference_attention, reference_scores
from test_training import BF16, F32, check_grads, leaf

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

B, H, S, D = 2, 4, 80, 16


def alibi(score, b, h, q_idx, kv_idx):
    return score - (h + 1) * 0.25 * (q_idx - kv_idx).abs()


def causal_with_empty_rows(b, h, q_idx, kv_idx):
    """Causal, with query rows 5 and 40 seeing no key at all."""
    return (q_idx >= kv_idx) & (q_idx != 5) & (q_idx != 40)


def _mask(mask_mod, m=S, n=S):
    return fm.create_block_mask(mask_mod, 1, 1, m, n, BLOCK_SIZE=16)


def _qkv(dtype=torch.float32, hkv=H):
    return (torch.randn(B, H, S, D).to(dtype), torch.randn(B, hkv, S, D).to(dtype),
            torch.randn(B, hkv, S, D).to(dtype))


# ---------------------------------------------------------------------------
# max_scores
# ---------------------------------------------------------------------------


def test_max_scores_match_torch_definition():
    """score_mod + a block mask with empty rows, against torch's math_attention."""
    from torch._higher_order_ops.flex_attention import math_attention
    from torch.nn.attention.flex_attention import create_block_mask

    q, k, v = _qkv()
    out, aux = fm.flex_attention(q, k, v, score_mod=alibi, block_mask=_mask(causal_with_empty_rows),
                                 return_aux=AuxRequest(lse=True, max_scores=True))
    torch_mask = create_block_mask(causal_with_empty_rows, 1, 1, S, S, device="cpu",
                                   BLOCK_SIZE=16)
    _, _, ref_max = math_attention(q, k, v, alibi, torch_mask.as_tuple(), 1 / math.sqrt(D), {})
    ref_max = ref_max * math.log(2)  # math_attention returns log2 units, as torch's kernels
    assert aux.max_scores.dtype == torch.float32 and aux.max_scores.shape == (B, H, S)
    assert torch.isneginf(aux.max_scores[:, :, [5, 40]]).all()
    torch.testing.assert_close(aux.max_scores, ref_max, atol=1e-5, rtol=1e-5)
    assert aux.lse is not None


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_max_scores_against_float64(dtype, tol):
    """GQA, no block mask, max_scores without lse; same output as without it."""
    q, k, v = _qkv(dtype, hkv=2)
    out, aux = fm.flex_attention(q, k, v, score_mod=alibi, enable_gqa=True,
                                 return_aux=AuxRequest(max_scores=True))
    assert aux.lse is None
    ref = reference_scores(q, k, score_fn=alibi).amax(-1)
    torch.testing.assert_close(aux.max_scores.double(), ref, atol=tol, rtol=tol)
    torch.testing.assert_close(out, fm.flex_attention(q, k, v, score_mod=alibi, enable_gqa=True))


# ---------------------------------------------------------------------------
# Sinks: forward
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [(torch.float32, F32), (torch.bfloat16, BF16)])
def test_sinks_forward_with_empty_rows(dtype, tol):
    q, k, v = _qkv(dtype, hkv=2)
    sinks = torch.randn(H) * 2
    out, aux = fm.flex_attention(q, k, v, score_mod=alibi, block_mask=_mask(causal_with_empty_rows),
                                 enable_gqa=True, sinks=sinks,
                                 return_aux=AuxRequest(lse=True, max_scores=True))
    ref_out, ref_lse = reference_attention(q, k, v, score_fn=alibi, mask_fn=causal_with_empty_rows,
                                           sinks=sinks)
    torch.testing.assert_close(out.double(), ref_out, **tol)
    torch.testing.assert_close(aux.lse.double(), ref_lse, **tol)
    # A row with only the sink: zeros, lse = the sink; max_scores without it.
    assert (out[:, :, [5, 40]] == 0).all()
    torch.testing.assert_close(aux.lse[:, :, 5], sinks.expand(B, H))
    assert torch.isneginf(aux.max_scores[:, :, [5, 40]]).all()
    ref_max = reference_scores(q, k, score_fn=alibi, mask_fn=causal_with_empty_rows).amax(-1)
    torch.testing.assert_close(aux.max_scores.double(), ref_max, **tol)


def test_sinks_dtype_and_extremes():
    """bf16 sinks; a sink of -inf is no sink; a huge sink takes all the mass."""
    q, k, v = _qkv()
    sinks = torch.tensor([0.5, -math.inf, 60.0, -3.0]).to(torch.bfloat16)
    out, lse = fm.flex_attention(q, k, v, sinks=sinks, return_lse=True)
    ref_out, ref_lse = reference_attention(q, k, v, sinks=sinks.float())
    torch.testing.assert_close(out.double(), ref_out, **F32)
    torch.testing.assert_close(lse.double(), ref_lse, **F32)
    plain, plain_lse = fm.flex_attention(q, k, v, return_lse=True)
    torch.testing.assert_close(out[:, 1], plain[:, 1])
    torch.testing.assert_close(lse[:, 1], plain_lse[:, 1])
    assert out[:, 2].abs().max() < 1e-12


def test_attention_entry_with_sinks_and_max_scores():
    """:func:`fm.attention` (mods as IR) returns (out, lse or None, max_scores)."""
    q, k, v = _qkv()
    sinks = torch.randn(H)
    out, lse, max_scores = fm.attention(q, k, v, sinks=sinks, return_max_scores=True)
    assert lse is None
    ref_out, _ = reference_attention(q, k, v, sinks=sinks)
    torch.testing.assert_close(out.double(), ref_out, **F32)
    torch.testing.assert_close(max_scores.double(), reference_scores(q, k).amax(-1), **F32)


# ---------------------------------------------------------------------------
# Sinks: gradients (the CPU backward)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_lse", [False, True])
def test_sink_gradients(with_lse):
    """dq, dk, dv and dsinks through out (and lse), with empty rows and GQA."""
    q, k, v = leaf(B, H, S, D), leaf(B, 2, S, D), leaf(B, 2, S, D)
    sinks = leaf(H)
    bm = _mask(causal_with_empty_rows)
    check_grads(lambda: fm.flex_attention(q, k, v, score_mod=alibi, block_mask=bm,
                                          enable_gqa=True, sinks=sinks, return_lse=True),
                lambda q, k, v, s: reference_attention(q, k, v, score_fn=alibi,
                                                       mask_fn=causal_with_empty_rows, sinks=s),
                [q, k, v, sinks], with_lse=with_lse, tol=F32)


def test_sinks_learn():
    """A few Adam steps on the sinks alone towards outputs made with sinks of
    4: the loss goes down (the gradient's direction is right)."""
    q, k, v = _qkv()
    target = reference_attention(q, k, v, sinks=torch.full((H,), 4.0))[0].float()
    sinks = torch.zeros(H, requires_grad=True)
    opt = torch.optim.Adam([sinks], lr=0.5)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = (fm.flex_attention(q, k, v, sinks=sinks) - target).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("sinks,error,match", [
    (torch.zeros(3), ValueError, r"sinks must hold one logit per query head: shape \(4,\)"),
    (torch.zeros(1, 4), ValueError, r"sinks must be 1-D"),
    (torch.zeros(4, dtype=torch.int32), TypeError, r"sinks must be a floating-point tensor"),
    (torch.zeros(4, device="meta"), ValueError, r"sinks is on meta but query is on cpu"),
    ([0.0] * 4, TypeError, r"sinks must be a torch.Tensor"),
])
def test_bad_sinks(sinks, error, match):
    q, k, v = _qkv()
    with pytest.raises(error, match=match):
        fm.flex_attention(q, k, v, sinks=sinks)


def test_sink_grad_from_delta_matches_kernel():
    """GPU backward kernels read delta precomputed and leave dsinks to one
    torch reduction (autograd.sink_grad); on the CPU the backward kernel
    computes it. The two agree (float32, atol 1e-4), with empty rows."""
    q, k, v = _qkv()
    sinks = torch.randn(H, requires_grad=True)
    bm = _mask(causal_with_empty_rows)
    out, lse = fm.flex_attention(q, k, v, score_mod=alibi, block_mask=bm, sinks=sinks,
                                 return_lse=True)
    dout = torch.randn_like(out)
    out.backward(dout)
    d = autograd.delta(out.detach(), dout)
    torch.testing.assert_close(autograd.sink_grad(sinks, lse.detach(), d), sinks.grad,
                               atol=1e-4, rtol=1e-4)
