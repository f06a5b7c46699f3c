"""Example attention variants, written as a researcher would for torch's
flex_attention: plain score_mod / mask_mod functions, closing over tensors
where the variant needs data (ALiBi slopes, document ids, a T5 bias table).

Used by the CLI (``python -m flexattn_mlir``), the demo, the AOT command and
the benchmarks. ``make(name, H, S, device)`` returns ``(score_mod, mask_mod)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..masks import and_masks, or_masks

__all__ = ["Variant", "VARIANTS", "names", "make", "spec"]


def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def _sliding(window: int):
    def sliding_window(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx <= window)

    return sliding_window


def _prefix_lm(prefix: int):
    def prefix_lm(b, h, q_idx, kv_idx):
        return (kv_idx < prefix) | (q_idx >= kv_idx)

    return prefix_lm


def _document_ids(S: int, docs: int, device) -> torch.Tensor:
    """``docs`` documents of jagged, seeded random lengths covering S tokens."""
    g = torch.Generator().manual_seed(docs)
    cuts = torch.sort(torch.randperm(S - 1, generator=g)[: docs - 1] + 1).values
    lengths = torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([S])]))
    return torch.repeat_interleave(torch.arange(docs, dtype=torch.int32), lengths).to(device)


def _document(doc_ids: torch.Tensor):
    def document_causal(b, h, q_idx, kv_idx):
        return (doc_ids[q_idx] == doc_ids[kv_idx]) & (q_idx >= kv_idx)

    return document_causal


def _alibi(H: int, device):
    slopes = torch.exp2(-8.0 * torch.arange(1, H + 1, dtype=torch.float32) / H).to(device)

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    return alibi


def _softcap(cap: float):
    def softcap(score, b, h, q_idx, kv_idx):
        return cap * torch.tanh(score / cap)

    return softcap


def _relative_bias(score, b, h, q_idx, kv_idx):
    return score + (q_idx - kv_idx) * 0.01


def _t5(H: int, device, num_buckets: int = 32, max_distance: int = 128):
    table = torch.randn(H, num_buckets, generator=torch.Generator().manual_seed(5)).to(device)
    half = num_buckets // 2
    exact = half // 2

    def t5_bias(score, b, h, q_idx, kv_idx):
        relative = kv_idx - q_idx
        bucket = (relative > 0).to(torch.int32) * half
        n = torch.abs(relative)
        large = exact + (torch.log(n.float() / exact) / math.log(max_distance / exact)
                         * (half - exact)).to(torch.int32)
        large = torch.clamp(large, max=half - 1)
        return score + table[h, bucket + torch.where(n < exact, n, large)]

    return t5_bias


def _natten(width: int, radius: int):
    def natten_2d(b, h, q_idx, kv_idx):
        qr, qc = q_idx // width, q_idx % width
        kr, kc = kv_idx // width, kv_idx % width
        return ((qr - kr).abs() <= radius) & ((qc - kc).abs() <= radius)

    return natten_2d


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    make: Callable[[int, int, object], tuple[Optional[Callable], Optional[Callable]]]


VARIANTS = {v.name: v for v in [
    Variant("full", "plain softmax attention", lambda H, S, d: (None, None)),
    Variant("causal", "q_idx >= kv_idx", lambda H, S, d: (None, _causal)),
    Variant("sliding_window", "causal, at most 1024 tokens back",
            lambda H, S, d: (None, _sliding(1024))),
    Variant("prefix_lm", "bidirectional over the first 2048 tokens, causal after",
            lambda H, S, d: (None, _prefix_lm(2048))),
    Variant("document", "causal within 12 documents of jagged lengths (captured ids)",
            lambda H, S, d: (None, _document(_document_ids(S, 12, d)))),
    Variant("alibi_causal", "ALiBi bias (captured slopes) + causal",
            lambda H, S, d: (_alibi(H, d), _causal)),
    Variant("softcap_causal", "30 tanh(score / 30) + causal",
            lambda H, S, d: (_softcap(30.0), _causal)),
    Variant("relative_bias", "score + 0.01 (q_idx - kv_idx)",
            lambda H, S, d: (_relative_bias, None)),
    Variant("t5_bias", "T5 bucketed relative bias from a captured [H, 32] table",
            lambda H, S, d: (_t5(H, d), None)),
    Variant("natten_2d", "2-D 7x7 neighbourhood on a 64-wide image (// and %)",
            lambda H, S, d: (None, _natten(64, 3))),
    Variant("causal_and_document", "and_masks(causal, document)",
            lambda H, S, d: (None, and_masks(_causal, _document(_document_ids(S, 12, d))))),
    Variant("prefix_or_sliding", "or_masks(prefix_lm, sliding_window)",
            lambda H, S, d: (None, or_masks(_prefix_lm(2048), _sliding(1024)))),
]}


def names() -> list[str]:
    return list(VARIANTS)


def make(name: str, H: int, S: int, device="cpu"):
    """``(score_mod, mask_mod)`` of variant ``name`` for H heads, S tokens."""
    if name not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; expected one of {names()}")
    return VARIANTS[name].make(H, S, device)


def spec(name: str, B: int, H: int, S: int, D: int, dtype: str = "bfloat16",
         device="cpu", return_lse: bool = False, dynamic: bool = False, tile_q: int = 0):
    """The AttentionSpec ``flex_attention`` compiles for variant ``name`` on
    ``[B, H, S, D]`` q/k/v (a broadcast 128 x 128 block mask when the variant
    has a mask_mod); ``dynamic``: the dynamic-shape kernel's
    (``CompileOptions.dynamic``); ``tile_q``: a GPU kernel's Q tile that
    reads the mask per tile (192 on sm_90a at D = 64)."""
    from .. import frontend
    from ..execution.attention import build_spec
    from ..masks import index_checks
    from ..masks.block_mask import BlockMask

    score_mod, mask_mod = make(name, H, S, device)
    dt = getattr(torch, dtype)
    q = torch.empty(B, H, S, D, dtype=dt, device="meta")
    score = frontend.capture_score_mod(score_mod) if score_mod else None
    mask = frontend.capture_mask_mod(mask_mod) if mask_mod else None
    score, mask, captures = frontend.combine(score, mask)
    block_mask = None
    if mask is not None:
        blocks = -(-S // 128)
        num = torch.empty(1, 1, blocks, dtype=torch.int32, device="meta")
        idx = torch.empty(1, 1, blocks, blocks, dtype=torch.int32, device="meta")
        block_mask = BlockMask.from_kv_blocks(num, idx, num, idx, BLOCK_SIZE=128,
                                              seq_lengths=(S, S), compute_q_blocks=False)
    return build_spec(q, q, q, score_mod=score and score.ir, mask_mod=mask and mask.ir,
                      block_mask=block_mask, captures=captures, scale=1.0 / math.sqrt(D),
                      return_lse=return_lse, name=name,
                      check_indices=index_checks.enabled("sm_90a"), dynamic=dynamic,
                      tile_q=tile_q)
