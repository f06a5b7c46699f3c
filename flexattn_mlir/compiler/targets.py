"""Compile targets: one table of names, chips and hardware limits.

Everything the compiler and the API need to know about a target lives in
:data:`TARGETS`; no other file restates a chip name, an SM count or a
shared-memory limit. Where a CUDA device is present, :func:`sm_count` reads
the device (through :mod:`flexattn_runtime`) instead of the table's default.

    cpu      the ExecutionEngine (LLVM JIT on this machine)
    sm_90a   Hopper (H100/H200): TMA + wgmma, warp-specialised kernel
    sm_80    Ampere and Ada (A100, RTX 30xx/40xx, L4, L40): cp.async
             multistage rings, ldmatrix + mma.sync; also runs on later GPUs
             (as PTX the driver compiles for them)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Target", "Tiling", "TARGETS", "target", "gpu_targets", "for_device", "sm_count",
           "padded_head_dim"]

# Shared-memory tiles are whole 64-column panels (128 bytes of 16-bit
# elements, the swizzle period): a head dim that is a multiple of 8 but not
# of 64 is padded with zero columns there (flexattn.ring.copy fills them),
# and the table rows below are those of the padded dim. float32 tiles are
# padded to the same columns (two 32-column panels of 128 bytes).
PANEL_COLS = 64
# float32 q/k/v run on the mma.sync kernel with tf32 MMAs (3xTF32 by
# default: CompileOptions.fp32_precision), 16 Q rows per warp and Q read
# from shared memory (S, O and P are 32-bit: twice the registers of 16-bit
# P), 64-column KV tiles by default (shared memory is twice 16-bit's).
FP32_TILING_KV = 64
# Below this fraction of visited blocks Q tiles are short and
# ``flex_attention`` runs persistent CTAs, one per SM (H100: sliding window
# +11 %, document masks +7 %; dense and causal masks at D = 128 are faster
# with one CTA per tile). ``Target.persistent_density`` overrides it per
# head dim.
PERSISTENT_DENSITY = 0.25


def padded_head_dim(head_dim: int) -> int:
    """``head_dim`` rounded up to whole 64-column panels (the columns of the
    kernel's shared-memory tiles and fragments)."""
    return -(-head_dim // PANEL_COLS) * PANEL_COLS


def _head_dims(largest: int) -> tuple[int, ...]:
    """The multiples of 8 from 16 to ``largest``."""
    return tuple(range(16, largest + 1, 8))


@dataclass(frozen=True)
class Tiling:
    """How a GPU kernel splits its 128-row Q tile over warps, for one head
    dim and KV tile (``flexattn-multistage``'s options on sm_80).

    warp_rows: Q rows per warp: 16 (one m16 tile; 8 warps) or 32 (two m16
      tiles; 4 warps, each K/V fragment read from shared memory feeding
      two MMAs, as FlashAttention-2 does).
    q_in_registers: read the Q tile into registers once (else every
      S = Q.Kᵀ reads it from shared memory: fewer registers).
    """

    warp_rows: int = 16
    q_in_registers: bool = True

    @property
    def prefill_only(self) -> bool:
        """32 rows with Q read from shared memory (D = 128) fit the registers
        of the static prefill kernel at an unpadded head dim only: the decode
        kernel (one band of 16-row warps), the dynamic-shape kernel (its
        run-time sizes and strides in registers: 8-112 bytes spilled at
        D = 128) and the head dims padded to 128 (88-112 spilled 8-24 bytes)
        take ``Tiling()`` there, with ``q_block`` KV columns."""
        return self.warp_rows == 32 and not self.q_in_registers


@dataclass(frozen=True)
class Target:
    """A compile target.

    name: the ``CompileOptions.target`` string.
    kind: ``"cpu"`` or ``"cuda"``.
    chip, features: the NVVM target (``nvvm-attach-target``) and the PTX
      features the kernel needs (``+ptx83``: the tensor-map proxy fence).
    compute_capability: the architecture the code is built for (``sm_90a``
      code runs only on 9.0; ``sm_80`` cubins on 8.x, its PTX on any later
      device).
    devices: the compute capabilities :func:`for_device` gives this target
      (the table decides which target a device gets).
    sm_count: SMs of the reference part, used for persistent CTAs when no
      device can be asked (AOT on a machine without a GPU).
    max_shared_per_block: opt-in shared memory of one CTA, bytes.
    dtypes, head_dims, kv_blocks, q_block: what the target's kernels handle
      (q/k/v element types, head dims of q/k and of v, KV tile sizes, the Q
      tile rows).
    kv_tiles: the KV tile each (padded) head dim (the larger of D and Dv) gets when
      ``CompileOptions.tile_kv`` is left at 0 and no block mask fixes it, as
      ``(head dim, tile)`` pairs (``q_block`` for a head dim not listed).
    tilings: ``((padded head dim, KV tile), Tiling)`` pairs; a pair not
      listed gets ``Tiling()`` (16 rows per warp, Q in registers).
    own_head_dims, general: a target with a kernel of its own for some head
      dims (sm_90a: TMA + wgmma for D = Dv in ``own_head_dims``) runs every
      other head dim with the kernel of the target named ``general``
      (sm_80's mma.sync kernel, which pads any multiple of 8), compiled for
      its own chip and shared memory; see :meth:`kernel`.
    decode_rows: the GPU decode kernel's Q tile (the packed rows of a KV
      group; one band of 4 warps of 16 rows).
    persistent_density: ``(head dim, density)`` pairs: ``flex_attention``
      runs a block mask that visits fewer than this fraction of its blocks
      with persistent CTAs, one per SM (``PERSISTENT_DENSITY`` for a head
      dim not listed). Short Q tiles pay a CTA's prologue and epilogue
      once per few KV steps; a persistent CTA overlaps them with its next
      tile's loads.
    q_tiles: ``(head dim, rows)`` pairs: the Q tile of the target's own
      kernel for that head dim (D = Dv), which it takes besides
      ``q_block`` and ``flex_attention`` gives it where it is not told one
      (``kernel_options`` BLOCK_M / tile_q); ``q_block`` for a head dim not
      listed. sm_90a: 192 rows (three consumer warpgroups) at D = 64, its
      ``wide_q_tile``; a block mask of ``q_block``-row blocks is read as
      the union of the blocks a tile's rows fall in
      (flexattn_runtime.masks.retile_q).
    exp2_poly: ``(head dim, k)`` pairs: k of every 16 elements of P whose
      exp2 the target's own kernel computes on the FMA pipe where
      ``CompileOptions.exp2_poly`` is None (0 for a head dim not listed).
    decode_kv_tile: the KV tile of the decode kernel (on the general
      target: the one that runs it) where ``CompileOptions.tile_kv`` is 0;
      0: the head dim's ``kv_tiles`` entry. A one-row step is bound by
      K/V bandwidth: 64-column tiles halve a CTA's ring, so twice the CTAs
      (and KV ranges) are in flight (4-8 % more GB/s than 128 columns at
      D = 128 on an H200, docs/inference.md).
    block_tiles: a block mask's KV blocks are walked in the head dim's KV
      tile where it divides them (``flexattn-tile{block-tiles}``: torch's
      default 128-column blocks as two 64-column tiles on sm_80); False:
      the KV tile is the mask's block.
    tail_split: ``flex_attention`` runs a dense attention on the target's
      own kernel as a tail split where the grid's last wave is nearly empty
      (``flexattn_mlir.execution.tail_split``; measured on sm_90a).
    """

    name: str
    kind: str
    chip: str = ""
    features: str = ""
    compute_capability: tuple[int, int] | None = None
    devices: tuple[tuple[int, int], ...] = ()
    sm_count: int = 0
    max_shared_per_block: int = 0
    dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16")
    head_dims: tuple[int, ...] = ()
    kv_blocks: tuple[int, ...] = ()
    q_block: int = 0
    kv_tiles: tuple[tuple[int, int], ...] = ()
    tilings: tuple[tuple[tuple[int, int], Tiling], ...] = ()
    own_head_dims: tuple[int, ...] = ()
    general: str = ""
    block_tiles: bool = False
    decode_rows: int = 0
    decode_kv_tile: int = 0
    exp2_poly: tuple[tuple[int, int], ...] = ()
    q_tiles: tuple[tuple[int, int], ...] = ()
    persistent_density: tuple[tuple[int, float], ...] = ()
    tail_split: bool = False

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"

    def kernel(self, head_dim: int, value_dim: int, dtype: str = "bfloat16",
               decode: bool = False, dynamic: bool = False) -> "Target":
        """The target whose kernel (passes and table rows) runs q/k head dim
        ``head_dim`` and v head dim ``value_dim`` in ``dtype``: this one, or
        ``general`` for the head dims (and float32) its own kernel does not
        take, and for the decode kernel and the dynamic-shape kernel (the
        general mma.sync kernel at every head dim)."""
        own = (head_dim == value_dim and head_dim in self.own_head_dims
               and dtype != "float32" and not decode and not dynamic)
        if self.general and not own:
            return TARGETS[self.general]
        return self

    def kv_tile(self, head_dim: int, dtype: str = "bfloat16", dynamic: bool = False) -> int:
        """The default KV tile of ``head_dim`` (see ``kv_tiles``; float32:
        ``FP32_TILING_KV``; ``Tiling.prefill_only``: ``q_block``)."""
        if dtype == "float32":
            return FP32_TILING_KV
        tile = dict(self.kv_tiles).get(padded_head_dim(head_dim), self.q_block)
        if self._prefill_entry(head_dim, tile, decode=False, dynamic=dynamic):
            return self.q_block
        return tile

    def persistent_below(self, head_dim: int, value_dim: int, dtype: str) -> float:
        """The block density under which the kernel of ``head_dim``,
        ``value_dim`` and ``dtype`` (see :meth:`kernel`) runs persistent
        CTAs: that kernel's target's ``persistent_density`` entry."""
        kernel = self.kernel(head_dim, value_dim, dtype)
        return dict(kernel.persistent_density).get(head_dim, PERSISTENT_DENSITY)

    def q_tile(self, head_dim: int, value_dim: int, dtype: str = "bfloat16",
               dynamic: bool = False) -> int:
        """The Q tile ``flex_attention`` gives the prefill kernel of these
        head dims (see ``q_tiles``; ``q_block`` where another target's
        kernel runs them)."""
        if self.kernel(head_dim, value_dim, dtype, dynamic=dynamic) is not self:
            return self.q_block
        return dict(self.q_tiles).get(head_dim, self.q_block)

    @property
    def wide_q_tile(self) -> int:
        """The Q tile of ``q_tiles`` other than ``q_block`` (0: none)."""
        return max((rows for _, rows in self.q_tiles if rows != self.q_block), default=0)

    @property
    def wide_q_head_dim(self) -> int:
        """The head dim whose ``q_tiles`` entry is ``wide_q_tile``."""
        return next((d for d, rows in self.q_tiles if rows == self.wide_q_tile), 0)

    def takes_q_tile(self, rows: int, head_dim: int, value_dim: int, dtype: str = "bfloat16",
                     dynamic: bool = False) -> bool:
        """Whether the prefill kernel of these head dims takes ``rows``-row Q
        tiles: ``q_block``, or the own kernel's ``q_tiles`` entry."""
        if rows == self.q_block:
            return True
        return (head_dim == value_dim and dict(self.q_tiles).get(head_dim) == rows
                and self.kernel(head_dim, value_dim, dtype, dynamic=dynamic) is self)

    def fma_exp2_share(self, head_dim: int) -> int:
        """The default ``exp2_poly`` of ``head_dim`` (see ``exp2_poly``)."""
        return dict(self.exp2_poly).get(head_dim, 0)

    def tiling(self, head_dim: int, kv_tile: int, dtype: str = "bfloat16",
               decode: bool = False, dynamic: bool = False) -> Tiling:
        """How the kernel of ``head_dim`` and ``kv_tile`` splits its Q tile
        (``Tiling.prefill_only``: ``Tiling()`` for the decode and
        dynamic-shape kernels and padded head dims)."""
        if dtype == "float32":
            return Tiling(16, q_in_registers=False)
        if self._prefill_entry(head_dim, kv_tile, decode, dynamic):
            return Tiling()
        return dict(self.tilings).get((padded_head_dim(head_dim), kv_tile), Tiling())

    def _prefill_entry(self, head_dim: int, kv_tile: int, decode: bool, dynamic: bool) -> bool:
        """Whether the table's entry of ``head_dim`` and ``kv_tile`` is
        ``prefill_only`` and this kernel is not one it fits."""
        d = padded_head_dim(head_dim)
        entry = dict(self.tilings).get((d, kv_tile), Tiling())
        return entry.prefill_only and bool(decode or dynamic or d != head_dim)

    def ring_bytes(self, head_dim: int, value_dim: int, kv_tile: int, stages: int,
                   dtype: str = "bfloat16") -> int:
        """Dynamic shared memory of the mma.sync kernel: the Q tile, ``stages``
        K and V tiles (padded head dims; 2 bytes an element, 4 for float32)
        and 128 bytes of alignment slack (flexattn-lower-to-ampere)."""
        d, dv = padded_head_dim(head_dim), padded_head_dim(value_dim)
        size = 4 if dtype == "float32" else 2
        return size * (self.q_block * d + stages * kv_tile * (d + dv)) + 128


TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("cpu", "cpu"),
    # wgmma for D = Dv in (64, 128); the sm_80 kernel (padded, any multiple
    # of 8 up to 256: 232 KiB hold 256 with 64-column KV tiles) for the rest.
    # No exp2_poly: no share of P's exp2 on the FMA pipe is faster at D = 64
    # or 128 as a whole (docs/gpu-pipeline.md §6). D = 64 runs causal masks
    # (density 0.51) with persistent CTAs in snake order: a KV step is half
    # as long as at D = 128, so a tile's prologue and epilogue weigh twice
    # as much (H200, three processes: causal D = 64 1.00-1.03x one CTA per
    # tile, causal D = 128 0.93-1.01x; docs/gpu-pipeline.md §1). That is the
    # 128-row kernel's rule: D = 64 runs 192-row Q tiles (three consumer
    # warpgroups, one CTA per tile; H200: full 1.13-1.15x, causal
    # 1.05-1.10x cuDNN, docs/gpu-pipeline.md §3) where flex_attention picks.
    Target("sm_90a", "cuda", chip="sm_90a", features="+ptx83", compute_capability=(9, 0),
           devices=((9, 0),), sm_count=132, max_shared_per_block=232448,
           dtypes=("bfloat16", "float16", "float32"), head_dims=_head_dims(256),
           kv_blocks=(64, 128),
           q_block=128, own_head_dims=(64, 128), general="sm_80", decode_rows=64,
           q_tiles=((64, 192),),
           persistent_density=((64, 0.6),), tail_split=True),
    # The reference part is the A100 (108 SMs, 163 KiB per block); Ada and
    # sm_86 parts have 99 KiB (the runtime checks a launch against the device).
    # 32 Q rows per warp (FlashAttention-2's 4 warps per 128-row tile) with
    # 64-column KV tiles: D = 64 with Q in registers (242 registers, no
    # spills), D = 128 with Q read from shared memory at each S = Q.Kᵀ
    # (FlashAttention-2's 128 x 64 tiling, 96 KiB: it also fits Ada's and
    # sm_86's 99 KiB). There six masked zoo kernels spill 4-12 bytes at
    # S = 8192 (causal, prefix_lm, prefix_or_sliding 4; t5_bias 8; document,
    # causal_and_document 12: one to three L1-resident words), and the H200
    # ran every zoo variant 1.16-1.36x faster than with 16 rows x 128
    # columns (full / causal 1.07-1.09x FlashAttention-2;
    # bench/results/2026-12-02_h200_sm80d_d128_table_6a4b960.json). The
    # decode and dynamic-shape kernels and head dims padded to 128 keep
    # 16 x 128 (``Tiling.prefill_only``).
    # A 128-column tile keeps 16 rows (32 spill at D = 64 and 128).
    # Head dims above 128 (padded 192, 256) get 64-column KV tiles: Q + 2
    # stages of K and V at 128 columns would not fit a block's shared memory
    # (D = 256 needs 192 KiB even at 64 columns: more than an A100 has, so
    # sm_80 stops at 192; Hopper runs 256 with this kernel). At 256 the Q
    # fragment (64 registers) beside O (128) and S spills: Q is read from
    # shared memory by each S = Q.Kᵀ instead.
    Target("sm_80", "cuda", chip="sm_80", features="+ptx70", compute_capability=(8, 0),
           devices=((8, 0), (8, 6), (8, 7), (8, 9)), sm_count=108,
           max_shared_per_block=166912, dtypes=("bfloat16", "float16", "float32"),
           head_dims=_head_dims(192), kv_blocks=(64, 128), q_block=128,
           kv_tiles=((64, 64), (128, 64), (192, 64), (256, 64)),
           tilings=(((64, 64), Tiling(32)), ((128, 64), Tiling(32, q_in_registers=False)),
                    ((256, 64), Tiling(16, q_in_registers=False))),
           block_tiles=True, decode_rows=64, decode_kv_tile=64),
]}


