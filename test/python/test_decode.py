"""The decode path (docs/inference.md, "Decoding"): query heads packed per
KV group, KV blocks split across tiles and merged by their lse, against
torch's flex_attention (CPU eager), on contiguous and paged KV caches."""

import pytest
import torch
from torch.nn.attention.experimental._paged_attention import PagedAttention as TorchPaged
from torch.nn.attention.flex_attention import create_block_mask as torch_block_mask
from torch.nn.attention.flex_attention import flex_attention as torch_flex
from torch.nn.attention.flex_attention import noop_mask

import flexattn_mlir as fm
from flexattn_mlir import PagedAttention, compile_flex_attention, create_block_mask, flex_attention

D, HKV = 32, 2
# f32: the split's merge adds an exp/log per range to the online softmax.
F32 = dict(atol=2e-5, rtol=2e-5)
# Cache lengths per sequence: long enough for several KV blocks (and splits),
# one empty (every row fully masked: zeros and -inf, as torch).
LENGTHS = [300, 77, 0]
N = 320


def _masks(lengths, m):
    """causal-with-offset (the queries are the last m positions of each
    sequence) and the per-sequence length mask."""
    offset = lengths - m

    def causal_offset(b, h, q_idx, kv_idx):
        return (q_idx + offset[b] >= kv_idx) & (kv_idx < lengths[b])

    def seq_length(b, h, q_idx, kv_idx):
        return kv_idx < lengths[b]

    return {"causal_offset": causal_offset, "length": seq_length}


def _alibi(slopes):
    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)
    return alibi


def _check(out, lse, ref, ref_lse, lengths):
    torch.testing.assert_close(out, ref, **F32)
    torch.testing.assert_close(lse, ref_lse, **F32)
    for b, n in enumerate(lengths.tolist()):
        if n == 0:
            assert torch.all(out[b] == 0) and torch.all(lse[b] == float("-inf"))


@pytest.mark.parametrize("group", [4, 8])
@pytest.mark.parametrize("m", [1, 4, 64])
@pytest.mark.parametrize("mask", ["causal_offset", "length"])
@pytest.mark.parametrize("alibi", [False, True])
def test_decode_matches_torch(group, m, mask, alibi):
    lengths = torch.tensor(LENGTHS)
    B, hq = len(LENGTHS), group * HKV
    q = torch.randn(B, hq, m, D)
    k, v = torch.randn(B, HKV, N, D), torch.randn(B, HKV, N, D)
    mask_mod = _masks(lengths, m)[mask]
    score_mod = _alibi(torch.rand(hq)) if alibi else None
    out, lse = flex_attention(q, k, v, score_mod=score_mod, enable_gqa=True, return_lse=True,
                              block_mask=create_block_mask(mask_mod, B, None, m, N))
    ref, ref_lse = torch_flex(q, k, v, score_mod=score_mod, enable_gqa=True, return_lse=True,
                              block_mask=torch_block_mask(mask_mod, B, None, m, N, device="cpu"))
    _check(out, lse, ref, ref_lse, lengths)


@pytest.mark.parametrize("group", [4, 8])
@pytest.mark.parametrize("m", [1, 4, 64])
def test_paged_decode_matches_torch(group, m):
    """Decode over a paged cache (ours vs torch's PagedAttention + flex),
    causal from each sequence's offset, ALiBi, the cache read in place."""
    page, pages = 16, 64
    lengths = torch.tensor([200, 45, 130])
    B, hq = len(lengths), group * HKV
    caches = [(torch.zeros(1, HKV, pages * page, D), torch.zeros(1, HKV, pages * page, D))
              for _ in range(2)]
    ours, theirs = (PagedAttention(pages, page, B, "cpu"), TorchPaged(pages, page, B, "cpu"))
    for i, n in enumerate(lengths.tolist()):
        k, v = torch.randn(1, HKV, n, D), torch.randn(1, HKV, n, D)
        for paged, (kc, vc) in zip((ours, theirs), caches):
            paged.reserve(torch.tensor(i), torch.tensor(n))
            paged.assign(torch.tensor([i]), torch.arange(n)[None], k, v, kc, vc)
    q = torch.randn(B, hq, m, D)
    causal = _masks(lengths, m)["causal_offset"]
    alibi = _alibi(torch.rand(hq))
    n_max = int(lengths.max())
    logical = create_block_mask(causal, B, 1, m, n_max, BLOCK_SIZE=(128, page))
    out, lse = flex_attention(q, *caches[0], score_mod=ours.get_score_mod(alibi),
                              block_mask=ours.convert_logical_block_mask(logical),
                              enable_gqa=True, return_lse=True)
    torch_logical = torch_block_mask(causal, B, 1, m, n_max, device="cpu", BLOCK_SIZE=(128, page))
    ref, ref_lse = torch_flex(q, *caches[1], score_mod=theirs.get_score_mod(alibi),
                              block_mask=theirs.convert_logical_block_mask(torch_logical),
                              enable_gqa=True, return_lse=True)
    _check(out, lse, ref, ref_lse, lengths)


