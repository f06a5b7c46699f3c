"""What one compiled attention kernel is specialised on, and its MLIR.

An :class:`AttentionSpec` holds shapes, dtypes, scale, the block-mask layout,
the captured buffers' types and the mods' IR. It is hashable and is the
source of the cache key; :meth:`AttentionSpec.to_mlir` prints the
``flexattn.attention`` module the driver starts from.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field, replace
from typing import Optional

from .mods import ModIR

__all__ = ["BufferType", "AttentionSpec", "TORCH_TO_MLIR", "ENTRY"]

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


def _f32_literal(x: float) -> str:
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
    def has_block_mask(self) -> bool:
        return self.kv_num_blocks is not None

    def arguments(self) -> list[tuple[str, BufferType]]:
        """The kernel's arguments, in order: q, k, v, out, [lse],
        [kv_num_blocks, kv_indices], [full_kv_num_blocks, full_kv_indices],
        captures..., [index_report]"""
        args = [("q", self.q), ("k", self.k), ("v", self.v), ("out", self.out)]
        if self.return_lse:
            args.append(("lse", self.lse))
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
        sig = ", ".join(f"%{n}: {t.memref}" for n, t in args)
        typ = {n: t.memref for n, t in args}
        lines = [
            f"flexattn.attention ins(%q, %k, %v : {typ['q']}, {typ['k']}, {typ['v']})",
            f"    outs(%out : {typ['out']})",
        ]
        if self.return_lse:
            lines.append(f"    lse(%lse : {typ['lse']})")
        if self.has_block_mask:
            lines.append(
                f"    block_mask(%kv_num_blocks, %kv_indices : "
                f"{typ['kv_num_blocks']}, {typ['kv_indices']})"
            )
        if self.full_kv_num_blocks is not None:
            lines.append(
                f"    full_blocks(%full_kv_num_blocks, %full_kv_indices : "
                f"{typ['full_kv_num_blocks']}, {typ['full_kv_indices']})"
            )
        caps = [n for n, _ in args if n.startswith("capture") or n == "index_report"]
        if caps:
            lines.append(f"    captures({', '.join('%' + n for n in caps)} : "
                         f"{', '.join(typ[n] for n in caps)})")
        attrs = [f"scale = {_f32_literal(self.scale)}"]
        if self.block_size is not None:
            attrs.append(f"block_size = array<i64: {self.block_size[0]}, {self.block_size[1]}>")
        lines.append(f"    attributes {{{', '.join(attrs)}}}")
        for region, mod in (("score_mod", self.score_mod), ("mask_mod", self.mask_mod)):
            if mod is not None:
                body = "\n".join("      " + ln for ln in mod.text.splitlines())
                lines.append(f"    {region} {{\n{body}\n    }}")
        op = "\n".join("    " + ln if i else ln for i, ln in enumerate(lines))
        return (
            f"func.func @{ENTRY}({sig}) attributes {{llvm.emit_c_interface}} {{\n"
            f"  {op}\n"
            f"  return\n"
            f"}}\n"
        )
