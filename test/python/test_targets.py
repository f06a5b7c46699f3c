"""The target table and the ptxas the GPU compile depends on: lookup order,
the clear error without one, and the cache key that names it."""

from __future__ import annotations

import pytest
import torch

import flexattn_mlir as fm
from flexattn_mlir import cache, ptxas, targets, zoo


def test_target_table_drives_options_and_checks():
    assert targets.target("sm_90a").chip == "sm_90a"
    with pytest.raises(ValueError, match=r"unknown target 'sm_42'; expected one of \('cpu', 'sm_90a'\)"):
        targets.target("sm_42")
    with pytest.raises(ValueError, match=r"CompileOptions.target must be one of \('cpu', 'sm_90a'\)"):
        fm.CompileOptions(target="sm_42")
    assert fm.CompileOptions(target="sm_90a").tile_q == targets.TARGETS["sm_90a"].q_block
    assert targets.for_device(torch.device("cpu")).name == "cpu"
    with pytest.raises(ValueError, match="query is on meta"):
        targets.for_device(torch.device("meta"))


def test_ptxas_lookup_order(monkeypatch, tmp_path):
    found = ptxas.find()
    assert found.version and found.path
    fake = tmp_path / "ptxas"
    fake.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 99.1, V99.1.7'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("FLEXATTN_PTXAS", str(fake))
    assert ptxas.find() == ptxas.Ptxas(str(fake), "99.1.7")
    monkeypatch.setenv("FLEXATTN_PTXAS", str(tmp_path / "missing"))
    with pytest.raises(ptxas.PtxasNotFound, match="FLEXATTN_PTXAS=.*is not an executable ptxas"):
        ptxas.find()


def test_gpu_compile_without_ptxas_is_an_error(monkeypatch, tmp_path):
    monkeypatch.delenv("FLEXATTN_PTXAS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(ptxas, "_wheel_candidates", lambda: [])
    spec = zoo.spec("full", 1, 1, 128, 64)
    with pytest.raises(fm.CompilationError, match="no ptxas found"):
        fm.compile(spec, fm.CompileOptions(target="sm_90a"), keep_ir=False)


def test_kernel_key_names_ptxas(monkeypatch):
    spec = zoo.spec("full", 1, 1, 128, 64)
    gpu = fm.CompileOptions(target="sm_90a")
    key = cache.kernel_key(spec.digest(), gpu)
    cpu_key = cache.kernel_key(spec.digest(), fm.CompileOptions())
    monkeypatch.setattr(ptxas, "find", lambda: ptxas.Ptxas("/other/ptxas", "13.0.88"))
    assert cache.kernel_key(spec.digest(), gpu) != key
    assert cache.kernel_key(spec.digest(), fm.CompileOptions()) == cpu_key  # CPU: no ptxas
