"""Batched inference on a saved run: ``load_run(dir).predict(texts)``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import ModelError
from .modeling import META_FILE, TextClassifier, _quiet


class Predictor:
    """A saved model and its tokenizer; predictions in length-sorted batches.

    ``precision`` ("no", "bf16", "fp16") is the autocast used for inference; ``load_run``
    picks the one the run was trained and evaluated with, so reloaded predictions match
    the run's reported metrics.
    """

    def __init__(self, model: TextClassifier, tokenizer, max_length: int = 128, device: str | None = None, precision: str = "no"):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.precision = precision

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @torch.inference_mode()
    def logits(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, batch_size: int = 64) -> np.ndarray:
        texts = list(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch
        out = np.zeros((len(texts), self.model.num_labels), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            enc = self.tokenizer(
                [texts[j] for j in idx],
                [text_pairs[j] for j in idx] if text_pairs is not None else None,
                truncation=True, max_length=self.max_length, padding=True, pad_to_multiple_of=8, return_tensors="pt",
            ).to(self.device)
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                out[idx] = self.model(**enc)["logits"].float().cpu().numpy()
        return out

    def predict_proba(self, texts: Sequence[str], **kw) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.logits(texts, **kw)), -1).numpy()

    def predict(self, texts: Sequence[str], **kw) -> list[str]:
        return [self.labels[i] for i in self.logits(texts, **kw).argmax(-1)]


def load_run(run_dir: str | Path, device: str | None = None, precision: str | None = None) -> Predictor:
    """Reload a run directory written by :func:`nlp_transfer.train`.

    ``precision`` defaults to the run's own (from ``metrics.json``), else fp32.
    """
    from transformers import AutoTokenizer

    d = Path(run_dir)
    if not d.is_dir():
        raise ModelError(f"run directory '{d}' does not exist")
    if not (d / META_FILE).is_file():
        raise ModelError(f"'{d}' is not a run directory (no {META_FILE}); pass the output.dir of a finished run")
    meta = json.loads((d / META_FILE).read_text())
    model = TextClassifier.from_pretrained(d)
    tokenizer = _quiet(AutoTokenizer.from_pretrained, str(d))
    if precision is None:
        metrics = d / "metrics.json"
        env = json.loads(metrics.read_text()).get("environment", {}) if metrics.is_file() else {}
        precision = env.get("mixed_precision", "no")
    return Predictor(model, tokenizer, meta.get("max_length", 128), device, precision)
