"""flexattn-mlir: FlexAttention as an MLIR compiler pipeline.

Import order matters: ``mlir`` (through ``_native``) is imported before any
``torch_mlir`` import (docs/frontend.md §6).
"""

from . import _native  # noqa: F401  (first: see above)
from .api import attention, compile_flex_attention, flex_attention
from .execution.attention import attention_compile_count, attention_spec
from .execution.autograd import NotDifferentiableError
from .masks.block_mask import BlockMask, create_block_mask
from .frontend import CapturedMod, ModCaptureError, capture_mask_mod, capture_score_mod
from .masks import and_masks, noop_mask, or_masks
from .compiler.driver import CompilationError, Compiled, compile
from .compiler.mods import ModIR
from .compiler.options import CompileOptions
from .masks.paged_attention import PagedAttention
from .compiler.spec import AttentionSpec, BufferType

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
    "PagedAttention",
    "AttentionSpec",
    "BufferType",
    "ModIR",
]
