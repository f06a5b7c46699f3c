"""The backward kernel's spec: gradients of attention with respect to q, k,
v and the captured buffers, compiled by the same staged driver as the
forward (the backend's backward stages, e.g. the CPU's

    flexattn -> differentiated -> tiled -> sparse -> decomposed -> inlined
             -> loops -> llvm                                       (CPU)
    flexattn -> differentiated -> tiled -> sparse -> grid -> steps -> kernel
             -> nvvm -> ptx                                         (GPUs)

). A :class:`BackwardSpec` is what one backward kernel is specialised on: the
forward's :class:`~flexattn_mlir.compiler.spec.AttentionSpec`, which captured
buffers take a gradient, whether ``lse`` has one, the transposed (q-side)
block lists and whether ``delta = rowsum(dout * out) - dlse`` is precomputed by
the caller (an argument: the GPU kernel's form, as torch's flex backward does). :mod:`flexattn_mlir.execution.autograd` runs it on torch tensors.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

from mlir import ir

from .. import _native
from . import targets
from ..dialects import flexattn as fa
from .spec import (_KV_LISTS, AttentionSpec, BufferType, block_list_values, block_size_attr,
                   capture_values, entry_function, f32_attr)

__all__ = ["BackwardSpec", "backward_spec"]

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
    delta_input: bool = False
    # The attention sinks take a gradient (dsinks).
    sink_grad: bool = False
    # > 0: each capture gradient has a trailing dim of this many per-thread
    # partial sums (the deterministic GPU kernel's), summed by the caller.
    capture_partials: int = 0
    # dq is an f32 buffer (the caller converts it to q's dtype): the GPU
    # kernel adds each KV tile's dq into it (flexattn-atomic-dq) instead of
    # recomputing the scores in dq tiles of its own.
    dq_f32: bool = False
    # Names the score_mod in diagnostics (the op's location); not in the key.
    label: str = field(default="score_mod", compare=False)

    @property
    def name(self) -> str:
        return f"{self.forward.name}_backward"

    def arguments(self) -> list[tuple[str, BufferType]]:
        """q, k, v, out, dout, lse, [dlse], [delta], [sinks, dsinks], dq, dk,
        dv, the kv-side then the q-side block lists, captures...,
        [index_report], capture grads..."""
        f = self.forward
        args = [("q", f.q), ("k", f.k), ("v", f.v), ("out", f.out), ("dout", f.out),
                ("lse", f.lse)]
        if self.has_dlse:
            args.append(("dlse", f.lse))
        if self.delta_input:
            args.append(("delta", BufferType(f.lse.shape, "f32")))
        if self.sink_grad:
            sinks = BufferType((f.q.shape[1],), "f32")
            args += [("sinks", sinks), ("dsinks", sinks)]
        args += [("dq", BufferType(f.q.shape, "f32") if self.dq_f32 else f.q),
                 ("dk", f.k), ("dv", f.v)]
        for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
            if getattr(f, name) is not None:
                args.append((name, getattr(f, name)))
        args += [(n, getattr(self, n)) for n in _Q_SIDE if getattr(self, n) is not None]
        args += [(f"capture{i}", c) for i, c in enumerate(f.captures)]
        if f.index_report is not None:  # the mods' last capture, as in the forward
            args.append(("index_report", f.index_report))
        partials = (self.capture_partials,) if self.capture_partials else ()
        args += [(f"capture_grad{i}", BufferType((*f.captures[c].shape, *partials), "f32"))
                 for i, c in enumerate(self.grad_captures)]
        return args

    def digest(self) -> str:
        h = hashlib.sha256(b"backward|" + self.forward.digest().encode())
        h.update(repr((self.grad_captures, self.has_dlse, self.delta_input,
                       [getattr(self, n) for n in _Q_SIDE], self.sink_grad,
                       self.capture_partials, self.dq_f32)).encode())
        return h.hexdigest()

    def check(self, opts) -> None:
        """Raises CompilationError where ``opts.target`` cannot compile this
        spec: GPU backward kernels read delta precomputed."""
        if targets.target(opts.target).is_gpu and not self.delta_input:
            from .pipeline import CompilationError

            raise CompilationError(
                f"the {opts.target} backward kernel reads a precomputed delta: build its "
                f"BackwardSpec with delta_input=True")

    def output_names(self) -> list[str]:
        """The arguments the kernel writes (GPU launch metadata)."""
        return ["dq", "dk", "dv"] + [f"capture_grad{i}" for i in range(len(self.grad_captures))]

    @property
    def kind(self) -> str:
        """Which stage table of the backend compiles it."""
        return "backward"

    def build(self) -> ir.Module:
        """The ``flexattn.attention_backward`` module, built with the op
        builders in the current context; the op's location names the
        score_mod (diagnostics)."""
        f = self.forward

        def op(a: dict[str, ir.Value]):
            grads = [a[f"capture_grad{i}"] for i in range(len(self.grad_captures))]
            return fa.AttentionBackwardOp(
                a["q"], a["k"], a["v"], a["out"], a["dout"], a["lse"], a["dq"], a["dk"], a["dv"],
                capture_values(a), grads, f32_attr(f.scale), dlse=a.get("dlse"),
                delta=a.get("delta"), sinks=a.get("sinks"), dsinks=a.get("dsinks"),
                block_size=block_size_attr(f.block_size),
                grad_captures=(ir.DenseI64ArrayAttr.get(list(self.grad_captures))
                               if self.grad_captures else None),
                loc=ir.Location.name(self.label),
                **block_list_values(a, _KV_LISTS + _Q_SIDE))

        return entry_function(self.arguments(), op, (f.score_mod, f.mask_mod))

    def to_mlir(self) -> str:
        """:meth:`build`'s module as text."""
        with _native.new_context(), ir.Location.unknown():
            return str(self.build())


