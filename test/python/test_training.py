"""Training with ``flexattn_mlir.flex_attention`` on the CPU: gradients of q,
k, v, of captured tensors and through lse against a float64 dense autograd
reference (torch's flex_attention cannot run its backward on the CPU), a few
optimizer steps, ``torch.compile(fullgraph=True)``, and the errors.

Tolerances (``torch.testing.assert_close`` against the float64 reference):

* float32 inputs: atol 1e-4, rtol 1e-4 (observed differences are ~1e-6:
  every accumulation is float32, only the order differs; a learnable table's
  gradient sums up to M x N terms, hence the margin).
* bfloat16 inputs: the reference runs on the bf16 values upcast; our
  gradients, computed from bf16 tiles with float32 accumulation and rounded
  to bf16, within atol 3e-2, rtol 3e-2 (bf16 keeps 8 bits: ~4e-3 relative per
  value, several roundings per gradient).
* fully masked rows: exactly zero gradients, and no NaN anywhere.

The cases share kernels where they can (each distinct call compiles a
forward and a backward kernel, a second or two each).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import flexattn_mlir as fm
from flexattn_mlir.frontend import combine
from reference import reference_attention

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

F32 = dict(atol=1e-4, rtol=1e-4)
BF16 = dict(atol=3e-2, rtol=3e-2)


def leaf(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape) * scale).to(dtype).requires_grad_()


def check_grads(run, ref, inputs, *, with_lse, tol):
    """Runs ``run()`` (ours) and ``ref(*inputs64)`` (float64) on the same
    cotangents and compares the outputs and every input's gradient."""
    out, lse = run()
    dout = torch.randn(out.shape)
    dlse = torch.randn(lse.shape) if with_lse else None
    loss = (out.float() * dout).sum() + ((lse * dlse).sum() if with_lse else 0)
    loss.backward()
    inputs64 = [t.detach().double().requires_grad_() for t in inputs]
    rout, rlse = ref(*inputs64)
    rloss = (rout * dout.double()).sum()
    if with_lse:
        finite = torch.isfinite(rlse)
        rloss = rloss + (torch.where(finite, rlse, 0.0) * dlse.double()).sum()
    rloss.backward()
    torch.testing.assert_close(out.double(), rout, **tol)
    for i, (t, t64) in enumerate(zip(inputs, inputs64)):
        assert t.grad is not None, f"input {i} got no gradient"
        assert torch.isfinite(t.grad).all(), f"input {i}: non-finite gradient"
        torch.testing.assert_close(t.grad.double(), t64.grad, **tol, msg=f"gradient of input {i}")


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


# ---------------------------------------------------------------------------
# Gradients against the float64 reference
# ---------------------------------------------------------------------------


def test_full_attention_with_lse():
    """No mods, no block mask; the loss also uses lse."""
    B, H, S, D = 2, 2, 64, 16
    q, k, v = (leaf(B, H, S, D) for _ in range(3))
    check_grads(lambda: fm.flex_attention(q, k, v, return_lse=True),
                lambda q, k, v: reference_attention(q, k, v), [q, k, v],
                with_lse=True, tol=F32)


