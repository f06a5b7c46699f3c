"""Block-mask lists as a kernel reads them, in torch ops on the lists'
device (no MLIR): what the compiler's Python side and a caller of an AOT
kernel both use. A kernel's metadata names the Q block it reads a mask in
(``spec.block_size``); a torch ``BlockMask`` of another Q block reaches it
through :func:`retile_q`."""

from __future__ import annotations

import torch

__all__ = ["ordered_to_dense", "retile_q"]


def ordered_to_dense(num: torch.Tensor, idx: torch.Tensor, cols: int) -> torch.Tensor:
    """The 0/1 int32 block matrix of (num, indices); unlisted slots ignored."""
    slots = torch.arange(idx.shape[-1], device=idx.device)
    listed = slots < num.unsqueeze(-1)
    dense = torch.zeros((*idx.shape[:-1], cols + 1), dtype=torch.int32, device=idx.device)
    target = torch.where(listed, idx.long(), cols)
    dense.scatter_(-1, target, 1)
    return dense[..., :cols].contiguous()


def retile_q(lists: list, q_block: int, tile_q: int, q_len: int) -> list:
    """A block mask's KV-side lists ``[num, indices(, full_num,
    full_indices)]`` of ``q_block``-row query blocks, as the lists of
    ``tile_q``-row Q tiles (a kernel whose Q tile is not a divisor of the
    mask's Q block): tile t holds query rows [t tile_q, min((t + 1) tile_q,
    q_len)), so the query blocks those rows fall in. A KV block any of them
    lists (partial or full) is partial for the tile, unless every one lists
    it as full. The mask_mod decides the elements of partial blocks, so the
    result is the same mask, only less sparse. On the lists' device, in
    torch ops (no copy to the host); the order within a list is ascending,
    as torch's (a stable descending argsort)."""
    num, idx = lists[0], lists[1]
    cols, blocks = idx.shape[-1], idx.shape[-2]
    tiles = -(-q_len // tile_q)
    start = torch.arange(tiles, device=idx.device) * tile_q
    first = (start // q_block).clamp(max=blocks - 1)
    last = ((start + tile_q).clamp(max=q_len) - 1) // q_block
    last = last.clamp(max=blocks - 1)
    listed = ordered_to_dense(num, idx, cols).bool()
    full = None
    if len(lists) == 4:
        full = ordered_to_dense(lists[2], lists[3], cols).bool()
        listed = listed | full
    any_row = all_full = None
    # A tile spans at most ceil(tile_q / q_block) + 1 query blocks; rows
    # past `last` repeat it (the same union).
    for step in range(-(-tile_q // q_block) + 1):
        rows = torch.minimum(first + step, last)
        seen = listed.index_select(-2, rows)
        any_row = seen if any_row is None else any_row | seen
        if full is not None:
            kept = full.index_select(-2, rows)
            all_full = kept if all_full is None else all_full & kept

    def ordered(dense):
        d = dense.to(torch.int32)
        order = torch.argsort(d, dim=-1, descending=True, stable=True)
        return d.sum(-1, dtype=torch.int32), order.to(torch.int32).contiguous()

    if full is None:
        return list(ordered(any_row))
    return [*ordered(any_row & ~all_full), *ordered(all_full)]
