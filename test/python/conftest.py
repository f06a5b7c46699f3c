"""Shared pytest setup. `flexattn_mlir` (and so `mlir`) is imported before
anything can import `torch_mlir`: the other order silently breaks the JIT
(docs/frontend.md §6)."""

import os
import tempfile

# A fresh compile cache per test session (tests count compilations).
os.environ.setdefault("FLEXATTN_CACHE_DIR", tempfile.mkdtemp(prefix="flexattn-test-cache-"))

import flexattn_mlir  # noqa: E402,F401  (first)

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
