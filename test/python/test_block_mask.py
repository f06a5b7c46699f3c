"""BlockMask and create_block_mask against torch's, field by field.

Every tensor of our BlockMask must equal torch's exactly (whole tensors,
including the unused tails of the index lists), for lengths that are not
multiples of the block size, rectangular blocks and broadcast B / H.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import flex_attention as tfa

import flexattn_mlir as fm
from flexattn_mlir.masks import block_mask as bm
from flexattn_mlir.masks.block_mask import BlockMask, create_block_mask
from flexattn_mlir.masks import and_masks, noop_mask, or_masks
from flexattn_mlir.masks.intervals import decide_blocks

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

FIELDS = ["kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
          "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices"]
S = 300
WINDOW, PREFIX, GRID_W = 48, 40, 20

# Per batch document ids (jagged lengths), and one shared 1-D version.
DOC2 = torch.stack([
    torch.repeat_interleave(torch.arange(5, dtype=torch.int32), torch.tensor([17, 60, 3, 190, 30])),
    torch.repeat_interleave(torch.arange(3, dtype=torch.int32), torch.tensor([128, 100, 72])),
])
DOC = DOC2[0].clone()
KEEP = torch.rand(S, generator=torch.Generator().manual_seed(2)) > 0.5


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def sliding_window(b, h, q_idx, kv_idx):
    return (q_idx >= kv_idx) & (q_idx - kv_idx <= WINDOW)


def prefix_lm(b, h, q_idx, kv_idx):
    return (kv_idx <= PREFIX) | (q_idx >= kv_idx)


def document(b, h, q_idx, kv_idx):
    return DOC[q_idx] == DOC[kv_idx]


def batched_document(b, h, q_idx, kv_idx):
    return DOC2[b, q_idx] == DOC2[b, kv_idx]


def natten(b, h, q_idx, kv_idx):
    qx, qy = q_idx // GRID_W, q_idx % GRID_W
    kx, ky = kv_idx // GRID_W, kv_idx % GRID_W
    return ((qx - kx).abs() <= 2) & ((qy - ky).abs() <= 2)


def head_window(b, h, q_idx, kv_idx):
    return (q_idx - kv_idx).abs() <= 16 + 40 * h + 3 * b


# Masks that exercise the interval analysis's corners (soundness).
def modular(b, h, q_idx, kv_idx):
    return (q_idx * 3 + kv_idx * 5) % 7 < 3


def strided_blocks(b, h, q_idx, kv_idx):
    return (q_idx // 7) == (kv_idx // 5)


def skewed(b, h, q_idx, kv_idx):
    return torch.where(q_idx > 50, q_idx >= 2 * kv_idx - 30, kv_idx < 10)


def xor_mask(b, h, q_idx, kv_idx):
    return (q_idx >= kv_idx) ^ (kv_idx > 100)


def random_keep(b, h, q_idx, kv_idx):
    return KEEP[kv_idx] & (q_idx >= kv_idx - 64)


def negative_index(b, h, q_idx, kv_idx):
    return DOC[q_idx - 299] <= DOC[-1 - kv_idx]  # python-style wrap of captures


MASKS = [causal, sliding_window, prefix_lm, document, batched_document, natten, head_window,
         tfa.and_masks(causal, document), tfa.or_masks(prefix_lm, sliding_window), tfa.noop_mask,
         modular, strided_blocks, skewed, xor_mask, random_keep, negative_index]

CONFIGS = [  # B, H, Q_LEN, KV_LEN, BLOCK_SIZE
    (2, None, S, S, 128),
    (None, 3, S, 200, (64, 128)),
    (2, 2, 200, S, (32, 16)),
]


def assert_same(ours: BlockMask, ref) -> None:
    for name in FIELDS:
        a, b = getattr(ours, name), getattr(ref, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape, (name, a.shape, b.shape)
            assert torch.equal(a, b), name
    assert tuple(ours.BLOCK_SIZE) == tuple(ref.BLOCK_SIZE)
    assert tuple(ours.seq_lengths) == tuple(ref.seq_lengths)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "x".join(map(str, c)).replace(" ", ""))
@pytest.mark.parametrize("mask", MASKS, ids=lambda m: m.__name__)
def test_create_block_mask_matches_torch(mask, config):
    b, h, q_len, kv_len, block = config
    reads_b, reads_h = mask in (batched_document, head_window), mask is head_window
    if (reads_b and b is None) or (reads_h and h is None):
        # One mask for every batch/head would hold b=0 / h=0's blocks only.
        with pytest.raises(ValueError, match=rf"mask_mod '{mask.__name__}' reads [bh] "):
            create_block_mask(mask, b, h, q_len, kv_len, BLOCK_SIZE=block)
        b, h = (2 if reads_b and b is None else b), (3 if reads_h and h is None else h)
    ours = create_block_mask(mask, b, h, q_len, kv_len, BLOCK_SIZE=block)
    ref = tfa.create_block_mask(mask, b, h, q_len, kv_len, device="cpu", BLOCK_SIZE=block)
    assert_same(ours, ref)
    assert ours.mask_mod is mask


@pytest.mark.parametrize("mask", [causal, natten, batched_document, random_keep],
                         ids=lambda m: m.__name__)
def test_analysis_off_gives_the_same(mask):
    a = create_block_mask(mask, 2, 2, S, S, BLOCK_SIZE=(64, 32))
    b = create_block_mask(mask, 2, 2, S, S, BLOCK_SIZE=(64, 32), analyze=False)
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_analysis_decides_structured_masks():
    """Only the blocks the boundary crosses are left to the kernel."""
    def undecided(mask, n, block=128):
        captured = fm.frontend.capture_mask_mod(mask)
        shape = (1, 1, n // block, n // block)
        kept, dropped = decide_blocks(captured.ir, list(captured.captures), shape, (n, n),
                                      (block, block))
        assert not bool((kept & dropped).any())
        return int((~kept & ~dropped).sum())

    assert undecided(causal, 2048) == 16  # the diagonal
    assert undecided(prefix_lm, 2048) == 16
    assert undecided(tfa.noop_mask, 2048) == 0
    doc = torch.repeat_interleave(torch.arange(4, dtype=torch.int32), 512)

    def aligned_docs(b, h, q, kv):
        return doc[q] == doc[kv]

    assert undecided(aligned_docs, 2048) == 0  # range min/max of the captured ids
    assert undecided(modular, 2048) == 256  # nothing provable: all evaluated


def test_separate_full_blocks_false():
    ours = create_block_mask(sliding_window, None, None, S, S, BLOCK_SIZE=64,
                             separate_full_blocks=False)
    ref = tfa.create_block_mask(sliding_window, None, None, S, S, device="cpu", BLOCK_SIZE=64,
                                separate_full_blocks=False)
    assert_same(ours, ref)


def test_our_combinators_match_torch():
    for ours_fn, torch_fn in ((and_masks(causal, document), tfa.and_masks(causal, document)),
                              (or_masks(prefix_lm, natten), tfa.or_masks(prefix_lm, natten)),
                              (and_masks(), tfa.and_masks()), (or_masks(), tfa.or_masks()),
                              (noop_mask, tfa.noop_mask)):
        ours = create_block_mask(ours_fn, None, None, S, S, BLOCK_SIZE=64)
        assert_same(ours, tfa.create_block_mask(torch_fn, None, None, S, S, device="cpu",
                                                BLOCK_SIZE=64))
    with pytest.raises(RuntimeError, match="callable"):
        and_masks(causal, 3)


def test_kernel_cache_and_captured_values():
    doc = DOC.clone()

    def mask(b, h, q, kv):
        return doc[q] == doc[kv]

    create_block_mask(mask, None, None, S, S, BLOCK_SIZE=(32, 64))
    count = bm.kernel_count
    other = torch.randint(0, 4, (S,), dtype=torch.int32, generator=torch.Generator().manual_seed(4))
    doc.copy_(other)
    ours = create_block_mask(mask, None, None, S, S, BLOCK_SIZE=(32, 64))
    assert bm.kernel_count == count, "same mask and shapes: the kernel is reused"
    assert_same(ours, tfa.create_block_mask(mask, None, None, S, S, device="cpu",
                                            BLOCK_SIZE=(32, 64)))


def test_str_sparsity_dense_repr_like_torch():
    for mask, b, h, n in ((causal, None, None, 1000), (batched_document, 2, 3, S),
                          (head_window, 1, 6, 1000)):
        ours = create_block_mask(mask, b, h, n, n, BLOCK_SIZE=64)
        ref = tfa.create_block_mask(mask, b, h, n, n, device="cpu", BLOCK_SIZE=64)
        assert str(ours) == str(ref)
        assert repr(ours) == repr(ref)
        assert ours.sparsity() == pytest.approx(ref.sparsity())
        assert torch.equal(ours.to_dense(), ref.to_dense())
        assert ours.shape == ref.shape and ours.numel() == ref.numel()
        assert ours.to_string(grid_size=-1) == ref.to_string(grid_size=-1)
        coarse = ours.to_string(grid_size=(5, 3), limit=2)
        assert coarse == ref.to_string(grid_size=(5, 3), limit=2)
    # torch draws visited blocks as █; ░ marks a coarse cell mixing visited
    # and skipped blocks.
    assert "█" in str(ours) and "░" in coarse


def test_as_tuple_from_kv_blocks_from_torch_getitem():
    ref = tfa.create_block_mask(natten, 2, 2, S, S, device="cpu", BLOCK_SIZE=64)
    ours = BlockMask.from_torch(ref)
    assert_same(ours, ref)
    for flatten in (True, False):
        mine, theirs = ours.as_tuple(flatten), ref.as_tuple(flatten)
        assert len(mine) == len(theirs)
        for x, y in zip(mine, theirs):
            if isinstance(x, torch.Tensor):
                assert torch.equal(x, y)
            else:
                assert x == y
    rebuilt = BlockMask.from_kv_blocks(ref.kv_num_blocks, ref.kv_indices, ref.full_kv_num_blocks,
                                       ref.full_kv_indices, BLOCK_SIZE=64, seq_lengths=(S, S))
    assert_same(rebuilt, ref)
    partial_only = BlockMask.from_kv_blocks(ref.kv_num_blocks, ref.kv_indices)
    ref_partial = tfa.BlockMask.from_kv_blocks(ref.kv_num_blocks, ref.kv_indices)
    assert_same(partial_only, ref_partial)
    assert partial_only.mask_mod is noop_mask and partial_only.seq_lengths == (5 * 128, 5 * 128)
    for index in (1, (0, 1), (slice(None), 0), (1, 1, torch.tensor([0, 2]))):
        assert_same(ours[index], ref[index])
    back = ours.to_torch()
    assert isinstance(back, tfa.BlockMask)
    assert_same(BlockMask.from_torch(back), ref)
    assert_same(ours.to("cpu"), ref)


def test_block_mask_drives_attention():
    """Our BlockMask in our attention equals torch's flex_attention."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, S, 32, generator=g) for _ in range(3))
    mask = batched_document
    ours = create_block_mask(mask, 2, None, S, S, BLOCK_SIZE=64)
    captured = ours.captured_mask
    out = fm.attention(q, k, v, mask_mod=captured.ir, captures=captured.captures, block_mask=ours)
    ref = tfa.flex_attention(q, k, v, block_mask=tfa.create_block_mask(mask, 2, None, S, S,
                                                                       device="cpu", BLOCK_SIZE=64))
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("mask", [batched_document, causal])
def test_block_tiles_walk_each_block_as_several_kv_tiles(monkeypatch, mask):
    """flexattn-tile{block-tiles} (how sm_80 runs torch's 128-column blocks
    as 64-column tiles), on the CPU: each 64-column block is two 32-column
    KV tiles, partial blocks keep mask_mod, full blocks skip it, and the
    last block (S = 300) holds a tile cut by the sequence's end; the result
    equals torch's flex_attention on the same block mask."""
    from flexattn_mlir.compiler import pipeline
    from flexattn_mlir.compiler.backends import cpu

    monkeypatch.setattr(cpu, "make_tiled",
                        lambda mod, opts: pipeline.make_tiled(mod, opts, block_tiles=True))
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, S, 32, generator=g) for _ in range(3))
    ours = create_block_mask(mask, 2, None, S, S, BLOCK_SIZE=64)
    assert int(ours.full_kv_num_blocks.sum()) > 0 and int(ours.kv_num_blocks.sum()) > 0
    captured = ours.captured_mask
    opts = fm.CompileOptions(tile_kv=32)
    spec = fm.attention_spec(q, k, v, mask_mod=captured.ir, captures=captured.captures,
                             block_mask=ours, options=opts, name="block_tiles")
    tiled = fm.compile(spec, opts).ir["tiled"]
    assert "tile_size = array<i64: 64, 32>" in tiled and "block_size = array<i64: 64, 64>" in tiled
    out = fm.attention(q, k, v, mask_mod=captured.ir, captures=captured.captures, block_mask=ours,
                       options=opts, name="block_tiles")
    ref = tfa.flex_attention(q, k, v, block_mask=tfa.create_block_mask(mask, 2, None, S, S,
                                                                       device="cpu", BLOCK_SIZE=64))
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_larger_causal_and_sliding():
    for mask in (causal, sliding_window):
        ours = create_block_mask(mask, None, None, 2048 + 77, 2048 + 77)
        ref = tfa.create_block_mask(mask, None, None, 2048 + 77, 2048 + 77, device="cpu")
        assert_same(ours, ref)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Q_LEN must be positive"):
        create_block_mask(causal, 1, 1, 0, 10)
    with pytest.raises(fm.frontend.ModCaptureError, match="mask_mod 'alibi' must take 4"):
        def alibi(s, b, h, q, kv):
            return s
        create_block_mask(alibi, 1, 1, 10, 10)
    with pytest.raises(TypeError, match="captured score_mod"):
        create_block_mask(fm.frontend.capture_score_mod(lambda s, b, h, q, kv: s), 1, 1, 10, 10)


