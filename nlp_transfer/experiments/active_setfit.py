"""SetFit as the model in an active-learning loop: refit on the labels so far, its probabilities scored the pool.

    probs = setfit_probs(cfg, ["great film", "dull"], np.array([1, 0]), 2, seed=0, evaluate=pool_texts)

Each call starts from the recipe's checkpoint (``model.name_or_path``) and runs the setfit library's two steps:
the encoder tuned on contrastive pairs of the labelled texts, then a logistic-regression head on its embeddings.
With a ``transfer.mode: setfit`` recipe its pairs (``transfer.setfit``), epochs and learning rate are used; with
any other recipe setfit's defaults (one epoch, 20 pairs per example). Nothing is saved: the model lives for one round.
"""

from __future__ import annotations

import tempfile

import numpy as np

from nlp_transfer.errors import ConfigError

WHAT = "nlp-transfer label --model setfit"


def require_setfit() -> None:
    from nlp_transfer.utils.extras import require_extra

    require_extra("fewshot", WHAT, ConfigError)


def setfit_args(cfg, seed: int, output_dir: str) -> dict:
    """setfit ``TrainingArguments`` from the recipe: its own pairs, epochs and learning rate in ``setfit`` mode."""
    own = cfg.transfer.mode == "setfit"
    pairs = cfg.transfer.setfit.num_iterations
    args = {
        "output_dir": output_dir,
        "batch_size": cfg.train.batch_size,
        "num_iterations": (pairs or None) if own else 20,
        "sampling_strategy": cfg.transfer.setfit.sampling,
        "num_epochs": cfg.train.epochs if own else 1,
        "max_length": cfg.model.max_length,
        "seed": seed,
        "report_to": "none",
        "save_strategy": "no",
        "logging_strategy": "no",
        "show_progress_bar": False,
    }
    if own:
        args["body_learning_rate"] = cfg.train.lr
    return args


def setfit_probs(cfg, texts: list[str], y: np.ndarray, num_labels: int, seed: int, evaluate: list[str]) -> np.ndarray | None:
    """SetFit fitted on (``texts``, ``y``); its class probabilities [len(evaluate), num_labels] (None while fewer than
    two classes are labelled: no model yet)."""
    require_setfit()
    if len(np.unique(y)) < 2:
        return None
    import datasets
    from setfit import SetFitModel, Trainer, TrainingArguments

    from nlp_transfer.models.hub import resolve_checkpoint

    model = SetFitModel.from_pretrained(resolve_checkpoint(cfg.model.name_or_path))
    with tempfile.TemporaryDirectory(prefix="nlp-transfer-setfit-") as tmp:
        args = TrainingArguments(**setfit_args(cfg, seed, tmp))
        train = datasets.Dataset.from_dict({"text": list(texts), "label": [int(v) for v in y]})
        Trainer(model=model, args=args, train_dataset=train).train()
    p = np.asarray(model.predict_proba(list(evaluate), as_numpy=True), dtype=np.float64)
    out = np.zeros((len(evaluate), num_labels))
    out[:, np.asarray(model.model_head.classes_, dtype=np.int64)] = p  # the head knows only the classes labelled
    return out
