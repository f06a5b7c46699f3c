"""Training: ``flex_attention`` as a differentiable ``torch.library`` op.

Two custom ops carry every call that needs gradients, eager or compiled:

    flexattn::flex_attention(q, k, v, captures, mask, call, scale, need_lse,
        sinks, need_max) -> (out, lse, max_scores)
    flexattn::flex_attention_backward(q, k, v, out, dout, lse, dlse, captures,
        mask, call, scale, grad_captures, sinks)
        -> (dq, dk, dv, capture_grads, dsinks)

Tensors are operands (so autograd and ``torch.compile`` see them); what is
not a tensor (the mods' IR, the block size, compile options) is a
:class:`Call` in a process registry (mirrored on disk), named by its
``call`` key, a constant string. ``mask`` holds the block lists, kv-side
then q-side. Both ops have fake implementations, and the forward's autograd
formula saves what the backward reads (nothing is saved, and no backward
kernel compiled, when no input requires grad).

Under ``torch.compile`` the Python-level work (capturing the mods with
torch-mlir, compiling kernels) runs once at trace time inside
:func:`_trace_plan` (``torch._dynamo.assume_constant_result``), which
returns the call key and, for every tensor the mods capture, the path
(closure cell, global, default, ...) from the mod function to it; the traced
code follows those paths, so the captured tensors (learnable biases) become
graph inputs of the custom op, and the graph has no break.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Optional, Sequence

import torch

from .. import frontend
from ..compiler import backward, cache, targets
from ..compiler.backward import BackwardSpec
from ..compiler.delta import delta_spec
from ..compiler.mods import ModIR
from ..compiler.options import CompileOptions
from ..compiler.pipeline import CompilationError
from ..compiler.spec import BufferType
from ..frontend.capture import _global_names
from ..masks import index_checks, is_noop
from ..masks.block_mask import _transpose_ordered
from . import checks
from .attention import (_options, attention_forward, attention_spec, build_spec, index_checked,
                        results)
from .kernels import kernel_for

__all__ = ["Call", "NotDifferentiableError", "Prepared", "needs_grad", "attention_with_grad",
           "mask_lists", "prepare", "traced_flex_attention",
           "attention_backward", "q_side_mask_tensors"]

_MASK_NAMES = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices")


@dataclass(frozen=True)
class Call:
    """What a flexattn::flex_attention call needs beyond its tensors."""

    score_mod: Optional[ModIR]
    mask_mod: Optional[ModIR]
    block_size: Optional[tuple[int, int]]
    has_full: bool  # the mask lists full blocks
    q_side: bool  # the mask list carries the q-side lists (for the backward)
    options: CompileOptions
    label: str = field(default="score_mod", compare=False)

    @property
    def key(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:32]

    def to_json(self) -> str:
        mods = {n: None if m is None else [m.kind, m.text, list(m.capture_types)]
                for n, m in (("score_mod", self.score_mod), ("mask_mod", self.mask_mod))}
        return json.dumps({**mods, "block_size": self.block_size, "has_full": self.has_full,
                           "q_side": self.q_side, "options": self.options.__dict__,
                           "label": self.label})

    @staticmethod
    def from_json(text: str) -> "Call":
        d = json.loads(text)
        mod = (lambda m: None if m is None else ModIR(m[0], m[1], tuple(m[2])))
        bs = d["block_size"]
        return Call(mod(d["score_mod"]), mod(d["mask_mod"]), tuple(bs) if bs else None,
                    d["has_full"], d["q_side"], CompileOptions(**d["options"]), d["label"])

    def mask(self, tensors):
        """A BlockMask-like view of the op's ``mask`` operand (None without one)."""
        if self.block_size is None:
            return None
        names = list(_MASK_NAMES[: 4 if self.has_full else 2])
        ns = SimpleNamespace(**dict(zip(names, tensors)), BLOCK_SIZE=self.block_size)
        if not self.has_full:
            ns.full_kv_num_blocks = ns.full_kv_indices = None
        return ns

    def split_mask(self, tensors):
        """(kv-side lists, q-side lists) of the op's ``mask`` operand."""
        n = 4 if self.has_full else 2
        return list(tensors[:n]), list(tensors[n:])


