"""``flexattn_mlir.flex_attention`` (CPU) against torch's
``torch.nn.attention.flex_attention.flex_attention`` (its eager path).

Tolerances (``torch.testing.assert_close``; -inf == -inf counts as equal):

* float32 inputs: ``out`` and ``lse`` within atol 2e-5, rtol 1e-5 of torch's
  float32 result (observed differences are ~1e-6: both accumulate in float32,
  only the summation order differs).
* bfloat16 / float16 inputs: our 16-bit ``out`` (upcast) and float32 ``lse``
  within atol 1e-2, rtol 1e-2 of torch run in float32 on the upcast inputs
  (bf16 has 8 mantissa bits: a rounding step of 2^-8 ~ 4e-3 of the value).
* fully masked rows: exactly 0 output and exactly -inf lse.
* results that must come from one kernel (default scale vs the explicit
  1/sqrt(D); ignored torch kernel_options): bitwise equal.

Block masks: ours (``flexattn_mlir.create_block_mask``) for our call,
torch's ``create_block_mask(device="cpu")`` for torch's, and torch's
``BlockMask`` object passed to ours as well.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch
from torch.nn.attention import flex_attention as tfa

import flexattn_mlir as fm
from flexattn_mlir import CompileOptions
from flexattn_mlir.examples import zoo
from flexattn_mlir.compiler.spec import DYNAMIC

tfa._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

F32 = dict(atol=2e-5, rtol=1e-5)
LOW = dict(atol=1e-2, rtol=1e-2)


def torch_flex(*args, **kwargs):
    """torch's eager flex_attention, its warnings (eager is slow, ...) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tfa.flex_attention(*args, **kwargs)


def torch_block_mask(mask_mod, B, H, M, N, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tfa.create_block_mask(mask_mod, B, H, M, N, device="cpu", **kw)


def rand(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


# ---------------------------------------------------------------------------
# The example zoo
# ---------------------------------------------------------------------------

ZOO_B, ZOO_H, ZOO_S = 2, 4, 256


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_matches_torch(name):
    D = 64 if zoo.names().index(name) % 2 else 32
    score_mod, mask_mod = zoo.make(name, ZOO_H, ZOO_S)
    q, k, v = (rand(ZOO_B, ZOO_H, ZOO_S, D) for _ in range(3))
    ours_bm = tbm = None
    if mask_mod is not None:
        ours_bm = fm.create_block_mask(mask_mod, None, None, ZOO_S, ZOO_S)
        tbm = torch_block_mask(mask_mod, None, None, ZOO_S, ZOO_S)
        # The two block masks agree on every block.
        assert torch.equal(ours_bm.to_dense(), tbm.to_dense())
    out, lse = fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=ours_bm,
                                 return_lse=True)
    ref, ref_lse = torch_flex(q, k, v, score_mod=score_mod, block_mask=tbm, return_lse=True)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, **F32)
    torch.testing.assert_close(lse, ref_lse, **F32)
    if tbm is not None:
        # torch's BlockMask object given to our flex_attention.
        out_t, lse_t = fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=tbm,
                                         return_lse=True)
        torch.testing.assert_close(out_t, ref, **F32)
        torch.testing.assert_close(lse_t, ref_lse, **F32)


def test_zoo_names_are_the_documented_twelve():
    assert zoo.names() == ["full", "causal", "sliding_window", "prefix_lm", "document",
                           "alibi_causal", "softcap_causal", "relative_bias", "t5_bias",
                           "natten_2d", "causal_and_document", "prefix_or_sliding"]


# ---------------------------------------------------------------------------
# Arguments torch's flex_attention takes
# ---------------------------------------------------------------------------


def test_gqa_with_score_mod_and_mask():
    B, Hq, Hkv, S, D = 2, 8, 2, 192, 32
    slopes = torch.linspace(0.1, 0.8, Hq)

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    q, k, v = rand(B, Hq, S, D), rand(B, Hkv, S, D), rand(B, Hkv, S, D)
    out, lse = fm.flex_attention(q, k, v, score_mod=alibi, enable_gqa=True, return_lse=True,
                                 block_mask=fm.create_block_mask(causal, None, None, S, S))
    ref, ref_lse = torch_flex(q, k, v, score_mod=alibi, enable_gqa=True, return_lse=True,
                              block_mask=torch_block_mask(causal, None, None, S, S))
    assert out.shape == (B, Hq, S, D)
    torch.testing.assert_close(out, ref, **F32)
    torch.testing.assert_close(lse, ref_lse, **F32)


