"""Masks: takes a captured mask_mod (or a score_mod) as region IR and hands on
what the kernels and the checks need: torch's combinators
(:mod:`.combinators`), a sound interval analysis of a
mod's IR (:mod:`.intervals`), the block-sparse :class:`~.block_mask.BlockMask`
that :func:`~.block_mask.create_block_mask` classifies with it, and the
index checks that prove reads of captured tensors in bounds or have the
kernel check them (:mod:`.index_checks`)."""

from .combinators import and_masks, is_noop, noop_mask, or_masks
from .block_mask import BlockMask, create_block_mask

__all__ = ["BlockMask", "and_masks", "create_block_mask", "is_noop", "noop_mask", "or_masks"]