# The calls this process made, by key (bounded: one dropped here is read back
# from disk); a compiled graph loaded in another process finds its calls on
# disk.
CALLS_SIZE = 4096
_calls = cache.LRU(CALLS_SIZE)
_disk = cache.DiskCache("calls", ".json")


def register(call: Call) -> str:
    key = call.key
    if key not in _calls:
        _calls[key] = call
        _disk.put(key, call.to_json().encode())
    return key


def lookup(key: str) -> Call:
    call = _calls.get(key)
    if call is None:
        data = _disk.get(key)
        if data is None:
            raise KeyError(f"flexattn: unknown flex_attention call {key!r} (neither made by this "
                           f"process nor in the cache at {_disk.path})")
        call = _calls[key] = Call.from_json(data.decode())
    return call


# ---------------------------------------------------------------------------
# The backward kernel on tensors
# ---------------------------------------------------------------------------


class NotDifferentiableError(TypeError):
    """Gradients were requested through a score_mod the compiler cannot
    differentiate; the message names the mod and the op."""


def q_side_mask_tensors(block_mask) -> list[torch.Tensor]:
    """The transposed block lists of a BlockMask (ours or torch's), derived
    from the kv-side ones when the mask does not carry them."""
    if block_mask is None:
        return []
    num, idx = block_mask.q_num_blocks, block_mask.q_indices
    if num is None:
        num, idx = _transpose_ordered(block_mask.kv_num_blocks, block_mask.kv_indices)
    out = [num, idx]
    if getattr(block_mask, "full_kv_num_blocks", None) is not None:
        fnum, fidx = block_mask.full_q_num_blocks, block_mask.full_q_indices
        if fnum is None:
            fnum, fidx = _transpose_ordered(block_mask.full_kv_num_blocks,
                                            block_mask.full_kv_indices)
        out += [fnum, fidx]
    return [t.to(torch.int32).contiguous() for t in out]


_NOT_DIFFERENTIABLE = re.compile(r"cannot differentiate score_mod: (.*?)(?:\n|$)")


def _compile_error(err: CompilationError, label: str) -> Exception:
    m = _NOT_DIFFERENTIABLE.search(str(err))
    if m is None:
        return err
    return NotDifferentiableError(
        f"flex_attention cannot compute gradients through {label}: {m.group(1)}. "
        f"Gradients were requested because query, key, value or a tensor the mods "
        f"capture requires grad; rewrite the mod without that op, or call it under "
        f"torch.no_grad()")


def backward_kernel(spec: BackwardSpec, options: CompileOptions):
    """The compiled backward kernel of ``spec`` (cached like the forward's);
    a mod that cannot be differentiated raises NotDifferentiableError.
    The backward's Q tile is the target's Q block (a wide forward tile,
    ``Target.wide_q_tile``, is the forward kernel's own)."""
    t = targets.target(options.target)
    if t.is_gpu and options.tile_q != t.q_block:
        options = replace(options, tile_q=t.q_block)
    try:
        return kernel_for(spec, options)
    except CompilationError as err:
        raise _compile_error(err, spec.label) from None


def delta(out: torch.Tensor, dout: torch.Tensor, dlse: Optional[torch.Tensor] = None,
          target: Optional[str] = None) -> torch.Tensor:
    """``rowsum(dout * out) - dlse`` in float32, ``[B, H, M]``: the backward's
    preprocessing (FlashAttention-2's D). On a GPU ``target`` our delta
    kernel (:class:`~flexattn_mlir.compiler.delta.DeltaSpec`: each element
    read once) where it applies, else one torch reduction over float32
    copies (seven times the bytes)."""
    spec = None
    if target is not None and out.is_cuda and dout.dtype == out.dtype:
        spec = delta_spec(BufferType.of(out), dlse is not None)
    if spec is not None:
        args = [dout.contiguous(), out.contiguous()]
        if dlse is not None:
            args.append(dlse.float().contiguous())
        if all(t.data_ptr() % 16 == 0 for t in args):  # its 16-byte vector loads
            d = torch.empty(out.shape[:3], dtype=torch.float32, device=out.device)
            kernel_for(spec, CompileOptions(target=target))(args + [d])
            return d
    d = torch.einsum("bhmd,bhmd->bhm", dout.float(), out.float())
    return (d - dlse.float() if dlse is not None else d).contiguous()


