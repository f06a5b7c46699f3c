"""The demo: compile and run a few attention variants with flexattn-mlir and
compare each with torch's own flex_attention on the same inputs.

    flexattn-demo            # CPU (and the GPU when there is one)
"""

from __future__ import annotations

import time
import warnings

import torch

import flexattn_mlir as fm
from flexattn_mlir.examples import zoo

VARIANTS = ["causal", "sliding_window", "document", "alibi_causal", "softcap_causal", "t5_bias"]


def _torch_flex(q, k, v, score_mod, mask_mod, S):
    from torch.nn.attention import flex_attention as tfa

    tfa._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True
    bm = tfa.create_block_mask(mask_mod, None, None, S, S, device=q.device) if mask_mod else None
    return tfa.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm)


def run(device: str, dtype: torch.dtype, B: int, H: int, S: int, D: int) -> None:
    print(f"\n{device}: B={B} H={H} S={S} D={D} {str(dtype).removeprefix('torch.')}")
    print(f"{'variant':18s} {'first call':>11s} {'cached':>9s} {'max |ours - torch|':>19s}  block sparsity")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, generator=g).to(device, dtype) for _ in range(3))
    for name in VARIANTS:
        score_mod, mask_mod = zoo.make(name, H, S, device)
        t0 = time.perf_counter()
        bm = fm.create_block_mask(mask_mod, None, None, S, S, device=device) if mask_mod else None
        out = fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm)
        if device == "cuda":
            torch.cuda.synchronize()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = fm.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm)
        if device == "cuda":
            torch.cuda.synchronize()
        cached = time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = _torch_flex(q.float(), k.float(), v.float(), score_mod, mask_mod, S)
        err = (out.float() - ref).abs().max().item()
        sparsity = f"{bm.sparsity():5.1f}%" if bm is not None else "  -"
        print(f"{name:18s} {first:10.2f}s {cached * 1e3:7.1f}ms {err:19.2e}  {sparsity}")


def main() -> None:
    print("flexattn-mlir demo: score_mod/mask_mod -> torch-mlir -> flexattn dialect -> "
          "tiled, block-sparse, online-softmax kernel")
    run("cpu", torch.float32, 1, 4, 512, 64)
    if torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0):
        run("cuda", torch.bfloat16, 2, 8, 2048, 128)
    print("\nSee every compiler stage of a variant: flexattn causal")


if __name__ == "__main__":
    main()