@pytest.mark.parametrize("Bq,k_batch,v_batch", [(3, 1, 1), (4, 1, 1), (3, 1, 3), (2, 2, 1)])
def test_kv_batch_broadcast(Bq, k_batch, v_batch):
    """Key/value of batch 1 are shared by every query batch (torch accepts it
    with a block mask of the query's batch), read in place on the CPU."""
    Hq, Hkv, S, D = 4, 2, 160, 16
    q = rand(Bq, Hq, S, D)
    k, v = rand(k_batch, Hkv, S, D), rand(v_batch, Hkv, S, D)

    def batch_bias(score, b, h, q_idx, kv_idx):
        return score + 0.3 * b - 0.01 * (q_idx - kv_idx)

    ours = fm.flex_attention(q, k, v, score_mod=batch_bias, enable_gqa=True, return_lse=True,
                             block_mask=fm.create_block_mask(causal, None, None, S, S))
    ref = torch_flex(q, k, v, score_mod=batch_bias, enable_gqa=True, return_lse=True,
                     block_mask=torch_block_mask(causal, Bq, None, S, S))
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want, **F32)
    # Without a block mask (torch refuses that; expanding K/V gives its answer).
    out = fm.flex_attention(q, k, v, enable_gqa=True)
    torch.testing.assert_close(out, torch_flex(q, k.expand(Bq, -1, -1, -1),
                                               v.expand(Bq, -1, -1, -1), enable_gqa=True), **F32)
    # The CPU kernel reads the shared batch in place (a static 1: the kernel
    # broadcasts it; a batch of the query's is dynamic, like q's); the GPU
    # path expands it.
    spec = fm.attention_spec(q, k, v, enable_gqa=True, options=CompileOptions(dynamic=True))
    assert (spec.k.shape[0], spec.v.shape[0]) == tuple(
        1 if n == 1 else DYNAMIC for n in (k_batch, v_batch))
    gpu = fm.attention_spec(q, k, v, enable_gqa=True, options=CompileOptions(target="sm_90a"))
    assert (gpu.k.shape[0], gpu.v.shape[0]) == (Bq, Bq)
    if k_batch == 1 and Bq > 1:
        assert "memref.reinterpret_cast" in fm.compile(spec).ir["tiled"]


def test_return_aux_lse():
    B, H, S, D = 2, 4, 160, 32
    q, k, v = (rand(B, H, S, D) for _ in range(3))
    out, aux = fm.flex_attention(q, k, v, block_mask=fm.create_block_mask(causal, None, None, S, S),
                                 return_aux=tfa.AuxRequest(lse=True))
    ref, ref_aux = torch_flex(q, k, v, block_mask=torch_block_mask(causal, None, None, S, S),
                              return_aux=tfa.AuxRequest(lse=True))
    assert isinstance(aux, tfa.AuxOutput)
    assert aux.lse.dtype == torch.float32 and aux.lse.shape == (B, H, S)
    torch.testing.assert_close(out, ref, **F32)
    torch.testing.assert_close(aux.lse, ref_aux.lse, **F32)
    # return_aux without lse: out and an AuxOutput without lse, like torch.
    out2, aux2 = fm.flex_attention(q, k, v, return_aux=tfa.AuxRequest())
    ref2 = torch_flex(q, k, v)
    torch.testing.assert_close(out2, ref2, **F32)
    assert aux2.lse is None


@pytest.mark.parametrize("M,N", [(200, 328), (328, 136)])
def test_q_and_kv_lengths_differ(M, N):
    """M != N, neither a multiple of the 128 block size; a score_mod reading
    q_idx and kv_idx and a mask built for (M, N)."""
    B, H, D = 1, 4, 32

    def rel(score, b, h, q_idx, kv_idx):
        return score + 0.02 * (q_idx - kv_idx)

    def window(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).abs() <= 100

    q, k, v = rand(B, H, M, D), rand(B, H, N, D), rand(B, H, N, D)
    out, lse = fm.flex_attention(q, k, v, score_mod=rel, return_lse=True,
                                 block_mask=fm.create_block_mask(window, None, None, M, N))
    ref, ref_lse = torch_flex(q, k, v, score_mod=rel, return_lse=True,
                              block_mask=torch_block_mask(window, None, None, M, N))
    assert out.shape == (B, H, M, D)
    torch.testing.assert_close(out, ref, **F32)
    torch.testing.assert_close(lse, ref_lse, **F32)
    # No block mask at all: plain attention over N keys.
    torch.testing.assert_close(fm.flex_attention(q, k, v, score_mod=rel),
                               torch_flex(q, k, v, score_mod=rel), **F32)


