"""A plain float64 attention reference: softmax(mods(scale * Q Kᵀ)) V with
explicit score/mask functions on index grids, optionally with attention
sinks. Rows with no visible key give 0 output and -inf lse, as torch's
flex_attention does (lse = the sink with sinks)."""

from __future__ import annotations

import math

import torch


def reference_scores(q, k, *, score_fn=None, mask_fn=None, scale=None):
    """The float64 modified scores s [B, H, M, N] (-inf where masked):
    score_fn(s, b, h, qi, kv) and mask_fn(b, h, qi, kv) act on broadcast
    index grids of shape [B, H, M, N] (int64)."""
    b, hq, m, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    kk = k.double().repeat_interleave(hq // hkv, 1)
    s = q.double() @ kk.transpose(-1, -2) * scale
    bi = torch.arange(b).view(b, 1, 1, 1)
    hi = torch.arange(hq).view(1, hq, 1, 1)
    qi = torch.arange(m).view(1, 1, m, 1)
    ki = torch.arange(n).view(1, 1, 1, n)
    if score_fn is not None:
        s = score_fn(s, bi, hi, qi, ki)
    if mask_fn is not None:
        keep = torch.broadcast_to(mask_fn(bi, hi, qi, ki), s.shape)
        s = s.masked_fill(~keep, -math.inf)
    return s


def reference_attention(q, k, v, *, score_fn=None, mask_fn=None, scale=None, sinks=None):
    """(out, lse) of softmax(s) v over reference_scores' s. ``sinks`` [H]:
    one more logit per head in every row's softmax, without a value (so a
    row with no visible key gives 0 and lse = sinks[h])."""
    s = reference_scores(q, k, score_fn=score_fn, mask_fn=mask_fn, scale=scale)
    b, hq, m, n = s.shape
    vv = v.double().repeat_interleave(hq // v.shape[1], 1)
    if sinks is not None:
        s = torch.cat([s, sinks.double().view(1, hq, 1, 1).expand(b, hq, m, 1)], -1)
    lse = torch.logsumexp(s, -1)
    p = torch.softmax(s, -1).nan_to_num(0.0)[..., :n]
    return p @ vv, lse