def attention_backward(spec: BackwardSpec, options: CompileOptions, tensors: dict,
                       captures: Sequence[torch.Tensor], mask: Sequence[torch.Tensor],
                       checked: index_checks.Checked):
    """Runs the backward kernel of ``spec``. ``tensors`` holds q, k, v, out,
    dout, lse, (when ``spec.has_dlse``) dlse and ``sinks`` (None, or the sink
    logits, whose gradient is wanted); ``mask`` the kv-side then the q-side
    block lists; ``checked`` the index checks of the mods (the forward's: the
    same report rows). Returns ``(dq, dk, dv, capture_grads, dsinks)``, the
    capture gradients in their captures' dtypes and dsinks in the sinks'
    (accumulated in float32; None without sinks). The kernel computes dsinks
    where ``spec.sink_grad``; a kernel that reads delta precomputed (GPU)
    leaves it to :func:`sink_grad`, one torch reduction over that delta.
    A read of a captured tensor the kernel finds out of bounds raises
    IndexError after the call (its gradients are never returned)."""
    run = backward_kernel(spec, options)
    q, k, v = (tensors[n].contiguous() for n in ("q", "k", "v"))
    shared = k.shape[0] != q.shape[0]  # batch-1 K/V read by every query batch
    if shared:
        k, v = (t.expand(q.shape[0], -1, -1, -1).contiguous() for t in (k, v))
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if spec.dq_f32:  # the kernel's sum, converted below
        dq = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    partials = (spec.capture_partials,) if spec.capture_partials else ()
    grads = [torch.empty((*captures[c].shape, *partials), dtype=torch.float32, device=q.device)
             for c in spec.grad_captures]
    args = [q, k, v] + [tensors[n].contiguous() for n in ("out", "dout", "lse")]
    if spec.has_dlse:
        args.append(tensors["dlse"].contiguous())
    d = None
    if spec.delta_input:
        d = delta(tensors["out"], tensors["dout"], tensors["dlse"] if spec.has_dlse else None,
                  options.target)
        args.append(d)
    sinks, dsinks = tensors.get("sinks"), None
    if spec.sink_grad:
        dsinks = torch.empty(sinks.shape, dtype=torch.float32, device=q.device)
        args += [sinks.detach().to(torch.float32).contiguous(), dsinks]
    args += [dq, dk, dv, *(t.contiguous() for t in mask)]
    args += [c.contiguous().view(torch.uint8) if c.dtype == torch.bool else c.contiguous()
             for c in captures]
    report = index_checks.report_capture(checked, q.device)
    run(args + ([] if report is None else [report]) + grads)
    if report is not None:
        index_checks.raise_reported(report, checked)
    if partials:  # the deterministic mode: the threads' slots, in a fixed order
        grads = [g.sum(-1) for g in grads]
    if spec.dq_f32:
        dq = dq.to(q.dtype)
    if shared:  # dK, dV of a shared K/V: the sum over the query batch
        dk, dv = (g.sum(0, keepdim=True, dtype=torch.float32).to(g.dtype) for g in (dk, dv))
    if sinks is not None:
        if dsinks is None:
            dsinks = sink_grad(sinks, tensors["lse"], d)
        dsinks = dsinks.to(sinks.dtype)
    return (dq, dk, dv, [g.to(captures[c].dtype) for g, c in zip(grads, spec.grad_captures)],
            dsinks)


