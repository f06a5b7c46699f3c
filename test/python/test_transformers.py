"""Hugging Face transformers models through
``flexattn_mlir.integrations.transformers.register()``.

Randomly initialised models built from configs with the real models'
attention shapes (head dims, heads vs KV heads, relative bias buckets,
sliding windows, softcapping) and tiny layer counts / hidden sizes, run on
padded batches with our attention and with the model's own SDPA or eager
attention; the outputs at the real (unpadded) tokens are compared, and so
are the parameter gradients of one backward step.

Tolerances (float32 models): hidden states within atol 2e-5, rtol 2e-5
(``torch.testing.assert_close``); each parameter's gradient within 1e-5 of
its largest magnitude (gradients reach ~500 for embeddings, which sum over
every token). Our kernel and the reference both accumulate in float32 and
differ only in order (observed: ~1e-6 on hidden states of unit scale, and
at most 1e-6 of the largest magnitude on gradients).

Padded query rows are left out of the comparison: with left padding in a
causal model they attend to nothing, which our kernel (like torch flex)
answers with zeros and SDPA answers with an average over the padding; the
real tokens never read them (their keys are masked out).
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from flexattn_mlir.integrations import transformers as flexattn_hf  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

OUT_TOL = dict(atol=2e-5, rtol=2e-5)
GRAD_REL = 1e-5


@pytest.fixture(scope="module")
def name():
    return flexattn_hf.register()


def esm2(head_dim):
    # ESM-2 8M: 320 = 20 heads x 16; ESM-2 150M: 640 = 20 heads x 32.
    return transformers.EsmModel(transformers.EsmConfig(
        vocab_size=33, hidden_size=4 * head_dim, num_attention_heads=4, num_hidden_layers=2,
        intermediate_size=64, position_embedding_type="rotary", pad_token_id=1,
        mask_token_id=32, token_dropout=True, attention_probs_dropout_prob=0.0,
        hidden_dropout_prob=0.0, max_position_embeddings=64), add_pooling_layer=False)


def esmc():
    # ESM C 300M: 960 = 15 heads x 64, bidirectional, rotary, no GQA.
    return transformers.EsmcModel(transformers.EsmcConfig(
        vocab_size=64, hidden_size=192, num_attention_heads=3, num_hidden_layers=2,
        intermediate_size=64, pad_token_id=1))


def ankh():
    # ANKH (T5 encoder): d_kv 64, 64 relative buckets up to distance 128.
    return transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=144, d_model=64, d_kv=64, num_heads=4, d_ff=64, num_layers=2,
        relative_attention_num_buckets=64, relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0))


def llama():
    # Llama 3 8B: head_dim 128, 32 query heads on 8 KV heads (4:1).
    return transformers.LlamaModel(transformers.LlamaConfig(
        vocab_size=128, hidden_size=128, num_attention_heads=4, num_key_value_heads=1,
        head_dim=128, intermediate_size=64, num_hidden_layers=2, pad_token_id=0))


def gemma2():
    # Gemma 2 2B: head_dim 256, 8 query heads on 4 KV heads, logit softcap
    # 50, sliding window (4096; 8 here) on every other layer.
    return transformers.Gemma2Model(transformers.Gemma2Config(
        vocab_size=128, hidden_size=64, num_attention_heads=2, num_key_value_heads=1,
        head_dim=256, query_pre_attn_scalar=256, intermediate_size=64, num_hidden_layers=2,
        sliding_window=8, attn_logit_softcapping=50.0, pad_token_id=0,
        layer_types=["sliding_attention", "full_attention"]))


# (model factory, reference implementation, padding side, masks per forward)
MODELS = {
    "esm2-d16": (lambda: esm2(16), "sdpa", "right", 1),
    "esm2-d32": (lambda: esm2(32), "sdpa", "right", 1),
    "esmc-d64": (esmc, "sdpa", "right", 1),
    "ankh-t5-d64": (ankh, "eager", "right", 1),
    "llama-gqa-d128": (llama, "sdpa", "left", 1),
    "llama-gqa-d128-right-padded": (llama, "sdpa", "right", 1),
    "gemma2-d256": (gemma2, "eager", "right", 2),
}


def batch(vocab, side, seed=0):
    """Token ids [2, 20] and their padding mask: row 0 full, row 1 padded
    by 7 on ``side``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (2, 20), generator=g)
    mask = torch.ones(2, 20, dtype=torch.long)
    pad = slice(13, None) if side == "right" else slice(None, 7)
    mask[1, pad] = 0
    ids[1, pad] = 1
    return ids, mask