@pytest.mark.parametrize("B,Bkv", [(1, 1), (3, 1)], ids=["batch", "shared_kv"])
def test_causal_alibi_learnable_slopes_gqa_uneven_lengths(B, Bkv):
    """Causal block mask, ALiBi with learnable slopes, GQA 4/2, M != N, and
    neither length a multiple of the 32 x 32 block. ``shared_kv``: K/V of
    batch 1 read by a query batch of 3 (the forward reads them in place);
    their gradients are the sums over the query batch, as the float64
    reference's broadcast gives."""
    Hq, Hkv, M, N, D = 4, 2, 100, 72, 16
    q, k, v = leaf(B, Hq, M, D), leaf(Bkv, Hkv, N, D), leaf(Bkv, Hkv, N, D)
    slopes = (torch.rand(Hq) * 0.2).requires_grad_()

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    bm = fm.create_block_mask(causal, None, None, M, N, BLOCK_SIZE=32)

    def ref(q, k, v, s):
        return reference_attention(q, k, v, score_fn=lambda x, b, h, i, j: x + s[h] * (j - i),
                                   mask_fn=lambda b, h, i, j: i >= j)

    check_grads(lambda: fm.flex_attention(q, k, v, score_mod=alibi, block_mask=bm,
                                          enable_gqa=True, return_lse=True),
                ref, [q, k, v, slopes], with_lse=True, tol=F32)
    assert k.grad.shape == k.shape and v.grad.shape == v.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sliding_window_learnable_relative_bias(dtype):
    """A sliding-window block mask and a learnable [H, 2S - 1] relative-bias
    table (its gradient scatters into the table, accumulated in float32)."""
    B, H, S, D, W = 1, 2, 96, 16, 40
    q, k, v = (leaf(B, H, S, D, dtype=dtype) for _ in range(3))
    table = (torch.randn(H, 2 * S - 1) * 0.5).to(dtype).requires_grad_()

    def rel_bias(score, b, h, q_idx, kv_idx):
        return score + table[h, q_idx - kv_idx + S - 1]

    def window(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx <= W)

    bm = fm.create_block_mask(window, None, None, S, S, BLOCK_SIZE=32)

    def ref(q, k, v, t):
        return reference_attention(q, k, v, score_fn=lambda x, b, h, i, j: x + t[h, i - j + S - 1],
                                   mask_fn=lambda b, h, i, j: (i >= j) & (i - j <= W))

    tol = F32 if dtype == torch.float32 else BF16
    run = lambda: fm.flex_attention(q, k, v, score_mod=rel_bias, block_mask=bm,  # noqa: E731
                                    return_lse=True)
    check_grads(run, ref, [q, k, v, table], with_lse=False, tol=tol)
    assert table.grad.dtype == dtype
    # Deterministic: the same gradients, bit for bit, from a second run.

    def grads():
        out, _ = run()
        return torch.autograd.grad(out, [q, k, v, table], torch.ones_like(out))

    assert all(torch.equal(a, b) for a, b in zip(grads(), grads()))


@pytest.mark.parametrize("learnable", [False, True], ids=["qkv", "with_table"])
def test_backward_threads_share_the_tiles_exactly(learnable):
    """The backward runs on torch.get_num_threads() threads like the forward
    (its KV-tile and Q-tile loops share one work queue): any thread count
    gives the same bits as one thread. With a learnable table, the capture
    gradient's sequential nest makes the kernel run on one thread: the same
    bits too."""
    B, H, S, D = 2, 2, 96, 16
    q, k, v = (leaf(B, H, S, D) for _ in range(3))
    table = (torch.randn(H, 2 * S - 1) * 0.5).requires_grad_(learnable)

    def rel_bias(score, b, h, q_idx, kv_idx):
        return score + table[h, q_idx - kv_idx + S - 1]

    bm = fm.create_block_mask(causal, None, None, S, S, BLOCK_SIZE=32)
    wrt = [q, k, v] + ([table] if learnable else [])

    def grads(threads):
        torch.set_num_threads(threads)
        out, lse = fm.flex_attention(q, k, v, score_mod=rel_bias, block_mask=bm,
                                     return_lse=True)
        return torch.autograd.grad((out * out).sum() + lse.sum(), wrt)

    before = torch.get_num_threads()
    try:
        one, many = grads(1), grads(3)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one, many))
    ref = lambda q, k, v, *t: reference_attention(  # noqa: E731
        q, k, v, score_fn=lambda x, b, h, i, j: x + (t[0] if t else table.double())[h, i - j + S - 1],
        mask_fn=lambda b, h, i, j: i >= j)
    inputs64 = [t.detach().double().requires_grad_() for t in wrt]
    rout, rlse = ref(*inputs64)
    expected = torch.autograd.grad((rout * rout).sum() + rlse.sum(), inputs64)
    for got, want in zip(many, expected):
        torch.testing.assert_close(got.double(), want, **F32)


