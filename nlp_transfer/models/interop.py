"""Plain-transformers interop: save a run in the architecture's own classification layout.

Where the pooling and head are exactly what ``XForSequenceClassification`` does (BERT and
ALBERT: pooler -> dropout -> linear classifier), the run directory is written in that class's
layout, so ``AutoModelForSequenceClassification.from_pretrained(run_dir)`` gives the same
logits as ``nlp_transfer.load_run(run_dir)``. Other runs (mean pooling, an MLP head, a
RoBERTa-style CLS head, ...) keep the backbone layout and load with ``load_run``.

Nativeness is decided by construction, not by a list of model names: the architecture's
class is built on the meta device, our backbone and linear layer are put in its place, and
it must then own no other weights and give our logits on a probe batch.
"""

from __future__ import annotations

import torch
from torch import nn

from nlp_transfer.models.adapters import is_adapted


def native_classifier(model) -> tuple[nn.Module | None, str]:
    """``(XForSequenceClassification sharing model's weights, "")``, or ``(None, why not)``.

    ``model`` is a :class:`~nlp_transfer.models.classifier.TextClassifier` whose backbone config
    already carries the label maps.
    """
    head, backbone = model.head, model.backbone
    if is_adapted(backbone):
        return None, (
            "an adapter run (the base checkpoint is not saved): `nlp-transfer export RUN OUT --merge` writes one with the adapter folded in"
        )
    if model.pooling != "pooler":
        return None, f"pooling '{model.pooling}' is not the architecture's own (pooler)"
    if not (isinstance(head, nn.Sequential) and len(head) == 2 and isinstance(head[0], nn.Dropout) and isinstance(head[1], nn.Linear)):
        return None, f"head '{model.meta.get('head', type(head).__name__)}' is not a single linear layer"
    from transformers import AutoModelForSequenceClassification

    config = backbone.config
    cls = AutoModelForSequenceClassification._model_mapping.get(type(config), None)
    if cls is None:
        return None, f"transformers has no sequence-classification class for model type '{config.model_type}'"
    try:
        with torch.device("meta"):
            native = cls(config)
    except Exception as e:  # an architecture whose classifier cannot be built from this config
        return None, f"{cls.__name__} cannot be built from this config ({type(e).__name__})"
    prefix = native.base_model_prefix
    if not isinstance(getattr(native, prefix, None), type(backbone)) or not isinstance(getattr(native, "classifier", None), nn.Linear):
        return None, f"{cls.__name__} is not '{prefix} -> dropout -> linear classifier'"
    setattr(native, prefix, backbone)
    native.classifier = head[1]
    if any(t.is_meta for t in [*native.parameters(), *native.buffers()]):
        return None, f"{cls.__name__} has weights of its own besides the backbone and a linear classifier"
    if not _same_logits(model, native):
        return None, f"{cls.__name__} computes its logits differently from this run's pooling and head"
    return native, ""


@torch.no_grad()
def _same_logits(model, native: nn.Module) -> bool:
    """Do both give the same logits (eval mode) on a small padded probe batch?"""
    was_training = model.training
    model.eval()
    native.eval()
    try:
        device = next(model.parameters()).device
        vocab = model.backbone.config.vocab_size
        ids = (torch.arange(12, device=device).view(2, 6) * 7 + 3) % vocab
        mask = torch.ones_like(ids)
        mask[1, 4:] = 0
        ours = model(input_ids=ids, attention_mask=mask)["logits"].float()
        theirs = native(input_ids=ids, attention_mask=mask).logits.float()
        return ours.shape == theirs.shape and torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    finally:
        model.train(was_training)
