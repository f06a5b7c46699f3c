"""Serve a small Llama-style model on the CPU with flexattn_mlir's attention
and a paged KV cache.

A transformers ``LlamaForCausalLM`` (random weights, 2 layers, hidden size 64,
grouped-query attention 4:2; nothing is downloaded) runs unchanged, its
attention replaced by :func:`flexattn_mlir.flex_attention` over a
:class:`flexattn_mlir.PagedAttention` cache: the prompts of a batch (of
different lengths) are prefilled into the cache together, then every
sequence decodes one token per step. Each step's logits are compared with
the model run without a cache on the whole sequence, and the compile counter
is printed: the prefill (the warm-up) compiles the one kernel that every
decode step then runs (the lengths are run-time values of the kernel; with
prompts of at most 64 tokens the prefill already takes the decode path:
query heads packed per KV group, KV blocks split across threads).

On a GPU (``--device cuda``) the same steps run the compiled GPU kernels.
Those are compiled for static shapes, so the warm-up is the prefill and the
first decode step (a one-row query is a new shape); the cache is sized once,
so every later decode step runs the same kernel. The GPU kernels take 64- or
128-column mask blocks, so the pages there are 64 tokens long.

    python examples/serve_llama.py [--new-tokens 8] [--prompts 5,11,3] [--device cuda]
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import flexattn_mlir  # first: it loads MLIR before torch-mlir
import torch
from flexattn_mlir import (PagedAttention, attention_compile_count, create_block_mask,
                           flex_attention)
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM


class Setup(NamedTuple):
    """What differs between the devices: the page (= the block mask's KV
    block), the mask's Q block, the positions a sequence may reach, whether
    the kernel takes its shapes at run time, and the decode steps that
    belong to the warm-up."""
    page: int
    q_block: int
    max_len: int
    dynamic: bool
    warmup_decodes: int


SETUPS = {
    "cpu": Setup(page=16, q_block=16, max_len=64, dynamic=True, warmup_decodes=0),
    "cuda": Setup(page=64, q_block=128, max_len=128, dynamic=False, warmup_decodes=1),
}


class PagedCache:
    """Per layer a K and a V cache ``[1, Hkv, n_pages * page, D]``, one page
    table for all layers, and what the current step attends with: each
    sequence's offset (its first new position) and valid length."""

    def __init__(self, config, max_batch: int, n_pages: int, setup: Setup, device: str,
                 dtype: torch.dtype):
        hkv = config.num_key_value_heads
        d = config.hidden_size // config.num_attention_heads
        self.setup = setup
        self.paged = PagedAttention(n_pages, setup.page, max_batch, device=device)
        shape = (1, hkv, n_pages * setup.page, d)
        self.layers = [(torch.zeros(shape, device=device, dtype=dtype),
                        torch.zeros(shape, device=device, dtype=dtype))
                       for _ in range(config.num_hidden_layers)]
        # read by the mask_mod and the paged mask
        self.offset = torch.zeros(max_batch, dtype=torch.int64, device=device)
        self.kv_len = torch.zeros(max_batch, dtype=torch.int64, device=device)
        self.block_mask = None

    def begin_step(self, batch_idx: torch.Tensor, positions: torch.Tensor, lengths: torch.Tensor):
        """Before a forward of the tokens at ``positions [B, S]``: pages for
        them, and the step's block mask (causal from each sequence's offset,
        over its first ``lengths[b]`` positions, mapped onto the pages)."""
        for b, n in zip(batch_idx.tolist(), lengths.tolist()):
            self.paged.reserve(torch.tensor(b), torch.tensor(max(n, positions.shape[1])))
        self.offset[: len(batch_idx)] = positions[:, 0]
        self.kv_len[: len(batch_idx)] = lengths
        offset = self.offset[: len(batch_idx)]

        def causal_from_offset(b, h, q_idx, kv_idx):
            return q_idx + offset[b] >= kv_idx

        rows = positions.shape[1]
        setup = self.setup
        logical = create_block_mask(causal_from_offset, len(batch_idx), None, rows, setup.max_len,
                                    BLOCK_SIZE=(setup.q_block, setup.page),
                                    device=str(offset.device))
        self.block_mask = self.paged.convert_logical_block_mask(
            logical, batch_idx, kv_len=self.kv_len[: len(batch_idx)])
        self.batch_idx, self.positions = batch_idx, positions


def paged_flex_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                         paged_cache: PagedCache = None, **kwargs):
    """transformers' attention interface: write this step's K/V into the
    pages, attend over the cache; returns ``[B, S, Hq, D]``."""
    cache = paged_cache
    k_cache, v_cache = cache.layers[module.layer_idx]
    cache.paged.assign(cache.batch_idx, cache.positions, key, value, k_cache, v_cache)
    # On the CPU one kernel for every prompt and cache length (a dynamic-shape
    # kernel); on the GPU one for the prefill and one for every decode step.
    out = flex_attention(query, k_cache, v_cache, block_mask=cache.block_mask, scale=scaling,
                         enable_gqa=True, kernel_options={"dynamic": cache.setup.dynamic})
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("flexattn_paged", paged_flex_attention)


