"""flexattn-mlir: FlexAttention as an MLIR compiler pipeline.

Import order matters: ``mlir`` (through ``_native``) is imported before any
``torch_mlir`` import (FRONTEND_NOTES.md section 6).
"""

from . import _native  # noqa: F401  (first: see above)
from .attention import attention, attention_compile_count, attention_spec
from .driver import CompilationError, Compiled, compile
from .mods import ModIR
from .options import CompileOptions
from .spec import AttentionSpec, BufferType

__version__ = "0.1.0"

__all__ = [
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
