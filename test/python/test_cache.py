"""The compile cache: in-process reuse across captured-tensor values, the
disk cache across processes (sequential and concurrent), turning it off,
and the GPU artifact-store key path (compiled for sm_90a on this machine,
no GPU needed).

Numerics are checked against torch's eager flex_attention (float32 inputs,
atol 2e-5, rtol 1e-5 as in test_api.py); outputs of the same kernel in
different processes are compared bit for bit (sha256 of the bytes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch
from torch.nn.attention import flex_attention as tfa

import flexattn_mlir as fm
from flexattn_mlir.examples import zoo
from flexattn_mlir.tools import aot
from flexattn_mlir.frontend import capture as frontend
from flexattn_mlir.execution import kernels

tfa._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True

F32 = dict(atol=2e-5, rtol=1e-5)


def torch_flex(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tfa.flex_attention(*args, **kwargs)


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


# ---------------------------------------------------------------------------
# In-process: new captured values, same kernel
# ---------------------------------------------------------------------------


def _alibi_factory(slopes):
    def alibi_cache_test(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    return alibi_cache_test


def test_new_captured_values_reuse_the_kernel(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEXATTN_CACHE_DIR", str(tmp_path))
    B, H, S, D = 2, 4, 192, 32
    q, k, v = (torch.randn(B, H, S, D) for _ in range(3))
    bm = fm.create_block_mask(causal, None, None, S, S)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tbm = tfa.create_block_mask(causal, None, None, S, S, device="cpu")
    slopes = torch.exp2(-8.0 * torch.arange(1, H + 1, dtype=torch.float32) / H)
    score_mod = _alibi_factory(slopes)

    out1 = fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm)
    torch.testing.assert_close(out1, torch_flex(q, k, v, score_mod=score_mod, block_mask=tbm), **F32)
    compiles, exports = fm.attention_compile_count(), frontend.export_count

    # 1. The captured tensor changed in place.
    slopes.mul_(4.0)
    out2 = fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm)
    assert (fm.attention_compile_count(), frontend.export_count) == (compiles, exports)
    ref2 = torch_flex(q, k, v, score_mod=score_mod, block_mask=tbm)
    torch.testing.assert_close(out2, ref2, **F32)
    assert not torch.allclose(out1, out2, atol=1e-3)  # the new values were used

    # 2. A new closure (same code) over a different tensor of the same shape.
    other = _alibi_factory(torch.linspace(-1.0, 1.0, H))
    out3 = fm.flex_attention(q, k, v, score_mod=other, block_mask=bm)
    assert (fm.attention_compile_count(), frontend.export_count) == (compiles, exports)
    torch.testing.assert_close(out3, torch_flex(q, k, v, score_mod=other, block_mask=tbm), **F32)

    # 3. A captured tensor in the mask_mod too (document ids): new ids, same kernel.
    def doc_mask(ids):
        def document_cache_test(b, h, q_idx, kv_idx):
            return (ids[q_idx] == ids[kv_idx]) & (q_idx >= kv_idx)

        return document_cache_test

    ids_a = torch.arange(S, dtype=torch.int32) // 50
    ids_b = torch.arange(S, dtype=torch.int32) // 30
    outs = []
    for ids in (ids_a, ids_b):
        mask = doc_mask(ids)
        out = fm.flex_attention(q, k, v, score_mod=score_mod,
                                block_mask=fm.create_block_mask(mask, None, None, S, S))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = tfa.create_block_mask(mask, None, None, S, S, device="cpu")
        torch.testing.assert_close(out, torch_flex(q, k, v, score_mod=score_mod, block_mask=t), **F32)
        outs.append(out)
        if ids is ids_a:
            compiles, exports = fm.attention_compile_count(), frontend.export_count
    assert (fm.attention_compile_count(), frontend.export_count) == (compiles, exports)
    assert not torch.allclose(outs[0], outs[1], atol=1e-3)


def test_shape_change_compiles_again(monkeypatch, tmp_path):
    """The counterpart: with static shapes (dynamic=False), a new shape is a
    new kernel (so the counter is live); test_dynamic_shapes has the default."""
    monkeypatch.setenv("FLEXATTN_CACHE_DIR", str(tmp_path))
    slopes = torch.rand(2)
    score_mod = _alibi_factory(slopes)
    static = {"dynamic": False}
    q = torch.randn(1, 2, 96, 16)
    fm.flex_attention(q, q, q, score_mod=score_mod, kernel_options=static)
    before = fm.attention_compile_count()
    q2 = torch.randn(1, 2, 112, 16)
    out = fm.flex_attention(q2, q2, q2, score_mod=score_mod, kernel_options=static)
    assert fm.attention_compile_count() == before + 1
    torch.testing.assert_close(out, torch_flex(q2, q2, q2, score_mod=score_mod), **F32)
    # Back to the first shape: this process's table, no compile.
    fm.flex_attention(q, q, q, score_mod=score_mod, kernel_options=static)
    assert fm.attention_compile_count() == before + 1


# ---------------------------------------------------------------------------
# Across processes: the disk cache
# ---------------------------------------------------------------------------

# The problem SCRIPT solves in a subprocess and _torch_reference with torch.
SETUP = textwrap.dedent("""
    S, H = 200, 4
    slopes = torch.linspace(0.05, 0.4, H)

    def alibi_disk(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx) + 0.0625

    def sliding_disk(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx <= 90)

    g = torch.Generator().manual_seed(1234)
    q, k, v = (torch.randn(2, H, S, 32, generator=g) for _ in range(3))