def test_deterministic_option_on_the_cpu():
    """kernel_options={"deterministic": True} on the CPU: its capture
    gradients already accumulate in a fixed order (one sequential nest), so
    the option gives the default's bits, run after run."""
    B, H, S, D = 1, 2, 80, 16
    q, k, v = (leaf(B, H, S, D) for _ in range(3))
    table = (torch.randn(H, 2 * S - 1) * 0.5).requires_grad_(True)

    def rel_bias(score, b, h, q_idx, kv_idx):
        return score + table[h, q_idx - kv_idx + S - 1]

    def grads(options):
        out = fm.flex_attention(q, k, v, score_mod=rel_bias, kernel_options=options)
        return torch.autograd.grad((out * out).sum(), [q, k, v, table])

    first, second, default = (grads({"deterministic": True}), grads({"deterministic": True}),
                              grads(None))
    assert all(torch.equal(a, b) and torch.equal(a, c)
               for a, b, c in zip(first, second, default))
    with pytest.raises(ValueError, match="CompileOptions.deterministic must be a bool"):
        grads({"deterministic": "yes"})


def test_document_mask_softcap():
    """A document mask (captured int32 ids) and a softcap score_mod."""
    B, H, S, D = 2, 2, 80, 16
    q, k, v = (leaf(B, H, S, D, scale=3.0) for _ in range(3))
    doc = torch.tensor([0] * 30 + [1] * 25 + [2] * 25, dtype=torch.int32)

    def softcap(score, b, h, q_idx, kv_idx):
        return 5.0 * torch.tanh(score / 5.0)

    def document(b, h, q_idx, kv_idx):
        return doc[q_idx] == doc[kv_idx]

    bm = fm.create_block_mask(document, None, None, S, S, BLOCK_SIZE=32)

    def ref(q, k, v):
        d = doc.long()
        return reference_attention(q, k, v, score_fn=lambda x, b, h, i, j: 5.0 * torch.tanh(x / 5.0),
                                   mask_fn=lambda b, h, i, j: d[i] == d[j])

    check_grads(lambda: fm.flex_attention(q, k, v, score_mod=softcap, block_mask=bm,
                                          return_lse=True),
                ref, [q, k, v], with_lse=True, tol=F32)


def test_torch_block_mask_per_head():
    """torch's BlockMask (its q-side lists), per batch and head: a window
    whose width depends on the head."""
    from torch.nn.attention import flex_attention as tfa

    B, H, S, D = 2, 2, 64, 16
    q, k, v = (leaf(B, H, S, D) for _ in range(3))

    def head_window(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx <= 8 + 24 * h)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm = tfa.create_block_mask(head_window, B, H, S, S, device="cpu", BLOCK_SIZE=16)

    def ref(q, k, v):
        return reference_attention(q, k, v,
                                   mask_fn=lambda b, h, i, j: (i >= j) & (i - j <= 8 + 24 * h))

    check_grads(lambda: fm.flex_attention(q, k, v, block_mask=bm, return_lse=True),
                ref, [q, k, v], with_lse=False, tol=F32)


def test_fully_masked_rows_have_zero_gradients():
    """Rows 40.. see no key (rows 40..63 share a partial block with visible
    rows, 64.. have no block): zero gradients, no NaN, also through lse."""
    B, H, S, D = 1, 2, 96, 16
    q, k, v = (leaf(B, H, S, D) for _ in range(3))

    def early_rows(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx < 40)

    bm = fm.create_block_mask(early_rows, None, None, S, S, BLOCK_SIZE=32)
    out, lse = fm.flex_attention(q, k, v, block_mask=bm, return_lse=True)
    assert torch.isneginf(lse[:, :, 40:]).all()
    # The loss reads every output and the finite lse values.
    (out.sum() + torch.where(torch.isfinite(lse), lse, 0.0).sum()).backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[:, :, 40:], torch.zeros_like(q.grad[:, :, 40:]))
    ref_out, ref_lse = reference_attention(*(t.detach().double().requires_grad_()
                                             for t in (q, k, v)),
                                           mask_fn=lambda b, h, i, j: (i >= j) & (i < 40))
    torch.testing.assert_close(out.double(), ref_out, **F32)


