"""``flex_attention``: a drop-in for ``torch.nn.attention.flex_attention``.

The orchestration only: capture the mods (:mod:`.frontend`), give both the
same captured buffers, pick compile options, and call :func:`attention`,
which runs the forward (:mod:`.execution.attention`: checks the arguments,
finds or compiles the kernel, runs it on CPU tensors through the
ExecutionEngine, on CUDA tensors through flexattn_runtime) or, when
gradients are needed, the differentiable op (:mod:`.execution.autograd`).
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import replace
from typing import Callable, Optional, Sequence

import torch

from . import frontend
from .compiler import driver, targets
from .compiler.mods import ModIR
from .compiler.options import CompileOptions
from .execution import autograd, call_plans, checks, decode
from .execution.attention import (attention_forward, attention_spec, prepare_launch, results,
                                  unpack_results)
from .masks import is_noop
from .masks.block_mask import BlockMask, agrees_with_mask_mod, block_size

__all__ = ["flex_attention", "compile_flex_attention", "attention"]

log = logging.getLogger(__name__)


def _captured_mask(block_mask):
    """The block mask's mask_mod as a CapturedMod (None for noop_mask).
    Captured afresh (a memo hit, microseconds): the mask_mod may have been
    reassigned, or a global it reads rebound, since the mask was made."""
    if is_noop(block_mask.mask_mod):
        return None
    return frontend.capture_mask_mod(block_mask.mask_mod)


def _q_tile(options: CompileOptions, kernel_options, query, key, value,
            block_mask) -> CompileOptions:
    """``options`` with the target's Q tile for these head dims
    (``Target.q_tiles``: sm_90a's 192-row tiles at D = 64) where
    ``kernel_options`` names neither a Q tile nor persistent CTAs (the
    wide tile's three consumer warpgroups spill their tile loop at 160
    registers). A block mask reaches a wide tile as the union of the
    128-row blocks its rows fall in, which is the same attention only where
    the mask's lists agree with its mask_mod
    (:func:`~flexattn_mlir.masks.block_mask.agrees_with_mask_mod`, checked
    once per mask); one that does not keeps the 128-row kernel."""
    t = targets.target(options.target)
    named = kernel_options or {}
    if not t.is_gpu or any(k in named for k in ("BLOCK_M", "tile_q", "persistent")):
        return options
    rows = t.q_tile(query.shape[-1], value.shape[-1], str(query.dtype).removeprefix("torch."),
                    dynamic=bool(options.dynamic))
    if rows == options.tile_q:
        return options
    if block_mask is not None and block_size(block_mask.BLOCK_SIZE)[0] % rows:
        if options.decode is not False and query.shape[2] <= decode.DECODE_MAX_ROWS:
            return options  # the decode path (its own tile) runs it
        checks.check_block_mask(block_mask, query, key)  # fits q/k (memoised; raises)
        if not agrees_with_mask_mod(block_mask, query.shape[2], key.shape[2]):
            return options
    return replace(options, tile_q=rows)


def _prefers_persistent(options: CompileOptions, block_mask, kernel_options, query, key,
                        value) -> bool:
    if (options.target == "cpu" or options.dynamic or block_mask is None
            or "persistent" in (kernel_options or {})
            or options.tile_q == targets.target(options.target).wide_q_tile):
        return False  # (a dynamic GPU kernel runs one CTA per Q tile)
    visited = checks.check_block_mask(block_mask, query, key)  # memoised per mask
    idx = block_mask.kv_indices
    total = idx.shape[0] * idx.shape[1] * idx.shape[2] * idx.shape[3]
    below = targets.target(options.target).persistent_below(
        query.shape[-1], value.shape[-1], str(query.dtype).removeprefix("torch."))
    return visited < below * total


def flex_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    score_mod: Optional[Callable] = None,
    block_mask=None,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
    return_lse: bool = False,
    kernel_options: Optional[dict] = None,
    *,
    return_aux=None,
    sinks: Optional[torch.Tensor] = None,
):
    """``torch.nn.attention.flex_attention.flex_attention``, compiled by flexattn-mlir.

    query ``[B, Hq, M, D]``, key ``[B, Hkv, N, D]``, value ``[B, Hkv, N, Dv]``;
    ``score_mod(score, b, h, q_idx, kv_idx)`` and the block mask's
    ``mask_mod(b, h, q_idx, kv_idx)`` are captured into the kernel, tensors
    they read becoming kernel operands; ``block_mask`` is a
    :class:`~flexattn_mlir.BlockMask` or torch's; ``scale`` defaults to
    1/sqrt(D). Returns ``out``, ``(out, lse)`` with ``return_lse``, or
    ``(out, AuxOutput)`` with ``return_aux=AuxRequest(lse=True,
    max_scores=True)`` (either or both; max_scores: each row's largest score
    after score_mod, float32, -inf for a row with no visible key).
    ``sinks`` (beyond torch): ``[Hq]`` attention-sink logits (gpt-oss
    style), one per query head, that join every row's softmax denominator:
    ``out = sum_j exp(s_j) v_j / (exp(sinks[h]) + sum_j exp(s_j))``; lse
    includes the sink (a row with no visible key gives 0 and lse =
    sinks[h]), max_scores does not. Learnable (CPU and GPU).
    ``kernel_options`` takes our :class:`CompileOptions` fields and torch's
    ``BLOCK_M``/``BLOCK_N``/``num_stages``; other torch tuning keys are ignored.

    Differentiable: when q, k, v, a tensor the mods capture or sinks requires
    grad, gradients flow to all of them and through lse
    (:mod:`flexattn_mlir.execution.autograd`). Under ``torch.compile`` the call is one
    custom op (no graph break); the mods must then be functions that exist
    outside the compiled code (module level, or made in ``__init__``), so
    the tensors they capture can be found from them at trace time.
    """
    if return_lse and return_aux is not None:
        raise ValueError("pass either return_lse or return_aux, not both")
    want_lse = return_lse or (return_aux is not None and bool(return_aux.lse))
    want_max = return_aux is not None and bool(getattr(return_aux, "max_scores", False))
    checks.check_sinks(sinks, query)
    if torch.compiler.is_compiling():
        # torch.compile: one custom op in the graph (the mods are captured
        # at trace time); differentiable.
        out, lse, max_scores = autograd.traced_flex_attention(
            query, key, value, score_mod, block_mask, scale, enable_gqa, want_lse,
            kernel_options, sinks, want_max)
    else:
        plan_key = call_plans.call_key(query, key, value, score_mod, block_mask, scale,
                                       enable_gqa, want_lse, want_max, kernel_options, sinks)
        plan = call_plans.find(plan_key, score_mod, block_mask)
        if plan is not None and not autograd.needs_grad(query, key, value, plan.captures, sinks):
            # A cache hit (execution/call_plans.py): launch, nothing else.
            out, lse, max_scores = plan.run(query, key, value, sinks)
        else:
            out, lse, max_scores = _call(query, key, value, score_mod, block_mask, scale,
                                         enable_gqa, want_lse, want_max, kernel_options, sinks,
                                         plan_key)
    if return_aux is not None:
        from torch.nn.attention.flex_attention import AuxOutput

        return out, AuxOutput(lse=lse if want_lse else None,
                              max_scores=max_scores if want_max else None)
    return (out, lse) if want_lse else out


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    score_mod: Optional[ModIR] = None,
    mask_mod: Optional[ModIR] = None,
    block_mask=None,
    captures: Sequence[torch.Tensor] = (),
    scale: Optional[float] = None,
    enable_gqa: bool = False,
    return_lse: bool = False,
    options: Optional[CompileOptions] = None,
    name: str = "flexattn",
    capture_labels: Sequence[str] = (),
    sinks: Optional[torch.Tensor] = None,
    return_max_scores: bool = False,
):
    """softmax(mods(scale * Q Kᵀ)) V with the mods given as IR.

    ``block_mask`` is any object with torch's BlockMask fields
    (``kv_num_blocks``, ``kv_indices``, optional ``full_kv_*``,
    ``BLOCK_SIZE``). ``captures`` are the buffers the mods' trailing block
    arguments receive. Non-contiguous inputs are copied to contiguous ones.
    ``name`` labels the kernel (IR dumps, messages) and ``capture_labels``
    the captures (messages); neither enters the cache key. ``sinks``:
    ``[Hq]`` attention-sink logits (any float dtype) joining each row's
    softmax denominator. Returns ``out`` or ``(out, lse)``; lse is float32,
    natural log; with ``return_max_scores``, ``(out, lse or None,
    max_scores)`` (float32, each row's largest modified score). In grad mode,
    when q, k, v, a capture or sinks requires grad, the call is
    differentiable (:func:`flexattn_mlir.execution.autograd.attention_with_grad`).
    """
    common = dict(score_mod=score_mod, mask_mod=mask_mod, block_mask=block_mask,
                  captures=captures, scale=scale, enable_gqa=enable_gqa,
                  return_lse=return_lse, options=options, name=name, sinks=sinks,
                  return_max_scores=return_max_scores)
    if autograd.needs_grad(query, key, value, captures, sinks):
        return autograd.attention_with_grad(query, key, value, capture_labels=capture_labels,
                                            **common)
    return results(*attention_forward(query, key, value, **common), return_lse,
                   return_max_scores)


def _call(query, key, value, score_mod, block_mask, scale, enable_gqa, want_lse, want_max,
          kernel_options, sinks, plan_key):
    """flex_attention's call without its plan: captures the mods, checks the
    arguments, finds the kernel, runs it; keeps the plan under ``plan_key``
    when the call records no gradient. Returns ``(out, lse, max_scores)``."""
    call, guards = _lower_call(query, key, value, score_mod, block_mask, enable_gqa,
                               kernel_options)
    common = dict(scale=scale, enable_gqa=enable_gqa, return_lse=want_lse, sinks=sinks,
                  return_max_scores=want_max, **call)
    if autograd.needs_grad(query, key, value, call["captures"], sinks):
        # Training: the differentiable custom op (flexattn_mlir.execution.autograd).
        result = autograd.attention_with_grad(query, key, value, score_fn=score_mod, **common)
        return unpack_results(result, want_lse, want_max)
    del common["capture_labels"]
    launch = prepare_launch(query, key, value, **common)
    result = launch(query, key, value, call["captures"], sinks)
    if guards is not None:  # planned once it succeeded
        call_plans.store(plan_key, call_plans.CallPlan(score_mod, block_mask, guards,
                                                       call["captures"], launch))
    return result


def _lower_call(query, key, value, score_mod, block_mask, enable_gqa, kernel_options):
    """flex_attention's arguments as :func:`attention`'s (a dict: captured
    mods sharing one capture list, our BlockMask, compile options) and the
    mods' capture guards (None when some mod has none)."""
    checks.check_qkv(query, key, value, enable_gqa)
    if block_mask is not None and not isinstance(block_mask, BlockMask):
        block_mask = BlockMask.from_torch(block_mask)
    score = frontend.capture_score_mod(score_mod) if score_mod is not None else None
    mask = _captured_mask(block_mask) if block_mask is not None else None
    mods = [m for m in (score, mask) if m is not None]
    guards = tuple(m.guards for m in mods)
    names = [m.name for m in mods]
    labels = frontend.capture_labels(score, mask)
    score, mask, captures = frontend.combine(score, mask)
    options = _options(kernel_options, targets.for_device(query.device).name)
    options = _q_tile(options, kernel_options, query, key, value, block_mask)
    if _prefers_persistent(options, block_mask, kernel_options, query, key, value):
        options = replace(options, persistent=targets.sm_count(options.target, query.device))
    return dict(score_mod=score.ir if score else None, mask_mod=mask.ir if mask else None,
                block_mask=block_mask, captures=captures, options=options,
                name=_variant_name(names), capture_labels=labels), (
                    None if any(g is None for g in guards) else guards)


@functools.lru_cache(maxsize=64)
def _default_options(target: str) -> CompileOptions:
    return CompileOptions.from_kernel_options(None, target=target)


def _options(kernel_options, target: str) -> CompileOptions:
    """The compile options of ``kernel_options`` (frozen: the defaults of a
    target are made once)."""
    if not kernel_options:
        return _default_options(target)
    return CompileOptions.from_kernel_options(kernel_options, target=target)


def _variant_name(mod_names) -> str:
    """The kernel's label: the mods' Python names (``alibi_causal``),
    ``flexattn`` without mods."""
    parts = [re.sub(r"\W+", "_", n).strip("_") or "mod" for n in mod_names]
    return "_".join(parts) or "flexattn"


def compile_flex_attention(query, key, value, score_mod=None, block_mask=None, scale=None,
                           enable_gqa=False, return_lse=False, kernel_options=None, *,
                           target: Optional[str] = None):
    """Compiles what :func:`flex_attention` would run for these arguments and
    returns the :class:`~flexattn_mlir.compiler.driver.Compiled`, which holds the IR of
    every stage (``.ir[stage]``, ``.stage_names()``). ``target`` overrides the
    device's (e.g. ``"sm_90a"`` to see the GPU stages from CPU tensors)."""
    from .compiler import driver
    from .execution.attention import attention_spec

    call, _ = _lower_call(query, key, value, score_mod, block_mask, enable_gqa, kernel_options)
    options = call.pop("options")
    if target is not None:
        options = CompileOptions(**{**options.__dict__, "target": target,
                                    "tile_q": 0, "tile_kv": 0, "dynamic": None})
        options = _q_tile(options, kernel_options, query, key, value, call["block_mask"])
    options = decode.resolve(options, query, key, value, call["block_mask"])
    spec = attention_spec(query, key, value, scale=scale, enable_gqa=enable_gqa,
                          return_lse=return_lse, options=options, **call)
    return driver.compile(spec, options)
