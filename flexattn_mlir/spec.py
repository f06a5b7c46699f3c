"""What one compiled attention kernel is specialised on, and its MLIR.

An :class:`AttentionSpec` holds shapes, dtypes, scale, the block-mask layout,
the captured buffers' types and the mods' IR. It is hashable and is the
source of the cache key; :meth:`AttentionSpec.to_mlir` prints the
``flexattn.attention`` module the driver starts from.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass, field, replace
from typing import Optional

from .mods import ModIR

__all__ = ["BufferType", "AttentionSpec", "TORCH_TO_MLIR", "ENTRY", "entry_function",
           "mod_region_lines", "f32_literal", "operand_group", "block_mask_lines",
           "capture_lines"]

# The generated function's symbol (the GPU kernel is ENTRY + "_kernel"): fixed,
# so a kernel compiled for one spec serves every equal spec.
ENTRY = "flexattn"

# torch dtype name -> MLIR element type. bool travels as i8 (memref<i1>
# stores are not supported by the CPU lowering, FRONTEND_NOTES.md section 6).
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


@dataclass(frozen=True)
class BufferType:
    """A contiguous (identity-layout) buffer: shape and MLIR element type."""

    shape: tuple[int, ...]
    elem: str

    @property
    def memref(self) -> str:
        dims = "".join(f"{d}x" for d in self.shape)
        return f"memref<{dims}{self.elem}>"

    @staticmethod
    def of(tensor) -> "BufferType":
        name = str(tensor.dtype).removeprefix("torch.")
        if name not in TORCH_TO_MLIR:
            raise TypeError(f"unsupported tensor dtype {tensor.dtype}")
        return BufferType(tuple(int(d) for d in tensor.shape), TORCH_TO_MLIR[name])


def f32_literal(x: float) -> str:
    """The exact f32 bit pattern, so printing never rounds the scale."""
    (bits,) = struct.unpack("<I", struct.pack("<f", x))
    return f"0x{bits:08X} : f32"


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
    # tensors (flexattn_mlir.index_checks); the mods' last capture.
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

    def to_mlir(self) -> str:
        args = self.arguments()
        typ = {n: t.memref for n, t in args}
        lines = [operand_group("flexattn.attention ins", ["q", "k", "v"], typ)]
        if self.sinks is not None:
            lines.append(operand_group("    sinks", ["sinks"], typ))
        lines.append(operand_group("    outs", ["out"], typ))
        lines += [operand_group(f"    {n}", [n], typ) for n in ("lse", "max_scores") if n in typ]
        lines += block_mask_lines(typ)
        lines += capture_lines(args, typ)
        attrs = [f"scale = {f32_literal(self.scale)}"]
        if self.block_size is not None:
            attrs.append(f"block_size = array<i64: {self.block_size[0]}, {self.block_size[1]}>")
        lines.append(f"    attributes {{{', '.join(attrs)}}}")
        lines += mod_region_lines(self.score_mod, self.mask_mod)
        return entry_function(args, lines)


def operand_group(keyword: str, names: list[str], typ: dict[str, str]) -> str:
    """``keyword(%a, %b : type_a, type_b)`` for the named arguments."""
    values = ", ".join(f"%{n}" for n in names)
    return f"{keyword}({values} : {', '.join(typ[n] for n in names)})"


# The block-list operand groups of the attention ops, with the arguments
# they take (only those present among the kernel's arguments are printed).
_BLOCK_GROUPS = (("block_mask", ("kv_num_blocks", "kv_indices")),
                 ("full_blocks", ("full_kv_num_blocks", "full_kv_indices")),
                 ("q_block_mask", ("q_num_blocks", "q_indices")),
                 ("full_q_blocks", ("full_q_num_blocks", "full_q_indices")))


def capture_lines(args: list[tuple[str, BufferType]], typ: dict[str, str]) -> list[str]:
    """The ``captures(...)`` group: the captured buffers, then the index
    report (the mods' last capture) when the kernel has one."""
    caps = [n for n, _ in args if re.fullmatch(r"capture\d+|index_report", n)]
    return [operand_group("    captures", caps, typ)] if caps else []


def block_mask_lines(typ: dict[str, str]) -> list[str]:
    return [operand_group(f"    {kw}", list(names), typ)
            for kw, names in _BLOCK_GROUPS if names[0] in typ]


def mod_region_lines(score_mod: Optional[ModIR], mask_mod: Optional[ModIR]) -> list[str]:
    """The ``score_mod {...}`` / ``mask_mod {...}`` lines of an op's text."""
    lines = []
    for region, mod in (("score_mod", score_mod), ("mask_mod", mask_mod)):
        if mod is not None:
            body = "\n".join("      " + ln for ln in mod.text.splitlines())
            lines.append(f"    {region} {{\n{body}\n    }}")
    return lines


def entry_function(args: list[tuple[str, BufferType]], op_lines: list[str],
                   loc: Optional[str] = None) -> str:
    """The kernel function ``@ENTRY(args)`` holding one op (its text lines);
    ``loc`` names the op in diagnostics."""
    sig = ", ".join(f"%{n}: {t.memref}" for n, t in args)
    op = "\n".join("    " + ln if i else ln for i, ln in enumerate(op_lines))
    if loc is not None:
        op += f" loc({json.dumps(loc)})"
    return (
        f"func.func @{ENTRY}({sig}) attributes {{llvm.emit_c_interface}} {{\n"
        f"  {op}\n"
        f"  return\n"
        f"}}\n"
    )