@pytest.mark.parametrize("page", [16, 128])
def test_paged_decode_reads_the_page_table_once_per_tile(page):
    """The paged mask_mod's `physical_to_logical[b, kv // page]` is the same
    for a whole KV tile (a tile never crosses a page): after
    flexattn-fold-tile-divisions the vectorised kernel reads it as one
    broadcast scalar per tile, not a gather per column; the output still
    matches the same K/V laid out contiguously."""
    B, hq, n = 3, 4 * HKV, 4 * page
    cache = PagedAttention(B * n // page, page, B, "cpu")
    for block in range(n // page):  # pages handed out to the sequences in turn
        for b in range(B):
            cache.reserve(torch.tensor(b), torch.tensor((block + 1) * page))
    k, v = torch.randn(B, HKV, n, D), torch.randn(B, HKV, n, D)
    kc, vc = (torch.zeros(1, HKV, cache.n_pages * page, D) for _ in range(2))
    cache.assign(torch.arange(B), torch.arange(n).expand(B, n), k, v, kc, vc)
    q = torch.randn(B, hq, 1, D)
    logical = create_block_mask(noop_mask, B, None, 1, n, BLOCK_SIZE=(128, page))
    mask = cache.convert_logical_block_mask(logical)
    compiled = compile_flex_attention(q, kc, vc, block_mask=mask, enable_gqa=True)
    assert compiled.options.decode
    vector = compiled.ir["vector"]
    table = f"memref<{B}x{cache.n_pages}xi64>"
    assert table in vector and not any("vector.gather" in line and table in line
                                       for line in vector.splitlines())
    out = flex_attention(q, kc, vc, block_mask=mask, enable_gqa=True)
    ref = flex_attention(q, k, v, enable_gqa=True)
    torch.testing.assert_close(out, ref, **F32)


def test_decode_is_chosen_by_shape_and_forced_by_kernel_options():
    """M <= 64 decodes (split-KV, heads packed for GQA); a longer M runs the
    prefill kernel; kernel_options force either way."""
    q1, q65 = torch.randn(1, 8, 1, D), torch.randn(1, 8, 65, D)
    k, v = torch.randn(1, HKV, 256, D), torch.randn(1, HKV, 256, D)

    def stages(q, **options):
        c = compile_flex_attention(q, k, v, enable_gqa=True, kernel_options=options or None)
        return c.stage_names(), c.ir["tiled"]

    names, tiled = stages(q1)
    assert "splitkv" in names and "packed(" in tiled
    names, tiled = stages(q65)
    assert "splitkv" not in names and "packed(" not in tiled
    names, tiled = stages(q65, decode=True)
    assert "splitkv" in names and "packed(" in tiled
    names, tiled = stages(q1, decode=False)
    assert "splitkv" not in names and "packed(" not in tiled
    names, tiled = stages(q1, pack_heads=False)
    assert "splitkv" in names and "packed(" not in tiled
    # Forced on, the decode kernel also serves a prefill-sized call.
    out = flex_attention(q65, k, v, enable_gqa=True, kernel_options={"decode": True})
    torch.testing.assert_close(out, torch_flex(q65, k, v, enable_gqa=True), **F32)


def test_sinks_and_max_scores_take_the_prefill_kernel():
    """The decode path does not merge sinks or max_scores across KV ranges
    yet: a small-M call with either runs the prefill kernel (and matches
    the float64 reference); forcing decode with them is a clear error."""
    from torch.nn.attention.flex_attention import AuxRequest

    from reference import reference_attention

    q = torch.randn(1, 8, 2, D)
    k, v = torch.randn(1, HKV, 256, D), torch.randn(1, HKV, 256, D)
    sinks = torch.randn(8)
    out, aux = flex_attention(q, k, v, enable_gqa=True, sinks=sinks,
                              return_aux=AuxRequest(lse=True, max_scores=True))
    ref, ref_lse = reference_attention(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1),
                                       sinks=sinks)
    torch.testing.assert_close(out, ref.to(out.dtype), **F32)
    torch.testing.assert_close(aux.lse, ref_lse.to(aux.lse.dtype), **F32)
    with pytest.raises(ValueError, match="decode path does not take attention sinks or "
                                         "max_scores"):
        flex_attention(q, k, v, enable_gqa=True, sinks=sinks, kernel_options={"decode": True})


def test_unpacked_decode_with_per_head_block_mask():
    """A block mask with a head dim reads a row per query head: the call
    decodes (split-KV) without packing; pack_heads=True is refused."""
    B, hq, m = 2, 8, 1
    q = torch.randn(B, hq, m, D)
    k, v = torch.randn(B, HKV, N, D), torch.randn(B, HKV, N, D)

    def per_head(b, h, q_idx, kv_idx):
        return kv_idx < 40 * (h + 1)

    out = flex_attention(q, k, v, enable_gqa=True,
                         block_mask=create_block_mask(per_head, B, hq, m, N))
    ref = torch_flex(q, k, v, enable_gqa=True,
                     block_mask=torch_block_mask(per_head, B, hq, m, N, device="cpu"))
    torch.testing.assert_close(out, ref, **F32)
    with pytest.raises(ValueError, match="pack_heads=True"):
        flex_attention(q, k, v, enable_gqa=True, kernel_options={"pack_heads": True},
                       block_mask=create_block_mask(per_head, B, hq, m, N))


def test_decode_bf16_matches_torch():
    B, hq, m = 2, 8, 4
    lengths = torch.tensor([250, 31])
    q = torch.randn(B, hq, m, D, dtype=torch.bfloat16)
    k = torch.randn(B, HKV, N, D, dtype=torch.bfloat16)
    v = torch.randn(B, HKV, N, D, dtype=torch.bfloat16)
    causal = _masks(lengths, m)["causal_offset"]
    out = flex_attention(q, k, v, enable_gqa=True,
                         block_mask=create_block_mask(causal, B, None, m, N))
    ref = torch_flex(q.float(), k.float(), v.float(), enable_gqa=True,
                     block_mask=torch_block_mask(causal, B, None, m, N, device="cpu"))
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_one_dynamic_decode_kernel_for_every_length():
    """A dynamic decode kernel serves M in {1, 4, 64}, three cache lengths
    and two batch sizes: the compile counter moves once. (The lengths live
    in a tensor of the largest batch: captured tensors' shapes are in the
    kernel's key.)"""
    before = fm.attention_compile_count()
    for B in (1, 3):
        for m in (1, 4, 64):
            for n in (70, 300, 1000):
                lengths = torch.randint(1, n + 1, (3,))
                q = torch.randn(B, 8, m, D)
                k, v = torch.randn(B, HKV, n, D), torch.randn(B, HKV, n, D)
                causal = _masks(lengths, m)["causal_offset"]
                out, lse = flex_attention(q, k, v, enable_gqa=True, return_lse=True,
                                          kernel_options={"dynamic": True},
                                          block_mask=create_block_mask(causal, B, None, m, n))
                ref, ref_lse = torch_flex(
                    q, k, v, enable_gqa=True, return_lse=True,
                    block_mask=torch_block_mask(causal, B, None, m, n, device="cpu"))
                torch.testing.assert_close(out, ref, **F32)
                torch.testing.assert_close(lse, ref_lse, **F32)
    assert fm.attention_compile_count() - before == 1

