"""The forward on tensors: attention with the mods given as IR.

:func:`attention_forward` takes the mods as
:class:`~flexattn_mlir.compiler.mods.ModIR` and their captured buffers
explicitly, checks the arguments, builds the call's
:class:`~flexattn_mlir.compiler.spec.AttentionSpec`, gets its kernel
(:mod:`.kernels`) and runs it. :func:`flexattn_mlir.attention` (the public
entry, :mod:`flexattn_mlir.api`) calls it, or the differentiable op of
:mod:`.autograd` when gradients are needed.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from flexattn_runtime.masks import retile_q

from ..compiler import targets
from ..compiler.mods import ModIR
from ..compiler.options import CompileOptions
from ..compiler.spec import AttentionSpec, BufferType
from ..masks import index_checks
from ..masks.block_mask import block_size
from . import checks, decode, dynamic_shapes, kernels, tail_split
from .kernels import kernel_for

__all__ = ["attention_forward", "attention_spec", "attention_compile_count", "build_spec",
           "kernel_for", "Launch", "prepare_launch"]


def _retiles(block_mask, tile_q: int) -> bool:
    """Whether the kernel's ``tile_q``-row Q tiles read ``block_mask`` as
    the union of its query blocks (a tile that does not divide the mask's Q
    block, e.g. sm_90a's 192-row tiles over 128-row blocks)."""
    return bool(block_mask is not None and tile_q
                and block_size(block_mask.BLOCK_SIZE)[0] % tile_q)


def _mask_tensors(block_mask, tile_q: int = 0, q_len: int = 0) -> list[torch.Tensor]:
    """The block mask's KV-side lists as the kernel takes them (per Q tile
    where :func:`_retiles`)."""
    if block_mask is None:
        return []
    names = ["kv_num_blocks", "kv_indices"]
    if getattr(block_mask, "full_kv_num_blocks", None) is not None:
        names += ["full_kv_num_blocks", "full_kv_indices"]
    lists = [getattr(block_mask, n).contiguous() for n in names]
    if _retiles(block_mask, tile_q):
        lists = retile_q(lists, block_size(block_mask.BLOCK_SIZE)[0], tile_q, q_len)
    return lists


def index_checked(query, key, score_mod, mask_mod, check_indices: bool, dynamic: bool = False):
    """The mods with their reads of captured tensors proved in bounds or
    checked for this call's shapes (index_checks.annotate; memoised). For a
    ``dynamic`` kernel, the mods first take the scale operand
    (dynamic_shapes.scaled_mods)."""
    if dynamic:
        mods = [m for m in (score_mod, mask_mod) if m is not None]
        caps = mods[0].capture_types if mods else ()
        score_mod, mask_mod = dynamic_shapes.scaled_mods(score_mod, mask_mod, caps)
    b, hq, m, _ = query.shape
    return index_checks.annotate(score_mod, mask_mod, (b, hq, m, key.shape[2]), check_indices,
                                 dynamic)


def build_spec(query, key, value, *, score_mod, mask_mod, block_mask, captures,
               scale, return_lse, name="flexattn", check_indices=True,
               dynamic=False, sinks=None, return_max=False, tile_q=0) -> AttentionSpec:
    """The spec of a call. Raises IndexError for a provably out-of-bounds read
    of a captured tensor; ``check_indices``: whether the reads the compiler
    cannot bound are checked at run time (index_checks.enabled);
    ``dynamic``: the spec of the kernel that serves every batch size,
    sequence length, block-mask shape and scale (CompileOptions.dynamic,
    :mod:`.dynamic_shapes`). ``sinks`` (a tensor, or None) and
    ``return_max`` add the sink logits and the max_scores output;
    ``tile_q``: the kernel's Q tile, when the block mask must be read per
    tile (:func:`_retiles`)."""
    checked = index_checked(query, key, score_mod, mask_mod, check_indices, dynamic)
    masks = _mask_tensors(block_mask, tile_q, query.shape[2])
    qkv = [BufferType.of(t) for t in (query, key, value)]
    capture_types = tuple(BufferType.of(c) for c in captures)
    fields = {}
    if block_mask is not None:
        names = ["kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"]
        fields.update({n: BufferType.of(t) for n, t in zip(names, masks)})
    if dynamic:
        *qkv, fields = dynamic_shapes.buffer_types(*qkv, fields)
        capture_types += (BufferType((), "f32"),)  # the scale
        scale = 1.0
    if block_mask is not None:
        bq, bkv = block_size(block_mask.BLOCK_SIZE)
        fields["block_size"] = (tile_q, bkv) if _retiles(block_mask, tile_q) else (bq, bkv)
    return AttentionSpec(
        q=qkv[0], k=qkv[1], v=qkv[2], scale=float(scale), return_lse=bool(return_lse),
        captures=capture_types, score_mod=checked.score, mask_mod=checked.mask, name=name,
        index_report=BufferType(checked.report, "i64") if checked.report else None, **fields,
        sinks=None if sinks is None else BufferType((int(sinks.shape[0]),), "f32"),
        return_max=bool(return_max),
    )


def _mask_tile(options: CompileOptions) -> int:
    """The Q tile a block mask is read per (0: as it is): the GPU kernel's
    wide tile (``Target.wide_q_tile``, 192 rows on sm_90a), which does not
    divide torch's 128-row blocks. Other tiles divide the mask's block or
    are made the block by flexattn-tile (and packed tiles build their own
    union there)."""
    t = targets.target(options.target)
    return options.tile_q if t.is_gpu and options.tile_q == t.wide_q_tile else 0


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
    """Checks the arguments and returns (spec, q/k/v as the kernel sees their
    shapes, captures, options: the device's default when None)."""
    checks.check_qkv(query, key, value, enable_gqa)
    checks.check_sinks(sinks, query)
    if options is not None and options.tiles:
        raise ValueError(f"options.tiles={options.tiles}: a kernel over the grid's first tiles "
                         f"only is a tail split's main kernel, which the call plans itself "
                         f"(flexattn_mlir.execution.tail_split); leave tiles at 0")
    options = decode.resolve(_options(query, options), query, key, value, block_mask,
                             sinks is not None or return_max)
    if options.splits and not options.decode:
        raise ValueError(f"splits={options.splits}: a call's KV ranges are the decode kernel's "
                         f"(at most {decode.DECODE_MAX_ROWS} query rows, or decode=True); the "
                         f"prefill kernel's are a tail split's, which the call plans itself")
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
    q, k, v = query, key, value  # the spec reads shapes and dtypes only
    if _expands_kv(options):
        k, v = _expand_kv(q, k, v, copy=False)
    spec = build_spec(q, k, v, score_mod=score_mod, mask_mod=mask_mod,
                      block_mask=block_mask, captures=captures, scale=scale,
                      return_lse=return_lse, name=name,
                      check_indices=index_checks.enabled(options.target),
                      dynamic=options.dynamic, sinks=sinks, return_max=return_max,
                      tile_q=_mask_tile(options))
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
    return kernels.compile_count


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


def _expands_kv(options: CompileOptions) -> bool:
    """Whether the kernel of ``options`` needs K/V of batch 1 shared by the
    query batch (a paged cache) expanded to the query batch. The CPU kernel
    and the GPU decode kernel read them in place (flexattn-tile's
    batch-stride-0 view; the decode kernel's cp.async rings copy from batch
    0, flexattn-multistage). The other GPU kernels load K/V through TMA
    descriptors of their arguments (sm_90a) or are not built for it (the
    backward), so there they are expanded."""
    return options.target != "cpu" and not options.decode


def _expand_kv(q, k, v, copy: bool = True):
    """K/V expanded to the query batch (a copy when ``copy``; none when K/V
    have the query's batch), for the kernels :func:`_expands_kv` names."""
    b = q.shape[0]
    k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
    return (k.contiguous(), v.contiguous()) if copy else (k, v)


def _contiguous(shape) -> tuple:
    """The row-major strides of ``shape``."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _allocator(device: torch.device):
    """``empty(size, stride, dtype)`` on ``device``: the entry points
    Inductor's generated code allocates with (``torch._C._dynamo.guards``:
    no Python argument parsing, a few µs less per output than torch.empty),
    torch.empty_strided where torch has none. The CUDA one allocates on the
    current device, which the launch checks is ``device``."""
    try:
        from torch._C._dynamo import guards
        fast = {"cpu": guards._empty_strided_cpu,
                "cuda": guards._empty_strided_cuda}.get(device.type)
    except (ImportError, AttributeError):
        fast = None
    if fast is not None:
        return fast
    return lambda size, stride, dtype: torch.empty_strided(size, stride, dtype=dtype,
                                                           device=device)


class Launch:
    """What a call runs once its arguments are checked and its kernel found:
    the kernel, the outputs' shapes, the block mask's tensors, the index
    checks. ``launch(query, key, value, captures, sinks)`` allocates the
    outputs, lays out the kernel's arguments and runs it, returning ``(out,
    lse, max_scores)``. It checks nothing, and reads nothing back from the
    device (but the CPU kernel's report of the reads the compiler could not
    bound, and a GPU's with FLEXATTN_CHECK_INDICES=1), so a call that meets
    it again (:mod:`.call_plans`) costs what the launch does. The kernel
    checks its arguments at each call; a plan's hits pass ``kernel``, the
    one :meth:`prepare` made (on a GPU, a prepared launch that checks only
    alignment and the current device: the plan's key and guards fix the
    rest). Outputs come from torch's allocator (on CUDA, its caching
    allocator: a CUDA graph captures them in its pool)."""

    __slots__ = ("kernel", "out_layout", "stats_layout", "dtype", "device", "empty",
                 "return_lse", "return_max", "gpu", "expand_kv", "mask_tensors", "scale_arg",
                 "checked")

    def __init__(self, kernel, q, key, v, spec: AttentionSpec, options: CompileOptions,
                 block_mask, scale, checked):
        self.kernel = kernel
        b, hq, m, _ = q.shape
        out_shape = (b, hq, m, v.shape[3])
        self.out_layout = (out_shape, _contiguous(out_shape))  # shape, strides
        self.stats_layout = ((b, hq, m), _contiguous((b, hq, m)))
        self.dtype, self.device = q.dtype, q.device
        self.empty = _allocator(q.device)
        self.return_lse, self.return_max = spec.return_lse, spec.return_max
        self.gpu = options.target != "cpu"
        self.expand_kv = _expands_kv(options) and key.shape[0] != b  # copies them
        self.mask_tensors = tuple(_mask_tensors(block_mask, _mask_tile(options), m))
        self.scale_arg = None
        if options.dynamic:  # the scale operand (dynamic_shapes); read-only, kept
            self.scale_arg = torch.tensor(scale, dtype=torch.float32, device=q.device)
        self.checked = checked

    def prepare(self):
        """The kernel a call plan's hits run: the GPU kernel's prepared launch
        on this call's device, the CPU kernel itself."""
        return self.kernel.prepare(self.device) if self.gpu else self.kernel

    def __call__(self, query, key, value, captures, sinks, kernel=None):
        q, k, v = query.contiguous(), key.contiguous(), value.contiguous()
        if self.expand_kv:
            k, v = _expand_kv(q, k, v)
        out = self.empty(*self.out_layout, self.dtype)
        args = [q, k, v]
        if sinks is not None:
            args.append(sinks.detach().to(torch.float32).contiguous())
        args.append(out)
        lse = mx = None
        if self.return_lse:
            lse = self.empty(*self.stats_layout, torch.float32)
            args.append(lse)
        if self.return_max:
            mx = self.empty(*self.stats_layout, torch.float32)
            args.append(mx)
        args += self.mask_tensors
        for c in captures:
            c = c.contiguous()
            args.append(c.view(torch.uint8) if c.dtype == torch.bool else c)
        if self.scale_arg is not None:
            args.append(self.scale_arg)
        report = None
        if self.checked.report is not None:
            report = index_checks.report_capture(self.checked, self.device)
            args.append(report)
        (kernel or self.kernel)(args)
        if report is not None:
            index_checks.raise_reported(report, self.checked)
        return out, lse, mx