""")

# flexattn_mlir first (before anything can import torch_mlir).
SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys, time
    import flexattn_mlir as fm
    import torch
""") + SETUP + textwrap.dedent("""
    bm = fm.create_block_mask(sliding_disk, None, None, S, S)
    barrier = os.environ.get("BARRIER_DIR")
    if barrier:  # start the compiles together
        open(os.path.join(barrier, f"ready-{os.getpid()}"), "w").close()
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(barrier, "go")) and time.time() < deadline:
            time.sleep(0.005)
    out, lse = fm.flex_attention(q, k, v, score_mod=alibi_disk, block_mask=bm, return_lse=True)
    print(json.dumps({
        "compiles": fm.attention_compile_count(),
        "out_sha": hashlib.sha256(out.numpy().tobytes()).hexdigest(),
        "lse_sha": hashlib.sha256(lse.numpy().tobytes()).hexdigest(),
        "sum": float(out.double().sum()),
    }))
""")


def _env(cache_dir, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("FLEXATTN_DISABLE_CACHE", "FLEXATTN_ARTIFACTS", "BARRIER_DIR")}
    env["FLEXATTN_CACHE_DIR"] = str(cache_dir)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _script(tmp_path):
    path = tmp_path / "disk_script.py"
    path.write_text(SCRIPT)
    return path


def _run(script, cache_dir, cwd, **extra) -> dict:
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=cwd, env=_env(cache_dir, **extra), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cache_files(cache_dir):
    return sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("*") if p.is_file())


