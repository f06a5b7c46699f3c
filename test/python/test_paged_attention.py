"""flexattn_mlir.PagedAttention against torch's PagedAttention (its page
bookkeeping, and torch flex on CPU eager through its converted mask and mods)
and a float64 dense reference of each sequence's logical K/V."""

import pytest
import torch
from torch.nn.attention.experimental._paged_attention import PagedAttention as TorchPaged
from torch.nn.attention.flex_attention import create_block_mask as torch_block_mask
from torch.nn.attention.flex_attention import flex_attention as torch_flex

from flexattn_mlir import PagedAttention, create_block_mask, flex_attention
from reference import reference_attention

H, D, PAGE, PAGES, MAX_B = 4, 16, 16, 24, 4
LENGTHS = [50, 17, 33]


def _caches(h=H):
    return torch.zeros(1, h, PAGES * PAGE, D), torch.zeros(1, h, PAGES * PAGE, D)


def _fill(paged, lengths, ks, vs, k_cache, v_cache):
    for i, (n, k, v) in enumerate(zip(lengths, ks, vs)):
        paged.reserve(torch.tensor(i), torch.tensor(n))
        paged.assign(torch.tensor([i]), torch.arange(n)[None], k, v, k_cache, v_cache)


def test_bookkeeping_matches_torch():
    ours, theirs = PagedAttention(PAGES, PAGE, MAX_B, "cpu"), TorchPaged(PAGES, PAGE, MAX_B, "cpu")
    for batch, length in [(0, 20), (1, 5), (0, 40), (2, 64), (0, 33), (3, 1)]:
        for p in (ours, theirs):
            p.reserve(torch.tensor(batch), torch.tensor(length))
        assert torch.equal(ours.page_table, theirs.page_table)
        assert torch.equal(ours.capacity, theirs.capacity)
        assert torch.equal(ours.physical_to_logical, theirs.physical_to_logical)
        assert ours.empty_pages == theirs.empty_pages
    for p in (ours, theirs):
        p.erase(torch.tensor([1]))
    assert torch.equal(ours.page_table, theirs.page_table)
    assert torch.equal(ours.capacity, theirs.capacity)
    assert ours.empty_pages == theirs.empty_pages
    # torch's erase writes -1 into a copy of physical_to_logical's row; ours
    # clears the row, so a sequence that reuses the slot sees none of them.
    assert (ours.physical_to_logical[1] == -1).all()
    with pytest.raises(AssertionError, match="empty pages"):
        ours.reserve(torch.tensor(1), torch.tensor(PAGES * PAGE))


def test_assign_matches_torch():
    ours, theirs = PagedAttention(PAGES, PAGE, MAX_B, "cpu"), TorchPaged(PAGES, PAGE, MAX_B, "cpu")
    ks = [torch.randn(1, H, n, D) for n in LENGTHS]
    vs = [torch.randn(1, H, n, D) for n in LENGTHS]
    (k1, v1), (k2, v2) = _caches(), _caches()
    _fill(ours, LENGTHS, ks, vs, k1, v1)
    _fill(theirs, LENGTHS, ks, vs, k2, v2)
    assert torch.equal(k1, k2) and torch.equal(v1, v2)
    with pytest.raises(RuntimeError, match="heads"):
        ours.assign(torch.tensor([0]), torch.arange(4)[None], torch.randn(1, H + 1, 4, D),
                    torch.randn(1, H + 1, 4, D), k1, v1)


def _alibi(slopes):
    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)
    return alibi


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


@pytest.mark.parametrize("with_kv_len", [True, False])
def test_prefill_matches_torch_and_dense(with_kv_len):
    """Prompts of different lengths, causal + ALiBi over the paged cache:
    ours (our PagedAttention, our flex) against torch's pair (eager), and
    each sequence against a float64 reference on its own logical K/V."""
    ks = [torch.randn(1, H, n, D) for n in LENGTHS]
    vs = [torch.randn(1, H, n, D) for n in LENGTHS]
    ours, theirs = PagedAttention(PAGES, PAGE, MAX_B, "cpu"), TorchPaged(PAGES, PAGE, MAX_B, "cpu")
    (k1, v1), (k2, v2) = _caches(), _caches()
    _fill(ours, LENGTHS, ks, vs, k1, v1)
    _fill(theirs, LENGTHS, ks, vs, k2, v2)
    B, M = len(LENGTHS), max(LENGTHS)
    q = torch.randn(B, H, M, D)
    kv_len = torch.tensor(LENGTHS) if with_kv_len else None
    alibi = _alibi(torch.rand(H))
    logical = create_block_mask(causal, B, 1, M, M, BLOCK_SIZE=(PAGE, PAGE))
    out, lse = flex_attention(q, k1, v1, score_mod=ours.get_score_mod(alibi, kv_len),
                              block_mask=ours.convert_logical_block_mask(logical, kv_len=kv_len),
                              return_lse=True)
    torch_logical = torch_block_mask(causal, B, 1, M, M, device="cpu", BLOCK_SIZE=(PAGE, PAGE))
    ref, ref_lse = torch_flex(q, k2, v2, score_mod=theirs.get_score_mod(alibi, kv_len),
                              block_mask=theirs.convert_logical_block_mask(torch_logical, kv_len=kv_len),
                              return_lse=True)
    for i, n in enumerate(LENGTHS):
        rows = n if with_kv_len else M  # without kv_len, rows past n see the page's tail
        torch.testing.assert_close(out[i, :, :rows], ref[i, :, :rows], atol=2e-6, rtol=2e-5)
        torch.testing.assert_close(lse[i, :, :rows], ref_lse[i, :, :rows], atol=2e-6, rtol=2e-5)
        dense, _ = reference_attention(q[i:i + 1, :, :n], ks[i], vs[i], score_fn=alibi,
                                       mask_fn=causal)
        torch.testing.assert_close(out[i:i + 1, :, :n].double(), dense, atol=2e-6, rtol=2e-5)


def test_logical_block_mask_drops_unreserved_blocks():
    """Logical blocks with no page are wholly masked: they leave the lists."""
    paged = PagedAttention(PAGES, PAGE, MAX_B, "cpu")
    paged.reserve(torch.tensor(0), torch.tensor(2 * PAGE))
    logical = create_block_mask(causal, 1, 1, 4 * PAGE, 4 * PAGE, BLOCK_SIZE=PAGE)
    physical = paged.convert_logical_block_mask(logical)
    assert physical.kv_indices.shape[-1] == PAGES
    assert physical.seq_lengths == (4 * PAGE, PAGES * PAGE)
    total = physical.kv_num_blocks + physical.full_kv_num_blocks
    assert total.flatten().tolist() == [1, 2, 2, 2]
    pages = set(paged.page_table[0, :2].tolist())
    for row in range(4):
        listed = physical.full_kv_indices[0, 0, row, :physical.full_kv_num_blocks[0, 0, row]]
        assert set(listed.tolist()) <= pages
