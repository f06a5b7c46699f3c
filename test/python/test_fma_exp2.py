"""P's exponentials on the FMA pipe (FlashAttention-4's exp2 emulation,
``CompileOptions.exp2_poly``): the polynomial flexattn-lower-to-nvvm emits
for a marked exp2, run on this CPU against float64 exp2; the option's
checks and its one rule; the zoo compiled with it to sm_90a cubins (no
spills, k of every 16 of P's ex2.approx gone)."""

from __future__ import annotations

import ctypes
import re
from dataclasses import replace

import numpy as np
import pytest

import flexattn_mlir as fm
from flexattn_mlir.compiler import targets
from flexattn_mlir.examples import zoo

# Variants whose mods hold a gather (document ids): ptxas spills a few bytes
# there at D = 128 with or without the polynomial (test_gpu_codegen.py).
MAY_SPILL = {"document", "causal_and_document"}

# A marked exp2 over a buffer, in a gpu.module as flexattn-lower-to-nvvm
# takes it; the LLVM function it becomes holds nothing NVVM-specific, so
# the same IR runs on the CPU.
_EXP2_LOOP = """
module attributes {gpu.container_module} {
  gpu.module @k {
    func.func @exp2_fma(%x: !llvm.ptr, %y: !llvm.ptr, %n: i64) {
      %c0 = arith.constant 0 : i64
      %c1 = arith.constant 1 : i64
      scf.for %i = %c0 to %n step %c1 : i64 {
        %px = llvm.getelementptr %x[%i] : (!llvm.ptr, i64) -> !llvm.ptr, f32
        %v = llvm.load %px : !llvm.ptr -> f32
        %e = math.exp2 %v {flexattn.fma_exp2} : f32
        %py = llvm.getelementptr %y[%i] : (!llvm.ptr, i64) -> !llvm.ptr, f32
        llvm.store %e, %py : f32, !llvm.ptr
      }
      return
    }
  }
}
"""


def _exp2_on_fma(x: np.ndarray) -> np.ndarray:
    """The expanded IR of a marked exp2, JIT-compiled for this CPU, on x."""
    from mlir import ir
    from mlir.execution_engine import ExecutionEngine

    from flexattn_mlir import _native
    from flexattn_mlir.compiler.pipeline import run_pipeline

    with _native.new_context(), ir.Location.unknown():
        mod = ir.Module.parse(_EXP2_LOOP)
        run_pipeline(mod, "flexattn-lower-to-nvvm{chip=sm_90a features=+ptx83}", "nvvm")
        text = str(mod)
        assert "llvm.nvvm" not in text and "llvm.fma.f32" in text
        func = re.search(r"llvm\.func @exp2_fma\(.*?\n    \}", text, re.S).group(0)
        engine = ExecutionEngine(ir.Module.parse(func), opt_level=2)
        # raw_lookup gives the packed entry: one pointer to each argument.
        entry = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(engine.raw_lookup("exp2_fma"))
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.full_like(x, np.nan)
        args = [ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(y.ctypes.data),
                ctypes.c_int64(x.size)]
        packed = (ctypes.c_void_p * 3)(*[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p)
                                         for a in args])
        entry(packed)
    return y


def test_polynomial_against_float64_exp2():
    """Relative error below 1e-4 over the normal range (far below the
    rounding of 16-bit P: relative half-ulps 2^-8 bf16, 2^-11 fp16), exact +0 for
    masked scores (-inf, anything at or below -127), a non-negative value
    under 2^-124 in between."""
    rng = np.random.default_rng(0)
    normal = np.concatenate([np.linspace(-125, 127, 1_000_001, dtype=np.float32),
                             rng.uniform(-30, 0, 200_000).astype(np.float32),
                             np.float32([0, -0.0, -0.5, 0.5, -1.5, 1e-8, -1e-8, -125])])
    y = _exp2_on_fma(normal)
    rel = np.abs(y.astype(np.float64) / np.exp2(normal.astype(np.float64)) - 1)
    assert rel.max() < 1e-4, (rel.max(), normal[rel.argmax()])
    assert abs(y[np.flatnonzero(normal == 0)[0]] - 1) < 1e-4

    masked = np.float32([-np.inf, -127, -127.5, -128, -1000, -3e38])
    assert np.array_equal(_exp2_on_fma(masked).view(np.int32), np.zeros(masked.size, np.int32))

    tiny = np.linspace(-127, -125, 20_001, dtype=np.float32)
    y = _exp2_on_fma(tiny)
    assert np.all(y >= 0) and np.all(y < 2.0 ** -124)


