"""The per-rank block mask of context-parallel attention, and mods that see
global indices.

Rank r holds the query rows ``sharding.positions(r)`` and meets the key
rows of every rank: all of them at once (``rotate="allgather"``, keys
ordered as the concatenated shards) or one rank's shard at a time
(``rotate="ring"``). The kernels index their local rows; the mods are
given the global ones through two small int32 tables captured as kernel
operands (no copy of a mod's code per rank or step: the tables change, the
kernel does not)::

    cp_mask(b, h, q_idx, kv_idx) =
        q_table[q_idx] < S and kv_table[kv_idx] < S            (padding is masked)
        and mask_mod(b, h, clamp(q_table[q_idx]), clamp(kv_table[kv_idx]))
    cp_score(score, b, h, q_idx, kv_idx) =
        score_mod(score, b, h, clamp(q_table[q_idx]), clamp(kv_table[kv_idx]))

``clamp`` bounds the indices to ``[0, S)``, so the mods' reads of their
captured tensors are proved in bounds as in a one-process call. Tensors the
mods read per token (document ids) are given by their rank's shard
(``token_tensors``); they are all-gathered into sequence order once and
take the shard's place in the mods.

:func:`create_cp_block_mask` builds, per rotation, this rank's block masks
over its own rows only: one ``[local rows, all keys]`` mask for the
all-gather, one ``[local rows, shard j's keys]`` mask per source rank j for
the ring, where a shard the mask never reaches is skipped altogether.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional, Sequence

import torch

from ..frontend import capture as frontend
from ..masks.block_mask import _DEFAULT_SPARSE_BLOCK_SIZE, create_block_mask
from ..masks.block_mask import block_size as _block_size
from . import comm
from .sharding import SequenceSharding, group_for

__all__ = ["CPBlockMask", "create_cp_block_mask", "ROTATIONS"]

ROTATIONS = ("allgather", "ring")


def _name(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def global_index_mod(fn: Optional[Callable], kind: str, seq_len: int, q_table: torch.Tensor,
                     kv_table: torch.Tensor) -> Callable:
    """``fn`` (a score_mod or mask_mod on global indices) as a mod on the
    local rows and keys the tables map (see the module docstring). A mask
    is made even without ``fn``: it masks the padding."""
    last = seq_len - 1
    if kind == "score":
        def cp_score_mod(score, b, h, q_idx, kv_idx):
            return fn(score, b, h, q_table[q_idx].clamp(0, last), kv_table[kv_idx].clamp(0, last))

        cp_score_mod.__name__ = f"cp_{_name(fn)}"
        return cp_score_mod

    def cp_mask_mod(b, h, q_idx, kv_idx):
        q, kv = q_table[q_idx], kv_table[kv_idx]
        keep = (q < seq_len) & (kv < seq_len)
        if fn is None:
            return keep
        return keep & fn(b, h, q.clamp(0, last), kv.clamp(0, last))

    cp_mask_mod.__name__ = f"cp_{_name(fn) if fn is not None else 'padding'}"
    return cp_mask_mod


class TokenTensors:
    """Per-token tensors the mods read, given by this rank's shard: each
    shard (by identity) with its sequence dim, its whole-sequence version
    (all-gathered once, in sequence order, without gradient) and the
    shard's version counter then (an in-place change makes it stale)."""

    def __init__(self, sharding: SequenceSharding, group: comm.Group,
                 tensors: Sequence = ()):
        self.sharding, self.group = sharding, group
        self.entries: dict[int, tuple[torch.Tensor, int, torch.Tensor, int]] = {}
        self.add(tensors)

    def add(self, tensors: Sequence) -> "TokenTensors":
        for item in tensors:
            t, dim = item if isinstance(item, (tuple, list)) else (item, -1)
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"token_tensors: expected tensors or (tensor, seq_dim) pairs, "
                                f"got {type(t).__name__}")
            if id(t) in self.entries:
                continue
            if not -t.dim() <= dim < t.dim() or t.shape[dim] != self.sharding.local_len:
                raise ValueError(
                    f"token_tensors: a tensor of shape {tuple(t.shape)} has no sequence "
                    f"dimension {dim} of this rank's shard length {self.sharding.local_len} "
                    f"(shard it with the same SequenceSharding as q, k, v)")
            dim %= t.dim()
            with torch.no_grad():
                whole = self.sharding.unshard(comm.all_gather(t.detach(), dim, self.group), dim)
            self.entries[id(t)] = (t, dim, whole, t._version)
        return self

    def merged(self, tensors: Sequence) -> "TokenTensors":
        """These and ``tensors`` (gathering only the new ones)."""
        if all(id(t[0] if isinstance(t, (tuple, list)) else t) in self.entries for t in tensors):
            return self
        out = TokenTensors(self.sharding, self.group)
        out.entries = dict(self.entries)
        return out.add(tensors)

    def stale(self) -> list[torch.Tensor]:
        """The shards modified in place since they were gathered."""
        return [e[0] for e in self.entries.values() if e[0]._version != e[3]]

    def substitute(self, fn: Optional[Callable]) -> Optional[Callable]:
        """``fn`` reading the whole-sequence tensors in place of the shards."""
        if fn is None or not self.entries:
            return fn
        return frontend.replace_tensors(fn, {k: e[2] for k, e in self.entries.items()})

    def shard_of(self, whole: torch.Tensor):
        """(shard, dim) of a whole-sequence tensor made here, or None."""
        for t, dim, w, _ in self.entries.values():
            if w is whole:
                return t, dim
        return None


