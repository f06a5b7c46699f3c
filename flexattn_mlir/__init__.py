"""flexattn-mlir: FlexAttention as an MLIR compiler pipeline.

Import order matters: ``mlir`` (through ``_native``) is imported before any
``torch_mlir`` import (FRONTEND_NOTES.md section 6).
"""

from . import _native  # noqa: F401  (first: see above)
from .attention import attention
from .driver import CompilationError, Compiled, compile
from .mods import ModIR
from .options import CompileOptions
from .spec import AttentionSpec, BufferType

__version__ = "0.1.0"

__all__ = [
    "attention",
    "compile",
    "Compiled",
    "CompilationError",
    "CompileOptions",
    "AttentionSpec",
    "BufferType",
    "ModIR",
]
