"""Early stopping on a validation metric, and a clear stop when the loss is not finite."""

from __future__ import annotations

import pytest
import torch

from nlp_transfer import ConfigError, train
from nlp_transfer.errors import TrainingError
from nlp_transfer.metrics import is_better


def test_early_stopping_stops_after_patience_epochs_without_improvement(make_cfg, tmp_path):
    # A learning rate of ~0 never changes the predictions: validation F1 cannot improve after epoch 1.
    cfg = make_cfg(tmp_path, "train.epochs=6", "train.lr=1e-12", "train.head_lr=1e-12", "train.early_stopping_patience=2")
    result = train(cfg, progress=False)
    assert [e["epoch"] for e in result.history] == [1, 2, 3]  # epoch 1 sets the best; 2 and 3 do not improve
    assert result.best_epoch == 1
    assert (result.output_dir / "metrics.json").is_file()


def test_without_patience_every_epoch_runs(make_cfg, tmp_path):
    result = train(make_cfg(tmp_path, "train.epochs=3", "train.lr=1e-12", "train.head_lr=1e-12"), progress=False)
    assert len(result.history) == 3


def test_improvement_threshold():
    assert is_better("f1_macro", 0.81, 0.80)
    assert not is_better("f1_macro", 0.805, 0.80, threshold=0.01)
    assert is_better("loss", 0.5, 0.6, threshold=0.05)
    assert not is_better("loss", 0.58, 0.6, threshold=0.05)
    assert is_better("loss", 10.0, None)


@pytest.mark.parametrize("bad", ["train.early_stopping_patience=0", "train.early_stopping_threshold=-0.1"])
def test_early_stopping_settings_are_checked(make_cfg, tmp_path, bad):
    with pytest.raises(ConfigError, match=bad.split("=")[0]):
        make_cfg(tmp_path, bad)


def test_nan_loss_stops_with_the_step_and_a_fix_and_writes_nothing(make_cfg, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = torch.nn.functional.cross_entropy

    def flaky(logits, target, *a, **kw):
        calls["n"] += 1
        out = original(logits, target, *a, **kw)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", flaky)
    cfg = make_cfg(tmp_path, "train.epochs=2")
    with pytest.raises(TrainingError, match=r"loss is nan at step 3 \(epoch 1\).*Lower train.lr"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()
    assert not any(p.name.startswith(".run") for p in tmp_path.iterdir())
