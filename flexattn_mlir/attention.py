"""The core entry point: attention on torch tensors with mods given as IR.

:func:`attention` takes the mods as :class:`~flexattn_mlir.mods.ModIR` (MLIR
text or builder callbacks) and their captured buffers explicitly; the
torch-compatible :func:`flexattn_mlir.flex_attention` captures Python mods
and calls it.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Optional, Sequence

import torch

from . import cache, checks, index_checks, targets
from .mods import ModIR
from .options import CompileOptions
from .spec import AttentionSpec, BufferType

__all__ = ["attention", "attention_forward", "attention_spec", "attention_compile_count", "build_spec", "kernel_for"]

_lock = threading.Lock()
_kernels: dict[str, object] = {}
_cpu_cache = cache.DiskCache("cpu", ".mlir")
# Counts compilations in this process (tests assert cache hits with it).
compile_count = 0


def _mask_tensors(block_mask) -> list[torch.Tensor]:
    if block_mask is None:
        return []
    names = ["kv_num_blocks", "kv_indices"]
    if getattr(block_mask, "full_kv_num_blocks", None) is not None:
        names += ["full_kv_num_blocks", "full_kv_indices"]
    return [getattr(block_mask, n).contiguous() for n in names]


def index_checked(query, key, score_mod, mask_mod, check_indices: bool):
    """The mods with their reads of captured tensors proved in bounds or
    checked for this call's shapes (index_checks.annotate; memoised)."""
    b, hq, m, _ = query.shape
    return index_checks.annotate(score_mod, mask_mod, (b, hq, m, key.shape[2]), check_indices)


def build_spec(query, key, value, *, score_mod, mask_mod, block_mask, captures,
               scale, return_lse, name="flexattn", check_indices=True, sinks=None,
               return_max=False) -> AttentionSpec:
    """The spec of a call. Raises IndexError for a provably out-of-bounds read
    of a captured tensor; ``check_indices``: whether the reads the compiler
    cannot bound are checked at run time (index_checks.enabled). ``sinks``
    (a tensor, or None) and ``return_max`` add the sink logits and the
    max_scores output."""
    checked = index_checked(query, key, score_mod, mask_mod, check_indices)
    masks = _mask_tensors(block_mask)
    fields = {}
    if block_mask is not None:
        fields["block_size"] = checks.block_size(block_mask.BLOCK_SIZE)
        names = ["kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"]
        fields.update({n: BufferType.of(t) for n, t in zip(names, masks)})
    return AttentionSpec(
        q=BufferType.of(query), k=BufferType.of(key), v=BufferType.of(value),
        scale=float(scale), return_lse=bool(return_lse),
        captures=tuple(BufferType.of(c) for c in captures),
        score_mod=checked.score, mask_mod=checked.mask, name=name,
        index_report=BufferType(checked.report, "i64") if checked.report else None,
        sinks=None if sinks is None else BufferType((int(sinks.shape[0]),), "f32"),
        return_max=bool(return_max), **fields,
    )


def kernel_for(spec: AttentionSpec, opts: CompileOptions):
    """The kernel of (spec, opts): from this process's table, else the disk
    cache (or, for GPUs, an artifact store), else compiled (and stored).
    FLEXATTN_DUMP_IR dumps the stages of the kernels that are compiled (a
    cache hit stays a hit). With FLEXATTN_OVERRIDE_IR set, every call
    compiles afresh and caches nothing: an overridden stage never reaches
    the caches."""
    key = cache.kernel_key(spec.digest(), opts)
    if os.environ.get("FLEXATTN_OVERRIDE_IR"):
        return _load_or_compile(spec, opts, key, use_cache=False)
    with _lock:
        kernel = _kernels.get(key)
        if kernel is None:
            kernel = _load_or_compile(spec, opts, key)
            _kernels[key] = kernel
    return kernel


