"""Compile options: one frozen dataclass, every field in the cache key."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from typing import Optional

from . import targets

__all__ = ["CompileOptions"]

_TORCH_ALIASES = {"BLOCK_M": "tile_q", "BLOCK_N": "tile_kv", "num_stages": "stages"}
# torch's flex_attention kernel_options that steer its own backends.
_TORCH_IGNORED = frozenset({
    "num_warps", "BACKEND", "PRESCALE_QK", "ROWS_GUARANTEED_SAFE", "BLOCKS_ARE_CONTIGUOUS",
    "WRITE_DQ", "FORCE_USE_FLEX_ATTENTION", "USE_TMA", "OUTPUT_LOGSUMEXP", "OUTPUT_MAX",
    "fwd_BLOCK_M", "fwd_BLOCK_N", "fwd_num_warps", "fwd_num_stages",
    "BLOCK_M1", "BLOCK_N1", "BLOCK_M2", "BLOCK_N2", "bwd_BLOCK_M1",
    "bwd_BLOCK_N1", "bwd_BLOCK_M2", "bwd_BLOCK_N2", "bwd_num_warps", "bwd_num_stages",
    "waves_per_eu", "kpack", "matrix_instr_nonkdim",
})
# Options a call's plan sets, never a caller (a kernel with them alone is not
# the attention).
_PLANNED = frozenset({"tiles"})


@dataclass(frozen=True)
class CompileOptions:
    """How to compile an :class:`~flexattn_mlir.compiler.spec.AttentionSpec`.

    target: a name in :data:`flexattn_mlir.compiler.targets.TARGETS`: ``"cpu"``
      (ExecutionEngine), ``"sm_90a"`` (Hopper) or ``"sm_80"`` (Ampere, Ada).
    tile_q, tile_kv: the Q and KV tile sizes of ``flexattn-tile`` (a block
      mask fixes tile_kv to its KV block size, except on sm_80 where a
      tile_kv that divides the block walks it as several KV tiles:
      ``Target.block_tiles``); 0 takes the target's default (64 x 64 on the
      CPU; on a GPU the target's Q block, and tile_kv stays 0: the target's
      KV tile for the head dim, ``Target.kv_tile``, picked at compile time:
      128 on sm_90a, 64 at D = 64 and 128 at D = 128 on sm_80). sm_90a's
      own kernel also takes 192-row Q tiles at D = Dv = 64
      (``Target.wide_q_tile``: three consumer warpgroups); a block mask's
      128-row blocks then reach it as the union of each tile's blocks.
    opt_level: LLVM optimisation level of the final code generation.
    stages: shared-memory slots of the GPU kernel's K/V ring.
    pipeline, pingpong: the GPU kernel's FlashAttention-3 schedules (each
      tile's Q.Kᵀ issued with the previous tile's P.V; the two consumer
      warpgroups alternating their GEMMs); sm_90a only (sm_80 has no
      schedule stage).
    warp_rows, q_in_registers: the sm_80 kernel's tiling (Q rows per warp:
      16 or 32; Q read into registers once per tile, or from shared memory
      at every step); 0 / None take ``Target.tiling`` for the kernel's head
      dim and KV tile. sm_80 only.
    persistent: launch at most this many CTAs, each looping over Q tiles
      (one per SM: :func:`flexattn_mlir.compiler.targets.sm_count`); 0 launches one
      CTA per tile.
    dynamic: one kernel for every batch size, sequence length (Q and KV),
      block-mask shape and scale: they are run-time values of the kernel and
      not in its key (heads, head dims, dtypes, block size, the mods and the
      shapes of the tensors they capture are). ``False`` specialises the
      kernel on the shapes and the scale (one compilation per shape). The
      default (None) is False: on the CPU both vectorise their full tiles,
      and the static kernel is a few percent faster (docs/inference.md).
      On a GPU target the dynamic kernel is the mma.sync kernel (on sm_90a
      too, at every head dim: the wgmma kernel's TMA boxes and tile counts
      are static), one CTA per Q tile (no ``persistent``), the prefill
      kernel at every M (the split-KV decode kernel stays static: its
      split count follows the shape).
    decode: the decode path for a few query rows (docs/inference.md): each
      Q tile's KV blocks split into ranges run as separate tiles and merged
      by their lse (``flexattn-split-kv``; the number of ranges is chosen per
      call from the work and the threads; on a GPU per shape, ``splits``).
      None, the default, lets each call choose: on for M <= 64
      (``flexattn_mlir.execution.decode``).
    deterministic: gradients of captured tensors (learnable biases) that
      are bitwise the same from run to run. The GPU backward kernel then
      adds them per thread into its own slot of a scratch buffer (a
      trailing dim of partial sums) instead of with f32 atomics, and one
      torch reduction sums the slots in a fixed order; dq, dk and dv are
      deterministic either way (each has one writer; ``backward_atomic_dq``
      gives dq many, and is off in this mode), and so is the CPU
      (its capture gradients accumulate in a fixed order), where the option
      changes nothing.
    backward_wgmma: sm_90a: the tensor-core backward's GEMMs as warpgroup
      MMAs (wgmma; the default, 1.1-1.3x faster on the H200) or, with False,
      mma.sync; the rest of that kernel is the same (the rule:
      ``flexattn_mlir.compiler.backends.gpu.backward_wgmma``). No effect on
      other targets or on the CUDA-core backward.
    backward_overlap: with wgmma, the element math of each 64-row chunk of
      the tensor-core backward runs in four parts, each part's dV/dK (dQ)
      MMAs during the next part's math and the first part's P during dP's
      MMA, the two warpgroups' MMAs in turns
      (``flexattn-lower-backward-mma{overlap}``, docs/training.md); False
      keeps a chunk's MMAs and math in turn. Same results either way.
    backward_atomic_dq: sm_90a, without capture gradients and not
      ``deterministic``: dq is summed in an f32 buffer into which each
      dk/dv tile adds its part (a bulk reduction per 64 queries,
      ``flexattn-atomic-dq``), so the backward skips the dq tiles' second
      Q.Kᵀ and dO.Vᵀ (2.5x the forward's GEMM work instead of 3.5x); dq's
      summation order then varies between runs. Off by default: on the H200
      it is still slower than the dq tiles (0.82-0.94x; the L2 reductions of
      f32 dq hold it, docs/training.md).
    pack_heads: the decode path's GQA packing (``flexattn-tile{pack-heads}``):
      the query heads of a K/V head share tiles, so K/V are read once per
      group. None, the default, packs whenever decoding with Hq > Hkv and the
      group's block-mask rows agree (no block mask, or one of head dim 1 and
      one query block); True asks for it where it is exact (an error
      otherwise), False never packs.
    fp32_precision: float32 q/k/v on a GPU (tf32 mma.sync): ``"ieee"``
      (default) splits each operand into two tf32 parts and takes three
      products (3xTF32: about float32's accuracy, like torch's default
      IEEE float32 matmuls); ``"tf32"`` one tf32 product (about 1e-3
      relative, 3x fewer MMAs). torch's ``allow_tf32`` flag is not read:
      ask for tf32 here. No effect on the CPU or on 16-bit inputs.
    exp2_poly: sm_90a: k of every 16 elements of P whose exp2 the wgmma
      forward kernel computes on the FMA pipe with a polynomial instead of
      the special-function unit (FlashAttention-4's exp2 emulation;
      relative error 7.5e-5, below 16-bit P's rounding), 0..16; None, the
      default, takes the target's choice for the head dim
      (``Target.exp2_poly``). The rule:
      ``flexattn_mlir.compiler.backends.gpu.exp2_poly``; no effect on
      other targets, on float32 inputs and on the mma.sync kernels
      (decode, dynamic shapes, other head dims).
    prefetch_loads: the mma.sync kernel's KV loop loads the values every
      thread of the CTA reads alike that a step needs after its wait
      (page-table entries, and the block indices they take) iterations
      ahead, loop-carried, instead of in the step that uses them
      (``flexattn-lower-to-ampere`` on launches marked
      ``flexattn.prefetch_loads``: passes/PrefetchLoads.h). None: on for
      the GPU decode kernel, off for the others; no effect on sm_90a's
      wgmma kernel and the CPU.
    hoist_loads: the mma.sync kernel's loads before its KV loops (the
      block mask's counts, the first block indices and page-table entries)
      are issued while the Q tile is copied, before its wait, instead of
      after it (launches marked ``flexattn.hoist_loads``:
      passes/PrefetchLoads.h). None: as ``prefetch_loads``.
    splits: a GPU kernel's KV ranges per tile, static (the grid is
      B x H x splits x Q tiles; each range writes f32 partial rows and their
      lse into scratch arguments, which the caller merges:
      flexattn_runtime.splitkv). The decode kernel's, chosen per shape from
      the tiles and the device's SMs
      (``flexattn_mlir.execution.decode.gpu_splits``), and the tail kernel
      of a tail split (``flexattn_mlir.execution.tail_split``); 0 elsewhere.
    tiles: launch only the first ``tiles`` Q tiles of the grid's order
      (``flexattn-map-to-grid{tiles}``; 0: all); static GPU kernels without
      splits. A tail split's main kernel leaves the last, nearly empty
      wave's tiles to its tail kernel.
    """

    target: str = "cpu"
    tile_q: int = 0
    tile_kv: int = 0
    opt_level: int = 2
    stages: int = 2
    pipeline: bool = True
    pingpong: bool = True
    persistent: int = 0
    dynamic: Optional[bool] = None
    decode: Optional[bool] = None
    pack_heads: Optional[bool] = None
    warp_rows: int = 0
    q_in_registers: Optional[bool] = None
    fp32_precision: str = "ieee"
    splits: int = 0
    deterministic: bool = False
    backward_wgmma: bool = True
    backward_overlap: bool = True
    backward_atomic_dq: bool = False
    exp2_poly: Optional[int] = None
    prefetch_loads: Optional[bool] = None
    hoist_loads: Optional[bool] = None
    tiles: int = 0

    def __post_init__(self):
        if self.target not in targets.TARGETS:
            raise ValueError(f"CompileOptions.target must be one of {tuple(targets.TARGETS)}, "
                             f"got {self.target!r}")
        t = targets.target(self.target)
        if self.dynamic is None:
            object.__setattr__(self, "dynamic", False)
        if not isinstance(self.dynamic, bool):
            raise ValueError(f"CompileOptions.dynamic must be a bool or None, got {self.dynamic!r}")
        if self.dynamic and t.is_gpu and (self.decode or self.persistent):
            raise ValueError(f"CompileOptions.dynamic: the {self.target} dynamic-shape kernel is "
                             f"the prefill kernel with one CTA per Q tile; decode=True and "
                             f"persistent > 0 are static only (got decode={self.decode!r}, "
                             f"persistent={self.persistent!r})")
        for name in ("decode", "pack_heads"):
            if getattr(self, name) not in (None, True, False):
                raise ValueError(f"CompileOptions.{name} must be a bool or None, "
                                 f"got {getattr(self, name)!r}")
        if self.pack_heads and self.decode is False:
            raise ValueError("CompileOptions.pack_heads=True is part of the decode path; "
                             "it needs decode True or None")
        gpu_decode = t.is_gpu and bool(self.decode)
        # The GPU decode kernel's Q tile holds the packed rows of a KV group.
        default = (t.decode_rows if gpu_decode else t.q_block) if t.is_gpu else 64
        for name in ("tile_q",) if t.is_gpu else ("tile_q", "tile_kv"):
            if getattr(self, name) == 0:
                object.__setattr__(self, name, default)
        wide = t.wide_q_tile if t.is_gpu and not gpu_decode else 0
        if t.is_gpu and self.tile_q not in (default, wide):
            raise ValueError(f"CompileOptions.tile_q must be {default}"
                             + (f" (or {wide} at head dim {t.wide_q_head_dim})" if wide else "")
                             + f" for the {self.target} "
                             f"{'decode' if gpu_decode else 'prefill'} kernel, got {self.tile_q}")
        if not isinstance(self.splits, int) or self.splits < 0 or (
                self.splits and not (t.is_gpu and not self.dynamic)):
            raise ValueError(f"CompileOptions.splits must be 0, or > 0 for a static kernel on "
                             f"a GPU target, got {self.splits!r}")
        if (not isinstance(self.tiles, int) or isinstance(self.tiles, bool) or self.tiles < 0
                or (self.tiles and not (t.is_gpu and not self.dynamic and not self.splits))):
            raise ValueError(f"CompileOptions.tiles must be 0, or > 0 for a static kernel "
                             f"without splits on a GPU target, got {self.tiles!r}")
        if not isinstance(self.stages, int) or not 1 <= self.stages <= 8:
            raise ValueError(f"CompileOptions.stages must be in 1..8, got {self.stages!r}")
        if self.warp_rows not in (0, 16, 32):
            raise ValueError(f"CompileOptions.warp_rows must be 0 (the target's), 16 or 32, "
                             f"got {self.warp_rows!r}")
        if self.q_in_registers is not None and not isinstance(self.q_in_registers, bool):
            raise ValueError(f"CompileOptions.q_in_registers must be None or a bool, "
                             f"got {self.q_in_registers!r}")
        if self.fp32_precision not in ("ieee", "tf32"):
            raise ValueError(f"CompileOptions.fp32_precision must be 'ieee' (3xTF32) or "
                             f"'tf32', got {self.fp32_precision!r}")
        if not isinstance(self.deterministic, bool):
            raise ValueError(f"CompileOptions.deterministic must be a bool, "
                             f"got {self.deterministic!r}")
        if not isinstance(self.backward_wgmma, bool):
            raise ValueError(f"CompileOptions.backward_wgmma must be a bool, "
                             f"got {self.backward_wgmma!r}")
        if not isinstance(self.backward_overlap, bool):
            raise ValueError(f"CompileOptions.backward_overlap must be a bool, "
                             f"got {self.backward_overlap!r}")
        if not isinstance(self.backward_atomic_dq, bool):
            raise ValueError(f"CompileOptions.backward_atomic_dq must be a bool, "
                             f"got {self.backward_atomic_dq!r}")
        for name in ("prefetch_loads", "hoist_loads"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise ValueError(f"CompileOptions.{name} must be a bool or None, "
                                 f"got {getattr(self, name)!r}")
        if self.exp2_poly is not None and (
                isinstance(self.exp2_poly, bool) or not isinstance(self.exp2_poly, int)
                or not 0 <= self.exp2_poly <= 16):
            raise ValueError(f"CompileOptions.exp2_poly must be None (the target's) or an int "
                             f"in 0..16 (elements of P of every 16 whose exp2 runs on the FMA "
                             f"pipe), got {self.exp2_poly!r}")
        if not isinstance(self.persistent, int) or self.persistent < 0:
            raise ValueError(f"CompileOptions.persistent must be >= 0, got {self.persistent!r}")
        for name in ("tile_q", "tile_kv"):
            value = getattr(self, name)
            if t.is_gpu and name == "tile_kv" and value == 0:
                continue  # the target's KV tile for the head dim
            if t.is_gpu and name == "tile_q" and value and value == t.wide_q_tile:
                continue  # checked above
            if not isinstance(value, int) or value <= 0 or value & (value - 1):
                raise ValueError(f"CompileOptions.{name} must be a positive power of two, got {value!r}")
        if self.opt_level not in (0, 1, 2, 3):
            raise ValueError(f"CompileOptions.opt_level must be 0..3, got {self.opt_level!r}")

    @classmethod
    def from_kernel_options(cls, kernel_options: dict | None, **defaults) -> "CompileOptions":
        """Build from torch-style ``kernel_options``: our field names, torch's
        ``BLOCK_M``/``BLOCK_N``/``num_stages``; torch's other tuning keys
        (``num_warps``, ``BACKEND``, ...) do not apply and are ignored;
        anything else is an error."""
        values = dict(defaults)
        known = {f.name for f in fields(cls)} - _PLANNED
        for key, value in (kernel_options or {}).items():
            name = _TORCH_ALIASES.get(key, key)
            if key in _TORCH_IGNORED:
                continue
            if name in _PLANNED:
                raise ValueError(
                    f"kernel_options: {key!r} is the main kernel's part of a tail split, which "
                    f"flex_attention plans itself (flexattn_mlir.execution.tail_split); a "
                    f"kernel with it computes only some of the output")
            if name not in known:
                raise ValueError(
                    f"kernel_options: unknown option {key!r}; expected one of "
                    f"{sorted(known | set(_TORCH_ALIASES))} (or a torch tuning key)"
                )
            values[name] = value
        return cls(**values)

    def digest(self) -> str:
        return hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()