def _torch_reference():
    """What SCRIPT computes, by torch."""
    env = {"torch": torch}
    exec(SETUP, env)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tbm = tfa.create_block_mask(env["sliding_disk"], None, None, env["S"], env["S"],
                                    device="cpu")
    return torch_flex(env["q"], env["k"], env["v"], score_mod=env["alibi_disk"], block_mask=tbm)


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A cache dir filled by one process (and that process's result)."""
    base = tmp_path_factory.mktemp("warm")
    cache_dir = base / "cache"
    script = _script(base)
    first = _run(script, cache_dir, base)
    return base, cache_dir, script, first


def test_new_process_hits_the_disk_cache(warm_cache):
    base, cache_dir, script, first = warm_cache
    assert first["compiles"] == 1
    files = _cache_files(cache_dir)
    assert len([f for f in files if f.startswith("cpu/") and f.endswith(".o")]) == 1
    second = _run(script, cache_dir, base)
    assert second["compiles"] == 0
    assert (second["out_sha"], second["lse_sha"]) == (first["out_sha"], first["lse_sha"])
    assert _cache_files(cache_dir) == files  # a hit writes nothing
    ref = _torch_reference()
    assert abs(first["sum"] - float(ref.double().sum())) < 1e-3


def test_cpu_key_names_the_host_cpu_and_features(monkeypatch):
    """CPU kernels are machine code for this host: another CPU name or
    feature set (e.g. no avx512bf16) is another key, so a cache dir shared
    with another machine never hands it code it cannot run."""
    from flexattn_mlir import _native
    from flexattn_mlir.compiler import cache

    spec = zoo.spec("causal", 1, 2, 64, 16, "float32")
    opts = fm.CompileOptions()
    here = _native.cpu_host_target()
    cpu, features = here.split(" ")
    assert cpu and "+" in features
    key = cache.kernel_key(spec.digest(), opts)
    for other in (f"other-cpu {features}",
                  f"{cpu} {features.replace('+avx512bf16', '-avx512bf16')}"
                  if "+avx512bf16" in features else f"{cpu} {features},+avx512bf16"):
        monkeypatch.setattr(_native, "cpu_host_target", lambda: other)
        assert cache.kernel_key(spec.digest(), opts) != key
    monkeypatch.setattr(_native, "cpu_host_target", lambda: here)
    assert cache.kernel_key(spec.digest(), opts) == key


def test_disk_hit_links_without_code_generation(monkeypatch, tmp_path):
    """A disk-cache hit links the stored object: with the passes and the
    code generator made to fail, the cached kernel still loads and runs."""
    from flexattn_mlir import _native
    from flexattn_mlir.compiler import driver
    from flexattn_mlir.execution import kernels

    monkeypatch.setenv("FLEXATTN_CACHE_DIR", str(tmp_path))
    q, k, v = (torch.randn(1, 2, 64, 16) for _ in range(3))
    fm.flex_attention(q, k, v, score_mod=_alibi_factory(torch.rand(2)))
    assert list((tmp_path / "cpu").glob("*.o"))
    kernels.clear_table()

    def no_codegen(*args, **kwargs):
        raise AssertionError("a disk-cache hit generated code")

    monkeypatch.setattr(_native, "cpu_compile", no_codegen)
    monkeypatch.setattr(driver, "compile", no_codegen)
    slopes = torch.rand(2)
    out = fm.flex_attention(q, k, v, score_mod=_alibi_factory(slopes))
    torch.testing.assert_close(out, torch_flex(q, k, v, score_mod=_alibi_factory(slopes)), **F32)


def test_disable_cache_compiles_again(warm_cache):
    base, cache_dir, script, first = warm_cache
    files = _cache_files(cache_dir)
    off = _run(script, cache_dir, base, FLEXATTN_DISABLE_CACHE=1)
    assert off["compiles"] == 1
    assert off["out_sha"] == first["out_sha"]
    assert _cache_files(cache_dir) == files  # and writes nothing either


def test_concurrent_processes_share_one_entry(tmp_path):
    cache_dir = tmp_path / "cache"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = _script(tmp_path)
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=_env(cache_dir, BARRIER_DIR=barrier))
             for _ in range(3)]
    deadline = time.time() + 180
    while len(list(barrier.glob("ready-*"))) < 3 and time.time() < deadline:
        if any(p.poll() not in (None, 0) for p in procs):
            break
        time.sleep(0.01)
    (barrier / "go").touch()
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert len(list(barrier.glob("ready-*"))) == 3
    assert len({(r["out_sha"], r["lse_sha"]) for r in results}) == 1
    assert all(r["compiles"] in (0, 1) for r in results)
    print("concurrent compiles:", [r["compiles"] for r in results])
    files = _cache_files(cache_dir)
    assert [f for f in files if f.startswith("cpu/")] == [f for f in files if f.endswith(".o")]
    # One kernel entry, one entry per captured mod (ALiBi score, causal mask).
    assert len([f for f in files if f.startswith("cpu/")]) == 1, files
    assert all(f.startswith(("cpu/", "mods/")) for f in files), files
    assert not [p for p in cache_dir.rglob(".*")], "temporary files left behind"
    # The entry is whole: a fourth process loads it and gets the same bits.
    fourth = _run(script, cache_dir, tmp_path)
    assert fourth["compiles"] == 0
    assert fourth["out_sha"] == results[0]["out_sha"]


# ---------------------------------------------------------------------------
# GPU kernels: artifact stores and their keys (compiled here, never run)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    spec = zoo.spec("causal", 1, 2, 256, 64)
    options = fm.CompileOptions(target="sm_90a")
    done = aot.write_artifacts([("causal_test", spec, options)], out)
    return out, spec, options, done["causal_test"]