def tiny_llama(setup: Setup, device: str, dtype: torch.dtype, seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=setup.max_len)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval().to(device=device, dtype=dtype)


@torch.no_grad()
def serve(prompt_lengths=(5, 11, 3), new_tokens: int = 8, seed: int = 0, verbose: bool = True,
          device: str = "cpu", dtype: torch.dtype = torch.float32):
    """Prefill, then greedy decoding; returns (max |logit difference| against
    the model without a cache, kernels compiled after the warm-up)."""
    if device not in SETUPS:
        raise ValueError(f"device must be one of {sorted(SETUPS)}, got {device!r}")
    setup = SETUPS[device]
    if max(prompt_lengths) + new_tokens > setup.max_len:
        raise ValueError(f"a sequence would exceed max_len = {setup.max_len} positions "
                         f"(longest prompt {max(prompt_lengths)} + {new_tokens} new tokens)")
    if new_tokens <= setup.warmup_decodes:
        raise ValueError(f"new_tokens must exceed the {setup.warmup_decodes} warm-up decode "
                         f"step(s) on {device}, got {new_tokens}")
    model = tiny_llama(setup, device, dtype, seed)
    reference = tiny_llama(setup, device, dtype, seed)
    model.set_attn_implementation("flexattn_paged")
    B = len(prompt_lengths)
    cache = PagedCache(model.config, max_batch=B, n_pages=B * setup.max_len // setup.page,
                       setup=setup, device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, model.config.vocab_size, (n,), generator=gen) for n in prompt_lengths]
    lengths = torch.tensor(prompt_lengths, device=device)
    batch_idx = torch.arange(B, device=device)

    # Prefill: the prompts padded to the longest; row b's logits at lengths[b] - 1.
    S = int(lengths.max())
    tokens = torch.zeros(B, S, dtype=torch.int64)
    for b, p in enumerate(prompts):
        tokens[b, : len(p)] = p
    tokens = tokens.to(device)
    positions = torch.arange(S, device=device).expand(B, S)
    steps = []
    t0 = time.perf_counter()
    cache.begin_step(batch_idx, positions, lengths)
    logits = model(tokens, position_ids=positions, use_cache=False, paged_cache=cache).logits
    last = logits[batch_idx, lengths - 1]
    steps.append(("prefill", time.perf_counter() - t0, attention_compile_count(), last))
    sequences = [p.tolist() for p in prompts]
    warm = attention_compile_count()
    for step in range(new_tokens):
        if step == setup.warmup_decodes:
            warm = attention_compile_count()
        nxt = last.argmax(-1)
        for b in range(B):
            sequences[b].append(int(nxt[b]))
        t0 = time.perf_counter()
        positions = lengths[:, None].clone()
        lengths = lengths + 1
        cache.begin_step(batch_idx, positions, lengths)
        last = model(nxt[:, None], position_ids=positions, use_cache=False, paged_cache=cache).logits[:, 0]
        steps.append((f"decode {step + 1}", time.perf_counter() - t0, attention_compile_count(), last))

    # The reference: each whole sequence through the model without a cache.
    worst = 0.0
    for b, seq in enumerate(sequences):
        full = reference(torch.tensor([seq], device=device)).logits[0]
        for i, (name, _, _, got) in enumerate(steps):
            pos = prompt_lengths[b] - 1 + i
            if pos < len(seq):
                worst = max(worst, float((got[b] - full[pos]).abs().max()))
    if verbose:
        print(f"prompts of {list(prompt_lengths)} tokens, {new_tokens} new tokens each, "
              f"{model.config.num_hidden_layers} layers, GQA {model.config.num_attention_heads}:"
              f"{model.config.num_key_value_heads}, pages of {setup.page}, {device} {dtype}")
        for name, seconds, compiled, _ in steps:
            print(f"  {name:10s} {seconds * 1e3:8.1f} ms   kernels compiled so far: {compiled}")
        print(f"max |logits - logits without cache| = {worst:.2e}")
        after = "the prefill" if not setup.warmup_decodes else \
            f"the prefill and {setup.warmup_decodes} decode step(s)"
        print(f"kernels compiled after the warm-up ({after}): {attention_compile_count() - warm}")
    return worst, attention_compile_count() - warm


# |logits - logits without cache| allowed per dtype (the model's own matmuls
# round differently in the two runs at bf16).
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", default="5,11,3", help="prompt lengths, comma-separated")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--device", default="cpu", choices=sorted(SETUPS))
    parser.add_argument("--dtype", default="float32", choices=sorted(TOLERANCE))
    args = parser.parse_args(argv)
    worst, compiled = serve(tuple(int(n) for n in args.prompts.split(",")), args.new_tokens,
                            device=args.device, dtype=getattr(torch, args.dtype))
    if worst > TOLERANCE[args.dtype] or compiled:
        raise SystemExit("FAILED: logits differ or a step compiled after warm-up")


if __name__ == "__main__":
    main()
