"""examples/serve_llama.py: a transformers Llama served with our attention
over the paged KV cache; logits match the model without a cache, and no
step after warm-up compiles anything."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("transformers")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "serve_llama.py"


def test_serve_llama():
    spec = importlib.util.spec_from_file_location("serve_llama", EXAMPLE)
    serve_llama = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve_llama)
    worst, compiled_after_warmup = serve_llama.serve((5, 11, 3), new_tokens=4, verbose=False)
    assert worst < 1e-4
    assert compiled_after_warmup == 0