def _load_or_compile(spec: AttentionSpec, opts: CompileOptions, key: str,
                     use_cache: bool = True):
    global compile_count
    from . import driver

    if opts.target == "cpu":
        from .cpu import CpuKernel

        text = _cpu_cache.get(key) if use_cache else None
        if text is not None:
            return CpuKernel.from_llvm_ir(text.decode(), spec, opts)
        compiled = driver.compile(spec, opts, keep_ir=False)
        compile_count += 1
        kernel = CpuKernel(compiled)  # the JIT built: worth caching
        if use_cache:
            _cpu_cache.put(key, str(compiled.module).encode())
        return kernel
    from . import gpu

    kernel = gpu.load_kernel(key) if use_cache else None
    if kernel is None:
        kernel = gpu.compile_kernel(spec, opts, key, store=use_cache)
        compile_count += 1
    return kernel


def _check_mod(name: str, mod, kind: str, n_captures: int) -> None:
    if mod is None:
        return
    if not isinstance(mod, ModIR) or mod.kind != kind:
        raise TypeError(f"{name} must be a ModIR of kind {kind!r} (see ModIR.{kind}), got {mod!r}")
    if len(mod.capture_types) != n_captures:
        raise ValueError(
            f"{name} declares {len(mod.capture_types)} captured buffers but "
            f"{n_captures} were passed in captures"
        )


def _options(query, options: Optional[CompileOptions]) -> CompileOptions:
    if options is not None:
        return options
    return CompileOptions(target=targets.for_device(query.device).name)


def _prepare(query, key, value, *, score_mod, mask_mod, block_mask, captures, scale,
             enable_gqa, return_lse, name, options, sinks=None, return_max=False):
    """Checks the arguments and returns (spec, contiguous q/k/v, captures,
    options: the device's default when None)."""
    checks.check_qkv(query, key, value, enable_gqa)
    checks.check_sinks(sinks, query)
    options = _options(query, options)
    captures = [c.contiguous() for c in captures]
    checks.check_captures(captures, query.device)
    _check_mod("score_mod", score_mod, "score", len(captures))
    _check_mod("mask_mod", mask_mod, "mask", len(captures))
    if block_mask is not None:
        checks.check_block_mask(block_mask, query, key)
        checks.check_mask_broadcast(block_mask, query, mask_mod)
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    elif not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise TypeError(f"scale must be a finite float, got {scale!r}")
    q, k, v = query.contiguous(), key.contiguous(), value.contiguous()
    if options.target != "cpu":
        # K/V of batch 1 shared by the query batch: the CPU kernel reads them
        # in place (flexattn-tile's batch-stride-0 view). The GPU kernel loads
        # K/V through TMA descriptors of its arguments and reads no such view,
        # so for the GPU they are expanded here (a copy).
        k, v = (t.expand(q.shape[0], -1, -1, -1).contiguous() for t in (k, v))
    spec = build_spec(q, k, v, score_mod=score_mod, mask_mod=mask_mod,
                      block_mask=block_mask, captures=captures, scale=scale,
                      return_lse=return_lse, name=name,
                      check_indices=index_checks.enabled(options.target), sinks=sinks,
                      return_max=return_max)
    return spec, (q, k, v), captures, options


def attention_spec(query, key, value, *, score_mod=None, mask_mod=None, block_mask=None,
                   captures=(), scale=None, enable_gqa=False, return_lse=False,
                   options=None, name="flexattn", capture_labels=(), sinks=None,
                   return_max_scores=False) -> AttentionSpec:
    """The :class:`AttentionSpec` :func:`attention` would compile for these
    arguments (for :func:`flexattn_mlir.compile` and inspection); it takes
    :func:`attention`'s arguments (``capture_labels``, for messages of a
    run, does not matter here)."""
    spec, _, _, _ = _prepare(query, key, value, score_mod=score_mod, mask_mod=mask_mod,
                             block_mask=block_mask, captures=captures, scale=scale,
                             enable_gqa=enable_gqa, return_lse=return_lse, name=name,
                             options=options, sinks=sinks, return_max=return_max_scores)
    return spec


