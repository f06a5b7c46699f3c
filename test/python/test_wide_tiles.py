"""Q tiles that do not divide the block mask's Q block (sm_90a's 192-row
tiles at D = 64): the mask's lists per tile (flexattn_runtime.masks.retile_q)
against a dense reference, the options' errors, and the sm_90a kernel of
three consumer warpgroups compiled to a cubin. Its numerics on a GPU:
bench/gpu_suite.py's ``*_q192`` checks."""

from __future__ import annotations

import math
import re

import pytest
import torch

import flexattn_mlir as fm
from flexattn_mlir import CompileOptions
from flexattn_mlir.compiler import targets
from flexattn_mlir.examples import zoo
from flexattn_mlir.execution import checks
from flexattn_runtime.masks import ordered_to_dense, retile_q

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def _random_lists(gen, B, H, blocks, cols, with_full: bool):
    """Random KV-side lists: each (row, block) empty, partial or full."""
    kind = torch.randint(0, 3, (B, H, blocks, cols), generator=gen)
    part, full = (kind == 1), (kind == 2)
    if not with_full:
        part, full = part | full, None

    def ordered(dense):
        d = dense.to(torch.int32)
        # Listed blocks first, then the rest, each in a shuffled order (a
        # list's order is free; the result's is ascending).
        noise = torch.rand(d.shape, generator=gen)
        order = torch.argsort(d.float() * 2 + noise, dim=-1, descending=True)
        return d.sum(-1, dtype=torch.int32), order.to(torch.int32)

    lists = [*ordered(part)]
    if full is not None:
        lists += [*ordered(full)]
    return lists, part, full


@pytest.mark.parametrize("q_block,tile_q,q_len", [
    (128, 192, 2100), (128, 192, 1000), (128, 192, 192), (128, 192, 100),
    (64, 192, 1000), (128, 256, 600), (256, 192, 900)])