@pytest.mark.parametrize("block_size", [128, (64, 128)])
def test_lengths_not_multiple_of_block_size(block_size):
    B, H, S, D = 2, 2, 200, 32

    def doc_causal(b, h, q_idx, kv_idx):
        return (q_idx // 70 == kv_idx // 70) & (q_idx >= kv_idx)

    q, k, v = (rand(B, H, S, D) for _ in range(3))
    bm = fm.create_block_mask(doc_causal, None, None, S, S, BLOCK_SIZE=block_size)
    tbm = torch_block_mask(doc_causal, None, None, S, S, BLOCK_SIZE=block_size)
    bs = (block_size, block_size) if isinstance(block_size, int) else block_size
    assert tuple(bm.BLOCK_SIZE) == bs
    assert torch.equal(bm.to_dense(), tbm.to_dense())
    out, lse = fm.flex_attention(q, k, v, block_mask=bm, return_lse=True)
    ref, ref_lse = torch_flex(q, k, v, block_mask=tbm, return_lse=True)
    torch.testing.assert_close(out, ref, **F32)
    torch.testing.assert_close(lse, ref_lse, **F32)
    out_t = fm.flex_attention(q, k, v, block_mask=tbm)
    torch.testing.assert_close(out_t, ref, **F32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_input_dtypes(dtype):
    B, H, S, D = 2, 4, 192, 64

    def softcap(score, b, h, q_idx, kv_idx):
        return 20.0 * torch.tanh(score / 20.0)

    q, k, v = (rand(B, H, S, D, dtype=dtype) for _ in range(3))
    out, lse = fm.flex_attention(q, k, v, score_mod=softcap, return_lse=True,
                                 block_mask=fm.create_block_mask(causal, None, None, S, S))
    assert out.dtype == dtype and lse.dtype == torch.float32
    ref, ref_lse = torch_flex(q.float(), k.float(), v.float(), score_mod=softcap,
                              return_lse=True, block_mask=torch_block_mask(causal, None, None, S, S))
    tol = F32 if dtype == torch.float32 else LOW
    torch.testing.assert_close(out.float(), ref, **tol)
    torch.testing.assert_close(lse, ref_lse, **tol)


def test_default_and_explicit_scale():
    B, H, S, D = 1, 4, 160, 64
    q, k, v = (rand(B, H, S, D) for _ in range(3))
    out_default = fm.flex_attention(q, k, v)
    out_explicit = fm.flex_attention(q, k, v, scale=1.0 / math.sqrt(D))
    assert torch.equal(out_default, out_explicit)
    torch.testing.assert_close(out_default, torch_flex(q, k, v), **F32)
    out_scaled, lse = fm.flex_attention(q, k, v, scale=0.3, return_lse=True)
    ref, ref_lse = torch_flex(q, k, v, scale=0.3, return_lse=True)
    torch.testing.assert_close(out_scaled, ref, **F32)
    torch.testing.assert_close(lse, ref_lse, **F32)
    assert not torch.allclose(out_scaled, out_default, atol=1e-3)


def test_fully_masked_rows():
    """Rows 100.. see no key: rows 100..127 share a partial block with
    visible rows, rows 128..199 have no block at all."""
    B, H, S, D = 2, 2, 200, 32

    def early_rows(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx < 100)

    q, k, v = (rand(B, H, S, D) for _ in range(3))
    bm = fm.create_block_mask(early_rows, None, None, S, S)
    assert int(bm.kv_num_blocks[0, 0, 1]) == 0 and int(bm.full_kv_num_blocks[0, 0, 1]) == 0
    out, lse = fm.flex_attention(q, k, v, block_mask=bm, return_lse=True)
    ref, ref_lse = torch_flex(q, k, v, return_lse=True,
                              block_mask=torch_block_mask(early_rows, None, None, S, S))
    assert torch.equal(out[:, :, 100:], torch.zeros_like(out[:, :, 100:]))
    assert torch.isneginf(lse[:, :, 100:]).all()
    assert torch.isfinite(lse[:, :, :100]).all()
    torch.testing.assert_close(out, ref, **F32)
    torch.testing.assert_close(lse, ref_lse, **F32)


def test_kernel_options(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEXATTN_CACHE_DIR", str(tmp_path))  # compiles, not disk hits
    B, H, S, D = 1, 4, 192, 32
    q, k, v = (rand(B, H, S, D) for _ in range(3))

    def shift(score, b, h, q_idx, kv_idx):  # a mod no other test uses: a new kernel
        return score - 0.125 * h

    ref = torch_flex(q, k, v, score_mod=shift)
    out = fm.flex_attention(q, k, v, score_mod=shift)
    torch.testing.assert_close(out, ref, **F32)
    before = fm.attention_compile_count()
    small = fm.flex_attention(q, k, v, score_mod=shift,
                              kernel_options={"BLOCK_M": 32, "BLOCK_N": 32})
    assert fm.attention_compile_count() == before + 1  # other tiles: another kernel
    torch.testing.assert_close(small, ref, **F32)
    # torch's own tuning keys are ignored: the default kernel, bit for bit.
    ignored = fm.flex_attention(q, k, v, score_mod=shift,
                                kernel_options={"num_warps": 4, "BACKEND": "TRITON"})
    assert fm.attention_compile_count() == before + 1
    assert torch.equal(ignored, out)


def test_kernel_options_with_block_mask():
    B, H, S, D = 1, 2, 256, 32
    q, k, v = (rand(B, H, S, D) for _ in range(3))
    out = fm.flex_attention(q, k, v, block_mask=fm.create_block_mask(causal, None, None, S, S),
                            kernel_options={"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4})
    ref = torch_flex(q, k, v, block_mask=torch_block_mask(causal, None, None, S, S))
    torch.testing.assert_close(out, ref, **F32)


# ---------------------------------------------------------------------------
# Errors: each names the argument
# ---------------------------------------------------------------------------


def _qkv(q=(1, 4, 64, 16), k=(1, 4, 64, 16), v=(1, 4, 64, 16), dtype=torch.float32):
    return rand(*q, dtype=dtype), rand(*k, dtype=dtype), rand(*v, dtype=dtype)


@pytest.mark.parametrize("shapes,kwargs,error,match", [
    (dict(q=(4, 64, 16)), {}, ValueError, r"query must be 4-D \[B, Hq, M, D\]"),
    (dict(k=(1, 4, 64)), {}, ValueError, r"key must be 4-D"),
    (dict(k=(1, 4, 64, 8)), {}, ValueError, r"key head dim 8 must match query head dim 16"),
    (dict(k=(1, 3, 64, 16), v=(1, 3, 64, 16)), dict(enable_gqa=True), ValueError,
     r"query heads \(4\) must be a multiple of key/value heads \(3\)"),
    (dict(k=(1, 2, 64, 16), v=(1, 2, 64, 16)), {}, ValueError, r"enable_gqa=True"),
    (dict(dtype=torch.float64), {}, TypeError,
     r"query dtype must be float32, float16 or bfloat16, got torch.float64"),
    (dict(dtype=torch.int32), {}, TypeError, r"query dtype must be .* got torch.int32"),
])
def test_bad_tensors(shapes, kwargs, error, match):
    dtype = shapes.pop("dtype", torch.float32)
    if dtype == torch.int32:
        q, k, v = (torch.ones(1, 4, 64, 16, dtype=torch.int32) for _ in range(3))
    else:
        q, k, v = _qkv(**shapes, dtype=dtype)
    before = fm.attention_compile_count()
    with pytest.raises(error, match=match):
        fm.flex_attention(q, k, v, **kwargs)
    assert fm.attention_compile_count() == before


def test_mismatched_key_dtype():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match=r"key dtype torch.float16 must match query dtype torch.float32"):
        fm.flex_attention(q, k.half(), v)


@pytest.mark.parametrize("which", ["ours", "torch"])
def test_block_mask_for_other_lengths(which):
    q, k, v = _qkv()
    make = fm.create_block_mask if which == "ours" else torch_block_mask
    bm = make(causal, None, None, 128, 128)
    with pytest.raises(ValueError, match=r"block_mask was created for \(Q_LEN, KV_LEN\) = "
                                         r"\(128, 128\) but query/key have \(64, 64\)"):
        fm.flex_attention(q, k, v, block_mask=bm)


def test_return_lse_and_return_aux():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="return_lse or return_aux, not both"):
        fm.flex_attention(q, k, v, return_lse=True, return_aux=tfa.AuxRequest(lse=True))


def test_data_dependent_score_mod():
    def branchy(score, b, h, q_idx, kv_idx):
        if q_idx > kv_idx:
            return score
        return score * 2

    q, k, v = _qkv()
    with pytest.raises(fm.ModCaptureError, match=r"score_mod 'branchy' uses data-dependent "
                                                 r"Python control flow"):
        fm.flex_attention(q, k, v, score_mod=branchy)


def test_float_mask_mod():
    def distance(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).float()

    with pytest.raises(fm.ModCaptureError,
                       match=r"mask_mod 'distance' must return a bool tensor, got torch.float32"):
        fm.create_block_mask(distance, None, None, 64, 64)
    # torch's BlockMask carrying that mask_mod, given to our flex_attention.
    bm = fm.create_block_mask(causal, None, None, 64, 64)
    bad = fm.BlockMask.from_kv_blocks(bm.kv_num_blocks, bm.kv_indices, BLOCK_SIZE=128,
                                      mask_mod=distance, seq_lengths=(64, 64))
    q, k, v = _qkv()
    with pytest.raises(fm.ModCaptureError, match=r"mask_mod 'distance' must return a bool"):
        fm.flex_attention(q, k, v, block_mask=bad)


def test_wrong_number_of_mod_arguments():
    def three(score, b, h):
        return score

    def five(b, h, q_idx, kv_idx, extra):
        return q_idx >= kv_idx

    q, k, v = _qkv()
    with pytest.raises(fm.ModCaptureError, match=r"score_mod 'three' must take 5 positional "
                                                 r"arguments \(score, b, h, q_idx, kv_idx\)"):
        fm.flex_attention(q, k, v, score_mod=three)
    with pytest.raises(fm.ModCaptureError, match=r"mask_mod 'five' must take 4 positional "
                                                 r"arguments \(b, h, q_idx, kv_idx\)"):
        fm.create_block_mask(five, None, None, 64, 64)


def test_unknown_kernel_option():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"kernel_options: unknown option 'BLOCK_Q'"):
        fm.flex_attention(q, k, v, kernel_options={"BLOCK_Q": 32})


# ---------------------------------------------------------------------------
# compile_flex_attention: the IR of every stage
# ---------------------------------------------------------------------------

CPU_STAGES = ["flexattn", "tiled", "sparse", "split", "fused", "inlined", "vector", "loops", "llvm"]
# M <= 64: the decode path adds flexattn-split-kv after the tiles.
CPU_DECODE_STAGES = CPU_STAGES[:2] + ["splitkv"] + CPU_STAGES[2:]
GPU_STAGES = ["flexattn", "tiled", "sparse", "grid", "roles", "schedule", "fragments", "kernel",
              "nvvm", "ptx"]


def test_compile_flex_attention_cpu_stages():
    S = 256
    q, k, v = (rand(1, 2, S, 64) for _ in range(3))
    slopes = torch.rand(2)

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    bm = fm.create_block_mask(causal, None, None, S, S)
    compiled = fm.compile_flex_attention(q, k, v, score_mod=alibi, block_mask=bm)
    assert compiled.stage_names() == CPU_STAGES
    assert "flexattn.attention" in compiled.ir["flexattn"]
    assert "flexattn.kv_loop" in compiled.ir["tiled"]
    assert "llvm.func" in compiled.ir["llvm"]
    # No flexattn op is left (the work-counter argument keeps its marker).
    assert not re.search(r"^\s*(%\S+ = )?flexattn\.", compiled.ir["llvm"], re.M)
    assert "flexattn.work_counter" in compiled.ir["llvm"]


def test_compile_flex_attention_sm90a_from_cpu_tensors():
    S = 256
    q, k, v = (rand(1, 2, S, 64, dtype=torch.bfloat16) for _ in range(3))
    bm = fm.create_block_mask(causal, None, None, S, S)
    compiled = fm.compile_flex_attention(q, k, v, block_mask=bm, target="sm_90a")
    assert compiled.stage_names() == GPU_STAGES
    assert "gpu.launch " in compiled.ir["grid"]
    assert "flexattn.warp_specialize" in compiled.ir["roles"]
    assert "flexattn.frag." not in compiled.ir["fragments"]
    assert "gpu.func" in compiled.ir["kernel"]
    ptx = compiled.metadata["ptx"]
    assert ".target sm_90a" in ptx
    assert "wgmma.mma_async" in ptx
    launch = compiled.metadata["launch"]
    assert launch["target"] == "sm_90a" and launch["grid"][0] * 128 >= S


# ---------------------------------------------------------------------------
# The CLI
# ---------------------------------------------------------------------------

FLEXATTN = os.path.join(os.path.dirname(sys.executable), "flexattn")


def test_cli_list():
    proc = subprocess.run([FLEXATTN, "--list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    assert listed == zoo.names()


def test_cli_stage(tmp_path):
    env = dict(os.environ, FLEXATTN_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([FLEXATTN, "causal", "--stage", "tiled"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "// ===== causal: stage tiled =====" in proc.stdout
    assert "flexattn.kv_loop" in proc.stdout and "scf.parallel" in proc.stdout
    assert "stage sparse" not in proc.stdout  # only the one stage
    assert "compiled in" in proc.stderr


def test_flexattn_opt_command(tmp_path):
    """`pip install .` puts flexattn-opt on PATH (a console script that runs
    the binary shipped in flexattn_mlir/_bin)."""
    src = tmp_path / "attn.mlir"
    src.write_text(fm.attention_spec(*(torch.randn(1, 2, 80, 16) for _ in range(3))).to_mlir())
    exe = os.path.join(os.path.dirname(sys.executable), "flexattn-opt")
    proc = subprocess.run([exe, str(src), "--flexattn-tile"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "scf.parallel" in proc.stdout and "flexattn.kv_loop" in proc.stdout
    assert "flexattn.attention" not in proc.stdout
    bad = subprocess.run([exe, str(src), "--no-such-pass"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "no-such-pass" in bad.stderr


# -- regressions found in review ------------------------------------------------

class _WindowConfig:
    window = 10


def _config_window(b, h, q_idx, kv_idx):
    return (q_idx - kv_idx).abs() < _WindowConfig.window


def test_class_attribute_settings_are_read_on_every_call():
    """A scalar read as Class.attr is baked into the IR, so it is part of the
    key: changing it must change the mask (it was cached by identity)."""
    try:
        first = fm.create_block_mask(_config_window, None, None, 128, 128, BLOCK_SIZE=16)
        _WindowConfig.window = 40
        second = fm.create_block_mask(_config_window, None, None, 128, 128, BLOCK_SIZE=16)
        ref = tfa.create_block_mask(_config_window, None, None, 128, 128, device="cpu",
                                    BLOCK_SIZE=16)
        assert not torch.equal(first.kv_num_blocks, second.kv_num_blocks)
        assert torch.equal(second.kv_num_blocks, ref.kv_num_blocks)
        assert torch.equal(second.full_kv_num_blocks, ref.full_kv_num_blocks)
    finally:
        _WindowConfig.window = 10


def test_tensor_read_as_class_attribute_is_rejected():
    class Scale:
        s = torch.tensor(2.0)

    with pytest.raises(fm.ModCaptureError, match=r"reads the tensor\(s\) .*Scale.s as an attribute"):
        fm.capture_score_mod(lambda score, b, h, q, kv: score * Scale.s)


def test_reassigned_mask_mod_of_our_block_mask_is_used():
    """flex_attention applies the BlockMask's current mask_mod, as torch does:
    on partial blocks (full blocks skip mask_mod in torch too)."""
    q, k, v = (torch.randn(1, 2, 128, 32) for _ in range(3))
    bm = fm.create_block_mask(lambda b, h, qi, kv: qi >= kv, None, None, 128, 128, BLOCK_SIZE=32)

    def even_keys(b, h, qi, kv):
        return (qi >= kv) & (kv % 2 == 0)

    bm.mask_mod = even_keys
    ours = fm.flex_attention(q, k, v, block_mask=bm)
    # Causal blocks below the diagonal are full (mask_mod skipped); the
    # diagonal blocks are partial and apply the new mask.
    ref = _masked_reference(q, k, v, lambda i, j: (i >= j) & ((j % 2 == 0) | (i // 32 > j // 32)))
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-5)


def _masked_reference(q, k, v, keep):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    i = torch.arange(q.shape[2]).view(-1, 1)
    j = torch.arange(k.shape[2]).view(1, -1)
    s = s.masked_fill(~keep(i, j), -math.inf)
    return (torch.softmax(s, -1).nan_to_num(0) @ v)


def test_long_kv_block_on_cpu_uses_the_heap():
    """A 64 x 16384 score tile (4 MiB) once overflowed the stack; tile
    buffers over 64 KiB are heap-allocated."""
    q = torch.randn(1, 1, 64, 16)
    k, v = (torch.randn(1, 1, 16384, 16) for _ in range(2))
    bm = fm.create_block_mask(lambda b, h, qi, kv: qi >= 0, None, None, 64, 16384,
                              BLOCK_SIZE=(64, 16384))
    out = fm.flex_attention(q, k, v, block_mask=bm)
    torch.testing.assert_close(out, _masked_reference(q, k, v, lambda i, j: i >= 0),
                               atol=2e-5, rtol=1e-4)


def test_gpu_only_op_in_handwritten_mod_is_a_diagnostic():
    from flexattn_mlir import ModIR

    q = torch.randn(1, 1, 32, 16)
    bad = ModIR.score("flexattn.mod score_mod {\n^bb0(%s: f32, %b: i32, %h: i32, %q: i32, %kv: i32):\n"
                      "  %t = gpu.thread_id x\n  flexattn.yield %s : f32\n}")
    with pytest.raises(fm.CompilationError, match="may only contain arith, math, scf, memref.load "
                                                  "and flexattn.check_index ops .* found "
                                                  "'gpu.thread_id'"):
        fm.attention(q, q, q, score_mod=bad)


def test_zero_head_dim_is_a_clear_error():
    q = torch.randn(1, 1, 8, 0)
    with pytest.raises(ValueError, match=r"head dims must be positive, got D=0, Dv=0"):
        fm.flex_attention(q, q, q)


def test_dump_ir_names_each_kernel_and_keeps_cache_hits(tmp_path, monkeypatch):
    """FLEXATTN_DUMP_IR writes the stages of every kernel compiled, named
    <variant>-<key prefix>.<stage>.mlir (the mods' names), so two kernels do
    not overwrite each other; a kernel already compiled is a cache hit (no
    recompilation, nothing dumped)."""
    from flexattn_mlir.compiler import driver

    q = torch.randn(1, 1, 48, 16)
    fm.flex_attention(q, q, q)  # compiled and cached before dumping
    monkeypatch.setenv("FLEXATTN_DUMP_IR", str(tmp_path))
    before = fm.attention_compile_count()
    fm.flex_attention(q, q, q)
    assert fm.attention_compile_count() == before and not list(tmp_path.iterdir())

    def dump_bias(score, b, h, q_idx, kv_idx):
        return score + (q_idx - kv_idx) * 0.25

    fm.flex_attention(q, q, q, score_mod=dump_bias, block_mask=fm.create_block_mask(
        causal, None, None, 48, 48, BLOCK_SIZE=16))
    fm.flex_attention(q[..., :8], q[..., :8], q[..., :8], score_mod=dump_bias)
    assert fm.attention_compile_count() == before + 2
    names = sorted(p.name for p in tmp_path.iterdir())
    kernels = sorted({n.split(".")[0] for n in names})
    # (M = 48: both kernels take the decode path.)
    assert len(kernels) == 2 and names == sorted(
        f"{k}.{s}.mlir" for k in kernels for s in CPU_DECODE_STAGES)
    assert kernels[0].startswith("dump_bias-") and kernels[1].startswith("dump_bias_causal-")
    spec = fm.attention_spec(q, q, q, name="x")
    assert driver.kernel_name(spec, CompileOptions()).startswith("x-")
    fm.flex_attention(q[..., :8], q[..., :8], q[..., :8], score_mod=dump_bias)  # a hit again
    assert (fm.attention_compile_count() == before + 2
            and len(list(tmp_path.iterdir())) == 2 * len(CPU_DECODE_STAGES))


def test_torch_backward_kernel_options_are_ignored():
    q = torch.randn(1, 1, 32, 16)
    out = fm.flex_attention(q, q, q, kernel_options={"BLOCK_M1": 32, "BLOCK_N2": 64})
    torch.testing.assert_close(out, fm.flex_attention(q, q, q))
