"""The backward pass: gradients of attention with respect to q, k, v and the
captured buffers, compiled by the same staged driver as the forward.

    flexattn -> differentiated -> tiled -> sparse -> decomposed -> inlined
             -> loops -> llvm                                       (CPU)

A :class:`BackwardSpec` is what one backward kernel is specialised on: the
forward's :class:`~flexattn_mlir.spec.AttentionSpec`, which captured buffers
take a gradient, whether ``lse`` has one, and the transposed (q-side) block
lists. :func:`attention_backward` runs it on torch tensors.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import torch

from . import driver, index_checks
from .options import CompileOptions
from .spec import (AttentionSpec, BufferType, block_mask_lines, capture_lines, entry_function,
                   f32_literal, mod_region_lines, operand_group)

__all__ = ["BackwardSpec", "NotDifferentiableError", "attention_backward", "backward_spec",
           "q_side_mask_tensors"]


class NotDifferentiableError(TypeError):
    """Gradients were requested through a score_mod the compiler cannot
    differentiate; the message names the mod and the op."""


_Q_SIDE = ("q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices")


@dataclass(frozen=True)
class BackwardSpec:
    forward: AttentionSpec
    grad_captures: tuple[int, ...] = ()
    has_dlse: bool = False
    q_num_blocks: Optional[BufferType] = None
    q_indices: Optional[BufferType] = None
    full_q_num_blocks: Optional[BufferType] = None
    full_q_indices: Optional[BufferType] = None
    # The attention sinks take a gradient (dsinks).
    sink_grad: bool = False
    # Names the score_mod in diagnostics (the op's location); not in the key.
    label: str = field(default="score_mod", compare=False)

    @property
    def name(self) -> str:
        return f"{self.forward.name}_backward"

    def arguments(self) -> list[tuple[str, BufferType]]:
        """q, k, v, out, dout, lse, [dlse], [sinks, dsinks], dq, dk, dv, the
        kv-side then the q-side block lists, captures..., [index_report],
        capture grads..."""
        f = self.forward
        args = [("q", f.q), ("k", f.k), ("v", f.v), ("out", f.out), ("dout", f.out),
                ("lse", f.lse)]
        if self.has_dlse:
            args.append(("dlse", f.lse))
        if self.sink_grad:
            sinks = BufferType((f.q.shape[1],), "f32")
            args += [("sinks", sinks), ("dsinks", sinks)]
        args += [("dq", f.q), ("dk", f.k), ("dv", f.v)]
        for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
            if getattr(f, name) is not None:
                args.append((name, getattr(f, name)))
        args += [(n, getattr(self, n)) for n in _Q_SIDE if getattr(self, n) is not None]
        args += [(f"capture{i}", c) for i, c in enumerate(f.captures)]
        if f.index_report is not None:  # the mods' last capture, as in the forward
            args.append(("index_report", f.index_report))
        args += [(f"capture_grad{i}", BufferType(f.captures[c].shape, "f32"))
                 for i, c in enumerate(self.grad_captures)]
        return args

    def digest(self) -> str:
        h = hashlib.sha256(b"backward|" + self.forward.digest().encode())
        h.update(repr((self.grad_captures, self.has_dlse,
                       [getattr(self, n) for n in _Q_SIDE], self.sink_grad)).encode())
        return h.hexdigest()

    def stages(self, opts: CompileOptions) -> dict[str, driver.Stage]:
        if opts.target != "cpu":
            raise NotImplementedError(
                f"flex_attention's backward runs on the CPU only so far; {opts.target} "
                f"gradients are not implemented yet")
        return {"differentiated": make_differentiated, "tiled": driver.make_tiled,
                "sparse": driver.make_sparse, "decomposed": make_decomposed,
                "inlined": driver.make_inlined, "loops": driver.make_loops,
                "llvm": driver.make_llvm}

    def to_mlir(self) -> str:
        f = self.forward
        args = self.arguments()
        typ = {n: t.memref for n, t in args}
        lines = [operand_group("flexattn.attention_backward ins", ["q", "k", "v"], typ),
                 operand_group("    out", ["out"], typ),
                 operand_group("    dout", ["dout"], typ),
                 operand_group("    lse", ["lse"], typ)]
        if self.has_dlse:
            lines.append(operand_group("    dlse", ["dlse"], typ))
        if self.sink_grad:
            lines.append(operand_group("    sinks", ["sinks", "dsinks"], typ))
        lines.append(operand_group("    grads", ["dq", "dk", "dv"], typ))
        lines += block_mask_lines(typ)
        lines += capture_lines(args, typ)
        if self.grad_captures:
            lines.append(operand_group(
                "    capture_grads", [f"capture_grad{i}" for i in range(len(self.grad_captures))], typ))
        attrs = [f"scale = {f32_literal(f.scale)}"]
        if f.block_size is not None:
            attrs.append(f"block_size = array<i64: {f.block_size[0]}, {f.block_size[1]}>")
        if self.grad_captures:
            attrs.append(f"grad_captures = array<i64: {', '.join(map(str, self.grad_captures))}>")
        lines.append(f"    attributes {{{', '.join(attrs)}}}")
        lines += mod_region_lines(f.score_mod, f.mask_mod)
        return entry_function(args, lines, loc=self.label)


def make_differentiated(mod, opts: CompileOptions) -> None:
    driver.run_pipeline(mod, "flexattn-differentiate-mods", "differentiated")


def make_decomposed(mod, opts: CompileOptions) -> None:
    driver.run_pipeline(mod, "flexattn-decompose-backward", "decomposed")


def q_side_mask_tensors(block_mask) -> list[torch.Tensor]:
    """The transposed block lists of a BlockMask (ours or torch's), derived
    from the kv-side ones when the mask does not carry them."""
    if block_mask is None:
        return []
    num, idx = block_mask.q_num_blocks, block_mask.q_indices
    if num is None:
        from .block_mask import _transpose_ordered

        num, idx = _transpose_ordered(block_mask.kv_num_blocks, block_mask.kv_indices)
    out = [num, idx]
    if getattr(block_mask, "full_kv_num_blocks", None) is not None:
        fnum, fidx = block_mask.full_q_num_blocks, block_mask.full_q_indices
        if fnum is None:
            from .block_mask import _transpose_ordered

            fnum, fidx = _transpose_ordered(block_mask.full_kv_num_blocks,
                                            block_mask.full_kv_indices)
        out += [fnum, fidx]
    return [t.to(torch.int32).contiguous() for t in out]


def backward_spec(forward: AttentionSpec, q_side: Sequence[torch.Tensor],
                  grad_captures: Sequence[int], has_dlse: bool,
                  label: str = "score_mod", sink_grad: bool = False) -> BackwardSpec:
    """The backward of ``forward``. K/V of batch 1 shared by the query batch
    (the forward reads them in place) enter the backward expanded to the
    query's batch: its dk/dv accumulators have one writer per (batch, head,
    KV tile), and :func:`attention_backward` sums them over the batch."""
    batch = forward.q.shape[0]
    forward = replace(forward, **{n: BufferType((batch, *t.shape[1:]), t.elem)
                                  for n, t in (("k", forward.k), ("v", forward.v))})
    return BackwardSpec(forward, tuple(grad_captures), bool(has_dlse),
                        *[BufferType.of(t) for t in q_side], sink_grad=bool(sink_grad),
                        label=label)


_NOT_DIFFERENTIABLE = re.compile(r"cannot differentiate score_mod: (.*?)(?:\n|$)")


def _compile_error(err: driver.CompilationError, label: str) -> Exception:
    m = _NOT_DIFFERENTIABLE.search(str(err))
    if m is None:
        return err
    return NotDifferentiableError(
        f"flex_attention cannot compute gradients through {label}: {m.group(1)}. "
        f"Gradients were requested because query, key, value or a tensor the mods "
        f"capture requires grad; rewrite the mod without that op, or call it under "
        f"torch.no_grad()")


def kernel(spec: BackwardSpec, options: CompileOptions):
    """The compiled backward kernel of ``spec`` (cached like the forward's);
    a mod that cannot be differentiated raises NotDifferentiableError."""
    from .attention import kernel_for

    try:
        return kernel_for(spec, options)
    except driver.CompilationError as err:
        raise _compile_error(err, spec.label) from None


def attention_backward(spec: BackwardSpec, options: CompileOptions, tensors: dict,
                       captures: Sequence[torch.Tensor], mask: Sequence[torch.Tensor],
                       checked: index_checks.Checked):
    """Runs the backward kernel of ``spec``. ``tensors`` holds q, k, v, out,
    dout, lse, (when ``spec.has_dlse``) dlse and (when ``spec.sink_grad``)
    sinks; ``mask`` the kv-side then the q-side block lists; ``checked`` the
    index checks of the mods (the forward's: the same report rows). Returns
    ``(dq, dk, dv, capture_grads, dsinks)``, the capture gradients in their
    captures' dtypes and dsinks in the sinks' (accumulated in float32; None
    without ``spec.sink_grad``).
    A read of a captured tensor the kernel finds out of bounds raises
    IndexError after the call (its gradients are never returned)."""
    run = kernel(spec, options)
    q, k, v = (tensors[n].contiguous() for n in ("q", "k", "v"))
    shared = k.shape[0] != q.shape[0]  # batch-1 K/V read by every query batch
    if shared:
        k, v = (t.expand(q.shape[0], -1, -1, -1).contiguous() for t in (k, v))
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    grads = [torch.empty(captures[c].shape, dtype=torch.float32) for c in spec.grad_captures]
    args = [q, k, v] + [tensors[n].contiguous() for n in ("out", "dout", "lse")]
    if spec.has_dlse:
        args.append(tensors["dlse"].contiguous())
    dsinks = None
    if spec.sink_grad:
        sinks = tensors["sinks"]
        dsinks = torch.empty(sinks.shape, dtype=torch.float32)
        args += [sinks.detach().to(torch.float32).contiguous(), dsinks]
    args += [dq, dk, dv, *(t.contiguous() for t in mask)]
    args += [c.contiguous().view(torch.uint8) if c.dtype == torch.bool else c.contiguous()
             for c in captures]
    report = index_checks.report_capture(checked, q.device)
    run(args + ([] if report is None else [report]) + grads)
    if report is not None:
        index_checks.raise_reported(report, checked)
    if shared:  # dK, dV of a shared K/V: the sum over the query batch
        dk, dv = (g.sum(0, keepdim=True, dtype=torch.float32).to(g.dtype) for g in (dk, dv))
    if dsinks is not None:
        dsinks = dsinks.to(tensors["sinks"].dtype)
    return (dq, dk, dv, [g.to(captures[c].dtype) for g, c in zip(grads, spec.grad_captures)],
            dsinks)