class _Rotation:
    """One rotation's tables, captured mask and block masks on this rank."""

    def __init__(self, q_table, kv_tables, mask: Optional[frontend.CapturedMod], block_masks):
        self.q_table = q_table
        self.kv_tables = kv_tables  # per source shard (ring) or one (all-gather)
        self.mask = mask  # the captured cp mask (None: no mask at all)
        self.block_masks = block_masks  # per kv table (None without mask)

    def empty(self, j: int) -> bool:
        """Whether the mask keeps nothing of kv table ``j``'s keys for this rank's rows."""
        bm = self.block_masks[j]
        if bm is None:
            return False
        visited = int(bm.kv_num_blocks.sum())
        if bm.full_kv_num_blocks is not None:
            visited += int(bm.full_kv_num_blocks.sum())
        return visited == 0


class CPBlockMask:
    """This rank's view of a context-parallel mask: the sharding, the
    process group, the per-token tensors (gathered), and per rotation the
    block masks over this rank's rows (built on first use)."""

    def __init__(self, mask_mod: Optional[Callable], B: Optional[int], H: Optional[int],
                 sharding: SequenceSharding, group: comm.Group, BLOCK_SIZE, tokens: TokenTensors):
        self.mask_mod, self.B, self.H = mask_mod, B, H
        self.sharding, self.group, self.tokens = sharding, group, tokens
        self.BLOCK_SIZE = _block_size(BLOCK_SIZE)
        self._rotations: dict[str, _Rotation] = {}

    def __repr__(self) -> str:
        name = _name(self.mask_mod) if self.mask_mod is not None else None
        return (f"CPBlockMask(mask_mod={name}, {self.sharding}, rank={self.group.rank}, "
                f"BLOCK_SIZE={self.BLOCK_SIZE})")

    @property
    def needs_mask(self) -> bool:
        return self.mask_mod is not None or self.sharding.padded

    def rotation(self, rotate: str, device) -> _Rotation:
        if rotate not in ROTATIONS:
            raise ValueError(f"rotate must be one of {ROTATIONS}, got {rotate!r}")
        key = (rotate, str(device))
        if key not in self._rotations:
            self._rotations[key] = self._build(rotate, torch.device(device))
        return self._rotations[key]

    def _build(self, rotate: str, device) -> _Rotation:
        sh, rank = self.sharding, self.group.rank
        q_table = sh.positions(rank, device)
        if rotate == "allgather":
            kv_tables = [sh.all_positions(device)]
        else:
            kv_tables = [sh.positions(j, device) for j in range(sh.world_size)]
        if not self.needs_mask:
            return _Rotation(q_table, kv_tables, None, [None] * len(kv_tables))
        fn = global_index_mod(self.tokens.substitute(self.mask_mod), "mask", sh.seq_len,
                              q_table, kv_tables[0])
        captured = frontend.capture_mask_mod(fn)
        masks = []
        for table in kv_tables:
            step = with_kv_table(captured, kv_tables[0], table)
            masks.append(create_block_mask(step, self.B, self.H, sh.local_len, table.numel(),
                                           device=device, BLOCK_SIZE=self.BLOCK_SIZE))
        return _Rotation(q_table, kv_tables, captured, masks)


def with_kv_table(captured: frontend.CapturedMod, old: torch.Tensor, new: torch.Tensor):
    """``captured`` reading the kv table ``new`` where it read ``old``."""
    if new is old:
        return captured
    return replace(captured, captures=tuple(new if t is old else t for t in captured.captures))


def create_cp_block_mask(mask_mod: Optional[Callable], B: Optional[int], H: Optional[int],
                         sharding: SequenceSharding, *, group=None,
                         BLOCK_SIZE=_DEFAULT_SPARSE_BLOCK_SIZE,
                         token_tensors: Sequence = ()) -> CPBlockMask:
    """This rank's block mask for :func:`context_parallel_flex_attention`
    (torch's ``_create_cp_block_mask``, for any sequence length).

    ``mask_mod(b, h, q_idx, kv_idx)`` is written for the whole sequence
    (global indices; None: no mask); ``B`` / ``H`` as in
    :func:`~flexattn_mlir.create_block_mask`; ``sharding`` the layout q, k, v
    were sharded with; ``group`` the context-parallel group (a ProcessGroup,
    a 1-D DeviceMesh, or None for the default group); ``token_tensors`` the
    per-token tensors the mods read, each given as this rank's shard (a
    tensor whose last dim is the sequence, or a ``(tensor, seq_dim)`` pair).
    Collective (the per-token tensors are all-gathered): every rank of the
    group calls it. Reuse it across layers; the block masks are made per
    rotation on first use."""
    if not isinstance(sharding, SequenceSharding):
        raise TypeError(f"sharding must be a SequenceSharding, got {type(sharding).__name__}")
    g = group_for(group, sharding)
    tokens = TokenTensors(sharding, g, token_tensors)
    return CPBlockMask(mask_mod, B, H, sharding, g, BLOCK_SIZE, tokens)
