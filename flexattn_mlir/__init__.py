"""flexattn-mlir: FlexAttention as an MLIR compiler pipeline.

Import order matters: ``mlir`` (through ``_native``) is imported before any
``torch_mlir`` import (FRONTEND_NOTES.md section 6).
"""

from . import _native  # noqa: F401  (first: see above)
from .api import compile_flex_attention, flex_attention
from .attention import attention, attention_compile_count, attention_spec
from .backward import NotDifferentiableError
from .block_mask import BlockMask, create_block_mask
from .frontend import CapturedMod, ModCaptureError, capture_mask_mod, capture_score_mod
from .masks import and_masks, noop_mask, or_masks
from .driver import CompilationError, Compiled, compile
from .mods import ModIR
from .options import CompileOptions
from .spec import AttentionSpec, BufferType

__version__ = "0.1.0"

__all__ = [
    "flex_attention",
    "compile_flex_attention",
    "create_block_mask",
    "BlockMask",
    "and_masks",
    "or_masks",
    "noop_mask",
    "capture_score_mod",
    "capture_mask_mod",
    "CapturedMod",
    "ModCaptureError",
    "NotDifferentiableError",
    "attention",
    "attention_spec",
    "attention_compile_count",
    "compile",
    "Compiled",
    "CompilationError",
    "CompileOptions",
    "AttentionSpec",
    "BufferType",
    "ModIR",
]