def hidden(model, impl, ids, mask):
    model.set_attn_implementation(impl)
    return model(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.fixture(scope="module")
def built():
    """Each model once (built under a fixed seed), shared by the tests."""
    cache = {}

    def get(key):
        factory = MODELS[key][0]
        if factory not in cache:
            torch.manual_seed(1)
            cache[factory] = factory().float()
        return cache[factory]

    return get


@pytest.mark.parametrize("key", list(MODELS))
def test_forward_matches_reference(name, built, key, monkeypatch):
    """Padded batch, eval mode: ours matches the model's SDPA/eager; the
    block mask is built once per forward (per mask kind) and every layer
    receives that same mask."""
    _, ref_impl, side, masks_per_forward = MODELS[key]
    model = built(key).eval()
    ids, mask = batch(model.config.vocab_size, side)
    with torch.no_grad():
        ref = hidden(model, ref_impl, ids, mask)
        seen = []
        real = flexattn_hf.flex_attention

        def spy(*args, block_mask=None, **kwargs):
            seen.append(block_mask)
            return real(*args, block_mask=block_mask, **kwargs)

        monkeypatch.setattr(flexattn_hf, "flex_attention", spy)
        before = flexattn_hf.mask_count
        out = hidden(model, name, ids, mask)
    keep = mask.bool()
    torch.testing.assert_close(out[keep], ref[keep], **OUT_TOL)
    assert flexattn_hf.mask_count - before == masks_per_forward
    layers = model.config.num_hidden_layers
    assert len(seen) == layers and all(m is not None for m in seen)
    assert len({id(m) for m in seen}) == masks_per_forward


@pytest.mark.parametrize("key", ["esm2-d16", "ankh-t5-d64", "llama-gqa-d128"])
def test_backward_matches_reference(name, built, key):
    """One training step's parameter gradients (dropout 0), ours vs the
    reference, through the CPU backward; T5's learnt relative bias gets
    its gradient through the captured position_bias."""
    _, ref_impl, side, _ = MODELS[key]
    model = built(key).train()
    ids, mask = batch(model.config.vocab_size, side, seed=1)
    keep = mask.bool()
    cotangent = torch.randn(int(keep.sum()), model.config.hidden_size if key != "ankh-t5-d64"
                            else model.config.d_model, generator=torch.Generator().manual_seed(2))
    grads = {}
    for impl in (ref_impl, name):
        model.zero_grad(set_to_none=True)
        out = hidden(model, impl, ids, mask)
        (out[keep] * cotangent).sum().backward()
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters()
                       if p.grad is not None}
    assert grads[name].keys() == grads[ref_impl].keys()
    if key == "ankh-t5-d64":
        assert any("relative_attention_bias" in n for n in grads[name])
    for n, ref in grads[ref_impl].items():
        err, scale = (grads[name][n] - ref).abs().max().item(), ref.abs().max().item()
        assert err <= GRAD_REL * scale, f"{n}: max |ours - ref| {err:.2e}, max |ref| {scale:.2e}"


def test_dropout_in_training_is_an_error(name):
    torch.manual_seed(1)
    model = transformers.EsmModel(transformers.EsmConfig(
        vocab_size=33, hidden_size=64, num_attention_heads=4, num_hidden_layers=1,
        intermediate_size=64, position_embedding_type="rotary", pad_token_id=1,
        attention_probs_dropout_prob=0.1), add_pooling_layer=False)
    model.set_attn_implementation(name)
    ids, mask = batch(33, "right")
    model.eval()(input_ids=ids, attention_mask=mask)  # eval: no dropout, runs
    with pytest.raises(NotImplementedError, match="dropout=0.1"):
        model.train()(input_ids=ids, attention_mask=mask)


