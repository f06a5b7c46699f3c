"""The public API on one device with the installed package: ``flex_attention``
and ``create_block_mask`` on that device's tensors, compiled there, against
torch's flex_attention / create_block_mask on the same device, and the
transformers registration against the model's SDPA.

    python bench/public_api_check.py --device cuda --out results.json

Every check records its max |difference| and tolerance, or the error raised
(a check that raises is recorded, not fatal, so one run reports them all).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import traceback

import flexattn_mlir as fm  # first: mlir before torch_mlir
import torch
from torch.nn.attention import flex_attention as tf

TOL = {torch.bfloat16: 2e-2, torch.float16: 4e-3, torch.float32: 2e-5}
# Per attention layer, max |ours - SDPA| over max |SDPA| on unpadded rows.
ATTN_REL_TOL = {torch.bfloat16: 3e-2, torch.float16: 5e-3, torch.float32: 1e-4}
ATTENTION_MODULES = {"LlamaAttention", "EsmSelfAttention"}


def causal(b, h, q, kv):
    return q >= kv


def sliding(b, h, q, kv):
    return (q >= kv) & (q - kv <= 100)


SLOPES = None  # a module global tensor: the frontend lifts it to a kernel operand


def alibi(score, b, h, q, kv):
    return score + SLOPES[h] * (kv - q)


def softcap(score, b, h, q, kv):
    return 30.0 * torch.tanh(score / 30.0)


def check(results, name, fn):
    t = time.perf_counter()
    try:
        entry = fn()
        entry["ok"] = (entry["max_abs_diff"] <= entry["tol"] and entry.get("attention_ok", True)
                       if "max_abs_diff" in entry else True)
    except Exception as e:  # recorded: the report lists every check
        entry = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000],
                 "trace": traceback.format_exc()[-3000:]}
    entry["name"], entry["seconds"] = name, round(time.perf_counter() - t, 3)
    results.append(entry)
    print(("ok  " if entry["ok"] else "FAIL") + f" {name}: " +
          (entry.get("error") or f"max|diff| {entry.get('max_abs_diff', 0):.2e}"), flush=True)


def attention_cases(results, device, dtype, d):
    global SLOPES
    b, h, s = 2, 4, 384
    g = torch.Generator(device="cpu").manual_seed(d)
    q, k, v = (torch.randn(b, h, s, d, generator=g).to(device, dtype) for _ in range(3))
    SLOPES = torch.tensor([2.0 ** (-(i + 1)) for i in range(h)], device=device)
    for score, mask in ((None, None), (None, causal), (alibi, causal), (softcap, sliding)):
        label = f"flex_attention {dtype} D={d} score={getattr(score, '__name__', None)} " \
                f"mask={getattr(mask, '__name__', None)}"

        def run(score=score, mask=mask):
            ours_bm = fm.create_block_mask(mask, None, None, s, s, device=device) if mask else None
            ref_bm = tf.create_block_mask(mask, None, None, s, s, device=device) if mask else None
            same_blocks = None
            if mask:
                same_blocks = bool(torch.equal(ours_bm.to_dense().cpu(),
                                               ref_bm.to_dense().cpu().to(torch.int32)))
            out = fm.flex_attention(q, k, v, score_mod=score, block_mask=ours_bm)
            ref = tf.flex_attention(q.float(), k.float(), v.float(), score_mod=score,
                                    block_mask=ref_bm)
            return {"max_abs_diff": (out.float() - ref).abs().max().item(), "tol": TOL[dtype],
                    "create_block_mask_equal": same_blocks, "out_device": str(out.device)}

        check(results, label, run)


def model_cases(results, device, dtype):
    import transformers
    from flexattn_mlir.integrations import transformers as flexattn_hf

    name = flexattn_hf.register()

    def padded(vocab, side):
        ids = torch.randint(3, vocab, (2, 200), generator=torch.Generator().manual_seed(0))
        mask = torch.ones(2, 200, dtype=torch.long)
        mask[1, 130:] = 0 if side == "right" else 1
        if side == "left":
            mask[1, :70] = 0
        return ids.to(device), mask.to(device)

    def attention_outputs(model, impl, ids, mask):
        """The model's last hidden state and every attention layer's output.
        The hidden state alone is a weak check: with small initial weights
        the residual stream dominates and a bf16 model can round the
        attention's contribution away, so each layer's output is compared."""
        seen = []
        hooks = [m.register_forward_hook(lambda _m, _a, out: seen.append(out[0].float()))
                 for m in model.modules() if type(m).__name__ in ATTENTION_MODULES]
        try:
            model.set_attn_implementation(impl)
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        finally:
            for h in hooks:
                h.remove()
        assert seen, f"no attention module of {type(model).__name__} was found"
        return hidden, seen

    def compare(model, side):
        model = model.to(device, dtype).eval()
        ids, mask = padded(model.config.vocab_size, side)
        keep = mask.bool()
        with torch.no_grad():
            ref, ref_layers = attention_outputs(model, "sdpa", ids, mask)
            before = flexattn_hf.mask_count
            out, layers = attention_outputs(model, name, ids, mask)
        rel = [((o - r)[keep].abs().max() / r[keep].abs().max()).item()
               for o, r in zip(layers, ref_layers)]
        return {"max_abs_diff": (out[keep] - ref[keep]).abs().max().item(),
                "ref_scale": ref[keep].abs().max().item(),
                "tol": 0.1 if dtype != torch.float32 else 1e-4,
                "attention_layers_max_rel_diff": rel,
                "attention_rel_tol": ATTN_REL_TOL[dtype],
                "attention_ok": len(rel) == len(ref_layers) and max(rel) <= ATTN_REL_TOL[dtype],
                "masks_built": flexattn_hf.mask_count - before,
                "transformers": transformers.__version__}

    torch.manual_seed(1)
    check(results, f"register() Llama GQA 4:1 D=128 {dtype} left-padded",
          lambda: compare(transformers.LlamaModel(transformers.LlamaConfig(
              vocab_size=128, hidden_size=256, num_attention_heads=4, num_key_value_heads=1,
              head_dim=128, intermediate_size=256, num_hidden_layers=2)), "left"))
    for d in (16, 32, 64):
        check(results, f"register() ESM-2-style D={d} {dtype} right-padded",
              lambda d=d: compare(transformers.EsmModel(transformers.EsmConfig(
                  vocab_size=33, hidden_size=4 * d, num_attention_heads=4, num_hidden_layers=2,
                  intermediate_size=64, position_embedding_type="rotary", pad_token_id=1,
                  mask_token_id=32, max_position_embeddings=256), add_pooling_layer=False),
                  "right"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True)
    ap.add_argument("--head-dims", default="64,128",
                    help="comma-separated head dims of the flex_attention cases")
    args = ap.parse_args()
    device = torch.device(args.device)
    results = []
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    try:
        import torch_mlir

        info["torch_mlir"] = getattr(torch_mlir, "__version__", "?")
    except Exception as e:
        info["torch_mlir"] = f"import failed: {e}"
    print(info, flush=True)
    dtypes = (torch.bfloat16, torch.float16) if device.type == "cuda" else (torch.float32,)
    for dtype in dtypes:
        for d in map(int, args.head_dims.split(",")):
            attention_cases(results, device, dtype, d)
    model_cases(results, device, dtypes[0])
    doc = {"what": "public API on the device: flex_attention/create_block_mask vs torch flex, "
                   "register() vs SDPA", **info, "results": results}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"{sum(r['ok'] for r in results)}/{len(results)} ok; wrote {args.out}")


if __name__ == "__main__":
    main()
