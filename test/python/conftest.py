"""Shared pytest setup. `flexattn_mlir` (and so `mlir`) is imported before
anything can import `torch_mlir`: the other order silently breaks the JIT
(docs/frontend.md §6)."""

import atexit
import os
import shutil
import tempfile

# A fresh compile cache per test session (tests count compilations), removed
# when the session's process exits (processes it spawns inherit it).
if "FLEXATTN_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="flexattn-test-cache-")
    os.environ["FLEXATTN_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

import flexattn_mlir  # noqa: E402,F401  (first)

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