# -- masks that depend on b / h need a block mask per batch / head --------------

def head_stripes(b, h, q_idx, kv_idx):
    return (q_idx >= kv_idx) & ((kv_idx // 16) % 4 != h)


def batch_prefix(b, h, q_idx, kv_idx):
    return kv_idx < 32 + 48 * b


@pytest.mark.parametrize("mask,index,arg", [(head_stripes, "h", "H"), (batch_prefix, "b", "B")])
def test_masks_reading_b_or_h_are_never_broadcast(mask, index, arg):
    """create_block_mask(.., B/H=None) of a mask_mod reading b/h, and any
    broadcast block mask (ours or torch's) given with such a mask_mod to a
    query with several batches/heads, raise; built per batch/head, the
    answer is torch's."""
    from reference import reference_attention

    B, H, N = 2, 4, 128
    q, k, v = (torch.randn(B, H, N, 16) for _ in range(3))
    sizes = dict(B=B, H=H)
    broadcast = dict(sizes, **{arg: None})
    with pytest.raises(ValueError, match=rf"create_block_mask: mask_mod '{mask.__name__}' reads "
                                         rf"{index} .* {arg}=None makes one mask shared"):
        create_block_mask(mask, broadcast["B"], broadcast["H"], N, N, BLOCK_SIZE=32)
    ones = dict(sizes, **{arg: 1})
    for shared in (create_block_mask(mask, ones["B"], ones["H"], N, N, BLOCK_SIZE=32),
                   tfa.create_block_mask(mask, broadcast["B"], broadcast["H"], N, N,
                                         device="cpu", BLOCK_SIZE=32)):
        with pytest.raises(ValueError, match=rf"block_mask is shared by every .* its mask_mod "
                                             rf"'{mask.__name__}' reads {index}.* with {arg}="
                                             rf"{sizes[arg]}"):
            fm.flex_attention(q, k, v, block_mask=shared)
    full = create_block_mask(mask, B, H, N, N, BLOCK_SIZE=32)
    out = fm.flex_attention(q, k, v, block_mask=full)
    ref = tfa.flex_attention(q, k, v, block_mask=tfa.create_block_mask(
        mask, B, H, N, N, device="cpu", BLOCK_SIZE=32))
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out, reference_attention(q, k, v, mask_fn=mask)[0].float(),
                               atol=2e-5, rtol=1e-5)
    # One batch/head in the query: a shared mask is exact.
    one = dict(B=slice(0, 1), H=slice(None))[arg], dict(B=slice(None), H=slice(0, 1))[arg]
    q1 = q[one[0], one[1]]
    out1 = fm.flex_attention(q1, q1, q1, block_mask=create_block_mask(
        mask, ones["B"], ones["H"], N, N, BLOCK_SIZE=32))
    torch.testing.assert_close(out1, reference_attention(q1, q1, q1, mask_fn=mask)[0].float(),
                               atol=2e-5, rtol=1e-5)
