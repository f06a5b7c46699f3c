"""Tests of the runtime package flexattn_runtime (runtime/flexattn_runtime).

Everything up to the "GPU tests" section runs on CPU-only machines. The GPU
tests launch hand-written sm_90a PTX and need an H100-class GPU (compute
capability 9.0); they skip elsewhere.

Self-contained: this file puts runtime/ on sys.path itself and needs neither
MLIR nor flexattn_mlir. On a GPU box without the compiler installed, skip the
directory's conftest.py (it imports flexattn_mlir):

    python -m pytest --noconftest test/python/test_runtime.py
"""

from __future__ import annotations

import base64
import ctypes
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
RUNTIME_DIR = REPO / "runtime"
if str(RUNTIME_DIR) not in sys.path:
    sys.path.insert(0, str(RUNTIME_DIR))

import flexattn_runtime as fr  # noqa: E402
from flexattn_runtime import driver as drv  # noqa: E402
from flexattn_runtime.artifacts import ArtifactStore, run, write_kernel  # noqa: E402
from flexattn_runtime.errors import (ArgumentError, ArgumentTypeError, MetadataError,  # noqa: E402
                                     OutOfResources, UnsupportedDevice)
from flexattn_runtime.kernel import Kernel  # noqa: E402
from flexattn_runtime.launch import build_params, validate_args  # noqa: E402
from flexattn_runtime.metadata import (parse_metadata, ptx_entry_param_sizes,  # noqa: E402
                                       target_incompatibility)
from flexattn_runtime.tensormap import (DescriptorCache, check_tensormap,  # noqa: E402
                                        encoding_for, tensormap_geometry)

# ---------------------------------------------------------------------------
# Hand-written PTX (assembled with ptxas -arch=sm_90a, CUDA 13.0, 0 errors)
# ---------------------------------------------------------------------------

AXPB_PTX = """\
.version 8.0
.target sm_90a
.address_size 64

// out[i] = alpha * a[i] + b[i] + (float)offset, for i < n
.visible .entry axpb(
    .param .u64 .ptr .global .align 16 axpb_param_0,
    .param .u64 .ptr .global .align 16 axpb_param_1,
    .param .u64 .ptr .global .align 16 axpb_param_2,
    .param .f32 axpb_param_3,
    .param .u32 axpb_param_4,
    .param .u64 axpb_param_5
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .f32 %f<7>;
    .reg .b64 %rd<12>;

    ld.param.u64 %rd1, [axpb_param_0];
    ld.param.u64 %rd2, [axpb_param_1];
    ld.param.u64 %rd3, [axpb_param_2];
    ld.param.f32 %f1, [axpb_param_3];
    ld.param.u32 %r1, [axpb_param_4];
    ld.param.u64 %rd11, [axpb_param_5];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    setp.ge.s32 %p1, %r5, %r1;
    @%p1 bra $L_done;
    cvta.to.global.u64 %rd4, %rd1;
    cvta.to.global.u64 %rd5, %rd2;
    cvta.to.global.u64 %rd6, %rd3;
    mul.wide.s32 %rd7, %r5, 4;
    add.s64 %rd8, %rd4, %rd7;
    add.s64 %rd9, %rd5, %rd7;
    add.s64 %rd10, %rd6, %rd7;
    ld.global.f32 %f2, [%rd8];
    ld.global.f32 %f3, [%rd9];
    fma.rn.f32 %f4, %f1, %f2, %f3;
    cvt.rn.f32.s64 %f5, %rd11;
    add.f32 %f6, %f4, %f5;
    st.global.f32 [%rd10], %f6;
$L_done:
    ret;
}
"""

# The same kernel as a cubin: `ptxas -arch=sm_90a` (CUDA 13.0) of AXPB_PTX,
# zlib-compressed and base64-encoded, so the cubin path is tested on GPU boxes
# without ptxas.
AXPB_CUBIN_B64Z = (
    "eNrtVs1vG1UQn/3wZh0bOw2VSERFNiURrRQ22zZKXcQh/QJFIlCB1EOlatnEm9rC9q52N5G3BOEEVCFAhWMOHCL+"
    "B6SUA0LiEqEceuKAOOVU9ZQDByQKZt6H7fXuutCqEkh0pOd5v/l4M2/m7fP78PIbr4mCcF4FRiJ8BwL0qFlgfHeY"
    "cfkaKAtQggwsQJFY6n7FD7zAWsZZh4f1CDf9SqPcBL3hBLbeWNeD96qNVaeHV9Y4Xte7kxWn7loB6IHdDHSr6S53"
    "1T3kVyzPLiewZ/u2t44TA/Syvbx2w1z1rLoNqKglBFa/hES2arUbnuVWKHI9J3CC0OU6p+EHViMwWNB/RP+Z8nTq"
    "8k7druvO6qpvB8aAuplmY93s2i9dXjKZvWmYVq1q+U+0sN0EH626J3FIeArjdI7KlYT8OpXnE/JbOCYjWOb8Gxza"
    "zjMJ+5/oOnJCrghEPpyQH0f56Egvbktk/CVqX0jYt5GmInNCGG+D8GJ+s9U6AWp7s3VCpVNmMzOgRp1YsoY/zFd+"
    "letIRp/guDsE8ObVxUuL57WLjucCd6F3AKpgHse7ROAGTez8xbWypZHjV61ZQdVpaIHj1PwZDVtuW76tnTqjGzPa"
    "VcL0UgkurFVrZW0FnUwq8sjvLPO3Pf3M/NzpubOn5kwDXra8lYrm181zhqXx/MiddE+K53cNtsieZlWqJxWUj7A5"
    "3etoby5mBRBFHJkMSEOCIOJaIjZKzqm9fp+V2XrPsR5lAKMfTnaxDMcQH+liCcb6sAgjIP/asxcwehTTNRBLV9D3"
    "+TZIpiDIx1RwSUnJGRjHpgyrkEU8IuJ8Xu7mT3pL+J+c/8H5A+SXuvc1gAqPT1vvC216bMkiB0UYD7mCfBR6AX4I"
    "+VmfxmEU0D5Lc6D2UwWY2shmqYV4uwgHE3DnJqLPuH6vCPkNoHp3+TAHPxdhKds9nRLcL+J6Yhs+RkhyOF5g/lsc"
    "Yz53buK3/DnH+8RebtOPlmCX5KO06UEm+OsCTDdFGk8Ubw/B/gRshqJI8xt/IQ8HRC9TvUz1s6jPyFH96Ac5dnsc"
    "NVSWD6JPe/WZbirUXyH+e2/Bixt4pOi5QYu9L2DSy0Gus8UfJ+BWCArB8jheAui/FPbv//XwAe1nu/2RBN8XYSyM"
    "NOd/gJ/SU/o3SKB3eZIWOP89xT5KuQH+Jjd8RXi4/7P87o7TDhceRu734cgdP8b5VylrEvqSJ1X5m/xP8v/3eBq/"
    "cf+dmL2c8s4aYvXqW3qbG2ocZ3jucf9Fxtx4/rvcsPMGkgbEf5u93RL+v8T8B+XP6+MuxBfgT8rtSPx8iv8+q2ki"
    "/namf//x/Dt9/JbL4vF3M/19lrhdvP/XeU8TL12l/+0ncd9WyrtXTTnDLXXw9xKle1x2YYB/KXKq0uqncFmzkB5v"
    "TOjnaiSPx/XLQFrB+uvV4VE/5SF1iVM8z0F+nfqUYvH+Ali6p7Q=")

SMEM_PTX = """\
.version 8.0
.target sm_90a
.address_size 64

.extern .shared .align 16 .b8 dyn_smem[];

// Reverses each block of ntid.x floats of `in` into `out`, staging them in
// dynamic shared memory at byte offset `offset` (beyond 48 KiB in the test).
.visible .entry smem_reverse(
    .param .u64 smem_reverse_param_0,
    .param .u64 smem_reverse_param_1,
    .param .u32 smem_reverse_param_2
)
{
    .reg .b32 %r<12>;
    .reg .f32 %f<2>;
    .reg .b64 %rd<8>;

    ld.param.u64 %rd1, [smem_reverse_param_0];
    ld.param.u64 %rd2, [smem_reverse_param_1];
    ld.param.u32 %r1, [smem_reverse_param_2];
    cvta.to.global.u64 %rd3, %rd1;
    cvta.to.global.u64 %rd4, %rd2;
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    mul.wide.s32 %rd5, %r5, 4;
    add.s64 %rd6, %rd3, %rd5;
    ld.global.f32 %f1, [%rd6];
    mov.u32 %r6, dyn_smem;
    add.s32 %r7, %r6, %r1;
    shl.b32 %r8, %r4, 2;
    add.s32 %r9, %r7, %r8;
    st.shared.f32 [%r9], %f1;
    bar.sync 0;
    sub.s32 %r10, %r3, %r4;
    sub.s32 %r10, %r10, 1;
    shl.b32 %r10, %r10, 2;
    add.s32 %r11, %r7, %r10;
    ld.shared.f32 %f1, [%r11];
    add.s64 %rd7, %rd4, %rd5;
    st.global.f32 [%rd7], %f1;
    ret;
}
"""

CLUSTER_PTX = """\
.version 8.0
.target sm_90a
.address_size 64

// out[2*ctaid.x] = %cluster_ctarank, out[2*ctaid.x + 1] = %cluster_nctarank
.visible .entry cluster_rank(
    .param .u64 cluster_rank_param_0
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<5>;
    .reg .b64 %rd<5>;

    mov.u32 %r1, %tid.x;
    setp.ne.s32 %p1, %r1, 0;
    @%p1 bra $L_done;
    ld.param.u64 %rd1, [cluster_rank_param_0];
    cvta.to.global.u64 %rd2, %rd1;
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %cluster_ctarank;
    mov.u32 %r4, %cluster_nctarank;
    mul.wide.u32 %rd3, %r2, 8;
    add.s64 %rd4, %rd2, %rd3;
    st.global.u32 [%rd4], %r3;
    st.global.u32 [%rd4+4], %r4;
$L_done:
    ret;
}
"""