def test_exp2_poly_option_checks():
    for bad in (-1, 17, 2.5, True, "4"):
        with pytest.raises(ValueError, match=r"CompileOptions.exp2_poly must be None .* an int "
                                             r"in 0\.\.16"):
            fm.CompileOptions(target="sm_90a", exp2_poly=bad)
    opts = [fm.CompileOptions(target="sm_90a", exp2_poly=k) for k in (None, 0, 4)]
    assert len({o.digest() for o in opts}) == 3  # each its own cache key
    assert fm.CompileOptions.from_kernel_options({"exp2_poly": 3}, target="sm_90a").exp2_poly == 3


def _compile(variant, D=64, dtype="bfloat16", target="sm_90a", keep_ir=False, **options):
    spec = zoo.spec(variant, 1, 2, 1024, D, dtype=dtype, return_lse=True)
    return fm.compile(spec, fm.CompileOptions(target=target, **options), keep_ir=keep_ir)


# The polynomial's rounding add, x' + 1.5 2^23: one per emulated exp2.
_MAGIC = "0f4B400000;"


def _ex2(ptx: str) -> int:
    return len(re.findall(r"ex2\.approx", ptx))


@pytest.mark.parametrize("D", [64, 128])
def test_share_of_ex2_moves_to_the_fma_pipe(D):
    """k of every 16 of P's exp2s leave the special-function unit (alpha's
    stay): with 64 P elements and 2 alphas per consumer step, 4k of every
    66 ex2.approx go."""
    base = _compile("full", D, exp2_poly=0).metadata["ptx"]
    steps = _ex2(base) // 66
    assert steps >= 1 and _ex2(base) == 66 * steps
    for k in (3, 16):
        ptx = _compile("full", D, exp2_poly=k).metadata["ptx"]
        assert _ex2(ptx) == (66 - 4 * k) * steps
        assert ptx.count(_MAGIC) == 4 * k * steps


@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("variant", zoo.names())
def test_zoo_compiles_with_fma_exp2(variant, D):
    compiled = _compile(variant, D, exp2_poly=4)
    md = compiled.metadata
    assert md["cubin"][:4] == b"\x7fELF"
    res = md["resources"]
    if variant in MAY_SPILL and D == 128:
        assert res.spill_stores <= 16, res
    else:
        assert (res.spill_stores, res.spill_loads) == (0, 0), res
    assert _MAGIC in md["ptx"]


def test_the_rule_takes_the_table_and_leaves_other_kernels_alone(monkeypatch):
    """``exp2_poly=None`` takes ``Target.exp2_poly`` for the head dim; the
    sm_80 kernel and float32 inputs (the mma.sync kernels) keep every
    ex2.approx whatever the option says."""
    from mlir import ir

    from flexattn_mlir import _native
    from flexattn_mlir.compiler.backends import gpu

    sm90 = targets.TARGETS["sm_90a"]
    monkeypatch.setitem(targets.TARGETS, "sm_90a", replace(sm90, exp2_poly=((64, 5),)))

    def rule(D, **options):
        opts = fm.CompileOptions(target="sm_90a", **options)
        with _native.new_context():
            text = _compile("causal", D, keep_ir=True, **options).ir["schedule"]
            return gpu.exp2_poly(ir.Module.parse(text), opts)

    assert rule(64) == 5 and rule(128) == 0 and rule(64, exp2_poly=2) == 2
    assert rule(128, exp2_poly=0) == 0
    for target, dtype in (("sm_80", "bfloat16"), ("sm_90a", "float32")):
        ptx = [_compile("causal", 64, dtype, target, exp2_poly=k).metadata["ptx"] for k in (0, 16)]
        assert ptx[0] == ptx[1] and _MAGIC not in ptx[1]
