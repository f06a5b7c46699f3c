"""The decode kernel's split-KV scratch and merge (docs/inference.md, "The
GPU decode kernel"). A kernel compiled through ``flexattn-split-kv{splits
merge=false}`` takes two trailing f32 arguments past the attention's own,
``split_out`` [S, B*H*M*Dv] and ``split_lse`` [S, B*H*M]: each of the S KV
ranges of a tile writes its normalised partial rows and their lse there.
:func:`run_split` allocates them (torch's allocator: a CUDA graph captures
them in its pool), launches, and merges into ``out`` (and ``lse``)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["split_arguments", "merge_splits", "run_split"]


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