def test_table_read_through_a_captured_index_is_checked_forward_and_backward():
    """A learnable [H, T] table read at bucket[kv_idx], bucket a captured
    int table: the compiler cannot bound that index, so both kernels check it
    and write the index report (the mods' last capture, in the backward's
    captures too, never given a gradient). The table trains like any capture
    (negative buckets wrap, as in torch). A bucket out of range raises
    IndexError at the forward call; one the backward finds out of range (the
    table changed behind autograd's back) raises there: no gradient computed
    from a clamped read is returned."""
    from flexattn_mlir.compiler import backward

    B, H, S, D, T = 1, 2, 48, 16, 8
    q, k, v = (leaf(B, H, S, D) for _ in range(3))
    bucket = torch.randint(-T, T, (S,), dtype=torch.int64)
    table = (torch.randn(H, T) * 0.5).requires_grad_()

    def bucketed(score, b, h, q_idx, kv_idx):
        return score + table[h, bucket[kv_idx]]

    bm = fm.create_block_mask(causal, None, None, S, S, BLOCK_SIZE=16)

    def ref(q, k, v, t):
        return reference_attention(q, k, v, score_fn=lambda x, b, h, i, j: x + t[h, bucket[j]],
                                   mask_fn=lambda b, h, i, j: i >= j)

    run = lambda: fm.flex_attention(q, k, v, score_mod=bucketed,  # noqa: E731
                                    block_mask=bm, return_lse=True)
    check_grads(run, ref, [q, k, v, table], with_lse=True, tol=F32)
    # The report is the last capture of both kernels; only the table takes a
    # gradient.
    score, _, captures = combine(fm.capture_score_mod(bucketed), None)
    spec = fm.attention_spec(q, k, v, score_mod=score.ir, captures=captures,
                             options=fm.CompileOptions(dynamic=False))  # as the backward's
    assert spec.index_report is not None
    names = [n for n, _ in backward.backward_spec(spec, [], [0], False).arguments()]
    assert names[-3:] == ["capture1", "index_report", "capture_grad0"], names

    bucket[5] = T  # out of range: the forward raises, nothing to differentiate
    with pytest.raises(IndexError, match=r"table .* along dim 1 \(size 8\) was read out of "
                                         r"bounds: index 8 \(valid indices are -8..7\)"):
        run()
    bucket[5] = 0
    out, _ = run()
    bucket.data[5] = -T - 1  # not seen by autograd's version check
    with pytest.raises(IndexError, match=r"table .* was read out of bounds: index -9"):
        out.sum().backward()
    bucket.data[5] = 0
    # A read proved out of bounds for these shapes: IndexError before any kernel.
    short = torch.zeros(S - 1, requires_grad=True)
    with pytest.raises(IndexError, match=r"short .* is read out of bounds"):
        fm.flex_attention(q, k, v, score_mod=lambda s, b, h, i, j: s + short[j])


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


class BiasedAttention(torch.nn.Module):
    """One attention layer with a learnable relative-bias table; the mod is
    made once, closing over the Parameter (so torch.compile can trace the
    call: see flexattn_mlir.execution.autograd)."""

    def __init__(self, S=64, D=16, H=2):
        super().__init__()
        self.S, self.H, self.D = S, H, D
        self.qkv = torch.nn.Linear(D, 3 * H * D)
        self.table = torch.nn.Parameter(torch.zeros(H, 2 * S - 1))
        table = self.table

        def rel_bias(score, b, h, q_idx, kv_idx):
            return score + table[h, q_idx - kv_idx + S - 1]

        self.score_mod = rel_bias
        self.block_mask = fm.create_block_mask(causal, None, None, S, S, BLOCK_SIZE=32)

    def forward(self, x):
        B = x.shape[0]
        q, k, v = self.qkv(x).view(B, self.S, 3, self.H, self.D).permute(2, 0, 3, 1, 4)
        out = fm.flex_attention(q, k, v, score_mod=self.score_mod, block_mask=self.block_mask)
        return out.sum(1)


