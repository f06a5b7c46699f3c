"""The example zoo: takes a variant name and shape and hands on the Python
score_mod / mask_mod a researcher would write for torch's flex_attention
(ALiBi, sliding window, documents, T5 bias, ...), or their compiled spec.
The CLI, the AOT command, the demo and the benchmarks use it; it imports
nothing of the compiler at module level (``bench/gpu_suite.py`` loads it on a
machine without MLIR)."""