TMA_PTX = """\
.version 8.3
.target sm_90a
.address_size 64

// One 2-D TMA box per CTA: global (tensor map 0) -> shared -> global (tensor
// map 1), at box coordinates (ctaid.x * 64, ctaid.y * 64). Box 64 x 64
// 2-byte elements = 8192 bytes. The tensor maps are read through pointers to
// global memory (the flexattn "tensormap" parameter kind). The runtime writes
// them with a host-to-device copy, so the kernel acquires them into the
// tensormap proxy first (fence.proxy.tensormap, PTX 8.3; CUDA programming
// guide: scope .sys for a tensor map written with cudaMemcpy).
.visible .entry tma_copy(
    .param .u64 tma_copy_param_0,
    .param .u64 tma_copy_param_1
)
{
    .reg .pred %p<3>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    .shared .align 1024 .b8 tile[8192];
    .shared .align 8 .b64 mbar;

    mov.u32 %r1, %tid.x;
    setp.ne.s32 %p1, %r1, 0;
    @%p1 bra $L_done;
    ld.param.u64 %rd1, [tma_copy_param_0];
    ld.param.u64 %rd2, [tma_copy_param_1];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ctaid.y;
    shl.b32 %r4, %r2, 6;
    shl.b32 %r5, %r3, 6;
    fence.proxy.tensormap::generic.acquire.sys [%rd1], 128;
    fence.proxy.tensormap::generic.acquire.sys [%rd2], 128;
    mov.u32 %r6, mbar;
    mov.u32 %r7, tile;
    mbarrier.init.shared::cta.b64 [%r6], 1;
    fence.mbarrier_init.release.cluster;
    fence.proxy.async.shared::cta;
    mbarrier.arrive.expect_tx.shared::cta.b64 %rd3, [%r6], 8192;
    cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%r7], [%rd1, {%r4, %r5}], [%r6];
$L_wait:
    mbarrier.try_wait.parity.shared::cta.b64 %p2, [%r6], 0;
    @!%p2 bra $L_wait;
    cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%rd2, {%r4, %r5}], [%r7];
    cp.async.bulk.commit_group;
    cp.async.bulk.wait_group 0;
$L_done:
    ret;
}
"""

# The same without the tensormap acquire fences (PTX 8.0, as MLIR's +ptx80 emits).
TMA_PTX_NO_FENCE = "\n".join(
    line for line in TMA_PTX.replace(".version 8.3", ".version 8.0").splitlines()
    if "fence.proxy.tensormap" not in line) + "\n"

ALL_PTX = {"axpb": AXPB_PTX, "smem_reverse": SMEM_PTX, "cluster_rank": CLUSTER_PTX,
           "tma_copy": TMA_PTX, "tma_copy_no_fence": TMA_PTX_NO_FENCE}


def axpb_cubin() -> bytes:
    return zlib.decompress(base64.b64decode(AXPB_CUBIN_B64Z))


# ---------------------------------------------------------------------------
# Metadata helpers
# ---------------------------------------------------------------------------

B, H, M, N, D = 2, 3, 256, 256, 64
NQ, NK = M // 128, N // 128


def fake_ptx(entry: str, sizes: list[int]) -> bytes:
    """A PTX text whose entry has parameters of the given byte sizes (only the
    signature matters for the CPU-side checks)."""
    ty = {4: ".u32", 8: ".u64"}
    params = ",\n".join(f"    .param {ty[s]} {entry}_param_{i}" for i, s in enumerate(sizes))
    return (f".version 8.0\n.target sm_90a\n.address_size 64\n\n"
            f".visible .entry {entry}(\n{params}\n)\n{{\n    ret;\n}}\n").encode()


def attn_meta(**over) -> dict:
    """A valid metadata dict shaped like a flexattn forward kernel."""
    meta = {
        "version": 1,
        "key": "k-attn-0001",
        "entry": "flexattn_fwd",
        "target": "sm_90a",
        "binary": "attn.ptx",
        "binary_format": "ptx",
        "grid": [NQ, B * H, 1],
        "block": [384, 1, 1],
        "shared_mem_bytes": 200 * 1024,
        "arguments": [
            {"name": "q", "shape": [B, H, M, D], "dtype": "bfloat16"},
            {"name": "k", "shape": [B, H, N, D], "dtype": "bfloat16"},
            {"name": "v", "shape": [B, H, N, D], "dtype": "bfloat16"},
            {"name": "out", "shape": [B, H, M, D], "dtype": "bfloat16"},
            {"name": "lse", "shape": [B, H, M], "dtype": "float32"},
            {"name": "kv_num_blocks", "shape": [B, H, NQ], "dtype": "int32"},
            {"name": "kv_indices", "shape": [B, H, NQ, NK], "dtype": "int32"},
        ],
        "outputs": ["out", "lse"],
        "params": [
            {"kind": "tensormap", "arg": "q", "elem": "bf16", "box": [64, 128, 1, 1],
             "swizzle": "128B"},
            {"kind": "tensormap", "arg": "k", "elem": "bf16", "box": [64, 128],
             "swizzle": "128B", "view": [B * H * N, D]},
            {"kind": "tensormap", "arg": "v", "elem": "bf16", "box": [64, 128],
             "swizzle": "128B", "view": [B * H * N, D], "l2_promotion": "128B"},
            {"kind": "ptr", "arg": "out"},
            {"kind": "ptr", "arg": "lse"},
            {"kind": "ptr", "arg": "kv_num_blocks"},
            {"kind": "ptr", "arg": "kv_indices"},
            {"kind": "f32", "value": 0.125},
            {"kind": "i32", "value": N},
            {"kind": "i64", "value": -5},
        ],
        "spec": {"score_mod": "relative_bias", "mask_mod": "causal", "head_dim": D},
    }
    meta.update(over)
    return meta


ATTN_PARAM_SIZES = [8, 8, 8, 8, 8, 8, 8, 4, 4, 8]


def attn_binary() -> bytes:
    return fake_ptx("flexattn_fwd", ATTN_PARAM_SIZES)


def attn_tensors(device="cpu") -> dict[str, torch.Tensor]:
    return {
        "q": torch.randn(B, H, M, D, dtype=torch.bfloat16, device=device),
        "k": torch.randn(B, H, N, D, dtype=torch.bfloat16, device=device),
        "v": torch.randn(B, H, N, D, dtype=torch.bfloat16, device=device),
        "out": torch.empty(B, H, M, D, dtype=torch.bfloat16, device=device),
        "lse": torch.empty(B, H, M, dtype=torch.float32, device=device),
        "kv_num_blocks": torch.ones(B, H, NQ, dtype=torch.int32, device=device),
        "kv_indices": torch.zeros(B, H, NQ, NK, dtype=torch.int32, device=device),
    }


def fake_device(cc=(9, 0), optin=227 * 1024, threads=1024) -> drv.DeviceInfo:
    return drv.DeviceInfo(ordinal=0, name="Fake GPU", compute_capability=cc, sm_count=132,
                          max_threads_per_block=threads, max_shared_per_block=48 * 1024,
                          max_shared_per_block_optin=optin, max_shared_per_sm=228 * 1024)


# ---------------------------------------------------------------------------
# (a) no MLIR anywhere
# ---------------------------------------------------------------------------

BLOCKED = ("mlir", "torch_mlir", "flexattn_mlir")


