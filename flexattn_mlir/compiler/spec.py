"""What one compiled attention kernel is specialised on, and its MLIR.

An :class:`AttentionSpec` holds shapes, dtypes, scale, the block-mask layout,
the captured buffers' types and the mods' IR. It is hashable and is the
source of the cache key; :meth:`AttentionSpec.build` builds the
``flexattn.attention`` module the driver starts from with the op builders.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from mlir import ir
from mlir.dialects import func

from .. import _native
from ..dialects import flexattn as fa
from .mods import ModIR, parse

__all__ = ["BufferType", "DYNAMIC", "dim_names", "AttentionSpec", "TORCH_TO_MLIR", "ENTRY", "entry_function",
           "f32_attr", "block_size_attr", "capture_values", "block_list_values"]

# The generated function's symbol (the GPU kernel is ENTRY + "_kernel"): fixed,
# so a kernel compiled for one spec serves every equal spec.
ENTRY = "flexattn"

# torch dtype name -> MLIR element type. bool travels as i8 (memref<i1>
# stores are not supported by the CPU lowering, docs/frontend.md §6).
TORCH_TO_MLIR = {
    "float32": "f32",
    "float16": "f16",
    "bfloat16": "bf16",
    "float64": "f64",
    "int8": "i8",
    "uint8": "i8",
    "bool": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
}


#: A dimension known only at run time (``?`` in the memref type).
DYNAMIC = -1

# The run-time dims of the attention tensors by argument: one symbol is one
# size (the GPU runtime checks that a call's tensors agree on it).
_DIM_NAMES = {"q": ("B", None, "M", None), "k": ("B", None, "N", None),
              "v": ("B", None, "N", None), "out": ("B", None, "M", None),
              "lse": ("B", None, "M"), "max_scores": ("B", None, "M")}


def dim_names(name: str, shape: tuple[int, ...]) -> list:
    """A kernel argument's shape with each :data:`DYNAMIC` dim named: ``B``,
    ``M``, ``N`` in the attention tensors (q ``[B, 8, M, 64]``, k ``[B, 2,
    N, 64]``), ``<name>.<axis>`` elsewhere (each block-mask dim is a size of
    its own); static dims as they are."""
    names = _DIM_NAMES.get(name, ())
    return [d if d != DYNAMIC else (names[i] if i < len(names) and names[i]
                                   else f"{name}.{i}")
            for i, d in enumerate(shape)]


@dataclass(frozen=True)
class BufferType:
    """A contiguous (identity-layout) buffer: shape (:data:`DYNAMIC` for a
    size known only at run time) and MLIR element type."""

    shape: tuple[int, ...]
    elem: str

    @property
    def memref(self) -> str:
        """The memref type as text (ModIR's capture types)."""
        return _memref_text(self.shape, self.elem)

    def memref_type(self) -> ir.MemRefType:
        """The memref type in the current context."""
        return ir.MemRefType.get(_dims(self.shape), ir.Type.parse(self.elem))

    def admits(self, shape) -> bool:
        """Whether a tensor of ``shape`` fits (a dynamic dim takes any size)."""
        if shape == self.shape:  # a static type (torch.Size equals the tuple)
            return True
        return len(shape) == len(self.shape) and all(
            d in (DYNAMIC, n) for d, n in zip(self.shape, shape))

    @staticmethod
    def of(tensor) -> "BufferType":
        elem = _elem_types.get(tensor.dtype)
        if elem is None:
            name = str(tensor.dtype).removeprefix("torch.")
            if name not in TORCH_TO_MLIR:
                raise TypeError(f"unsupported tensor dtype {tensor.dtype}")
            elem = _elem_types[tensor.dtype] = TORCH_TO_MLIR[name]
        return BufferType(tuple(tensor.shape), elem)  # torch.Size holds ints


# torch dtype -> MLIR element type, filled as dtypes are met (no torch import).
_elem_types: dict = {}


def _dims(shape: tuple[int, ...]) -> list[int]:
    """``shape`` for the bindings: :data:`DYNAMIC` becomes MLIR's dynamic size."""
    return [ir.ShapedType.get_dynamic_size() if d == DYNAMIC else d for d in shape]


@functools.lru_cache(maxsize=4096)
def _memref_text(shape: tuple[int, ...], elem: str) -> str:
    with ir.Context(), ir.Location.unknown():
        return str(ir.MemRefType.get(_dims(shape), ir.Type.parse(elem)))


@dataclass(frozen=True)
class AttentionSpec:
    q: BufferType
    k: BufferType
    v: BufferType
    scale: float
    return_lse: bool = False
    block_size: Optional[tuple[int, int]] = None
    kv_num_blocks: Optional[BufferType] = None
    kv_indices: Optional[BufferType] = None
    full_kv_num_blocks: Optional[BufferType] = None
    full_kv_indices: Optional[BufferType] = None
    captures: tuple[BufferType, ...] = ()
    score_mod: Optional[ModIR] = field(default=None, repr=False)  # in digest() by their own
    mask_mod: Optional[ModIR] = field(default=None, repr=False)
    # [sites, 2] i64 where the kernel reports out-of-bounds reads of captured
    # tensors (flexattn_mlir.masks.index_checks); the mods' last capture.
    index_report: Optional[BufferType] = None
    # [Hq] f32 attention-sink logits joining every row's softmax denominator.
    sinks: Optional[BufferType] = None
    # Whether the kernel writes each row's largest score (max_scores).
    return_max: bool = False
    name: str = field(default="flexattn", compare=False)  # labels dumps only

    @property
    def out(self) -> BufferType:
        b, hq, m, _ = self.q.shape
        return BufferType((b, hq, m, self.v.shape[3]), self.q.elem)

    @property
    def lse(self) -> BufferType:
        b, hq, m, _ = self.q.shape
        return BufferType((b, hq, m), "f32")

    @property
    def kind(self) -> str:
        """Which stage table of the backend compiles it."""
        return "forward"

    @property
    def max_scores(self) -> BufferType:
        return self.lse

    @property
    def has_block_mask(self) -> bool:
        return self.kv_num_blocks is not None

    def arguments(self) -> list[tuple[str, BufferType]]:
        """The kernel's arguments, in order: q, k, v, [sinks], out, [lse],
        [max_scores], [kv_num_blocks, kv_indices], [full_kv_num_blocks,
        full_kv_indices], captures..., [index_report]"""
        args = [("q", self.q), ("k", self.k), ("v", self.v)]
        if self.sinks is not None:
            args.append(("sinks", self.sinks))
        args.append(("out", self.out))
        if self.return_lse:
            args.append(("lse", self.lse))
        if self.return_max:
            args.append(("max_scores", self.max_scores))
        for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
            if getattr(self, name) is not None:
                args.append((name, getattr(self, name)))
        args += [(f"capture{i}", c) for i, c in enumerate(self.captures)]
        if self.index_report is not None:
            args.append(("index_report", self.index_report))
        return args

    def digest(self) -> str:
        """A stable hash of everything the generated code depends on (not the
        name, which only labels dumps: equal specs share compiled kernels and
        AOT artifacts whatever they are called)."""
        h = hashlib.sha256(repr(replace(self, name="")).encode())
        for mod in (self.score_mod, self.mask_mod):
            h.update((mod.digest() if mod else "-").encode())
        return h.hexdigest()

    def build(self) -> ir.Module:
        """The ``flexattn.attention`` module the driver starts from, built
        with the op builders in the current context (not verified)."""
        def op(a: dict[str, ir.Value]):
            return fa.AttentionOp(
                a["q"], a["k"], a["v"], a["out"], capture_values(a), f32_attr(self.scale),
                sinks=a.get("sinks"), lse=a.get("lse"),
                max_scores=a.get("max_scores"), block_size=block_size_attr(self.block_size),
                **block_list_values(a, _KV_LISTS))

        return entry_function(self.arguments(), op, (self.score_mod, self.mask_mod))

    def to_mlir(self) -> str:
        """:meth:`build`'s module as text."""
        with _native.new_context(), ir.Location.unknown():
            return str(self.build())


_KV_LISTS = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices")


def f32_attr(x: float) -> ir.FloatAttr:
    return ir.FloatAttr.get_f32(x)


def block_size_attr(block_size: Optional[tuple[int, int]]) -> Optional[ir.Attribute]:
    return None if block_size is None else ir.DenseI64ArrayAttr.get(list(block_size))


def capture_values(a: dict[str, ir.Value]) -> list[ir.Value]:
    """The ``captures`` operands: the captured buffers, then the index
    report (the mods' last capture) when the kernel has one."""
    return [v for n, v in a.items() if n.startswith("capture") and n[7:].isdigit()] + \
        ([a["index_report"]] if "index_report" in a else [])


def block_list_values(a: dict[str, ir.Value], names: tuple[str, ...]) -> dict[str, ir.Value]:
    """The block-list operands among the kernel's arguments, by name."""
    return {n: a[n] for n in names if n in a}


def entry_function(args: list[tuple[str, BufferType]], build_op: Callable,
                   mods: tuple[Optional[ModIR], ...]) -> ir.Module:
    """The module of the kernel function ``@ENTRY(args)`` holding the one op
    ``build_op(arguments by name)`` builds, its first regions given the
    mods' blocks (parsed from their text, :func:`.mods.parse`)."""
    module = ir.Module.create()
    with ir.InsertionPoint(module.body):
        fn = func.FuncOp(ENTRY, ([t.memref_type() for _, t in args], []))
        fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
    entry = fn.add_entry_block()
    with ir.InsertionPoint(entry):
        op = build_op(dict(zip([n for n, _ in args], entry.arguments)))
        func.ReturnOp([])
    for region, mod in zip(op.regions, mods):
        if mod is not None:
            _, block = parse(mod)
            block.append_to(region)
    return module
