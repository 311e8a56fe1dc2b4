"""Validation and test inside a run: every example counted once across processes."""

from __future__ import annotations

import torch

from nlp_transfer.data.chunking import per_document


@torch.inference_mode()
def evaluate_model(
    model, loader, accelerator, labels: list[str], aggregate: str = "mean", tune: str | None = None, outputs: dict | None = None
) -> dict:
    """The task's metrics on a prepared loader.

    Batches with ``doc_id`` (chunking) hold windows: their logits are gathered with the
    document ids, then aggregated per document (``aggregate``: mean or max), so metrics and
    loss count documents, whichever process saw which window. The loss is the task's loss
    without class weights.

    With ``tune`` (multi-label: ``per_label`` or ``global``) the decision thresholds are first
    tuned on these examples (validation only) and returned in ``metrics["thresholds"]``;
    otherwise the model's own thresholds are used. ``outputs``, a dict, receives the gathered
    (per-document) ``logits`` and ``targets`` as numpy arrays (calibration fits on them).
    """
    raw = accelerator.unwrap_model(model)
    model.eval()
    logits_all, refs, docs = [], [], []
    for batch in loader:
        doc = batch.pop("doc_id", None)
        out = model(**batch)
        gathered = accelerator.gather_for_metrics((out["logits"].float(), batch["labels"]) + ((doc,) if doc is not None else ()))
        logits_all.append(gathered[0].cpu())
        refs.append(gathered[1].cpu())
        if doc is not None:
            docs.append(gathered[2].cpu())
    logits, y = torch.cat(logits_all), torch.cat(refs)
    n_windows = len(y)
    if docs:
        logits, y = per_document(logits, y, torch.cat(docs), aggregate)
    if outputs is not None:
        outputs.update(logits=logits.numpy(), targets=y.numpy())
    thresholds = raw.task.tuned_thresholds(logits.numpy(), y.numpy(), tune) if tune else None
    metrics = raw.task.score(logits.numpy(), y.numpy(), labels, thresholds if thresholds is not None else raw.thresholds)
    metrics["loss"] = raw.loss_fn(logits, y).item()
    if docs:
        metrics["num_windows"] = n_windows
    return metrics
