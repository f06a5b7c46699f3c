"""Hugging Face transformers models on flexattn-mlir, through one registration.

    from flexattn_mlir.integrations import transformers as flexattn_hf

    name = flexattn_hf.register()            # "flexattn_mlir"
    model = AutoModel.from_pretrained(path, attn_implementation=name)
    # or, on a model already built:  model.set_attn_implementation(name)

:func:`register` puts two functions under one name, mirroring how
transformers integrates torch's ``flex_attention`` (its
``integrations/flex_attention.py`` and ``masking_utils.flex_attention_mask``),
with our compiler in place of torch's:

* :func:`block_mask` in ``AttentionMaskInterface``: the model's
  ``create_causal_mask`` / ``create_bidirectional_mask`` /
  ``create_sliding_window_causal_mask`` / ... call it **once per forward**;
  it turns the mask function they assembled (causal, bidirectional, sliding
  window, chunked, packed sequences) and the 2-D padding mask into one
  :class:`~flexattn_mlir.BlockMask`, which every layer then receives. The
  padding mask is a captured tensor of the mask_mod: a new batch reuses the
  compiled kernels.
* :func:`attention_forward` in ``AttentionInterface``: each layer's
  attention, a :func:`~flexattn_mlir.flex_attention` call with that block
  mask and a score_mod for what the model passes per layer: logit
  softcapping (``softcap``), T5-style relative position bias
  (``position_bias``), a 4-D float or boolean mask the caller built.
  Grouped-query attention runs without repeating K/V. Attention sinks
  (``s_aux``) renormalise with the log-sum-exp as transformers does.

What is not supported raises before anything runs, naming it: attention
dropout in training (``dropout > 0``), ``output_attentions`` (no weights are
materialised), and whatever :func:`flexattn_mlir.flex_attention` refuses for
the device (e.g. a GPU head dim its kernel lacks). There is no silent
fallback to another attention.

transformers is imported only when these functions run.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Optional

import torch

from ..api import flex_attention
from ..masks.block_mask import BlockMask, create_block_mask

__all__ = ["NAME", "register", "attention_forward", "block_mask", "mask_count"]

#: The name :func:`register` uses by default.
NAME = "flexattn_mlir"

#: Block masks :func:`block_mask` has built in this process (one per
#: forward and mask kind: tests check that layers share it).
mask_count = 0


def register(name: str = NAME) -> str:
    """Registers :func:`attention_forward` with transformers'
    ``AttentionInterface`` and :func:`block_mask` with its
    ``AttentionMaskInterface`` under ``name`` and returns ``name``, for
    ``from_pretrained(..., attn_implementation=name)`` or
    ``model.set_attn_implementation(name)``. Calling it again is harmless."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"register: name must be a non-empty string without '/' (transformers "
                         f"reads 'org/repo' as a Hub kernel), got {name!r}")
    AttentionInterface.register(name, attention_forward)
    AttentionMaskInterface.register(name, block_mask)
    return name


# ---------------------------------------------------------------------------
# The mask: one BlockMask per forward
# ---------------------------------------------------------------------------


def block_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0,
               mask_function: Optional[Callable] = None, attention_mask=None,
               device="cpu", **kwargs) -> BlockMask:
    """transformers' mask-interface contract (``flex_attention_mask``'s):
    the block mask of ``mask_function`` over queries ``q_offset ..
    q_offset + q_length`` and keys ``kv_offset .. kv_offset + kv_length``,
    and of the 2-D padding mask ``attention_mask`` ``[B, kv]`` (True keeps).
    Built on the CPU by flexattn-mlir's create_block_mask and moved to
    ``device``; the padding mask is read once here (a whole-batch check,
    one synchronisation per forward, not per layer)."""
    from transformers import masking_utils as mu

    global mask_count
    mask_count += 1
    mask_function = mask_function or mu.causal_mask_function
    if attention_mask is not None and not bool(mu.fast_all(attention_mask)):
        padding = mu.prepare_padding_mask(attention_mask, kv_length, kv_offset)
        mask_function = mu.and_masks(mask_function, mu.padding_mask_function(padding))
    if not (_is_zero(q_offset) and _is_zero(kv_offset)):
        mask_function = mu.add_offsets_to_mask_function(mask_function, q_offset, kv_offset)
    return create_block_mask(mask_function, B=batch_size, H=None, Q_LEN=q_length,
                             KV_LEN=kv_length, device=device)


def _is_zero(offset) -> bool:
    return isinstance(offset, int) and offset == 0


# A causal mask for a call that gets no mask but is causal (a model that
# builds no mask), per (M, N, device): it has no captures, so it is reusable.
_causal_masks: "OrderedDict[tuple, BlockMask]" = OrderedDict()
_causal_lock = threading.Lock()


def _causal_mask(m: int, n: int, device) -> BlockMask:
    key = (m, n, str(device))
    with _causal_lock:
        hit = _causal_masks.get(key)
        if hit is None:
            from transformers.masking_utils import causal_mask_function

            hit = _causal_masks[key] = create_block_mask(causal_mask_function, None, None, m, n,
                                                         device=device)
            if len(_causal_masks) > 16:
                _causal_masks.popitem(last=False)
        return hit


