"""Context-parallel flex_attention: the forward and backward across ranks.

Each rank holds ``local_len`` rows of Q, K and V (a
:class:`~.sharding.SequenceSharding` says which); the call returns this
rank's rows of ``out`` and ``lse``, the same as a one-process call on the
whole sequence gives for them. Keys and values travel one of two ways:

* ``rotate="allgather"``: K and V of every rank are gathered, one kernel
  runs the local rows against all keys; the backward gathers them again
  (nothing sequence-long is kept between forward and backward) and
  reduce-scatters dK, dV to their owners.
* ``rotate="ring"``: W steps; at step s this rank holds shard
  ``j = rank - s`` and sends it on to ``rank + 1`` while its kernel runs on
  it (the transfer of the next shard overlaps the compute of this one). The
  partial outputs are merged by their lse. Shards the block mask never
  reaches are not computed. The backward rotates K, V again, with dK, dV
  accumulators travelling one step behind, and hands each accumulator to
  its owner after the last step.

Gradients are those of the sum of all ranks' losses: dQ is local, dK and dV
come back to their owners, a gradient of a tensor the mods capture is
all-reduced (replicated tensors: every rank gets the whole gradient; do not
reduce it over the context-parallel ranks again) or, for a per-token
tensor, reduce-scattered to its shards.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from ..compiler import targets
from ..compiler.options import CompileOptions
from ..execution import autograd, checks
from ..frontend import capture as frontend
from . import comm
from .mask import CPBlockMask, global_index_mod
from .sharding import SequenceSharding

__all__ = ["context_parallel_flex_attention"]

_SEQ = 2  # the sequence dim of q, k, v, out ([B, H, S, D]); lse's is 2 too


class _Plan:
    """What the autograd function needs besides tensors: the group, the
    registered call, per kv table its block lists and whether it is empty,
    and where each kernel capture comes from."""

    def __init__(self, *, rotate, group, sharding, rotation, prepared, captures, sources,
                 inputs, token_dims, grad_captures, grad):
        self.rotate, self.group, self.sharding = rotate, group, sharding
        self.rotation, self.prepared = rotation, prepared
        self.captures = captures  # kernel captures, reading kv table 0
        self.sources = sources  # per capture: ("input", i) | ("token", i) | ("table", None)
        self.inputs = inputs  # the tensors behind them that may take gradients
        self.token_dims = token_dims  # input index -> sequence dim, for per-token inputs
        self.grad_captures = grad_captures  # captures whose gradient is computed
        self.grad = grad  # whether the call records a backward

    def captures_for(self, j: int) -> list:
        kv = self.rotation.kv_tables
        return [kv[j] if t is kv[0] else t for t in self.captures]

    def mask(self, j: int, grad: bool) -> list:
        return autograd.mask_lists(self.rotation.block_masks[j], grad)

    def forward(self, j, q, k, v, grad):
        """(out, lse) of the keys of rotation step ``j`` (no sinks, no
        max_scores: the merge by lse would count a sink once per step)."""
        out, lse, _ = torch.ops.flexattn.flex_attention(
            q, k, v, self.captures_for(j), self.mask(j, grad), self.prepared.call,
            self.prepared.scale, True, None, False)
        return out, lse

    def backward(self, j, q, k, v, out, dout, lse, dlse):
        dq, dk, dv, grads, _ = torch.ops.flexattn.flex_attention_backward(
            q, k, v, out, dout, lse, dlse, self.captures_for(j), self.mask(j, True),
            self.prepared.call, self.prepared.scale, self.grad_captures, None)
        return dq, dk, dv, grads


def _merge(acc, out, lse):
    """(out, lse) of two disjoint key sets' partial results, in float32."""
    out = out.float()
    if acc is None:
        return out, lse
    out0, lse0 = acc
    top = torch.maximum(lse0, lse)
    top = torch.where(top == -math.inf, 0.0, top)  # rows without keys so far
    w0, w1 = torch.exp(lse0 - top), torch.exp(lse - top)
    total = w0 + w1
    inv = torch.where(total > 0, 1.0 / total, 0.0)
    merged = out0 * (w0 * inv).unsqueeze(-1) + out * (w1 * inv).unsqueeze(-1)
    return merged, top + torch.log(total)


def _ring_forward(plan: _Plan, q, k, v, grad):
    g = plan.group
    ring = comm.Ring(g)
    acc = None
    for s in range(g.size):
        j = (g.rank - s) % g.size
        if s + 1 < g.size:
            ring.start((k, v))
        if not plan.rotation.empty(j):
            acc = _merge(acc, *plan.forward(j, q, k, v, grad))
        if s + 1 < g.size:
            k, v = ring.wait()
    if acc is None:  # no key for any row of this rank
        b, h, m, _ = q.shape
        return (q.new_zeros((b, h, m, v.shape[3])),
                torch.full((b, h, m), -math.inf, dtype=torch.float32, device=q.device))
    return acc[0].to(q.dtype), acc[1]