@pytest.mark.parametrize("with_full", [True, False])
def test_retile_q_matches_the_union_of_each_tiles_rows(q_block, tile_q, q_len, with_full):
    gen = torch.Generator().manual_seed(q_block + tile_q + q_len)
    B, H, cols = 2, 3, 9
    blocks = -(-q_len // q_block)
    lists, part, full = _random_lists(gen, B, H, blocks, cols, with_full)
    got = retile_q(lists, q_block, tile_q, q_len)
    tiles = -(-q_len // tile_q)
    assert len(got) == len(lists)
    for t in got:
        assert t.dtype == torch.int32 and t.shape[:3] == (B, H, tiles)
    got_part = ordered_to_dense(got[0], got[1], cols).bool()
    got_full = ordered_to_dense(got[2], got[3], cols).bool() if with_full else None
    # Row by row: a tile's blocks are those of the query blocks its rows
    # fall in.
    for t in range(tiles):
        rows = range(t * tile_q, min((t + 1) * tile_q, q_len))
        qbs = sorted({r // q_block for r in rows})
        seen = torch.zeros(B, H, cols, dtype=torch.bool)
        kept = torch.ones(B, H, cols, dtype=torch.bool)
        for qb in qbs:
            seen |= part[:, :, qb] | (full[:, :, qb] if with_full else False)
            if with_full:
                kept &= full[:, :, qb]
        if with_full:
            assert torch.equal(got_full[:, :, t], kept), (t, qbs)
            assert torch.equal(got_part[:, :, t], seen & ~kept), (t, qbs)
        else:
            assert torch.equal(got_part[:, :, t], seen), (t, qbs)
    # Listed blocks come first, ascending.
    for num, idx in zip(got[0::2], got[1::2]):
        for b in range(B):
            for h in range(H):
                for t in range(tiles):
                    n = int(num[b, h, t])
                    listed = idx[b, h, t, :n].tolist()
                    assert listed == sorted(listed) and len(set(listed)) == n


def test_retile_q_keeps_a_broadcast_head_dim():
    lists, _, _ = _random_lists(torch.Generator().manual_seed(0), 1, 1, 8, 8, True)
    got = retile_q(lists, 128, 192, 1000)
    assert [tuple(t.shape) for t in got] == [(1, 1, 6), (1, 1, 6, 8)] * 2


def test_wide_tile_options_errors():
    with pytest.raises(ValueError, match=r"tile_q must be 128 \(or 192 at head dim 64\) for the "
                                         r"sm_90a prefill kernel, got 160"):
        CompileOptions(target="sm_90a", tile_q=160)
    with pytest.raises(ValueError, match=r"tile_q must be 128 for the sm_80 prefill kernel, got 192"):
        CompileOptions(target="sm_80", tile_q=192)
    opts = CompileOptions(target="sm_90a", tile_q=192)
    q = torch.empty(1, 2, 256, 128, dtype=torch.bfloat16, device="meta")
    with pytest.raises(ValueError, match=r"kernel_options BLOCK_M \(CompileOptions.tile_q\) = 192 is not "
                                         r"supported by the sm_90a kernel of bfloat16 head dims "
                                         r"D=128, Dv=128: it takes 128, or 192 at bfloat16/"
                                         r"float16 D = Dv = 64 with static shapes"):
        checks.check_gpu_support(q, q, None, opts)
    q32 = torch.empty(1, 2, 256, 64, dtype=torch.float32, device="meta")
    with pytest.raises(ValueError, match=r"float32 head dims D=64"):
        checks.check_gpu_support(q32, q32, None, opts)
    q64 = torch.empty(1, 2, 256, 64, dtype=torch.bfloat16, device="meta")
    checks.check_gpu_support(q64, q64, None, opts)  # the kernel it is for


def test_targets_table_q_tiles():
    sm90 = targets.TARGETS["sm_90a"]
    assert sm90.takes_q_tile(192, 64, 64) and sm90.takes_q_tile(128, 64, 64)
    assert not sm90.takes_q_tile(192, 128, 128)
    assert not sm90.takes_q_tile(192, 64, 64, "float32")
    assert not sm90.takes_q_tile(192, 64, 64, dynamic=True)
    for d in (64, 128, 96):
        assert sm90.q_tile(d, d) in (128, 192)
        assert sm90.takes_q_tile(sm90.q_tile(d, d), d, d)


MAX_REGISTERS_512 = 128  # 65536 registers / 512 threads


@pytest.mark.parametrize("variant,options", [
    ("full", {}), ("causal", {}), ("document", {}), ("alibi_causal", {}),
    ("sliding_window", {}), ("prefix_lm", {}), ("softcap_causal", {}),
    ("relative_bias", {}), ("natten_2d", {}), ("causal_and_document", {}),
    ("causal", {"pingpong": False}),
    ("causal", {"pipeline": False, "pingpong": False})])
def test_three_consumer_groups_compile_to_a_cubin(variant, options):
    """sm_90a, D = 64, 192-row Q tiles: 512 threads (a producer warpgroup,
    three consumer warpgroups of 64 rows), setmaxnreg 32 / 160, a 192-row
    Q box, the three-way turns (bar.sync on 256 threads), no spill (not
    the T5 bucket bias: its gather spills 84 bytes in this kernel)."""
    S = 1000
    spec = zoo.spec(variant, 1, 2, S, 64, return_lse=True, tile_q=192)
    if spec.block_size is not None:
        assert tuple(spec.block_size) == (192, 128)
    compiled = fm.compile(spec, CompileOptions(target="sm_90a", tile_q=192, **options),
                          keep_ir=False)
    md, ptx = compiled.metadata, compiled.metadata["ptx"]
    assert md["cubin"][:4] == b"\x7fELF"
    res = md["resources"]
    assert res.registers <= MAX_REGISTERS_512 and (res.spill_stores, res.spill_loads) == (0, 0), res
    launch = md["launch"]
    assert launch["block"] == [512, 1, 1] and ".maxntid 512, 1, 1" in ptx
    grid = options.get("persistent") or 2 * math.ceil(S / 192)
    assert launch["grid"] == [grid, 1, 1]
    maps = [p for p in launch["params"] if p["kind"] == "tensormap"]
    assert [m["box"] for m in maps] == [[64, 192, 1, 1], [64, 128, 1, 1], [64, 128, 1, 1]]
    # Q (192 x 64) + 2 stages of K and V (128 x 64), bf16, 2 + 4 x 2 barriers, slack.
    assert launch["shared_mem_bytes"] == 2 * (192 * 64 + 2 * 2 * 128 * 64) + 8 * 10 + 1024
    assert re.search(r"setmaxnreg\.dec\.sync\.aligned\.u32\s+32;", ptx)
    assert re.search(r"setmaxnreg\.inc\.sync\.aligned\.u32\s+160;", ptx)
    pingpong = options.get("pingpong", True)
    assert bool(re.search(r"bar\.sync\s+%r\d+, 256;", ptx)) == pingpong
    assert "m64n128k16.f32.bf16.bf16" in ptx and "m64n64k16.f32.bf16.bf16" in ptx


def _causal(b, h, q, kv):
    return q >= kv


def _even_keys(b, h, q, kv):
    return (q >= kv) & (kv % 2 == 0)


def test_block_mask_agrees_with_its_mask_mod():
    from torch.nn.attention.flex_attention import create_block_mask as torch_create_block_mask

    from flexattn_mlir.masks.block_mask import BlockMask, agrees_with_mask_mod

    S = 700
    bm = fm.create_block_mask(_causal, None, None, S, S, device="cpu")
    assert agrees_with_mask_mod(bm, S, S)
    # torch's create_block_mask gives the same lists.
    tbm = torch_create_block_mask(_causal, None, None, S, S, device="cpu")
    assert agrees_with_mask_mod(BlockMask.from_torch(tbm), S, S)
    # A reassigned mask_mod: causal's full blocks keep odd keys the new one drops.
    bm.mask_mod = _even_keys
    assert not agrees_with_mask_mod(bm, S, S)
    # Lists without a mask_mod (noop): a partial block keeps every element,
    # so a tile's union would give rows blocks they do not list: only lists
    # that name every block agree.
    lists = fm.create_block_mask(_causal, None, None, S, S, device="cpu")
    plain = BlockMask.from_kv_blocks(lists.kv_num_blocks, lists.kv_indices,
                                     lists.full_kv_num_blocks, lists.full_kv_indices)
    assert not agrees_with_mask_mod(plain, S, S)
    dense = fm.create_block_mask(lambda b, h, q, kv: q >= 0, None, None, S, S, device="cpu")
    assert agrees_with_mask_mod(BlockMask.from_kv_blocks(
        dense.kv_num_blocks, dense.kv_indices, dense.full_kv_num_blocks,
        dense.full_kv_indices), S, S)
    # Hand-made lists that call every block full under a causal mask_mod.
    blocks = -(-S // 128)
    num = torch.full((1, 1, blocks), blocks, dtype=torch.int32)
    idx = torch.arange(blocks, dtype=torch.int32).expand(1, 1, blocks, blocks).contiguous()
    zero = torch.zeros_like(num)
    all_full = BlockMask.from_kv_blocks(zero, idx, num, idx, mask_mod=_causal)
    assert not agrees_with_mask_mod(all_full, S, S)
    all_partial = BlockMask.from_kv_blocks(num, idx, zero, idx, mask_mod=_causal)
    assert agrees_with_mask_mod(all_partial, S, S)


def test_flex_attention_picks_the_wide_tile_at_d64():
    """sm_90a, D = 64: 192-row tiles (no persistent CTAs) unless kernel_options
    name a tile or persistent CTAs, or the block mask disagrees with its
    mask_mod; D = 128 keeps 128."""
    from flexattn_mlir import api

    S = 1000
    sm90 = CompileOptions(target="sm_90a")

    def pick(D, bm=None, kernel_options=None):
        q = torch.empty(2, 4, S, D, dtype=torch.bfloat16)
        opts = api._q_tile(sm90, kernel_options, q, q, q, bm)
        return opts.tile_q, api._prefers_persistent(opts, bm, kernel_options, q, q, q)

    bm = fm.create_block_mask(_causal, None, None, S, S, device="cpu")
    assert pick(64) == (192, False)
    assert pick(64, bm) == (192, False)  # causal, density ~0.5: persistent at 128
    assert pick(128, bm) == (128, False)
    assert pick(64, bm, {"BLOCK_M": 128}) == (128, True)
    assert pick(64, bm, {"persistent": 4})[0] == 128
    bm.mask_mod = _even_keys
    assert pick(64, bm) == (128, True)
    q = torch.empty(2, 4, S, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"BLOCK_M \(CompileOptions.tile_q\) = 192: the kernel reads the block "
                                         r"mask's 128-row blocks as each tile's union"):
        checks.check_gpu_support(q, q, bm, CompileOptions(target="sm_90a", tile_q=192))


def test_compile_for_sm90a_reads_the_mask_per_192_row_tile():
    """What flex_attention compiles for a causal D = 64 call on an H100/H200
    (compiled here, for sm_90a): the 512-thread kernel with the mask's lists
    per 192-row tile (6 tiles of 1100 rows: [1, 1, 6] counts)."""
    S = 1100
    q = torch.randn(1, 2, S, 64, dtype=torch.bfloat16)
    bm = fm.create_block_mask(_causal, None, None, S, S, device="cpu")
    compiled = fm.compile_flex_attention(q, q, q, block_mask=bm, target="sm_90a")
    launch = compiled.metadata["launch"]
    assert launch["block"] == [512, 1, 1] and launch["grid"] == [2 * 6, 1, 1]
    first = compiled.ir[compiled.stage_names()[0]]
    assert "block_size = array<i64: 192, 128>" in first
    assert "memref<1x1x6xi32>" in first
