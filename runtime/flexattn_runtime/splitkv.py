"""Split-KV scratch and merge: the decode kernel's (docs/inference.md, "The
GPU decode kernel") and a tail split's (docs/gpu-pipeline.md §3, "Wave
quantization"). A kernel compiled through ``flexattn-split-kv{splits
merge=false}`` takes two trailing f32 arguments past the attention's own,
``split_out`` [S, B*H*M*Dv] and ``split_lse`` [S, B*H*M]: each of the S KV
ranges of a tile writes its normalised partial rows and their lse there.
:func:`run_split` allocates them (torch's allocator: a CUDA graph captures
them in its pool), launches, and merges into ``out`` (and ``lse``).

:class:`TailSplit` runs a dense attention as two kernels: the main kernel
on the grid's first ``T - r`` Q tiles (``flexattn-map-to-grid{tiles}``),
and a split-KV kernel on the last ``r`` tiles, which are the first ``r``
Q tiles of the last (batch, head) in the grid's order, launched on a
second stream so the hardware fills the main grid's last, nearly empty
wave with their KV ranges."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["split_arguments", "merge_splits", "run_split", "TailSplit"]


def split_arguments(metadata) -> list:
    """The scratch arguments of a decode kernel's metadata (empty for any
    other kernel)."""
    return [a for a in metadata.arguments if a.name.startswith("split_")]


def merge_splits(part_out: torch.Tensor, part_lse: torch.Tensor, out: torch.Tensor,
                 lse: torch.Tensor | None) -> None:
    """out (and lse, when given) from the S ranges' partial rows:
    ``out = sum_s softmax_s(lse_s) out_s``, ``lse = log sum_s exp(lse_s)``;
    a row no range saw a key for gets 0 and -inf, as torch. A few torch
    kernels on the current stream (softmax, product, sum, cast; logsumexp
    for lse): no host sync."""
    s, rows = part_lse.shape
    # softmax over the ranges; nan (every lse_s = -inf) -> weight 0
    weight = torch.softmax(part_lse, dim=0).nan_to_num_(0.0)
    merged = (weight.unsqueeze(-1) * part_out.view(s, rows, -1)).sum(0)
    out.copy_(merged.view(out.shape))
    if lse is not None:
        lse.copy_(torch.logsumexp(part_lse, dim=0).view(lse.shape))


def run_split(kernel, args: Any, launch=None) -> None:
    """Runs a decode kernel on ``args`` (the attention's arguments, by name
    or in order, without the scratch), then merges its ranges. ``launch``:
    the kernel's ``PreparedLaunch`` (it takes every argument in order), or
    None to launch through ``kernel`` itself."""
    names = kernel.metadata.argument_names
    scratch = split_arguments(kernel.metadata)
    named = dict(args) if isinstance(args, dict) else dict(zip(names, args))
    device = named["out"].device
    for a in scratch:
        named[a.name] = torch.empty(a.shape, dtype=a.dtype, device=device)
    if launch is None:
        kernel(named)
    else:
        launch([named[n] for n in names])
    merge_splits(named["split_out"], named["split_lse"], named["out"], named.get("lse"))


class TailSplit:
    """A dense attention's launch in two kernels: ``main`` (its tensors in
    the attention's order: q, k, v, out[, lse]) computes every Q tile but
    the last ``rows`` rows' tiles, ``tail`` (compiled with ``splits`` for
    q ``[1, 1, rows, D]`` and k/v ``[1, 1, N, D]``) computes those: rows
    ``0 : rows`` of the last batch and query head, against the last K/V
    head, in KV ranges merged by their lse. Both are callables of a tensor
    list (``Kernel``, ``PreparedLaunch``); ``tail_metadata`` is the tail
    kernel's (its scratch shapes). The tail and its merge run on a second
    stream of the current device, forked from and joined to the current
    stream (a CUDA graph captures both), launched after the main kernel:
    the hardware runs its CTAs on the SMs the main kernel leaves idle at its
    end (launched before it, it measured the same on the H200). Only
    kernels whose mods do not read b, h or captured tensors may be split
    so: the tail sees its rows as batch 0, head 0."""

    _streams: dict = {}

    def __init__(self, main, tail, tail_metadata, rows: int):
        self.main, self.tail, self.rows = main, tail, rows
        shapes = {a.name: tuple(a.shape) for a in split_arguments(tail_metadata)}
        self.out_shape, self.lse_shape = shapes["split_out"], shapes["split_lse"]

    @classmethod
    def _side(cls, device: torch.device):
        stream = cls._streams.get(device)
        if stream is None:
            stream = cls._streams[device] = torch.cuda.Stream(device)
        return stream

    def __call__(self, tensors) -> None:
        q, k, v, out = tensors[:4]
        lse = tensors[4] if len(tensors) > 4 else None
        current = torch.cuda.current_stream(q.device)
        side = self._side(q.device)
        ready = torch.cuda.Event()
        ready.record(current)
        self.main(tensors)
        side.wait_event(ready)
        with torch.cuda.stream(side):
            r = self.rows
            tail_out = out[-1:, -1:, :r]
            part_out = torch.empty(self.out_shape, dtype=torch.float32, device=q.device)
            part_lse = torch.empty(self.lse_shape, dtype=torch.float32, device=q.device)
            self.tail([q[-1:, -1:, :r], k[-1:, -1:], v[-1:, -1:], tail_out, part_out, part_lse])
            merge_splits(part_out, part_lse, tail_out,
                         None if lse is None else lse[-1:, -1:, :r])
        current.wait_stream(side)