def sink_grad(sinks: torch.Tensor, lse: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The sink logits' gradient from the forward's lse (which includes the
    sinks) and delta: ``dsinks[h] = -sum_{b,i} exp(sinks[h] - lse[b,h,i])
    D[b,h,i]``, float32 (0 from a row whose lse is -inf)."""
    p_sink = torch.exp(sinks.detach().float()[None, :, None] - lse.float())
    return -(torch.nan_to_num(p_sink, nan=0.0) * d).sum(dim=(0, 2))


# ---------------------------------------------------------------------------
# The custom ops
# ---------------------------------------------------------------------------


@torch.library.custom_op("flexattn::flex_attention", mutates_args=())
def _flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    captures: list[torch.Tensor], mask: list[torch.Tensor], call: str,
                    scale: float, need_lse: bool, sinks: Optional[torch.Tensor],
                    need_max: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # (No defaults: the dispatcher drops trailing default arguments from a
    # call, and the autograd formula's gradients must match the call.)
    c = lookup(call)
    kv_side, _ = c.split_mask(mask)
    out, lse, max_scores = attention_forward(
        q, k, v, score_mod=c.score_mod, mask_mod=c.mask_mod, block_mask=c.mask(kv_side),
        captures=captures, scale=scale, enable_gqa=True, return_lse=need_lse,
        options=c.options, sinks=sinks, return_max_scores=need_max)
    none = q.new_empty((0,), dtype=torch.float32)
    return out, none if lse is None else lse, none if max_scores is None else max_scores


@_flex_attention.register_fake
def _(q, k, v, captures, mask, call, scale, need_lse, sinks, need_max):
    b, h, m, _ = q.shape
    out = q.new_empty((b, h, m, v.shape[3]))
    stat = (lambda need: q.new_empty((b, h, m) if need else (0,), dtype=torch.float32))
    return out, stat(need_lse), stat(need_max)


@torch.library.custom_op("flexattn::flex_attention_backward", mutates_args=())
def _flex_attention_backward(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
        dout: torch.Tensor, lse: torch.Tensor, dlse: Optional[torch.Tensor],
        captures: list[torch.Tensor], mask: list[torch.Tensor], call: str, scale: float,
        grad_captures: list[int], sinks: Optional[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
    c = lookup(call)
    spec = _backward_spec(c, q, k, v, captures, mask, scale, grad_captures, dlse is not None,
                          sinks is not None)
    checked = index_checked(q, k, c.score_mod, c.mask_mod, True)
    tensors = dict(q=q, k=k, v=v, out=out, dout=dout, lse=lse, dlse=dlse, sinks=sinks)
    dq, dk, dv, grads, dsinks = attention_backward(spec, c.options, tensors, captures, mask,
                                                   checked)
    return dq, dk, dv, grads, q.new_empty((0,)) if dsinks is None else dsinks


@_flex_attention_backward.register_fake
def _(q, k, v, out, dout, lse, dlse, captures, mask, call, scale, grad_captures, sinks):
    # The kernel writes contiguous gradients, whatever the inputs' strides.
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            [captures[i].new_empty(captures[i].shape) for i in grad_captures],
            q.new_empty((0,)) if sinks is None else sinks.new_empty(sinks.shape))


def _backward_spec(c: Call, q, k, v, captures, mask, scale, grad_captures, has_dlse,
                   sink_grad):
    kv_side, q_side = c.split_mask(mask)
    fwd = build_spec(q, k, v, score_mod=c.score_mod, mask_mod=c.mask_mod,
                     block_mask=c.mask(kv_side), captures=captures, scale=scale,
                     return_lse=False)
    return backward.backward_spec(fwd, q_side, grad_captures, has_dlse, label=c.label,
                                  target=c.options.target, sink_grad=sink_grad,
                                  deterministic=c.options.deterministic,
                                  atomic_dq=c.options.backward_atomic_dq)


def _setup_context(ctx, inputs, output):
    q, k, v, captures, mask, call, scale, need_lse, sinks, need_max = inputs
    out, lse, max_scores = output
    ctx.mark_non_differentiable(max_scores)
    # The sinks enter the backward only for their gradient (lse includes them).
    ctx.sink_grad = sinks is not None and sinks.requires_grad
    ctx.save_for_backward(q, k, v, out, lse, *captures, *mask,
                          *([sinks] if ctx.sink_grad else []))
    ctx.call, ctx.scale, ctx.n_captures, ctx.n_mask = call, scale, len(captures), len(mask)
    ctx.grad_captures = [i for i, t in enumerate(captures) if t.requires_grad]
    # Gradients of unused outputs arrive as None (no zero dlse to subtract).
    ctx.set_materialize_grads(False)


def _backward(ctx, dout, dlse, dmax_scores):
    q, k, v, out, lse, *rest = ctx.saved_tensors
    n, m = ctx.n_captures, ctx.n_mask
    captures, mask, sinks = rest[:n], rest[n:n + m], (rest[n + m] if ctx.sink_grad else None)
    if dout is None:
        dout = torch.zeros_like(out)
    dq, dk, dv, grads, dsinks = torch.ops.flexattn.flex_attention_backward(
        q, k, v, out, dout, lse, dlse, list(captures), list(mask), ctx.call, ctx.scale,
        ctx.grad_captures, sinks)
    capture_grads: list = [None] * ctx.n_captures
    for i, g in zip(ctx.grad_captures, grads):
        capture_grads[i] = g
    return (dq, dk, dv, capture_grads, [None] * len(mask), None, None, None,
            dsinks if ctx.sink_grad else None, None)


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "flex_attention: double backward (differentiating its gradients again, e.g. "
        "torch.autograd.grad(..., create_graph=True) then backward) is not supported")


_flex_attention.register_autograd(_backward, setup_context=_setup_context)
_flex_attention_backward.register_autograd(
    _no_double_backward, setup_context=lambda ctx, inputs, output: None)


# ---------------------------------------------------------------------------
# Eager entry (flexattn_mlir.api calls it when gradients are needed)
# ---------------------------------------------------------------------------


def _static(options: CompileOptions) -> CompileOptions:
    """The differentiable path's options: static shapes (the backward kernel
    is specialised on them, and the forward saves lse for that shape; see
    docs/inference.md) and the prefill kernel (no decode path)."""
    return replace(options, dynamic=False, decode=False, pack_heads=False)


def needs_grad(query, key, value, captures, sinks=None) -> bool:
    """Whether a call records a backward: grad mode on and some input (q, k,
    v, a captured tensor or the sinks) requires grad."""
    return torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad
        for t in (query, key, value, *captures, sinks))


def _label(score_fn) -> str:
    name = getattr(score_fn, "__name__", None) or type(score_fn).__name__
    return f"score_mod {name!r}"


def attention_with_grad(query, key, value, *, score_mod, mask_mod, block_mask, captures,
                        options, scale, enable_gqa, return_lse, name="flexattn",
                        capture_labels=(), score_fn=None, sinks=None,
                        return_max_scores=False):
    """flex_attention's differentiable path (the arguments as :func:`attention`
    takes them, and its results). The backward kernel is compiled now, so a
    mod that cannot be differentiated fails at the call."""
    label = _label(score_fn) if score_fn is not None else "score_mod"
    options = _static(_options(query, options))
    t = targets.target(options.target)
    if block_mask is not None and t.is_gpu and options.tile_q != t.q_block:
        # The ops carry the mask's own lists and block size to the forward
        # and the backward: a wide forward tile (Target.wide_q_tile) would
        # read them per tile; with a block mask the differentiable path
        # keeps the target's Q block.
        options = replace(options, tile_q=t.q_block)
    spec = attention_spec(query, key, value, score_mod=score_mod, mask_mod=mask_mod,
                          block_mask=block_mask, captures=captures, scale=scale,
                          enable_gqa=enable_gqa, options=options, name=name)
    p = prepare(spec, score_mod=score_mod, mask_mod=mask_mod, block_mask=block_mask,
                options=options, label=label,
                grad_captures=[i for i, t in enumerate(captures) if t.requires_grad],
                sink_grad=sinks is not None and sinks.requires_grad)
    out, lse, max_scores = torch.ops.flexattn.flex_attention(
        query, key, value, list(captures), p.mask, p.call, p.scale, True, sinks,
        return_max_scores)
    return results(out, lse, max_scores, return_lse, return_max_scores)


@dataclass(frozen=True)
class Prepared:
    """A registered call of the ops: its key, its ``mask`` operand, the scale."""

    call: str
    mask: list
    scale: float


def mask_lists(block_mask, q_side: bool) -> list:
    """The ops' ``mask`` operand for ``block_mask``: its kv-side block lists,
    then (``q_side``, for a backward) the q-side ones."""
    if block_mask is None:
        return []
    kv_side = [getattr(block_mask, n).contiguous() for n in _MASK_NAMES
               if getattr(block_mask, n, None) is not None]
    return kv_side + (q_side_mask_tensors(block_mask) if q_side else [])


def prepare(spec, *, score_mod, mask_mod, block_mask, options, grad_captures,
            label="score_mod", grad=True, sink_grad=False) -> Prepared:
    """Registers the call of flexattn::flex_attention for ``spec`` (built from
    the mods ``score_mod``, ``mask_mod`` as given, before index checks) and,
    when ``grad``, compiles its backward kernel for ``grad_captures``, so a
    mod that cannot be differentiated fails now (NotDifferentiableError).
    Without ``grad`` the call carries no q-side lists and runs forwards only."""
    kv_side = mask_lists(block_mask, q_side=False)
    q_side = q_side_mask_tensors(block_mask) if grad else []
    call = Call(score_mod, mask_mod, spec.block_size, len(kv_side) == 4, bool(q_side),
                options, label)
    if grad:
        backward_kernel(backward.backward_spec(spec, q_side, grad_captures, False, label,
                                                target=options.target, sink_grad=sink_grad,
                                                deterministic=options.deterministic,
                                                atomic_dq=options.backward_atomic_dq),
                        options)
    return Prepared(register(call), kv_side + q_side, spec.scale)


# ---------------------------------------------------------------------------
# torch.compile entry: traced by dynamo
# ---------------------------------------------------------------------------


def traced_flex_attention(query, key, value, score_mod, block_mask, scale, enable_gqa,
                          want_lse, kernel_options, sinks=None, want_max=False):
    """flex_attention under ``torch.compile`` (dynamo traces this function):
    the custom op on the captured tensors, found by the paths
    :func:`_trace_plan` computed at trace time. Returns ``(out, lse,
    max_scores)`` (empty where not asked for)."""
    mask_fn, mask_tensors, block_size = None, [], None
    if block_mask is not None:
        mask_fn = block_mask.mask_mod
        block_size = block_mask.BLOCK_SIZE
        mask_tensors = [getattr(block_mask, n) for n in _MASK_NAMES]
        if mask_tensors[2] is None:
            mask_tensors = mask_tensors[:2]
    grad = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad
                                        or value.requires_grad
                                        or (sinks is not None and sinks.requires_grad))
    metas = tuple((tuple(int(d) for d in t.shape), t.dtype, t.device.type)
                  for t in (query, key, value, *mask_tensors))
    q_lists = block_mask is not None and block_mask.q_num_blocks is not None
    call, paths, scale, grad = _trace_plan(score_mod, mask_fn, metas, block_size, scale,
                                           enable_gqa, torch.is_grad_enabled(), grad, q_lists,
                                           kernel_options)
    captures = [_follow(score_mod if src == 0 else mask_fn, path) for src, path in paths]
    if grad and block_mask is not None:  # the backward's q-side lists
        names = ("q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices")
        mask_tensors = mask_tensors + [getattr(block_mask, n) for n in names[:len(mask_tensors)]]
    return torch.ops.flexattn.flex_attention(query, key, value, captures, mask_tensors, call,
                                             scale, want_lse or grad, sinks, want_max)


def _follow(obj, path):
    """The object at ``path`` from ``obj`` (see :func:`_tensor_paths`); plain
    attribute and item reads, which dynamo traces."""
    for kind, arg in path:
        if kind == "cell":
            obj = obj.__closure__[arg].cell_contents
        elif kind == "global":
            obj = obj.__globals__[arg]
        elif kind == "default":
            obj = obj.__defaults__[arg]
        elif kind == "kwdefault":
            obj = obj.__kwdefaults__[arg]
        elif kind == "func":
            obj = obj.func
        elif kind == "arg":
            obj = obj.args[arg]
        elif kind == "keyword":
            obj = obj.keywords[arg]
        else:
            obj = obj[arg]
    return obj


def _tensor_paths(fn, targets) -> dict[int, tuple]:
    """For each tensor in ``targets`` (by identity), a path from ``fn`` to it
    through closure cells, the globals the code reads, defaults, partials
    and tuples/lists: where the frontend found it."""
    import functools
    import types

    found: dict[int, tuple] = {}
    wanted = {id(t) for t in targets}
    seen: set[int] = set()

    def walk(obj, path, depth):
        if isinstance(obj, torch.Tensor):
            if id(obj) in wanted and id(obj) not in found:
                found[id(obj)] = path
            return
        if depth > 32 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            for i, cell in enumerate(obj.__closure__ or ()):
                try:
                    walk(cell.cell_contents, path + (("cell", i),), depth + 1)
                except ValueError:
                    pass  # an empty cell
            for name in _global_names(obj.__code__):
                if name in obj.__globals__:
                    walk(obj.__globals__[name], path + (("global", name),), depth + 1)
            for i, d in enumerate(obj.__defaults__ or ()):
                walk(d, path + (("default", i),), depth + 1)
            for name, d in (obj.__kwdefaults__ or {}).items():
                walk(d, path + (("kwdefault", name),), depth + 1)
        elif isinstance(obj, functools.partial):
            walk(obj.func, path + (("func", None),), depth + 1)
            for i, a in enumerate(obj.args):
                walk(a, path + (("arg", i),), depth + 1)
            for name, a in obj.keywords.items():
                walk(a, path + (("keyword", name),), depth + 1)
        elif isinstance(obj, (tuple, list)):
            for i, a in enumerate(obj):
                walk(a, path + (("item", i),), depth + 1)

    walk(fn, (), 0)
    return found


@torch._dynamo.assume_constant_result
def _trace_plan(score_fn, mask_fn, metas, block_size, scale, enable_gqa, grad_mode, grad,
                q_lists, kernel_options):
    """The trace-time half of :func:`traced_flex_attention`, run once per
    compilation on the real mod functions: captures them, checks the shapes,
    registers the call, compiles the backward kernel when gradients will be
    needed, and returns ``(call key, capture paths, scale, gradients
    needed)``."""
    meta = [torch.empty(shape, dtype=dt, device="meta") for shape, dt, _ in metas]
    q, k, v, mask = meta[0], meta[1], meta[2], meta[3:]
    checks.check_qkv(q, k, v, enable_gqa)
    score = frontend.capture_score_mod(score_fn) if score_fn is not None else None
    mask_mod = None
    if mask_fn is not None and not is_noop(mask_fn):
        mask_mod = frontend.capture_mask_mod(mask_fn)
    score, mask_mod, captures = frontend.combine(score, mask_mod)
    located: dict[int, tuple] = {}
    for src, fn in ((0, score_fn), (1, mask_fn)):
        if fn is not None:
            for tid, path in _tensor_paths(fn, captures).items():
                located.setdefault(tid, (src, path))
    missing = [i for i, t in enumerate(captures) if id(t) not in located]
    if missing:
        raise frontend.ModCaptureError(
            f"flex_attention under torch.compile: captured tensor #{missing[0]} of the mods "
            f"cannot be reached from the mod functions")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    options = _static(CompileOptions.from_kernel_options(
        kernel_options, target=targets.for_device(torch.device(metas[0][2])).name))
    label = _label(score_fn) if score_fn is not None else "score_mod"
    grad = grad or (grad_mode and any(t.requires_grad for t in captures))
    bm = None
    if block_size is not None:
        bm = SimpleNamespace(**dict(zip(_MASK_NAMES, mask + [None] * (4 - len(mask)))),
                             BLOCK_SIZE=block_size)
    score_ir, mask_ir = score and score.ir, mask_mod and mask_mod.ir
    spec = build_spec(q, k, v, score_mod=score_ir, mask_mod=mask_ir, block_mask=bm,
                      captures=captures, scale=scale, return_lse=False)
    q_side = grad and bm is not None
    if q_side and not q_lists:
        raise ValueError("flex_attention under torch.compile with gradients needs the block "
                         "mask's q-side lists (q_num_blocks, q_indices): create the BlockMask "
                         "with them (create_block_mask does)")
    # The call holds the mods as captured (the spec's carry this shape's
    # index checks and report, which each call derives again).
    call = Call(score_ir, mask_ir, spec.block_size, len(mask) == 4, q_side,
                options, label)
    if grad:
        q_side_meta = []
        if q_side:
            q_blocks, kv_blocks = (-(-n // b) for n, b in zip((q.shape[2], k.shape[2]),
                                                              spec.block_size))
            for num in mask[::2]:
                q_side_meta += [
                    torch.empty((*num.shape[:2], kv_blocks), dtype=torch.int32, device="meta"),
                    torch.empty((*num.shape[:2], kv_blocks, q_blocks), dtype=torch.int32,
                                device="meta")]
        grad_captures = [i for i, t in enumerate(captures) if t.requires_grad]
        backward_kernel(backward.backward_spec(spec, q_side_meta, grad_captures, False, label,
                                               target=options.target,
                                               deterministic=options.deterministic,
                                               atomic_dq=options.backward_atomic_dq), options)
    paths = tuple(located[id(t)] for t in captures)
    return register(call), paths, float(scale), grad
