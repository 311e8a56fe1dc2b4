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

from nlp_transfer.training.evaluation import evaluate_model


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
        return evaluate_model(session.model, session.val_loader, session.accelerator, self.labels, self.aggregate, tune=self.tune)


def distillation_loss(model, logits, labels, teacher, labelled, temperature: float, alpha: float) -> torch.Tensor:
    """The mean over the batch's rows of: ``alpha * soft + (1 - alpha) * hard`` for a labelled row, ``soft`` for
    an unlabelled one. ``soft``: the task's :meth:`~nlp_transfer.tasks.base.Task.soft_loss` against the teachers'
    targets; ``hard``: ``model``'s own loss (class weights included) averaged over the labelled rows. No host sync:
    a batch without labelled rows gets its hard term masked to zero."""
    logits = logits.float()
    soft = model.task.soft_loss(logits, teacher, temperature)
    mask = labelled.bool()
    n_labelled = mask.sum()
    hard = model.loss_fn(logits[mask], labels[mask], model.class_weights)  # NaN when no row is labelled: masked below
    hard_sum = torch.where(n_labelled > 0, hard * n_labelled, torch.zeros_like(hard))
    total = alpha * (soft * mask).sum() + (1 - alpha) * hard_sum + (soft * ~mask).sum()
    return total / len(soft)


class Distillation(Classification):
    """Knowledge distillation (Hinton et al. 2015): batches carry the teachers' soft targets (``teacher``) and which rows
    have labels (``labelled``); the loss is :func:`distillation_loss`. ``raw_model`` is the student inside the
    prepared model (its task, loss and class weights). Validated on the labels, as :class:`Classification`."""

    def __init__(self, raw_model, temperature: float, alpha: float, *args, **kw):
        super().__init__(*args, **kw)
        self.raw, self.temperature, self.alpha = raw_model, temperature, alpha

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        batch.pop("doc_id", None)
        teacher, labelled, labels = batch.pop("teacher"), batch.pop("labelled"), batch.pop("labels")
        logits = model(**batch)["logits"]
        loss = distillation_loss(self.raw, logits, labels, teacher, labelled, self.temperature, self.alpha)
        return (loss if self.regulariser is None else loss + self.regulariser()), loss


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
        fit = fit_logreg_head(
            model.head, feats["train"], feats["validation"], self.labels, self.logreg_c, self.metric, self.seed, self.class_weights
        )
        val = torch.utils.data.DataLoader(feats["validation"], batch_size=s.cfg.train.eval_batch_size, collate_fn=as_batch)
        metrics = evaluate_model(s.model, val, s.accelerator, self.labels)
        metrics["logreg_C"] = fit["C"]
        return metrics


def ganin_lambda(progress: float, weight: float = 1.0, gamma: float = 10.0) -> float:
    """DANN's gradient-reversal schedule: 0 at the start, rising to ``weight`` (Ganin et al. 2016, eq. 14)."""
    import math

    return weight * (2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0)


def concat_padded(a: dict, b: dict, pad_id: int, side: str = "right") -> dict:
    """Two token batches as one, padded on ``side`` to the longer one's length (``labels`` are left out)."""
    length = max(a["input_ids"].shape[1], b["input_ids"].shape[1])
    out = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key not in a:
            continue
        fill = pad_id if key == "input_ids" else 0
        parts = []
        for t in (a[key], b[key]):
            pad = t.new_full((t.shape[0], length - t.shape[1]), fill)
            parts.append(torch.cat([pad, t] if side == "left" else [t, pad], dim=1))
        out[key] = torch.cat(parts)
    return out


class DomainAdversarial(Classification):
    """DANN: the classification loss on a source batch plus a domain classifier's loss on that batch and a batch of
    unlabelled target texts, read through a gradient reversal layer whose strength follows :func:`ganin_lambda`
    over the run's optimiser steps. Validation is the source validation split's, with the epoch's mean domain
    loss and accuracy (0.5: the classifier can no longer tell the domains apart)."""

    def __init__(self, session, metric: str, labels: list[str], aggregate: str = "mean", tune=None, regulariser=None):
        super().__init__(metric, labels, aggregate, tune, regulariser)
        self.s, cfg = session, session.cfg.transfer.domain_adversarial
        self.weight, self.gamma = cfg.weight, cfg.gamma
        self.pad_id = session.tokenizer.pad_token_id
        self.side = getattr(session.tokenizer, "padding_side", "right")
        self._iter, self._epoch = None, 0
        self._sums = torch.zeros(3)

    def _target(self) -> dict:
        while True:
            if self._iter is None:
                self.s.target_loader.set_epoch(self._epoch)
                self._iter = iter(self.s.target_loader)
            try:
                return next(self._iter)
            except StopIteration:
                self._iter, self._epoch = None, self._epoch + 1

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        batch.pop("doc_id", None)
        labels = batch.pop("labels")
        combined = concat_padded(batch, self._target(), self.pad_id, self.side)
        lam = ganin_lambda(self.s.state.step / max(self.s.schedule["optimizer_steps"], 1), self.weight, self.gamma)
        out = model(**combined, labels=labels, n_source=len(labels), domain_lambda=lam)
        d = out["domain_loss"].detach().float()
        if self._sums.device != d.device:  # kept on the device: no host sync per batch
            self._sums = self._sums.to(d.device)
        self._sums += torch.stack([d, out["domain_accuracy"].float(), torch.ones_like(d)])
        loss = out["loss"] if self.regulariser is None else out["loss"] + self.regulariser()
        return loss + out["domain_loss"], out["loss"]

    def validate(self, session) -> dict:
        metrics = super().validate(session)
        sums = session.accelerator.reduce(self._sums.clone(), "sum").tolist()  # once per epoch
        n = max(sums[2], 1.0)
        metrics["domain_loss"], metrics["domain_accuracy"] = sums[0] / n, sums[1] / n
        metrics["domain_lambda"] = ganin_lambda(session.state.step / max(session.schedule["optimizer_steps"], 1), self.weight, self.gamma)
        self._sums.zero_()
        return metrics
