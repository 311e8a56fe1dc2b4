"""Speed-ups (nlp_transfer/models/fast.py): the same computation as PyTorch's and transformers'
own, applied only inside ``with speedups(...)`` and undone completely when the block ends.

The models here are built in the tests (tiny random BERTs and a minimal classifier wrapper), so
this file needs neither the package root nor the classifier module.
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch import nn

import nlp_transfer.models.fast as fast

ATTENTION, FastDropout, attention, dropout_mask, fast_dropout, speedups = (
    fast.ATTENTION,
    fast.FastDropout,
    fast.attention,
    fast.dropout_mask,
    fast.fast_dropout,
    fast.speedups,
)


# ---- helpers ------------------------------------------------------------------------------
def _tiny_bert(impl="sdpa", dropout=0.0, layers=3, hidden_dropout=None):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_dropout_prob=dropout if hidden_dropout is None else hidden_dropout,
        attention_probs_dropout_prob=dropout,
    )
    cfg._attn_implementation = impl
    return BertModel(cfg)


class _Classifier(nn.Module):
    """What ``speedups`` expects of a classifier: ``.backbone``, ``.pooling``, a head on the pooled vector."""

    def __init__(self, backbone: nn.Module, pooling: str = "cls"):
        super().__init__()
        self.backbone, self.pooling = backbone, pooling
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(backbone.config.hidden_size, 2))

    def forward(self, input_ids, attention_mask):
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden, m = out.last_hidden_state, attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        features = {
            "cls": lambda: hidden[:, 0],
            "pooler": lambda: out.pooler_output,
            "mean": lambda: (hidden * m).sum(1) / m.sum(1),
            "max": lambda: hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values,
        }[self.pooling]()
        return self.head(features)


def _padded_batch():
    ids = torch.randint(5, 100, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[2, 6:] = 0
    return ids, mask


def _registries():
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    return AttentionInterface._global_mapping, ALL_MASK_ATTENTION_FUNCTIONS._global_mapping


def _state(model: nn.Module) -> dict:
    """Everything ``speedups`` may touch: module objects, attention choices, instance forwards, registries."""
    return {
        "modules": {name: id(m) for name, m in model.named_modules()},
        "attn": {name: m.config._attn_implementation for name, m in model.named_modules() if hasattr(m, "config")},
        "instance_forwards": [name for name, m in model.named_modules() if "forward" in vars(m)],
        "registered": [ATTENTION in r for r in _registries()],
        "dropout_types": sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.Dropout)}),
    }


def _enable_gradient_checkpointing(backbone: nn.Module) -> None:
    """As the classifier module does it: non-reentrant checkpointing."""
    enable = getattr(backbone, "activation_checkpointing_enable", None)
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@pytest.fixture(autouse=True)
def _registries_clean():
    """No test may leave ``nlp_transfer`` registered in transformers."""
    assert not any(ATTENTION in r for r in _registries())
    yield
    assert not any(ATTENTION in r for r in _registries())


# ---- dropout masks ------------------------------------------------------------------------
def test_dropout_mask_keeps_each_element_with_probability_one_minus_p():
    torch.manual_seed(0)
    m = dropout_mask((400, 1000), 0.1)
    assert m.dtype == torch.bool and m.shape == (400, 1000)
    assert abs(m.float().mean().item() - 0.9) < 0.003  # 400k draws: the standard error is 0.0005


def test_dropout_masks_follow_torch_seed():
    torch.manual_seed(1)
    a = dropout_mask((64, 64), 0.3)
    torch.manual_seed(1)
    b = dropout_mask((64, 64), 0.3)
    c = dropout_mask((64, 64), 0.3)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_fast_dropout_is_identity_in_eval_and_scales_in_train():
    x = torch.randn(8, 16, requires_grad=True)
    assert fast_dropout(x, 0.5, training=False) is x
    d = FastDropout(0.5).eval()
    assert torch.equal(d(x), x)
    torch.manual_seed(0)
    y = FastDropout(0.5).train()(x)
    zero = y == 0
    assert 0 < zero.sum() < x.numel()
    assert torch.allclose(y[~zero], 2 * x[~zero])
    y.sum().backward()  # gradient flows through kept elements only, scaled like the forward
    assert torch.allclose(x.grad, torch.where(zero, 0.0, 2.0))


# ---- attention ----------------------------------------------------------------------------
def _attention_inputs(mask_dtype):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, requires_grad=True) for _ in range(3))
    keep = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    keep[1, :, :, 4:] = False  # padding in the second example
    mask = keep if mask_dtype is torch.bool else torch.zeros(2, 1, 6, 6).masked_fill(~keep, torch.finfo(torch.float32).min)
    return q, k, v, mask


def _module(causal=False):
    module = nn.Module()
    module.is_causal = causal
    module.training = True
    return module


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_attention_without_dropout_equals_sdpa(mask_dtype):
    q, k, v, mask = _attention_inputs(mask_dtype)
    # dropout > 0 takes our path; with p tiny no element is dropped in practice, so compare to SDPA with p=0
    torch.manual_seed(0)
    ours, _ = attention(_module(), q, k, v, mask, dropout=1e-9)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_attention_eager_path_accepts_transformers_kwargs_and_rejects_others(monkeypatch):
    q, k, v, mask = _attention_inputs(torch.bool)
    calls = []
    real = fast.fast_dropout
    monkeypatch.setattr(fast, "fast_dropout", lambda x, p, training=True: calls.append(x.shape) or real(x, p, training))
    ours, _ = attention(
        _module(), q, k, v, mask, dropout=1e-9, position_ids=None, is_causal=None, output_attentions=False, encoder_hidden_states=None
    )  # BertSelfAttention passes that None on
    assert calls  # our eager path ran: an explicit is_causal=None defers to the (bidirectional) module
    with pytest.raises(TypeError, match="sliding_window"):
        attention(_module(), q, k, v, mask, dropout=1e-9, sliding_window=2)
    # Where SDPA computes it (no dropout), SDPA gets every argument and decides for itself.
    calls.clear()
    out, _ = attention(_module(), q, k, v, mask, dropout=0.0, position_bias=None)
    assert not calls
    torch.testing.assert_close(out, ours, rtol=1e-5, atol=1e-6)


def test_attention_leaves_causal_modules_to_sdpa(monkeypatch):
    q, k, v, _ = _attention_inputs(torch.bool)
    calls = []
    monkeypatch.setattr(fast, "fast_dropout", lambda *a, **kw: calls.append(1))
    attention(_module(causal=True), q, k, v, None, dropout=1e-9, is_causal=None)
    assert not calls


# ---- speedups: apply and undo -------------------------------------------------------------
def test_speedups_swaps_dropouts_and_attention_and_exit_restores():
    model = _tiny_bert(layers=2, dropout=0.1).eval()
    n = sum(type(m) is nn.Dropout for m in model.modules())
    ids, mask = _padded_batch()
    with speedups(model, allocator=False) as done:
        assert done.dropouts == n > 0 and done.attention is True and done.notes == []
        assert model.config._attn_implementation == ATTENTION
        assert not any(type(m) is nn.Dropout for m in model.modules())
        assert all(type(m) is FastDropout and not m.training for m in model.modules() if isinstance(m, nn.Dropout))
        fast_out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).last_hidden_state, fast_out)


@pytest.mark.parametrize("fail", [False, True])
def test_exit_leaves_the_model_exactly_as_before(fail):
    model = _Classifier(_tiny_bert(layers=2, dropout=0.1), "cls")
    dropouts = {name: m for name, m in model.named_modules() if type(m) is nn.Dropout}
    before = _state(model)
    with pytest.raises(RuntimeError, match="inside") if fail else _nothing():
        with speedups(model, first_token=True, allocator=False) as done:
            assert done.dropouts == len(dropouts) and done.attention and done.first_token, done.describe()
            during = _state(model)
            assert during != before and during["registered"] == [True, True]
            assert during["instance_forwards"] == ["backbone.encoder.layer.1"]
            model(*_padded_batch()).sum().backward()
            if fail:
                raise RuntimeError("inside the block")
    assert _state(model) == before
    assert all(dict(model.named_modules())[name] is m for name, m in dropouts.items())  # the same objects


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_attention_only_replaces_sdpa():
    model = _tiny_bert("eager", layers=2)
    with speedups(model, dropout=False, allocator=False) as done:
        assert not done.attention and done.notes == ["fast attention: nothing uses sdpa attention (found eager)"]
        assert model.config._attn_implementation == "eager"
    with speedups(nn.Linear(2, 2), dropout=False, allocator=False) as done:
        assert done.notes == ["fast attention: nothing uses sdpa attention (found no transformers model)"]


def test_dropouts_come_back_in_the_mode_the_block_left_the_model_in():
    model = _Classifier(_tiny_bert(layers=2, dropout=0.1)).train()
    with speedups(model, attention=False, allocator=False):
        model.eval()
    assert not any(m.training for m in model.modules())


def test_nested_blocks_keep_the_registration_until_the_last_one_ends():
    a, b = _Classifier(_tiny_bert(layers=2)), _Classifier(_tiny_bert(layers=2))
    ids, mask = _padded_batch()
    with speedups(a, allocator=False) as outer:
        with speedups(b, allocator=False):
            pass
        assert outer.attention and all(ATTENTION in r for r in _registries())
        a(ids, mask)  # still runs: its config names the registered attention
        with speedups(a, allocator=False) as again:  # already switched: nothing more to do, nothing undone early
            assert again.dropouts == 0 and not again.attention and len(again.notes) == 2, again.notes
        assert a.backbone.config._attn_implementation == ATTENTION


def test_a_previous_registry_entry_comes_back():
    from transformers import AttentionInterface

    sentinel = object()
    AttentionInterface._global_mapping[ATTENTION] = sentinel
    try:
        with speedups(_tiny_bert(layers=2), dropout=False, allocator=False) as done:
            assert done.attention and AttentionInterface._global_mapping[ATTENTION] is attention
        assert AttentionInterface._global_mapping[ATTENTION] is sentinel
    finally:
        del AttentionInterface._global_mapping[ATTENTION]


def test_allocator_is_held_and_set_back_to_glibc_defaults(monkeypatch):
    calls = []
    monkeypatch.setattr(fast, "_mallopt", lambda mmap_max, trim: calls.append((mmap_max, trim)) or True)
    with speedups(nn.Linear(2, 2), dropout=False, attention=False) as done:
        with speedups(nn.Linear(2, 2), dropout=False, attention=False) as inner:
            assert inner.allocator
        assert calls == [(0, 1 << 30)]  # the inner block neither set it again nor undid it
    assert done.allocator and calls == [(0, 1 << 30), (65536, 128 * 1024)]
    monkeypatch.setattr(fast, "_mallopt", lambda *a: False)
    with speedups(nn.Linear(2, 2), dropout=False, attention=False) as done:
        assert not done.allocator and done.notes == ["allocator: not glibc (or mallopt refused); left as it is"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_accepts_both_allocator_settings():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert fast.keep_freed_memory() and fast.default_allocator()


@pytest.mark.parametrize("version", ["6.0.0", "4.57.1", "5.x"])
def test_an_untested_transformers_version_skips_with_a_note_and_changes_nothing(monkeypatch, version):
    import transformers

    model = _Classifier(_tiny_bert(layers=2, dropout=0.1), "pooler")
    before = _state(model)
    monkeypatch.setattr(transformers, "__version__", version)
    with speedups(model, dropout=False, first_token=True, allocator=False) as done:
        assert _state(model) == before
    assert not done.attention and not done.first_token and done.dropouts == 0
    assert done.notes == [
        f"fast attention: transformers {version} is outside the tested range >=5.0,<6.0",
        f"first-token: transformers {version} is outside the tested range >=5.0,<6.0",
    ]
    assert version in done.describe() and "\n" not in done.describe()
    with pytest.raises(ValueError, match="outside the tested range"):
        fast.apply_first_token(model.backbone.encoder.layer[-1])
    with speedups(model, attention=False, allocator=False) as done:  # dropout does not depend on transformers
        assert done.dropouts > 0


def test_training_step_matches_the_stock_modules(monkeypatch):
    """With (practically) no dropout, a training forward/backward gives the stock gradients."""
    calls = []
    real = fast.fast_dropout
    monkeypatch.setattr(fast, "fast_dropout", lambda x, p, training=True: calls.append(x.shape) or real(x, p, training))

    ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 9, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    grads = []
    for fast_kernels in (False, True):
        model = _tiny_bert(layers=2, dropout=0.1, hidden_dropout=0.0)
        with speedups(model, dropout=fast_kernels, attention=fast_kernels, allocator=False) as done:
            assert done.attention is fast_kernels
            model.train()
            for m in model.modules():  # attention dropout: tiny but > 0, so the fast attention path runs
                if isinstance(m, nn.Dropout) and m.p > 0:
                    m.p = 1e-9
            torch.manual_seed(0)
            out = model(input_ids=ids, attention_mask=mask).last_hidden_state
            (out * mask[..., None]).sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert any(len(shape) == 4 for shape in calls)  # the fast attention path ran (dropout on [B, H, L, L])
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-4, atol=1e-5, msg=k)


# ---- first-token-only last layer ----------------------------------------------------------
@pytest.mark.parametrize("impl", ["sdpa", "eager", ATTENTION])
def test_first_token_gives_the_same_pooled_output_and_gradients(impl):
    unregister = fast.register_attention()  # ATTENTION must be known before a model is built with it
    try:
        full = _tiny_bert(impl)
        fast_model = copy.deepcopy(full)
        undo = fast.apply_first_token(fast_model.encoder.layer[-1])
        ids, mask = _padded_batch()
        a, b = full(input_ids=ids, attention_mask=mask), fast_model(input_ids=ids, attention_mask=mask)
        assert a.last_hidden_state.shape == (3, 7, 32) and b.last_hidden_state.shape == (3, 1, 32)
        torch.testing.assert_close(b.last_hidden_state[:, 0], a.last_hidden_state[:, 0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b.pooler_output, a.pooler_output, rtol=1e-5, atol=1e-6)
        (a.pooler_output**2).sum().backward()
        (b.pooler_output**2).sum().backward()
        for (name, p), q in zip(full.named_parameters(), fast_model.parameters()):
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
        undo()
        assert "forward" not in vars(fast_model.encoder.layer[-1])
    finally:
        unregister()


def test_first_token_under_gradient_checkpointing_and_undo():
    full = _tiny_bert()
    fast_model = copy.deepcopy(full)
    undo = fast.apply_first_token(fast_model.encoder.layer[-1])
    _enable_gradient_checkpointing(fast_model)
    fast_model.train()
    full.train()
    ids, mask = _padded_batch()
    fast_model(input_ids=ids, attention_mask=mask).pooler_output.sum().backward()
    full(input_ids=ids, attention_mask=mask).pooler_output.sum().backward()
    last = fast_model.encoder.layer[-1].attention.self.query.weight
    torch.testing.assert_close(last.grad, full.encoder.layer[-1].attention.self.query.weight.grad, rtol=1e-4, atol=1e-6)
    undo()
    assert fast_model(input_ids=ids, attention_mask=mask).last_hidden_state.shape == (3, 7, 32)


def test_speedups_use_first_token_for_cls_and_pooler_pooling_only():
    ids, mask = _padded_batch()
    for pooling, expected in [("pooler", True), ("cls", True), ("mean", False), ("max", False)]:
        model = _Classifier(_tiny_bert(), pooling).eval()
        stock = model(ids, mask)
        with speedups(model, dropout=False, attention=False, first_token=True, allocator=False) as done:
            assert done.first_token is expected, pooling
            assert done.notes == ([] if expected else [f"first-token: pooling '{pooling}' reads more than position 0 (only cls, pooler)"])
            tokens = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state.shape[1]
            assert tokens == (1 if expected else 7)
            torch.testing.assert_close(model(ids, mask), stock, rtol=1e-5, atol=1e-6)
        assert model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state.shape[1] == 7


def test_first_token_is_off_by_default_and_needs_a_pooling():
    with speedups(_Classifier(_tiny_bert()), allocator=False) as done:
        assert not done.first_token and done.notes == []
    with speedups(_tiny_bert(), dropout=False, attention=False, first_token=True, allocator=False) as done:
        assert not done.first_token and done.notes == ["first-token: the model has no pooling attribute to say position 0 is all it reads"]


def test_first_token_layer_raises_for_arguments_it_cannot_honour():
    layer = _tiny_bert(layers=1).encoder.layer[0]
    fast.apply_first_token(layer)
    h = torch.randn(2, 5, 32)
    assert layer(h, None, position_ids=None).shape == (2, 1, 32)  # what BertEncoder passes on
    for name in ("encoder_hidden_states", "encoder_attention_mask", "cache"):
        with pytest.raises(TypeError, match=f"first-token layer: {name} is not supported"):
            layer(h, None, **{name: torch.zeros(2, 5, 32)})
    with pytest.raises(TypeError, match="first-token layer: unexpected keyword argument.*head_mask"):
        layer(h, None, head_mask=None)
    with pytest.raises(TypeError, match="first-token layer: output_attentions"):
        layer(h, None, output_attentions=True)
    with pytest.raises(TypeError):  # no positional argument beyond BertLayer.forward's own
        layer(h, None, None, None, None, "extra")


def test_first_token_leaves_decoder_layers_alone():
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    model = _Classifier(LlamaModel(cfg), "cls")
    with speedups(model, dropout=False, attention=False, first_token=True, allocator=False) as done:
        assert not done.first_token and "is not built like BERT's" in done.notes[0], done.notes
        assert "forward" not in vars(model.backbone.layers[-1])


def test_first_token_checks_the_layer_forward_signature():
    from transformers.models.bert.modeling_bert import BertLayer

    class OtherLayer(BertLayer):
        def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
            return super().forward(hidden_states, attention_mask, *args, **kwargs)

    model = _Classifier(_tiny_bert(layers=2), "cls")
    model.backbone.encoder.layer = nn.ModuleList(OtherLayer(model.backbone.config) for _ in range(2))
    with speedups(model, dropout=False, attention=False, first_token=True, allocator=False) as done:
        assert not done.first_token
    assert done.notes == [
        "first-token: OtherLayer.forward(self, hidden_states, attention_mask=None, *args, **kwargs) "
        "is not the BertLayer forward it was written for"
    ]
    assert fast.first_token_problem(_tiny_bert(layers=1).encoder.layer[0]) is None


def test_describe_is_one_line():
    with speedups(_Classifier(_tiny_bert(layers=2, dropout=0.1), "mean"), first_token=True, allocator=False) as done:
        line = done.describe()
    assert line == (
        f"speed-ups: fast dropout in {done.dropouts} module(s), nlp_transfer attention "
        "(not applied: first-token: pooling 'mean' reads more than position 0 (only cls, pooler))"
    )
