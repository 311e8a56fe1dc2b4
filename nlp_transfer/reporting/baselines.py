"""Non-neural reference points, on exactly the same splits as a recipe."""

from __future__ import annotations

import time

from nlp_transfer.data.loading import TextData
from nlp_transfer.metrics import compute_metrics


def tfidf_logreg(data: TextData, C: float = 4.0, seed: int = 0, target: tuple[list[str], list[int]] | None = None) -> dict:
    """TF-IDF (word 1-2 grams, sublinear tf) + logistic regression, trained on ``train``,
    scored on ``test``. Returns :func:`compute_metrics` output plus ``seconds``; with ``target``
    (texts and class ids of another domain, in ``data.labels``' order) also ``target``, its metrics there."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    t0 = time.perf_counter()
    train, test = data.splits["train"], data.splits["test"]
    clf = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=C, max_iter=2000, random_state=seed),
    )
    clf.fit(train["text"], train["label"])
    out = compute_metrics(test["label"], clf.predict(test["text"]), label_names=data.labels)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    if target is not None:
        out["target"] = compute_metrics(target[1], clf.predict(target[0]), label_names=data.labels)
    return out
