"""Collectives along the sequence dimension, on any torch.distributed backend.

Everything here is plain ``torch.distributed`` (gloo on CPUs, NCCL on GPUs):
all-gather and reduce-scatter of shards along one dimension, and
:class:`Ring`, which passes tensors to the next rank while the caller
computes (non-blocking point-to-point sends and receives).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

__all__ = ["Group", "resolve_group", "all_gather", "reduce_scatter", "all_reduce", "Ring"]


class Group:
    """A process group with this process's rank and the group's size."""

    def __init__(self, pg, rank: int, size: int):
        self.pg, self.rank, self.size = pg, rank, size

    @property
    def next(self) -> int:
        return dist.get_global_rank(self.pg, (self.rank + 1) % self.size)

    @property
    def prev(self) -> int:
        return dist.get_global_rank(self.pg, (self.rank - 1) % self.size)


def resolve_group(group) -> Group:
    """``group``: a ProcessGroup, a 1-D DeviceMesh, or None (the default group)."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("context parallel attention needs torch.distributed initialised "
                           "(torch.distributed.init_process_group) on every rank")
    if group is not None and hasattr(group, "get_group"):  # a DeviceMesh
        if getattr(group, "ndim", 1) != 1:
            raise ValueError(f"group: a 1-D DeviceMesh is expected (the context-parallel "
                             f"dimension), got a {group.ndim}-D one; pass mesh['cp']")
        group = group.get_group()
    pg = dist.group.WORLD if group is None else group
    return Group(pg, dist.get_rank(pg), dist.get_world_size(pg))


def all_gather(t: torch.Tensor, dim: int, group: Group) -> torch.Tensor:
    """Every rank's ``t`` concatenated along ``dim``, rank 0's first."""
    t = t.contiguous()
    out = t.new_empty((group.size * t.shape[0], *t.shape[1:]))  # gloo: concatenated form
    dist.all_gather_single(out, t, group=group.pg)
    return out.view(group.size, *t.shape).movedim(0, dim).flatten(dim, dim + 1)


def reduce_scatter(t: torch.Tensor, dim: int, group: Group) -> torch.Tensor:
    """The sum over ranks of ``t``, split along ``dim`` into ``group.size``
    equal parts: this rank's part."""
    parts = t.unflatten(dim, (group.size, -1)).movedim(dim, 0).contiguous()
    out = parts.new_empty(parts.shape[1:])
    dist.reduce_scatter_single(out, parts.flatten(0, 1), group=group.pg)
    return out


def all_reduce(t: torch.Tensor, group: Group) -> torch.Tensor:
    """The sum over ranks of ``t`` (a new tensor)."""
    t = t.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(t, group=group.pg)
    return t


class Ring:
    """Sends tensors to the next rank and receives the previous rank's,
    without blocking: :meth:`start` posts the transfers, the caller computes,
    :meth:`wait` returns what arrived. The sent tensors must stay unchanged
    until :meth:`wait` returns."""

    def __init__(self, group: Group):
        self.group = group
        self._works: list = []
        self._outgoing: list[torch.Tensor] = []  # kept alive until wait()
        self._incoming: list[torch.Tensor] = []

    def start(self, tensors: Sequence[torch.Tensor]) -> None:
        if self._works:
            raise RuntimeError("Ring.start: the previous transfer has not been waited for")
        ops, self._incoming = [], []
        if not tensors:
            return
        self._outgoing = [t.contiguous() for t in tensors]
        for t in self._outgoing:
            buf = torch.empty_like(t)
            self._incoming.append(buf)
            ops.append(dist.P2POp(dist.isend, t, self.group.next, self.group.pg))
            ops.append(dist.P2POp(dist.irecv, buf, self.group.prev, self.group.pg))
        self._works = dist.batch_isend_irecv(ops)

    def wait(self) -> list[torch.Tensor]:
        for w in self._works:
            w.wait()
        self._works, self._outgoing = [], []
        return self._incoming
