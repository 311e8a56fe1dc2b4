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


class ContrastivePairs:
    """SetFit's body training: the cosine similarity of two texts' pooled embeddings regressed (MSE) on 1 for
    a pair of one class and 0 otherwise (sentence-transformers' CosineSimilarityLoss). Each epoch is judged
    the way the run will predict: the logistic-regression head fitted on the tuned embeddings of the
    training examples, scored on validation."""

    def __init__(self, metric: str, labels: list[str], logreg_c: float | None, seed: int, class_weights=None):
        self.metric, self.labels, self.logreg_c, self.seed, self.class_weights = metric, labels, logreg_c, seed, class_weights

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        target = batch.pop("labels")
        features = model(**batch, features_only=True)["features"].float()
        a, b = features.chunk(2)
        loss = torch.nn.functional.mse_loss(torch.nn.functional.cosine_similarity(a, b), target)
        return loss, loss

    def validate(self, session) -> dict:
        from nlp_transfer.transfer.caches import FeatureDataset, as_batch, encode_features
        from nlp_transfer.transfer.probe import fit_logreg_head

        s, model = session, session.raw_model
        feats = {}
        for split in ("train", "validation"):
            ds = s.inputs.tokens[split]
            x = encode_features(model, ds, s.inputs.collate, s.cfg.train.eval_batch_size, s.accelerator, progress=False)
            feats[split] = FeatureDataset(x.cpu(), torch.tensor(ds["labels"]))
        fit = fit_logreg_head(model.head, feats["train"], feats["validation"], self.labels, self.logreg_c, self.metric,
                              self.seed, self.class_weights)
        val = torch.utils.data.DataLoader(feats["validation"], batch_size=s.cfg.train.eval_batch_size, collate_fn=as_batch)
        metrics = evaluate(s.model, val, s.accelerator, self.labels)
        metrics["logreg_C"] = fit["C"]
        return metrics
