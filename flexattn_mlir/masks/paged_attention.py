"""A paged KV cache for inference: ``torch.nn.attention.experimental._paged_attention.PagedAttention``'s
interface, whose mods our frontend captures.

The cache holds K and V as ``[1, H, n_pages * page_size, D]`` (one "batch"
shared by every sequence, which the CPU kernel reads in place); a page table
maps each sequence's logical blocks of ``page_size`` tokens to physical pages.
:meth:`PagedAttention.convert_logical_block_mask` turns a block mask written
for one sequence's logical positions into one over the physical cache, and
:meth:`get_mask_mod` / :meth:`get_score_mod` wrap the mods so they see logical
``kv_idx`` values (and mask out pages a sequence does not own).

Unlike torch's, the wrapped mods read the page-table tensors and ``page_size``
from closure variables, not from ``self``: the frontend lifts the tensors to
kernel operands (they change in place as pages are reserved and erased, and the
kernel reads their current values) and bakes ``page_size`` in, so a new wrapped
mod of the same mod is a memo hit and compiles nothing.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .block_mask import BlockMask
from .combinators import noop_mask

__all__ = ["PagedAttention"]


def _cdiv(x, d):
    return (x + d - 1) // d


def _identity(score, b, h, q_idx, kv_idx):
    return score


class PagedAttention:
    """Pages of ``page_size`` tokens, ``n_pages`` in all, shared by up to
    ``max_batch_size`` sequences (torch's constructor and methods).

    page_table ``[max_batch_size, n_pages]`` int64: logical block -> physical
    page (-1: none); physical_to_logical the inverse per sequence; capacity
    ``[max_batch_size]`` the tokens each sequence has room for; empty_pages
    the free physical pages (allocated from the end of the list)."""

    def __init__(self, n_pages: int, page_size: int, max_batch_size: int,
                 device: str = "cuda") -> None:
        for name, value in (("n_pages", n_pages), ("page_size", page_size),
                            ("max_batch_size", max_batch_size)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"PagedAttention: {name} must be a positive int, got {value!r}")
        self.n_pages = n_pages
        self.page_size = page_size
        self.page_table = torch.full((max_batch_size, n_pages), -1, dtype=torch.int64, device=device)
        self.capacity = torch.zeros(max_batch_size, dtype=torch.int64, device=device)
        self.empty_pages = list(range(n_pages - 1, -1, -1))
        self.physical_to_logical = torch.full((max_batch_size, n_pages), -1, dtype=torch.int64,
                                              device=device)

    # -- pages ------------------------------------------------------------------

    def reserve(self, batch_idx: torch.Tensor, seq_len: torch.Tensor) -> None:
        """Grows sequence ``batch_idx``'s capacity to at least ``seq_len``
        tokens (both one-element tensors); raises AssertionError when there
        are not enough free pages, as torch does."""
        have = int(self.capacity[batch_idx])
        want = int(seq_len)
        if want <= have:
            return
        count = _cdiv(want - have, self.page_size)
        if len(self.empty_pages) < count:
            raise AssertionError(
                f"requested {count} pages but there are only {len(self.empty_pages)} empty pages")
        first = have // self.page_size
        device = self.page_table.device
        pages = torch.tensor(self.empty_pages[-count:], device=device)
        self.empty_pages = self.empty_pages[:-count]
        self.page_table[batch_idx, first:first + count] = pages
        self.physical_to_logical[batch_idx, pages] = torch.arange(first, first + count, device=device)
        self.capacity[batch_idx] += count * self.page_size

    def erase(self, batch_idx: torch.Tensor) -> None:
        """Frees every page of sequence ``batch_idx``."""
        row = self.page_table[batch_idx]
        pages = row[row != -1]
        self.capacity[batch_idx] = 0
        self.empty_pages += pages.tolist()
        self.physical_to_logical[batch_idx, pages] = -1  # (torch's writes a copy)
        self.page_table[batch_idx] = -1

    def assign(self, batch_idx: torch.Tensor, input_pos: torch.Tensor, k_val: torch.Tensor,
               v_val: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
        """Writes ``k_val``/``v_val`` ``[B, H, S, D]`` of sequences
        ``batch_idx [B]`` at positions ``input_pos [B, S]`` into the caches
        ``[1, H, n_pages * page_size, D]``."""
        if k_val.requires_grad:
            raise RuntimeError("val must not require gradient")
        B, H, S, KD = k_val.shape
        VD = v_val.shape[3]
        for what, got, want in (("batch_idx length", batch_idx.shape[0], B),
                                ("cache heads", k_cache.shape[1], H),
                                ("input_pos length", input_pos.shape[1], S),
                                ("k_cache head dim", k_cache.shape[3], KD),
                                ("v_cache head dim", v_cache.shape[3], VD)):
            if got != want:
                raise RuntimeError(f"PagedAttention.assign: {what} is {got}, expected {want} "
                                   f"(k_val {tuple(k_val.shape)}, v_val {tuple(v_val.shape)})")
        block = (input_pos // self.page_size).to(torch.int64)
        page = torch.gather(self.page_table[batch_idx], 1, block)
        addr = (page * self.page_size + input_pos % self.page_size).reshape(-1)
        k_cache[:, :, addr, :] = k_val.permute(1, 0, 2, 3).reshape(1, H, B * S, KD)
        v_cache[:, :, addr, :] = v_val.permute(1, 0, 2, 3).reshape(1, H, B * S, VD)

    # -- masks and mods ---------------------------------------------------------

    def convert_logical_block_mask(self, block_mask, batch_idx: Optional[torch.Tensor] = None,
                                   kv_len: Optional[torch.Tensor] = None) -> BlockMask:
        """The block mask over the physical cache of ``block_mask`` (ours or
        torch's, over logical positions; its KV block must be ``page_size``):
        logical KV block indices become the pages holding them, the width
        becomes ``n_pages``, and the mask_mod is :meth:`get_mask_mod`'s.
        ``batch_idx [B]``: the sequences of the mask's batch rows (default
        ``arange(B)``); ``kv_len [B]``: the valid length of each."""
        if not isinstance(block_mask, BlockMask):
            block_mask = BlockMask.from_torch(block_mask)
        B, H, rows, width = block_mask.kv_indices.shape
        if block_mask.BLOCK_SIZE[1] != self.page_size:
            raise RuntimeError(
                f"Expect block_mask has the same column block size as page_size but got "
                f"size={block_mask.BLOCK_SIZE[1]} and size={self.page_size}")
        device = block_mask.kv_num_blocks.device
        if batch_idx is None:
            batch_idx = torch.arange(B, device=device)
        table = self.page_table[batch_idx]

        def physical(num, indices):
            """The listed logical blocks as pages, the ones with no page (not
            reserved: wholly masked by the wrapped mask_mod) dropped from the
            list; the width becomes n_pages."""
            if num is None:
                return None, None
            pages = torch.gather(table, 1, indices.reshape(B, -1).to(torch.int64))
            pages = pages.view(indices.shape)
            slot = torch.arange(width, device=device)
            keep = (slot < num.unsqueeze(-1)) & (pages >= 0)
            order = torch.argsort((~keep).to(torch.int64) * width + slot, dim=-1, stable=True)
            out = torch.zeros((B, H, rows, self.n_pages), dtype=torch.int32, device=device)
            out[..., :width] = torch.where(keep, pages, 0).gather(-1, order).to(torch.int32)
            return keep.sum(-1).to(torch.int32), out

        num, idx = physical(block_mask.kv_num_blocks, block_mask.kv_indices)
        full_num, full_idx = physical(block_mask.full_kv_num_blocks, block_mask.full_kv_indices)
        return BlockMask.from_kv_blocks(
            num, idx, full_num, full_idx, block_mask.BLOCK_SIZE,
            self.get_mask_mod(block_mask.mask_mod, kv_len),
            seq_lengths=(block_mask.seq_lengths[0], self.n_pages * self.page_size))

    def _logical(self, kv_len):
        """``(physical_kv_idx, b) -> (logical_kv_idx, valid)`` reading only
        closure variables (see the module docstring)."""
        page_size, to_logical = self.page_size, self.physical_to_logical

        def logical(b, physical_kv_idx):
            block = to_logical[b, physical_kv_idx // page_size]
            kv_idx = block * page_size + physical_kv_idx % page_size
            # As torch's: the page's block alone (kv_idx >= 0 follows). It is
            # the same for a whole KV tile (flexattn-fold-tile-divisions), so
            # a mask_mod that ignores kv_idx costs nothing per score.
            valid = block >= 0
            if kv_len is not None:
                valid = valid & (kv_idx < kv_len[b])
            return kv_idx, valid

        return logical

    def get_mask_mod(self, mask_mod: Optional[Callable], kv_len: Optional[torch.Tensor] = None):
        """``mask_mod`` (over logical positions; None keeps all) as a mask
        over physical positions: False outside the sequence's pages (and past
        ``kv_len[b]``)."""
        mask_mod = noop_mask if mask_mod is None else mask_mod
        logical = self._logical(kv_len)

        def paged_mask(b, h, q_idx, physical_kv_idx):
            kv_idx, valid = logical(b, physical_kv_idx)
            return valid & mask_mod(b, h, q_idx, kv_idx)

        return paged_mask

    def get_score_mod(self, score_mod: Optional[Callable], kv_len: Optional[torch.Tensor] = None):
        """``score_mod`` (over logical positions; None is the identity) over
        physical positions: -inf outside the sequence's pages (and past
        ``kv_len[b]``)."""
        score_mod = _identity if score_mod is None else score_mod
        logical = self._logical(kv_len)

        def paged_score(score, b, h, q_idx, physical_kv_idx):
            kv_idx, valid = logical(b, physical_kv_idx)
            return torch.where(valid, score_mod(score, b, h, q_idx, kv_idx), float("-inf"))

        return paged_score