def target(name: str) -> Target:
    """The table entry of ``name``; a clear error naming the choices otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; expected one of {tuple(TARGETS)}") from None


def gpu_targets() -> tuple[str, ...]:
    return tuple(n for n, t in TARGETS.items() if t.is_gpu)


def for_device(device) -> Target:
    """The target of a torch device: ``cpu``, or the GPU target that lists
    the CUDA device's compute capability among its ``devices``."""
    if device.type == "cpu":
        return TARGETS["cpu"]
    gpus = ", ".join(f"{t.name} (compute capability "
                     f"{' '.join(f'{a}.{b}' for a, b in t.devices)})"
                     for t in TARGETS.values() if t.is_gpu)
    if device.type != "cuda":
        raise ValueError(f"query is on {device}; flexattn_mlir runs on the CPU and on CUDA "
                         f"GPUs: {gpus}")
    import torch

    cc = tuple(torch.cuda.get_device_capability(device))
    for t in TARGETS.values():
        if t.is_gpu and cc in t.devices:
            return t
    raise ValueError(f"query is on a CUDA device of compute capability {cc[0]}.{cc[1]}; "
                     f"flexattn_mlir's GPU targets are {gpus}")


def sm_count(name: str, device=None) -> int:
    """SMs for persistent CTAs: read from ``device`` (a CUDA torch device)
    through flexattn_runtime when given, else the table's reference part."""
    t = target(name)
    if device is not None and getattr(device, "type", None) == "cuda":
        from flexattn_runtime import device_info

        return device_info(device.index if device.index is not None else _current_device()).sm_count
    return t.sm_count


def _current_device() -> int:
    import torch

    return torch.cuda.current_device()