def attention_compile_count() -> int:
    """How many kernels this process has compiled (cache misses)."""
    return compile_count


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
    the captures (messages); neither enters the cache key. ``sinks``: ``[Hq]``
    attention-sink logits (any float dtype) joining each row's softmax
    denominator. Returns ``out`` or ``(out, lse)``; lse is float32, natural
    log; with ``return_max_scores``, ``(out, lse or None, max_scores)``
    (float32, each row's largest modified score). In grad mode, when q, k, v,
    a capture or sinks requires grad, the call is differentiable
    (:func:`flexattn_mlir.autograd.attention_with_grad`; the backward runs on
    the CPU, other targets raise NotImplementedError).
    """
    from . import autograd

    common = dict(score_mod=score_mod, mask_mod=mask_mod, block_mask=block_mask,
                  captures=captures, scale=scale, enable_gqa=enable_gqa,
                  return_lse=return_lse, options=options, name=name, sinks=sinks,
                  return_max_scores=return_max_scores)
    if autograd.needs_grad(query, key, value, [*captures, *given(sinks)]):
        return autograd.attention_with_grad(query, key, value, capture_labels=capture_labels,
                                            **common)
    return results(*attention_forward(query, key, value, **common), return_lse,
                   return_max_scores)


def given(t) -> list:
    """``[t]``, or ``[]`` for None (an optional tensor among a call's inputs)."""
    return [] if t is None else [t]


def results(out, lse, max_scores, return_lse: bool, return_max_scores: bool):
    """:func:`attention`'s return value from the forward's three outputs."""
    if return_max_scores:
        return out, lse if return_lse else None, max_scores
    return (out, lse) if return_lse else out


def unpack_results(result, return_lse: bool, return_max_scores: bool):
    """``(out, lse, max_scores)`` (None where not asked for) from what
    :func:`attention` returned: the inverse of :func:`results`."""
    if return_max_scores:
        return result
    return (*result, None) if return_lse else (result, None, None)


def attention_forward(query, key, value, *, score_mod=None, mask_mod=None, block_mask=None,
                      captures=(), scale=None, enable_gqa=False, return_lse=False,
                      options=None, name="flexattn", sinks=None, return_max_scores=False):
    """:func:`attention`'s forward kernel, recording no gradient (the
    ``flexattn::flex_attention`` op runs it under autograd). Returns ``(out,
    lse, max_scores)``, None for an output not asked for."""
    spec, (q, k, v), captures, options = _prepare(
        query, key, value, score_mod=score_mod, mask_mod=mask_mod, block_mask=block_mask,
        captures=captures, scale=scale, enable_gqa=enable_gqa, return_lse=return_lse,
        name=name, options=options, sinks=sinks, return_max=return_max_scores)
    if options.target != "cpu":
        checks.check_gpu_support(q, v, block_mask, options)
    kernel = kernel_for(spec, options)
    b, hq, m, _ = q.shape
    out = torch.empty((b, hq, m, v.shape[3]), dtype=q.dtype, device=q.device)
    args = [q, k, v]
    if sinks is not None:
        args.append(sinks.detach().to(torch.float32).contiguous())
    args.append(out)
    stats = {n: torch.empty((b, hq, m), dtype=torch.float32, device=q.device) if want else None
             for n, want in (("lse", return_lse), ("max_scores", return_max_scores))}
    args += [t for t in stats.values() if t is not None]
    args += _mask_tensors(block_mask)
    args += [c.view(torch.uint8) if c.dtype == torch.bool else c for c in captures]
    checked = index_checked(q, k, score_mod, mask_mod, index_checks.enabled(options.target))
    report = index_checks.report_capture(checked, q.device)
    if report is not None:
        args.append(report)
    elif options.target != "cpu":
        index_checks.warn_unchecked(checked, options.target)
    kernel(args)
    if report is not None:
        index_checks.raise_reported(report, checked)
    return out, stats["lse"], stats["max_scores"]
