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
