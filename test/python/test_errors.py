"""Bad input to the Python entry raises a clear error naming the argument,
before anything is compiled; invalid IR raises CompilationError."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import flexattn_mlir as fm
from flexattn_mlir import CompileOptions, ModIR
from flexattn_mlir.frontend import combine
from reference import reference_attention


def qkv(**over):
    t = dict(q=(1, 4, 32, 16), k=(1, 2, 32, 16), v=(1, 2, 32, 16))
    dtypes = over.pop("dtypes", {})
    t.update(over)
    return [torch.randn(*t[n], dtype=dtypes.get(n, torch.float32)) for n in "qkv"]


@pytest.mark.parametrize(
    "over,error,match",
    [
        (dict(q=(4, 32, 16)), ValueError, r"query must be 4-D \[B, Hq, M, D\], got shape \(4, 32, 16\)"),
        (dict(k=(1, 2, 32)), ValueError, r"key must be 4-D"),
        (dict(v=(2, 32, 16)), ValueError, r"value must be 4-D"),
        (dict(k=(1, 2, 32, 8)), ValueError, r"key head dim 8 must match query head dim 16"),
        (dict(k=(1, 3, 32, 16), v=(1, 3, 32, 16)), ValueError,
         r"query heads \(4\) must be a multiple of key/value heads \(3\)"),
        (dict(k=(2, 2, 32, 16)), ValueError,
         r"key/value batch sizes \(2, 1\) must each match query batch size 1 or be 1"),
        (dict(q=(3, 4, 32, 16), v=(2, 2, 32, 16)), ValueError,
         r"key/value batch sizes \(1, 2\) must each match query batch size 3 or be 1"),
        (dict(v=(1, 2, 31, 16)), ValueError, r"value .* must match key's Hkv=2 and N=32"),
        (dict(dtypes=dict(q=torch.float64, k=torch.float64, v=torch.float64)), TypeError,
         r"query dtype must be float32, float16 or bfloat16, got torch.float64"),
        (dict(dtypes=dict(k=torch.float16)), TypeError,
         r"key dtype torch.float16 must match query dtype torch.float32"),
    ],
)
def test_bad_tensors(over, error, match):
    q, k, v = qkv(**over)
    with pytest.raises(error, match=match):
        fm.attention(q, k, v, enable_gqa=True)


def test_not_a_tensor():
    _, k, v = qkv()
    with pytest.raises(TypeError, match="query must be a torch.Tensor, got list"):
        fm.attention([[1.0]], k, v)


def test_gqa_needs_enable_gqa():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="pass enable_gqa=True"):
        fm.attention(q, k, v)


def test_bad_scale():
    q, k, v = qkv(k=(1, 4, 32, 16), v=(1, 4, 32, 16))
    with pytest.raises(TypeError, match="scale must be a finite float"):
        fm.attention(q, k, v, scale=float("nan"))


def test_mod_kind_and_capture_count():
    q, k, v = qkv(k=(1, 4, 32, 16), v=(1, 4, 32, 16))
    mask = ModIR.mask("flexattn.mod mask_mod {\n^bb0(%b: i32, %h: i32, %q: i32, %kv: i32):\n"
                      "  %t = arith.constant true\n  flexattn.yield %t : i1\n}")
    with pytest.raises(TypeError, match="score_mod must be a ModIR of kind 'score'"):
        fm.attention(q, k, v, score_mod=mask)
    with pytest.raises(ValueError, match="mask_mod declares 0 captured buffers but 1 were passed"):
        fm.attention(q, k, v, mask_mod=mask, captures=[torch.zeros(3)])


def test_invalid_mod_ir_is_a_compilation_error():
    q, k, v = qkv(k=(1, 4, 32, 16), v=(1, 4, 32, 16))
    bad = ModIR.mask("flexattn.mod mask_mod {\n^bb0(%b: i32, %h: i32, %q: i32, %kv: i32):\n"
                     "  %t = arith.constant 1.0 : f32\n  flexattn.yield %t : f32\n}")
    with pytest.raises(fm.CompilationError, match="mask_mod must yield one i1 value"):
        fm.attention(q, k, v, mask_mod=bad)


class _Mask:
    """A BlockMask-like object (the fields torch's BlockMask has)."""

    def __init__(self, num, idx, block=16, seq=None):
        self.kv_num_blocks, self.kv_indices, self.BLOCK_SIZE = num, idx, (block, block)
        self.full_kv_num_blocks = self.full_kv_indices = None
        if seq is not None:
            self.seq_lengths = seq


def test_block_mask_errors():
    q, k, v = qkv(k=(1, 4, 32, 16), v=(1, 4, 32, 16))
    num = torch.full((1, 1, 2), 2, dtype=torch.int32)
    idx = torch.tensor([[[[0, 1], [0, 1]]]], dtype=torch.int32)
    fm.attention(q, k, v, block_mask=_Mask(num, idx))  # valid
    with pytest.raises(ValueError, match=r"lists KV blocks in \[0, 5\], outside \[0, 2\)"):
        fm.attention(q, k, v, block_mask=_Mask(num, idx.clone().fill_(5).index_fill_(3, torch.tensor([0]), 0)))
    with pytest.raises(ValueError, match=r"kv_num_blocks must lie in \[0, 2\], got \[2, 3\]"):
        fm.attention(q, k, v, block_mask=_Mask(num.clone().fill_(3).index_fill_(2, torch.tensor([0]), 2), idx))
    with pytest.raises(TypeError, match="block_mask.kv_indices must be int32, got torch.int64"):
        fm.attention(q, k, v, block_mask=_Mask(num, idx.long()))
    with pytest.raises(ValueError, match=r"created for \(Q_LEN, KV_LEN\) = \(64, 64\) but query/key have \(32, 32\)"):
        fm.attention(q, k, v, block_mask=_Mask(num, idx, seq=(64, 64)))
    with pytest.raises(ValueError, match="covers 2 query blocks; query length 32 needs 4 blocks of 8"):
        fm.attention(q, k, v, block_mask=_Mask(num, idx, block=8))


def test_options_validation():
    with pytest.raises(ValueError, match="CompileOptions.tile_q must be a positive power of two, got 48"):
        CompileOptions(tile_q=48)
    with pytest.raises(ValueError, match="CompileOptions.target must be one of"):
        CompileOptions(target="tpu")
    with pytest.raises(ValueError, match="CompileOptions.prefetch_loads must be a bool or None, got 1"):
        CompileOptions(prefetch_loads=1)
    with pytest.raises(ValueError, match="CompileOptions.hoist_loads must be a bool or None, got 'x'"):
        CompileOptions(hoist_loads="x")
    with pytest.raises(ValueError, match="kernel_options: unknown option 'BLOCKM'"):
        CompileOptions.from_kernel_options({"BLOCKM": 64})


def test_block_mask_checks_are_memoised_but_see_in_place_changes():
    """A mask reused unchanged is checked once (the checks sync with the
    GPU); an in-place edit bumps its version and is checked again."""
    from flexattn_mlir.execution import checks

    q, k, v = qkv(k=(1, 4, 32, 16), v=(1, 4, 32, 16))
    num = torch.full((1, 1, 2), 2, dtype=torch.int32)
    idx = torch.tensor([[[[0, 1], [0, 1]]]], dtype=torch.int32)
    mask = _Mask(num, idx)
    assert checks.check_block_mask(mask, q, k) == 4
    assert checks.check_block_mask(mask, q, k) == 4  # memo hit
    idx[0, 0, 1, 1] = 9  # in place: version bump
    with pytest.raises(ValueError, match=r"lists KV blocks in \[0, 9\]"):
        fm.attention(q, k, v, block_mask=mask)


# -- import order: torch_mlir's LLVM loaded before ours breaks the JIT ----------

_IMPORT_SCRIPT = """
import sys
{first}
try:
    import flexattn_mlir as fm
except ImportError as err:
    print("IMPORT-ERROR:", err)
    sys.exit(3)
import torch
q, k, v = (torch.randn(1, 2, 64, 16) for _ in range(3))
soft = lambda s, b, h, qi, kv: 5.0 * torch.tanh(s / 5.0) + torch.exp(-(qi - kv).abs() * 0.1)
ours = fm.flex_attention(q, k, v, score_mod=soft)
i = torch.arange(64)
s = soft(q.double() @ k.double().transpose(-1, -2) / 4, 0, 0, i[:, None], i[None, :])
ref = torch.softmax(s, -1) @ v.double()  # libm's exp/tanh, which the JIT must call right
torch.testing.assert_close(ours, ref.float(), atol=2e-5, rtol=1e-5)
print("MATCH")
"""


@pytest.mark.parametrize("first,ok", [
    ("from torch_mlir import fx", False),     # torch-mlir's LLVM first: refused
    ("import torch_mlir", True),              # the bare package loads no LLVM
    ("import mlir.ir\nfrom torch_mlir import fx", True),  # ours first: fine
])
def test_torch_mlir_imported_first(tmp_path, first, ok):
    """Importing torch_mlir (its native libraries) before flexattn_mlir used
    to end in "JIT session error: Symbols not found" at the first CPU call;
    now the import says what to do, and every working order computes right."""
    script = tmp_path / "order.py"
    script.write_text(_IMPORT_SCRIPT.format(first=first))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    if ok:
        assert proc.returncode == 0 and "MATCH" in proc.stdout, proc.stdout + proc.stderr
    else:
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "IMPORT-ERROR: flexattn_mlir must be imported before torch_mlir" in proc.stdout
        assert "Import flexattn_mlir (or mlir.ir) before the first" in proc.stdout


# -- gradients are never silently dropped -------------------------------------

def test_grad_mode_differentiates_on_the_cpu():
    """In grad mode an input requiring grad makes the call differentiable on
    the CPU (flex_attention and the IR-level attention alike). (Every target
    has a backward: the GPU's is tested in test_gpu_backward.py.)"""
    q, k, v = qkv(k=(1, 4, 32, 16), v=(1, 4, 32, 16))
    bias = torch.randn(32, requires_grad=True)
    keep = torch.ones(32, dtype=torch.bool)

    def rel_bias(score, b, h, q_idx, kv_idx):
        return score + bias[kv_idx]

    def kept(b, h, q_idx, kv_idx):
        return keep[kv_idx] & (q_idx >= kv_idx)

    def reference(q, bias):
        return reference_attention(q, k.double(), v.double(),
                                   score_fn=lambda s, b, h, i, j: s + bias[j],
                                   mask_fn=lambda b, h, i, j: i >= j)[0]

    mask = fm.create_block_mask(kept, 1, 4, 32, 32, BLOCK_SIZE=16)
    q64, bias64 = (t.detach().double().requires_grad_() for t in (q, bias))
    reference(q64, bias64).sum().backward()
    # flex_attention, and attention() with the mods as IR: gradients of q and
    # of the captured table, against the float64 reference.
    score_c, mask_c, captures = combine(fm.capture_score_mod(rel_bias), fm.capture_mask_mod(kept))
    runs = {"flex_attention": lambda q: fm.flex_attention(q, k, v, score_mod=rel_bias,
                                                          block_mask=mask),
            "attention": lambda q: fm.attention(q, k, v, score_mod=score_c.ir, mask_mod=mask_c.ir,
                                                block_mask=mask, captures=captures)}
    for name, run in runs.items():
        qg = q.clone().requires_grad_()
        bias.grad = None
        out = run(qg)
        assert out.requires_grad, name
        out.sum().backward()
        torch.testing.assert_close(qg.grad.double(), q64.grad, atol=1e-4, rtol=1e-4, msg=name)
        torch.testing.assert_close(bias.grad.double(), bias64.grad, atol=1e-4, rtol=1e-4,
                                   msg=name)
    # Not in grad mode: nothing to differentiate, so it runs (and is right).
    expect = reference(q.double(), bias.detach().double())
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            out = fm.flex_attention(q.requires_grad_(), k, v, score_mod=rel_bias, block_mask=mask)
        assert not out.requires_grad
        torch.testing.assert_close(out.double(), expect, atol=2e-5, rtol=1e-5)
