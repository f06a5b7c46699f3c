"""frontend.index_reads: the export's rewrite of ``t[i]`` with 0-d index
tensors into ``torch.select(t, d, i.item())`` (docs/frontend.md §7).

The rewrite must not change what a read means: in eager mode every index
form gives exactly torch's ``__getitem__`` result (or the same exception
type), and where the installed torch's export traces such reads itself
(torch >= 2.13), the captured region is byte-for-byte the one it gives
without the rewrite.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from flexattn_mlir.frontend import capture as fe
from flexattn_mlir.frontend import capture_mask_mod, capture_score_mod, convert
from flexattn_mlir.frontend.index_reads import ScalarIndexReads

T = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(4, 5, 6)


def i32(v):
    return torch.tensor(v, dtype=torch.int32)


INDICES = {
    "i": lambda: i32(2),
    "negative": lambda: i32(-1),
    "i,j": lambda: (i32(3), torch.tensor(-5)),
    "i,j,k": lambda: (i32(1), i32(4), i32(5)),
    "int,i": lambda: (1, i32(2)),
    "i,...,k": lambda: (i32(1), Ellipsis, i32(-2)),
    "...,k": lambda: (Ellipsis, i32(3)),
    "None,i": lambda: (None, i32(2)),
    "i,slice": lambda: (i32(0), slice(1, 4)),
    "i,stepped-slice": lambda: (i32(0), slice(None, None, 2), i32(1)),
    "i8 index": lambda: torch.tensor(3, dtype=torch.int8),
    # left to torch's __getitem__ (not rewritten), same result either way
    "0-d bool": lambda: torch.tensor(True),
    "vector": lambda: (torch.tensor([0, 2]), i32(1)),
    "list,i": lambda: ([0, 3], i32(1)),
}


@pytest.mark.parametrize("name", INDICES)
def test_reads_match_getitem(name):
    index = INDICES[name]()
    with ScalarIndexReads():
        got = T[index]
    assert torch.equal(got, T[index]) and got.shape == T[index].shape


@pytest.mark.parametrize("index", [i32(4), i32(-5), (i32(0), i32(5)), (i32(0), 0, i32(-7))],
                         ids=["past-end", "before-start", "2nd-dim", "3rd-dim"])
def test_out_of_range_reads_raise_as_getitem_does(index):
    with pytest.raises(IndexError):
        T[index]
    with pytest.raises(IndexError), ScalarIndexReads():
        T[index]


SLOPES = torch.rand(4)
PADDING = torch.rand(2, 64) > 0.5


def alibi(score, b, h, q_idx, kv_idx):
    return score + SLOPES[h] * (kv_idx - q_idx)


def padding_and_causal(b, h, q_idx, kv_idx):
    return PADDING[b, kv_idx] & (q_idx >= kv_idx)


def _exports_scalar_reads_itself() -> bool:
    """Whether this torch's export traces ``t[i]`` (a 0-d index tensor)
    without the rewrite (torch 2.13 does; 2.11 raises a data-dependent
    guard error)."""
    class Read(torch.nn.Module):
        def forward(self, t, i):
            return t[i]

    try:
        torch.export.export(Read(), (SLOPES, i32(1)), strict=False)
    except Exception:  # noqa: BLE001 - GuardOnDataDependentSymNode and kin
        return False
    return True


def test_region_is_the_one_torch_exports(monkeypatch):
    if not _exports_scalar_reads_itself():
        pytest.skip(f"torch {torch.__version__}'s export cannot trace t[i] without the rewrite")
    monkeypatch.setenv("FLEXATTN_DISABLE_CACHE", "1")
    texts = {}
    for mode in (ScalarIndexReads, contextlib.nullcontext):
        monkeypatch.setattr(convert, "ScalarIndexReads", mode)
        fe.clear_memo()
        texts[mode] = (capture_score_mod(alibi).ir.text, capture_mask_mod(padding_and_causal).ir.text)
    fe.clear_memo()
    assert texts[ScalarIndexReads] == texts[contextlib.nullcontext]
    assert all("flexattn.check_index" in t for t in texts[ScalarIndexReads])
