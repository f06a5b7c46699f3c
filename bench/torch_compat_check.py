"""Which mods this torch captures: every example-zoo mod and the masks and
score_mods transformers' models hand to the registration, each captured by
the frontend (torch.export + torch-mlir + conversion to a region), reported
as pass / FAIL with the error. CPU only, no kernel is compiled: run it on a
machine whose torch differs from the pinned one (docs/frontend.md §7).

    python bench/torch_compat_check.py [--out results.json] [--dump DIR]

Exports fresh (the disk cache of captured mods is bypassed); ``--dump``
writes each captured region's text, to compare two torch versions.
Exits 1 when some capture failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time

os.environ["FLEXATTN_DISABLE_CACHE"] = "1"  # every capture exports

import flexattn_mlir  # noqa: E402,F401  (first: mlir before torch_mlir)
import torch  # noqa: E402
from flexattn_mlir import frontend  # noqa: E402
from flexattn_mlir.examples import zoo  # noqa: E402


def zoo_cases():
    """(name, kind, mod) for the zoo's mods (H=4 heads, S=256 tokens)."""
    for name in zoo.names():
        score_mod, mask_mod = zoo.make(name, 4, 256)
        if score_mod is not None:
            yield f"zoo/{name}/score", "score", score_mod
        if mask_mod is not None:
            yield f"zoo/{name}/mask", "mask", mask_mod


def transformers_cases():
    """(name, kind, mod) for the mask functions transformers' mask builders
    pass to the registration's block_mask (padding joined with and_masks,
    offsets for a KV cache) and the score_mods its attention builds."""
    from transformers import masking_utils as mu

    from flexattn_mlir.integrations import transformers as flexattn_hf

    pad = torch.ones(2, 256, dtype=torch.bool)
    pad[1, 180:] = False
    padding = mu.padding_mask_function(pad)
    left = torch.tensor([0, 40])
    packed = torch.repeat_interleave(torch.tensor([[0, 1, 2, 3]]), 64, dim=1)
    yield "hf/causal", "mask", mu.causal_mask_function
    yield "hf/bidirectional", "mask", mu.bidirectional_mask_function
    yield "hf/padding", "mask", padding
    yield "hf/causal_and_padding", "mask", mu.and_masks(mu.causal_mask_function, padding)
    yield "hf/bidirectional_and_padding", "mask", mu.and_masks(
        mu.bidirectional_mask_function, padding)
    yield "hf/sliding_window_and_padding", "mask", mu.and_masks(
        mu.sliding_window_causal_mask_function(64), padding)
    yield "hf/chunked_causal", "mask", mu.chunked_causal_mask_function(32, left)
    yield "hf/packed_sequence", "mask", mu.and_masks(
        mu.causal_mask_function, mu.packed_sequence_mask_function(packed))
    yield "hf/causal_and_padding_offsets", "mask", mu.add_offsets_to_mask_function(
        mu.and_masks(mu.causal_mask_function, padding), 16, 0)
    bias = torch.randn(1, 4, 256, 256)
    yield "hf/softcap", "score", flexattn_hf._score_mod(30.0, None, None)
    yield "hf/position_bias", "score", flexattn_hf._score_mod(None, bias, None)
    yield "hf/bool_mask_4d", "score", flexattn_hf._score_mod(None, None, pad[:, None, None, :])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--dump", help="write each captured region's text into this folder")
    args = ap.parse_args()
    try:
        import torch_mlir  # noqa: F401

        tm_version = importlib.metadata.version("torch-mlir")
    except Exception as e:  # reported: every capture will fail the same way
        tm_version = f"{type(e).__name__}: {e}"
    info = {"torch": torch.__version__, "torch_mlir": tm_version,
            "python": platform.python_version()}
    print(info, flush=True)
    cases = list(zoo_cases())
    try:
        cases += list(transformers_cases())
    except ImportError as e:
        print(f"skip transformers cases: {e}", flush=True)
        info["transformers"] = f"not importable: {e}"
    if args.dump:
        os.makedirs(args.dump, exist_ok=True)
    results = []
    for name, kind, fn in cases:
        t = time.perf_counter()
        capture = frontend.capture_score_mod if kind == "score" else frontend.capture_mask_mod
        try:
            mod = capture(fn)
            entry = {"ok": True, "captures": [list(c.shape) for c in mod.captures]}
            if args.dump:
                with open(os.path.join(args.dump, name.replace("/", "__") + ".mlir"), "w") as f:
                    f.write(mod.ir.text)
        except Exception as e:  # recorded: the report lists every case
            entry = {"ok": False, "error": f"{type(e).__name__}: {e}"[:1000]}
        entry.update(name=name, seconds=round(time.perf_counter() - t, 3))
        results.append(entry)
        print(("pass" if entry["ok"] else "FAIL") + f"  {name}" +
              ("" if entry["ok"] else f": {entry['error']}"), flush=True)
    passed = sum(r["ok"] for r in results)
    print(f"{passed}/{len(results)} captured with torch {torch.__version__}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"what": "frontend captures per torch version", **info,
                       "results": results}, f, indent=1)
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
