"""torch's mask_mod combinators: :func:`noop_mask`, :func:`and_masks`,
:func:`or_masks`, with torch's semantics, written so the frontend can capture
them: each combinator closes over a tuple of mods, whose captured tensors the
frontend lifts (:mod:`flexattn_mlir.frontend`)."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["noop_mask", "and_masks", "or_masks", "is_noop"]

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def noop_mask(batch: torch.Tensor, head: torch.Tensor, token_q: torch.Tensor,
              token_kv: torch.Tensor) -> torch.Tensor:
    """Keeps every score."""
    return batch.new_ones(size=(), dtype=torch.bool, device=batch.device)


def _check(mask_mods) -> None:
    if not all(callable(m) for m in mask_mods):
        raise RuntimeError(f"All inputs should be callable mask_mods: {mask_mods}")


def or_masks(*mask_mods: MaskMod) -> MaskMod:
    """The union of ``mask_mods`` (False for none)."""
    _check(mask_mods)

    def or_mask(b, h, q_idx, kv_idx):
        result = b.new_zeros((), dtype=torch.bool)
        for mask in mask_mods:
            result = result | mask(b, h, q_idx, kv_idx)
        return result

    return or_mask


def and_masks(*mask_mods: MaskMod) -> MaskMod:
    """The intersection of ``mask_mods`` (True for none)."""
    _check(mask_mods)

    def and_mask(b, h, q_idx, kv_idx):
        result = b.new_ones((), dtype=torch.bool)
        for mask in mask_mods:
            result = result & mask(b, h, q_idx, kv_idx)
        return result

    return and_mask


def is_noop(mask_mod) -> bool:
    """Whether ``mask_mod`` keeps every score: None, ours or torch's noop_mask."""
    from torch.nn.attention import flex_attention as torch_flex

    return mask_mod is None or mask_mod is noop_mask or mask_mod is torch_flex.noop_mask
