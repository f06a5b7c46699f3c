"""A plain float64 attention reference: softmax(mods(scale * Q Kᵀ)) V with
explicit score/mask functions on index grids. Rows with no visible key give
0 output and -inf lse, as torch's flex_attention does."""

from __future__ import annotations

import math

import torch


def reference_attention(q, k, v, *, score_fn=None, mask_fn=None, scale=None):
    """score_fn(s, b, h, qi, kv) and mask_fn(b, h, qi, kv) act on broadcast
    index grids of shape [B, H, M, N] (int64) and float64 scores."""
    b, hq, m, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    group = hq // hkv
    kk = k.double().repeat_interleave(group, 1)
    vv = v.double().repeat_interleave(group, 1)
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
    lse = torch.logsumexp(s, -1)
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return p @ vv, lse
