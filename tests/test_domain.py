"""Domain-adversarial training (DANN): gradient reversal, the schedule, one forward for both domains, whole runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlp_transfer.errors import ConfigError


def test_gradient_reversal_flips_and_scales_the_gradient():
    from nlp_transfer.models.domain import grad_reverse

    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    (grad_reverse(x, 0.3) * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * w)
    assert torch.equal(grad_reverse(x, 0.3), x)  # the identity on the way forward


def test_the_domain_loss_trains_the_classifier_down_and_the_encoder_up(tiny_bert_dir):
    """One gradient step on the domain classifier lowers the domain loss; one on the encoder raises it."""
    from nlp_transfer.config import ModelConfig
    from nlp_transfer.models.domain import build_domain_head
    from nlp_transfer.recipes import build_classifier

    torch.manual_seed(0)
    model, tok = build_classifier(ModelConfig(name_or_path=str(tiny_bert_dir), pooling="mean", max_length=32), ["a", "b"])
    model.domain_head = build_domain_head(32)
    batch = tok(
        ["good movie", "a dull plot", "fine film", "bad acting"] + ["tweet lol so", "so tired lol", "omg the", "lol"],
        padding=True,
        return_tensors="pt",
    )

    def loss():
        return model(**batch, labels=torch.tensor([0, 1, 0, 1]), n_source=4, domain_lambda=1.0)["domain_loss"]

    for part, direction in (("domain_head", -1), ("backbone", +1)):
        model.zero_grad()
        before = loss()
        before.backward()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith(part) and p.grad is not None:
                    p -= 0.05 * p.grad
            after = loss()
        assert (after - before).item() * direction > 0, (part, before.item(), after.item())


def test_the_classification_loss_sees_only_the_source_rows(tiny_bert_dir):
    from nlp_transfer.config import ModelConfig
    from nlp_transfer.models.domain import build_domain_head
    from nlp_transfer.recipes import build_classifier

    model, tok = build_classifier(ModelConfig(name_or_path=str(tiny_bert_dir), pooling="mean", max_length=32), ["a", "b"])
    model.domain_head = build_domain_head(32, 8)
    model.eval()  # no dropout: the two calls must see the same features
    batch = tok(["good movie", "a dull plot", "tweet lol so"], padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        out = model(**batch, labels=labels, n_source=2, domain_lambda=0.5)
        alone = model(**{k: v[:2] for k, v in batch.items()}, labels=labels)
    assert out["logits"].shape == (2, 2)
    torch.testing.assert_close(out["loss"], alone["loss"])
    assert 0.0 <= out["domain_accuracy"].item() <= 1.0 and out["domain_loss"].item() > 0


def test_the_schedule_rises_from_zero_to_the_weight():
    from nlp_transfer.training.objectives import ganin_lambda

    values = [ganin_lambda(p / 10, 0.5, 10.0) for p in range(11)]
    assert values[0] == 0.0 and values == sorted(values)
    assert values[5] == pytest.approx(0.5 * (2 / (1 + math.exp(-5)) - 1))
    assert values[-1] == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("side", ["right", "left"])
def test_two_batches_are_padded_into_one_on_the_tokenizers_side(side):
    from nlp_transfer.training.objectives import concat_padded

    a = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.tensor([[1, 1, 1]])}
    b = {"input_ids": torch.tensor([[8]]), "attention_mask": torch.tensor([[1]])}
    out = concat_padded(a, b, pad_id=0, side=side)
    want = [[8, 0, 0]] if side == "right" else [[0, 0, 8]]
    assert out["input_ids"].tolist() == [[5, 6, 7]] + want
    assert out["attention_mask"].tolist() == [[1, 1, 1]] + ([[1, 0, 0]] if side == "right" else [[0, 0, 1]])


def test_a_domain_adversarial_run_trains_saves_without_the_domain_classifier_and_reloads(tmp_path, make_cfg, caplog):
    import logging

    from nlp_transfer import load_run, train

    caplog.set_level(logging.INFO, logger="nlp_transfer")
    target = tmp_path / "tweets.txt"
    target.write_text("\n".join(f"tweet {i} lol so the plot and the music" for i in range(120)) + "\n")
    result = train(
        make_cfg(tmp_path, f"transfer.domain_adversarial.target={target}", "transfer.domain_adversarial.hidden_size=16"), progress=False
    )
    assert "domain-adversarial training against" in caplog.text and "114 target texts" in caplog.text  # 5% held out
    lambdas = [h["validation"]["domain_lambda"] for h in result.history]
    assert lambdas == sorted(lambdas) and 0 < lambdas[0] < lambdas[-1] <= 1.0
    assert all(0.0 <= h["validation"]["domain_accuracy"] <= 1.0 for h in result.history)
    out = Path(result.output_dir)
    assert all(k.startswith(("0.", "1.")) for k in load_file(str(out / "head.safetensors")))  # the class head only
    assert not any("domain" in k for k in load_file(str(out / "model.safetensors")))
    probs = load_run(out).predict(["good fine movie", "a dull plot"]).probabilities
    assert probs.shape == (2, 2)
    assert json.loads((out / "metrics.json").read_text())["epochs"][0]["validation"]["domain_loss"] > 0


def test_domain_adversarial_training_needs_a_trained_encoder(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="transfer.domain_adversarial trains the encoder"):
        make_cfg(tmp_path, "transfer.mode=feature_extraction", "transfer.domain_adversarial.target=x.txt")