# ---------------------------------------------------------------------------
# The attention
# ---------------------------------------------------------------------------


def _refuse_unsupported(module, dropout, kwargs) -> None:
    label = type(module).__name__
    if dropout is not None and dropout > 0:
        raise NotImplementedError(
            f"flexattn_mlir attention: {label} passes dropout={dropout} (attention dropout in "
            f"training mode), and flexattn_mlir has no attention dropout yet. Set the config's "
            f"attention dropout probability to 0 (e.g. attention_dropout or "
            f"attention_probs_dropout_prob), or call model.eval()")
    if kwargs.get("output_attentions"):
        raise NotImplementedError(
            f"flexattn_mlir attention: output_attentions=True ({label}) needs the attention "
            f"weights, which flexattn_mlir never materialises; use attn_implementation='eager' "
            f"for them")


def _index(n: int, i):
    """``i``, or 0 along a broadcast (size-1) dim."""
    return i if n > 1 else 0


def _score_mod(softcap, bias, score_mask):
    """The score_mod of what the model passed (None for nothing): softcap,
    then the additive bias ``[B|1, H|1, M, N]``, then a float mask (added)
    or a bool mask (keeps where True), as transformers' flex path does."""
    if softcap is None and bias is None and score_mask is None:
        return None
    bias_dims = tuple(bias.shape[:2]) if bias is not None else (1, 1)
    mask_dims = tuple(score_mask.shape[:2]) if score_mask is not None else (1, 1)
    mask_is_bool = score_mask is not None and score_mask.dtype == torch.bool

    def hf_score_mod(score, b, h, q_idx, kv_idx):
        if softcap is not None:
            score = softcap * torch.tanh(score / softcap)
        if bias is not None:
            score = score + bias[_index(bias_dims[0], b), _index(bias_dims[1], h), q_idx, kv_idx]
        if score_mask is not None:
            m = score_mask[_index(mask_dims[0], b), _index(mask_dims[1], h), q_idx, kv_idx]
            score = torch.where(m, score, -float("inf")) if mask_is_bool else score + m
        return score

    return hf_score_mod


def _mask_of(attention_mask, module, query, key, is_causal):
    """(block mask, 4-D tensor mask) of what the layer received."""
    if isinstance(attention_mask, BlockMask):
        return attention_mask, None
    if attention_mask is None:
        # No mask built (SDPA's contract): causal unless the module says not.
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        if causal and query.shape[2] > 1:
            return _causal_mask(query.shape[2], key.shape[2], query.device), None
        return None, None
    if isinstance(attention_mask, torch.Tensor):
        if attention_mask.dim() != 4:
            raise ValueError(
                f"flexattn_mlir attention: attention_mask must be the BlockMask "
                f"{NAME!r}'s mask function builds or a 4-D [B, 1|H, M, N] tensor, got shape "
                f"{tuple(attention_mask.shape)}")
        return None, attention_mask[:, :, :, : key.shape[2]]
    from torch.nn.attention.flex_attention import BlockMask as TorchBlockMask

    if isinstance(attention_mask, TorchBlockMask):
        return attention_mask, None
    raise TypeError(f"flexattn_mlir attention: attention_mask must be a BlockMask, a 4-D tensor "
                    f"or None, got {type(attention_mask).__name__}")


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor, attention_mask, scaling: Optional[float] = None,
                      dropout: float = 0.0, softcap: Optional[float] = None,
                      s_aux: Optional[torch.Tensor] = None,
                      position_bias: Optional[torch.Tensor] = None,
                      is_causal: Optional[bool] = None, **kwargs):
    """transformers' attention-interface contract: ``query [B, Hq, M, D]``,
    ``key``/``value [B, Hkv, N, D|Dv]`` and the mask :func:`block_mask`
    built; returns ``(attn_output [B, M, Hq, Dv], None)`` (no weights)."""
    _refuse_unsupported(module, dropout, kwargs)
    mask, score_mask = _mask_of(attention_mask, module, query, key, is_causal)
    score_mod = _score_mod(softcap, position_bias, score_mask)
    want_lse = s_aux is not None
    result = flex_attention(query, key, value, score_mod=score_mod, block_mask=mask,
                            scale=scaling, enable_gqa=query.shape[1] != key.shape[1],
                            return_lse=want_lse, kernel_options=kwargs.get("kernel_options"))
    out = _with_sinks(*result, s_aux) if want_lse else result
    return out.transpose(1, 2).contiguous(), None


def _with_sinks(out: torch.Tensor, lse: torch.Tensor, s_aux: torch.Tensor) -> torch.Tensor:
    """Attention sinks (a per-head logit in every softmax's denominator and
    no value): ``out * exp(lse - logsumexp(lse, sink))``, transformers'
    renormalisation."""
    b, h, m, _ = out.shape
    lse = lse.unsqueeze(-1)
    sinks = s_aux.to(lse.dtype).view(1, -1, 1, 1).expand(b, h, m, 1)
    combined = torch.logsumexp(torch.cat([lse, sinks], dim=-1), dim=-1, keepdim=True)
    return (out * torch.exp(lse - combined)).to(out.dtype)
