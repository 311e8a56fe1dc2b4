"""Fast CPU kernels (nlp_transfer/fast.py): same computation as PyTorch's and transformers' own."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nlp_transfer.fast import ATTENTION, FastDropout, attention, dropout_mask, fast_dropout, slow_down, speed_up


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


def _attention_inputs(mask_dtype):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, requires_grad=True) for _ in range(3))
    keep = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    keep[1, :, :, 4:] = False  # padding in the second example
    mask = keep if mask_dtype is torch.bool else torch.zeros(2, 1, 6, 6).masked_fill(~keep, torch.finfo(torch.float32).min)
    return q, k, v, mask


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_attention_without_dropout_equals_sdpa(mask_dtype):
    q, k, v, mask = _attention_inputs(mask_dtype)
    module = nn.Module()
    module.is_causal = False
    module.training = True
    # dropout > 0 takes our path; with p tiny no element is dropped in practice, so compare to SDPA with p=0
    torch.manual_seed(0)
    ours, _ = attention(module, q, k, v, mask, dropout=1e-9)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_speed_up_swaps_dropouts_and_attention_and_slow_down_restores(tiny_bert_dir):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_bert_dir, attn_implementation="sdpa")
    n = sum(type(m) is nn.Dropout for m in model.modules())
    changed = speed_up(model)
    assert changed["dropout"] == n > 0 and changed["attention"] is True
    assert model.config._attn_implementation == ATTENTION
    assert not any(type(m) is nn.Dropout for m in model.modules())
    ids = torch.tensor([[2, 5, 6, 7, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    model.eval()
    fast = model(input_ids=ids, attention_mask=mask).last_hidden_state
    slow_down(model)
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).last_hidden_state, fast)


def test_training_step_matches_the_stock_modules(tiny_bert_dir, monkeypatch):
    """With (practically) no dropout, a training forward/backward gives the stock gradients."""
    from transformers import AutoModel

    import nlp_transfer.fast as fast_mod

    calls = []
    real = fast_mod.fast_dropout
    monkeypatch.setattr(fast_mod, "fast_dropout", lambda x, p, training=True: calls.append(x.shape) or real(x, p, training))

    ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 9, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    grads = []
    for fast in (False, True):
        model = AutoModel.from_pretrained(tiny_bert_dir, attn_implementation="sdpa", hidden_dropout_prob=0.0)
        if fast:
            speed_up(model)
        model.train()
        for m in model.modules():  # attention dropout: tiny but > 0, so the fast attention path runs
            if hasattr(m, "dropout_prob"):
                m.dropout_prob = 1e-9
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


# ---- first-token-only last layer (nlp_transfer.modeling.first_token_only) ----------------
def _tiny_bert(impl="sdpa", dropout=0.0, layers=3):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    cfg._attn_implementation = impl
    return BertModel(cfg)


def _padded_batch():
    ids = torch.randint(5, 100, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[2, 6:] = 0
    return ids, mask


@pytest.mark.parametrize("impl", ["sdpa", "eager", ATTENTION])
def test_first_token_only_gives_the_same_pooled_output_and_gradients(impl):
    import copy

    from nlp_transfer.fast import register
    from nlp_transfer.modeling import first_token_only

    register()
    full = _tiny_bert(impl)
    fast = copy.deepcopy(full)
    assert first_token_only(fast)
    ids, mask = _padded_batch()
    a, b = full(input_ids=ids, attention_mask=mask), fast(input_ids=ids, attention_mask=mask)
    assert a.last_hidden_state.shape == (3, 7, 32) and b.last_hidden_state.shape == (3, 1, 32)
    torch.testing.assert_close(b.last_hidden_state[:, 0], a.last_hidden_state[:, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.pooler_output, a.pooler_output, rtol=1e-5, atol=1e-6)
    (a.pooler_output ** 2).sum().backward()
    (b.pooler_output ** 2).sum().backward()
    for (name, p), q in zip(full.named_parameters(), fast.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_first_token_only_under_gradient_checkpointing_and_undo():
    import copy

    from nlp_transfer.modeling import all_tokens, enable_gradient_checkpointing, first_token_only

    full = _tiny_bert()
    fast = copy.deepcopy(full)
    first_token_only(fast)
    enable_gradient_checkpointing(fast)
    fast.train()
    full.train()
    ids, mask = _padded_batch()
    fast(input_ids=ids, attention_mask=mask).pooler_output.sum().backward()
    full(input_ids=ids, attention_mask=mask).pooler_output.sum().backward()
    last = fast.encoder.layer[-1].attention.self.query.weight
    torch.testing.assert_close(last.grad, full.encoder.layer[-1].attention.self.query.weight.grad, rtol=1e-4, atol=1e-6)
    all_tokens(fast)
    assert fast(input_ids=ids, attention_mask=mask).last_hidden_state.shape == (3, 7, 32)


def test_text_classifier_uses_first_token_only_for_cls_and_pooler_pooling_only():
    from nlp_transfer.modeling import TextClassifier, build_head

    for pooling, expected in [("pooler", True), ("cls", True), ("mean", False), ("max", False)]:
        model = TextClassifier(_tiny_bert(), build_head(32, 2), pooling, ["a", "b"])
        assert model.first_token_only is expected, pooling
        ids, mask = _padded_batch()
        tokens = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state.shape[1]
        assert tokens == (1 if expected else 7)


def test_first_token_only_leaves_decoder_layers_alone():
    from transformers import LlamaConfig, LlamaModel

    from nlp_transfer.modeling import first_token_only

    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2)
    model = LlamaModel(cfg)
    assert not first_token_only(model)
    assert "forward" not in vars(model.layers[-1])
