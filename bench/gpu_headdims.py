"""GPU head dims 16-256 and Dv != D: correctness and speed, in the two halves
of bench/gpu_suite.py (same artifacts, same checks, same timing).

  compile (here, no GPU):  python bench/gpu_headdims.py compile --out art/hd
  run (on the H200):       python bench/gpu_headdims.py run --artifacts art/hd
                               --json $OUT/headdims.json --peers triton,cudnn,flash

Cases, all for target sm_90a (the TMA + wgmma kernel for D = Dv in 64, 128;
the padded mma.sync kernel for every other head dim, compiled for sm_90a):
  - a zoo subset (full, causal, sliding window, ALiBi, softcap, document) at
    every listed head dim, bf16 and fp16, at 1000 tokens (not a multiple of
    the 128-token blocks); D > 128 with 128 x 64 mask blocks (Q + two stages
    of K and V at 128 columns would not fit in shared memory);
  - Dv != D pairs, GQA (8 query heads over 2 KV heads), M != N;
  - the benchmark: D = 32 and D = 256, full and causal, B = 4, H = 16,
    S = 8192, bf16, beside torch flex (Triton), SDPA cuDNN and SDPA
    FLASH_ATTENTION (FlashAttention-2).
"""

from __future__ import annotations

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gpu_suite  # noqa: E402

HEAD_DIMS = (16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256)
VARIANTS = ("full", "causal", "sliding_window", "alibi_causal", "softcap_causal", "document")
MASKED = ("causal", "sliding_window", "alibi_causal", "softcap_causal", "document")


def _over(variant: str, D: int, Dv: int | None = None) -> dict:
    """A case's options. Masked cases keep torch's default 128-column mask
    blocks at every head dim: above 128 the kernel walks each block as two
    64-column KV tiles (Target.block_tiles)."""
    return {} if Dv is None else {"value_dim": Dv}


CORRECTNESS = (
    [(f"check_{v}_d{d}" + ("" if dt == "bfloat16" else "_f16"), v, 1, 2, 2, 1000, 1000, d, dt,
      _over(v, d))
     for d in HEAD_DIMS for v in VARIANTS for dt in ("bfloat16", "float16")]
    + [(f"check_{v}_d{d}_dv{dv}", v, 1, 2, 2, 1000, 1000, d, "bfloat16", _over(v, d, dv))
       for v in ("full", "causal") for d, dv in ((32, 64), (64, 128), (128, 64), (16, 48),
                                                  (96, 40), (192, 128), (256, 64))]
    + [(f"check_gqa_causal_d{d}", "causal", 2, 8, 2, 700, 700, d, "bfloat16", _over("causal", d))
       for d in (32, 80, 256)]
    + [(f"check_full_m300_n1000_d{d}", "full", 1, 4, 4, 300, 1000, d, "float16", {})
       for d in (24, 160)]
    + [(f"check_causal_m1000_n300_d{d}", "causal", 1, 4, 4, 1000, 300, d, "bfloat16",
        _over("causal", d)) for d in (40, 192)]
)
BENCH = [(f"bench_{v}_d{d}", v, 4, 16, 16, 8192, 8192, d, "bfloat16", _over(v, d))
         for d in (32, 256) for v in ("full", "causal")]


def main() -> None:
    # Every case here is sm_90a; its peers include FlashAttention-2 (SDPA's
    # FLASH_ATTENTION backend, head dims up to 256).
    gpu_suite.PEERS_OF = dict(gpu_suite.PEERS_OF, sm_90a=("triton", "cudnn", "flash", "fa4"))
    gpu_suite.main(compile_fn=functools.partial(gpu_suite.compile_all,
                                                cases=CORRECTNESS + BENCH),
                   peers="triton,cudnn,flash")


if __name__ == "__main__":
    main()
