"""The sm_90a kernels, compiled to cubins on a machine without a GPU (ptxas
from the nvidia-cuda-nvcc wheel of the test extra): every zoo variant and
every schedule option assembles, fits the 384-thread register budget, and
holds the instructions its schedule is made of. Speed lives in bench/; this
keeps the code generation honest on CI."""

from __future__ import annotations

import re

import pytest

import flexattn_mlir as fm
from flexattn_mlir.examples import zoo
from flexattn_mlir.compiler import targets

SM90 = targets.TARGETS["sm_90a"]
# 65536 registers / 384 threads, rounded down to ptxas's allocation unit.
MAX_REGISTERS = 168
# Variants whose mods hold a gather (document ids): ptxas spills a few bytes
# there at D = 128, as it did before the pass pipeline existed.
MAY_SPILL = {"document", "causal_and_document"}


def _compile(variant: str, D: int = 128, dtype: str = "bfloat16", **options):
    spec = zoo.spec(variant, 1, 2, 1024, D, dtype=dtype, return_lse=True)
    return fm.compile(spec, fm.CompileOptions(target="sm_90a", **options), keep_ir=False)


def _count(ptx: str, pattern: str) -> int:
    return len(re.findall(pattern, ptx))


@pytest.mark.parametrize("variant", zoo.names())
def test_zoo_compiles_to_a_cubin_for_sm90a(variant):
    compiled = _compile(variant)
    md, ptx = compiled.metadata, compiled.metadata["ptx"]
    assert md["cubin"][:4] == b"\x7fELF"
    res = md["resources"]
    assert res.registers <= MAX_REGISTERS
    if variant not in MAY_SPILL:
        assert (res.spill_stores, res.spill_loads) == (0, 0), res
    else:
        assert res.spill_stores <= 16, res
    # The producer: TMA loads on mbarriers; the consumers: S = QK^T from
    # shared memory, O += PV with P in registers (imm-trans-b = 1), softmax
    # in registers with quad shuffles and ex2.
    assert ".target sm_90a" in ptx and ".maxntid 384, 1, 1" in ptx
    assert "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes" in ptx
    assert _count(ptx, r"wgmma\.mma_async\.sync\.aligned\.m64n128k16\.f32\.bf16\.bf16 .*p, 1,\s+1, 0,\s+0;") >= 8
    assert _count(ptx, r"wgmma\.mma_async\.sync\.aligned\.m64n128k16\.f32\.bf16\.bf16 .*p, 1, 1, 1;") >= 16
    assert "shfl.sync.bfly" in ptx and "ex2.approx.ftz.f32" in ptx
    assert "cvt.rn.bf16x2.f32" in ptx
    assert "setmaxnreg.dec.sync.aligned.u32" in ptx and "setmaxnreg.inc.sync.aligned.u32" in ptx
    # The pipelined, ping-pong schedule (the default): S waited for alone.
    assert re.search(r"wgmma\.wait_group\.sync\.aligned\s+1;", ptx)
    assert re.search(r"bar\.sync\s+%r\d+, 256;", ptx) and "bar.arrive" in ptx


def test_launch_facts_come_from_the_compiler():
    """Grid, block, shared memory and tensor-map encodings are read off the IR."""
    launch = _compile("causal", D=64).metadata["launch"]
    stages, rows, d = 2, 128, 64
    tile = rows * d * 2
    assert launch["entry"] == "flexattn_kernel"
    assert launch["grid"] == [1024 // 128 * 2, 1, 1] and launch["block"] == [384, 1, 1]
    # Q + stages x (K + V) slots, 2 + 4 stages barriers, 1024 bytes of alignment slack.
    assert launch["shared_mem_bytes"] == tile + stages * 2 * tile + 8 * (2 + 4 * stages) + 1024
    assert launch["shared_mem_bytes"] <= SM90.max_shared_per_block
    maps = [p for p in launch["params"] if p["kind"] == "tensormap"]
    assert [m["arg"] for m in maps] == ["q", "k", "v"]
    assert all(m["swizzle"] == "128B" and m["box"] == [64, 128, 1, 1] for m in maps)


@pytest.mark.parametrize("options,pipelined,pingpong", [
    ({}, True, True),
    ({"pingpong": False}, True, False),
    ({"pipeline": False, "pingpong": False}, False, False),
    ({"stages": 3}, True, True),
    ({"persistent": 3}, True, True),
])
def test_schedule_options_compile(options, pipelined, pingpong):
    compiled = _compile("causal", **options)
    ptx, res = compiled.metadata["ptx"], compiled.metadata["resources"]
    assert res.registers <= MAX_REGISTERS and (res.spill_stores, res.spill_loads) == (0, 0)
    assert bool(re.search(r"wgmma\.wait_group\.sync\.aligned\s+1;", ptx)) == pipelined
    assert bool(re.search(r"bar\.sync\s+%r\d+, 256;", ptx)) == pingpong
    launch = compiled.metadata["launch"]
    if "persistent" in options:
        assert launch["grid"] == [options["persistent"], 1, 1]
    if options.get("stages") == 3:
        assert launch["shared_mem_bytes"] == 32768 + 3 * 2 * 32768 + 8 * 14 + 1024


def test_d64_and_fp16_compile():
    for dtype, mnemonic in (("bfloat16", "bf16"), ("float16", "f16")):
        compiled = _compile("full", D=64, dtype=dtype)
        ptx, res = compiled.metadata["ptx"], compiled.metadata["resources"]
        assert (res.spill_stores, res.spill_loads) == (0, 0)
        # S = QK^T is m64n128 (the KV tile), O += PV m64n64 (Dv = 64).
        assert f"m64n128k16.f32.{mnemonic}.{mnemonic}" in ptx
        assert f"m64n64k16.f32.{mnemonic}.{mnemonic}" in ptx


def test_sinks_and_max_scores_compile():
    """Attention sinks and max_scores in the sm_90a kernel: the sink (one
    global load per row pair) joins each row's state in the epilogue, and
    max_scores is stored beside lse by the row's first thread; the main loop
    is untouched (no spill, same register budget)."""
    from dataclasses import replace

    from flexattn_mlir.compiler.spec import BufferType

    base = zoo.spec("alibi_causal", 1, 2, 1024, 128, return_lse=True)
    spec = replace(base, sinks=BufferType((2,), "f32"), return_max=True)
    compiled = fm.compile(spec, fm.CompileOptions(target="sm_90a"), keep_ir=False)
    md, ptx = compiled.metadata, compiled.metadata["ptx"]
    assert md["cubin"][:4] == b"\x7fELF"
    res = md["resources"]
    assert res.registers <= MAX_REGISTERS and (res.spill_stores, res.spill_loads) == (0, 0), res
    launch = md["launch"]
    assert launch["outputs"] == ["out", "lse", "max_scores"]
    assert {"sinks", "max_scores"} <= {p["arg"] for p in launch["params"] if p["kind"] == "ptr"}
    # max_scores: one more global store per row of the thread (rows r, r + 8);
    # the sink: one more global load.
    plain = fm.compile(base, fm.CompileOptions(target="sm_90a"), keep_ir=False).metadata["ptx"]
    assert _count(ptx, r"st\.global\.") == _count(plain, r"st\.global\.") + 2
    assert _count(ptx, r"ld\.global\.") > _count(plain, r"ld\.global\.")