def _ring_backward(plan: _Plan, q, k, v, out, dout, lse, dlse):
    """dq, dk, dv (float32) and the summed capture gradients of this rank."""
    g = plan.group
    ring = comm.Ring(g)
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    grads = None
    acc = None  # dk, dv of the shard held at the previous step (summed so far)
    for s in range(g.size):
        j = (g.rank - s) % g.size
        sent = ([k, v] if s + 1 < g.size else []) + (list(acc) if acc is not None else [])
        ring.start(sent)
        part = None
        if not plan.rotation.empty(j):
            dq_j, dk_j, dv_j, grads_j = plan.backward(j, q, k, v, out, dout, lse, dlse)
            dq += dq_j
            part = (dk_j, dv_j)
            grads = grads_j if grads is None else [a + b for a, b in zip(grads, grads_j)]
        incoming = ring.wait()
        if s + 1 < g.size:
            k, v, incoming = incoming[0], incoming[1], incoming[2:]
        acc = tuple(incoming) if incoming else tuple(
            torch.zeros(t.shape, dtype=torch.float32, device=t.device) for t in (k, v))
        if part is not None:
            acc = (acc[0] + part[0], acc[1] + part[1])
    if grads is None:  # the mask kept no key of any shard for this rank's rows
        grads = [torch.zeros(plan.captures[i].shape, dtype=plan.captures[i].dtype,
                             device=q.device) for i in plan.grad_captures]
    dk, dv = acc
    if g.size > 1:
        ring.start(acc)  # to the owner: the last shard held is rank + 1's
        dk, dv = ring.wait()
    return dq, dk, dv, grads


class _ContextParallelAttention(torch.autograd.Function):
    """(q, k, v, *inputs) -> (out, lse) of this rank's rows; ``inputs`` are
    the tensors the mods capture that may take gradients (replicated
    tensors, and the shards of per-token ones)."""

    @staticmethod
    def forward(ctx, plan: _Plan, q, k, v, *inputs):
        if plan.rotate == "allgather":
            k_all, v_all = (comm.all_gather(t, _SEQ, plan.group) for t in (k, v))
            out, lse = plan.forward(0, q, k_all, v_all, plan.grad)
        else:
            out, lse = _ring_forward(plan, q, k, v, plan.grad)
        ctx.plan = plan
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        plan: _Plan = ctx.plan
        q, k, v, out, lse = ctx.saved_tensors
        g = plan.group
        if dout is None:
            dout = torch.zeros_like(out)
        if plan.rotate == "allgather":
            k_all, v_all = (comm.all_gather(t, _SEQ, g) for t in (k, v))
            dq, dk, dv, grads = plan.backward(0, q, k_all, v_all, out, dout, lse, dlse)
            dk, dv = (comm.reduce_scatter(t, _SEQ, g) for t in (dk, dv))
        else:
            dq, dk, dv, grads = _ring_backward(plan, q, k, v, out, dout, lse, dlse)
        input_grads = [None] * (len(ctx.needs_input_grad) - 4)
        for i, grad in zip(plan.grad_captures, grads):
            kind, index = plan.sources[i]
            if kind == "token":
                grad = _token_grad(plan, grad, index)
            else:
                grad = comm.all_reduce(grad, g)
            input_grads[index] = grad
        return (None, dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), *input_grads)


def _token_grad(plan: _Plan, grad: torch.Tensor, index: int) -> torch.Tensor:
    """This rank's shard of the sum over ranks of a whole-sequence gradient."""
    dim = plan.token_dims[index]
    return comm.reduce_scatter(plan.sharding.reorder(grad, dim), dim, plan.group)