def test_optimizer_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = BiasedAttention()
    x, y = torch.randn(2, 64, 16), torch.randn(2, 64, 16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert model.table.grad is not None and model.table.grad.abs().sum() > 0
    assert losses[-1] < 0.9 * losses[0], losses


def test_torch_compile_fullgraph_matches_eager():
    """torch.compile(fullgraph=True) over a model calling flex_attention: one
    graph, no break (torch._dynamo.explain), the same loss and gradients as
    eager (the learnable table's included)."""
    torch.manual_seed(0)
    model = BiasedAttention()
    with torch.no_grad():
        model.table.normal_()
    x = torch.randn(1, 64, 16)
    eager_loss = (model(x) ** 2).mean()
    eager_loss.backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained
    ops = [str(getattr(n, "target", "")) for g in explained.graphs for n in g.graph.nodes]
    assert "flexattn.flex_attention.default" in ops or any("flexattn" in o for o in ops), ops

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    loss = (compiled(x) ** 2).mean()
    loss.backward()
    torch.testing.assert_close(loss, eager_loss, atol=1e-6, rtol=1e-6)
    for p, g in zip(model.parameters(), eager_grads):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------
# Nothing extra without requires_grad
# ---------------------------------------------------------------------------


def test_no_grad_compiles_and_saves_nothing_extra():
    B, H, S, D = 1, 2, 48, 16
    q, k, v = (torch.randn(B, H, S, D) for _ in range(3))
    bias = torch.randn(H)  # a capture that does not require grad

    def head_bias(score, b, h, q_idx, kv_idx):  # a mod no other test uses
        return score - bias[h]

    saved = []
    before = fm.attention_compile_count()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fm.flex_attention(q, k, v, score_mod=head_bias)
        with torch.no_grad():
            fm.flex_attention(q.requires_grad_(), k, v, score_mod=head_bias)
    assert fm.attention_compile_count() == before + 1  # the forward kernel only
    assert saved == [] and out.grad_fn is None
    # With a gradient: a forward that also writes lse, the backward kernel,
    # and the op's inputs saved.
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fm.flex_attention(q, k, v, score_mod=head_bias)
    assert fm.attention_compile_count() == before + 3
    assert out.grad_fn is not None and len(saved) > 0


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_non_differentiable_mod_fails_only_with_gradients():
    B, H, S, D = 1, 2, 32, 16
    q, k, v = (torch.randn(B, H, S, D) for _ in range(3))

    def rounded(score, b, h, q_idx, kv_idx):
        return torch.acos(torch.clamp(score / 10.0, -1.0, 1.0))

    out = fm.flex_attention(q, k, v, score_mod=rounded)  # forward only: fine
    assert torch.isfinite(out).all()
    with pytest.raises(fm.NotDifferentiableError,
                       match=r"cannot compute gradients through score_mod 'rounded': "
                             r"'math.acos' has no derivative rule"):
        fm.flex_attention(q.requires_grad_(), k, v, score_mod=rounded)


def test_double_backward_is_refused():
    B, H, S, D = 2, 2, 64, 16
    q, k, v = (leaf(B, H, S, D) for _ in range(3))
    out = fm.flex_attention(q, k, v)
    (gq,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match=r"flex_attention: double backward"):
        gq.sum().backward()


def test_integer_and_mask_only_captures():
    """torch refuses requires_grad on integer tensors (so an integer capture
    never asks for a gradient); a float capture that only the mask_mod reads
    (no derivative there) gets a zero gradient."""
    with pytest.raises(RuntimeError, match="floating point"):
        torch.zeros(4, dtype=torch.int32).requires_grad_()
    B, H, S, D = 1, 2, 32, 16
    q, k, v = (leaf(B, H, S, D) for _ in range(3))
    limit = torch.tensor([20.0, 28.0], requires_grad=True)

    def row_limit(b, h, q_idx, kv_idx):
        return q_idx.float() < limit[h] + kv_idx

    bm = fm.create_block_mask(row_limit, None, H, S, S, BLOCK_SIZE=32)  # reads h
    fm.flex_attention(q, k, v, block_mask=bm).sum().backward()
    assert torch.equal(limit.grad, torch.zeros(2))
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