# The GPU backward's partial slots per dq tile of 128 query rows: one per
# thread of the tensor-core kernel (2 x 128; a 64-row tile has half as many
# threads, so the count covers it too). flexattn-lower-backward-mma checks it.
_PARTIALS_PER_128_ROWS = 256
# The deterministic mode's scratch beyond which a call is refused.
_MAX_PARTIALS_BYTES = 4 << 30


def capture_partials(forward: AttentionSpec, grad_captures: Sequence[int]) -> int:
    """The partial slots of each capture gradient in the GPU backward's
    deterministic mode: one per thread of every dq tile (B x Hq x Q tiles
    of 128 rows x 256), raising ValueError where the scratch (slots x the
    captures' entries x 4 bytes) would exceed 4 GiB."""
    B, H, M = forward.q.shape[:3]
    partials = B * H * -(-M // 128) * _PARTIALS_PER_128_ROWS
    entries = sum(math.prod(forward.captures[c].shape) for c in grad_captures)
    if partials * entries * 4 > _MAX_PARTIALS_BYTES:
        raise ValueError(
            f"kernel_options deterministic: the capture gradients' per-thread partial sums "
            f"would take {partials * entries * 4 / 2**30:.1f} GiB ({partials} slots x "
            f"{entries} captured entries); at most {_MAX_PARTIALS_BYTES >> 30} GiB. Use fewer "
            f"learnable entries or query rows per call, or leave deterministic off")
    return partials


def backward_spec(forward: AttentionSpec, q_side: Sequence,
                  grad_captures: Sequence[int], has_dlse: bool,
                  label: str = "score_mod", target: str = "cpu",
                  sink_grad: bool = False, deterministic: bool = False,
                  atomic_dq: bool = False) -> BackwardSpec:
    """The backward of ``forward`` for ``target``. K/V of batch 1 shared by
    the query batch (the forward reads them in place) enter the backward
    expanded to the query's batch: its dk/dv accumulators have one writer per
    (batch, head, KV tile), and the caller sums them over the batch. GPU
    kernels read delta precomputed (the caller computes it with one torch
    reduction, as torch's flex backward does). ``deterministic`` (GPU, with
    capture gradients): per-thread partial sums instead of atomics
    (:func:`capture_partials`). ``atomic_dq`` (``CompileOptions.
    backward_atomic_dq``; sm_90a, without capture gradients, not
    ``deterministic``): dq in f32 (``dq_f32``), into which the tensor-core
    kernel's dk/dv tiles add their parts (flexattn-atomic-dq), so its order
    of summation varies between runs."""
    batch = forward.q.shape[0]
    forward = replace(forward, **{n: BufferType((batch, *t.shape[1:]), t.elem)
                                  for n, t in (("k", forward.k), ("v", forward.v))})
    q_side = [BufferType.of(t) for t in q_side]
    q_side += [None] * (len(_Q_SIDE) - len(q_side))
    gpu = targets.target(target).is_gpu
    return BackwardSpec(forward, tuple(grad_captures), bool(has_dlse), *q_side,
                        delta_input=gpu, sink_grad=bool(sink_grad) and not gpu,
                        capture_partials=(capture_partials(forward, grad_captures)
                                          if deterministic and gpu and grad_captures else 0),
                        dq_f32=(atomic_dq and targets.target(target).chip == "sm_90a"
                                and not deterministic and not grad_captures),
                        label=label)
