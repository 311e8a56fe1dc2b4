"""Transfer modes at the level of one optimiser step, and the L2-SP penalty, on the tiny BERT.

For each mode: exactly the trainable parameters get a gradient and change after an AdamW
step through the real parameter groups; every other parameter stays bit-identical.
"""

from __future__ import annotations

import pytest
import torch

from nlp_transfer.data.batching import PadCollator, tokenize
from nlp_transfer.data.loading import load_data
from nlp_transfer.recipes import build_encoder_classifier
from nlp_transfer.transfer.modes import apply_transfer, param_groups
from nlp_transfer.transfer.prefix import frozen_modules
from nlp_transfer.transfer.regularisers import L2SP

LAYER = "backbone.encoder.layer."


@pytest.fixture
def setup(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, "model.pooling=auto", "train.weight_decay=0.1", "train.lr=1e-2")
    data = load_data(cfg.data)
    model, tok = build_encoder_classifier(cfg.model, data.labels)
    tokens = tokenize(data.splits, tok, cfg.model.max_length)
    batch = PadCollator(tok)([tokens["train"][i] for i in range(16)])
    return cfg, model, batch


def _expected(names: list[str], mode: str) -> set[str]:
    if mode == "full":
        return set(names)
    if mode == "feature_extraction":
        return {n for n in names if n.startswith("head.")}
    if mode == "partial":  # unfreeze_top=1: the top layer, the pooler above it, the head
        return {n for n in names if n.startswith(("head.", LAYER + "1.", "backbone.pooler."))}
    if mode == "bitfit":
        return {n for n in names if n.startswith("head.") or n.endswith(".bias")}
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["full", "feature_extraction", "partial", "bitfit", "gradual-epoch-1"])
def test_one_step_updates_exactly_the_trainable_parameters(setup, mode):
    cfg, model, batch = setup
    names = [n for n, _ in model.named_parameters()]
    if mode == "gradual-epoch-1":  # the head and the top layer group are open after one epoch
        transfer = cfg.replace("transfer.mode=gradual").transfer
        apply_transfer(model, transfer, epoch=1)
        expected = _expected(names, "partial")
    else:
        transfer = cfg.replace(f"transfer.mode={mode}", "transfer.unfreeze_top=1").transfer
        apply_transfer(model, transfer)
        expected = _expected(names, mode)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(param_groups(model, cfg.train, transfer), lr=cfg.train.lr)
    model.train()
    for m in frozen_modules(model):
        m.eval()
    model(**batch)["loss"].backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == expected
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == expected
    # Frozen parameters did not move at all, though weight decay is on for their groups (gradual).
    for n, p in model.named_parameters():
        if n not in expected:
            assert torch.equal(p.detach(), before[n]), n


def test_frozen_parts_run_in_eval_mode_and_trained_layers_keep_dropout(setup):
    cfg, model, _ = setup
    apply_transfer(model, cfg.replace("transfer.mode=partial", "transfer.unfreeze_top=1").transfer)
    model.train()
    for m in frozen_modules(model):
        m.eval()
    bb = model.backbone
    assert not bb.embeddings.training and not bb.embeddings.dropout.training
    assert not bb.encoder.layer[0].training and not bb.encoder.layer[0].output.dropout.training
    assert bb.encoder.layer[1].training and bb.encoder.layer[1].output.dropout.training
    assert model.head.training


def test_l2sp_penalty_is_half_strength_times_squared_distance_over_trainable_backbone_weights(setup):
    cfg, model, batch = setup
    apply_transfer(model, cfg.replace("transfer.mode=partial", "transfer.unfreeze_top=1").transfer)
    l2sp = L2SP(model, strength=0.3)
    assert l2sp().item() == 0.0  # at the pretrained weights
    g = torch.Generator().manual_seed(0)
    expected = 0.0
    with torch.no_grad():
        for n, p in model.named_parameters():
            delta = torch.randn(p.shape, generator=g) * 0.01
            p.add_(delta)
            if p.requires_grad and n.startswith("backbone."):  # frozen and head weights do not count
                expected += (delta.double() ** 2).sum().item()
    penalty = l2sp()
    assert penalty.item() == pytest.approx(0.5 * 0.3 * expected, rel=1e-4)
    penalty.backward()  # gradient pulls towards the pretrained weights: strength * (w - w0)
    w = model.backbone.encoder.layer[1].output.dense.weight
    w0 = next(ref for p, ref in l2sp.pairs if p is w)
    torch.testing.assert_close(w.grad, 0.3 * (w.detach() - w0))
    assert model.backbone.encoder.layer[0].output.dense.weight.grad is None


def test_l2sp_is_added_to_the_training_loss(make_cfg, tmp_path):
    """A strong L2-SP keeps the fine-tuned weights closer to the pretrained ones than none."""
    from safetensors.torch import load_file

    from nlp_transfer import train

    dist = {}
    for s in (0.0, 10.0):
        r = train(make_cfg(tmp_path / str(s), "train.epochs=1", f"transfer.l2sp={s}", "train.lr=1e-2"), progress=False)
        w = load_file(str(r.output_dir / "model.safetensors"))
        w0 = load_file(str(make_cfg(tmp_path).model.name_or_path + "/model.safetensors"))
        dist[s] = sum(((w[k] - w0[k]) ** 2).sum().item() for k in w)
    assert dist[10.0] < 0.5 * dist[0.0]