def test_output_attentions_is_an_error(name, built):
    model = built("esm2-d16").eval()
    model.set_attn_implementation(name)
    ids, mask = batch(33, "right")
    with pytest.raises(NotImplementedError, match="output_attentions"):
        model(input_ids=ids, attention_mask=mask, output_attentions=True)


def test_register_names(name):
    assert name == flexattn_hf.NAME
    assert flexattn_hf.register("flexattn_mlir_b") == "flexattn_mlir_b"
    with pytest.raises(ValueError, match="without '/'"):
        flexattn_hf.register("org/repo")
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    assert AttentionInterface._global_mapping[name] is flexattn_hf.attention_forward
    assert AttentionMaskInterface._global_mapping[name] is flexattn_hf.block_mask


def test_from_pretrained_with_our_attention(name, built, tmp_path):
    """``from_pretrained(..., attn_implementation=name)`` loads a model that
    runs our attention and matches the model it was saved from."""
    model = built("llama-gqa-d128").eval()
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path, attn_implementation=name).eval()
    assert loaded.config._attn_implementation == name
    ids, mask = batch(model.config.vocab_size, "left")
    before = flexattn_hf.mask_count
    with torch.no_grad():
        out = loaded(input_ids=ids, attention_mask=mask).last_hidden_state
        ref = hidden(model, "sdpa", ids, mask)
    assert flexattn_hf.mask_count == before + 1
    torch.testing.assert_close(out[mask.bool()], ref[mask.bool()], **OUT_TOL)


class _Layer(torch.nn.Module):
    def __init__(self, is_causal):
        super().__init__()
        self.is_causal = is_causal


def _reference(q, k, v, scale, mask=None, softcap=None, sinks=None):
    """float64 attention of [B, H, M, D] inputs (K/V heads repeated)."""
    q, k, v = (t.double() for t in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = q @ k.transpose(-1, -2) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if mask is not None:
        s = s.masked_fill(~mask, -float("inf")) if mask.dtype == torch.bool else s + mask.double()
    if sinks is not None:
        sink = sinks.double().view(1, -1, 1, 1).expand(*s.shape[:3], 1)
        p = torch.softmax(torch.cat([s, sink], -1), -1)[..., :-1]
    else:
        p = torch.softmax(s, -1)
    return (p @ v).transpose(1, 2)


@pytest.mark.parametrize("case", ["no-mask-causal", "no-mask-bidirectional", "bool-4d",
                                  "float-4d", "softcap", "sinks"])
def test_attention_forward_direct(name, case):
    """What the model hands the attention function besides our BlockMask:
    no mask (causal or not, from the module), a 4-D bool or float mask it
    built itself, softcap, attention sinks (``s_aux``); GQA 4:2."""
    g = torch.Generator().manual_seed(5)
    b, hq, hkv, m, d = 2, 4, 2, 24, 32
    q = torch.randn(b, hq, m, d, generator=g)
    k, v = (torch.randn(b, hkv, m, d, generator=g) for _ in range(2))
    scale = d ** -0.5
    causal = torch.ones(m, m, dtype=torch.bool).tril()
    kwargs, ref_kwargs, mask, layer = {}, {}, None, _Layer(case == "no-mask-causal")
    if case == "no-mask-causal":
        ref_kwargs["mask"] = causal.expand(b, 1, m, m)
    elif case == "bool-4d":
        mask = ref_kwargs["mask"] = torch.rand(b, 1, m, m, generator=g) > 0.3
        mask[..., 0] = True
    elif case == "float-4d":
        mask = ref_kwargs["mask"] = torch.randn(b, 1, m, m, generator=g)
    elif case == "softcap":
        kwargs["softcap"] = ref_kwargs["softcap"] = 5.0
    elif case == "sinks":
        kwargs["s_aux"] = ref_kwargs["sinks"] = torch.randn(hq, generator=g)
    out, weights = flexattn_hf.attention_forward(layer, q, k, v, mask, scaling=scale, **kwargs)
    assert weights is None and out.shape == (b, m, hq, d)
    torch.testing.assert_close(out.double(), _reference(q, k, v, scale, **ref_kwargs),
                               atol=2e-5, rtol=2e-5)
