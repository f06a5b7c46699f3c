"""Which positions of the sequence each rank holds: the load-balanced layouts.

A :class:`SequenceSharding` is one permutation of the padded sequence: the
``world_size * local_len`` positions of the concatenated rank shards, each
holding a *virtual* global index. Indices below ``seq_len`` are tokens,
the others padding (a length not divisible by the rank count, or by twice it
for head-tail). Rank ``r`` holds the positions ``r * local_len`` to
``(r + 1) * local_len`` of the permutation: :meth:`SequenceSharding.shard`
picks them out of a full tensor (zeros for padding) and
:meth:`SequenceSharding.unshard` puts the concatenated shards back in
sequence order. The attention reads the same tables
(:meth:`SequenceSharding.positions`) to give the mods global indices.

Layouts: :meth:`~SequenceSharding.contiguous` (rank r holds the r-th
slice), :meth:`~SequenceSharding.head_tail` (the zig-zag layout: chunk r and
chunk 2W-1-r of 2W, so each rank gets as many early rows of a causal mask as
late ones) and :meth:`~SequenceSharding.balanced` (block-mask-aware: blocks
of the sequence dealt to ranks by the work the block mask gives each,
heaviest first, in snake order, as torch's PTRR load balancer does; for
document masks and any other sparsity).
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import comm

__all__ = ["SequenceSharding", "context_parallel_shard", "context_parallel_unshard"]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class SequenceSharding:
    """A layout of a sequence of ``seq_len`` tokens over ``world_size`` ranks.

    ``order`` (int64, ``[world_size * local_len]``): the virtual global index
    of every position of the concatenated shards; indices ``>= seq_len`` are
    padding; every index in ``[0, seq_len)`` appears exactly once."""

    def __init__(self, order: torch.Tensor, seq_len: int, world_size: int, kind: str = "custom"):
        order = torch.as_tensor(order, dtype=torch.int64).flatten().cpu()
        seq_len, world_size = int(seq_len), int(world_size)
        if seq_len <= 0 or world_size <= 0:
            raise ValueError(f"SequenceSharding: seq_len and world_size must be positive, got "
                             f"{seq_len} and {world_size}")
        if order.numel() % world_size or order.numel() < seq_len:
            raise ValueError(f"SequenceSharding: order has {order.numel()} positions; expected a "
                             f"multiple of world_size={world_size} of at least seq_len={seq_len}")
        tokens = order[order < seq_len]
        if (order < 0).any() or tokens.numel() != seq_len or \
                torch.bincount(tokens, minlength=seq_len).max() != 1:
            raise ValueError("SequenceSharding: order must hold every index of [0, seq_len) "
                             "exactly once (other entries, >= seq_len, are padding)")
        if order.max() >= 2**31 - 1:
            raise ValueError("SequenceSharding: indices must fit in int32")
        self.order = order
        self.seq_len = seq_len
        self.world_size = world_size
        self.local_len = order.numel() // world_size
        self.kind = kind
        # Where each token sits in the concatenated shards (for unshard).
        self._inverse = torch.empty(seq_len, dtype=torch.int64)
        valid = order < seq_len
        self._inverse[order[valid]] = torch.nonzero(valid).flatten()

    def __repr__(self) -> str:
        return (f"SequenceSharding({self.kind}, seq_len={self.seq_len}, "
                f"world_size={self.world_size}, local_len={self.local_len})")

    # -- layouts -------------------------------------------------------------

    @classmethod
    def contiguous(cls, seq_len: int, world_size: int) -> "SequenceSharding":
        """Rank r holds tokens ``[r * L, (r + 1) * L)``, ``L = ceil(seq_len / world_size)``
        (the last ranks' shards end in padding)."""
        return cls(torch.arange(_cdiv(seq_len, world_size) * world_size), seq_len, world_size,
                   "contiguous")

    @classmethod
    def head_tail(cls, seq_len: int, world_size: int) -> "SequenceSharding":
        """The zig-zag layout: the sequence cut into ``2 * world_size`` chunks
        of ``ceil(seq_len / (2 * world_size))``; rank r holds chunk r then
        chunk ``2 * world_size - 1 - r``. Balances causal masks (each rank
        gets as many rows near the start as near the end)."""
        chunk = _cdiv(seq_len, 2 * world_size)
        chunks = torch.arange(2 * world_size * chunk).view(2 * world_size, chunk)
        head = torch.arange(world_size)
        order = torch.stack([chunks[head], chunks[2 * world_size - 1 - head]], 1)
        return cls(order.flatten(), seq_len, world_size, "head_tail")

    @classmethod
    def balanced(cls, block_mask, world_size: int) -> "SequenceSharding":
        """Block-mask-aware: the sequence's Q blocks (of the block mask's
        Q block size) dealt to ranks by their work (the KV blocks the mask
        visits for them, summed over batch and heads), heaviest first, in
        snake order (torch's PTRR); each rank holds blocks in ascending
        order. ``block_mask`` is the whole sequence's (ours or torch's,
        ``seq_lengths`` equal, self-attention)."""
        q_len, kv_len = (int(n) for n in block_mask.seq_lengths)
        if q_len != kv_len:
            raise ValueError(f"SequenceSharding.balanced: the block mask must be a self-attention "
                             f"mask (Q_LEN == KV_LEN), got {q_len} and {kv_len}")
        bq = int(block_mask.BLOCK_SIZE[0])
        work = block_mask.kv_num_blocks.to("cpu", torch.int64)
        if block_mask.full_kv_num_blocks is not None:
            work = work + block_mask.full_kv_num_blocks.to("cpu", torch.int64)
        work = work.sum(dim=(0, 1))  # [Q blocks]
        blocks = _cdiv(_cdiv(q_len, bq), world_size) * world_size
        work = torch.cat([work, work.new_zeros(blocks - work.numel())])
        ranked = torch.sort(work, descending=True, stable=True).indices.view(-1, world_size)
        ranked[1::2] = ranked[1::2].flip(1)  # snake: 0..W-1, W-1..0, ...
        per_rank = torch.sort(ranked.t(), dim=1).values  # [W, blocks / W]
        order = (per_rank.unsqueeze(-1) * bq + torch.arange(bq)).flatten()
        return cls(order, q_len, world_size, "balanced")

    # -- tables --------------------------------------------------------------

    def positions(self, rank: int, device=None) -> torch.Tensor:
        """The virtual global indices rank ``rank`` holds (int32, ``[local_len]``;
        ``>= seq_len`` is padding)."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), got {rank}")
        rows = self.order[rank * self.local_len:(rank + 1) * self.local_len]
        return rows.to(device=device, dtype=torch.int32)

    def all_positions(self, device=None) -> torch.Tensor:
        """Every rank's positions, concatenated (int32, ``[world_size * local_len]``)."""
        return self.order.to(device=device, dtype=torch.int32)

    @property
    def padded(self) -> bool:
        return self.order.numel() != self.seq_len

    # -- tensors -------------------------------------------------------------

    def _check_dim(self, t: torch.Tensor, dim: int, size: int, what: str) -> int:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}: expected a tensor, got {type(t).__name__}")
        if not -t.dim() <= dim < t.dim():
            raise ValueError(f"{what}: dim {dim} is out of range for a {t.dim()}-d tensor")
        dim %= t.dim()
        if t.shape[dim] != size:
            raise ValueError(f"{what}: dimension {dim} has size {t.shape[dim]}, expected {size}")
        return dim

    def _take(self, t: torch.Tensor, dim: int, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.to(device=t.device, dtype=torch.int64)
        picked = t.index_select(dim, rows.clamp(max=self.seq_len - 1))
        if not self.padded:
            return picked
        shape = [1] * t.dim()
        shape[dim] = rows.numel()
        return torch.where((rows < self.seq_len).view(shape), picked, picked.new_zeros(()))

    def shard(self, t: torch.Tensor, dim: int, rank: int) -> torch.Tensor:
        """Rank ``rank``'s shard of the whole-sequence tensor ``t`` (its
        sequence along ``dim``): ``local_len`` positions, padding zeroed.
        Differentiable."""
        dim = self._check_dim(t, dim, self.seq_len, "SequenceSharding.shard")
        return self._take(t, dim, self.positions(rank))

    def reorder(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Every rank's shard of ``t``, concatenated (rank 0's first):
        the inverse of :meth:`unshard`. Differentiable."""
        dim = self._check_dim(t, dim, self.seq_len, "SequenceSharding.reorder")
        return self._take(t, dim, self.order)

    def unshard(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """The whole sequence from the concatenated shards ``t`` (rank 0's
        shard first, along ``dim``), padding dropped. Differentiable."""
        dim = self._check_dim(t, dim, self.order.numel(), "SequenceSharding.unshard")
        return t.index_select(dim, self._inverse.to(t.device))


def group_for(group, sharding: SequenceSharding) -> comm.Group:
    """The resolved ``group``, checked to have the sharding's rank count."""
    g = comm.resolve_group(group)
    if g.size != sharding.world_size:
        raise ValueError(f"the sharding is for {sharding.world_size} ranks, but the process "
                         f"group has {g.size}")
    return g


def context_parallel_shard(group, buffers: Sequence[torch.Tensor], seq_dims: Sequence[int],
                           sharding: SequenceSharding) -> list[torch.Tensor]:
    """This rank's shards of whole-sequence ``buffers`` (q, k, v, labels,
    document ids...), each along its ``seq_dims`` entry: torch's
    ``_context_parallel_shard`` with a process group (or 1-D DeviceMesh)
    and a :class:`SequenceSharding` in place of the mesh and load balancer.
    Local: no communication."""
    if len(buffers) != len(seq_dims):
        raise ValueError(f"context_parallel_shard: {len(buffers)} buffers but "
                         f"{len(seq_dims)} seq_dims")
    g = group_for(group, sharding)
    return [sharding.shard(t, dim, g.rank) for t, dim in zip(buffers, seq_dims)]


def context_parallel_unshard(group, buffers: Sequence[torch.Tensor], seq_dims: Sequence[int],
                             sharding: SequenceSharding) -> list[torch.Tensor]:
    """The whole-sequence tensors from every rank's shards (torch's
    ``context_parallel_unshard``): all-gathered, put back in sequence
    order, padding dropped. Collective; not differentiable."""
    if len(buffers) != len(seq_dims):
        raise ValueError(f"context_parallel_unshard: {len(buffers)} buffers but "
                         f"{len(seq_dims)} seq_dims")
    g = group_for(group, sharding)
    out = []
    for t, dim in zip(buffers, seq_dims):
        dim %= t.dim()
        out.append(sharding.unshard(comm.all_gather(t.detach(), dim, g), dim))
    return out
