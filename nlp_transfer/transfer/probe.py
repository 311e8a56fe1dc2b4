"""The ``logreg`` head: scikit-learn logistic regression on cached features.

Fitted on standardised features (lbfgs converges well there), then folded back into an
ordinary ``nn.Linear`` on the raw features, so the saved model is a plain linear head that
reloads and predicts like any other run.
"""

from __future__ import annotations

import numpy as np
import torch

from nlp_transfer.data.chunking import per_document
from nlp_transfer.metrics import compute_metrics, is_better

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def fit_logreg(
    x: np.ndarray, y: np.ndarray, num_labels: int, C: float, seed: int = 0, class_weights: list[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(weight [num_labels, H], bias [num_labels]) of a logistic regression on raw features ``x``;
    ``class_weights`` (one per label) weigh each class's examples in the fit."""
    from sklearn.linear_model import LogisticRegression

    mu, sigma = x.mean(0), x.std(0)
    sigma[sigma < 1e-8] = 1.0
    present = set(np.unique(y).tolist())
    cw = None if class_weights is None else {i: w for i, w in enumerate(class_weights) if i in present}
    clf = LogisticRegression(C=C, max_iter=3000, random_state=seed, class_weight=cw)
    clf.fit((x - mu) / sigma, y)
    coef, intercept = clf.coef_, clf.intercept_
    if num_labels == 2 and coef.shape[0] == 1:
        # sklearn's binary model scores class 1 with z; logits (-z/2, z/2) give the same softmax.
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    full_w = np.zeros((num_labels, x.shape[1]))
    full_b = np.full(num_labels, -1e4)  # classes never seen in training are never predicted
    full_w[clf.classes_], full_b[clf.classes_] = coef, intercept
    # Fold the standardisation in: w.(x - mu)/sigma + b = (w/sigma).x + (b - w.(mu/sigma)).
    w = full_w / sigma
    b = full_b - w @ mu
    return w, b


def fit_logreg_head(
    head: torch.nn.Sequential,
    train,
    validation,
    labels: list[str],
    C: float | None,
    metric: str,
    seed: int = 0,
    class_weights: list[float] | None = None,
    aggregate: str = "mean",
) -> dict:
    """Fit the head's last linear layer on ``FeatureDataset`` s; pick C on validation when None.

    With windows (chunking), C is picked on the documents' aggregated logits (``aggregate``).
    Returns ``{"C": chosen, "search": [{"C": c, metric: value}, ...]}``.
    """
    x, y = train.features.double().numpy(), train.labels.numpy()
    xv, yv = validation.features.double().numpy(), validation.labels
    search, best, best_fit = [], None, None
    for c in (C,) if C is not None else C_GRID:
        w, b = fit_logreg(x, y, len(labels), c, seed, class_weights)
        logits, y_val = torch.from_numpy(xv @ w.T + b), yv
        if validation.doc_ids is not None:
            logits, y_val = per_document(logits, yv, validation.doc_ids, aggregate)
        val = compute_metrics(y_val.numpy(), logits.argmax(1).numpy(), label_names=labels)
        score = val[metric] if metric in val else val["f1_macro"]
        search.append({"C": c, metric: score})
        if best is None or is_better(metric if metric in val else "f1_macro", score, best):
            best, best_fit = score, (c, w, b)
    c, w, b = best_fit
    linear = head[-1]
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(w, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor(b, dtype=linear.bias.dtype))
    return {"C": c, "search": search}