def prepare_launch(query, key, value, *, score_mod=None, mask_mod=None, block_mask=None,
                   captures=(), scale=None, enable_gqa=False, return_lse=False,
                   options=None, name="flexattn", sinks=None, return_max_scores=False) -> Launch:
    """Checks :func:`attention_forward`'s arguments, finds or compiles the
    kernel and returns the :class:`Launch` that runs it on them."""
    spec, (q, k, _), captures, options = _prepare(
        query, key, value, score_mod=score_mod, mask_mod=mask_mod, block_mask=block_mask,
        captures=captures, scale=scale, enable_gqa=enable_gqa, return_lse=return_lse,
        name=name, options=options, sinks=sinks, return_max=return_max_scores)
    if options.target != "cpu":
        checks.check_gpu_support(q, value, block_mask, options)
        kernel = _gpu_kernel(spec, options, q.device)
    else:
        kernel = kernel_for(spec, options)
    checked = index_checked(q, k, score_mod, mask_mod, index_checks.enabled(options.target),
                            options.dynamic)
    if checked.report is None and options.target != "cpu":
        index_checks.warn_unchecked(checked, options.target)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return Launch(kernel, q, key, value, spec, options, block_mask, scale, checked)


def _gpu_kernel(spec: AttentionSpec, options: CompileOptions, device):
    """The GPU kernel of (spec, options), or the two of its tail split
    (:mod:`.tail_split`) where the device's SMs leave a nearly empty last wave."""
    split = tail_split.plan(spec, options, targets.sm_count(options.target, device))
    if split is None:
        return kernel_for(spec, options)
    return kernels.TailSplitKernel(kernel_for(spec, split.main),
                                   kernel_for(split.tail_spec, split.tail), split.rows)


def attention_forward(query, key, value, *, score_mod=None, mask_mod=None, block_mask=None,
                      captures=(), scale=None, enable_gqa=False, return_lse=False,
                      options=None, name="flexattn", sinks=None, return_max_scores=False):
    """:func:`attention`'s forward kernel, recording no gradient (the
    ``flexattn::flex_attention`` op runs it under autograd). Returns ``(out,
    lse, max_scores)``, None for an output not asked for."""
    launch = prepare_launch(query, key, value, score_mod=score_mod, mask_mod=mask_mod,
                            block_mask=block_mask, captures=captures, scale=scale,
                            enable_gqa=enable_gqa, return_lse=return_lse, options=options,
                            name=name, sinks=sinks, return_max_scores=return_max_scores)
    return launch(query, key, value, captures, sinks)
