"""Shared pytest setup. `flexattn_mlir` (and so `mlir`) is imported before
anything can import `torch_mlir`: the other order silently breaks the JIT
(FRONTEND_NOTES.md section 6)."""

import flexattn_mlir  # noqa: F401  (first)

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
