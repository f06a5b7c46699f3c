"""Context-parallel attention (flexattn_mlir.distributed) on gloo CPU ranks:
2 and 4 processes give one process's out, lse and gradients, for causal,
document and sliding-window masks with ALiBi, at a length divisible by
neither rank count; and the layouts, helpers and errors on their own."""

import socket
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

import cp_cases
from flexattn_mlir import create_block_mask
from flexattn_mlir.distributed import (SequenceSharding, context_parallel_flex_attention,
                                       create_cp_block_mask)

TIMEOUT_S = 300  # the whole spawn: a hang fails instead of blocking CI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(world: int, expected: dict, plans, monkeypatch) -> None:
    # The ranks need nothing from the parent's main script (pytest's entry
    # point, which may not be import-safe); spawn would run it again in
    # each child unless __main__ names no file.
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "__spec__", None, raising=False)
    monkeypatch.delattr(main, "__file__", raising=False)
    ctx = mp.start_processes(cp_cases.worker, args=(world, _free_port(), expected, plans),
                             nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"context-parallel ranks still running after {TIMEOUT_S} s (a hang?)")


# Every case meets both group sizes and both rotations.
PLANS = [("causal", 2, "ring"), ("causal", 4, "allgather"),
         ("document", 2, "allgather"), ("document", 4, "ring"),
         ("sliding_window", 2, "ring"), ("sliding_window", 4, "allgather")]


def test_gloo_ranks_match_one_process(monkeypatch):
    expected = {case: cp_cases.one_process(case) for case in cp_cases.CASES}
    _spawn(4, expected, PLANS, monkeypatch)


# ---------------------------------------------------------------------------
# Layouts and helpers (one process, no communication)
# ---------------------------------------------------------------------------


def test_head_tail_layout_pairs_chunks_and_pads():
    sh = SequenceSharding.head_tail(10, 2)  # 4 chunks of 3: 12 positions, 2 of padding
    assert sh.local_len == 6
    assert sh.order.tolist() == [0, 1, 2, 9, 10, 11, 3, 4, 5, 6, 7, 8]
    assert sh.positions(1).dtype == torch.int32 and sh.padded


@pytest.mark.parametrize("layout", ["contiguous", "head_tail", "balanced"])
@pytest.mark.parametrize("seq_len,world", [(91, 2), (91, 4), (64, 4), (5, 4)])
def test_shard_unshard_round_trip(layout, seq_len, world):
    if layout == "balanced":
        bm = create_block_mask(lambda b, h, q, kv: q >= kv, None, None, seq_len, seq_len,
                               BLOCK_SIZE=16)
        sh = SequenceSharding.balanced(bm, world)
    else:
        sh = getattr(SequenceSharding, layout)(seq_len, world)
    x = torch.randn(2, 3, seq_len, 4)
    shards = [sh.shard(x, 2, r) for r in range(world)]
    assert all(s.shape == (2, 3, sh.local_len, 4) for s in shards)
    for r, s in enumerate(shards):  # padding rows are zero
        assert not s[:, :, sh.positions(r) >= seq_len].any()
    torch.testing.assert_close(sh.unshard(torch.cat(shards, 2), 2), x, rtol=0, atol=0)
    torch.testing.assert_close(sh.reorder(x, 2), torch.cat(shards, 2), rtol=0, atol=0)
    assert sorted(sh.order[sh.order < seq_len].tolist()) == list(range(seq_len))


def _work(sh: SequenceSharding, mask_mod) -> list[int]:
    """Per rank, the (q, kv) pairs of the whole-sequence mask its rows keep."""
    i = torch.arange(sh.seq_len)
    dense = mask_mod(None, None, i[:, None], i[None, :])
    return [int(dense[rows[rows < sh.seq_len].long()].sum())
            for rows in (sh.positions(r) for r in range(sh.world_size))]


def test_load_balanced_layouts_even_out_the_work():
    causal = lambda b, h, q, kv: q >= kv  # noqa: E731
    contiguous = _work(SequenceSharding.contiguous(512, 4), causal)
    head_tail = _work(SequenceSharding.head_tail(512, 4), causal)
    assert max(contiguous) > 3 * min(contiguous)
    assert max(head_tail) - min(head_tail) <= 0.01 * max(head_tail)

    docs = torch.repeat_interleave(torch.arange(3), torch.tensor([300, 150, 62]))
    document = lambda b, h, q, kv: (docs[q] == docs[kv]) & (q >= kv)  # noqa: E731
    bm = create_block_mask(document, None, None, 512, 512, BLOCK_SIZE=16)
    balanced = _work(SequenceSharding.balanced(bm, 4), document)
    contiguous = _work(SequenceSharding.contiguous(512, 4), document)
    assert max(balanced) - min(balanced) < 0.25 * (max(contiguous) - min(contiguous))


def test_sharding_rejects_a_bad_order():
    with pytest.raises(ValueError, match="exactly once"):
        SequenceSharding(torch.tensor([0, 0, 1, 2]), 3, 2)
    with pytest.raises(ValueError, match="multiple of world_size"):
        SequenceSharding(torch.arange(5), 5, 2)
    with pytest.raises(ValueError, match="dimension 2 has size 7, expected 10"):
        SequenceSharding.head_tail(10, 2).shard(torch.zeros(1, 1, 7, 4), 2, 0)


# ---------------------------------------------------------------------------
# Argument errors (a one-rank gloo group in this process)
# ---------------------------------------------------------------------------


def test_needs_an_initialised_process_group():
    if torch.distributed.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        create_cp_block_mask(None, None, None, SequenceSharding.contiguous(8, 1))


@pytest.fixture
def one_rank():
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}",
                                         rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_argument_errors(one_rank):
    sh = SequenceSharding.head_tail(20, 1)  # 2 chunks of 10
    q = k = v = torch.randn(1, 2, sh.local_len, 8)
    with pytest.raises(ValueError, match="sharding is for 2 ranks, but the process group has 1"):
        create_cp_block_mask(None, None, None, SequenceSharding.head_tail(20, 2))
    with pytest.raises(ValueError, match="pass block_mask"):
        context_parallel_flex_attention(q, k, v)
    with pytest.raises(TypeError, match="must be a CPBlockMask"):
        context_parallel_flex_attention(
            q, k, v, block_mask=create_block_mask(lambda b, h, q, kv: q >= kv, None, None,
                                                  20, 20))
    bm = create_cp_block_mask(lambda b, h, q, kv: q >= kv, None, None, sh, BLOCK_SIZE=8)
    with pytest.raises(ValueError, match="query has 12 rows"):
        context_parallel_flex_attention(torch.randn(1, 2, 12, 8), k, v, block_mask=bm)
    with pytest.raises(ValueError, match="rotate must be one of"):
        context_parallel_flex_attention(q, k, v, block_mask=bm, rotate="alltoall")
    with pytest.raises(ValueError, match="no sequence dimension -1 of this rank's shard length"):
        create_cp_block_mask(None, None, None, sh, token_tensors=[torch.zeros(7)])
    doc = torch.zeros(sh.local_len, dtype=torch.int32)
    bm = create_cp_block_mask(lambda b, h, q, kv: doc[q] == doc[kv], None, None, sh,
                              BLOCK_SIZE=8, token_tensors=[doc])
    doc[3:] = 1  # the gathered copy and the block masks no longer hold
    with pytest.raises(ValueError, match="modified in place since"):
        context_parallel_flex_attention(q, k, v, block_mask=bm)