def test_artifact_key(gpu_artifact):
    out, spec, options, entry = gpu_artifact
    key = aot.artifact_key(spec, options)
    assert entry["key"] == key
    assert entry["metadata"]["key"] == key and entry["metadata"]["target"] == "sm_90a"
    index = json.loads((out / "index.json").read_text())
    assert index["kernels"] == {key: "causal_test.json"}
    meta = json.loads((out / "causal_test.json").read_text())
    assert meta["key"] == key
    assert (out / meta["binary"]).stat().st_size > 0
    # Equal specs and options give the key; other options another.
    assert aot.artifact_key(zoo.spec("causal", 1, 2, 256, 64), fm.CompileOptions(target="sm_90a")) == key
    assert aot.artifact_key(spec, fm.CompileOptions(target="sm_90a", stages=3)) != key


def test_load_kernel_finds_artifacts(gpu_artifact, monkeypatch, tmp_path):
    out, spec, options, entry = gpu_artifact
    key = aot.artifact_key(spec, options)
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    monkeypatch.setenv("FLEXATTN_CACHE_DIR", str(empty))
    monkeypatch.delenv("FLEXATTN_DISABLE_CACHE", raising=False)
    monkeypatch.delenv("FLEXATTN_ARTIFACTS", raising=False)
    assert kernels.load_kernel(key) is None
    monkeypatch.setenv("FLEXATTN_ARTIFACTS", os.pathsep.join([str(tmp_path / "missing"), str(out)]))
    assert kernels.artifact_stores()[:2] == [str(tmp_path / "missing"), str(out)]
    kernel = kernels.load_kernel(key)
    assert isinstance(kernel, kernels.StoredKernel)
    assert kernel.kernel.key == key
    assert kernel.kernel.metadata.entry == entry["metadata"]["entry"]
    assert kernels.load_kernel("0" * 64) is None
    monkeypatch.setenv("FLEXATTN_DISABLE_CACHE", "1")
    assert kernels.load_kernel(key) is None


def test_flex_attention_key_equals_artifact_key(gpu_artifact):
    """The spec flex_attention builds for bf16 [1, 2, 256, 64] q/k/v and a
    causal create_block_mask is the spec zoo.spec built, and has the same
    key: the spec's name (zoo.spec names it after the variant, flex_attention
    'flexattn') must not enter the key, or FLEXATTN_ARTIFACTS lookups miss."""
    from flexattn_mlir.api import _lower_call

    _, spec, options, entry = gpu_artifact
    q = torch.randn(1, 2, 256, 64, dtype=torch.bfloat16)
    _, mask_mod = zoo.make("causal", 2, 256)
    call, _ = _lower_call(q, q, q, None, fm.create_block_mask(mask_mod, None, None, 256, 256),
                          False, None)
    call.pop("options")
    ours = fm.attention_spec(q, q, q, options=options, **call)
    assert ours == spec
    assert fm.CompileOptions.from_kernel_options(None, target="sm_90a") == options
    assert aot.artifact_key(ours, options) == entry["key"]


def test_new_process_reuses_captured_mods(tmp_path):
    """The captured IR of a mod is cached on disk too: a second process
    capturing the same zoo mods does no torch-mlir export."""
    script = tmp_path / "capture.py"
    script.write_text(
        "import flexattn_mlir as fm\n"
        "from flexattn_mlir.examples import zoo\n"
        "from flexattn_mlir.frontend import capture as frontend\n"
        "score, mask = zoo.make('alibi_causal', 4, 256)\n"
        "a, b = frontend.capture_score_mod(score), frontend.capture_mask_mod(mask)\n"
        "print(frontend.export_count, a.key, b.key)\n")
    env = dict(os.environ, FLEXATTN_CACHE_DIR=str(tmp_path / "cache"))
    runs = [subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.split()
            for _ in range(2)]
    assert runs[0][0] == "2" and runs[1][0] == "0"
    assert runs[0][1:] == runs[1][1:]
    assert len(list((tmp_path / "cache" / "mods").glob("*.json"))) == 2
