"""The frontend: takes Python ``score_mod`` / ``mask_mod`` functions and hands
on :class:`~flexattn_mlir.compiler.mods.ModIR` regions (scalar ``arith`` /
``math`` / ``memref.load`` ops) with the live tensors they read as explicit
captures. :mod:`.capture` walks a mod's function tree and lifts the tensors it
reads; :mod:`.convert` exports the lifted mod through torch-mlir and turns the
result into a region."""

from .capture import (CapturedMod, ModCaptureError, capture_labels, capture_mask_mod,
                      capture_score_mod, clear_memo, combine)

__all__ = ["CapturedMod", "ModCaptureError", "capture_labels", "capture_mask_mod",
           "capture_score_mod", "clear_memo", "combine"]