def context_parallel_flex_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                    score_mod: Optional[Callable] = None,
                                    block_mask: Optional[CPBlockMask] = None, *,
                                    sharding: Optional[SequenceSharding] = None, group=None,
                                    token_tensors: Sequence = (), rotate: str = "allgather",
                                    scale: Optional[float] = None, enable_gqa: bool = False,
                                    return_lse: bool = False,
                                    kernel_options: Optional[dict] = None):
    """flex_attention over a sequence sharded across the ranks of ``group``.

    ``query``, ``key``, ``value``: this rank's shards ``[B, H, local_len,
    D]`` (:func:`~.sharding.context_parallel_shard`); ``score_mod`` and the
    block mask's ``mask_mod`` are written for the whole sequence and see
    global indices. ``block_mask``: this rank's
    :func:`~.mask.create_cp_block_mask` (None: no mask; then ``sharding``
    is required). ``token_tensors``: per-token tensors the score_mod reads
    (shards, as for create_cp_block_mask; the block mask's are known).
    ``rotate``: ``"allgather"`` or ``"ring"`` (see the module docstring).
    The rest is :func:`flexattn_mlir.flex_attention`'s. Returns this rank's
    ``out`` (or ``(out, lse)``). Collective: every rank of the group calls
    it with the same mods, shapes and rotation. Differentiable where the
    one-process call is (the CPU today)."""
    if block_mask is None:
        if sharding is None:
            raise ValueError("context_parallel_flex_attention: pass block_mask "
                             "(create_cp_block_mask) or, without a mask, sharding")
        from .mask import create_cp_block_mask

        block_mask = create_cp_block_mask(None, None, None, sharding, group=group)
    elif not isinstance(block_mask, CPBlockMask):
        raise TypeError(f"block_mask must be a CPBlockMask (create_cp_block_mask), got "
                        f"{type(block_mask).__name__}; a whole-sequence BlockMask does not say "
                        f"which rows this rank holds")
    elif sharding is not None and sharding is not block_mask.sharding:
        raise ValueError("sharding differs from the block mask's; pass one of them")
    if group is not None and comm.resolve_group(group).pg != block_mask.group.pg:
        raise ValueError("group differs from the block mask's process group")
    plan = _plan(query, key, value, score_mod, block_mask, token_tensors, rotate, scale,
                 enable_gqa, kernel_options)
    out, lse = _ContextParallelAttention.apply(plan, query, key, value, *plan.inputs)
    return (out, lse) if return_lse else out


def _plan(query, key, value, score_mod, cp: CPBlockMask, token_tensors, rotate, scale,
          enable_gqa, kernel_options) -> _Plan:
    g, sh = cp.group, cp.sharding
    checks.check_qkv(query, key, value, enable_gqa)
    for name, t in (("query", query), ("key", key), ("value", value)):
        if t.shape[_SEQ] != sh.local_len:
            raise ValueError(
                f"context_parallel_flex_attention: {name} has {t.shape[_SEQ]} rows (dim 2); "
                f"this rank's shard of {sh} holds {sh.local_len} (shard q, k, v with it)")
    if cp.tokens.stale():
        raise ValueError(
            "context_parallel_flex_attention: a per-token tensor given to create_cp_block_mask "
            "was modified in place since (its gathered copy and the block masks are stale): "
            "create the block mask again; pass per-token tensors that change between calls "
            "(learnable ones the score_mod reads) in token_tensors here instead")
    tokens = cp.tokens.merged(token_tensors)
    rotation = cp.rotation(rotate, query.device)
    q_table, kv_table = rotation.q_table, rotation.kv_tables[0]
    score = None
    if score_mod is not None:
        fn = global_index_mod(tokens.substitute(score_mod), "score", sh.seq_len, q_table,
                              kv_table)
        score = frontend.capture_score_mod(fn)
    score, mask, captures = frontend.combine(score, rotation.mask)

    # Where each kernel capture comes from: a table, a per-token tensor
    # (gathered from the shard `inputs[i]`) or a tensor of the mods' own.
    inputs, sources, token_dims = [], [], {}
    for t in captures:
        if t is q_table or t is kv_table:
            sources.append(("table", None))
            continue
        shard = tokens.shard_of(t)
        src = shard[0] if shard is not None else t
        index = next((i for i, x in enumerate(inputs) if x is src), None)
        if index is None:
            index = len(inputs)
            inputs.append(src)
        if shard is not None:
            token_dims[index] = shard[1]
        sources.append(("token" if shard is not None else "input", index))
    grad_mode = torch.is_grad_enabled()
    grad_captures = [i for i, (kind, index) in enumerate(sources)
                     if kind != "table" and grad_mode and inputs[index].requires_grad]
    grad = bool(grad_captures) or (grad_mode and any(
        t.requires_grad for t in (query, key, value)))

    options = CompileOptions.from_kernel_options(
        kernel_options, target=targets.for_device(query.device).name)
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    kv_len = kv_table.numel()
    k_meta, v_meta = (torch.empty((*t.shape[:2], kv_len, t.shape[3]), dtype=t.dtype,
                                  device="meta") for t in (key, value))
    block = rotation.block_masks[0]
    from ..execution.attention import build_spec

    spec = build_spec(query, k_meta, v_meta, score_mod=score and score.ir,
                      mask_mod=mask and mask.ir, block_mask=block, captures=captures,
                      scale=scale, return_lse=True)
    label = f"score_mod {score.name!r}" if score is not None else "score_mod"
    prepared = autograd.prepare(spec, score_mod=score and score.ir, mask_mod=mask and mask.ir,
                                block_mask=block, options=options,
                                grad_captures=grad_captures, label=label, grad=grad)
    return _Plan(rotate=rotate, group=g, sharding=sh, rotation=rotation, prepared=prepared,
                 captures=list(captures), sources=sources, inputs=inputs, token_dims=token_dims,
                 grad_captures=grad_captures, grad=grad)
