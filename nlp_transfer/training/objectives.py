"""What the loop optimises: an objective gives the loss of a batch and judges an epoch.

The loop (:mod:`nlp_transfer.training.loop`) knows nothing of classification: it asks the
objective for each batch's loss and, after each epoch, for the validation metrics and the
one it selects the best epoch by. :class:`Classification` is the supervised objective of
every transfer mode; contrastive pairs, masked or causal language modelling and
domain-adversarial training are other objectives for the same loop.
"""

from __future__ import annotations

from typing import Protocol

import torch

from nlp_transfer.training.evaluation import evaluate


class Objective(Protocol):
    """The loop's view of a training objective."""

    metric: str  # the validation metric the best epoch is chosen by (see nlp_transfer.metrics.is_better)

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to backpropagate, loss to report): the two differ by regularisers."""

    def validate(self, session) -> dict:
        """Metrics on the validation loader, with ``self.metric`` and ``loss`` among them."""


class Classification:
    """Supervised training of a classifier (any task type): the model's own loss, plus an optional
    regulariser (L2-SP), validated with the task's metrics (thresholds tuned where the task has them)."""

    def __init__(self, metric: str, labels: list[str], aggregate: str = "mean", tune: str | None = None, regulariser=None):
        self.metric, self.labels, self.aggregate, self.tune, self.regulariser = metric, labels, aggregate, tune, regulariser

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        batch.pop("doc_id", None)  # windows train as examples of their own
        loss = model(**batch)["loss"]
        return (loss if self.regulariser is None else loss + self.regulariser()), loss

    def validate(self, session) -> dict:
        return evaluate(session.model, session.val_loader, session.accelerator, self.labels, self.aggregate, tune=self.tune)