def test_import_without_mlir(tmp_path):
    """flexattn_runtime imports, writes and lists artifacts with mlir, torch_mlir
    and flexattn_mlir made unimportable, and never imports them."""
    script = textwrap.dedent(f"""
        import sys
        BLOCKED = {BLOCKED!r}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked for this test: " + name)
                return None

        sys.meta_path.insert(0, Blocker())
        for name in BLOCKED:
            try:
                __import__(name)
            except ImportError:
                pass
            else:
                raise SystemExit("blocker failed for " + name)

        import flexattn_runtime
        import flexattn_runtime.driver, flexattn_runtime.kernel, flexattn_runtime.launch
        import flexattn_runtime.metadata, flexattn_runtime.tensormap
        import flexattn_runtime.artifacts, flexattn_runtime.errors
        from flexattn_runtime.__main__ import main

        import json
        meta = {json.dumps(attn_meta())!r}
        flexattn_runtime.write_kernel({str(tmp_path)!r}, "attn", json.loads(meta),
                                      {attn_binary()!r})
        store = flexattn_runtime.ArtifactStore({str(tmp_path)!r})
        assert store.keys() == ["k-attn-0001"], store.keys()
        rc = main([{str(tmp_path)!r}])
        assert rc == 0, rc
        bad = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not bad, bad
        print("RUNTIME-IMPORT-OK")
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(RUNTIME_DIR) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=env, cwd=str(tmp_path), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "RUNTIME-IMPORT-OK" in r.stdout
    assert "flexattn_fwd" in r.stdout


def test_no_mlir_imports_in_source():
    """No module of the package names mlir, torch_mlir or flexattn_mlir in an import."""
    import ast

    pkg = RUNTIME_DIR / "flexattn_runtime"
    for path in pkg.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for n in names:
                assert n.split(".")[0] not in BLOCKED, f"{path.name} imports {n}"


# ---------------------------------------------------------------------------
# (b) metadata validation
# ---------------------------------------------------------------------------

def test_valid_metadata_parses():
    m = parse_metadata(attn_meta())
    assert m.grid == (NQ, B * H, 1) and m.block == (384, 1, 1) and m.cluster == (1, 1, 1)
    assert m.argument_names == ("q", "k", "v", "out", "lse", "kv_num_blocks", "kv_indices")
    assert m.argument("lse").dtype == torch.float32
    assert m.outputs == ("out", "lse")
    q = m.params[0]
    assert (q.elem, q.box, q.swizzle, q.l2_promotion, q.oob_fill, q.interleave, q.view) == \
        ("bf16", (64, 128, 1, 1), "128B", "256B", "zero", "none", None)
    assert m.params[2].l2_promotion == "128B"
    assert m.spec["mask_mod"] == "causal"
    assert m.to_dict() == attn_meta()
    k = Kernel(attn_meta(), attn_binary())
    assert k.key == "k-attn-0001" and k.entry == "flexattn_fwd"


def _drop(d: dict, key: str) -> dict:
    d = dict(d)
    del d[key]
    return d


def _param(i, **over):
    m = attn_meta()
    m["params"] = [dict(p) for p in m["params"]]
    m["params"][i].update(over)
    return m


def _no_value(i):
    m = _param(i)
    del m["params"][i]["value"]
    return m


BAD_METADATA = [
    (attn_meta(version=2), "version: expected 1, got 2"),
    (_drop(attn_meta(), "entry"), "entry: missing required field"),
    (attn_meta(target="sm90"), "target: expected 'sm_<major><minor>[a|f]'"),
    (attn_meta(binary="../attn.ptx"), "binary: must be a plain file name"),
    (attn_meta(binary_format="elf"), "binary_format: expected one of ['ptx', 'cubin']"),
    (attn_meta(grid=[0, 1, 1]), "grid[0]: must be >= 1, got 0"),
    (attn_meta(grid=[1, 70000, 1]), "grid[1]: must be <= 65535"),
    (attn_meta(block=[32, 32, 2]), "block: [32, 32, 2] is 2048 threads; at most 1024"),
    (attn_meta(block=[128, 1, 1, 1]), "block: expected 1..3 entries, got 4"),
    (attn_meta(grid=[3, 6, 1], cluster=[2, 1, 1]), "grid [3, 6, 1] is not a multiple of cluster"),
    (attn_meta(cluster=[4, 4, 1]), "the portable maximum is 8"),
    (attn_meta(shared_mem_bytes=-1), "shared_mem_bytes: must be >= 0"),
    (attn_meta(shared_mem_bytes=1.5), "shared_mem_bytes: expected an integer"),
    (attn_meta(arguments=[{"name": "q", "shape": [1], "dtype": "bfloat16"}] * 2, params=[],
               outputs=[]), "arguments[1].name: duplicate argument name 'q'"),
    (attn_meta(arguments=[{"name": "q", "shape": [1], "dtype": "complex32"}], params=[],
               outputs=[]), "arguments[0].dtype: unknown dtype 'complex32'"),
    (attn_meta(arguments=[{"name": "q", "shape": [-1], "dtype": "bf16"}], params=[],
               outputs=[]), "arguments[0].shape[0]: must be >= 0"),
    (attn_meta(outputs=["o"]), "outputs[0]: names no argument: 'o'"),
    (_param(3, arg="outt"), "params[3].arg: names no argument: 'outt'"),
    (_param(3, kind="ptr64"), "params[3].kind: expected one of"),
    (_param(7, value="x"), "params[7].value: expected a number"),
    (_param(8, value=1 << 31), "params[8].value: must be <= 2147483647"),
    (_param(8, value=True), "params[8].value: expected an integer"),
    (_no_value(9), "params[9]: i64 parameter needs a 'value'"),
    (_param(0, elem="f16"), "params[0].elem: 'f16' does not match argument 'q' of dtype bfloat16"),
    (_param(0, box=[64, 128]), "box [64, 128] has 2 entries; the tensor map has rank 4"),
    (_param(0, box=[128, 128, 1, 1]), "swizzle 128B allows at most 128 bytes"),
    (_param(0, box=[64, 512, 1, 1]), "box[1] is 512; TMA needs 1..256"),
    (_param(0, box=[4, 128, 1, 1], swizzle="none"), "= 8 bytes; the innermost box dimension "
                                                     "must be a multiple of 16 bytes"),
    (_param(1, view=[B * H, D]), "view [6, 64] has 384 elements, the tensor has 98304"),
    (_param(0, swizzle="256B"), "params[0].swizzle: expected one of"),
    (_param(0, interleave="16B"), "params[0].interleave: expected one of ['none']"),
    (attn_meta(arguments=[{"name": "x", "shape": [4, 6], "dtype": "bf16"}], outputs=[],
               params=[{"kind": "tensormap", "arg": "x", "elem": "bf16", "box": [8, 4]}]),
     "global stride 1 (innermost first) is 12 bytes; TMA needs multiples of 16 bytes"),
    (attn_meta(arguments=[{"name": "x", "shape": [0, 8], "dtype": "bf16"}], outputs=[],
               params=[{"kind": "tensormap", "arg": "x", "elem": "bf16", "box": [8, 1]}]),
     "dimension 1 (innermost first) is 0; TMA needs 1..2^32"),
    (attn_meta(spec=[1]), "spec: expected an object"),
]


@pytest.mark.parametrize("meta,message", BAD_METADATA,
                         ids=[f"{i}" for i in range(len(BAD_METADATA))])
def test_bad_metadata(meta, message):
    with pytest.raises(MetadataError) as e:
        parse_metadata(meta)
    assert message in str(e.value)


def test_metadata_vs_ptx_signature():
    # one parameter too few in the PTX
    with pytest.raises(MetadataError, match=r"takes 9 parameters of .* but the metadata "
                                            r"lists 10"):
        Kernel(attn_meta(), fake_ptx("flexattn_fwd", ATTN_PARAM_SIZES[:-1]))
    # an i64 where the PTX has a 32-bit parameter
    with pytest.raises(MetadataError, match="takes 10 parameters"):
        Kernel(attn_meta(), fake_ptx("flexattn_fwd", ATTN_PARAM_SIZES[:-1] + [4]))
    with pytest.raises(MetadataError, match=r"the PTX has no kernel 'flexattn_fwd' "
                                            r"\(entries: \['other'\]\)"):
        Kernel(attn_meta(), fake_ptx("other", ATTN_PARAM_SIZES))
    # cubins are not parsed, but must be ELF (or fatbin)
    Kernel(attn_meta(binary_format="cubin", binary="attn.cubin"), b"\x7fELF not parsed")
    with pytest.raises(MetadataError, match="neither an ELF cubin nor a fatbin"):
        Kernel(attn_meta(binary_format="cubin", binary="attn.cubin"), attn_binary())


def test_ptx_param_sizes():
    assert ptx_entry_param_sizes(AXPB_PTX, "axpb") == [8, 8, 8, 4, 4, 8]
    assert ptx_entry_param_sizes(SMEM_PTX, "smem_reverse") == [8, 8, 4]
    assert ptx_entry_param_sizes(CLUSTER_PTX, "cluster_rank") == [8]
    assert ptx_entry_param_sizes(TMA_PTX, "tma_copy") == [8, 8]
    grid_const = ".visible .entry k(\n .param .align 64 .b8 k_param_0[128], // tmap\n" \
                 " .param .u32 k_param_1\n)\n{ ret; }"
    assert ptx_entry_param_sizes(grid_const, "k") == [128, 4]
    assert ptx_entry_param_sizes(".visible .entry k()\n{ ret; }", "k") == []
    assert ptx_entry_param_sizes(".visible .entry other()\n{ ret; }", "k") is None


def test_target_compatibility():
    ok = target_incompatibility
    assert ok("sm_90a", "ptx", (9, 0)) is None
    assert ok("sm_90a", "cubin", (9, 0)) is None
    assert "runs only on compute capability 9.0; this device has 10.0" in \
        ok("sm_90a", "ptx", (10, 0))
    assert ok("sm_90a", "ptx", (8, 0)) is not None
    assert ok("sm_80", "ptx", (9, 0)) is None            # PTX JITs forward
    assert ok("sm_80", "cubin", (9, 0)) is not None      # SASS does not cross majors
    assert ok("sm_86", "cubin", (8, 9)) is None
    assert ok("sm_89", "cubin", (8, 6)) is not None
    assert ok("sm_100f", "cubin", (10, 3)) is None
    assert ok("sm_100f", "ptx", (12, 0)) is not None
    assert ok("sm_90", "ptx", (8, 9)) is not None


def test_check_device_errors():
    k = Kernel(attn_meta(), attn_binary())
    k.check_device(fake_device())
    with pytest.raises(UnsupportedDevice, match=r"cannot run on cuda:0 \(Fake GPU, compute "
                                                r"capability 8.0\): sm_90a code"):
        k.check_device(fake_device(cc=(8, 0)))
    with pytest.raises(OutOfResources) as e:
        k.check_device(fake_device(optin=100 * 1024))
    assert "needs 204800 bytes of dynamic shared memory" in str(e.value)
    assert "allows at most 102400 bytes per block" in str(e.value)
    assert (e.value.required, e.value.limit, e.value.resource) == \
        (204800, 102400, "shared memory")
    with pytest.raises(OutOfResources, match="uses 384 threads per block"):
        k.check_device(fake_device(threads=256))
    kc = Kernel(attn_meta(cluster=[2, 1, 1], grid=[2, 6, 1], target="sm_80"), attn_binary())
    with pytest.raises(UnsupportedDevice, match="thread-block clusters"):
        kc.check_device(fake_device(cc=(8, 0)))


# ---------------------------------------------------------------------------
# (b) argument validation (pure; CPU tensors)
# ---------------------------------------------------------------------------

CPU = torch.device("cpu")


@pytest.fixture
def meta():
    return parse_metadata(attn_meta())


def test_valid_arguments(meta):
    t = attn_tensors()
    got = validate_args(meta, t, device=CPU)
    assert [x is t[n] for n, x in zip(meta.argument_names, got)] == [True] * 7
    got = validate_args(meta, [t[n] for n in meta.argument_names], device=CPU)
    assert got[0] is t["q"]
    # size-1 dims with odd strides are still contiguous and accepted
    odd = torch.empty(1, H, NQ, dtype=torch.int32).as_strided((1, H, NQ), (12345, NQ, 1))
    assert odd.is_contiguous()
    validate_args(meta, dict(t, kv_num_blocks=odd.expand(B, H, NQ).contiguous()), device=CPU)


def _bad(meta, name, value, exc, message, device=CPU):
    t = attn_tensors()
    t[name] = value
    with pytest.raises(exc) as e:
        validate_args(meta, t, device=device)
    assert message in str(e.value), str(e.value)
    return e.value


def test_wrong_dtype(meta):
    e = _bad(meta, "q", torch.randn(B, H, M, D, dtype=torch.float16), ArgumentTypeError,
             "argument 'q': expected dtype bfloat16, got float16")
    assert isinstance(e, TypeError) and isinstance(e, ValueError)


def test_wrong_shape(meta):
    _bad(meta, "lse", torch.empty(B, H, M + 1), ArgumentError,
         "argument 'lse': expected shape [2, 3, 256], got [2, 3, 257]")
    _bad(meta, "kv_indices", torch.zeros(B, H, NQ, dtype=torch.int32), ArgumentError,
         "argument 'kv_indices': expected shape [2, 3, 2, 2], got [2, 3, 2]")


def test_non_contiguous(meta):
    kt = torch.randn(B, H, D, N, dtype=torch.bfloat16).transpose(2, 3)
    _bad(meta, "k", kt, ArgumentError,
         "argument 'k': expected a contiguous (row-major) tensor, got strides "
         f"[{H * D * N}, {D * N}, 1, {N}] for shape [2, 3, 256, 64]")


def test_cpu_tensor_where_cuda_expected(meta):
    t = attn_tensors()
    with pytest.raises(ArgumentError) as e:
        validate_args(meta, t, device=torch.device("cuda", 0))
    assert str(e.value) == "argument 'q': expected a CUDA tensor on cuda:0, got a CPU tensor"


def test_misaligned(meta):
    flat = torch.empty(B * H * M * D + 8, dtype=torch.bfloat16)
    mis = flat[1:1 + B * H * M * D].view(B, H, M, D)
    assert mis.is_contiguous() and mis.data_ptr() % 16 == 2
    _bad(meta, "v", mis, ArgumentError,
         "argument 'v': data_ptr %#x is not 16-byte aligned (storage offset 1 elements)"
         % mis.data_ptr())
    # 8 elements = 16 bytes of offset is aligned
    ok = flat[8:8 + B * H * M * D].view(B, H, M, D)
    t = dict(attn_tensors(), v=ok)
    validate_args(meta, t, device=CPU)


def test_not_a_tensor_and_arity(meta):
    _bad(meta, "kv_num_blocks", [1, 2], ArgumentTypeError,
         "argument 'kv_num_blocks': expected a torch.Tensor (kv_num_blocks: int32[2, 3, 2]), "
         "got list")
    t = attn_tensors()
    del t["lse"]
    with pytest.raises(ArgumentTypeError, match=r"missing argument\(s\) \['lse'\]"):
        validate_args(meta, t, device=CPU)
    with pytest.raises(ArgumentTypeError, match=r"unexpected argument\(s\) \['bias'\]"):
        validate_args(meta, dict(attn_tensors(), bias=torch.zeros(1)), device=CPU)
    with pytest.raises(ArgumentTypeError, match="expected 7 arguments"):
        validate_args(meta, list(attn_tensors().values())[:6], device=CPU)
    with pytest.raises(ArgumentTypeError, match="must be a dict"):
        validate_args(meta, 42, device=CPU)


def test_output_aliasing(meta):
    t = attn_tensors()
    t["out"] = t["q"]
    with pytest.raises(ArgumentError, match="output 'out' overlaps argument 'q'"):
        validate_args(meta, t, device=CPU)


def test_build_params(meta):
    t = attn_tensors()
    tensors = validate_args(meta, t, device=CPU)
    seen = []

    def tmap(i, p, x):
        seen.append((i, p.arg, x is t[p.arg]))
        return 0x7000 + i * 0x100

    params = build_params(meta, tensors, tmap)
    assert seen == [(0, "q", True), (1, "k", True), (2, "v", True)]
    assert [type(p) for p in params] == [ctypes.c_uint64] * 7 + \
        [ctypes.c_float, ctypes.c_int32, ctypes.c_int64]
    assert [p.value for p in params[:3]] == [0x7000, 0x7100, 0x7200]
    assert params[3].value == t["out"].data_ptr()
    assert params[6].value == t["kv_indices"].data_ptr()
    assert (params[7].value, params[8].value, params[9].value) == (0.125, N, -5)
    assert [ctypes.sizeof(p) for p in params] == ATTN_PARAM_SIZES


def test_call_without_cuda_raises():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    k = Kernel(attn_meta(), attn_binary())
    with pytest.raises(UnsupportedDevice, match="no CUDA device is available"):
        k(attn_tensors())


# ---------------------------------------------------------------------------
# (d) tensor map parameters (pure)
# ---------------------------------------------------------------------------

def test_tensormap_geometry_bhmd():
    """[B, H, M, D] bf16, box [64, 128, 1, 1]: dims/strides innermost first."""
    dims, strides = tensormap_geometry([2, 3, 256, 64], 2)
    assert dims == (64, 256, 3, 2)
    assert strides == (64 * 2, 256 * 64 * 2, 3 * 256 * 64 * 2) == (128, 32768, 98304)
    check_tensormap(dims, strides, (64, 128, 1, 1), 2, "128B")

    p = parse_metadata(attn_meta()).params[0]
    enc = encoding_for(p, (2, 3, 256, 64), 0x7F0000001000)
    assert enc.rank == 4
    assert enc.data_type == drv.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 == 9
    assert enc.global_address == 0x7F0000001000
    assert enc.global_dim == (64, 256, 3, 2)
    assert enc.global_strides == (128, 32768, 98304)
    assert enc.box_dim == (64, 128, 1, 1)
    assert enc.element_strides == (1, 1, 1, 1)
    assert enc.interleave == drv.CU_TENSOR_MAP_INTERLEAVE_NONE == 0
    assert enc.swizzle == drv.CU_TENSOR_MAP_SWIZZLE_128B == 3
    assert enc.l2_promotion == drv.CU_TENSOR_MAP_L2_PROMOTION_L2_256B == 3
    assert enc.oob_fill == drv.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE == 0
    with pytest.raises(ValueError, match="not 16-byte aligned"):
        encoding_for(p, (2, 3, 256, 64), 0x7F0000001008)


def test_tensormap_view_and_kinds():
    # "view": [B*H*N, D] merges the outer dims
    dims, strides = tensormap_geometry([2, 3, 256, 64], 2, view=[2 * 3 * 256, 64])
    assert (dims, strides) == ((64, 1536), (128,))
    p = parse_metadata(attn_meta()).params[2]
    enc = encoding_for(p, (2, 3, 256, 64), 0x1000)
    assert enc.global_dim == (64, 1536) and enc.global_strides == (128,)
    assert enc.box_dim == (64, 128)
    assert enc.l2_promotion == drv.CU_TENSOR_MAP_L2_PROMOTION_L2_128B
    # rank 1: no strides
    assert tensormap_geometry([1024], 4) == ((1024,), ())
    # f32 lse [B, H, M]
    assert tensormap_geometry([2, 3, 256], 4) == ((256, 3, 2), (1024, 3072))
    meta = attn_meta(params=[{"kind": "tensormap", "arg": "lse", "elem": "f32",
                              "box": [128, 1, 1], "oob_fill": "nan", "l2_promotion": "none",
                              "swizzle": "none"}], outputs=["lse"])
    enc = encoding_for(parse_metadata(meta).params[0], (2, 3, 256), 0x2000)
    assert enc.data_type == drv.CU_TENSOR_MAP_DATA_TYPE_FLOAT32 == 7
    assert (enc.oob_fill, enc.l2_promotion, enc.swizzle) == (1, 0, 0)


def test_descriptor_cache_lru():
    made = []

    def maker(k):
        def make():
            made.append(k)
            return k
        return make

    c = DescriptorCache(maxsize=2)
    assert c.get("a", maker("a")) == "a"
    assert c.get("b", maker("b")) == "b"
    assert c.get("a", maker("a")) == "a"       # hit; a is now most recent
    c.get("c", maker("c"))                     # evicts b
    assert made == ["a", "b", "c"] and len(c) == 2
    c.get("b", maker("b"))
    assert made == ["a", "b", "c", "b"]
    assert (c.hits, c.misses) == (1, 4)


def test_launch_structs_match_cuda_h():
    """Layouts checked against CUDA 13.0's cuda.h (sizeof/offsetof)."""
    assert ctypes.sizeof(drv.CUlaunchConfig) == 56
    assert drv.CUlaunchConfig.hStream.offset == 32
    assert drv.CUlaunchConfig.attrs.offset == 40
    assert drv.CUlaunchConfig.numAttrs.offset == 48
    assert ctypes.sizeof(drv.CUlaunchAttribute) == 72
    assert drv.CUlaunchAttribute.value.offset == 8
    assert ctypes.alignment(drv.CUlaunchAttribute) == 8


def test_driver_constants_match_cuda_bindings():
    """The hard-coded driver enums agree with cuda.bindings (when installed)."""
    cb = pytest.importorskip("cuda.bindings.driver")
    pairs = {
        "CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK": cb.CUdevice_attribute,
        "CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK": cb.CUdevice_attribute,
        "CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT": cb.CUdevice_attribute,
        "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR": cb.CUdevice_attribute,
        "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR": cb.CUdevice_attribute,
        "CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR": cb.CUdevice_attribute,
        "CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN": cb.CUdevice_attribute,
        "CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK": cb.CUfunction_attribute,
        "CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES": cb.CUfunction_attribute,
        "CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES": cb.CUfunction_attribute,
        "CU_FUNC_ATTRIBUTE_NUM_REGS": cb.CUfunction_attribute,
        "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES": cb.CUfunction_attribute,
        "CU_JIT_INFO_LOG_BUFFER": cb.CUjit_option,
        "CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES": cb.CUjit_option,
        "CU_JIT_ERROR_LOG_BUFFER": cb.CUjit_option,
        "CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES": cb.CUjit_option,
        "CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION": cb.CUlaunchAttributeID,
        "CU_TENSOR_MAP_DATA_TYPE_INT32": cb.CUtensorMapDataType,
        "CU_TENSOR_MAP_DATA_TYPE_FLOAT16": cb.CUtensorMapDataType,
        "CU_TENSOR_MAP_DATA_TYPE_FLOAT32": cb.CUtensorMapDataType,
        "CU_TENSOR_MAP_DATA_TYPE_BFLOAT16": cb.CUtensorMapDataType,
        "CU_TENSOR_MAP_INTERLEAVE_NONE": cb.CUtensorMapInterleave,
        "CU_TENSOR_MAP_SWIZZLE_NONE": cb.CUtensorMapSwizzle,
        "CU_TENSOR_MAP_SWIZZLE_32B": cb.CUtensorMapSwizzle,
        "CU_TENSOR_MAP_SWIZZLE_64B": cb.CUtensorMapSwizzle,
        "CU_TENSOR_MAP_SWIZZLE_128B": cb.CUtensorMapSwizzle,
        "CU_TENSOR_MAP_L2_PROMOTION_NONE": cb.CUtensorMapL2promotion,
        "CU_TENSOR_MAP_L2_PROMOTION_L2_64B": cb.CUtensorMapL2promotion,
        "CU_TENSOR_MAP_L2_PROMOTION_L2_128B": cb.CUtensorMapL2promotion,
        "CU_TENSOR_MAP_L2_PROMOTION_L2_256B": cb.CUtensorMapL2promotion,
        "CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE": cb.CUtensorMapFloatOOBfill,
        "CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA": cb.CUtensorMapFloatOOBfill,
    }
    for name, enum in pairs.items():
        assert int(getattr(enum, name)) == getattr(drv, name), name


def test_cuda_error_message():
    e = drv.CudaError("cuModuleLoadData", 218, "CUDA_ERROR_INVALID_PTX",
                      "a PTX JIT compilation failed", "JIT log:\nline 3: error")
    assert str(e).startswith("cuModuleLoadData failed: CUDA_ERROR_INVALID_PTX (218): "
                             "a PTX JIT compilation failed\nJIT log:")
    assert (e.func, e.code, e.name) == ("cuModuleLoadData", 218, "CUDA_ERROR_INVALID_PTX")


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="needs ptxas (CUDA toolkit)")
@pytest.mark.parametrize("name", sorted(ALL_PTX))
def test_hand_written_ptx_assembles(name, tmp_path):
    src = tmp_path / f"{name}.ptx"
    src.write_text(ALL_PTX[name])
    r = subprocess.run(["ptxas", "-arch=sm_90a", str(src), "-o", str(tmp_path / "k.cubin")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------
# The ctypes driver layer against a stub libcuda (no GPU needed)
# ---------------------------------------------------------------------------
# The stub is compiled against the CUDA toolkit's cuda.h, so its functions have
# cuda.h's exact prototypes and exported names; it records what it receives.
# This checks the ctypes marshalling (argument order and types, struct layouts,
# kernel-parameter arrays) that otherwise only a GPU would exercise.

STUB_LIBCUDA_C = r"""
/* A fake libcuda: the driver entry points flexattn_runtime calls, with cuda.h's
   exact prototypes (compiled against cuda.h, so a mismatch fails to compile),
   recording what they receive. Test-only. */
#include <cuda.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static char last_call[64];
static unsigned long long rec[128];
static int nrec;
static CUresult next_error = CUDA_SUCCESS;
static int param_sizes[120];
static int nparams;
static int func_attr[32];
static CUcontext cur_ctx;
static unsigned char image_head[64];
static unsigned long long image_len;
static int nloads;

static void R(const char *name) { strncpy(last_call, name, 63); nrec = 0; }
static void P(unsigned long long v) { if (nrec < 128) rec[nrec++] = v; }
#define RET { CUresult e_ = next_error; next_error = CUDA_SUCCESS; return e_; }

const char *stub_last_call(void) { return last_call; }
int stub_nrec(void) { return nrec; }
unsigned long long stub_rec(int i) { return rec[i]; }
void stub_fail_next(int code) { next_error = (CUresult)code; }
void stub_reset(void) { nloads = 0; cur_ctx = 0; next_error = CUDA_SUCCESS; }
void stub_set_param_sizes(int n, const int *s) { nparams = n < 120 ? n : 120; memcpy(param_sizes, s, nparams * sizeof(int)); }
void stub_set_func_attr(int a, int v) { func_attr[a] = v; }
unsigned long long stub_image_len(void) { return image_len; }
int stub_nloads(void) { return nloads; }
const unsigned char *stub_image_head(void) { return image_head; }

static void record_params(void **params) {
  for (int i = 0; i < nparams; i++) {
    unsigned long long v = 0;
    memcpy(&v, params[i], param_sizes[i] < 8 ? param_sizes[i] : 8);  /* the first 8 bytes */
    P(v);
  }
}

CUresult CUDAAPI cuInit(unsigned int flags) { R("cuInit"); P(flags); RET }
CUresult CUDAAPI cuDriverGetVersion(int *v) { *v = 13000; RET }
CUresult CUDAAPI cuGetErrorName(CUresult e, const char **s) {
  *s = e == CUDA_ERROR_INVALID_PTX ? "CUDA_ERROR_INVALID_PTX" : "CUDA_ERROR_STUB"; return CUDA_SUCCESS; }
CUresult CUDAAPI cuGetErrorString(CUresult e, const char **s) { *s = "stub error text"; return CUDA_SUCCESS; }
CUresult CUDAAPI cuDeviceGetCount(int *n) { *n = 1; RET }
CUresult CUDAAPI cuDeviceGet(CUdevice *d, int ordinal) { *d = ordinal + 100; RET }
CUresult CUDAAPI cuDeviceGetName(char *name, int len, CUdevice d) { snprintf(name, len, "Stub GPU %d", d); RET }
CUresult CUDAAPI cuDeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice d) {
  switch (a) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = 132; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *v = 49152; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = 232448; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *v = 233472; break;
    default: *v = -1;
  }
  (void)d; RET }
CUresult CUDAAPI cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) {
  R("cuDevicePrimaryCtxRetain"); P(d); *c = (CUcontext)(uintptr_t)(0xC0000 + d); RET }
CUresult CUDAAPI cuCtxGetCurrent(CUcontext *c) { *c = cur_ctx; RET }
CUresult CUDAAPI cuCtxSetCurrent(CUcontext c) { R("cuCtxSetCurrent"); P((uintptr_t)c); cur_ctx = c; RET }
CUresult CUDAAPI cuModuleLoadData(CUmodule *m, const void *image) {
  R("cuModuleLoadData");
  nloads++;
  image_len = strlen((const char *)image);
  memcpy(image_head, image, 63);
  if (memcmp(image, "BAD", 3) == 0) return CUDA_ERROR_INVALID_PTX;
  *m = (CUmodule)(uintptr_t)0x30D0; RET }
CUresult CUDAAPI cuModuleLoadDataEx(CUmodule *m, const void *image, unsigned int n,
                                    CUjit_option *opts, void **vals) {
  char *err = 0; size_t size = 0;
  for (unsigned i = 0; i < n; i++) {
    if (opts[i] == CU_JIT_ERROR_LOG_BUFFER) err = (char *)vals[i];
    if (opts[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES) size = (size_t)(uintptr_t)vals[i];
  }
  if (err && size > 40) snprintf(err, size, "line 3; error: stub rejects %.3s", (const char *)image);
  (void)m; return CUDA_ERROR_INVALID_PTX; }
CUresult CUDAAPI cuModuleUnload(CUmodule m) { (void)m; RET }
CUresult CUDAAPI cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) {
  R("cuModuleGetFunction"); P((uintptr_t)m); P(strlen(name));
  if (strcmp(name, "missing") == 0) return CUDA_ERROR_NOT_FOUND;
  *f = (CUfunction)(uintptr_t)0xF00; RET }
CUresult CUDAAPI cuFuncGetAttribute(int *v, CUfunction_attribute a, CUfunction f) {
  (void)f; *v = func_attr[a]; RET }
CUresult CUDAAPI cuFuncSetAttribute(CUfunction f, CUfunction_attribute a, int v) {
  R("cuFuncSetAttribute"); P((uintptr_t)f); P(a); P(v); func_attr[a] = v; RET }
CUresult CUDAAPI cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                unsigned int bx, unsigned int by, unsigned int bz,
                                unsigned int smem, CUstream s, void **params, void **extra) {
  R("cuLaunchKernel");
  P((uintptr_t)f); P(gx); P(gy); P(gz); P(bx); P(by); P(bz); P(smem); P((uintptr_t)s);
  P(extra == 0);
  record_params(params);
  RET }
CUresult CUDAAPI cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra) {
  R("cuLaunchKernelEx");
  P((uintptr_t)f); P(c->gridDimX); P(c->gridDimY); P(c->gridDimZ); P(c->blockDimX);
  P(c->blockDimY); P(c->blockDimZ); P(c->sharedMemBytes); P((uintptr_t)c->hStream);
  P(extra == 0); P(c->numAttrs); P(c->attrs[0].id); P(c->attrs[0].value.clusterDim.x);
  P(c->attrs[0].value.clusterDim.y); P(c->attrs[0].value.clusterDim.z);
  record_params(params);
  RET }
CUresult CUDAAPI cuTensorMapEncodeTiled(CUtensorMap *tm, CUtensorMapDataType dt, cuuint32_t rank,
    void *addr, const cuuint64_t *dims, const cuuint64_t *strides, const cuuint32_t *box,
    const cuuint32_t *es, CUtensorMapInterleave il, CUtensorMapSwizzle sw,
    CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
  R("cuTensorMapEncodeTiled");
  P(((uintptr_t)tm) % 128); P(dt); P(rank); P((uintptr_t)addr);
  for (unsigned i = 0; i < rank; i++) P(dims[i]);
  for (unsigned i = 0; i + 1 < rank; i++) P(strides[i]);
  for (unsigned i = 0; i < rank; i++) P(box[i]);
  for (unsigned i = 0; i < rank; i++) P(es[i]);
  P(il); P(sw); P(l2); P(oob);
  unsigned char *b = (unsigned char *)tm;
  for (int i = 0; i < 128; i++) b[i] = (unsigned char)(i * 7 + rank);
  RET }
"""


def _cuda_include() -> str | None:
    cands = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"]
    cands += sorted(str(p) for p in Path("/usr/local").glob("cuda-*"))
    for c in cands:
        if c and (Path(c) / "include" / "cuda.h").exists():
            return str(Path(c) / "include")
    return None


def build_stub_libcuda(directory: Path) -> Path | None:
    """Compiles STUB_LIBCUDA_C into ``directory``; None without a C compiler
    or cuda.h (bench/gpu_hit_profile.py uses it too)."""
    inc, cc = _cuda_include(), shutil.which("gcc") or shutil.which("cc")
    if inc is None or cc is None:
        return None
    (directory / "stub.c").write_text(STUB_LIBCUDA_C)
    so = directory / "libcuda_stub.so"
    r = subprocess.run([cc, "-Wall", "-Werror", "-shared", "-fPIC", f"-I{inc}",
                        str(directory / "stub.c"), "-o", str(so)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return so


@pytest.fixture(scope="session")
def stub_libcuda(tmp_path_factory):
    so = build_stub_libcuda(tmp_path_factory.mktemp("stub"))
    if so is None:
        pytest.skip("needs a C compiler and the CUDA toolkit's cuda.h")
    lib = ctypes.CDLL(str(so))
    lib.stub_rec.restype = ctypes.c_ulonglong
    lib.stub_last_call.restype = ctypes.c_char_p
    lib.stub_image_len.restype = ctypes.c_ulonglong
    return str(so), lib


@pytest.fixture
def stub(stub_libcuda, monkeypatch):
    """flexattn_runtime.driver bound to the stub for one test (state restored after)."""
    from flexattn_runtime import kernel as kernel_mod

    path, lib = stub_libcuda
    monkeypatch.setattr(drv, "_LIB_NAMES", [path])
    for name, value in [("_lib_handle", None), ("_lib_error", None), ("_functions", {}),
                        ("_initialized", False), ("_primary", {}), ("_device_info", {})]:
        monkeypatch.setattr(drv, name, value)
    monkeypatch.setattr(kernel_mod, "_modules", {})
    lib.stub_reset()
    lib.stub_set_func_attr(drv.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, 0)
    lib.stub_set_func_attr(drv.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 0)
    lib.stub_set_func_attr(drv.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 1024)
    lib.stub_set_func_attr(drv.CU_FUNC_ATTRIBUTE_NUM_REGS, 128)

    class Stub:
        def last(self):
            return lib.stub_last_call().decode()

        def rec(self):
            return [lib.stub_rec(i) for i in range(lib.stub_nrec())]

        def __getattr__(self, name):
            return getattr(lib, name)

    return Stub()


def test_stub_context_and_device_info(stub):
    ctx = drv.ensure_context(0)
    assert ctx == 0xC0000 + 100
    assert stub.last() == "cuCtxSetCurrent" and stub.rec() == [ctx]
    stub.stub_fail_next(0)
    assert drv.ensure_context(0) == ctx          # already current: no second set
    info = drv.device_info(0)
    assert info == drv.DeviceInfo(0, "Stub GPU 100", (9, 0), 132, 1024, 49152, 232448, 233472)
    assert info.arch == "sm_90"
    assert drv.driver_version() == 13000


def test_stub_errors_are_typed(stub):
    drv.init()
    stub.stub_fail_next(1)
    with pytest.raises(drv.CudaError) as e:
        drv.func_get_attribute(0xF00, drv.CU_FUNC_ATTRIBUTE_NUM_REGS)
    assert str(e.value) == "cuFuncGetAttribute failed: CUDA_ERROR_STUB (1): stub error text"
    assert (e.value.func, e.value.code) == ("cuFuncGetAttribute", 1)
    drv.init()
    with pytest.raises(drv.CudaError, match="(?s)cuModuleGetFunction failed: .*'missing'"):
        drv.module_get_function(0x30D0, "missing")


def test_stub_module_load(stub):
    ptx = AXPB_PTX.encode()
    drv.init()
    assert drv.module_load(ptx, ptx=True) == 0x30D0
    assert stub.stub_image_len() == len(ptx)                     # NUL-terminated
    assert drv.module_load(ptx + b"\0", ptx=True) == 0x30D0     # not doubled
    assert stub.stub_image_len() == len(ptx)
    with pytest.raises(drv.CudaError) as e:
        drv.module_load(b"BAD ptx", ptx=True)
    assert e.value.name == "CUDA_ERROR_INVALID_PTX" and e.value.func == "cuModuleLoadData"
    assert "JIT log:\nline 3; error: stub rejects BAD" in str(e.value)


def test_stub_kernel_load_checks(stub):
    k = Kernel(attn_meta(), attn_binary())
    lf = k.load(0)
    assert (lf.device, lf.module, lf.function, lf.num_regs) == (0, 0x30D0, 0xF00, 128)
    assert stub.stub_nloads() == 1
    # 200 KiB of dynamic smem > 48 KiB: the attribute was raised to it
    assert drv.func_get_attribute(0xF00, drv.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) \
        == 200 * 1024
    assert k.load(0) is lf
    # another Kernel over the same binary shares the module (no second load)
    k2 = Kernel(attn_meta(shared_mem_bytes=100 * 1024), attn_binary())
    assert k2.load(0).module == lf.module
    assert stub.stub_nloads() == 1
    # the attribute only grows
    assert drv.func_get_attribute(0xF00, drv.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) \
        == 200 * 1024

    stub.stub_set_func_attr(drv.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, 40000)
    with pytest.raises(OutOfResources, match="needs 40000 bytes of static \\+ 204800 bytes of "
                                             "dynamic shared memory = 244800"):
        Kernel(attn_meta(), attn_binary()).load(0)
    stub.stub_set_func_attr(drv.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, 0)
    stub.stub_set_func_attr(drv.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 256)
    with pytest.raises(OutOfResources, match="384 threads, but the compiled function allows "
                                             "at most 256"):
        Kernel(attn_meta(), attn_binary()).load(0)
    with pytest.raises(UnsupportedDevice, match="sm_100a"):
        Kernel(attn_meta(target="sm_100a"), attn_binary()).load(0)


def test_stub_launch_marshals_params(stub):
    meta = parse_metadata(attn_meta())
    t = attn_tensors()
    params = build_params(meta, validate_args(meta, t, device=CPU),
                          lambda i, p, x: 0x7000 + 0x100 * i)
    sizes = (ctypes.c_int * len(params))(*ATTN_PARAM_SIZES)
    stub.stub_set_param_sizes(len(params), sizes)
    drv.init()
    drv.launch(0xF00, meta.grid, meta.block, meta.shared_mem_bytes, 0x5555, params)
    assert stub.last() == "cuLaunchKernel"
    rec = stub.rec()
    assert rec[:10] == [0xF00, NQ, B * H, 1, 384, 1, 1, 200 * 1024, 0x5555, 1]
    f32 = int.from_bytes(ctypes.c_float(0.125), "little")
    assert rec[10:] == [0x7000, 0x7100, 0x7200, t["out"].data_ptr(), t["lse"].data_ptr(),
                        t["kv_num_blocks"].data_ptr(), t["kv_indices"].data_ptr(),
                        f32, N, (1 << 64) - 5]
    # the legacy default stream (0) is passed as NULL
    drv.launch(0xF00, (1, 1, 1), (32, 1, 1), 0, 0, params)
    assert stub.rec()[8] == 0


def test_stub_cluster_launch(stub):
    params = [ctypes.c_uint64(0xABCDEF), ctypes.c_int32(-2)]
    stub.stub_set_param_sizes(2, (ctypes.c_int * 2)(8, 4))
    drv.init()
    drv.launch(0xF00, (8, 4, 1), (128, 1, 1), 4096, 0x77, params, cluster=(2, 2, 1))
    assert stub.last() == "cuLaunchKernelEx"
    assert stub.rec() == [0xF00, 8, 4, 1, 128, 1, 1, 4096, 0x77, 1,
                          1, drv.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION, 2, 2, 1,
                          0xABCDEF, (1 << 32) - 2]


def test_stub_tensor_map_encode(stub):
    from flexattn_runtime.tensormap import encode

    p = parse_metadata(attn_meta()).params[0]
    drv.init()
    raw = encode(encoding_for(p, (B, H, M, D), 0x7F0000001000))
    assert stub.last() == "cuTensorMapEncodeTiled"
    assert stub.rec() == [0, 9, 4, 0x7F0000001000,            # 128-B aligned map, bf16, rank
                          D, M, H, B,                          # globalDim, innermost first
                          D * 2, M * D * 2, H * M * D * 2,     # globalStrides (bytes)
                          64, 128, 1, 1,                       # boxDim
                          1, 1, 1, 1,                          # elementStrides
                          0, 3, 3, 0]                          # interleave, 128B, L2 256B, OOB
    assert raw == bytes((i * 7 + 4) & 0xFF for i in range(128))
    # rank 1 (no strides)
    drv.tensor_map_encode_tiled(7, 0x2000, [1024], [], [256], [1], 0, 0, 3, 0)
    assert stub.rec() == [0, 7, 1, 0x2000, 1024, 256, 1, 0, 0, 3, 0]


# ---------------------------------------------------------------------------
# (c) artifact store
# ---------------------------------------------------------------------------

def test_artifact_round_trip(tmp_path):
    d = tmp_path / "art"
    path = write_kernel(d, "attn_causal", attn_meta(binary="x.ptx"),
                        attn_binary())
    assert path == str(d / "attn_causal.json")
    m2 = attn_meta(key="k-2", spec={"mask_mod": "none", "head_dim": D})
    del m2["binary"]
    write_kernel(d, "attn_plain", m2, attn_binary())
    assert json.loads((d / "index.json").read_text()) == \
        {"version": 1, "kernels": {"k-attn-0001": "attn_causal.json", "k-2": "attn_plain.json"}}
    assert (d / "x.ptx").read_bytes() == attn_binary()
    assert json.loads((d / "attn_plain.json").read_text())["binary"] == "attn_plain.ptx"
    assert (d / "attn_plain.ptx").exists()

    store = ArtifactStore(d)
    assert store.keys() == ["k-2", "k-attn-0001"] and len(store) == 2 and "k-2" in store
    k = store.get("k-attn-0001")
    assert isinstance(k, Kernel) and k.name == "attn_causal" and k.binary == attn_binary()
    assert k.metadata == parse_metadata(attn_meta(binary="x.ptx"))
    assert store.get("k-attn-0001") is k            # cached
    assert store.metadata("k-2")["spec"] == {"mask_mod": "none", "head_dim": D}
    assert store.find(mask_mod="causal") == ["k-attn-0001"]
    assert store.find(head_dim=D) == ["k-2", "k-attn-0001"]
    assert store.find(key="k-2") == ["k-2"]
    assert store.find(mask_mod="causal", head_dim=128) == []
    with pytest.raises(KeyError, match="no kernel with key 'nope'"):
        store.get("nope")

    # a kernel written later (e.g. by another process) is found on demand
    write_kernel(d, "late", attn_meta(key="k-late", binary="late.ptx"), attn_binary())
    assert store.get("k-late").name == "late"
    # rewriting a key under another name replaces its index entry
    write_kernel(d, "attn_causal_v2", attn_meta(binary="v2.ptx"), attn_binary())
    store.refresh()
    assert store.get("k-attn-0001").name == "attn_causal_v2"


def test_write_kernel_rejects_bad_input(tmp_path):
    d = tmp_path / "art"
    with pytest.raises(MetadataError):
        write_kernel(d, "bad", attn_meta(grid=[0]), attn_binary())
    with pytest.raises(MetadataError, match="takes 9 parameters"):
        write_kernel(d, "bad", attn_meta(), fake_ptx("flexattn_fwd", ATTN_PARAM_SIZES[:-1]))
    for name in ("../evil", "a/b", "", "x.json"):
        with pytest.raises(ValueError, match="kernel name"):
            write_kernel(d, name, attn_meta(), attn_binary())
    with pytest.raises(MetadataError, match="clash"):
        write_kernel(d, "idx", attn_meta(binary="index.json"), attn_binary())
    with pytest.raises(MetadataError, match="not JSON-serializable"):
        write_kernel(d, "obj", attn_meta(spec={"f": object()}), attn_binary())
    assert not d.exists() or not any(d.iterdir())   # nothing written


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    d = tmp_path / "art"
    write_kernel(d, "one", attn_meta(binary="one.ptx"), attn_binary())
    before = {p.name: p.read_bytes() for p in d.iterdir()}

    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("index.json"):
            raise OSError("disk full (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        write_kernel(d, "two", attn_meta(key="k-two", binary="two.ptx"), attn_binary())
    monkeypatch.setattr(os, "replace", real_replace)
    # the index is unchanged and still valid; no temporary files are left
    assert (d / "index.json").read_bytes() == before["index.json"]
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
    assert ArtifactStore(d).keys() == ["k-attn-0001"]


def _writer(directory: str, worker: int, count: int, barrier) -> None:
    barrier.wait()
    for j in range(count):
        name = f"w{worker}_k{j}"
        write_kernel(directory, name, attn_meta(key=f"key-{worker}-{j}", binary=name + ".ptx",
                                                spec={"worker": worker, "j": j}),
                     attn_binary())


def test_concurrent_writers(tmp_path):
    """4 processes write 8 kernels each into one directory; all 32 end up in
    index.json, and a reader polling meanwhile never sees a broken index."""
    d = str(tmp_path / "art")
    os.makedirs(d)
    ctx = multiprocessing.get_context("fork")
    nproc, count = 4, 8
    barrier = ctx.Barrier(nproc + 1)
    procs = [ctx.Process(target=_writer, args=(d, w, count, barrier)) for w in range(nproc)]
    for p in procs:
        p.start()
    barrier.wait()
    reads = 0
    while any(p.is_alive() for p in procs):
        idx_path = os.path.join(d, "index.json")
        if os.path.exists(idx_path):
            with open(idx_path) as f:
                idx = json.load(f)                   # never a partial file
            for file in idx["kernels"].values():     # never a dangling entry
                assert os.path.exists(os.path.join(d, file))
            reads += 1
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = ArtifactStore(d)
    assert sorted(store.keys()) == sorted(f"key-{w}-{j}" for w in range(nproc)
                                          for j in range(count))
    assert store.get("key-3-7").spec == {"worker": 3, "j": 7}
    assert not [n for n in os.listdir(d) if n.endswith(".tmp")]


def test_cli_lists_kernels(tmp_path):
    d = tmp_path / "art"
    write_kernel(d, "axpb", axpb_meta(n=1000), AXPB_PTX.encode())
    env = dict(os.environ)
    env["PYTHONPATH"] = str(RUNTIME_DIR) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "flexattn_runtime", str(d)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "1 kernel(s)" in r.stdout and "- axpb  key=axpb-1000" in r.stdout
    assert "grid=[8, 1, 1] block=[128, 1, 1] smem=0" in r.stdout
    assert "a: float32[1000], b: float32[1000], out: float32[1000]" in r.stdout
    r = subprocess.run([sys.executable, "-m", "flexattn_runtime", str(d), "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert json.loads(r.stdout)[0]["grid"] == [8, 1, 1]
    r = subprocess.run([sys.executable, "-m", "flexattn_runtime", str(d), "--check"],
                       capture_output=True, text=True, env=env, timeout=300)
    if torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0):
        assert r.returncode == 0, r.stdout + r.stderr
        assert "ok   axpb:" in r.stdout
    elif not torch.cuda.is_available():
        assert r.returncode == 0, r.stderr
        assert "--check skipped: no CUDA device" in r.stdout


# ---------------------------------------------------------------------------
# (e) GPU tests
# ---------------------------------------------------------------------------

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="needs a CUDA GPU (flexattn_runtime launches)")


@pytest.fixture
def sm90():
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the hand-written kernels are sm_90a (H100/H200) code")
    torch.manual_seed(0)


def axpb_meta(n: int, *, alpha=2.5, offset=3, fmt="ptx", **over) -> dict:
    meta = {
        "version": 1, "key": f"axpb-{n}", "entry": "axpb", "target": "sm_90a",
        "binary": f"axpb.{fmt}", "binary_format": fmt,
        "grid": [math.ceil(n / 128), 1, 1], "block": [128, 1, 1], "shared_mem_bytes": 0,
        "arguments": [{"name": "a", "shape": [n], "dtype": "float32"},
                      {"name": "b", "shape": [n], "dtype": "float32"},
                      {"name": "out", "shape": [n], "dtype": "float32"}],
        "outputs": ["out"],
        "params": [{"kind": "ptr", "arg": "a"}, {"kind": "ptr", "arg": "b"},
                   {"kind": "ptr", "arg": "out"}, {"kind": "f32", "value": alpha},
                   {"kind": "i32", "value": n}, {"kind": "i64", "value": offset}],
        "spec": {"test": "axpb"},
    }
    meta.update(over)
    return meta


def _axpb_check(kernel: Kernel, n: int, alpha=2.5, offset=3):
    a = torch.randn(n, device="cuda")
    b = torch.randn(n, device="cuda")
    out = torch.full((n,), float("nan"), device="cuda")
    res = kernel(a=a, b=b, out=out)
    assert res["out"] is out
    torch.cuda.synchronize()
    torch.testing.assert_close(out, alpha * a + b + offset, rtol=1e-6, atol=1e-5)


@needs_gpu
def test_gpu_device_info(sm90):
    info = drv.device_info(torch.cuda.current_device())
    assert info.compute_capability == (9, 0)
    assert info.sm_count == torch.cuda.get_device_properties(0).multi_processor_count
    assert info.max_shared_per_block_optin >= 227 * 1024
    assert info.max_threads_per_block == 1024
    assert drv.driver_version() >= 12000


@needs_gpu
def test_gpu_axpb_ptx(sm90):
    k = Kernel(axpb_meta(1000), AXPB_PTX.encode())
    _axpb_check(k, 1000)
    lf = k.load()
    assert lf.num_regs > 0 and lf.static_shared_bytes == 0
    _axpb_check(k, 1000)                           # second launch, module cached


@needs_gpu
def test_gpu_axpb_cubin(sm90):
    k = Kernel(axpb_meta(4096, fmt="cubin"), axpb_cubin())
    _axpb_check(k, 4096)


@needs_gpu
def test_gpu_positional_and_list_args(sm90):
    n = 300
    k = Kernel(axpb_meta(n, alpha=-1.0, offset=0), AXPB_PTX.encode())
    a, b = torch.randn(n, device="cuda"), torch.randn(n, device="cuda")
    out1, out2 = torch.empty(n, device="cuda"), torch.empty(n, device="cuda")
    k(a, b, out1)
    k([a, b, out2])
    torch.cuda.synchronize()
    torch.testing.assert_close(out1, b - a)
    torch.testing.assert_close(out2, b - a)


@needs_gpu
def test_gpu_non_default_stream(sm90):
    n = 2048
    k = Kernel(axpb_meta(n), AXPB_PTX.encode())
    a, b = torch.randn(n, device="cuda"), torch.randn(n, device="cuda")
    out = torch.zeros(n, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        k(a=a, b=b, out=out)
    s.synchronize()
    torch.testing.assert_close(out, 2.5 * a + b + 3, rtol=1e-6, atol=1e-5)


@needs_gpu
def test_gpu_bad_input_never_launches(sm90):
    n = 512
    k = Kernel(axpb_meta(n), AXPB_PTX.encode())
    a, b = torch.randn(n, device="cuda"), torch.randn(n, device="cuda")
    out = torch.zeros(n, device="cuda")
    flat = torch.randn(n + 1, device="cuda")
    with pytest.raises(ArgumentError, match="argument 'a': data_ptr .* is not 16-byte aligned"):
        k(a=flat[1:], b=b, out=out)
    with pytest.raises(ArgumentError, match="argument 'b': expected a CUDA tensor on cuda:0, "
                                            "got a CPU tensor"):
        k(a=a, b=b.cpu(), out=out)
    with pytest.raises(ArgumentTypeError, match="argument 'out': expected dtype float32"):
        k(a=a, b=b, out=out.double())
    torch.cuda.synchronize()
    assert torch.count_nonzero(out) == 0


@needs_gpu
def test_gpu_dynamic_shared_memory_over_48k(sm90):
    n, threads, offset = 256 * 64, 256, 96 * 1024
    smem = 100 * 1024
    meta = {
        "version": 1, "key": "smem", "entry": "smem_reverse", "target": "sm_90a",
        "binary": "smem.ptx", "binary_format": "ptx",
        "grid": [n // threads, 1, 1], "block": [threads, 1, 1], "shared_mem_bytes": smem,
        "arguments": [{"name": "x", "shape": [n], "dtype": "float32"},
                      {"name": "y", "shape": [n], "dtype": "float32"}],
        "outputs": ["y"],
        "params": [{"kind": "ptr", "arg": "x"}, {"kind": "ptr", "arg": "y"},
                   {"kind": "i32", "value": offset}],
    }
    k = Kernel(meta, SMEM_PTX.encode())
    x = torch.randn(n, device="cuda")
    y = torch.empty(n, device="cuda")
    k(x=x, y=y)
    torch.cuda.synchronize()
    torch.testing.assert_close(y, x.view(-1, threads).flip(1).reshape(-1), rtol=0, atol=0)
    lf = k.load()
    assert drv.func_get_attribute(
        lf.function, drv.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) >= smem


@needs_gpu
def test_gpu_cluster_launch(sm90):
    meta = {
        "version": 1, "key": "cluster", "entry": "cluster_rank", "target": "sm_90a",
        "binary": "cluster.ptx", "binary_format": "ptx",
        "grid": [8, 1, 1], "block": [32, 1, 1], "cluster": [2, 1, 1], "shared_mem_bytes": 0,
        "arguments": [{"name": "out", "shape": [8, 2], "dtype": "int32"}],
        "outputs": ["out"], "params": [{"kind": "ptr", "arg": "out"}],
    }
    k = Kernel(meta, CLUSTER_PTX.encode())
    out = torch.full((8, 2), -1, dtype=torch.int32, device="cuda")
    k(out=out)
    torch.cuda.synchronize()
    assert out[:, 0].tolist() == [0, 1] * 4
    assert out[:, 1].tolist() == [2] * 8


def tma_meta(shape, swizzle="none", view=None) -> dict:
    rows, cols = (view or shape)[-2], (view or shape)[-1]
    assert cols == 128
    tm = {"kind": "tensormap", "elem": "bf16", "box": [64, 64], "swizzle": swizzle}
    if view:
        tm["view"] = list(view)
    return {
        "version": 1, "key": f"tma-{swizzle}-{shape}", "entry": "tma_copy", "target": "sm_90a",
        "binary": "tma.ptx", "binary_format": "ptx",
        "grid": [2, math.ceil(rows / 64), 1], "block": [128, 1, 1], "shared_mem_bytes": 0,
        "arguments": [{"name": "x", "shape": list(shape), "dtype": "bfloat16"},
                      {"name": "y", "shape": list(shape), "dtype": "bfloat16"}],
        "outputs": ["y"],
        "params": [dict(tm, arg="x"), dict(tm, arg="y")],
    }


@needs_gpu
@pytest.mark.parametrize("shape,swizzle,view", [
    ((256, 128), "none", None),
    ((256, 128), "128B", None),
    ((200, 128), "128B", None),                         # partial last box: OOB zero-fill + clip
    ((2, 2, 64, 128), "128B", (256, 128)),              # "view" merges the outer dims
], ids=["none", "128B", "partial", "view"])
def test_gpu_tma_round_trip(sm90, shape, swizzle, view):
    k = Kernel(tma_meta(shape, swizzle, view), TMA_PTX.encode())
    x = torch.randn(shape, device="cuda").to(torch.bfloat16)
    y = torch.zeros(shape, dtype=torch.bfloat16, device="cuda")
    k(x=x, y=y)
    torch.cuda.synchronize()
    assert torch.equal(y, x)
    assert (k.descriptors.misses, k.descriptors.hits) == (2, 0)
    # same tensors again: descriptors come from the cache (no upload)
    y.zero_()
    k(x=x, y=y)
    torch.cuda.synchronize()
    assert torch.equal(y, x)
    assert (k.descriptors.misses, k.descriptors.hits) == (2, 2)
    # a new output tensor gets its own descriptor
    y2 = torch.zeros_like(y)
    k(x=x, y=y2)
    torch.cuda.synchronize()
    assert torch.equal(y2, x)
    assert (k.descriptors.misses, k.descriptors.hits) == (3, 3)


@needs_gpu
@pytest.mark.parametrize("fence", [True, False], ids=["fence", "no_fence"])
def test_gpu_tma_descriptor_address_reuse(sm90, fence):
    """A descriptor cache of one entry and rotating tensors: every launch
    uploads new descriptors, usually at the device address of one just evicted
    (torch's caching allocator reuses the freed block). With the kernel's
    tensormap acquire fence this must be correct. If only the no_fence variant
    fails, the GPU served a stale cached tensor map: compiled kernels must then
    fence each tensormap pointer before use (see runtime/README.md)."""
    ptx = TMA_PTX if fence else TMA_PTX_NO_FENCE
    k = Kernel(tma_meta((256, 128), "128B"), ptx.encode(), descriptor_cache_size=1)
    xs = [torch.randn(256, 128, device="cuda").to(torch.bfloat16) for _ in range(3)]
    ys = [torch.zeros(256, 128, dtype=torch.bfloat16, device="cuda") for _ in range(2)]
    for i in range(24):
        x, y = xs[i % 3], ys[i % 2]
        y.zero_()
        k(x=x, y=y)
        torch.cuda.synchronize()
        assert torch.equal(y, x), f"launch {i}: wrong copy (stale tensor map?)"
    assert k.descriptors.misses == 48


@needs_gpu
def test_gpu_cuda_graph_capture(sm90):
    """Warm up (uploads the descriptors), capture, replay with new input data."""
    k = Kernel(tma_meta((256, 128), "128B"), TMA_PTX.encode())
    x = torch.randn(256, 128, device="cuda").to(torch.bfloat16)
    y = torch.zeros_like(x)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        k(x=x, y=y)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        k(x=x, y=y)
    x.copy_(torch.randn(256, 128, device="cuda").to(torch.bfloat16))
    y.zero_()
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, x)
    assert len(k._graph_descriptors) == 2


@needs_gpu
def test_gpu_cuda_graph_capture_needs_warm_up(sm90):
    k = Kernel(tma_meta((256, 128), "128B"), TMA_PTX.encode())
    x = torch.randn(256, 128, device="cuda").to(torch.bfloat16)
    y = torch.zeros_like(x)
    torch.cuda.synchronize()
    with pytest.raises(RuntimeError, match="cannot be uploaded during CUDA graph capture"):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            k(x=x, y=y)


@needs_gpu
def test_gpu_cuda_graph_capture_of_a_tensor_made_in_the_graph(sm90):
    """A tensor allocated during capture (an earlier op's output) has an
    address no warm-up saw: its descriptor is uploaded into the graph from a
    pinned slot (GraphStaging) and every replay copies it again."""
    k = Kernel(tma_meta((256, 128), "128B"), TMA_PTX.encode())
    x = torch.randn(256, 128, device="cuda").to(torch.bfloat16)
    y = torch.zeros_like(x)
    k(x=x, y=y)  # an ordinary launch sets the pinned slots aside
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        doubled = x * 2  # allocated in the graph's pool
        k(x=doubled, y=y)
    for _ in range(2):
        x.copy_(torch.randn(256, 128, device="cuda").to(torch.bfloat16))
        y.zero_()
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(y, x * 2)
    assert k._staging.free == k._staging.SLOTS - 1


@needs_gpu
def test_gpu_tma_descriptor_bytes_upload(sm90):
    """The uploaded descriptor is the 128 bytes cuTensorMapEncodeTiled made."""
    from flexattn_runtime.tensormap import encode

    k = Kernel(tma_meta((256, 128), "128B"), TMA_PTX.encode())
    x = torch.randn(256, 128, device="cuda").to(torch.bfloat16)
    y = torch.zeros_like(x)
    k(x=x, y=y)
    torch.cuda.synchronize()
    (desc_x, desc_y) = list(k.descriptors._entries.values())
    assert desc_x.device.data_ptr() % 128 == 0
    assert bytes(desc_x.device.cpu().tolist()) == encode(desc_x.encoding)
    assert desc_x.encoding.global_address == x.data_ptr()
    assert desc_y.encoding.global_address == y.data_ptr()


@needs_gpu
def test_gpu_out_of_resources_and_unsupported(sm90):
    n = 256
    a, b, out = (torch.zeros(n, device="cuda") for _ in range(3))
    too_much = Kernel(axpb_meta(n, shared_mem_bytes=300 * 1024), AXPB_PTX.encode())
    with pytest.raises(OutOfResources, match="needs 307200 bytes of dynamic shared memory"):
        too_much(a=a, b=b, out=out)
    other_arch = Kernel(axpb_meta(n, target="sm_100a"), AXPB_PTX.encode())
    with pytest.raises(UnsupportedDevice, match="sm_100a code uses architecture-specific"):
        other_arch(a=a, b=b, out=out)
    # .maxntid 64 in the PTX, launched with 128 threads: the function's limit
    limited = AXPB_PTX.replace(")\n{", ")\n.maxntid 64, 1, 1\n{", 1)
    k = Kernel(axpb_meta(n), limited.encode())
    with pytest.raises(OutOfResources, match="compiled function allows at most 64"):
        k(a=a, b=b, out=out)


@needs_gpu
def test_gpu_invalid_ptx_reports_jit_log(sm90):
    broken = AXPB_PTX.replace("fma.rn.f32 %f4, %f1, %f2, %f3;", "bogus.instr %f4;")
    k = Kernel(axpb_meta(128), broken.encode())
    with pytest.raises(fr.CudaError) as e:
        k.load()
    assert e.value.func == "cuModuleLoadData"
    assert e.value.name == "CUDA_ERROR_INVALID_PTX"
    assert "bogus" in e.value.detail


@needs_gpu
def test_gpu_run_from_store(sm90, tmp_path):
    write_kernel(tmp_path, "axpb", axpb_meta(777), AXPB_PTX.encode())
    a, b = torch.randn(777, device="cuda"), torch.randn(777, device="cuda")
    out = torch.empty(777, device="cuda")
    res = run(str(tmp_path), "axpb-777", {"a": a, "b": b, "out": out})
    torch.cuda.synchronize()
    torch.testing.assert_close(res["out"], 2.5 * a + b + 3, rtol=1e-6, atol=1e-5)
    # modules are shared per (binary hash, device)
    k1 = ArtifactStore(tmp_path).get("axpb-777")
    k2 = Kernel(axpb_meta(777), AXPB_PTX.encode())
    assert k1.load().module == k2.load().module
